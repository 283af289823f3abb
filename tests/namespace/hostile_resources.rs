//! A hostile local user against what imds-tun has only so much of: the control channel's
//! slots, descriptors and connection places on `--listen`, requests that hold their answer
//! (`wait_for_change`, faults) after their client left, and the token commands' runs and
//! cache. The attacker is always another user (`nobody`, Debian's `/usr/bin/python3`) in the
//! test's namespace; the victim is root, as the user a service runs for would be.
#![cfg(target_os = "linux")]

use crate::common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Namespace, text};

/// `/usr/bin/python3 -c SCRIPT ARGS` as `nobody` in `namespace`, stdout piped: the attacker.
fn attacker(namespace: &Namespace, script: &str, args: &[&str]) -> Attacker {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", namespace.name()])
        .args(common::nobody_prefix())
        .args(["/usr/bin/python3", "-c", script])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = command.spawn().expect("python3 runs");
    let output = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    Attacker { child, output }
}

/// The attacking process; killed on drop.
struct Attacker {
    child: Child,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl Attacker {
    /// The next line it prints (its progress reports), trimmed.
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.output
            .read_line(&mut line)
            .expect("the attacker reports");
        line.trim().to_owned()
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects to `@imds-tun/control` 16 times every 100 ms and holds each connection 6 s without
/// sending a byte (the server waits 5 s for a request), for `argv[1]` seconds.
const CONTROL_SLOT_HOG: &str = r#"
import socket, sys, time
end = time.time() + float(sys.argv[1])
held = []
print("started", flush=True)
while time.time() < end:
    for _ in range(16):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect("\0imds-tun/control")
            held.append((time.time(), s))
        except OSError:
            s.close()
    now = time.time()
    keep = []
    for at, s in held:
        if now - at > 6:
            s.close()
        else:
            keep.append((at, s))
    held = keep
    time.sleep(0.1)
print("done", flush=True)
"#;

/// Issue 23, item 17: the control server read a request (for up to 5 s) before it asked who
/// was asking, in one of its 8 slots, so another user holding 8 connections locked root out of
/// `ctl` (20 of 20 failed). The peer is now checked at accept, and a refused user never holds a
/// slot.
#[test]
fn another_user_holding_control_connections_cannot_lock_root_out_of_ctl() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    let mut hog = attacker(&namespace, CONTROL_SLOT_HOG, &["14"]);
    assert_eq!(hog.line(), "started");
    // Let the hog fill the slots (8 within the first 100 ms) and keep them filled.
    std::thread::sleep(Duration::from_secs(1));
    let mut failures = Vec::new();
    let started = Instant::now();
    for _ in 0..20 {
        let status = namespace.exec(&[common::BINARY, "ctl", "status"]);
        if !status.status.success() {
            failures.push(text(&status));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let took = started.elapsed();
    assert!(
        failures.is_empty(),
        "root's `imds-tun ctl status` failed {} of 20 times while nobody held control \
         connections; first failure:\n{}",
        failures.len(),
        failures[0]
    );
    assert!(took < Duration::from_secs(12), "20 ctl calls took {took:?}");
    // The refused user still hears why.
    let refused = namespace.exec(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        common::BINARY,
        "ctl",
        "status",
    ]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("uid 65534 may not control"),
        "{}",
        text(&refused)
    );
}

/// The `--listen` socket the tests below serve on.
const LISTEN_PORT: u16 = 8080;

/// Opens `argv[1]` connections to 127.0.0.1:`argv[2]`, each sending a `wait_for_change` that
/// holds for 5 minutes and never reading, reports, holds them `argv[3]` seconds and exits (the
/// kernel then closes them all: a FIN each).
const HELD_FLOOD: &str = r#"
import socket, sys, time
count, port, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
request = (b"GET /computeMetadata/v1/instance/id?wait_for_change=true HTTP/1.1\r\n"
           b"Host: 127.0.0.1\r\nMetadata-Flavor: Google\r\n\r\n")
conns, failed = [], 0
for _ in range(count):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(request)
        conns.append(s)
    except OSError:
        failed += 1
print("sent", len(conns), "failed", failed, flush=True)
time.sleep(hold)
print("leaving", flush=True)
"#;

/// How many descriptors `pid` has open.
fn descriptors(pid: nix::unistd::Pid) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

/// Issue 23, item 14: under systemd's default soft limit of 1024 descriptors, 1,100
/// fire-and-forget `wait_for_change` requests from one user on `--listen` kept imds-tun at
/// 1024/1024 descriptors for 20 s and more after that user exited; meanwhile other `--listen`
/// clients timed out, token commands failed and `ctl` got no answer. Now `--listen` has a
/// connection limit below what the descriptors allow, shared among callers as the TUN's is, and
/// held requests end when their client goes.
#[test]
fn one_users_held_listen_requests_exhaust_no_descriptors_and_end_when_the_user_goes() {
    let namespace = namespace!();
    let port = LISTEN_PORT.to_string();
    let listen = format!("127.0.0.1:{port}");
    // The soft and hard limit systemd gives a service without LimitNOFILE=: nothing to raise.
    let limited = common::Spawn {
        binary: Some("/usr/bin/prlimit".into()),
        ..common::Spawn::default()
    };
    let mut child = namespace.spawn_with(
        &[
            "--nofile=1024:1024",
            common::BINARY,
            "--no-tun",
            "--listen",
            &listen,
            "--gcp-project",
            "flooded-project",
            "--gcp-access-token-command",
            "echo ya29.from-command",
        ],
        &limited,
    );
    child.wait_ready();
    let before = descriptors(child.pid());
    let mut flood = attacker(&namespace, HELD_FLOOD, &["1100", &port, "8"]);
    let report = flood.line();
    let during = descriptors(child.pid());
    let address: std::net::SocketAddr = listen.parse().expect("address");
    let (instance, token) = namespace.run_in(move || async move {
        let started = Instant::now();
        let instance = tokio::time::timeout(
            Duration::from_secs(3),
            common::http::get(address, "/latest/meta-data/instance-id"),
        )
        .await
        .map(|response| (response.status, started.elapsed()));
        let token = tokio::time::timeout(
            Duration::from_secs(3),
            common::http::send(
                address,
                &common::http::Request::get(
                    "/computeMetadata/v1/instance/service-accounts/default/token",
                )
                .header("Metadata-Flavor", "Google"),
            ),
        )
        .await
        .map(|response| response.status);
        (instance, token)
    });
    let ctl = namespace.exec(&[common::BINARY, "ctl", "status"]);
    let seen = format!(
        "the flood: {report:?}; descriptors {before} before, {during} during; root's GET: \
         {instance:?}; a token from the command: {token:?}; ctl status: {}",
        ctl.status
    );
    eprintln!("{seen}");
    assert!(
        matches!(instance, Ok((200, _))),
        "{seen}\n{}",
        child.stderr()
    );
    assert_eq!(token.ok(), Some(200), "{seen}\n{}", child.stderr());
    assert!(ctl.status.success(), "{seen}\n{}", text(&ctl));
    assert!(during < 1000, "{seen}");

    // The flood's process exits: every held request ends with its connection.
    assert_eq!(flood.line(), "leaving");
    drop(flood);
    let left = Instant::now();
    let mut freed = None;
    while left.elapsed() < Duration::from_secs(20) {
        if descriptors(child.pid()) <= before + 2 {
            freed = Some(left.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "after the flooding user left: descriptors back to {} after {freed:?}",
        descriptors(child.pid())
    );
    let freed = freed.unwrap_or_else(|| {
        panic!(
            "{} descriptors 20 s after the flooding user left ({before} before)",
            descriptors(child.pid())
        )
    });
    assert!(freed < Duration::from_secs(5), "{freed:?}");
    crate::hostile_support::assert_healthy(&mut child, "a held --listen flood");
}

/// What `az account get-access-token --resource R` prints, with a log of every run (its
/// resource, one line each, in `runs`): a resource starting `fail` fails, one starting `slow`
/// takes 12 s.
fn fake_az(scratch: &common::TempDir, runs: &str) -> String {
    let script = format!(
        r#"#!/bin/sh
echo "$4" >> {runs}
case "$4" in
  fail*) echo "ERROR: AADSTS500011: resource not found" >&2; exit 1 ;;
  slow*) sleep 12 ;;
esac
expires=$(( $(date +%s) + 3000 ))
printf '{{"accessToken":"eyJ.from-az","expires_on":%s,"tokenType":"Bearer"}}\n' "$expires"
"#
    );
    let path = scratch.file("az", script.as_bytes());
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    path
}

/// Asks the Azure token endpoint through the TUN for each resource in `argv[1:]`, in order,
/// each on its own connection with 20 s of patience, and prints one line per request:
/// `RESOURCE STATUS` (`reset` or `timeout` instead of a status).
const AZURE_TOKENS: &str = r#"
import socket, sys, urllib.parse
for resource in sys.argv[1:]:
    query = urllib.parse.urlencode({"api-version": "2018-02-01", "resource": resource})
    request = ("GET /metadata/identity/oauth2/token?%s HTTP/1.1\r\nHost: 169.254.169.254\r\n"
               "Metadata: true\r\nConnection: close\r\n\r\n" % query).encode()
    try:
        s = socket.create_connection(("169.254.169.254", 80), timeout=20)
        s.sendall(request)
        answer = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        status = answer.split(b" ")[1].decode() if answer.startswith(b"HTTP/1.1 ") else "closed"
    except socket.timeout:
        status = "timeout"
    except OSError:
        status = "reset"
    print(resource, status, flush=True)
"#;

/// Runs [`AZURE_TOKENS`] for `resources`, as `nobody` or as root; the statuses in order.
fn azure_tokens(namespace: &Namespace, as_nobody: bool, resources: &[&str]) -> Vec<String> {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", namespace.name()]);
    if as_nobody {
        command.args(common::nobody_prefix());
    }
    let output = command
        .args(["/usr/bin/python3", "-c", AZURE_TOKENS])
        .args(resources)
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.rsplit(' ').next().unwrap_or_default().to_owned())
        .collect()
}

/// Issue 23, item 16: a token command could be denied to everyone by anyone. One shared 5 s
/// cooldown per source (one user's failing resource failed everyone's requests), the cache's
/// lock held while a command ran (a cached token waited behind a slow command, then the TUN
/// reset it at 10 s), 130 distinct resources from one user ran `az` 130 times and evicted
/// another user's token, and `resource=@/etc/passwd` reached `az`, which reads `@FILE`
/// arguments. Now: cooldown per resource, one fetch at a time per resource without a global
/// lock, a budget of new fetches per caller, and a leading `@` refused as a leading `-` is.
#[test]
fn one_user_cannot_deny_token_commands_to_another_or_run_them_at_will() {
    let namespace = namespace!();
    let scratch = common::TempDir::new();
    let runs = scratch.path().join("runs").display().to_string();
    let az = fake_az(&scratch, &runs);
    let command = format!("{az} account get-access-token --resource {{resource}}");
    let child = common::start(&namespace, &["--azure-token-command", &command]);
    let ran = |resource: &str| {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .filter(|line| *line == resource)
            .count()
    };
    let vault = "https://vault.azure.net";
    assert_eq!(azure_tokens(&namespace, false, &[vault]), ["200"]);

    // `@FILE` never reaches the command.
    let at = azure_tokens(&namespace, true, &["@/etc/passwd"]);
    let at_ran = ran("@/etc/passwd");

    // One user's failing resource does not cool down another's.
    let failed = azure_tokens(&namespace, true, &["fail-1"]);
    let other = azure_tokens(&namespace, false, &["https://management.azure.com/"]);
    // Past any cooldown, so what follows is not refused because of the failure.
    std::thread::sleep(Duration::from_millis(5500));

    // One user's slow command does not hold up another's cached token.
    let mut slow = Command::new("ip");
    slow.args(["netns", "exec", namespace.name()])
        .args(common::nobody_prefix())
        .args(["/usr/bin/python3", "-c", AZURE_TOKENS, "slow-1"])
        .stdout(Stdio::null());
    let mut slow = slow.spawn().expect("python3 runs");
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let cached = azure_tokens(&namespace, false, &[vault]);
    let cached_took = started.elapsed();
    let _ = slow.wait();

    // 130 distinct resources from one user.
    let flood: Vec<String> = (0..130).map(|n| format!("https://r{n}.example")).collect();
    let flood: Vec<&str> = flood.iter().map(String::as_str).collect();
    let statuses = azure_tokens(&namespace, true, &flood);
    let flood_runs: usize = flood.iter().map(|resource| ran(resource)).sum();
    let victim_after = azure_tokens(&namespace, false, &[vault]);
    let vault_runs = ran(vault);

    let seen = format!(
        "resource=@/etc/passwd: {at:?}, ran {at_ran} times; after another user's failure: \
         {other:?} ({failed:?}); a cached token during another user's slow command: {cached:?} \
         in {cached_took:?}; 130 distinct resources: {} answered 200, {} refused, `az` ran {} \
         times; the victim's token afterwards: {victim_after:?}, `az` ran {vault_runs} times for it",
        statuses.iter().filter(|status| *status == "200").count(),
        statuses.iter().filter(|status| *status != "200").count(),
        flood_runs
    );
    eprintln!("{seen}");
    let seen = format!("{seen}\nstderr:\n{}", child.stderr());
    assert_eq!(at, ["400"], "{seen}");
    assert_eq!(at_ran, 0, "{seen}");
    assert_eq!(other, ["200"], "{seen}");
    assert_eq!(cached, ["200"], "{seen}");
    assert!(cached_took < Duration::from_secs(2), "{seen}");
    assert!(flood_runs <= 16, "{seen}");
    assert_eq!(victim_after, ["200"], "{seen}");
    assert_eq!(vault_runs, 1, "the victim's token was kept: {seen}");
}
