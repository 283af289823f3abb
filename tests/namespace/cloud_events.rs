//! GCE's and Azure's own interruptions on demand, end to end in a fresh network namespace:
//! `imds-tun ctl gce-preempt`, `gce-maintenance` and `azure-event` (the real binary) change
//! what the VM is told, and clients in the styles of Google's and Azure's documentation react:
//! the worked examples of docs/metadata.md, run with Python `requests` from `<repo>/.venv`
//! (`scripts/test.sh` installs it; without it the tests skip, and under `CI=true` they fail).
#![cfg(target_os = "linux")]

use crate::common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{METADATA, Namespace, http, installed, repo, text};

const PROJECT: &str = "imds-tun-e2e";

fn ctl(namespace: &Namespace, args: &[&str]) -> Output {
    let mut command = vec![common::BINARY, "ctl"];
    command.extend_from_slice(args);
    namespace.exec(&command)
}

fn ctl_ok(namespace: &Namespace, args: &[&str]) -> serde_json::Value {
    let output = ctl(namespace, args);
    assert!(output.status.success(), "ctl {args:?}: {}", text(&output));
    serde_json::from_slice(&output.stdout).expect("ctl prints the status as JSON")
}

/// The example file docs/metadata.md shows after `marker`, checked to be the file as it is.
fn documented_example(marker: &str, fence: &str, file: &str) -> String {
    let docs = std::fs::read_to_string(repo().join("docs/metadata.md")).expect("docs/metadata.md");
    let start = docs.find(marker).expect("the worked example");
    let block = &docs[start..];
    let open = block.find(fence).expect("its code block") + fence.len();
    let close = block[open..].find("```").expect("the block ends");
    let path = repo().join(file);
    assert_eq!(
        std::fs::read_to_string(&path).expect("the example file"),
        block[open..open + close],
        "docs/metadata.md shows {file} as it is"
    );
    path.to_str().expect("utf-8 path").to_owned()
}

/// `python SCRIPT` in the namespace with `env`, its stdout piped.
fn spawn_python(namespace: &Namespace, python: &str, script: &str, env: &[&str]) -> Child {
    let mut command = Command::new("ip");
    command.args([
        "netns",
        "exec",
        namespace.name(),
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        "HOME=/nonexistent",
    ]);
    command.args(env);
    command.args([python, script]);
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs the script")
}

/// Lines of `child`'s stdout as they come, on a channel.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<(Instant, String)> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    receiver
}

fn stderr_of(child: Child) -> String {
    let output = child.wait_with_output().expect("the script ends");
    text(&output)
}

/// GET `path` on the GCE protocol: status, body, ETag.
fn gce_get(namespace: &Namespace, path: &'static str) -> (u16, String, String) {
    namespace.run_in(move || async move {
        let response = http::send(
            METADATA,
            &http::Request::get(path).header("Metadata-Flavor", "Google"),
        )
        .await;
        let etag = response.header("etag").unwrap_or_default().to_owned();
        (response.status, response.text().to_owned(), etag)
    })
}

/// GET `/metadata/scheduledevents` with api-version 2020-07-01.
fn azure_events(namespace: &Namespace) -> serde_json::Value {
    namespace.run_in(|| async {
        let response = http::send(
            METADATA,
            &http::Request::get("/metadata/scheduledevents?api-version=2020-07-01")
                .header("Metadata", "true"),
        )
        .await;
        assert_eq!(response.status, 200, "{}", response.text());
        serde_json::from_str(response.text()).expect("JSON")
    })
}

