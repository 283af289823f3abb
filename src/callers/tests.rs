use super::*;
use time::Duration;

fn local(uid: u32, pid: Option<u32>, command: &str) -> CallerIdentity {
    CallerIdentity {
        address: Some("169.254.169.253".parse().expect("ip")),
        origin: Origin::Local,
        uid: Some(uid),
        pid,
        command: pid.map(|_| command.to_owned()),
        ..CallerIdentity::default()
    }
}

fn forwarded(address: &str) -> CallerIdentity {
    CallerIdentity {
        address: Some(address.parse().expect("ip")),
        origin: Origin::Forwarded,
        cgroup: Cgroup::Found("/docker/abc".into()),
        ..CallerIdentity::default()
    }
}

fn start() -> OffsetDateTime {
    time::macros::datetime!(2026-12-06 13:00:00 UTC)
}

fn visit(path: &str, tokenless: bool, at: OffsetDateTime) -> Visit<'_> {
    Visit {
        path,
        tokenless,
        credentials_read: path.contains("security-credentials/"),
        at,
    }
}

#[test]
fn each_caller_is_counted_apart_and_tokenless_callers_come_first() {
    let callers = Callers::new(start());
    let curl = local(54321, Some(4242), "curl");
    let python = local(0, Some(99), "python3");
    let at = start() + Duration::seconds(1);
    for _ in 0..5 {
        callers.record(
            &python,
            &visit("/latest/meta-data/iam/security-credentials/r", false, at),
        );
    }
    callers.record(&curl, &visit("/latest/meta-data/instance-id", true, at));
    callers.record(&curl, &visit("/latest/meta-data/instance-id", true, at));
    callers.record(
        &local(54321, None, ""),
        &visit("/latest/meta-data/", true, at),
    );
    callers.record(
        &forwarded("172.17.0.2"),
        &visit("/latest/api/token", false, at),
    );
    let report = callers.report();
    let order: Vec<(Option<u32>, Option<u32>, u64)> = report
        .callers
        .iter()
        .map(|caller| (caller.uid, caller.pid, caller.tokenless))
        .collect();
    assert_eq!(
        order,
        [
            (Some(54321), Some(4242), 2),
            (Some(54321), None, 1),
            (Some(0), Some(99), 0),
            (None, None, 0),
        ]
    );
    let curl = &report.callers[0];
    assert_eq!(curl.command.as_deref(), Some("curl"));
    assert_eq!(curl.requests, 2);
    assert_eq!(curl.tokenless_paths, ["/latest/meta-data/instance-id"]);
    assert_eq!(curl.first_seen, "2026-12-06T13:00:01Z");
    assert_eq!(curl.describe(), "pid 4242 (curl) uid 54321");
    let python = &report.callers[2];
    assert_eq!((python.requests, python.credentials_reads), (5, 5));
    assert_eq!(
        python.user.as_deref(),
        Some("root"),
        "named from the passwd database"
    );
    let container = &report.callers[3];
    assert_eq!(container.address.as_deref(), Some("172.17.0.2"));
    assert_eq!(container.cgroup.as_deref(), Some("/docker/abc"));
    assert_eq!(container.describe(), "172.17.0.2 (cgroup /docker/abc)");
    assert_eq!(
        report.callers[1].describe(),
        "uid 54321, process not identified"
    );
    assert_eq!(report.since, "2026-12-06T13:00:00Z");
    let table = report.table();
    assert!(
        table.starts_with("4 caller(s) since 2026-12-06T13:00:00Z, 2 of them tokenless"),
        "{table}"
    );
    assert!(
        table.contains("tokenless: /latest/meta-data/instance-id\n"),
        "{table}"
    );
}

