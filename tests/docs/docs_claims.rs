//! Prose claims of the documentation held to the program: what a path answers, what a limit
//! is, what the program can do. A flag table and a quoted message are checked elsewhere
//! (`docs_settings`, `docs_messages`); this is for sentences.
//!
//! Three kinds, each a table here, so a new claim is one row:
//! - `SERVED`: sentences about what imds-tun answers, checked against a running imds-tun
//!   (`--no-tun --listen 127.0.0.1:0`, no root) with raw HTTP requests: every path the
//!   "Not served (404)" sentence of docs/metadata.md lists gets 404, `events/` is served, a path
//!   over the limit gets 414.
//! - `LIMITS`: a sentence stating a number, rendered from the constant the code enforces, must
//!   be in its document.
//! - `FALSE_PHRASES`: phrases no document may contain, each with the fact of the code that makes
//!   it false ("IPv4 only" while `--ipv6` exists, "macOS ... is coming" while the macOS
//!   platform exists).
//!
//! A claim's sentence must be in its document word for word (whitespace aside): rewording it
//! means revisiting its check. The sizes of the shipped artefacts are held to the artefacts by
//! `tests/deploy/package_artifacts.rs`, which has them. No root needed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::CommandFactory;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The text with every run of whitespace (line breaks included) as one space, as a reader sees
/// a paragraph.
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every document a user reads: the README and the Markdown under docs/.
fn documents() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = vec![("README.md".to_owned(), read("README.md"))];
    let mut pending = vec![root.join("docs")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("listing docs/").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "md") {
                let name = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                found.push((
                    name,
                    read(
                        &path
                            .strip_prefix(root)
                            .unwrap_or(&path)
                            .display()
                            .to_string(),
                    ),
                ));
            }
        }
    }
    found
}

// --- A running imds-tun ----------------------------------------------------------------------

/// `imds-tun --no-tun --listen 127.0.0.1:0 --mock-credentials`, killed on drop.
struct Served {
    child: Child,
    address: SocketAddr,
}

impl Served {
    fn start() -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_imds-tun"))
            .args(["--no-tun", "--listen", "127.0.0.1:0", "--mock-credentials"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("imds-tun runs");
        let stderr = child.stderr.take().expect("piped");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        let address = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = receiver.recv_timeout(left) else {
                let _ = child.kill();
                panic!("imds-tun did not start: {seen:#?}");
            };
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.trim().parse().expect("the listener's address");
            }
            seen.push(line);
        };
        Served { child, address }
    }

    /// The status of `GET path`, the path sent exactly as given.
    fn status(&self, path: &str) -> u16 {
        let mut stream = TcpStream::connect(self.address).expect("connecting");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n"
        )
        .expect("sending");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
            .split_whitespace()
            .nth(1)
            .and_then(|status| status.parse().ok())
            .unwrap_or_else(|| panic!("no status line for {path}: {answer:?}"))
    }

    fn body(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(self.address).expect("connecting");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n"
        )
        .expect("sending");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- The claims --------------------------------------------------------------------------------

/// A sentence about what imds-tun answers, and its check.
struct ServedClaim {
    file: &'static str,
    says: &'static str,
    holds: fn(&Served, &str) -> Result<(), String>,
}

fn expect(served: &Served, path: &str, wanted: u16) -> Result<(), String> {
    match served.status(path) {
        status if status == wanted => Ok(()),
        status => Err(format!("GET {path} answered {status}, not {wanted}")),
    }
}

