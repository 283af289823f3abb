//! One run of imds-tun: settings → TUN + stack → HTTP servers → signals → clean exit.

use std::process::ExitCode;

pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
