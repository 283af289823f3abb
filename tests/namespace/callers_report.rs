//! `imds-tun ctl callers` and the lines at exit (issue 25): who called without a token, named
//! by process, against the real binary in a fresh network namespace, with a one-shot `curl`
//! run as another user and boto3 (which uses tokens) as root.
#![cfg(target_os = "linux")]

use crate::common::{self, Namespace};

use std::process::Output;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

const METADATA: &str = "http://169.254.169.254";

/// `imds-tun ctl callers ARGS` in `namespace`, after `prefix` (a `setpriv` to run as another
/// user).
fn ctl_callers(namespace: &Namespace, prefix: &[&str], args: &[&str]) -> Output {
    let binary = common::binary();
    let mut command: Vec<&str> = prefix.to_vec();
    command.push(binary.to_str().expect("utf-8 path"));
    command.extend(["ctl", "callers"]);
    command.extend(args);
    namespace.exec(&command)
}

/// The report `ctl callers --json` prints.
fn read_report(namespace: &Namespace) -> Value {
    let output = ctl_callers(namespace, &[], &["--json"]);
    assert!(output.status.success(), "{}", common::text(&output));
    serde_json::from_slice(&output.stdout).expect("ctl callers --json prints JSON")
}

/// The report once `settled` holds for it (counts of a sampled connection land when its
/// process lookup ends, a few milliseconds after the answer).
fn report_when(namespace: &Namespace, settled: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let report = read_report(namespace);
        if settled(&report) || Instant::now() > deadline {
            return report;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn callers(report: &Value) -> Vec<Value> {
    report["callers"].as_array().expect("callers").clone()
}

/// A one-shot `curl` without a token, as `uid`: its status code.
fn tokenless_curl(namespace: &Namespace, uid: u32) -> String {
    let output = namespace.exec(&[
        "setpriv",
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        "--clear-groups",
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
        &format!("{METADATA}/latest/meta-data/instance-id"),
    ]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn is_curl_of(caller: &Value, uid: u32) -> bool {
    caller["uid"] == uid && caller["command"] == "curl"
}

/// Issue 25, "Proven": curl without a token as uid 65534 and boto3 as root are two callers;
/// curl's tokenless, python's not, though it read credentials; SIGTERM names curl.
#[test]
fn a_tokenless_curl_is_named_apart_from_boto3_and_again_at_exit() {
    let test = test_name!();
    let Some(python) = common::installed(
        test,
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    ) else {
        return;
    };
    let namespace = namespace!();
    let mut child = common::start(&namespace, &["--mock-credentials"]);
    assert_eq!(tokenless_curl(&namespace, 65534), "200");
    let boto3 = namespace.exec(&[
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        "HOME=/nonexistent",
        "AWS_CONFIG_FILE=/nonexistent/config",
        "AWS_SHARED_CREDENTIALS_FILE=/nonexistent/credentials",
        python.to_str().expect("utf-8 path"),
        "-c",
        "import boto3\n\
         credentials = boto3.Session(region_name='us-east-1').get_credentials()\n\
         assert credentials.method == 'iam-role', credentials.method\n\
         print(credentials.get_frozen_credentials().access_key)",
    ]);
    assert!(boto3.status.success(), "{}", common::text(&boto3));

    let report = report_when(&namespace, |report| {
        callers(report)
            .iter()
            .any(|caller| is_curl_of(caller, 65534))
            && callers(report)
                .iter()
                .any(|caller| caller["credentials_reads"].as_u64() >= Some(1))
    });
    let all = callers(&report);
    let curl = all
        .iter()
        .find(|caller| is_curl_of(caller, 65534))
        .unwrap_or_else(|| panic!("curl of uid 65534 is named: {report:#}"));
    assert!(curl["tokenless"].as_u64() >= Some(1), "{curl}");
    assert_eq!(curl["user"], "nobody", "{curl}");
    assert_eq!(curl["origin"], "local", "{curl}");
    assert!(curl["pid"].as_u64().is_some(), "{curl}");
    assert_eq!(
        curl["tokenless_paths"][0], "/latest/meta-data/instance-id",
        "{curl}"
    );
    assert!(
        curl["exe"]
            .as_str()
            .is_some_and(|exe| exe.ends_with("curl")),
        "{curl}"
    );
    let python = all
        .iter()
        .find(|caller| {
            caller["uid"] == 0
                && caller["command"]
                    .as_str()
                    .is_some_and(|command| command.starts_with("python"))
        })
        .unwrap_or_else(|| panic!("python is named: {report:#}"));
    assert_eq!(python["tokenless"], 0, "{python}");
    assert!(python["credentials_reads"].as_u64() >= Some(1), "{python}");
    assert_eq!(all[0], *curl, "tokenless callers first: {report:#}");
    assert_eq!(report["dropped"], 0);
    assert!(
        report["since"]
            .as_str()
            .is_some_and(|since| since.ends_with('Z'))
    );

    // The table says the same in words.
    let table = ctl_callers(&namespace, &[], &[]);
    assert!(table.status.success(), "{}", common::text(&table));
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("(curl) uid 65534 (nobody)"), "{table}");
    assert!(
        table.contains("tokenless: /latest/meta-data/instance-id"),
        "{table}"
    );

    child.signal(Signal::SIGTERM);
    let status = child.wait_exit(Duration::from_secs(10));
    common::assert_exit_code(&child, status, 0);
    let stderr = child.stderr();
    assert!(
        stderr.contains("IMDSv1 (tokenless) callers since start: 1 caller, 1 request"),
        "{stderr}"
    );
    let named = stderr
        .lines()
        .find(|line| line.contains("(curl) uid 65534 (nobody): 1 tokenless request"))
        .unwrap_or_else(|| panic!("an exit line names curl: {stderr}"));
    assert!(
        named.contains("last /latest/meta-data/instance-id"),
        "{named}"
    );
    assert!(
        !stderr
            .lines()
            .any(|line| line.contains("(python") && line.contains("tokenless request")),
        "python made no tokenless call: {stderr}"
    );
}

/// Item 3: in `required` mode a tokenless request is refused (401) and still counted, so a
/// rehearsal names who would break. And `ctl callers` is root's and the served user's only.
#[test]
fn in_required_mode_a_refused_tokenless_curl_is_still_listed_and_others_may_not_look() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--mock-credentials", "--imdsv2", "required"]);
    assert_eq!(tokenless_curl(&namespace, 65534), "401");
    let report = report_when(&namespace, |report| {
        callers(report)
            .iter()
            .any(|caller| is_curl_of(caller, 65534))
    });
    let curl = callers(&report)
        .into_iter()
        .find(|caller| is_curl_of(caller, 65534))
        .unwrap_or_else(|| panic!("the refused curl is named: {report:#}"));
    assert_eq!(curl["tokenless"], 1, "{curl}");
    assert_eq!(curl["requests"], 1, "{curl}");

    let refused = ctl_callers(
        &namespace,
        &["setpriv", "--reuid=4321", "--regid=4321", "--clear-groups"],
        &["--json"],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", common::text(&refused));
    assert!(refused.stdout.is_empty(), "{}", common::text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("uid 4321 may not control this imds-tun"),
        "{}",
        common::text(&refused)
    );
}

/// "Bad input and load": one user's 3000 short connections (one curl) and 40 one-shot curls
/// stay a handful of entries, every request counted; `--reset` hands back the table and
/// empties it. (The bound itself, and the drops beyond it, are unit tests of `callers`: 1025
/// distinct callers would take 1025 users or addresses.)
#[test]
fn a_flood_of_short_connections_stays_a_few_entries_and_reset_empties_the_table() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--mock-credentials"]);
    let flood = namespace.exec(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sh",
        "-c",
        "curl -sf -o /dev/null -H 'Connection: close' \
         'http://169.254.169.254/latest/meta-data/instance-id?[1-3000]' && \
         for n in $(seq 40); do curl -sf -o /dev/null http://169.254.169.254/latest/meta-data/ami-id || exit 1; done",
    ]);
    assert!(flood.status.success(), "{}", common::text(&flood));
    let of_nobody = |report: &Value| -> Vec<Value> {
        callers(report)
            .into_iter()
            .filter(|caller| caller["uid"] == 65534)
            .collect()
    };
    let total = |entries: &[Value]| -> u64 {
        entries
            .iter()
            .map(|caller| caller["tokenless"].as_u64().unwrap_or(0))
            .sum()
    };
    let report = report_when(&namespace, |report| total(&of_nobody(report)) == 3040);
    let entries = of_nobody(&report);
    assert_eq!(total(&entries), 3040, "every request counted: {report:#}");
    assert!(
        entries.len() <= 42,
        "one entry per process named and one for the rest: {} entries",
        entries.len()
    );
    assert!(
        entries.iter().any(|caller| caller["pid"].is_null()),
        "connections not looked up count under the user: {report:#}"
    );
    assert_eq!(report["dropped"], 0);

    let reset = ctl_callers(&namespace, &[], &["--reset"]);
    assert!(reset.status.success(), "{}", common::text(&reset));
    assert!(
        String::from_utf8_lossy(&reset.stdout).contains("(curl) uid 65534 (nobody)"),
        "the table as it stood: {}",
        common::text(&reset)
    );
    assert!(
        String::from_utf8_lossy(&reset.stderr).contains("emptied the callers table"),
        "{}",
        common::text(&reset)
    );
    let after = read_report(&namespace);
    assert_eq!(callers(&after), Vec::<Value>::new(), "{after:#}");
}

/// The fenced blocks of docs/guides/imdsv1-callers.md after its worked-example marker, in
/// order: the server, the client, its output, the table command, a table, the reset, the
/// rehearsal's server, the lines at exit.
fn guide_blocks() -> Vec<String> {
    let guide = std::fs::read_to_string(common::repo().join("docs/guides/imdsv1-callers.md"))
        .expect("the guide");
    let blocks = common::fenced_blocks(&guide, "<!-- worked example:", "\n# ");
    assert_eq!(blocks.len(), 8, "{blocks:?}");
    blocks
}

/// `sudo imds-tun FLAGS` from a guide block, as the harness starts it.
fn server_flags(block: &str) -> Vec<String> {
    block
        .trim()
        .strip_prefix("sudo imds-tun ")
        .expect("a server block starts imds-tun")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Every command of the guide, as written, with `imds-tun` and `sudo` (a no-op: the test is
/// root) on the PATH: its output, its table, the reset, the lines at exit, and the client's
/// output again against the `--imdsv2 required` rehearsal.
#[test]
fn the_imdsv1_callers_guide_runs_as_written() {
    let namespace = namespace!();
    let blocks = guide_blocks();
    let shell = common::DocShell::new();
    let run = |script: &str| shell.run(&namespace, script);
    let start = |block: &str| {
        let flags = server_flags(block);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        common::start(&namespace, &flags)
    };

    let mut child = start(&blocks[0]);
    assert_eq!(run(&blocks[1]), blocks[2], "the tokenless callers");
    let table = run(&blocks[3]);
    let shown: Vec<&str> = blocks[4].lines().collect();
    let printed: Vec<&str> = table.lines().collect();
    assert_eq!(printed.len(), shown.len(), "{table}");
    assert_eq!(printed[1], shown[1], "the heading: {table}");
    assert!(printed[0].starts_with("3 caller(s) since "), "{table}");
    assert!(
        printed[0].ends_with(", 1 of them tokenless (IMDSv1); 0 dropped (at most 1024 kept)"),
        "{table}"
    );
    assert!(printed[3].ends_with(shown[3].trim_start()), "{table}");
    assert!(run(&blocks[5]).contains("(curl) uid 0 (root)"));
    assert!(run(&blocks[3]).starts_with("0 caller(s) since "), "emptied");
    // A tokenless call after the reset, for the lines at exit.
    run(blocks[1].lines().next().expect("the tokenless curl"));
    child.signal(Signal::SIGTERM);
    let status = child.wait_exit(Duration::from_secs(10));
    common::assert_exit_code(&child, status, 0);
    let stderr = child.stderr();
    let exit_lines: Vec<&str> = blocks[7].lines().collect();
    let total = exit_lines[0].strip_prefix("INFO ").expect("a log line");
    let total = total.replace("since start", "since");
    let (total_start, total_end) = total.split_once("since").expect("since");
    assert!(
        stderr
            .lines()
            .any(|line| line.contains(total_start) && line.contains(total_end)),
        "{total}: {stderr}"
    );
    let (_, named) = exit_lines[1]
        .split_once("(alice)")
        .expect("the reader's line");
    assert!(
        stderr
            .lines()
            .any(|line| line.contains(&format!("(curl) uid 0 (root){named}"))),
        "{named}: {stderr}"
    );
    drop(child);
    namespace.wait_until_clean(Duration::from_secs(5));

    let _rehearsal = start(&blocks[6]);
    assert_eq!(run(&blocks[1]), blocks[2], "refused, and still counted");
}
