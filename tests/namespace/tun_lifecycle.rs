//! What a run of `imds-tun` does to the namespace it runs in: the TUN link and the kernel route
//! exist exactly while it runs, every way of ending removes them, and every refusal creates
//! nothing.
#![cfg(target_os = "linux")]

use crate::common;

use std::time::Duration;

use common::http;
use common::{Namespace, Spawn, assert_exit_code};
use nix::sys::signal::Signal;
use serde_json::Value;

/// Refusals must come before any work, so they are fast.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// A graceful exit finishes in-flight requests (grace 5 s by default) and nothing was in flight.
const GRACEFUL_EXIT_TIMEOUT: Duration = Duration::from_secs(8);

/// How long the kernel may take to remove a device after its last descriptor closed.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(3);

/// The lines `imds-tun` reports failures with (`imds-tun: <message>`).
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.starts_with("imds-tun: "))
        .collect()
}

/// Asserts stderr holds exactly one `imds-tun: ...` line and that it contains every needle.
fn assert_one_error_line(stderr: &str, needles: &[&str]) {
    let lines = error_lines(stderr);
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one `imds-tun: ...` line; stderr:\n{stderr}"
    );
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "the error line should mention {needle:?}: {}",
            lines[0]
        );
    }
}

fn assert_only_lo(namespace: &Namespace) {
    assert_eq!(
        namespace.links(),
        vec!["lo".to_string()],
        "the namespace should hold no link but lo"
    );
    assert!(
        namespace.routes_to_metadata().is_empty(),
        "no route to 169.254.169.254 should exist: {:?}",
        namespace.routes_to_metadata()
    );
}