#[test]
fn the_worked_example_gce_client_blocked_in_wait_for_change_sees_true_within_a_second() {
    let test = "the_worked_example_gce_client_blocked_in_wait_for_change_sees_true_within_a_second";
    let script = documented_example(
        "`docs/examples/gce-on-preemption.py` waits",
        "```python\n",
        "docs/examples/gce-on-preemption.py",
    );
    let Some(python) = installed(test, repo().join(".venv/bin/python")) else {
        return;
    };
    let python = python.to_str().expect("utf-8 path").to_owned();
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--gcp-project", PROJECT]);
    let (status, before, etag_before) =
        gce_get(&namespace, "/computeMetadata/v1/instance/preempted");
    assert_eq!((status, before.as_str()), (200, "FALSE"));
    let mut client = spawn_python(&namespace, &python, &script, &[]);
    let lines = lines_of(&mut client);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        client.try_wait().expect("waitable").is_none(),
        "the client is blocked in wait_for_change: {:?}",
        lines.try_recv()
    );
    ctl_ok(&namespace, &["gce-preempt"]);
    let preempted_at = Instant::now();
    let Ok((seen_at, line)) = lines.recv_timeout(Duration::from_secs(5)) else {
        panic!("the client saw no preemption: {}", stderr_of(client));
    };
    assert_eq!(line, "preempted");
    assert!(
        seen_at.duration_since(preempted_at) < Duration::from_secs(1),
        "woken within a second of ctl gce-preempt, not {:?}",
        seen_at.duration_since(preempted_at)
    );
    let (_, shutdown) = lines
        .recv_timeout(Duration::from_secs(5))
        .expect("SHUTDOWN ran");
    assert_eq!(shutdown, "shutting down");
    let status = client.wait().expect("the client exits");
    assert!(status.success(), "{status}");

    let (_, after, etag_after) = gce_get(&namespace, "/computeMetadata/v1/instance/preempted");
    assert_eq!(after, "TRUE");
    assert_ne!(etag_after, etag_before, "a new ETag");

    // google-auth's metadata helpers are unaffected.
    let helpers = namespace.exec(&[
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        "HOME=/nonexistent",
        "GCE_METADATA_HOST=169.254.169.254",
        "GCE_METADATA_IP=169.254.169.254",
        &python,
        "-c",
        "import json\n\
         import google.auth.transport.requests as transport\n\
         from google.auth.compute_engine import _metadata\n\
         request = transport.Request()\n\
         print(json.dumps({'ping': _metadata.ping(request), \
         'project': _metadata.get_project_id(request), \
         'preempted': _metadata.get(request, 'instance/preempted')}))",
    ]);
    if String::from_utf8_lossy(&helpers.stderr).contains("No module named 'google'") {
        common::skip_or_fail(
            test,
            "google-auth is not installed in .venv; scripts/test.sh installs it",
        );
        return;
    }
    assert!(helpers.status.success(), "{}", text(&helpers));
    let seen: serde_json::Value = serde_json::from_slice(&helpers.stdout).expect("JSON");
    assert_eq!(
        seen,
        serde_json::json!({"ping": true, "project": PROJECT, "preempted": "TRUE"})
    );

    let status = ctl_ok(&namespace, &["clear"]);
    assert_eq!(status["gce"]["preempted"], "FALSE", "{status}");
    assert_eq!(
        gce_get(&namespace, "/computeMetadata/v1/instance/preempted").1,
        "FALSE"
    );
}

#[test]
fn gce_maintenance_wakes_a_wait_and_clear_sets_none() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--gcp-project", PROJECT]);
    let path = "/computeMetadata/v1/instance/maintenance-event";
    assert_eq!(gce_get(&namespace, path).1, "NONE");
    let waiting = {
        let name = namespace.name().to_owned();
        std::thread::spawn(move || {
            let output = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &name,
                    "curl",
                    "-s",
                    "-H",
                    "Metadata-Flavor: Google",
                    "http://169.254.169.254/computeMetadata/v1/instance/maintenance-event?wait_for_change=true&timeout_sec=30",
                ])
                .output()
                .expect("curl runs");
            (Instant::now(), output)
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!waiting.is_finished(), "curl waits for a change");
    let status = ctl_ok(
        &namespace,
        &[
            "gce-maintenance",
            "--event",
            "TERMINATE_ON_HOST_MAINTENANCE",
        ],
    );
    let changed_at = Instant::now();
    assert_eq!(
        status["gce"]["maintenance-event"], "TERMINATE_ON_HOST_MAINTENANCE",
        "{status}"
    );
    let (answered_at, output) = waiting.join().expect("curl's thread");
    assert!(answered_at.duration_since(changed_at) < Duration::from_secs(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "TERMINATE_ON_HOST_MAINTENANCE",
        "{}",
        text(&output)
    );
    ctl_ok(&namespace, &["clear"]);
    assert_eq!(gce_get(&namespace, path).1, "NONE");
}

#[test]
fn without_gcp_project_a_gce_command_says_how_to_serve_gce() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    let refused = ctl(&namespace, &["gce-preempt"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--gcp-project"),
        "{}",
        text(&refused)
    );
}

