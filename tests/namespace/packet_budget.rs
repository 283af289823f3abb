//! The link-local packet budget: beyond it, packets to the metadata address are dropped before
//! TCP, silently, so clients see only their own kernels' retransmissions, as on EC2 beyond 1024
//! packets a second. A burst of real curls in a fresh namespace, under a budget and after it.
#![cfg(target_os = "linux")]

use crate::common;

use std::time::Duration;

use common::{Namespace, text};

/// `ctl ARGS` in `namespace`; its status JSON.
fn ctl(namespace: &Namespace, args: &[&str]) -> serde_json::Value {
    let mut command = vec![common::BINARY, "ctl"];
    command.extend_from_slice(args);
    let output = namespace.exec(&command);
    assert!(output.status.success(), "ctl {args:?}: {}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}: {output:?}"))
}

/// Segments the namespace's TCP retransmitted (`RetransSegs`): the clients' kernels', as only
/// clients use the kernel's TCP here.
fn retransmitted(namespace: &Namespace) -> u64 {
    let output = namespace.exec(&["cat", "/proc/net/snmp"]);
    let snmp = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut tcp = snmp.lines().filter(|line| line.starts_with("Tcp:"));
    let (names, values) = (tcp.next().expect("names"), tcp.next().expect("values"));
    let column = names
        .split_whitespace()
        .position(|name| name == "RetransSegs")
        .expect("RetransSegs");
    values
        .split_whitespace()
        .nth(column)
        .and_then(|value| value.parse().ok())
        .expect("a count")
}

/// `count` curls at once, each allowed `seconds`; each line `STATUS BYTES` (`000 0` for a
/// curl that gave up).
fn burst(namespace: &Namespace, count: u32, seconds: u32) -> Vec<String> {
    let script = format!(
        "for i in $(seq {count}); do \
             curl -s -m {seconds} -o /dev/null -w '%{{http_code}} %{{size_download}}\\n' \
                 http://169.254.169.254/latest/meta-data/instance-id & \
         done; wait"
    );
    let output = namespace.exec(&["sh", "-c", &script]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn beyond_the_budget_clients_retransmit_none_is_answered_wrongly_and_all_pass_once_lifted() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--instance-id", "i-0123456789abcdef0"]);
    let answer = "200 19";
    ctl(&namespace, &["fault", "--packet-budget", "50"]);
    let before = retransmitted(&namespace);
    let lines = burst(&namespace, 300, 6);
    assert_eq!(lines.len(), 300, "{lines:?}");
    let answered = lines.iter().filter(|line| *line == answer).count();
    let gave_up = lines.iter().filter(|line| *line == "000 0").count();
    assert_eq!(
        answered + gave_up,
        300,
        "every curl has the whole answer or none: {lines:?}"
    );
    assert!(answered > 0, "some fit the budget: {lines:?}");
    assert!(
        retransmitted(&namespace) > before,
        "the clients' kernels retransmitted what was dropped"
    );
    let status = ctl(&namespace, &["status"]);
    assert_eq!(status["packet_budget"], 50, "{status}");
    assert!(status["packets_over_budget"].as_u64() > Some(0), "{status}");

    ctl(&namespace, &["fault", "clear"]);
    let status = ctl(&namespace, &["status"]);
    assert_eq!(status["packet_budget"], serde_json::Value::Null, "{status}");
    let lines = burst(&namespace, 300, 20);
    assert_eq!(
        lines.iter().filter(|line| *line == answer).count(),
        300,
        "{lines:?}"
    );
}

/// `--packet-budget` from the start, and a fault's `--for` that ends by itself back to it.
#[test]
fn the_start_budget_drops_and_a_timed_fault_returns_to_it() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--packet-budget", "20"]);
    let status = ctl(&namespace, &["status"]);
    assert_eq!(status["packet_budget"], 20, "{status}");
    burst(&namespace, 40, 2);
    let status = ctl(&namespace, &["status"]);
    assert!(status["packets_over_budget"].as_u64() > Some(0), "{status}");
    ctl(
        &namespace,
        &["fault", "--packet-budget", "1000", "--for", "1"],
    );
    assert_eq!(ctl(&namespace, &["status"])["packet_budget"], 1000);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ctl(&namespace, &["status"])["packet_budget"], 20);
}

/// docs/metadata.md's worked example, its commands as written: under the budget some of 100
/// requests are answered and the rest give up (never a wrong answer), drops are counted, and
/// once the budget is lifted all 100 are answered.
#[test]
fn the_worked_example_runs_as_written() {
    let namespace = namespace!();
    let document =
        std::fs::read_to_string(common::repo().join("docs/metadata.md")).expect("metadata.md");
    let blocks = common::fenced_blocks(
        &document,
        "### Worked example: does my client survive dropped packets?",
        "\n### ",
    );
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    assert_eq!(blocks[0].trim(), "sudo imds-tun &", "the server block");
    let _child = common::start(&namespace, &[]);
    let shell = common::DocShell::new();
    let output = shell.run(&namespace, &blocks[1]);

    // `uniq -c` lines: the counts under the budget vary, the rest is the document's.
    let counted = |line: &str| -> (u32, String) {
        let (count, status) = line.trim().split_once(' ').expect("`COUNT STATUS`");
        (count.parse().expect("a count"), status.to_owned())
    };
    let lines: Vec<&str> = output.lines().collect();
    let expected: Vec<&str> = blocks[2].lines().collect();
    assert_eq!(lines.len(), expected.len(), "{output}");
    let under_budget: Vec<(u32, String)> = lines[..2].iter().map(|line| counted(line)).collect();
    assert_eq!(under_budget[0].1, "000", "some gave up: {output}");
    assert_eq!(under_budget[1].1, "200", "some were answered: {output}");
    assert_eq!(under_budget[0].0 + under_budget[1].0, 100, "{output}");
    assert_eq!(lines[2..], expected[2..], "{output}");
    for (line, documented) in lines[..2].iter().zip(&expected[..2]) {
        assert_eq!(counted(line).1, counted(documented).1, "{output}");
    }
}
