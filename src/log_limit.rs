//! Bounds on what clients can make imds-tun write to its log.
//!
//! Every local process can send requests, so every log line a request can cause is a way to
//! fill the disk or drown the lines that matter. Two rules, used by every such line:
//! - [`LogLimit`]: one line per kind per interval; the next line says how many were left out.
//! - [`bounded`]: a client's text is cut to [`MAX_LOGGED_CHARS`] and its control characters
//!   escaped, so one line stays one short line.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often a line of one kind may be written when clients cause it: the first at once,
/// then one per interval.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// The longest piece of client text a log line carries.
pub const MAX_LOGGED_CHARS: usize = 64;

/// The rate limit of one kind of log line; a `static` at the line that logs.
#[derive(Debug)]
pub struct LogLimit {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    last_written: Option<Instant>,
    left_out: u64,
}

impl LogLimit {
    /// A limit of one line per `interval` (usually [`INTERVAL`]); the first line is written
    /// at once.
    pub const fn new(interval: Duration) -> LogLimit {
        LogLimit {
            interval,
            state: Mutex::new(State {
                last_written: None,
                left_out: 0,
            }),
        }
    }

    /// `Some(left_out)` when a line may be written now, with how many lines of this kind were
    /// left out since the last one; `None` when this one is left out (and counted).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state
            .last_written
            .is_some_and(|last| now.saturating_duration_since(last) < self.interval)
        {
            state.left_out = state.left_out.saturating_add(1);
            return None;
        }
        state.last_written = Some(now);
        Some(std::mem::take(&mut state.left_out))
    }
}

/// Logs at `level` at most one line per [`INTERVAL`] from this call site, adding
/// `left_out = N` when lines were left out since the last one. Then the arguments of
/// `tracing::event!`.
#[macro_export]
macro_rules! log_limited {
    ($level:expr, $($arguments:tt)+) => {{
        static LIMIT: $crate::log_limit::LogLimit =
            $crate::log_limit::LogLimit::new($crate::log_limit::INTERVAL);
        if let Some(left_out) = LIMIT.admit() {
            if left_out > 0 {
                tracing::event!($level, left_out, $($arguments)+);
            } else {
                tracing::event!($level, $($arguments)+);
            }
        }
    }};
}

/// [`log_limited!`] at warn level.
#[macro_export]
macro_rules! warn_limited {
    ($($arguments:tt)+) => {
        $crate::log_limited!(tracing::Level::WARN, $($arguments)+)
    };
}

/// [`log_limited!`] at info level.
#[macro_export]
macro_rules! info_limited {
    ($($arguments:tt)+) => {
        $crate::log_limited!(tracing::Level::INFO, $($arguments)+)
    };
}

/// Client text fit for a log line: at most [`MAX_LOGGED_CHARS`] characters, control
/// characters and quotes escaped, a cut marked with `...`.
pub fn bounded(text: &[u8]) -> Bounded<'_> {
    Bounded(text)
}

/// See [`bounded`].
pub struct Bounded<'a>(&'a [u8]);

impl fmt::Display for Bounded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = String::from_utf8_lossy(self.0);
        let mut characters = text.chars();
        for character in characters.by_ref().take(MAX_LOGGED_CHARS) {
            write!(f, "{}", character.escape_debug())?;
        }
        if characters.next().is_some() {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Bounded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_next_counts_what_was_left_out() {
        let limit = LogLimit::new(Duration::from_secs(5));
        let start = Instant::now();
        assert_eq!(limit.admit_at(start), Some(0));
        for second in 1..5 {
            assert_eq!(limit.admit_at(start + Duration::from_secs(second)), None);
        }
        assert_eq!(limit.admit_at(start + Duration::from_secs(5)), Some(4));
        assert_eq!(limit.admit_at(start + Duration::from_secs(11)), Some(0));
    }

    #[test]
    fn client_text_is_cut_and_escaped() {
        let long = "h".repeat(8 * 1024);
        let shown = bounded(long.as_bytes()).to_string();
        assert_eq!(shown, format!("{}...", "h".repeat(MAX_LOGGED_CHARS)));
        assert_eq!(
            bounded(b"evil\r\nFAKE LOG LINE").to_string(),
            "evil\\r\\nFAKE LOG LINE"
        );
        assert_eq!(bounded(b"\xff").to_string(), "\u{fffd}");
    }
}
