//! IMDSv2 tokens on demand: `ctl tokens expire` ends every token issued so far and
//! `--max-token-ttl` caps what a client is granted, through the TUN with curl and botocore, and
//! the worked example of docs/metadata.md as written.
#![cfg(target_os = "linux")]

use crate::common;

use std::time::Duration;

/// The status of a read of `instance-id` with `token`.
fn read_with(namespace: &common::Namespace, token: &str) -> String {
    let output = namespace.exec(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("X-aws-ec2-metadata-token: {token}"),
        "http://169.254.169.254/latest/meta-data/instance-id",
    ]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A token asked for `ttl` seconds, and the TTL header of its reply.
fn token(namespace: &common::Namespace, ttl: &str) -> (String, String) {
    let output = namespace.exec(&[
        "curl",
        "-s",
        "-i",
        "-X",
        "PUT",
        "-H",
        &format!("X-aws-ec2-metadata-token-ttl-seconds: {ttl}"),
        "http://169.254.169.254/latest/api/token",
    ]);
    let response = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("a response: {response}"));
    let granted = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("x-aws-ec2-metadata-token-ttl-seconds")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("a TTL header: {response}"));
    (body.to_owned(), granted)
}

#[test]
fn a_capped_token_says_its_ttl_and_answers_401_once_it_runs_out() {
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--max-token-ttl", "2"]);
    let (capped, granted) = token(&namespace, "21600");
    assert_eq!(granted, "2");
    let (short, granted) = token(&namespace, "1");
    assert_eq!(granted, "1");
    assert_eq!(read_with(&namespace, &capped), "200");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(read_with(&namespace, &capped), "401");
    assert_eq!(read_with(&namespace, &short), "401");
}

#[test]
fn botocore_keeps_reading_credentials_across_tokens_expire_and_an_old_token_gets_401() {
    let test = test_name!();
    let Some(python) = common::installed(test, common::repo().join(".venv/bin/python")) else {
        return;
    };
    let namespace = namespace!();
    let _child = common::start(&namespace, &["--mock-credentials"]);
    let (held, _) = token(&namespace, "21600");
    // One Python process reads credentials, waits while every token is expired, reads again.
    let script = format!(
        "import subprocess\n\
         from botocore.utils import InstanceMetadataFetcher\n\
         fetcher = InstanceMetadataFetcher(timeout=2, num_attempts=2)\n\
         before = fetcher.retrieve_iam_role_credentials()\n\
         assert before.get('access_key'), before\n\
         subprocess.run(['{binary}', 'ctl', 'tokens', 'expire'], check=True, capture_output=True)\n\
         after = fetcher.retrieve_iam_role_credentials()\n\
         assert after.get('access_key'), after\n\
         print('read twice')\n",
        binary = common::binary().display()
    );
    let output = namespace.exec(&[
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        "HOME=/nonexistent",
        python.to_str().expect("utf-8 path"),
        "-c",
        &script,
    ]);
    assert!(output.status.success(), "{}", common::text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "read twice\n");
    assert_eq!(read_with(&namespace, &held), "401", "a token from before");
    let status = namespace.exec(&[common::binary().to_str().expect("path"), "ctl", "status"]);
    assert!(status.status.success(), "{}", common::text(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status is JSON");
    assert_eq!(status["imdsv2_tokens_expired"], 1, "{status}");
    assert!(
        status["imdsv2_tokens_issued"].as_u64() >= Some(3),
        "{status}"
    );
}

/// docs/metadata.md's worked example, its commands as written: 200, 401 after `ctl tokens
/// expire`, 200 with a new token.
#[test]
fn the_worked_example_runs_as_written() {
    let namespace = namespace!();
    let document =
        std::fs::read_to_string(common::repo().join("docs/metadata.md")).expect("metadata.md");
    let blocks = common::fenced_blocks(
        &document,
        "### Worked example: does my client survive its token expiring?",
        "\n## ",
    );
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    let flags: Vec<&str> = blocks[0]
        .trim()
        .strip_prefix("sudo imds-tun ")
        .expect("the server block starts imds-tun")
        .split_whitespace()
        .collect();
    let _child = common::start(&namespace, &flags);
    let shell = common::DocShell::new();
    assert_eq!(shell.run(&namespace, &blocks[1]), blocks[2]);
}

/// `tokens-expire` as a scenario step.
#[test]
fn a_scenario_expires_the_tokens_on_time() {
    let namespace = namespace!();
    let scratch = common::TempDir::new();
    let scenario = scratch.file(
        "scenario.json",
        br#"[{"at": 1, "command": "tokens-expire"}]"#,
    );
    let child = common::start(&namespace, &["--scenario", &scenario]);
    let (held, _) = token(&namespace, "21600");
    assert_eq!(read_with(&namespace, &held), "200");
    child.wait_for_line(Duration::from_secs(5), |line| {
        line.contains("expired every IMDSv2 token")
    });
    assert_eq!(read_with(&namespace, &held), "401");
}
