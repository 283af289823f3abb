//! `imds-tun --check` decides as a start decides: for every setup whose start fails, run side by
//! side in the same namespace, `--check` is not ok (exit 1, a `fail` line naming the cause). And
//! where a start serves, `--check` says ok.
#![cfg(target_os = "linux")]

use crate::common;

use std::process::Output;
use std::time::Duration;

use common::{Namespace, Spawn, text};

/// Refusals come before any work.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// One setup that a start refuses.
struct Case {
    /// What is wrong, for messages.
    what: &'static str,
    /// The flags of both the start and the check.
    args: Vec<String>,
    /// Run both as uid 65534 (no privileges).
    as_nobody: bool,
    /// The start's exit code.
    start_exits: i32,
    /// What the check's `fail` line must contain.
    check_says: Vec<String>,
}

/// `imds-tun --check ARGS` in the namespace, as root or nobody.
fn check(namespace: &Namespace, args: &[String], as_nobody: bool) -> Output {
    let binary = common::binary();
    let mut command: Vec<String> = Vec::new();
    if as_nobody {
        command.extend(common::nobody_prefix());
    }
    command.push(binary.to_string_lossy().into_owned());
    command.push("--check".into());
    command.extend(args.iter().cloned());
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    namespace.exec(&command)
}

/// Starts with `case`'s flags, expects its failure, then runs the check with the same flags and
/// expects it to fail too, naming the cause.
fn start_fails_and_check_says_so(namespace: &Namespace, case: &Case) {
    let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
    let options = Spawn {
        as_nobody: case.as_nobody,
        ..Spawn::default()
    };
    let mut start = namespace.spawn_with(&args, &options);
    let status = start.wait_exit(REFUSAL_TIMEOUT);
    assert_eq!(
        status.code(),
        Some(case.start_exits),
        "{}: the start should fail; stderr:\n{}",
        case.what,
        start.stderr()
    );
    let output = check(namespace, &case.args, case.as_nobody);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}: the start failed ({}), so --check must not be ok:\n{}",
        case.what,
        start.stderr().lines().last().unwrap_or_default(),
        text(&output)
    );
    let fail = stdout
        .lines()
        .filter(|line| line.starts_with("fail"))
        .collect::<Vec<_>>()
        .join("\n");
    for needle in &case.check_says {
        assert!(
            fail.contains(needle.as_str()),
            "{}: a fail line names {needle:?}:\n{stdout}",
            case.what
        );
    }
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| (*word).to_owned()).collect()
}

#[test]
fn a_busy_listen_port_fails_the_start_and_the_check() {
    let namespace = namespace!();
    let holder = namespace.run_in(|| async {
        std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port")
    });
    let busy = holder.local_addr().expect("local address").to_string();
    start_fails_and_check_says_so(
        &namespace,
        &Case {
            what: "busy --listen port",
            args: strings(&["--no-tun", "--listen", &busy]),
            as_nobody: false,
            start_exits: 1,
            check_says: strings(&[&format!("cannot listen on {busy}"), "another process holds"]),
        },
    );
    drop(holder);
}

#[test]
fn a_port_below_1024_as_a_user_fails_the_start_and_the_check() {
    let namespace = namespace!();
    start_fails_and_check_says_so(
        &namespace,
        &Case {
            what: "--listen 127.0.0.1:80 as nobody",
            args: strings(&["--no-tun", "--listen", "127.0.0.1:80"]),
            as_nobody: true,
            start_exits: 1,
            check_says: strings(&["cannot listen on 127.0.0.1:80", "below 1024"]),
        },
    );
}

#[test]
fn a_listen_address_on_no_interface_fails_the_start_and_the_check() {
    let namespace = namespace!();
    start_fails_and_check_says_so(
        &namespace,
        &Case {
            what: "--listen on an address no interface has",
            args: strings(&[
                "--no-tun",
                "--listen",
                "192.0.2.55:8080",
                "--insecure-listen-without-token",
            ]),
            as_nobody: false,
            start_exits: 1,
            check_says: strings(&["cannot listen on 192.0.2.55:8080", "no interface has"]),
        },
    );
}

#[test]
fn a_policy_rule_diverting_the_address_fails_the_start_and_the_check() {
    let namespace = namespace!();
    namespace.ip(&[
        "link", "add", "divert0", "type", "veth", "peer", "name", "divert1",
    ]);
    namespace.ip(&["link", "set", "divert0", "up"]);
    namespace.ip(&["link", "set", "divert1", "up"]);
    namespace.ip(&["rule", "add", "to", "169.254.169.254", "lookup", "100"]);
    namespace.ip(&[
        "route",
        "add",
        "169.254.169.254",
        "dev",
        "divert0",
        "table",
        "100",
    ]);
    start_fails_and_check_says_so(
        &namespace,
        &Case {
            what: "ip rule to 169.254.169.254 lookup 100",
            args: Vec::new(),
            as_nobody: false,
            start_exits: 1,
            check_says: strings(&["routes 169.254.169.254 out of interface divert0", "ip rule"]),
        },
    );
    // A rule that refuses the address outright takes it as surely.
    namespace.ip(&["rule", "del", "to", "169.254.169.254", "lookup", "100"]);
    namespace.ip(&["rule", "add", "to", "169.254.169.254", "prohibit"]);
    start_fails_and_check_says_so(
        &namespace,
        &Case {
            what: "ip rule to 169.254.169.254 prohibit",
            args: Vec::new(),
            as_nobody: false,
            start_exits: 1,
            check_says: strings(&["routes 169.254.169.254 nowhere"]),
        },
    );
}

#[test]
fn an_unknown_user_fails_the_start_and_the_check() {
    let namespace = namespace!();
    start_fails_and_check_says_so(
        &namespace,
        &Case {
            what: "--user that does not exist",
            args: strings(&["--user", "no-such-user-imds"]),
            as_nobody: false,
            start_exits: 2,
            check_says: strings(&["--user \"no-such-user-imds\": no such user"]),
        },
    );
}

#[test]
fn a_tun_name_that_exists_fails_the_start_and_the_check() {
    let namespace = namespace!();
    namespace.ip(&["tuntap", "add", "dev", "imdsp", "mode", "tun"]);
    start_fails_and_check_says_so(
        &namespace,
        &Case {
            what: "--tun-name of a persistent TUN",
            args: strings(&["--tun-name", "imdsp"]),
            as_nobody: false,
            start_exits: 1,
            check_says: strings(&[
                "--tun-name \"imdsp\": an interface of that name already exists",
            ]),
        },
    );
}

/// With another imds-tun serving, both name it by its pid, not an `lo` alias; and asking again
/// and again never hangs (each probe of the claim lock is answered, none waits in its backlog).
#[test]
fn another_imds_tun_fails_the_start_and_the_check_naming_its_pid_every_time() {
    let namespace = namespace!();
    let first = common::start(&namespace, &[]);
    let pid = first.pid().to_string();
    for _ in 0..4 {
        start_fails_and_check_says_so(
            &namespace,
            &Case {
                what: "another imds-tun",
                args: Vec::new(),
                as_nobody: false,
                start_exits: 1,
                check_says: strings(&[&format!("another imds-tun (pid {pid})")]),
            },
        );
    }
}

/// The other way round: where nothing stands in the way, the check is ok and a start serves.
#[test]
fn where_a_start_serves_the_check_is_ok() {
    let namespace = namespace!();
    let args = strings(&["--listen", "127.0.0.1:8080", "--user", "nobody"]);
    let output = check(&namespace, &args, false);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = common::start(&namespace, &args);
    child.tun_name();
}
