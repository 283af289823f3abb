//! A claim lost while serving ends the run: each way the kernel can stop sending
//! 169.254.169.254 (or fd00:ec2::254) into imds-tun's device — the device deleted, its address
//! flushed, the route deleted, the link set down, a policy rule that diverts the address — is
//! noticed within a second or two, said in one line, and the process exits 1 (so systemd's
//! `Restart=on-failure` fires) with the claim lock released: a new start then succeeds. And
//! what is not a loss (imds-tun's own set-up, other interfaces' changes, a changed MTU) is not
//! taken for one.
#![cfg(target_os = "linux")]

use crate::common;

use std::time::{Duration, Instant};

use common::{Namespace, assert_exit_code, http};
use nix::sys::signal::Signal;

/// From the change to the exit: noticed (netlink news, then a look) and drained (nothing is in
/// flight here). The issue asks for "a second or two".
const NOTICED_AND_GONE: Duration = Duration::from_secs(2);

/// How long the kernel may take to remove a device after its last descriptor closed.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Starts imds-tun with `args`, runs each `ip` command (`{tun}` replaced by the device's name),
/// and checks the run ends within [`NOTICED_AND_GONE`], exit 1, with exactly one
/// `imds-tun: ...` line containing `needle` and the advice to start again. Returns the device's
/// name.
fn lose_the_claim(namespace: &Namespace, args: &[&str], commands: &[&[&str]], needle: &str) {
    let mut child = common::start(namespace, args);
    let tun = child.tun_name();
    let changed = Instant::now();
    for command in commands {
        let command: Vec<String> = command
            .iter()
            .map(|word| word.replace("{tun}", &tun))
            .collect();
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        namespace.ip(&command);
    }
    let status = child.wait_exit(NOTICED_AND_GONE);
    let took = changed.elapsed();
    assert_exit_code(&child, status, 1);
    let stderr = child.stderr();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("imds-tun: "))
        .collect();
    assert_eq!(errors.len(), 1, "one line says why; stderr:\n{stderr}");
    let needle = needle.replace("{tun}", &tun);
    for part in [needle.as_str(), "stopped serving", "start imds-tun again"] {
        assert!(errors[0].contains(part), "{part:?} in {:?}", errors[0]);
    }
    assert!(took < NOTICED_AND_GONE, "exited after {took:?}");
}

/// The claim lock went with the process: a new start claims the address and serves.
fn a_new_start_serves(namespace: &Namespace, args: &[&str]) {
    namespace.wait_until_clean(CLEANUP_TIMEOUT);
    let child = common::start(namespace, args);
    child.tun_name();
    let response = namespace.run_in(|| http::get(common::METADATA, "/latest/meta-data/"));
    assert_eq!(response.status, 200, "{response:?}");
}

#[test]
fn a_deleted_tun_ends_the_run_with_one_line_and_exit_1() {
    let namespace = namespace!();
    lose_the_claim(
        &namespace,
        &[],
        &[&["link", "del", "{tun}"]],
        "the TUN device {tun} was deleted",
    );
    a_new_start_serves(&namespace, &[]);
}

#[test]
fn a_flushed_address_ends_the_run_with_one_line_and_exit_1() {
    let namespace = namespace!();
    lose_the_claim(
        &namespace,
        &[],
        &[&["addr", "flush", "dev", "{tun}"]],
        "the address 169.254.169.253 peer 169.254.169.254 was removed from the TUN device {tun}",
    );
    a_new_start_serves(&namespace, &[]);
}

#[test]
fn a_deleted_route_ends_the_run_with_one_line_and_exit_1() {
    let namespace = namespace!();
    lose_the_claim(
        &namespace,
        &[],
        &[&["route", "del", "169.254.169.254"]],
        "the kernel's route to 169.254.169.254 no longer goes into the TUN device {tun}, it goes \
         nowhere",
    );
    a_new_start_serves(&namespace, &[]);
}

#[test]
fn a_link_set_down_ends_the_run_with_one_line_and_exit_1() {
    let namespace = namespace!();
    lose_the_claim(
        &namespace,
        &[],
        &[&["link", "set", "{tun}", "down"]],
        "the TUN device {tun} was set down",
    );
    a_new_start_serves(&namespace, &[]);
}

/// A policy rule added while serving takes the address away as surely as a deleted route.
#[test]
fn a_policy_rule_added_while_serving_ends_the_run_naming_where_the_address_goes() {
    let namespace = namespace!();
    namespace.ip(&[
        "link", "add", "divert0", "type", "veth", "peer", "name", "divert1",
    ]);
    namespace.ip(&["link", "set", "divert0", "up"]);
    namespace.ip(&["link", "set", "divert1", "up"]);
    namespace.ip(&[
        "route",
        "add",
        "169.254.169.254",
        "dev",
        "divert0",
        "table",
        "100",
    ]);
    lose_the_claim(
        &namespace,
        &[],
        &[&["rule", "add", "to", "169.254.169.254", "lookup", "100"]],
        "it goes out of interface divert0",
    );
    namespace.ip(&["rule", "del", "to", "169.254.169.254", "lookup", "100"]);
    namespace.ip(&["route", "flush", "table", "100"]);
    a_new_start_serves(&namespace, &[]);
}

/// With `--ipv6` the IPv6 pair is part of the claim: removing it ends the run too.
#[test]
fn a_removed_ipv6_address_ends_an_ipv6_run_with_one_line_and_exit_1() {
    let namespace = namespace!();
    lose_the_claim(
        &namespace,
        &["--ipv6"],
        &[&[
            "-6",
            "addr",
            "del",
            "fd00:ec2::253",
            "peer",
            "fd00:ec2::254/128",
            "dev",
            "{tun}",
        ]],
        "the address fd00:ec2::253 peer fd00:ec2::254 was removed from the TUN device {tun}",
    );
    a_new_start_serves(&namespace, &["--ipv6"]);
}

/// The watch looks again at every change in the namespace; none of these is a loss, so the
/// run goes on serving: another interface made, addressed, routed, set up and down and
/// deleted; an address added to and removed from `lo`; our own device's MTU changed; and, with
/// `--ipv6`, the kernel's own link-local address work during the start.
#[test]
fn other_interfaces_changes_and_our_own_set_up_are_not_a_loss() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &["--ipv6"]);
    let tun = child.tun_name();
    for command in [
        &[
            "link", "add", "other0", "type", "veth", "peer", "name", "other1",
        ][..],
        &["addr", "add", "169.254.1.1/16", "dev", "other0"],
        &["link", "set", "other0", "up"],
        &["route", "add", "10.9.9.0/24", "dev", "other0"],
        &["-6", "addr", "add", "fd00:ec2::1/64", "dev", "other0"],
        &["addr", "add", "127.0.0.7/8", "dev", "lo"],
        &["addr", "del", "127.0.0.7/8", "dev", "lo"],
        &["link", "set", "other0", "down"],
        &["link", "del", "other0"],
        &["link", "set", &tun, "mtu", "1400"],
    ] {
        namespace.ip(command);
    }
    std::thread::sleep(NOTICED_AND_GONE);
    assert!(
        child.is_running(),
        "no loss, so no exit; stderr:\n{}",
        child.stderr()
    );
    let response = namespace.run_in(|| http::get(common::METADATA, "/latest/meta-data/"));
    assert_eq!(response.status, 200, "{response:?}");
    child.signal(Signal::SIGTERM);
    let status = child.wait_exit(Duration::from_secs(8));
    assert_exit_code(&child, status, 0);
    assert!(
        !child.stderr().contains("stopped serving"),
        "{}",
        child.stderr()
    );
}
