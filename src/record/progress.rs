//! The progress line `record` keeps on stderr while it crawls: paths and bytes so far,
//! rewritten in place (`\r`) at most ten times a second and erased at the end.
//!
//! Only when stderr is a terminal: in a pipe, a file or CI's log the line would be noise, so
//! nothing is written there at all. It never goes to stdout, which may be the snapshot.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// How often the line is rewritten at most.
const EVERY: Duration = Duration::from_millis(100);

/// The line's state: off (stderr is not a terminal), or when it was last written.
pub(crate) struct Progress {
    enabled: bool,
    last: Option<Instant>,
}

impl Progress {
    /// On when stderr is a terminal.
    pub(crate) fn new() -> Progress {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    /// Shows `paths` and `bytes`, unless the line was written less than [`EVERY`] ago.
    pub(crate) fn update(&mut self, paths: usize, bytes: usize) {
        if !self.enabled || self.last.is_some_and(|last| last.elapsed() < EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        write_stderr(&format!("\r\x1b[2Krecording: {}", line(paths, bytes)));
    }

    /// Erases the line, if one was written.
    pub(crate) fn clear(&mut self) {
        if self.enabled && self.last.take().is_some() {
            write_stderr("\r\x1b[2K");
        }
    }
}

/// `1234 paths, 56.7 KiB`.
fn line(paths: usize, bytes: usize) -> String {
    let size = if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    };
    format!("{paths} path{}, {size}", if paths == 1 { "" } else { "s" })
}

/// A failed write to stderr is dropped: the line is a courtesy, not output.
fn write_stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_paths_and_bytes_in_readable_units() {
        assert_eq!(line(1, 10), "1 path, 10 B");
        assert_eq!(line(250, 58_061), "250 paths, 56.7 KiB");
        assert_eq!(line(9_999, 3 * 1024 * 1024), "9999 paths, 3.0 MiB");
    }
}