const SERVED: &[ServedClaim] = &[
    ServedClaim {
        file: "docs/metadata.md",
        says: "Not served (404): `ipv6`, `kernel-id`, `ramdisk-id`, `product-codes`, \
               `identity-credentials/`, `elastic-gpus/`, `elastic-inference/`.",
        // Every path the sentence lists, whatever it lists.
        holds: |served, says| {
            let paths: Vec<&str> = says.split('`').skip(1).step_by(2).collect();
            if paths.len() < 5 {
                return Err(format!("only {paths:?} read from the sentence"));
            }
            paths
                .iter()
                .try_for_each(|path| expect(served, &format!("/latest/meta-data/{path}"), 404))
        },
    },
    ServedClaim {
        file: "docs/metadata.md",
        says: "`events/` is always listed and served",
        holds: |served, _| {
            expect(served, "/latest/meta-data/events/", 200)?;
            let listing = served.body("/latest/meta-data/");
            if listing.lines().any(|line| line == "events/") {
                Ok(())
            } else {
                Err(format!("meta-data/ does not list events/: {listing:?}"))
            }
        },
    },
    ServedClaim {
        file: "docs/metadata.md",
        says: "`spot/` and `autoscaling/` answer 404 until `imds-tun ctl` gives them something",
        holds: |served, _| {
            expect(served, "/latest/meta-data/spot/", 404)?;
            expect(served, "/latest/meta-data/autoscaling/", 404)
        },
    },
    ServedClaim {
        file: "docs/metadata.md",
        says: "Paths with empty, `.` or `..` segments are 404",
        holds: |served, _| {
            for path in [
                "/latest/meta-data//instance-id",
                "/latest/meta-data/./instance-id",
                "/latest/meta-data/../meta-data/instance-id",
            ] {
                expect(served, path, 404)?;
            }
            expect(served, "/latest/meta-data/instance-id", 200)
        },
    },
    ServedClaim {
        file: "docs/metadata.md",
        says: "A path longer than `--max-path-length` (1024 bytes by default) gets 414",
        holds: |served, _| {
            let path = |length: usize| {
                let prefix = "/latest/meta-data/";
                format!("{prefix}{}", "a".repeat(length - prefix.len()))
            };
            expect(served, &path(1025), 414)?;
            expect(served, &path(1024), 404)
        },
    },
];

/// A sentence stating a number the code enforces, rendered from that number.
fn limits() -> Vec<(&'static str, String)> {
    use imds_tun::control::{protocol, server};
    use imds_tun::snapshot::BOUNDS;
    vec![
        (
            "docs/snapshot.md",
            format!(
                "A recording stops at {} EC2 paths, {} segments in a path, {} bytes in a path, \
                 {} MiB in one value (leaf, listing or document), {} MiB of values in all; each \
                 request must be answered whole within {} s, and the whole recording ends after \
                 {} s; a response head may be at most {} KiB, and at most {} problems are \
                 listed in `errors`.",
                BOUNDS.paths,
                BOUNDS.depth,
                BOUNDS.path_bytes,
                BOUNDS.leaf_bytes / (1024 * 1024),
                BOUNDS.total_bytes / (1024 * 1024),
                imds_tun::record::REQUEST_TIMEOUT.as_secs(),
                imds_tun::record::TOTAL_TIMEOUT.as_secs(),
                imds_tun::record::MAX_HEAD_BYTES / 1024,
                imds_tun::record::MAX_ERRORS
            ),
        ),
        (
            "docs/snapshot.md",
            format!(
                "- **{}**: a partial snapshot was written",
                imds_tun::record::EXIT_PARTIAL
            ),
        ),
        (
            "docs/snapshot.md",
            format!(
                "`GET /metadata/instance?api-version={}` with `Metadata: true`",
                imds_tun::record::azure::API_VERSION
            ),
        ),
        (
            "docs/snapshot.md",
            format!(
                "(`X-aws-ec2-metadata-token-ttl-seconds: {}`)",
                imds_tun::record::ec2::TOKEN_TTL_SECONDS
            ),
        ),
        (
            "docs/snapshot.md",
            format!("| `--url URL` | `{}` |", imds_tun::record::DEFAULT_URL),
        ),
        (
            "docs/metadata.md",
            format!(
                "At most {} clients at once, {} s to send a request, {} KiB per request (room \
                 for the largest scenario); times at most a week ahead; at most {} standing \
                 faults and {} scheduled events (the next is refused).",
                server::MAX_CLIENTS,
                server::REQUEST_TIMEOUT.as_secs(),
                protocol::MAX_REQUEST_BYTES / 1024,
                protocol::MAX_FAULTS,
                protocol::MAX_EVENTS
            ),
        ),
        (
            "docs/metadata.md",
            format!("at most {} steps", protocol::MAX_STEPS),
        ),
        (
            "docs/metadata.md",
            format!(
                "and 413 for a body over {} KiB. At most {} events stand at once",
                imds_tun::clouds::azure::MAX_START_REQUEST_BYTES / 1024,
                imds_tun::clouds::azure::events::MAX_EVENTS
            ),
        ),
        (
            "docs/metadata.md",
            format!(
                "At most {} callers are kept; a new caller beyond that drops the one idle the \
                 longest, and `dropped` counts them. Each entry keeps at most {} distinct \
                 `tokenless_paths`, each cut to {} characters as log lines cut client text; \
                 `exe` and `cgroup` are cut to {}.",
                imds_tun::callers::MAX_CALLERS,
                imds_tun::callers::MAX_TOKENLESS_PATHS,
                imds_tun::log_limit::MAX_LOGGED_CHARS,
                imds_tun::callers::MAX_KEPT_PATH_CHARS
            ),
        ),
        (
            "docs/metadata.md",
            format!(
                "for at most {} connections of a caller at once, then {} a second",
                imds_tun::callers::sampling::BURST,
                imds_tun::callers::sampling::LOOKUPS_PER_SECOND
            ),
        ),
        (
            "docs/metadata.md",
            format!(
                "answered MS milliseconds late (at most {})",
                thousands(imds_tun::http::faults::MAX_LATENCY.as_millis())
            ),
        ),
        (
            "docs/guides/troubleshooting.md",
            format!(
                "The config file's limit is {} MiB, a token file's {} KiB.",
                imds_tun::config::named_file::CONFIG_CAP.bytes / (1024 * 1024),
                imds_tun::config::named_file::TOKEN_CAP.bytes / 1024
            ),
        ),
    ]
}

