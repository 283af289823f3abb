//! The GCE protocol rules, one request at a time, without sockets; waits in tokio's paused time.

use super::*;
use base64::Engine as _;
use time::OffsetDateTime;

const NOW: i64 = 1_700_000_000;

fn gce() -> Gce {
    let mut instance = GceInstance::example();
    instance
        .instance_attributes
        .insert("ssh-keys".into(), "alice:ssh-ed25519 AAAA".into());
    instance
        .project_attributes
        .insert("env".into(), "dev".into());
    Gce::new(
        GceSettings {
            instance,
            access_tokens: AccessTokenSource::Fake,
            identity_tokens: IdentityTokenSource::Signed,
        },
        NOW - 60,
    )
    .expect("committed key loads")
}

/// The service's answer to a request at [`NOW`], asked as `http` asks it.
async fn answer(service: &Gce, parts: &http::request::Parts) -> Reply {
    let context = Context {
        request: parts.clone(),
        body: None,
        now: OffsetDateTime::from_unix_timestamp(NOW).expect("a valid time"),
        caller: None,
    };
    service.answer(context).await
}

/// The reply a request gets, which must not wait.
fn reply_to(service: &Gce, parts: &http::request::Parts) -> Reply {
    let answer = service.respond(parts);
    assert!(
        !matches!(answer, Answer::AfterWait { .. }),
        "expected no wait, got {answer:?}"
    );
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(self::answer(service, parts))
}

fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("valid request").into_parts().0
}

fn get(uri: &str) -> Reply {
    reply_to(
        &gce(),
        &request(Method::GET, uri, &[("Metadata-Flavor", "Google")]),
    )
}

fn body(reply: &Reply) -> &str {
    std::str::from_utf8(reply.bytes().expect("a whole body")).expect("utf-8 body")
}

fn json_body(reply: &Reply) -> Value {
    serde_json::from_slice(reply.bytes().expect("a whole body")).expect("json")
}

#[test]
fn project_id_and_number_are_served_as_text() {
    let reply = get("/computeMetadata/v1/project/project-id");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(body(&reply), "imds-tun-example");
    assert_eq!(reply.content_type(), Some("application/text"));
    let number = get("/computeMetadata/v1/project/numeric-project-id");
    assert_eq!(
        body(&number),
        GceInstance::example().numeric_project_id.to_string()
    );
}

#[test]
fn a_request_without_the_flavor_header_is_forbidden_with_googles_message() {
    let service = gce();
    for headers in [vec![], vec![("Metadata-Flavor", "google-ish")]] {
        let Answer::Now(reply) = service.respond(&request(
            Method::GET,
            "/computeMetadata/v1/project/project-id",
            &headers,
        )) else {
            panic!("no wait expected");
        };
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert!(body(&reply).contains("Missing Metadata-Flavor:Google header."));
    }
    let Answer::Now(legacy) = service.respond(&request(
        Method::GET,
        "/computeMetadata/v1/project/project-id",
        &[("X-Google-Metadata-Request", "True")],
    )) else {
        panic!("no wait expected");
    };
    assert_eq!(legacy.status, StatusCode::OK);
}

#[test]
fn the_root_answers_without_the_header_and_forwarded_requests_are_refused() {
    let service = gce();
    let Answer::Now(root) = service.respond(&request(Method::GET, "/", &[])) else {
        panic!("no wait expected");
    };
    assert_eq!(root.status, StatusCode::OK);
    assert_eq!(body(&root), "computeMetadata/\n");
    let Answer::Now(forwarded) = service.respond(&request(
        Method::GET,
        "/computeMetadata/v1/project/project-id",
        &[
            ("Metadata-Flavor", "Google"),
            ("X-Forwarded-For", "10.0.0.1"),
        ],
    )) else {
        panic!("no wait expected");
    };
    assert_eq!(forwarded.status, StatusCode::FORBIDDEN);
}

#[test]
fn directories_without_a_slash_redirect_keeping_the_query() {
    let reply = get("/computeMetadata/v1/instance?alt=text");
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        reply.headers[http::header::LOCATION],
        "/computeMetadata/v1/instance/?alt=text"
    );
    let listing = get("/computeMetadata/v1/instance/");
    assert_eq!(listing.status, StatusCode::OK);
    assert!(body(&listing).contains("service-accounts/\n"));
}

