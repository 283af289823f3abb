//! The container endpoints' addresses on the same TUN (`--ecs`: 169.254.170.2;
//! `--eks-pod-identity`: 169.254.170.23, and fd00:ec2::23 with `--ipv6`), with the guarantees
//! 169.254.169.254 has: routed into imds-tun's device and answered by it over TCP; nothing left
//! after SIGTERM or SIGKILL; a start (and `--check`) refused when something already holds an
//! address, in one line with the command that releases it; a lost route ends the run; and
//! without the flags nothing routes them.
#![cfg(target_os = "linux")]

use crate::common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{Namespace, TempDir, assert_exit_code, http, text};
use nix::sys::signal::Signal;

const ECS: &str = "169.254.170.2";
const EKS: &str = "169.254.170.23";
const EKS_V6: &str = "fd00:ec2::23";
const ALL: [&str; 3] = [ECS, EKS, EKS_V6];
const ALL_FLAGS: [&str; 3] = ["--ecs", "--eks-pod-identity", "--ipv6"];

/// The token file `--eks-pod-identity` needs (0600, in a directory of the test's own).
struct PodToken {
    _dir: TempDir,
    path: String,
}

impl PodToken {
    fn new() -> PodToken {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new();
        let path = dir.file("pod-token", b"a-pod-identity-token-for-tests");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        PodToken { _dir: dir, path }
    }

    /// `args`, with the token file when they ask for the Pod Identity endpoint.
    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        if args.contains(&"--eks-pod-identity") {
            all.extend(["--eks-pod-identity-token-file", self.path.as_str()]);
        }
        all
    }
}

/// How long the kernel may take to remove a device after its last descriptor closed.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(3);
/// Refusals come before any work.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// From a lost route to the exit (claim_watch.rs's bound).
const NOTICED_AND_GONE: Duration = Duration::from_secs(2);

/// `ip route get ADDRESS` in the namespace: the kernel's answer, or its refusal.
fn route_get(namespace: &Namespace, address: &str) -> String {
    let family = if address.contains(':') { "-6" } else { "-4" };
    text(&namespace.exec(&["ip", family, "route", "get", address]))
}