/// A client that sent half a request and went quiet: it holds a connection open, and with it
/// a graceful shutdown, until the grace period ends.
fn stalled_client(namespace: &Namespace) -> http::Connection {
    namespace.run_in(|| async {
        let mut connection = http::Connection::open(common::METADATA).await;
        connection
            .write_raw(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n")
            .await;
        connection
    })
}

/// Starts a default instance and ends it with `signal`; returns its exit status.
fn end_with(signal: Signal, namespace: &Namespace) -> (common::ImdsTun, std::process::ExitStatus) {
    let mut child = common::start(namespace, &[]);
    let tun = child.tun_name();
    assert_eq!(namespace.tun_links(), vec![tun.clone()]);
    child.signal(signal);
    let timeout = if signal == Signal::SIGKILL {
        CLEANUP_TIMEOUT
    } else {
        GRACEFUL_EXIT_TIMEOUT
    };
    let status = child.wait_exit(timeout);
    namespace.wait_until_clean(CLEANUP_TIMEOUT);
    assert_only_lo(namespace);
    (child, status)
}

/// On a host with a default route (and even a link-local address of its own), the kernel must
/// still pick the TUN's point-to-point source for 169.254.169.254, and the served local-ipv4
/// defaults to the host's primary address.
#[test]
fn on_a_host_with_a_default_route_clients_still_reach_the_tun_from_its_own_source() {
    let namespace = namespace!();
    namespace.ip(&[
        "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
    ]);
    namespace.ip(&["addr", "add", "192.0.2.10/24", "dev", "uplink0"]);
    namespace.ip(&["addr", "add", "169.254.7.7/16", "dev", "uplink0"]);
    namespace.ip(&["link", "set", "uplink0", "up"]);
    namespace.ip(&["link", "set", "uplink1", "up"]);
    namespace.ip(&["route", "add", "default", "via", "192.0.2.1"]);

    let child = common::start(&namespace, &[]);
    let tun = child.tun_name();
    let route = namespace.ip(&["route", "get", "169.254.169.254"]);
    assert!(
        route.contains(&format!("dev {tun}")) && route.contains("src 169.254.169.253"),
        "the metadata address goes into the TUN from .253: {route}"
    );
    let local_ipv4 = namespace
        .run_in(|| async { http::get(common::METADATA, "/latest/meta-data/local-ipv4").await });
    assert_eq!(local_ipv4.status, 200);
    assert_eq!(local_ipv4.text(), "192.0.2.10");
}

#[test]
fn running_instance_owns_a_point_to_point_tun_and_a_kernel_host_route() {
    let namespace = namespace!();
    let child = common::start(&namespace, &[]);
    let tun = child.tun_name();
    assert!(tun.starts_with("imds"), "default name is imds%d, got {tun}");
    assert_eq!(namespace.tun_links(), vec![tun.clone()]);

    let links = namespace.ip_json(&["-d", "link", "show", "dev", &tun]);
    let link = &links[0];
    let flags: Vec<&str> = link["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(flags.contains(&"UP"), "link is up: {link}");
    assert!(
        flags.contains(&"POINTOPOINT"),
        "link is point-to-point: {link}"
    );
    assert_eq!(link["linkinfo"]["info_data"]["type"], "tun", "{link}");
    assert_eq!(
        link["linkinfo"]["info_data"]["pi"], false,
        "no packet info: {link}"
    );
    assert_eq!(
        link["txqlen"], 4096,
        "the queue holds four packets for each of the default 1024 connections: {link}"
    );

    let addresses = namespace.ip_json(&["addr", "show", "dev", &tun]);
    let ipv4: Vec<&Value> = addresses[0]["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .filter(|address| address["family"] == "inet")
        .collect();
    assert_eq!(ipv4.len(), 1, "exactly one IPv4 address: {addresses}");
    assert_eq!(ipv4[0]["local"], "169.254.169.253", "{addresses}");
    assert_eq!(ipv4[0]["address"], "169.254.169.254", "peer: {addresses}");
    assert_eq!(ipv4[0]["prefixlen"], 32, "{addresses}");

    let routes = namespace.routes_to_metadata();
    assert_eq!(
        routes.len(),
        1,
        "one route to the metadata address: {routes:?}"
    );
    let route = &routes[0];
    assert_eq!(route["dst"], "169.254.169.254", "{route}");
    assert_eq!(route["dev"], tun.as_str(), "{route}");
    assert_eq!(route["protocol"], "kernel", "{route}");
    assert_eq!(route["scope"], "link", "{route}");
    assert_eq!(route["prefsrc"], "169.254.169.253", "{route}");

    let chosen = namespace.ip_json(&["route", "get", "169.254.169.254"]);
    assert_eq!(chosen[0]["dev"], tun.as_str(), "{chosen}");
    assert_eq!(chosen[0]["prefsrc"], "169.254.169.253", "{chosen}");

    let response = namespace.run_in(|| http::get(common::METADATA, "/latest/"));
    assert_eq!(response.status, 200, "{response:?}");
}

#[test]
fn the_tun_queue_grows_with_the_connection_limit_within_its_bounds() {
    for (max_connections, queue) in [("10", 500), ("2000", 8000), ("65536", 16384)] {
        let namespace = namespace!();
        let child = common::start(&namespace, &["--max-connections", max_connections]);
        let tun = child.tun_name();
        let links = namespace.ip_json(&["link", "show", "dev", &tun]);
        assert_eq!(
            links[0]["txqlen"], queue,
            "--max-connections {max_connections}: {links}"
        );
    }
}

#[test]
fn sigterm_exits_zero_and_leaves_no_link_and_no_route() {
    let namespace = namespace!();
    let (child, status) = end_with(Signal::SIGTERM, &namespace);
    assert_exit_code(&child, status, 0);
}

#[test]
fn sigint_exits_zero_and_leaves_no_link_and_no_route() {
    let namespace = namespace!();
    let (child, status) = end_with(Signal::SIGINT, &namespace);
    assert_exit_code(&child, status, 0);
}

#[test]
fn sighup_exits_zero_and_leaves_no_link_and_no_route() {
    let namespace = namespace!();
    let (child, status) = end_with(Signal::SIGHUP, &namespace);
    assert_exit_code(&child, status, 0);
}

#[test]
fn sigkill_leaves_no_link_and_no_route() {
    let namespace = namespace!();
    let (child, status) = end_with(Signal::SIGKILL, &namespace);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(Signal::SIGKILL as i32),
        "{status}; stderr:\n{}",
        child.stderr()
    );
}

#[test]
fn sigterm_during_a_request_still_exits_zero_and_cleans_up() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &[]);
    // An open keep-alive connection must not hold up the exit beyond the grace period.
    let _connection = namespace.run_in(|| async {
        let mut connection = http::Connection::open(common::METADATA).await;
        let response = connection.send(&http::Request::get("/latest/")).await;
        assert_eq!(response.status, 200, "{response:?}");
        connection
    });
    child.signal(Signal::SIGTERM);
    let status = child.wait_exit(GRACEFUL_EXIT_TIMEOUT);
    assert_exit_code(&child, status, 0);
    namespace.wait_until_clean(CLEANUP_TIMEOUT);
}

