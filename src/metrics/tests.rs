//! The exposition as a scraper reads it: names, labels, values, and what no client can add.

use super::*;

/// The value of the sample `name{labels}` in `text`, `labels` as the exposition writes them.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}

#[test]
fn requests_are_counted_by_cloud_and_status_and_tokenless_ones_apart() {
    let metrics = Metrics::default();
    metrics.request(Some("ec2"), 200, true);
    metrics.request(Some("ec2"), 200, false);
    metrics.request(Some("gce"), 404, false);
    metrics.request(None, 404, false);
    let text = metrics.encode();
    assert_eq!(
        sample(
            &text,
            r#"imds_tun_requests_total{cloud="ec2",status="200"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"imds_tun_requests_total{cloud="gce",status="404"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"imds_tun_requests_total{cloud="none",status="404"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "imds_tun_tokenless_requests_total"),
        Some(1.0)
    );
    assert!(
        text.contains("# TYPE imds_tun_requests_total counter"),
        "{text}"
    );
}

#[test]
fn open_connections_go_down_when_the_connection_ends() {
    let metrics = Metrics::default();
    let first = metrics.connection_opened();
    let second = metrics.connection_opened();
    assert_eq!(
        sample(&metrics.encode(), "imds_tun_open_connections"),
        Some(2.0)
    );
    drop(first);
    assert_eq!(
        sample(&metrics.encode(), "imds_tun_open_connections"),
        Some(1.0)
    );
    drop(second);
    assert_eq!(
        sample(&metrics.encode(), "imds_tun_open_connections"),
        Some(0.0)
    );
}

#[test]
fn every_refusal_reason_is_there_from_the_start() {
    let metrics = Metrics::default();
    metrics.refused(Refusal::ListenConnectionLimit);
    let text = metrics.encode();
    for reason in Refusal::ALL {
        let expected = if reason == Refusal::ListenConnectionLimit {
            1.0
        } else {
            0.0
        };
        let series = format!(
            r#"imds_tun_refused_connections_total{{reason="{}"}}"#,
            reason.word()
        );
        assert_eq!(sample(&text, &series), Some(expected), "{series} in {text}");
    }
}

#[test]
fn the_state_is_read_at_each_scrape() {
    let expiration = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(1_800_000_000));
    let seen = expiration.clone();
    let metrics = Metrics::new(Some(Box::new(move || State {
        roles: vec![
            RoleState {
                role: "app".into(),
                expiration_unix: Some(seen.load(std::sync::atomic::Ordering::Relaxed)),
                refreshes_ok: 3,
                refreshes_failed: 1,
            },
            RoleState {
                role: "pending".into(),
                expiration_unix: None,
                refreshes_ok: 0,
                refreshes_failed: 2,
            },
        ],
        faults_active: 2,
        tokens_issued: 7,
    })));
    let text = metrics.encode();
    let gauge = r#"imds_tun_credentials_expiration_timestamp_seconds{role="app"}"#;
    assert_eq!(sample(&text, gauge), Some(1_800_000_000.0), "{text}");
    assert!(
        !text.contains(r#"imds_tun_credentials_expiration_timestamp_seconds{role="pending"}"#),
        "a role without credentials has no expiry: {text}"
    );
    for (series, value) in [
        (
            r#"imds_tun_credentials_refreshes_total{role="app",result="ok"}"#,
            3.0,
        ),
        (
            r#"imds_tun_credentials_refreshes_total{role="app",result="error"}"#,
            1.0,
        ),
        (
            r#"imds_tun_credentials_refreshes_total{role="pending",result="error"}"#,
            2.0,
        ),
        ("imds_tun_faults_active", 2.0),
        ("imds_tun_imdsv2_tokens_issued_total", 7.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in {text}");
    }
    expiration.store(1_800_003_600, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sample(&metrics.encode(), gauge), Some(1_800_003_600.0));
}

#[test]
fn every_name_exposed_is_listed_and_every_listed_name_is_exposed() {
    let metrics = Metrics::new(Some(Box::new(|| State {
        roles: vec![RoleState {
            role: "app".into(),
            expiration_unix: Some(1),
            refreshes_ok: 1,
            refreshes_failed: 0,
        }],
        ..State::default()
    })));
    // A labelled family shows no `# TYPE` line before its first child.
    metrics.request(Some("ec2"), 200, false);
    let text = metrics.encode();
    let mut exposed: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    exposed.sort_unstable();
    let mut listed: Vec<&str> = NAMES.to_vec();
    if !process::supported() {
        listed.retain(|name| !name.starts_with("process_"));
    }
    listed.sort_unstable();
    assert_eq!(exposed, listed, "{text}");
}
