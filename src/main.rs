//! The `imds-tun` binary: parse the command line, run, turn any failure into one line and an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    imds_tun::app::main()
}