#[test]
fn shutdown_grace_bounds_the_exit_when_a_client_stalls() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &["--shutdown-grace", "1"]);
    let _stalled = stalled_client(&namespace);
    let started = std::time::Instant::now();
    child.signal(Signal::SIGTERM);
    let status = child.wait_exit(Duration::from_secs(4));
    assert_exit_code(&child, status, 0);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a 1 s grace took {:?}",
        started.elapsed()
    );
    namespace.wait_until_clean(CLEANUP_TIMEOUT);
}

#[test]
fn metadata_address_on_lo_is_refused_and_no_tun_is_created() {
    let namespace = namespace!();
    namespace.ip(&["addr", "add", "169.254.169.254/32", "dev", "lo"]);
    let mut child = namespace.spawn(&[]);
    let status = child.wait_exit(REFUSAL_TIMEOUT);
    assert_exit_code(&child, status, 1);
    assert_one_error_line(&child.stderr(), &["already claimed", "lo"]);
    assert!(namespace.tun_links().is_empty(), "no TUN may be created");
    assert_eq!(namespace.links(), vec!["lo".to_string()]);
}

#[test]
fn second_instance_is_refused_while_the_first_keeps_serving() {
    let namespace = namespace!();
    let first = common::start(&namespace, &[]);
    let tun = first.tun_name();

    let mut second = namespace.spawn(&[]);
    let status = second.wait_exit(REFUSAL_TIMEOUT);
    assert_exit_code(&second, status, 1);
    assert_one_error_line(&second.stderr(), &["already claimed"]);
    assert_eq!(
        namespace.tun_links(),
        vec![tun.clone()],
        "only the first TUN"
    );

    let response = namespace.run_in(|| http::get(common::METADATA, "/latest/"));
    assert_eq!(
        response.status, 200,
        "the first instance still serves: {response:?}"
    );
    let routes = namespace.routes_to_metadata();
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0]["dev"], tun.as_str());
}

#[test]
fn unprivileged_run_is_refused_naming_root_and_cap_net_admin() {
    let namespace = namespace!();
    let mut child = namespace.spawn_with(&[], &Spawn::nobody());
    let status = child.wait_exit(REFUSAL_TIMEOUT);
    assert_exit_code(&child, status, 1);
    assert_one_error_line(&child.stderr(), &["root", "CAP_NET_ADMIN"]);
    assert_eq!(namespace.links(), vec!["lo".to_string()], "nothing created");
}

/// `--no-tun --listen` needs no privilege. As root the binary runs as `nobody` inside a fresh
/// namespace (proving no link appears); without root it runs on this host's loopback directly.
#[test]
fn no_tun_with_listen_serves_without_links_even_unprivileged() {
    let args = ["--no-tun", "--listen", "127.0.0.1:0"];
    if !common::is_root() {
        let command = {
            let mut command = std::process::Command::new(common::BINARY);
            command.args(args);
            command
        };
        let child = common::ImdsTun::spawn(command, &Spawn::default(), test_name!());
        child.wait_ready();
        let address = child.listen_addresses()[0];
        let response = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(http::get(address, "/latest/"));
        assert_eq!(response.status, 200, "{response:?}");
        return;
    }
    let namespace = namespace!();
    let mut child = namespace.spawn_with(&args, &Spawn::nobody());
    let line = child.wait_ready();
    assert!(!line.contains("TUN device"), "no TUN announced: {line}");
    let address = child.listen_addresses()[0];
    assert_eq!(address.ip().to_string(), "127.0.0.1");
    assert_ne!(address.port(), 0, "the announced port is the bound one");
    let response = namespace.run_in(move || http::get(address, "/latest/"));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(namespace.links(), vec!["lo".to_string()], "no link created");
    assert!(namespace.routes_to_metadata().is_empty());
    child.signal(Signal::SIGTERM);
    let status = child.wait_exit(GRACEFUL_EXIT_TIMEOUT);
    assert_exit_code(&child, status, 0);
}

