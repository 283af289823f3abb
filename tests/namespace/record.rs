//! `imds-tun record`, run as an unprivileged user (uid 65534) inside the test's namespace:
//! against the real imds-tun on 169.254.169.254 (non-default tags, user-data with binary bytes,
//! region, instance type, public IPv4, GCE project attributes, Azure VM name), and against a
//! hostile Python service on loopback (`record_hostile_server.py`: listings that list
//! themselves or endless new children, a 1 GiB leaf, a server that never answers, a leaf that
//! echoes the token, leaves that add up to more than a snapshot holds).
//!
//! What is proved: the snapshot reads back with `Snapshot::parse` and holds what imds-tun
//! served, and a second imds-tun replaying it (`--replay`) is recorded the same; the credentials imds-tun served (fetched with curl first), the IMDSv2 token and the
//! signatures are nowhere in it; `--clouds` limits the crawl; IMDSv1 is used when the token
//! PUT is refused; every hostile service ends within the documented bounds (time, paths,
//! depth, bytes, memory) with one `imds-tun record:` line, a non-zero exit and, where there is
//! something to keep, a snapshot marked partial.
#![cfg(target_os = "linux")]

use crate::common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{METADATA, Namespace, nobody_prefix, text};
use imds_tun::record::{EXIT_PARTIAL, REQUEST_TIMEOUT, TOTAL_TIMEOUT};
use imds_tun::snapshot::{BOUNDS, LeafValue, Redaction, Snapshot};

/// Runs the command after it and prints its children's peak RSS (KiB) as the last stderr line.
const MEASURE: &str = "import resource, subprocess, sys\n\
rc = subprocess.call(sys.argv[1:])\n\
print('maxrss', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n\
sys.exit(rc)\n";

/// The most memory a recording may take, whatever the service sends: the bounds (a 1 MiB
/// leaf, 16 MiB of values) and the snapshot written from them, with room to spare, and far
/// below the 1 GiB a hostile leaf offers.
const MAX_RSS_KIB: u64 = 160 * 1024;

/// One `imds-tun record` run: what it printed, how long it took, its peak memory.
struct Recorded {
    output: Output,
    stderr: String,
    elapsed: Duration,
    max_rss_kib: u64,
}

impl Recorded {
    fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot::parse(&self.output.stdout)
            .unwrap_or_else(|error| panic!("the snapshot does not parse: {error}\n{}", self.text()))
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn text(&self) -> String {
        format!(
            "{}\n(took {:?}, peak {} KiB)",
            text(&self.output),
            self.elapsed,
            self.max_rss_kib
        )
    }

    /// The one `imds-tun record: ...` line a failure prints, asserted to be the only line.
    fn error_line(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {}", self.text());
        assert!(lines[0].starts_with("imds-tun record: "), "{}", self.text());
        lines[0]
    }
}

/// `imds-tun record ARGS` as uid 65534 inside the namespace, measured.
fn record(namespace: &Namespace, args: &[&str]) -> Recorded {
    let binary = common::binary();
    let binary = binary.to_str().expect("a UTF-8 binary path");
    // python measures as root; setpriv then execs the recorder as nobody, in the same process.
    let mut command: Vec<String> = vec!["python3".into(), "-c".into(), MEASURE.into()];
    command.extend(nobody_prefix());
    command.extend([binary.to_owned(), "record".to_owned()]);
    command.extend(args.iter().map(|arg| (*arg).to_owned()));
    let words: Vec<&str> = command.iter().map(String::as_str).collect();
    let started = Instant::now();
    let output = namespace.exec(&words);
    let elapsed = started.elapsed();
    let all = String::from_utf8_lossy(&output.stderr).into_owned();
    let (stderr, measured) = all
        .trim_end()
        .rsplit_once('\n')
        .map_or(("", all.trim_end()), |(rest, last)| (rest, last));
    let max_rss_kib = measured
        .strip_prefix("maxrss ")
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("no maxrss line: {}", text(&output)));
    Recorded {
        stderr: stderr.to_owned(),
        output,
        elapsed,
        max_rss_kib,
    }
}

/// The hostile service in one of its modes, on a loopback port of the namespace; killed on drop.
struct Hostile {
    child: Child,
    port: u16,
}