/// `300000` as the docs write it, `300 000`.
fn thousands(number: u128) -> String {
    let digits = number.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(digit);
    }
    out
}

/// A phrase no document may contain, and the fact of the code that makes it false.
struct FalsePhrase {
    phrase: &'static str,
    because: &'static str,
    fact: fn() -> bool,
}

fn has_flag(long: &str) -> bool {
    imds_tun::cli::Cli::command()
        .get_arguments()
        .any(|arg| arg.get_long() == Some(long))
}

fn exists(relative: &str) -> bool {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(relative)
        .exists()
}

const FALSE_PHRASES: &[FalsePhrase] = &[
    FalsePhrase {
        phrase: "IPv4 only",
        because: "--ipv6 serves fd00:ec2::254 too",
        fact: || has_flag("ipv6"),
    },
    FalsePhrase {
        phrase: "is coming",
        because: "the macOS platform exists (src/platform/macos.rs)",
        fact: || exists("src/platform/macos.rs"),
    },
    FalsePhrase {
        phrase: "only the .deb ships",
        because: "`imds-tun man` and `imds-tun completions` print them anywhere",
        fact: || {
            imds_tun::cli::Cli::command()
                .get_subcommands()
                .any(|sub| sub.get_name() == "man")
        },
    },
];

#[test]
fn sentences_about_what_is_served_hold_against_a_running_imds_tun() {
    let served = Served::start();
    let mut wrong = Vec::new();
    for claim in SERVED {
        let text = flat(&read(claim.file));
        if !text.contains(&flat(claim.says)) {
            wrong.push(format!(
                "{}: no longer says {:?}: update the claim with its check",
                claim.file, claim.says
            ));
            continue;
        }
        if let Err(why) = (claim.holds)(&served, claim.says) {
            wrong.push(format!("{}: {:?} is false: {why}", claim.file, claim.says));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn stated_limits_are_the_limits_the_code_enforces() {
    let mut wrong = Vec::new();
    for (file, sentence) in limits() {
        if !flat(&read(file)).contains(&flat(&sentence)) {
            wrong.push(format!(
                "{file} should say {sentence:?} (the code's numbers)"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_document_says_what_the_code_makes_false() {
    let documents = documents();
    assert!(
        documents.len() > 10,
        "only {} documents read",
        documents.len()
    );
    let mut wrong = Vec::new();
    for false_phrase in FALSE_PHRASES {
        assert!(
            (false_phrase.fact)(),
            "the fact behind {:?} ({}) no longer holds: update FALSE_PHRASES",
            false_phrase.phrase,
            false_phrase.because
        );
        for (name, text) in &documents {
            if flat(text).contains(false_phrase.phrase) {
                wrong.push(format!(
                    "{name} says {:?}, but {}",
                    false_phrase.phrase, false_phrase.because
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn numbers_are_written_as_the_docs_write_them() {
    assert_eq!(thousands(300_000), "300 000");
    assert_eq!(thousands(1024), "1 024");
    assert_eq!(thousands(64), "64");
}
