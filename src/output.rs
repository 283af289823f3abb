//! Writing a command's output and its one-line errors without ever panicking.
//!
//! Rust's runtime ignores SIGPIPE, so a write to a closed pipe (`imds-tun ctl status | true`)
//! returns `EPIPE`, and `println!`/`eprintln!` turn any failed write (`> /dev/full`) into a
//! panic. Every line imds-tun prints for a person goes through here instead:
//! - [`print()`] writes to stdout and says how it went: done, the reader went away
//!   ([`Written::ReaderGone`], which ends the command quietly: the reader took what it wanted),
//!   or failed;
//! - [`finish`] turns that into the exit code: the command's own on success or a gone reader,
//!   1 with one `imds-tun: cannot write ...` line on stderr for any other failure;
//! - [`error_line`] writes one line to stderr and ignores a failure, since there is nowhere
//!   left to report it (the exit code still says the run failed).
//!
//! The log (tracing) is not written through here: its writer already drops failed writes.

use std::io::{self, Write};
use std::process::ExitCode;

/// How writing a command's output went.
#[derive(Debug)]
pub enum Written {
    /// Every byte was written and flushed.
    Done,
    /// The reader closed its end (`EPIPE`): not an error for the command, which ends quietly.
    ReaderGone,
    /// Any other write error (`ENOSPC` from `/dev/full`, `EIO`, ...).
    Failed(io::Error),
}

/// Writes `text` to stdout and flushes it.
pub fn print(text: &str) -> Written {
    let mut out = io::stdout().lock();
    written(out.write_all(text.as_bytes()).and_then(|()| out.flush()))
}

/// Writes `text` and a newline to stdout and flushes it.
pub fn print_line(text: &str) -> Written {
    let mut out = io::stdout().lock();
    written(
        out.write_all(text.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush()),
    )
}

/// The outcome of a write already made (clap's own `print`, a writer of ours).
pub fn written(result: io::Result<()>) -> Written {
    match result {
        Ok(()) => Written::Done,
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Written::ReaderGone,
        Err(error) => Written::Failed(error),
    }
}

/// The exit code of a command whose output went as `written`: `code` when it was written or
/// the reader left, else one line on stderr and 1.
pub fn finish(written: Written, code: ExitCode) -> ExitCode {
    match written {
        Written::Done | Written::ReaderGone => code,
        Written::Failed(error) => {
            error_line(&format!("imds-tun: cannot write the output: {error}"));
            ExitCode::FAILURE
        }
    }
}

/// Writes `line` and a newline to stderr; a failure is dropped (there is nowhere left to say
/// it), never a panic.
pub fn error_line(line: &str) {
    let mut err = io::stderr().lock();
    let _ = err
        .write_all(line.as_bytes())
        .and_then(|()| err.write_all(b"\n"))
        .and_then(|()| err.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_the_reader_leaving_and_anything_else_a_failure() {
        let pipe = io::Error::from(io::ErrorKind::BrokenPipe);
        assert!(matches!(written(Err(pipe)), Written::ReaderGone));
        let full = io::Error::from_raw_os_error(28);
        assert!(matches!(written(Err(full)), Written::Failed(_)));
        assert!(matches!(written(Ok(())), Written::Done));
        assert_eq!(
            finish(Written::ReaderGone, ExitCode::from(3)),
            ExitCode::from(3)
        );
        assert_eq!(
            finish(Written::Failed(io::Error::other("x")), ExitCode::SUCCESS),
            ExitCode::FAILURE
        );
    }
}