#[test]
fn no_tun_without_listen_exits_2_with_one_clear_line() {
    let namespace = namespace!();
    let mut child = namespace.spawn(&["--no-tun"]);
    let status = child.wait_exit(REFUSAL_TIMEOUT);
    assert_exit_code(&child, status, 2);
    assert_one_error_line(&child.stderr(), &["--no-tun", "--listen"]);
    assert_eq!(namespace.links(), vec!["lo".to_string()], "nothing created");
}

#[test]
fn overlong_tun_name_is_refused_and_creates_nothing() {
    let namespace = namespace!();
    let name = "imds-name-far-too-long";
    let mut child = namespace.spawn(&["--tun-name", name]);
    let status = child.wait_exit(REFUSAL_TIMEOUT);
    assert_exit_code(&child, status, 2);
    assert_one_error_line(&child.stderr(), &["--tun-name", name]);
    assert_eq!(namespace.links(), vec!["lo".to_string()], "nothing created");
}

#[test]
fn busy_listen_port_is_refused_before_any_tun_is_created() {
    let namespace = namespace!();
    // A socket keeps the namespace it was created in, so this listener holds the port inside
    // the test namespace after the helper thread is gone.
    let holder = namespace.run_in(|| async {
        std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port")
    });
    let busy = holder.local_addr().expect("local address").to_string();
    let mut child = namespace.spawn(&["--listen", &busy]);
    let status = child.wait_exit(REFUSAL_TIMEOUT);
    assert_exit_code(&child, status, 1);
    assert_one_error_line(&child.stderr(), &[busy.as_str(), "--listen"]);
    assert!(namespace.tun_links().is_empty(), "no TUN may be created");
    assert_eq!(namespace.links(), vec!["lo".to_string()]);
    drop(holder);
}

/// Of two instances started at the same moment, exactly one may win the address; the other
/// exits 1 with the "already claimed" line and leaves nothing. Repeated, since a race that is
/// lost only sometimes is still a race.
#[test]
fn two_starts_at_the_same_moment_leave_exactly_one_running() {
    let namespace = namespace!();
    const TRIES: usize = 25;
    let mut both_up = 0;
    for attempt in 0..TRIES {
        let mut children = [namespace.spawn(&[]), namespace.spawn(&[])];
        let deadline = std::time::Instant::now() + REFUSAL_TIMEOUT;
        // Wait until each has either come up or exited.
        while std::time::Instant::now() < deadline
            && !children
                .iter_mut()
                .all(|child| child.stderr().contains(common::READY_LINE) || !child.is_running())
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let up = children
            .iter_mut()
            .filter_map(|child| child.is_running().then_some(()))
            .count();
        if up == 2 {
            both_up += 1;
        }
        assert!(up >= 1, "attempt {attempt}: neither instance came up");
        for child in &mut children {
            if !child.is_running() {
                let status = child.wait_exit(REFUSAL_TIMEOUT);
                assert_exit_code(child, status, 1);
                assert_one_error_line(&child.stderr(), &["already claimed", "another imds-tun"]);
            }
        }
        assert!(
            namespace.tun_links().len() <= 1,
            "attempt {attempt}: two TUN devices: {:?}",
            namespace.tun_links()
        );
        for child in &mut children {
            if child.is_running() {
                child.signal(Signal::SIGKILL);
                child.wait_exit(CLEANUP_TIMEOUT);
            }
        }
        namespace.wait_until_clean(CLEANUP_TIMEOUT);
    }
    assert_eq!(
        both_up, 0,
        "both instances came up in {both_up} of {TRIES} tries"
    );
}

