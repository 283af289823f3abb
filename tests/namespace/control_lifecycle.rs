//! The control channel's lifecycle and its bounds: a `--scenario` plays whoever holds the
//! socket's name; a shared served account (nobody) is warned about and kept out of `ctl`
//! unless asked; root may `ctl` the packaged service (a dynamic user holding CAP_NET_ADMIN
//! that owns the claim); `ctl play` takes every scenario `--scenario` takes; faults and events
//! are bounded; `ctl clear` says which faults still stand.
#![cfg(target_os = "linux")]

use crate::common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{METADATA, Namespace, Spawn, TempDir, http, text};

/// `imds-tun ctl ARGS` in the namespace, after `prefix` (a `setpriv` to run as another user).
fn ctl(namespace: &Namespace, prefix: &[String], args: &[&str]) -> Output {
    let binary = common::binary();
    let mut command: Vec<String> = prefix.to_vec();
    command.push(binary.to_string_lossy().into_owned());
    command.push("ctl".into());
    command.extend(args.iter().map(|arg| (*arg).to_owned()));
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    namespace.exec(&command)
}

/// GET `path` through the TUN: status and body.
fn read(namespace: &Namespace, path: &'static str) -> (u16, String) {
    namespace.run_in(move || async move {
        let response = http::get(METADATA, path).await;
        (response.status, response.text().to_owned())
    })
}

/// An unprivileged process (nobody) that binds and listens on `@imds-tun/control` first; it
/// holds the name until dropped.
struct Squatter(std::process::Child);

impl Squatter {
    fn start(namespace: &Namespace) -> Squatter {
        let squat = "import socket, time\n\
s = socket.socket(socket.AF_UNIX)\n\
s.bind('\\0imds-tun/control')\n\
s.listen()\n\
print('bound', flush=True)\n\
time.sleep(60)\n";
        let mut command = Command::new("ip");
        command.args(["netns", "exec", namespace.name()]);
        command.args(common::nobody_prefix());
        command.args(["/usr/bin/python3", "-c", squat]);
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("the squatter reports");
        assert_eq!(line.trim(), "bound", "the squatter holds the name");
        Squatter(child)
    }
}

impl Drop for Squatter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_squatter_on_the_control_socket_does_not_cancel_the_scenario() {
    let namespace = namespace!();
    let _squatter = Squatter::start(&namespace);
    let scratch = TempDir::new();
    let scenario = scratch.file(
        "reclaim.json",
        br#"[{"at": "+0s", "command": "spot", "action": "terminate", "in": 120}]"#,
    );
    let child = common::start(&namespace, &["--scenario", &scenario]);
    child.wait_for_line(Duration::from_secs(2), |line| {
        line.contains("the control socket @imds-tun/control is already bound")
    });
    child.wait_for_line(Duration::from_secs(3), |line| {
        line.contains("scenario at +0s: spot interruption notice")
    });
    let (status, body) = read(&namespace, "/latest/meta-data/spot/instance-action");
    assert_eq!(status, 200, "the scenario played: {body}");
    assert!(body.contains("terminate"), "{body}");
}

