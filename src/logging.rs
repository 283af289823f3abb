//! The process's log: where lines go, in which format (`--log-format text|json`), and how a
//! line that names a caller carries that caller as fields.
//!
//! **Text** (the default) is for people: one line per event, colours only at a terminal. **JSON**
//! is for machines: one object per line with top-level `timestamp`, `level`, `message` and
//! every field of the event as a key of its own (`uid`, `pid`, `command`, `address`, `role`),
//! so a log shipper can select the credentials reads of one user without parsing prose.
//!
//! A line about a caller says the caller in its words ("pid 4242 (curl) uid 65534 read role
//! credentials app") and carries the same facts as fields. Such events have the target
//! [`CALLER_TARGET`]; the text format writes only their message, so a person does not read each
//! fact twice, and the JSON format writes both.
//!
//! What this module does not do: decide what is logged or how often (the callers of `tracing`
//! and [`crate::log_limit`] do), or retry a line that cannot be written (it is dropped: stderr
//! on a full disk or a closed pipe must not stop the service).

use std::fmt;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Deserialize;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, time::SystemTime};
use tracing_subscriber::registry::LookupSpan;

/// The target of events that name a caller and carry it as fields: the audit line of a
/// credentials read, the callers report's exit lines.
pub const CALLER_TARGET: &str = "imds_tun::caller";

/// `--log-format` and `"log_format"`: how log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One line of prose per event, for people (colours only at a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message` and each field as a key.
    Json,
}

/// Set once the log is JSON, for the last line of a failed run ([`writes_json`]).
static WRITES_JSON: AtomicBool = AtomicBool::new(false);

/// Whether the log was started as JSON: then a run's closing error is a log event too, so that
/// every line a JSON run writes parses (an error before the log starts stays a plain line).
pub fn writes_json() -> bool {
    WRITES_JSON.load(Ordering::Relaxed)
}

/// The filter when `RUST_LOG` is not set. aws-config logs its own provider failures as
/// warnings on every retry; imds-tun logs one line per failure itself
/// (src/credentials/cache.rs).
const DEFAULT_FILTER: &str = "info,aws_config=error,aws_smithy_runtime=error,aws_runtime=error";

/// `imds-tun exec`'s filter when `RUST_LOG` is not set: CMD shares the terminal, so imds-tun
/// says only what went wrong.
pub const EXEC_FILTER: &str = "warn,aws_config=error,aws_smithy_runtime=error,aws_runtime=error";

/// Sends this process's log to stderr in `format`, filtered by `RUST_LOG` when it is set.
pub fn init(format: Format) {
    init_filtered(format, DEFAULT_FILTER);
}

/// As [`init`], with `default_filter` when `RUST_LOG` is not set.
pub fn init_filtered(format: Format, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr on a full disk, a closed pipe) is dropped:
        // reporting that on stderr too would be an `eprintln!`, which panics then.
        .log_internal_errors(false)
        .with_target(false);
    match format {
        Format::Text => builder
            .with_ansi(colour_wanted(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
            .event_format(CallerLinesInWords(
                format::Format::default().with_target(false),
            ))
            .init(),
        Format::Json => {
            WRITES_JSON.store(true, Ordering::Relaxed);
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .init();
        }
    }
}

/// Colours only for a person at a terminal: a log file, a pipe or the journal gets plain text
/// (escape codes there are noise, and the journal adds its own), and a `NO_COLOR` that is set
/// and not empty turns them off anywhere (<https://no-color.org>).
pub(crate) fn colour_wanted(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

/// The text format, writing an event of [`CALLER_TARGET`] with its message only.
struct CallerLinesInWords(format::Format<format::Full, SystemTime>);

impl<S, N> FormatEvent<S, N> for CallerLinesInWords
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let fields = metadata.fields();
        let message_field = fields.field("message");
        let Some(message_field) = message_field.filter(|_| metadata.target() == CALLER_TARGET)
        else {
            return self.0.format_event(context, writer, event);
        };
        let mut message = Message::default();
        event.record(&mut message);
        let text = message.0.as_str();
        // The same event with the message as its only value: the callsite's other fields are
        // left unset, so the text format writes none of them.
        let values = [(&message_field, Some(&text as &dyn tracing::Value))];
        let values = fields.value_set(&values);
        let only_message = if event.is_contextual() {
            Event::new(metadata, &values)
        } else {
            Event::new_child_of(event.parent().cloned(), metadata, &values)
        };
        self.0.format_event(context, writer, &only_message)
    }
}

/// An event's message, as text.
#[derive(Default)]
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captures what one thread logs.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("not poisoned")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("not poisoned").clone()).expect("UTF-8")
        }
    }

    fn log_both_kinds() {
        tracing::info!(
            target: CALLER_TARGET,
            uid = 65534,
            command = "curl",
            "pid 7 (curl) uid 65534 read role credentials app"
        );
        tracing::info!(uid = 1000, "gave up root");
    }

    #[test]
    fn text_writes_a_caller_line_in_words_only_and_other_lines_with_their_fields() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .event_format(CallerLinesInWords(
                format::Format::default().with_target(false),
            ))
            .finish();
        tracing::subscriber::with_default(subscriber, log_both_kinds);
        let text = captured.text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].ends_with("INFO pid 7 (curl) uid 65534 read role credentials app"),
            "{text}"
        );
        assert!(lines[1].ends_with("INFO gave up root uid=1000"), "{text}");
    }

    #[test]
    fn json_writes_the_callers_fields_as_top_level_keys() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_target(false)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .finish();
        tracing::subscriber::with_default(subscriber, log_both_kinds);
        let text = captured.text();
        let line: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("a line")).expect("JSON");
        assert_eq!(line["level"], "INFO");
        assert_eq!(
            line["message"],
            "pid 7 (curl) uid 65534 read role credentials app"
        );
        assert_eq!(line["uid"], 65534);
        assert_eq!(line["command"], "curl");
        assert!(line["timestamp"].is_string(), "{line}");
    }

    #[test]
    fn colours_only_at_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(std::ffi::OsStr::new(""))));
        assert!(!colour_wanted(true, Some(std::ffi::OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
    }
}