/// An unprivileged user who binds the claim lock's name first must not lock imds-tun out: the
/// squatter is named in a warning and the address is claimed all the same.
#[test]
fn an_unprivileged_squatter_of_the_claim_lock_does_not_lock_imds_tun_out() {
    let namespace = namespace!();
    let squat = "import socket, time\n\
s = socket.socket(socket.AF_UNIX)\n\
s.bind('\\0imds-tun/169.254.169.254')\n\
s.listen()\n\
print('bound', flush=True)\n\
time.sleep(60)\n";
    let mut command = std::process::Command::new("ip");
    command.args(["netns", "exec", namespace.name()]);
    command.args(common::nobody_prefix());
    // Debian's interpreter: one under /root (pyenv) is out of nobody's reach.
    command.args(["/usr/bin/python3", "-c", squat]);
    let mut squatter = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(squatter.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("the squatter reports");
    assert_eq!(line.trim(), "bound", "the squatter holds the name");

    let child = common::start(&namespace, &[]);
    assert!(
        child
            .stderr()
            .contains("unprivileged process holds imds-tun's claim lock"),
        "the squatter is named: {}",
        child.stderr()
    );
    let response = namespace.run_in(|| http::get(common::METADATA, "/latest/"));
    assert_eq!(response.status, 200, "{response:?}");
    let _ = squatter.kill();
    let _ = squatter.wait();
}

/// A policy-routing rule that sends 169.254.169.254 elsewhere wins over our device's route;
/// imds-tun must notice instead of saying "serving" into the void.
#[test]
fn a_policy_rule_that_diverts_the_address_is_refused() {
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
    let mut child = namespace.spawn(&[]);
    let status = child.wait_exit(REFUSAL_TIMEOUT);
    assert_exit_code(&child, status, 1);
    assert_one_error_line(
        &child.stderr(),
        &["routes 169.254.169.254 out of interface divert0", "ip rule"],
    );
    // Not wait_until_clean: the diverting route in table 100 is the test's own and stays.
    let deadline = std::time::Instant::now() + CLEANUP_TIMEOUT;
    while !namespace.tun_links().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        namespace.tun_links().is_empty(),
        "the TUN went with the refusal"
    );
}

/// Once SIGTERM has stopped accepting, a new client is refused with a RST (connection refused),
/// like a kernel socket without a listener, not connected and then closed without an answer.
#[test]
fn a_connection_after_sigterm_is_refused_not_answered_empty() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &["--shutdown-grace", "3"]);
    let _stalled = stalled_client(&namespace);
    // Let the service take the stalled connection up: only a request in flight holds the exit.
    std::thread::sleep(Duration::from_millis(300));
    child.signal(Signal::SIGTERM);
    child.wait_for_line(Duration::from_secs(2), |line| {
        line.contains("received SIGTERM")
    });
    let outcome = namespace.run_in(|| async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = match tokio::net::TcpStream::connect(common::METADATA).await {
            Ok(stream) => stream,
            Err(error) => return format!("connect: {:?}", error.kind()),
        };
        let _ = stream
            .write_all(b"GET /latest/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
            .await;
        let mut reply = Vec::new();
        match stream.read_to_end(&mut reply).await {
            Ok(_) => format!("read {} bytes then EOF", reply.len()),
            Err(error) => format!("read: {:?}", error.kind()),
        }
    });
    assert!(
        outcome == "connect: ConnectionRefused" || outcome == "read: ConnectionReset",
        "a client after SIGTERM must be refused or reset, got: {outcome}"
    );
    let status = child.wait_exit(GRACEFUL_EXIT_TIMEOUT);
    assert_exit_code(&child, status, 0);
    namespace.wait_until_clean(CLEANUP_TIMEOUT);
}

/// A user holding CAP_NET_ADMIN (the systemd unit's shape) who cannot open a mode-0600
/// `/dev/net/tun` must be told about the device's mode, not that imds-tun "needs root".
#[test]
fn cap_net_admin_without_access_to_dev_net_tun_is_told_about_the_device_not_root() {
    let namespace = namespace!();
    let scratch = common::TempDir::new();
    // `ip netns exec` runs the shell in a mount namespace of its own: the bind mount of a 0600
    // device node over /dev/net/tun is seen by this command only.
    let script = format!(
        "mount -t tmpfs tmpfs {dir} && mknod {dir}/tun c 10 200 && chmod 0600 {dir}/tun && \
         mount --bind {dir}/tun /dev/net/tun && exec setpriv --reuid=65534 --regid=65534 \
         --clear-groups --inh-caps=+net_admin --ambient-caps=+net_admin {binary}",
        dir = scratch.path().display(),
        binary = common::BINARY,
    );
    let mut command = std::process::Command::new("ip");
    command.args(["netns", "exec", namespace.name(), "sh", "-c", &script]);
    let mut child = common::ImdsTun::spawn(command, &Spawn::default(), test_name!());
    let status = child.wait_exit(REFUSAL_TIMEOUT);
    assert_exit_code(&child, status, 1);
    assert_one_error_line(
        &child.stderr(),
        &[
            "/dev/net/tun exists but this user cannot open it",
            "chmod 0666",
        ],
    );
    assert!(!child.stderr().contains("needs root"), "{}", child.stderr());
    assert!(namespace.tun_links().is_empty());
}