/// Polls until no route sends any container endpoint's address into a TUN and no TUN is left.
fn wait_until_no_container_route(namespace: &Namespace) {
    let deadline = std::time::Instant::now() + CLEANUP_TIMEOUT;
    loop {
        let routes: Vec<String> = ALL
            .iter()
            .map(|address| route_get(namespace, address))
            .filter(|answer| answer.contains("dev imds"))
            .collect();
        let listed = namespace.ip(&["route", "show", "table", "all"])
            + &namespace.ip(&["-6", "route", "show", "table", "all"]);
        let listed: Vec<&str> = listed
            .lines()
            .filter(|line| ALL.iter().any(|address| line.starts_with(address)))
            .collect();
        let tuns = namespace.tun_links();
        if routes.is_empty() && listed.is_empty() && tuns.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after {CLEANUP_TIMEOUT:?}: TUN links {tuns:?}, routes {listed:?}, route get {routes:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP request to `address`:80 (with the `Host` an SDK sends) is answered by imds-tun: a
/// whole HTTP/1.1 response. No service claims this path on any address, so the answer is the
/// HTTP layer's or a service's 404, never a hang or a reset.
fn answered_by_imds_tun(namespace: &Namespace, address: &str) {
    let ip: IpAddr = address.parse().expect("address");
    let host = match ip {
        IpAddr::V4(_) => address.to_owned(),
        IpAddr::V6(_) => format!("[{address}]"),
    };
    let request = http::Request::get("/imds-tun-test/no-such-path").header("Host", &host);
    let response = namespace
        .run_in(move || async move { http::send(SocketAddr::new(ip, 80), &request).await });
    assert_eq!(response.version, "HTTP/1.1", "{address}: {response:?}");
    assert_eq!(response.status, 404, "{address}: {response:?}");
    assert!(
        response.header("content-length").is_some()
            || response.header("transfer-encoding").is_some(),
        "{address}: a complete answer: {response:?}"
    );
}

#[test]
fn each_container_endpoint_is_routed_into_the_tun_and_answered_then_sigterm_leaves_nothing() {
    let namespace = namespace!();
    let token = PodToken::new();
    let mut child = common::start(&namespace, &token.args(&ALL_FLAGS));
    let tun = child.tun_name();
    for address in ALL {
        let answer = route_get(&namespace, address);
        assert!(
            answer.contains(&format!("dev {tun}")),
            "{address} goes into {tun}: {answer}"
        );
        let source = if address.contains(':') {
            "fd00:ec2::253"
        } else {
            "169.254.169.253"
        };
        assert!(
            answer.contains(&format!("src {source}")),
            "{address} from {source}: {answer}"
        );
        answered_by_imds_tun(&namespace, address);
    }
    // The metadata address is served as before.
    let response = namespace.run_in(|| http::get(common::METADATA, "/latest/meta-data/"));
    assert_eq!(response.status, 200, "{response:?}");

    child.signal(Signal::SIGTERM);
    let status = child.wait_exit(Duration::from_secs(8));
    assert_exit_code(&child, status, 0);
    wait_until_no_container_route(&namespace);
    namespace.wait_until_clean(CLEANUP_TIMEOUT);
}

#[test]
fn sigkill_leaves_no_route_to_any_container_endpoint() {
    let namespace = namespace!();
    let token = PodToken::new();
    let mut child = common::start(&namespace, &token.args(&ALL_FLAGS));
    child.tun_name();
    child.signal(Signal::SIGKILL);
    child.wait_exit(Duration::from_secs(5));
    wait_until_no_container_route(&namespace);
    namespace.wait_until_clean(CLEANUP_TIMEOUT);
}

/// A start with `args` fails with exit 1 and one `imds-tun:` line holding every `needle`; then
/// `--check` with the same flags fails with a `fail` line holding them too. Nothing is left.
fn start_and_check_refuse(namespace: &Namespace, args: &[&str], needles: &[&str]) {
    let mut start = namespace.spawn(args);
    let status = start.wait_exit(REFUSAL_TIMEOUT);
    assert_exit_code(&start, status, 1);
    let stderr = start.stderr();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("imds-tun: "))
        .collect();
    assert_eq!(errors.len(), 1, "one line says why; stderr:\n{stderr}");
    for needle in needles {
        assert!(errors[0].contains(needle), "{needle:?} in {:?}", errors[0]);
    }
    // A refusal before the device creates nothing; one after it (the rule) takes the device
    // with the process, which the kernel removes a moment after the exit.
    let deadline = std::time::Instant::now() + CLEANUP_TIMEOUT;
    while !namespace.tun_links().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        namespace.tun_links().is_empty(),
        "no TUN is left after a refusal"
    );

    let binary = common::binary();
    let mut command = vec![binary.to_str().expect("utf-8 path"), "--check"];
    command.extend_from_slice(args);
    let output = namespace.exec(&command);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let fail: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("fail"))
        .collect();
    assert_eq!(fail.len(), 1, "one finding fails:\n{stdout}");
    for needle in needles {
        assert!(
            fail[0].contains(needle),
            "{needle:?} in --check's {:?}",
            fail[0]
        );
    }
}