#[test]
fn the_worked_example_azure_drain_script_drains_and_starts_a_preempt_event() {
    let test = "the_worked_example_azure_drain_script_drains_and_starts_a_preempt_event";
    let script = documented_example(
        "`docs/examples/azure-drain-on-preempt.py` polls",
        "```python\n",
        "docs/examples/azure-drain-on-preempt.py",
    );
    let Some(python) = installed(test, repo().join(".venv/bin/python")) else {
        return;
    };
    let python = python.to_str().expect("utf-8 path").to_owned();
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    let vm_name = namespace.run_in(|| async {
        http::send(
            METADATA,
            &http::Request::get(
                "/metadata/instance/compute/name?api-version=2021-02-01&format=text",
            )
            .header("Metadata", "true"),
        )
        .await
        .text()
        .to_owned()
    });
    assert_eq!(
        azure_events(&namespace),
        serde_json::json!({"DocumentIncarnation": 0, "Events": []})
    );
    let mut drain = spawn_python(&namespace, &python, &script, &[]);
    let lines = lines_of(&mut drain);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        drain.try_wait().expect("waitable").is_none(),
        "the script polls: {:?}",
        lines.try_recv()
    );
    // A freeze is no reason to drain; the preemption, announced a minute ahead, is.
    ctl_ok(&namespace, &["azure-event", "Freeze"]);
    let status = ctl_ok(
        &namespace,
        &["azure-event", "Preempt", "--not-before", "60"],
    );
    let announced = &status["azure"]["Events"][1];
    assert_eq!(announced["EventType"], "Preempt", "{status}");
    let id = announced["EventId"]
        .as_str()
        .expect("an EventId")
        .to_owned();
    let mut printed = Vec::new();
    while let Ok((_, line)) = lines.recv_timeout(Duration::from_secs(5)) {
        printed.push(line);
    }
    let status = drain.wait().expect("the script exits");
    assert!(status.success(), "{printed:?}");
    assert!(
        printed[0].starts_with(&format!("Preempt {id}, not before "))
            && printed[0].ends_with(" GMT"),
        "{printed:?}"
    );
    assert_eq!(printed[1..], ["draining", "approved: 200"], "{printed:?}");

    let document = azure_events(&namespace);
    assert_eq!(
        document["DocumentIncarnation"], 3,
        "two announced, one started: {document}"
    );
    let preempt = &document["Events"][1];
    assert_eq!(preempt["EventStatus"], "Started", "{document}");
    assert_eq!(preempt["NotBefore"], "", "{document}");
    assert_eq!(
        preempt["Resources"],
        serde_json::json!([vm_name]),
        "{document}"
    );
    assert_eq!(preempt["ResourceType"], "VirtualMachine");
    assert_eq!(preempt["EventSource"], "Platform");
    assert_eq!(preempt["DurationInSeconds"], -1);
    assert_eq!(document["Events"][0]["EventStatus"], "Scheduled");
    assert_eq!(document["Events"][0]["DurationInSeconds"], 5);

    let cleared = ctl_ok(&namespace, &["clear"]);
    assert_eq!(
        cleared["azure"]["Events"],
        serde_json::json!([]),
        "{cleared}"
    );
    assert_eq!(
        azure_events(&namespace),
        serde_json::json!({"DocumentIncarnation": 4, "Events": []})
    );
}

#[test]
fn azure_start_requests_follow_the_metadata_and_body_rules() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &[]);
    let status = ctl_ok(
        &namespace,
        &[
            "azure-event",
            "Reboot",
            "--not-before",
            "600",
            "--duration",
            "-1",
        ],
    );
    let id = status["azure"]["Events"][0]["EventId"]
        .as_str()
        .expect("an EventId")
        .to_owned();
    let statuses = namespace.run_in(move || async move {
        let post = |body: Vec<u8>, metadata: bool, path: &str| {
            let mut request = http::Request::new("POST", path);
            if metadata {
                request = request.header("Metadata", "true");
            }
            request.body = body;
            request
        };
        let path = "/metadata/scheduledevents?api-version=2020-07-01";
        let start = format!(r#"{{"StartRequests": [{{"EventId": "{id}"}}]}}"#).into_bytes();
        let mut seen = Vec::new();
        for request in [
            post(start.clone(), false, path),
            post(start.clone(), true, "/metadata/scheduledevents"),
            post(vec![b' '; 9000], true, path),
            post(b"not json".to_vec(), true, path),
            post(start, true, path),
        ] {
            seen.push(http::send(METADATA, &request).await.status);
        }
        seen
    });
    assert_eq!(statuses, [400_u16, 400, 413, 400, 200]);
    let document = azure_events(&namespace);
    assert_eq!(
        document["Events"][0]["EventStatus"], "Started",
        "{document}"
    );
    assert_eq!(document["DocumentIncarnation"], 2);
}

#[test]
fn a_scenario_plays_gce_and_azure_steps() {
    let namespace = namespace!();
    let scratch = common::TempDir::new();
    let scenario = scratch.file(
        "clouds.json",
        br#"[
            {"at": "+0s", "command": "gce-preempt"},
            {"at": "+1s", "command": "azure-event", "type": "Freeze", "not_before": 60}
        ]"#,
    );
    let _child = common::start(
        &namespace,
        &["--gcp-project", PROJECT, "--scenario", &scenario],
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        gce_get(&namespace, "/computeMetadata/v1/instance/preempted").1,
        "TRUE",
        "the +0s step applies at start"
    );
    assert_eq!(azure_events(&namespace)["Events"], serde_json::json!([]));
    std::thread::sleep(Duration::from_millis(1500));
    let document = azure_events(&namespace);
    assert_eq!(document["Events"][0]["EventType"], "Freeze", "{document}");
    assert_eq!(document["DocumentIncarnation"], 1);
}