#[test]
fn beyond_the_limit_the_caller_idle_the_longest_is_dropped_and_counted() {
    let callers = Callers::with_limit(3, start());
    for uid in 0..3 {
        let at = start() + Duration::seconds(i64::from(uid));
        callers.record(&local(uid, None, ""), &visit("/", false, at));
    }
    // uid 0 is seen again: uid 1 is now the idlest.
    callers.record(
        &local(0, None, ""),
        &visit("/", false, start() + Duration::seconds(10)),
    );
    callers.record(
        &local(7, None, ""),
        &visit("/", false, start() + Duration::seconds(11)),
    );
    let report = callers.report();
    let mut uids: Vec<u32> = report
        .callers
        .iter()
        .filter_map(|caller| caller.uid)
        .collect();
    uids.sort_unstable();
    assert_eq!(uids, [0, 2, 7]);
    assert_eq!(report.dropped, 1);
    assert_eq!(report.limit, 3);
}

#[test]
fn a_flood_of_new_callers_keeps_the_table_at_its_bound() {
    let callers = Callers::new(start());
    for n in 0..(MAX_CALLERS as u32 * 3) {
        let address = std::net::Ipv4Addr::from(0x0a00_0000 + n).to_string();
        let at = start() + Duration::milliseconds(i64::from(n));
        callers.record(&forwarded(&address), &visit("/", true, at));
    }
    let report = callers.report();
    assert_eq!(report.callers.len(), MAX_CALLERS);
    assert_eq!(report.dropped, 2 * MAX_CALLERS as u64);
}

#[test]
fn tokenless_paths_are_few_distinct_and_cut() {
    let callers = Callers::new(start());
    let caller = local(1000, Some(1), "sh");
    let long = format!("/latest/{}", "x".repeat(10_000));
    let hostile = "/latest/\r\nFAKE LOG LINE";
    for n in 0..50 {
        callers.record(
            &caller,
            &visit(&format!("/latest/meta-data/{n}"), true, start()),
        );
        callers.record(&caller, &visit("/latest/meta-data/0", true, start()));
    }
    callers.record(&caller, &visit(&long, true, start()));
    callers.record(&caller, &visit(hostile, true, start()));
    let report = callers.report();
    let entry = &report.callers[0];
    assert_eq!(entry.tokenless, 102);
    assert_eq!(entry.tokenless_paths.len(), MAX_TOKENLESS_PATHS);
    assert_eq!(entry.tokenless_paths[1], "/latest/meta-data/1");
    assert_eq!(
        entry.last_tokenless_path.as_deref(),
        Some("/latest/\\r\\nFAKE LOG LINE")
    );
    let fresh = Callers::new(start());
    fresh.record(&caller, &visit(&long, true, start()));
    let kept = &fresh.report().callers[0].tokenless_paths[0];
    assert!(
        kept.len() <= crate::log_limit::MAX_LOGGED_CHARS + 3,
        "{kept}"
    );
    assert!(kept.ends_with("..."), "{kept}");
}

#[test]
fn the_largest_report_fits_the_answer_ctl_reads() {
    let callers = Callers::new(start());
    let long = format!("/{}", "p".repeat(200));
    for n in 0..MAX_CALLERS as u32 {
        let mut identity = local(n, Some(n), "a-long-command1");
        identity.exe = Some(format!("/{}", "e".repeat(4000)));
        for path in 0..MAX_TOKENLESS_PATHS {
            callers.record(&identity, &visit(&format!("{long}{path}"), true, start()));
        }
    }
    let mut report = callers.report();
    for caller in &mut report.callers {
        caller.user = Some("u".repeat(32));
    }
    let json =
        serde_json::to_vec(&serde_json::json!({"ok": true, "status": report})).expect("JSON");
    assert!(
        json.len() < crate::control::client::MAX_ANSWER_BYTES as usize,
        "{} bytes",
        json.len()
    );
}

#[test]
fn a_reset_hands_back_what_was_counted_and_starts_again() {
    let callers = Callers::new(start());
    callers.record(&local(1, None, ""), &visit("/", true, start()));
    assert!(!callers.was_reset());
    let later = start() + Duration::minutes(5);
    let before = callers.take(later);
    assert_eq!(before.callers.len(), 1);
    let after = callers.report();
    assert!(after.callers.is_empty());
    assert_eq!(after.since, "2026-12-06T13:05:00Z");
    assert!(callers.was_reset());
    assert!(
        after.table().starts_with("0 caller(s) since"),
        "{}",
        after.table()
    );
}
