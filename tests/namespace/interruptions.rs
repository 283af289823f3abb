//! Interruptions on demand, end to end in a fresh network namespace: `imds-tun ctl` (the real
//! binary, as root and as other users) changes what the instance is told, and clients read it
//! through the TUN with IMDSv2 required. Also: who may use the control socket, a squatter on its
//! name, scenarios played from a file, and that the socket leaves with the process (SIGKILL).
#![cfg(target_os = "linux")]

use crate::common;

use std::process::Output;
use std::time::Duration;

use common::{METADATA, Namespace, Spawn, http, text};

/// `imds-tun ctl ARGS` in the namespace, as root or through `prefix` (e.g. setpriv to nobody).
fn ctl(namespace: &Namespace, prefix: &[String], args: &[&str]) -> Output {
    let mut command: Vec<&str> = prefix.iter().map(String::as_str).collect();
    command.push(common::BINARY);
    command.push("ctl");
    command.extend_from_slice(args);
    namespace.exec(&command)
}

fn ctl_ok(namespace: &Namespace, args: &[&str]) -> serde_json::Value {
    let output = ctl(namespace, &[], args);
    assert!(output.status.success(), "ctl {args:?}: {}", text(&output));
    serde_json::from_slice(&output.stdout).expect("ctl prints the status as JSON")
}

/// GET `path` with a fresh IMDSv2 token: status and body.
fn read(namespace: &Namespace, path: &'static str) -> (u16, String) {
    namespace.run_in(move || async move {
        let token = http::token(METADATA, 60).await;
        let response = http::send(METADATA, &http::Request::get_with_token(path, &token)).await;
        (response.status, response.text().to_owned())
    })
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|error| panic!("not JSON ({error}): {body}"))
}

#[test]
fn a_spot_notice_appears_with_imdsv2_required_and_clear_takes_it_away() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--imdsv2", "required"]);
    assert_eq!(
        read(&namespace, "/latest/meta-data/spot/instance-action").0,
        404
    );
    assert_eq!(
        read(&namespace, "/latest/meta-data/instance-life-cycle").1,
        "on-demand"
    );

    let status = ctl_ok(&namespace, &["spot", "--action", "terminate", "--in", "90"]);
    assert_eq!(status["spot"]["action"], "terminate", "{status}");
    let (code, body) = read(&namespace, "/latest/meta-data/spot/instance-action");
    assert_eq!(code, 200, "{body}");
    let action = json(&body);
    assert_eq!(action["action"], "terminate");
    let time = action["time"].as_str().expect("time");
    assert_eq!(
        read(&namespace, "/latest/meta-data/spot/termination-time").1,
        time,
        "termination-time is the action's time"
    );
    assert_eq!(
        read(&namespace, "/latest/meta-data/instance-life-cycle").1,
        "spot"
    );
    assert!(
        read(&namespace, "/latest/meta-data/")
            .1
            .lines()
            .any(|l| l == "spot/")
    );

    ctl_ok(&namespace, &["clear"]);
    assert_eq!(
        read(&namespace, "/latest/meta-data/spot/instance-action").0,
        404
    );
    assert!(
        !read(&namespace, "/latest/meta-data/")
            .1
            .lines()
            .any(|l| l == "spot/")
    );
    assert_eq!(
        read(&namespace, "/latest/meta-data/instance-life-cycle").1,
        "on-demand"
    );
}