impl Hostile {
    fn start(namespace: &Namespace, mode: &str) -> Hostile {
        let script = common::repo().join("tests/namespace/record_hostile_server.py");
        let mut child = Command::new("ip")
            .args(["netns", "exec", namespace.name(), "python3"])
            .arg(&script)
            .arg(mode)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the server's port line");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the hostile server printed no port: {line:?}"));
        Hostile { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The credentials imds-tun serves right now, fetched with curl and a token, as the values to
/// look for.
fn served_credentials(namespace: &Namespace) -> Vec<String> {
    let script = format!(
        "T=$(curl -sf -X PUT http://{METADATA}/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 60') && \
         curl -sf -H \"X-aws-ec2-metadata-token: $T\" http://{METADATA}/latest/meta-data/iam/security-credentials/imds-tun"
    );
    let output = namespace.exec(&["sh", "-c", &script]);
    assert!(output.status.success(), "{}", text(&output));
    let document: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("credentials JSON");
    ["AccessKeyId", "SecretAccessKey", "Token"]
        .iter()
        .map(|key| {
            document[key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key} in {document}"))
                .to_owned()
        })
        .collect()
}

fn text_leaf<'a>(snapshot: &'a Snapshot, path: &str) -> &'a str {
    let tree = snapshot.ec2.as_ref().expect("an EC2 tree");
    match tree.leaves.get(path).map(|leaf| &leaf.value) {
        Some(LeafValue::Text(text)) => text,
        other => panic!("{path}: {other:?}"),
    }
}

fn redaction(snapshot: &Snapshot, path: &str) -> Redaction {
    let tree = snapshot.ec2.as_ref().expect("an EC2 tree");
    match tree.leaves.get(path).map(|leaf| &leaf.value) {
        Some(LeafValue::Redacted(why)) => *why,
        other => panic!("{path} is not redacted: {other:?}"),
    }
}

const USER_DATA: &[u8] = b"#!/bin/sh\necho \xff\xfe\x00 binary\n";

#[test]
fn record_as_nobody_keeps_the_instance_and_never_its_credentials() {
    let namespace = namespace!();
    let scratch = common::TempDir::new();
    let user_data = scratch.file("user-data", USER_DATA);
    let mut args = NON_DEFAULT.to_vec();
    args.extend(["--user-data", &user_data]);
    let server = namespace.spawn(&args);
    server.wait_ready();
    let credentials = served_credentials(&namespace);

    let recorded = record(&namespace, &[]);
    assert_eq!(recorded.code(), Some(0), "{}", recorded.text());
    assert_eq!(recorded.stderr, "", "no progress line off a terminal");
    let snapshot = recorded.snapshot();
    assert!(!snapshot.partial, "{:?}", snapshot.errors);
    assert_eq!(snapshot.source, "http://169.254.169.254");

    let ec2 = snapshot.ec2.as_ref().expect("EC2 recorded");
    assert!(ec2.imdsv2, "recorded with a token");
    assert_eq!(
        text_leaf(&snapshot, "meta-data/tags/instance/Team"),
        "payments"
    );
    assert_eq!(
        text_leaf(&snapshot, "meta-data/placement/region"),
        "eu-west-1"
    );
    assert_eq!(text_leaf(&snapshot, "meta-data/instance-type"), "m5.large");
    assert_eq!(text_leaf(&snapshot, "meta-data/public-ipv4"), "203.0.113.7");
    assert_eq!(
        ec2.leaves["user-data"].value,
        LeafValue::Bytes(USER_DATA.to_vec())
    );
    assert_eq!(ec2.leaves["user-data"].content_type, None, "octets, as EC2");
    assert!(text_leaf(&snapshot, "dynamic/instance-identity/document").contains("\"m5.large\""));
    assert_eq!(
        redaction(&snapshot, "meta-data/iam/security-credentials/imds-tun"),
        Redaction::Credentials
    );
    for signature in ["signature", "pkcs7", "rsa2048"] {
        assert_eq!(
            redaction(&snapshot, &format!("dynamic/instance-identity/{signature}")),
            Redaction::Signature
        );
    }
    // The version root's listing differs from the derived one (no `/`), so it is kept; the
    // tags' listing is derived, so it is not.
    assert_eq!(
        ec2.listings.get("").map(String::as_str),
        Some("dynamic\nmeta-data\nuser-data")
    );
    assert!(!ec2.listings.contains_key("meta-data/tags/instance/"));
    assert!(ec2.leaves.values().all(|leaf| leaf.content_type.is_none()));

    let gce = &snapshot.gce.as_ref().expect("GCE recorded").document;
    assert_eq!(gce["project"]["projectId"], "my-proj");
    assert_eq!(gce["project"]["attributes"]["k"], "v");
    let azure = snapshot.azure.as_ref().expect("Azure recorded");
    assert_eq!(azure.instance["compute"]["name"], "my-vm");
    assert_eq!(azure.api_version, imds_tun::record::azure::API_VERSION);

    let file = recorded.stdout();
    for secret in &credentials {
        assert!(
            !file.contains(secret.as_str()),
            "{secret} is in the snapshot"
        );
    }
    assert!(!file.contains("SecretAccessKey"), "{file}");
    assert!(!file.contains("-----BEGIN PKCS7-----"), "{file}");
}

/// The flags of an instance that is not imds-tun's default one.
const NON_DEFAULT: &[&str] = &[
    "--mock-credentials",
    "--tag",
    "Team=payments",
    "--region",
    "eu-west-1",
    "--instance-type",
    "m5.large",
    "--public-ipv4",
    "203.0.113.7",
    "--gcp-project",
    "my-proj",
    "--gcp-project-attribute",
    "k=v",
    "--azure-vm-name",
    "my-vm",
];

#[test]
fn a_replayed_recording_records_the_same() {
    let namespace = namespace!();
    let scratch = common::TempDir::new();
    let user_data = scratch.file("user-data", USER_DATA);
    let mut args = NON_DEFAULT.to_vec();
    args.extend(["--user-data", &user_data]);
    let mut original = namespace.spawn(&args);
    original.wait_ready();
    let first = record(&namespace, &[]);
    assert_eq!(first.code(), Some(0), "{}", first.text());
    original.signal(nix::sys::signal::Signal::SIGTERM);
    original.wait_exit(Duration::from_secs(10));
    namespace.wait_until_clean(Duration::from_secs(10));

    let file = scratch.file("snapshot.json", &first.output.stdout);
    let replaying = namespace.spawn(&["--replay", &file, "--mock-credentials"]);
    replaying.wait_ready();
    let second = record(&namespace, &[]);
    assert_eq!(second.code(), Some(0), "{}", second.text());

    let (first, second) = (first.snapshot(), second.snapshot());
    let (ec2_first, ec2_second) = (
        first.ec2.as_ref().expect("EC2"),
        second.ec2.as_ref().expect("EC2"),
    );
    // Every leaf and listing, byte for byte: what record keeps, replay serves, and the
    // listings replay derives are the ones record leaves out.
    assert_eq!(
        ec2_first.leaves.keys().collect::<Vec<_>>(),
        ec2_second.leaves.keys().collect::<Vec<_>>()
    );
    for (path, leaf) in &ec2_first.leaves {
        if path == "meta-data/iam/info" {
            // Its LastUpdated is imds-tun's own clock, not the recording; the rest is the same.
            let without_time = |snapshot: &Snapshot| {
                let mut info: serde_json::Value =
                    serde_json::from_str(text_leaf(snapshot, path)).expect("iam/info is JSON");
                info.as_object_mut()
                    .expect("an object")
                    .remove("LastUpdated");
                info
            };
            assert_eq!(without_time(&first), without_time(&second), "{path}");
            continue;
        }
        assert_eq!(Some(leaf), ec2_second.leaves.get(path), "{path}");
    }
    assert_eq!(ec2_first.listings, ec2_second.listings);
    assert_eq!(ec2_first.imdsv2, ec2_second.imdsv2);
    assert_eq!(first.gce, second.gce);
    assert_eq!(first.azure, second.azure);
}

#[test]
fn record_clouds_ec2_records_only_ec2() {
    let namespace = namespace!();
    let server = namespace.spawn(&["--mock-credentials", "--gcp-project", "my-proj"]);
    server.wait_ready();
    let recorded = record(&namespace, &["--clouds", "ec2"]);
    assert_eq!(recorded.code(), Some(0), "{}", recorded.text());
    let snapshot = recorded.snapshot();
    assert!(snapshot.ec2.is_some());
    assert!(
        snapshot.gce.is_none() && snapshot.azure.is_none(),
        "{snapshot:?}"
    );

    // And only the clouds named, in any order.
    let recorded = record(&namespace, &["--clouds", "gce,azure"]);
    assert_eq!(recorded.code(), Some(0), "{}", recorded.text());
    let snapshot = recorded.snapshot();
    assert!(snapshot.ec2.is_none() && snapshot.gce.is_some() && snapshot.azure.is_some());
}

#[test]
fn record_says_so_in_one_line_when_nothing_answers() {
    let namespace = namespace!();
    let recorded = record(&namespace, &["--url", "http://127.0.0.1:9"]);
    assert_eq!(recorded.code(), Some(1), "{}", recorded.text());
    assert!(
        recorded
            .error_line()
            .contains("cannot reach http://127.0.0.1:9")
    );
    assert!(recorded.output.stdout.is_empty());

    let recorded = record(&namespace, &["--url", "https://169.254.169.254"]);
    assert_eq!(recorded.code(), Some(2), "{}", recorded.text());
    assert!(
        recorded.stderr.contains("plain http only"),
        "{}",
        recorded.text()
    );
}

#[test]
fn record_falls_back_to_imdsv1_and_stops_a_self_listing_at_the_depth_bound() {
    let namespace = namespace!();
    let hostile = Hostile::start(&namespace, "self-listing");
    let recorded = record(&namespace, &["--url", &hostile.url()]);
    assert_eq!(
        recorded.code(),
        Some(i32::from(EXIT_PARTIAL)),
        "{}",
        recorded.text()
    );
    assert!(recorded.error_line().contains("deeper than 16 segments"));
    let snapshot = recorded.snapshot();
    assert!(snapshot.partial);
    let ec2 = snapshot.ec2.as_ref().expect("EC2");
    assert!(!ec2.imdsv2, "the PUT was refused: IMDSv1");
    // meta-data/ and its nested a/ down to 16 segments, each listing `a/`; the 17th is refused.
    let deepest = format!("meta-data/{}", "a/".repeat(BOUNDS.depth - 1));
    assert_eq!(ec2.listings.get(&deepest).map(String::as_str), Some("a/"));
    assert!(recorded.elapsed < TOTAL_TIMEOUT, "{}", recorded.text());
}

#[test]
fn record_stops_endless_new_children_at_the_path_bound() {
    let namespace = namespace!();
    let hostile = Hostile::start(&namespace, "endless");
    let recorded = record(&namespace, &["--url", &hostile.url()]);
    assert_eq!(
        recorded.code(),
        Some(i32::from(EXIT_PARTIAL)),
        "{}",
        recorded.text()
    );
    assert!(
        recorded.error_line().contains("stopped at 10000 EC2 paths")
            || recorded.stderr.contains("120 s are used up"),
        "{}",
        recorded.text()
    );
    let snapshot = recorded.snapshot();
    assert!(snapshot.partial);
    let ec2 = snapshot.ec2.as_ref().expect("EC2");
    assert!(ec2.leaves.len() + ec2.listings.len() <= BOUNDS.paths);
    assert!(recorded.elapsed < TOTAL_TIMEOUT + Duration::from_secs(10));
    assert!(recorded.max_rss_kib < MAX_RSS_KIB, "{}", recorded.text());
}

#[test]
fn record_stops_reading_a_1_gib_leaf_at_the_leaf_bound() {
    let namespace = namespace!();
    let hostile = Hostile::start(&namespace, "huge");
    let recorded = record(&namespace, &["--url", &hostile.url()]);
    assert_eq!(
        recorded.code(),
        Some(i32::from(EXIT_PARTIAL)),
        "{}",
        recorded.text()
    );
    assert!(recorded.error_line().contains("larger than 1048576 bytes"));
    let snapshot = recorded.snapshot();
    assert!(snapshot.partial);
    assert_eq!(
        snapshot.errors.len(),
        2,
        "big and bigger: {:?}",
        snapshot.errors
    );
    assert_eq!(text_leaf(&snapshot, "meta-data/small"), "ok");
    let ec2 = snapshot.ec2.as_ref().expect("EC2");
    assert!(!ec2.leaves.contains_key("meta-data/big"));
    assert!(!ec2.leaves.contains_key("meta-data/bigger"));
    assert!(recorded.max_rss_kib < MAX_RSS_KIB, "{}", recorded.text());
    assert!(
        recorded.elapsed < Duration::from_secs(30),
        "{}",
        recorded.text()
    );
}

#[test]
fn record_stops_at_the_total_bytes_bound() {
    let namespace = namespace!();
    let hostile = Hostile::start(&namespace, "heavy");
    let recorded = record(&namespace, &["--url", &hostile.url()]);
    assert_eq!(
        recorded.code(),
        Some(i32::from(EXIT_PARTIAL)),
        "{}",
        recorded.text()
    );
    assert!(
        recorded
            .error_line()
            .contains("beyond 16777216 bytes of values"),
        "{}",
        recorded.text()
    );
    let snapshot = recorded.snapshot();
    let ec2 = snapshot.ec2.as_ref().expect("EC2");
    // 15 whole leaves of 1 MiB fit beside the listings; the 16th would pass 16 MiB.
    let kept: usize = ec2
        .leaves
        .values()
        .filter_map(|leaf| leaf.bytes())
        .map(<[u8]>::len)
        .sum();
    assert!(
        (BOUNDS.total_bytes - 2 * BOUNDS.leaf_bytes..=BOUNDS.total_bytes).contains(&kept),
        "{kept} bytes kept"
    );
    assert!(recorded.max_rss_kib < MAX_RSS_KIB, "{}", recorded.text());
}

#[test]
fn record_gives_up_on_a_service_that_never_answers() {
    let namespace = namespace!();
    let hostile = Hostile::start(&namespace, "silent");
    let recorded = record(&namespace, &["--url", &hostile.url()]);
    assert_eq!(recorded.code(), Some(1), "{}", recorded.text());
    let line = recorded.error_line();
    assert!(line.contains("no metadata service answered"), "{line}");
    assert!(line.contains("no whole answer within 5 s"), "{line}");
    assert!(
        recorded.output.stdout.is_empty(),
        "nothing to keep: no snapshot"
    );
    // The token PUT, the version root, GCE and Azure: one request timeout each.
    assert!(
        recorded.elapsed < REQUEST_TIMEOUT * 4 + Duration::from_secs(10),
        "{}",
        recorded.text()
    );
}

#[test]
fn record_redacts_the_token_and_credentials_wherever_they_are() {
    let namespace = namespace!();
    let hostile = Hostile::start(&namespace, "echo-token");
    let recorded = record(&namespace, &["--url", &hostile.url(), "--clouds", "ec2"]);
    assert_eq!(recorded.code(), Some(0), "{}", recorded.text());
    let snapshot = recorded.snapshot();
    assert!(snapshot.ec2.as_ref().expect("EC2").imdsv2);
    assert_eq!(redaction(&snapshot, "meta-data/echo"), Redaction::Token);
    assert_eq!(
        redaction(&snapshot, "meta-data/elsewhere"),
        Redaction::Credentials
    );
    assert_eq!(text_leaf(&snapshot, "meta-data/instance-id"), "i-0hostile");
    let file = recorded.stdout();
    for secret in [
        "HOSTILE-TOKEN",
        "ASIAHOSTILEKEY",
        "hostile-secret-key-value",
        "hostile-session-token",
    ] {
        assert!(
            !file.contains(secret),
            "{secret} is in the snapshot: {file}"
        );
    }
}

/// docs/guides/copy-your-instance.md, every block as written: `record` on a stand-in for the
/// instance, a tag added with jq, `--replay` serving it, and a flag overriding the region.
#[test]
fn the_copy_your_instance_guide_runs_as_written() {
    let namespace = namespace!();
    let guide = std::fs::read_to_string(common::repo().join("docs/guides/copy-your-instance.md"))
        .expect("the guide");
    let blocks = common::fenced_blocks(&guide, "<!-- worked example:", "\n# ");
    assert_eq!(blocks.len(), 10, "{blocks:?}");
    let scratch = common::TempDir::new();
    let shell = common::DocShell::new();
    let here = scratch.path().to_str().expect("a UTF-8 path").to_owned();
    let run = |script: &str| shell.run(&namespace, &format!("cd '{here}'\n{script}"));
    // `sudo imds-tun FLAGS`, its file named relative to the guide's directory.
    let server = |block: &str| -> Vec<String> {
        block
            .trim()
            .strip_prefix("sudo imds-tun ")
            .expect("a server block starts imds-tun")
            .split_whitespace()
            .map(|word| match word {
                "edited.json" => format!("{here}/edited.json"),
                other => other.to_owned(),
            })
            .collect()
    };
    let start = |block: &str| {
        let flags = server(block);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        common::start(&namespace, &flags)
    };
    let stop = |mut child: common::ImdsTun| {
        child.signal(nix::sys::signal::Signal::SIGTERM);
        let status = child.wait_exit(Duration::from_secs(10));
        common::assert_exit_code(&child, status, 0);
        namespace.wait_until_clean(Duration::from_secs(10));
    };

    // The instance the guide records: its id, region, tag and role.
    let instance = common::start(
        &namespace,
        &[
            "--instance-id",
            "i-0123456789abcdef0",
            "--region",
            "eu-west-1",
            "--tag",
            "Team=payments",
            "--role-name",
            "app",
            "--mock-credentials",
        ],
    );
    assert_eq!(
        run(&blocks[0]),
        "",
        "record --out writes the file, not stdout"
    );
    assert_eq!(run(&blocks[1]), blocks[2], "what the snapshot holds");
    stop(instance);

    assert_eq!(run(&blocks[3]), "", "the hand edit");
    let replay = start(&blocks[4]);
    assert_eq!(run(&blocks[5]), blocks[6], "the replayed instance");
    stop(replay);

    let moved = start(&blocks[7]);
    assert_eq!(
        run(&blocks[8]),
        blocks[9],
        "the region flag over the snapshot"
    );
    drop(moved);
}