#[test]
fn a_shared_served_user_is_warned_about_and_kept_out_of_ctl_unless_allowed() {
    let namespace = namespace!();
    let child = common::start(&namespace, &["--user", "nobody"]);
    child.wait_for_line(Duration::from_secs(2), |line| {
        line.contains("--user nobody: nobody is an account other programs share")
            && line.contains("useradd --system")
    });
    let refused = ctl(
        &namespace,
        &common::nobody_prefix(),
        &["spot", "--action", "stop"],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("uid 65534 may not control this imds-tun: only root may"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        read(&namespace, "/latest/meta-data/spot/instance-action").0,
        404
    );
    let root = ctl(&namespace, &[], &["status"]);
    assert!(root.status.success(), "root still may: {}", text(&root));
    drop(child);

    let namespace = namespace!();
    let _child = common::start(&namespace, &["--user", "nobody", "--allow-shared-user-ctl"]);
    let allowed = ctl(
        &namespace,
        &common::nobody_prefix(),
        &["spot", "--action", "stop"],
    );
    assert!(allowed.status.success(), "asked for: {}", text(&allowed));
}

/// The packaged unit runs imds-tun as a dynamic user holding only CAP_NET_ADMIN; root's `ctl`
/// must reach it (it owns the claim lock), where it was refused as "neither root nor you".
#[test]
fn root_can_ctl_the_service_run_as_a_dynamic_user_with_cap_net_admin() {
    let namespace = namespace!();
    let scratch = TempDir::new();
    let binary = common::binary();
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", namespace.name(), "sh", "-c"])
        .arg(common::with_only_net_admin(
            &scratch,
            61234,
            &binary.to_string_lossy(),
        ));
    let child = common::ImdsTun::spawn(command, &Spawn::default(), test_name!());
    child.wait_ready();
    let status = ctl(&namespace, &[], &["spot", "--action", "hibernate"]);
    assert!(status.status.success(), "{}", text(&status));
    let (code, body) = read(&namespace, "/latest/meta-data/spot/instance-action");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hibernate"), "{body}");

    // A process that holds the control socket but not the claim is still refused: here an
    // unprivileged one in a namespace where the service is gone.
    drop(child);
    let namespace = namespace!();
    let _squatter = Squatter::start(&namespace);
    let refused = ctl(&namespace, &[], &["status"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refusing to talk to it"),
        "{}",
        text(&refused)
    );
}

/// A scenario of the size `--scenario` takes (here over the old 64 KiB request limit) is taken
/// by `ctl play` too; one over the file limit is refused by both, the same way.
#[test]
fn ctl_play_takes_every_scenario_the_scenario_flag_takes() {
    let namespace = namespace!();
    let scratch = TempDir::new();
    let step = |at: usize| {
        format!(
            r#"{{"at": "+{}s", "command": "fault", "status": 503, "path": "/latest/meta-data/{}", "for": 60}}"#,
            3600 + at,
            "x".repeat(200)
        )
    };
    let steps: Vec<String> = (0..500).map(step).collect();
    let large = format!("[{}]", steps.join(",\n"));
    assert!(large.len() > 64 * 1024 && large.len() < 1024 * 1024);
    let large = scratch.file("large.json", large.as_bytes());

    let _child = common::start(&namespace, &["--scenario", &large]);
    let played = ctl(&namespace, &[], &["play", &large]);
    assert!(played.status.success(), "{}", text(&played));

    let too_large = format!("[{}]", vec![step(0); 4000].join(",\n"));
    assert!(too_large.len() > 1024 * 1024);
    let too_large = scratch.file("too-large.json", too_large.as_bytes());
    let refused = ctl(&namespace, &[], &["play", &too_large]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let mut start = namespace.spawn(&["--scenario", &too_large]);
    let status = start.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(2), "{}", start.stderr());
    let said = |text: &str| text.contains("1048576") || text.contains("1 MiB");
    assert!(
        said(&String::from_utf8_lossy(&refused.stderr)),
        "{}",
        text(&refused)
    );
    assert!(said(&start.stderr()), "{}", start.stderr());
}

/// Faults and scheduled events are bounded: the one past the bound is refused with what to
/// do. `ctl clear` ends everything standing: the faults, a packet-budget fault, a
/// credential-source outage and expired credentials, as well as the interruptions.
#[test]
fn faults_and_events_are_bounded_and_clear_ends_them_all() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--packet-budget", "500"]);
    for n in 0..64 {
        let path = format!("/latest/meta-data/fault-{n}");
        let set = ctl(
            &namespace,
            &[],
            &["fault", "--status", "503", "--path", &path],
        );
        assert!(set.status.success(), "fault {n}: {}", text(&set));
    }
    let refused = ctl(
        &namespace,
        &[],
        &["fault", "--status", "503", "--path", "/x"],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("64 faults stand already"),
        "{}",
        text(&refused)
    );
    for fault in [
        &["fault", "--packet-budget", "50"][..],
        &["fault", "--credential-source", "down"],
        &["fault", "--expired-credentials"],
        &["spot", "--action", "terminate"],
    ] {
        let set = ctl(&namespace, &[], fault);
        assert!(set.status.success(), "{fault:?}: {}", text(&set));
    }
    let status_of = |output: &Output| -> serde_json::Value {
        assert!(output.status.success(), "{}", text(output));
        serde_json::from_slice(&output.stdout).expect("status JSON")
    };
    let standing = status_of(&ctl(&namespace, &[], &["status"]));
    assert_eq!(standing["packet_budget"], 50, "{standing}");
    assert_eq!(standing["credential_source"], "down", "{standing}");
    assert!(standing["expired_credentials"].is_string(), "{standing}");
    assert_eq!(
        read(&namespace, "/latest/meta-data/spot/instance-action").0,
        200
    );

    let cleared = ctl(&namespace, &[], &["clear"]);
    assert!(cleared.status.success(), "{}", text(&cleared));
    assert_eq!(
        String::from_utf8_lossy(&cleared.stderr),
        "",
        "nothing to say"
    );
    let after = status_of(&ctl(&namespace, &[], &["status"]));
    assert_eq!(after["faults"], serde_json::json!([]), "{after}");
    assert_eq!(after["packet_budget"], 500, "the start's budget: {after}");
    assert_eq!(after["credential_source"], "up", "{after}");
    assert_eq!(
        after["expired_credentials"],
        serde_json::Value::Null,
        "{after}"
    );
    assert_eq!(
        read(&namespace, "/latest/meta-data/spot/instance-action").0,
        404
    );
    assert_eq!(read(&namespace, "/latest/meta-data/fault-1").0, 404);

    for n in 0..100 {
        let set = ctl(&namespace, &[], &["event", "--code", "system-reboot"]);
        assert!(set.status.success(), "event {n}: {}", text(&set));
    }
    let refused = ctl(&namespace, &[], &["event", "--code", "system-reboot"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("100 scheduled events"),
        "{}",
        text(&refused)
    );
}