#[test]
fn events_rebalance_and_lifecycle_follow_the_commands() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    assert_eq!(
        read(&namespace, "/latest/meta-data/events/maintenance/scheduled").1,
        "[]"
    );

    let status = ctl_ok(
        &namespace,
        &[
            "event",
            "--code",
            "instance-stop",
            "--in",
            "600",
            "--duration",
            "300",
        ],
    );
    let id = status["events"]["scheduled"][0]["EventId"]
        .as_str()
        .expect("the status names the event")
        .to_owned();
    let scheduled = json(&read(&namespace, "/latest/meta-data/events/maintenance/scheduled").1);
    assert_eq!(scheduled[0]["Code"], "instance-stop");
    assert_eq!(scheduled[0]["State"], "active");
    assert_eq!(scheduled[0]["EventId"], id.as_str());

    ctl_ok(&namespace, &["cancel", &id]);
    assert_eq!(
        read(&namespace, "/latest/meta-data/events/maintenance/scheduled").1,
        "[]"
    );
    let history = json(&read(&namespace, "/latest/meta-data/events/maintenance/history").1);
    assert_eq!(history[0]["State"], "canceled");

    ctl_ok(&namespace, &["rebalance"]);
    let notice = json(
        &read(
            &namespace,
            "/latest/meta-data/events/recommendations/rebalance",
        )
        .1,
    );
    assert!(
        notice["noticeTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{notice}"
    );

    ctl_ok(&namespace, &["lifecycle", "Terminated"]);
    assert_eq!(
        read(
            &namespace,
            "/latest/meta-data/autoscaling/target-lifecycle-state"
        )
        .1,
        "Terminated"
    );

    let unknown = ctl(
        &namespace,
        &[],
        &["cancel", "instance-event-00000000000000000"],
    );
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no event"));
}

#[test]
fn another_user_is_refused_and_changes_nothing_but_the_user_behind_sudo_may() {
    let namespace = namespace!();
    // uid 4321, an account of its own (nobody is shared, and kept out of ctl: see
    // control_lifecycle.rs).
    let under_sudo = Spawn {
        env: vec![
            ("SUDO_UID".into(), "4321".into()),
            ("SUDO_GID".into(), "4321".into()),
        ],
        ..Spawn::default()
    };
    let child = namespace.spawn_with(&[], &under_sudo);
    child.wait_ready();

    // uid 1234 is neither root nor the user imds-tun serves: refused, nothing changes.
    let stranger = vec![
        "setpriv".to_owned(),
        "--reuid=1234".to_owned(),
        "--regid=1234".to_owned(),
        "--clear-groups".to_owned(),
    ];
    let refused = ctl(&namespace, &stranger, &["spot", "--action", "stop"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("uid 1234 may not control this imds-tun"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        read(&namespace, "/latest/meta-data/spot/instance-action").0,
        404
    );

    // uid 4321 is the user behind sudo: allowed.
    let sudo_user = vec![
        "setpriv".to_owned(),
        "--reuid=4321".to_owned(),
        "--regid=4321".to_owned(),
        "--clear-groups".to_owned(),
    ];
    let allowed = ctl(&namespace, &sudo_user, &["spot", "--action", "stop"]);
    assert!(allowed.status.success(), "{}", text(&allowed));
    assert_eq!(
        json(&read(&namespace, "/latest/meta-data/spot/instance-action").1)["action"],
        "stop"
    );
    child.wait_for_line(common::READY_TIMEOUT, |line| line.contains("ctl: uid 4321"));
}

#[test]
fn a_scenario_file_plays_its_steps_in_order() {
    let namespace = namespace!();
    let scratch = common::TempDir::new();
    let scenario = scratch.file(
        "reclaim.json",
        br#"[
            {"at": "+0s", "command": "rebalance"},
            {"at": "+1s", "command": "spot", "action": "terminate", "in": 120},
            {"at": "+2s", "command": "lifecycle", "state": "Terminated"}
        ]"#,
    );
    let _child = common::start(&namespace, &["--scenario", &scenario]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        read(
            &namespace,
            "/latest/meta-data/events/recommendations/rebalance"
        )
        .0,
        200,
        "the +0s step applies at start"
    );
    assert_eq!(
        read(&namespace, "/latest/meta-data/spot/instance-action").0,
        404
    );
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(
        read(&namespace, "/latest/meta-data/spot/instance-action").0,
        200
    );
    assert_eq!(
        read(
            &namespace,
            "/latest/meta-data/autoscaling/target-lifecycle-state"
        )
        .1,
        "Terminated"
    );

    // ctl play replaces it; clear stops it.
    let later = scratch.file(
        "later.json",
        br#"[{"at": "+2s", "command": "event", "code": "system-reboot"}]"#,
    );
    ctl_ok(&namespace, &["play", &later]);
    ctl_ok(&namespace, &["clear"]);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        read(&namespace, "/latest/meta-data/events/maintenance/scheduled").1,
        "[]",
        "clear stopped the scenario before its step"
    );
}

