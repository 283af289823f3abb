//! Shared checks for the `hostile_*` tests: `hping3` runs aimed at 169.254.169.254 inside the
//! test namespace, and the health checks every hostile case ends with (alive, no panic, a real
//! request answered within a second, memory bounded).
//!
//! Everything here only ever targets the metadata address inside the test's own namespace.

// Each hostile test binary uses a different subset.
#![allow(dead_code)]

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::http::{self, Request};
use crate::common::{self, ImdsTun, METADATA, Namespace};

/// How quickly a real client must be answered during and after an attack.
pub(crate) const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// Resident memory the process may use after an attack (its steady state is ~20-45 MiB,
/// most of it the per-connection socket buffers at the connection limit).
pub(crate) const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// The path every health check asks for.
pub(crate) const PROBE_PATH: &str = "/latest/meta-data/instance-id";

/// True when `hping3` can be run; otherwise skips (or fails under `CI=true`) like a missing
/// namespace would, and returns false.
pub(crate) fn hping3_available(test: &str) -> bool {
    match Command::new("hping3").arg("--version").output() {
        Ok(_) => true,
        Err(error) => {
            common::skip_or_fail(
                test,
                &format!("cannot run hping3 (apt-get install hping3): {error}"),
            );
            false
        }
    }
}

/// The command line that runs `hping3 ARGS 169.254.169.254` in `namespace`, stopped with
/// SIGINT (so it still prints its statistics) after `limit`, and SIGKILLed 2 s later.
fn hping_command(namespace: &Namespace, args: &[&str], limit: Duration) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", namespace.name()])
        .args(["timeout", "-s", "INT", "-k", "2"])
        .arg(format!("{}", limit.as_secs_f64()))
        .arg("hping3")
        .args(args)
        .arg("169.254.169.254")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// What one `hping3` run reported.
#[derive(Debug)]
pub(crate) struct HpingReport {
    pub transmitted: u64,
    pub received: u64,
    /// Everything it printed (stdout then stderr), for assertion messages.
    pub text: String,
}

impl HpingReport {
    fn parse(output: &Output, args: &[&str]) -> HpingReport {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // "3 packets transmitted, 0 packets received, 100% packet loss"
        let line = text
            .lines()
            .find(|line| line.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("hping3 {args:?} printed no statistics:\n{text}"));
        let number = |what: &str| -> u64 {
            line.split(',')
                .find(|part| part.contains(what))
                .and_then(|part| part.split_whitespace().next())
                .and_then(|count| count.parse().ok())
                .unwrap_or_else(|| panic!("no {what} count in {line:?}"))
        };
        let report = HpingReport {
            transmitted: number("transmitted"),
            received: number("received"),
            text,
        };
        assert!(
            report.transmitted > 0,
            "hping3 {args:?} sent nothing:\n{}",
            report.text
        );
        report
    }

    /// The reply lines (`len=.. ip=.. flags=..`).
    pub(crate) fn replies(&self) -> Vec<&str> {
        self.text
            .lines()
            .filter(|line| line.starts_with("len="))
            .collect()
    }
}

/// Runs `hping3 ARGS 169.254.169.254` in `namespace` for at most `limit` and returns its report.
pub(crate) fn hping(namespace: &Namespace, args: &[&str], limit: Duration) -> HpingReport {
    let output = hping_command(namespace, args, limit)
        .output()
        .expect("running hping3 through ip netns exec");
    HpingReport::parse(&output, args)
}

/// A `hping3` run in the background (for "a real client during the attack").
pub(crate) struct Background {
    child: Option<Child>,
    args: Vec<String>,
}

impl Background {
    pub(crate) fn start(namespace: &Namespace, args: &[&str], limit: Duration) -> Background {
        let child = hping_command(namespace, args, limit)
            .spawn()
            .expect("spawning hping3 through ip netns exec");
        Background {
            child: Some(child),
            args: args.iter().map(|arg| arg.to_string()).collect(),
        }
    }