#[test]
fn recursive_returns_the_subtree_as_json_and_alt_text_as_lines() {
    let reply = get("/computeMetadata/v1/project/?recursive=true");
    assert_eq!(reply.content_type(), Some("application/json"));
    let json = json_body(&reply);
    assert_eq!(json["projectId"], "imds-tun-example");
    assert_eq!(json["attributes"]["env"], "dev");
    let text = get("/computeMetadata/v1/project/?recursive=true&alt=text");
    assert!(body(&text).contains("project-id imds-tun-example\n"));
    assert!(body(&text).contains("attributes/env dev\n"));
    let bad = get("/computeMetadata/v1/project/?alt=xml");
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[test]
fn custom_attributes_are_listed_and_read_by_their_own_names() {
    assert_eq!(
        body(&get("/computeMetadata/v1/instance/attributes/")),
        "ssh-keys\n"
    );
    assert_eq!(
        body(&get("/computeMetadata/v1/instance/attributes/ssh-keys")),
        "alice:ssh-ed25519 AAAA"
    );
    assert_eq!(
        get("/computeMetadata/v1/instance/attributes/missing").status,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn service_accounts_list_default_and_the_email() {
    let email = GceInstance::example().service_account_email;
    let listing = get("/computeMetadata/v1/instance/service-accounts/");
    assert_eq!(body(&listing), format!("{email}/\ndefault/\n"));
    assert_eq!(
        body(&get(
            "/computeMetadata/v1/instance/service-accounts/default/email"
        )),
        email
    );
    assert_eq!(
        body(&get(
            "/computeMetadata/v1/instance/service-accounts/default/aliases"
        )),
        "default\n"
    );
}

#[test]
fn the_token_endpoint_returns_a_bearer_token_for_default_and_the_email() {
    let email = GceInstance::example().service_account_email;
    for account in ["default", email.as_str()] {
        let reply = get(&format!(
            "/computeMetadata/v1/instance/service-accounts/{account}/token?scopes=a,b"
        ));
        assert_eq!(reply.status, StatusCode::OK);
        let json = json_body(&reply);
        assert!(reply.credentials_read.is_some(), "a token read is marked");
        assert_eq!(json["token_type"], "Bearer");
        assert!(
            json["access_token"]
                .as_str()
                .is_some_and(|t| t.starts_with(tokens::FAKE_PREFIX))
        );
        assert!(json["expires_in"].as_i64().is_some_and(|s| s > 0));
    }
    assert_eq!(
        get("/computeMetadata/v1/instance/service-accounts/other@x/token").status,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn identity_needs_an_audience_and_carries_it() {
    let missing = get("/computeMetadata/v1/instance/service-accounts/default/identity");
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    let reply = get(
        "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https%3A%2F%2Fapi.example.com&format=full",
    );
    assert_eq!(reply.status, StatusCode::OK);
    let payload = body(&reply).split('.').nth(1).expect("three parts");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("json");
    assert_eq!(claims["aud"], "https://api.example.com");
    assert_eq!(claims["google"]["compute_engine"]["zone"], "us-central1-a");
}

#[tokio::test(start_paused = true)]
async fn wait_for_change_waits_when_the_etag_is_current_and_answers_at_once_when_not() {
    let service = gce();
    let flavor = [("Metadata-Flavor", "Google")];
    let path = "/computeMetadata/v1/instance/attributes/ssh-keys";
    let plain = answer(&service, &request(Method::GET, path, &flavor)).await;
    let etag = current_etag(&plain).expect("an etag").to_owned();
    let current = request(
        Method::GET,
        &format!("{path}?wait_for_change=true&last_etag={etag}&timeout_sec=7"),
        &flavor,
    );
    let started = tokio::time::Instant::now();
    let waited = answer(&service, &current).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(7),
        "held for timeout_sec"
    );
    assert_eq!(waited.status, StatusCode::OK);
    assert_eq!(waited.bytes(), plain.bytes(), "then the current value");
    let stale = request(
        Method::GET,
        &format!("{path}?wait_for_change=true&last_etag=0123456789abcdef"),
        &flavor,
    );
    let started = tokio::time::Instant::now();
    let at_once = answer(&service, &stale).await;
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "a stale etag answers at once"
    );
    assert_eq!(at_once.bytes(), plain.bytes());
    let Answer::AfterWait { wait, .. } = service.respond(&request(
        Method::GET,
        &format!("{path}?wait_for_change=true&timeout_sec=999999"),
        &flavor,
    )) else {
        panic!("a wait without an etag holds the request");
    };
    assert_eq!(wait, MAX_WAIT, "the server's own limit bounds the wait");
}

#[test]
fn replies_carry_googles_headers_and_an_etag() {
    let reply = get("/computeMetadata/v1/project/project-id");
    let names: Vec<&str> = reply.headers.keys().map(|name| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "metadata-flavor",
            "server",
            "content-type",
            "content-length",
            "etag",
            "x-xss-protection",
            "x-frame-options"
        ]
    );
    assert_eq!(reply.headers["metadata-flavor"], "Google");
    assert_eq!(reply.headers["server"], "Metadata Server for VM");
    assert_eq!(reply.headers["etag"].len(), 16);
    assert!(reply.credentials_read.is_none());
}

#[test]
fn identity_token_certificates_need_no_header() {
    let service = gce();
    for path in [identity_token::CERTS_PATH, identity_token::JWKS_PATH] {
        let Answer::Now(reply) = service.respond(&request(Method::GET, path, &[])) else {
            panic!("no wait expected");
        };
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.content_type(), Some("application/json"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_preemption_wakes_a_wait_on_preempted_with_the_new_value_and_a_new_etag() {
    let service = std::sync::Arc::new(gce());
    let flavor = [("Metadata-Flavor", "Google")];
    let path = "/computeMetadata/v1/instance/preempted";
    let before = answer(&service, &request(Method::GET, path, &flavor)).await;
    assert_eq!(body(&before), "FALSE");
    let waiting = {
        let service = service.clone();
        let wait = request(
            Method::GET,
            &format!("{path}?wait_for_change=true"),
            &flavor,
        );
        tokio::spawn(async move { answer(&service, &wait).await })
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!waiting.is_finished(), "nothing changed yet");
    // Another value changing is no news for this path.
    service.events().update(|events| {
        events.maintenance = events::MaintenanceEvent::MigrateOnHostMaintenance;
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "preempted did not change");
    let preempted_at = tokio::time::Instant::now();
    service.events().update(|events| events.preempted = true);
    let woken = waiting.await.expect("the wait ends");
    assert!(
        preempted_at.elapsed() < Duration::from_secs(1),
        "woken by the change, not the timeout"
    );
    assert_eq!(body(&woken), "TRUE");
    assert_ne!(current_etag(&woken), current_etag(&before), "a new ETag");
    let maintenance = answer(
        &service,
        &request(
            Method::GET,
            "/computeMetadata/v1/instance/maintenance-event",
            &flavor,
        ),
    )
    .await;
    assert_eq!(body(&maintenance), "MIGRATE_ON_HOST_MAINTENANCE");
    let scheduling = answer(
        &service,
        &request(
            Method::GET,
            "/computeMetadata/v1/instance/scheduling/?recursive=true",
            &flavor,
        ),
    )
    .await;
    assert_eq!(json_body(&scheduling)["preemptible"], "TRUE");
}

#[tokio::test(start_paused = true)]
async fn a_wait_with_the_old_etag_after_a_change_answers_at_once() {
    let service = gce();
    let flavor = [("Metadata-Flavor", "Google")];
    let path = "/computeMetadata/v1/instance/maintenance-event";
    let before = answer(&service, &request(Method::GET, path, &flavor)).await;
    assert_eq!(body(&before), "NONE");
    let old = current_etag(&before).expect("an etag").to_owned();
    service.events().update(|events| {
        events.maintenance = events::MaintenanceEvent::TerminateOnHostMaintenance;
    });
    let started = tokio::time::Instant::now();
    let reply = answer(
        &service,
        &request(
            Method::GET,
            &format!("{path}?wait_for_change=true&last_etag={old}"),
            &flavor,
        ),
    )
    .await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(body(&reply), "TERMINATE_ON_HOST_MAINTENANCE");
}
