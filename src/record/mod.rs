//! `imds-tun record`: crawl a metadata service as an ordinary client and write what it serves as
//! one [`crate::snapshot::Snapshot`], the file `--replay` serves.
//!
//! ```text
//!  --url (http://169.254.169.254) ──► client (hyper, bounded in time and bytes)
//!        │                               │
//!        ├─ ec2:   PUT /latest/api/token, then every listing and leaf under /latest/
//!        ├─ gce:   GET /computeMetadata/v1/?recursive=true&alt=json
//!        └─ azure: GET /metadata/instance?api-version=…
//!                                        ▼
//!                   Snapshot (redacted, within snapshot::BOUNDS) ──► stdout or --out FILE
//! ```
//!
//! Why: a team wants to test against *their* instance (its tags, user-data, GCE attributes,
//! Azure compute document), not imds-tun's defaults. Recording needs no root, no TUN and no
//! running imds-tun: it is a plain HTTP client of whatever answers at `--url`.
//!
//! What it never records: role credentials (the path is kept, marked `{"redacted":
//! "credentials"}`, and never fetched), IMDSv2 tokens, identity-document signatures, GCE and
//! Azure tokens (their endpoints are never asked; token-named keys are dropped from the
//! documents); and any leaf that looks like credentials or holds the session's token, wherever
//! it is. How a cloud is crawled is in [`ec2`], [`gce`] and [`azure`]; the bounds every
//! recording keeps are [`crate::snapshot::BOUNDS`] and the constants below; docs/snapshot.md
//! is the reference. This module does not serve anything: `--replay` does.

pub mod azure;
mod client;
pub mod ec2;
pub mod gce;
mod progress;

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::output;
use crate::snapshot::{BOUNDS, Snapshot};

use client::{FetchError, MetadataClient};
use progress::Progress;

/// The service recorded when `--url` is not given.
pub const DEFAULT_URL: &str = "http://169.254.169.254";
/// The longest one request may take, from connecting to its body's last byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a whole recording may take; at this point it stops and writes what it has,
/// marked partial.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest response head (status line and headers) read.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most problems listed in a snapshot's `errors`; beyond it one line counts the rest.
pub const MAX_ERRORS: usize = 100;
/// The exit status of a recording that wrote a partial snapshot (stopped at a bound or by an
/// error); 0 is a whole snapshot, 1 none written, 2 a command line that cannot work.
pub const EXIT_PARTIAL: u8 = 3;

/// `imds-tun record [--url URL] [--out FILE] [--clouds ec2,gce,azure]`.
#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    /// The metadata service to record: plain http, its address only, no path (default
    /// http://169.254.169.254).
    #[arg(long, value_name = "URL", default_value = DEFAULT_URL, value_parser = parse_url, hide_default_value = true)]
    pub url: String,
    /// Write the snapshot to FILE (replaced whole, mode 0644) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Record only these clouds (comma-separated; default: every cloud that answers).
    #[arg(long, value_name = "CLOUDS", value_delimiter = ',', value_enum)]
    pub clouds: Vec<Cloud>,
}

/// A metadata protocol `record` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cloud {
    /// EC2's `/latest/` tree.
    Ec2,
    /// GCE's `/computeMetadata/v1/` document.
    Gce,
    /// Azure's `/metadata/instance` document.
    Azure,
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cloud::Ec2 => "EC2",
            Cloud::Gce => "GCE",
            Cloud::Azure => "Azure",
        })
    }
}

/// `--url`: `http://HOST[:PORT]`, with or without a final `/`.
fn parse_url(text: &str) -> Result<String, String> {
    let rest = match text.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => {
            return Err(
                "record speaks plain http only, as metadata services do; use http://…".into(),
            );
        }
        Some((scheme, _)) => return Err(format!("{scheme}:// is not http://")),
        None => return Err(format!("give a URL such as http://{text}")),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(
            "give the service's address only, http://HOST[:PORT], without a path, query or user"
                .into(),
        );
    }
    let url = format!("http://{authority}");
    url.parse::<http::Uri>()
        .map_err(|e| format!("not a URL: {e}"))?;
    Ok(url)
}

/// What asking one cloud came to.
pub(crate) enum Outcome<T> {
    /// It answered; this is what it serves.
    Recorded(T),
    /// It does not serve this protocol (404, another status, not its shape): why.
    Absent(String),
    /// It could not be asked (no connection, no answer in time).
    Failed(FetchError),
}

/// The state of one recording: the client, the bounds spent, the problems met.
pub(crate) struct Recorder {
    client: MetadataClient,
    paths: usize,
    bytes: usize,
    errors: Vec<String>,
    more_errors: usize,
    partial: bool,
    progress: Progress,
}

impl Recorder {
    fn new(client: MetadataClient, progress: Progress) -> Recorder {
        Recorder {
            client,
            paths: 0,
            bytes: 0,
            errors: Vec::new(),
            more_errors: 0,
            partial: false,
            progress,
        }
    }

    pub(crate) fn client(&self) -> &MetadataClient {
        &self.client
    }