    /// Waits for it to end (it is bounded by its `timeout`) and returns its report.
    pub(crate) fn finish(mut self) -> HpingReport {
        let output = self
            .child
            .take()
            .expect("finished once")
            .wait_with_output()
            .expect("waiting for hping3");
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        HpingReport::parse(&output, &args)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The child's resident set size in KiB (`VmRSS` in `/proc/<pid>/status`).
pub(crate) fn rss_kib(child: &ImdsTun) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.pid()))
        .unwrap_or_else(|error| panic!("reading /proc/{}/status: {error}", child.pid()));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{}/status", child.pid()))
}

/// The process still runs, never panicked, and stays below [`RSS_LIMIT_KIB`].
pub(crate) fn assert_healthy(child: &mut ImdsTun, after: &str) {
    assert!(
        child.is_running(),
        "imds-tun died after {after}; stderr:\n{}",
        child.stderr()
    );
    let stderr = child.stderr();
    assert!(
        !stderr.contains("panicked"),
        "imds-tun panicked after {after}; stderr:\n{stderr}"
    );
    let rss = rss_kib(child);
    assert!(
        rss < RSS_LIMIT_KIB,
        "imds-tun uses {rss} KiB after {after} (limit {RSS_LIMIT_KIB} KiB)"
    );
}

/// One real GET on a new connection, answered 200 within [`ANSWER_WITHIN`]; returns how long
/// it took.
pub(crate) async fn answered_quickly(after: &str) -> Duration {
    let started = Instant::now();
    let response = tokio::time::timeout(ANSWER_WITHIN, http::get(METADATA, PROBE_PATH))
        .await
        .unwrap_or_else(|_| {
            panic!("a real request was not answered within {ANSWER_WITHIN:?} {after}")
        });
    assert_eq!(
        response.status, 200,
        "a real request {after} answered {} {}",
        response.status, response.reason
    );
    started.elapsed()
}

/// `count` concurrent real requests, each on its own connection, all answered 200 within 10 s.
pub(crate) async fn burst_all_succeed(count: usize, after: &str) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        tasks.spawn(async move { http::send(METADATA, &Request::get(PROBE_PATH)).await.status });
    }
    let mut statuses = Vec::with_capacity(count);
    while let Some(status) = tasks.join_next().await {
        statuses.push(
            status.unwrap_or_else(|panic| panic!("a request of the burst {after} failed: {panic}")),
        );
    }
    let failed: Vec<_> = statuses.iter().filter(|status| **status != 200).collect();
    assert!(
        failed.is_empty(),
        "burst of {count} {after}: non-200 answers {failed:?}"
    );
}

/// The full check after an attack: alive, no panic, memory bounded, a real request answered
/// within a second, then a burst of 50 all answered (capacity came back).
pub(crate) fn assert_still_serving(namespace: &Namespace, child: &mut ImdsTun, after: &str) {
    assert_healthy(child, after);
    let label = after.to_string();
    namespace.run_in(move || async move {
        answered_quickly(&format!("after {label}")).await;
        burst_all_succeed(50, &format!("after {label}")).await;
    });
    assert_healthy(child, after);
}

/// Held by every test that floods: two floods at once on a 2-core CI machine starve each
/// other's imds-tun of CPU, and the one-second rule is about the process, not the scheduler.
pub(crate) fn flood_lock() -> std::sync::MutexGuard<'static, ()> {
    static FLOODS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    FLOODS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Real requests every ~100 ms while `attack` runs (at least `min_probes` of them), each
/// answered within `within`; then the attack's report.
pub(crate) fn probe_during(
    namespace: &Namespace,
    attack: Background,
    window: Duration,
    min_probes: usize,
    within: Duration,
    what: &'static str,
) -> HpingReport {
    let slowest = namespace.run_in(move || async move {
        // Let the flood get going before the first probe.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let mut probes = 0;
        let mut slowest = Duration::ZERO;
        while started.elapsed() < window || probes < min_probes {
            let asked = Instant::now();
            let response = tokio::time::timeout(within, http::get(METADATA, PROBE_PATH))
                .await
                .unwrap_or_else(|_| {
                    panic!("a real request was not answered within {within:?} during {what}")
                });
            assert_eq!(response.status, 200, "during {what}");
            slowest = slowest.max(asked.elapsed());
            probes += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slowest
    });
    eprintln!("{what}: slowest real request during the attack took {slowest:?}");
    attack.finish()
}