#[test]
fn the_control_socket_leaves_with_the_process_even_on_sigkill() {
    let namespace = namespace!();
    let mut child = common::start(&namespace, &[]);
    ctl_ok(&namespace, &["status"]);
    child.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait_exit(Duration::from_secs(5));
    let after = ctl(&namespace, &[], &["status"]);
    assert_eq!(after.status.code(), Some(1), "{}", text(&after));
    assert!(
        String::from_utf8_lossy(&after.stderr).contains("no imds-tun is running"),
        "{}",
        text(&after)
    );
    let sockets = namespace.exec(&["cat", "/proc/net/unix"]);
    assert!(
        !String::from_utf8_lossy(&sockets.stdout).contains("@imds-tun/control"),
        "no control socket is left"
    );
}

#[test]
fn a_squatter_on_the_name_neither_stops_the_service_nor_hears_root() {
    let namespace = namespace!();
    // nobody binds the name first and waits.
    let mut squatter = std::process::Command::new("ip")
        .args(["netns", "exec", namespace.name()])
        .args(common::nobody_prefix())
        .args([
            "/usr/bin/python3",
            "-c",
            "import socket,time\ns=socket.socket(socket.AF_UNIX)\ns.bind('\\0imds-tun/control')\ns.listen()\nprint('bound',flush=True)\ntime.sleep(30)",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(squatter.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("the squatter reports");
    assert_eq!(line.trim(), "bound");

    let child = common::start(&namespace, &[]);
    child.wait_for_line(common::READY_TIMEOUT, |line| {
        line.contains("control socket @imds-tun/control is already bound")
    });
    assert_eq!(
        read(&namespace, "/latest/meta-data/instance-life-cycle").0,
        200
    );
    let refused = ctl(&namespace, &[], &["status"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("held by uid 65534"),
        "{}",
        text(&refused)
    );
    let _ = squatter.kill();
    let _ = squatter.wait();
}

/// The script docs/metadata.md shows, byte for byte.
fn documented_script() -> String {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metadata.md"))
        .expect("docs/metadata.md");
    let start = docs
        .find("`docs/examples/drain-on-spot.sh` polls")
        .expect("the worked example");
    let block = &docs[start..];
    let open = block.find("```sh\n").expect("its code block") + "```sh\n".len();
    let close = block[open..].find("```").expect("the block ends");
    block[open..open + close].to_owned()
}

#[test]
fn the_worked_example_drain_script_drains_on_a_spot_notice() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/examples/drain-on-spot.sh"
    );
    assert_eq!(
        std::fs::read_to_string(script).expect("the example script"),
        documented_script(),
        "docs/metadata.md shows the file as it is"
    );
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--imdsv2", "required"]);
    let drain = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            namespace.name(),
            "env",
            "POLL_SECONDS=1",
            "sh",
            script,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sh runs the script");
    std::thread::sleep(Duration::from_millis(1500));
    ctl_ok(&namespace, &["spot", "--action", "terminate"]);
    let output = drain.wait_with_output().expect("the script exits");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}");
    assert!(
        printed.contains("spot interruption: {\"action\":\"terminate\",\"time\":\""),
        "{printed}"
    );
    assert!(printed.trim_end().ends_with("draining"), "{printed}");
}