    /// Marks the snapshot partial with one line saying why (at most [`MAX_ERRORS`] are kept).
    pub(crate) fn problem(&mut self, line: String) {
        self.partial = true;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(line);
        } else {
            self.more_errors += 1;
        }
    }

    /// Counts one more EC2 path; false (and a problem noted) beyond [`BOUNDS`]`.paths`.
    pub(crate) fn count_path(&mut self) -> bool {
        if self.paths >= BOUNDS.paths {
            self.problem(format!(
                "stopped at {} EC2 paths, the most a snapshot holds",
                BOUNDS.paths
            ));
            return false;
        }
        self.paths += 1;
        self.progress.update(self.paths, self.bytes);
        true
    }

    /// Counts `len` more bytes of values; false (and a problem noted) beyond
    /// [`BOUNDS`]`.total_bytes`.
    pub(crate) fn count_bytes(&mut self, len: usize, what: &str) -> bool {
        if self.bytes + len > BOUNDS.total_bytes {
            self.problem(format!(
                "{what}: stopped: it would take the snapshot beyond {} bytes of values, the most it holds",
                BOUNDS.total_bytes
            ));
            return false;
        }
        self.bytes += len;
        self.progress.update(self.paths, self.bytes);
        true
    }
}

/// The process entry of `imds-tun record`: 0 with a whole snapshot written, [`EXIT_PARTIAL`]
/// with a partial one, 1 when none was written; one line on stderr for every failure.
pub fn main(args: RecordArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            output::error_line(&format!(
                "imds-tun record: cannot start the async runtime: {error}"
            ));
            return ExitCode::FAILURE;
        }
    };
    let progress = Progress::new();
    let recorded = runtime.block_on(record(&args, progress));
    let snapshot = match recorded {
        Ok(snapshot) => snapshot,
        Err(line) => {
            output::error_line(&format!("imds-tun record: {line}"));
            return ExitCode::FAILURE;
        }
    };
    let text = snapshot.to_pretty_json();
    // What is written must be what --replay reads: a bug here is caught before the file exists.
    if let Err(error) = Snapshot::parse(text.as_bytes()) {
        output::error_line(&format!(
            "imds-tun record: the snapshot broke its own schema at {error}; this is a bug, please report it"
        ));
        return ExitCode::FAILURE;
    }
    let code = if snapshot.partial {
        ExitCode::from(EXIT_PARTIAL)
    } else {
        ExitCode::SUCCESS
    };
    match &args.out {
        Some(path) => {
            if let Err(error) = write_file(path, text.as_bytes()) {
                output::error_line(&format!(
                    "imds-tun record: cannot write {}: {error}; choose another --out FILE, in a directory you can write",
                    path.display()
                ));
                return ExitCode::FAILURE;
            }
        }
        None => {
            let written = output::print(&text);
            if matches!(written, output::Written::Failed(_)) {
                return output::finish(written, code);
            }
        }
    }
    if snapshot.partial {
        output::error_line(&format!(
            "imds-tun record: the snapshot is partial ({} problem{}, listed in its \"errors\"): {}",
            snapshot.errors.len(),
            if snapshot.errors.len() == 1 { "" } else { "s" },
            snapshot.errors.first().map_or("", String::as_str)
        ));
    }
    code
}

/// Records every cloud asked for at `args.url`; `Err` is the one line to print when nothing
/// was recorded.
async fn record(args: &RecordArgs, progress: Progress) -> Result<Snapshot, String> {
    let started = time::OffsetDateTime::now_utc();
    let deadline = tokio::time::Instant::now() + TOTAL_TIMEOUT;
    let client = MetadataClient::new(&args.url, deadline);
    let mut recorder = Recorder::new(client, progress);
    let wanted = |cloud: Cloud| args.clouds.is_empty() || args.clouds.contains(&cloud);

    let mut snapshot = Snapshot {
        recorded_at: crate::clouds::ec2::responses::iso8601_utc_seconds(started),
        source: args.url.clone(),
        ..Snapshot::default()
    };
    // The clouds that are not in the snapshot, and why: absent, or not asked (no connection,
    // no answer in time; such a cloud may well be there, so the snapshot is partial).
    let mut missing: Vec<(Cloud, Result<String, FetchError>)> = Vec::new();
    if wanted(Cloud::Ec2) {
        let outcome = ec2::record(&mut recorder).await;
        snapshot.ec2 = settle(outcome, Cloud::Ec2, &mut recorder, &mut missing);
    }
    if wanted(Cloud::Gce) {
        let outcome = gce::record(&mut recorder).await;
        snapshot.gce = settle(outcome, Cloud::Gce, &mut recorder, &mut missing);
    }
    if wanted(Cloud::Azure) {
        let outcome = azure::record(&mut recorder).await;
        snapshot.azure = settle(outcome, Cloud::Azure, &mut recorder, &mut missing);
    }
    recorder.progress.clear();

    if snapshot.ec2.is_none() && snapshot.gce.is_none() && snapshot.azure.is_none() {
        let refused: Vec<&String> = missing
            .iter()
            .filter_map(|(_, why)| match why {
                Err(FetchError::Connect(reason)) => Some(reason),
                _ => None,
            })
            .collect();
        if let Some(reason) = refused.first()
            && refused.len() == missing.len()
        {
            return Err(format!(
                "cannot reach {}: {reason}; is a metadata service there? Name it with --url",
                args.url
            ));
        }
        let reasons: Vec<String> = missing
            .iter()
            .map(|(cloud, why)| match why {
                Ok(absent) => format!("{cloud}: {absent}"),
                Err(error) => format!("{cloud}: {error}"),
            })
            .collect();
        return Err(format!(
            "no metadata service answered at {} ({}); check --url and --clouds",
            args.url,
            reasons.join("; ")
        ));
    }
    snapshot.partial = recorder.partial;
    snapshot.errors = recorder.errors;
    if recorder.more_errors > 0 {
        snapshot
            .errors
            .push(format!("… and {} more problems", recorder.more_errors));
    }
    Ok(snapshot)
}