#[test]
fn a_route_or_an_alias_already_holding_the_ecs_address_refuses_start_and_check() {
    let namespace = namespace!();
    let token = PodToken::new();
    namespace.ip(&["route", "add", "169.254.170.2/32", "dev", "lo"]);
    start_and_check_refuse(
        &namespace,
        &["--ecs"],
        &[
            "169.254.170.2 is already claimed by a host route via interface lo",
            "`sudo ip route del 169.254.170.2/32 dev lo`",
            "or run without --ecs",
        ],
    );
    namespace.ip(&["route", "del", "169.254.170.2/32", "dev", "lo"]);

    namespace.ip(&["addr", "add", "169.254.170.2/32", "dev", "lo"]);
    start_and_check_refuse(
        &namespace,
        &token.args(&["--ecs", "--eks-pod-identity"]),
        &[
            "169.254.170.2 is already claimed by an address (169.254.170.2/32) on interface lo",
            "`sudo ip addr del 169.254.170.2/32 dev lo`",
        ],
    );
    namespace.ip(&["addr", "del", "169.254.170.2/32", "dev", "lo"]);

    // Released: the same start serves, and --check reports each address as free.
    let output = namespace.exec(&[
        common::binary().to_str().expect("utf-8 path"),
        "--check",
        "--ecs",
        "--eks-pod-identity",
        "--eks-pod-identity-token-file",
        &token.path,
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    for address in [ECS, EKS] {
        assert!(
            stdout
                .lines()
                .any(|line| line.starts_with("ok") && line.contains(&format!("{address} ("))),
            "an ok finding for {address}:\n{stdout}"
        );
    }
    let child = common::start(&namespace, &token.args(&["--ecs", "--eks-pod-identity"]));
    child.tun_name();
    answered_by_imds_tun(&namespace, ECS);
}

#[test]
fn a_deleted_eks_pod_identity_route_ends_the_run_with_one_line_and_exit_1() {
    let namespace = namespace!();
    let token = PodToken::new();
    let mut child = common::start(&namespace, &token.args(&["--eks-pod-identity"]));
    let tun = child.tun_name();
    namespace.ip(&["route", "del", EKS]);
    let status = child.wait_exit(NOTICED_AND_GONE);
    assert_exit_code(&child, status, 1);
    let stderr = child.stderr();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("imds-tun: "))
        .collect();
    assert_eq!(errors.len(), 1, "one line says why; stderr:\n{stderr}");
    let needle = format!(
        "the kernel's route to {EKS} no longer goes into the TUN device {tun}, it goes nowhere"
    );
    assert!(errors[0].contains(&needle), "{needle:?} in {:?}", errors[0]);
    wait_until_no_container_route(&namespace);
}

#[test]
fn without_the_flags_nothing_routes_the_container_endpoints() {
    let namespace = namespace!();
    let child = common::start(&namespace, &["--ipv6"]);
    let tun = child.tun_name();
    for address in ALL {
        let answer = route_get(&namespace, address);
        assert!(!answer.contains(&tun), "{address} is not ours: {answer}");
    }
    let refused = namespace.run_in(|| async {
        // Connected, refused or unreachable: anything but an answer.
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect((ECS, 80)),
        )
        .await
    });
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "nothing answers 169.254.170.2 without --ecs"
    );
}

/// A policy rule that sends 169.254.170.23 elsewhere would take it from the device's route as
/// surely as a route: the start verifies where the kernel sends it and refuses, and `--check`
/// sees the rule before there is a device.
#[test]
fn a_policy_rule_diverting_the_eks_address_refuses_start_and_check() {
    let namespace = namespace!();
    let token = PodToken::new();
    namespace.ip(&[
        "link", "add", "divert0", "type", "veth", "peer", "name", "divert1",
    ]);
    namespace.ip(&["link", "set", "divert0", "up"]);
    namespace.ip(&["link", "set", "divert1", "up"]);
    namespace.ip(&["route", "add", EKS, "dev", "divert0", "table", "100"]);
    namespace.ip(&["rule", "add", "to", EKS, "lookup", "100"]);
    start_and_check_refuse(
        &namespace,
        &token.args(&["--eks-pod-identity"]),
        &[
            "the kernel routes 169.254.170.23 out of interface divert0",
            "`ip rule`",
            "`ip route get 169.254.170.23`",
        ],
    );
}