/// What one cloud's outcome leaves in the snapshot; a cloud that could not be asked is a
/// problem of the recording (the snapshot is partial), an absent one is not.
fn settle<T>(
    outcome: Outcome<T>,
    cloud: Cloud,
    recorder: &mut Recorder,
    missing: &mut Vec<(Cloud, Result<String, FetchError>)>,
) -> Option<T> {
    match outcome {
        Outcome::Recorded(recorded) => return Some(recorded),
        Outcome::Absent(why) => missing.push((cloud, Ok(why))),
        Outcome::Failed(error) => {
            recorder.problem(format!("{cloud}: {error}"));
            missing.push((cloud, Err(error)));
        }
    }
    None
}

/// Writes `bytes` to `path` whole or not at all: into a new file beside it (mode 0644), synced,
/// then renamed over `path`; on any failure the temporary file is removed and `path` is as it
/// was.
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "it names no file"))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(format!(".imds-tun-record-{}", std::process::id()));
    let temporary = directory.join(temporary_name);
    // create_new: never through a symlink or into a file someone else put there.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&temporary)?;
    let result = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path));
    if result.is_err() {
        // Ours: it was created above, so removing it removes nobody else's file.
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http_addresses() {
        assert_eq!(
            parse_url("http://169.254.169.254").as_deref(),
            Ok("http://169.254.169.254")
        );
        assert_eq!(
            parse_url("http://127.0.0.1:8080/").as_deref(),
            Ok("http://127.0.0.1:8080")
        );
        let https = parse_url("https://169.254.169.254").expect_err("https");
        assert!(https.contains("plain http only"), "{https}");
        for bad in [
            "169.254.169.254",
            "http://",
            "http://host/latest/",
            "http://user@host",
            "ftp://host",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    fn fresh_recorder() -> Recorder {
        let client = MetadataClient::new(DEFAULT_URL, tokio::time::Instant::now() + TOTAL_TIMEOUT);
        Recorder::new(client, Progress::new())
    }

    #[test]
    fn the_bounds_stop_counting_and_mark_the_snapshot_partial() {
        let mut recorder = fresh_recorder();
        for _ in 0..BOUNDS.paths {
            assert!(recorder.count_path());
        }
        assert!(!recorder.partial);
        assert!(!recorder.count_path());
        assert!(recorder.partial);
        assert!(recorder.errors[0].contains("stopped at 10000 EC2 paths"));

        let mut recorder = fresh_recorder();
        assert!(recorder.count_bytes(BOUNDS.total_bytes, "all"));
        assert!(!recorder.count_bytes(1, "one more"));
        assert!(recorder.errors[0].starts_with("one more: stopped"));
    }

    #[test]
    fn problems_beyond_the_cap_are_counted_not_kept() {
        let mut recorder = fresh_recorder();
        for index in 0..MAX_ERRORS + 5 {
            recorder.problem(format!("problem {index}"));
        }
        assert_eq!(recorder.errors.len(), MAX_ERRORS);
        assert_eq!(recorder.more_errors, 5);
    }

    #[test]
    fn a_file_is_replaced_whole_and_no_temporary_is_left() {
        let dir = crate::temp_dir::TempDir::new();
        let path = dir.path().join("snap.json");
        std::fs::write(&path, "old").expect("old");
        write_file(&path, b"new").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode & !0o022, 0o644 & !0o022);

        let error = write_file(&dir.path().join("missing/snap.json"), b"x").expect_err("no dir");
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    }

    /// In a directory others write to, a file (or symlink) already at the temporary name is
    /// neither written through nor removed: the recording fails and leaves it alone.
    #[test]
    fn a_file_someone_else_put_at_the_temporary_name_is_left_alone() {
        let dir = crate::temp_dir::TempDir::new();
        let path = dir.path().join("snap.json");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "theirs").expect("victim");
        let squatted = dir
            .path()
            .join(format!(".snap.json.imds-tun-record-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &squatted).expect("symlink");
        let error = write_file(&path, b"new").expect_err("the name is taken");
        assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&victim).expect("victim"), b"theirs");
        assert!(squatted.symlink_metadata().is_ok(), "not removed");
        assert!(!path.exists());
    }
}
