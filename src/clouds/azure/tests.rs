//! The Azure IMDS rules, one request at a time, without sockets.

use super::*;

const NOW: i64 = 1_700_000_000;

fn azure() -> Azure {
    Azure::new(AzureInstance::example(), TokenSource::Fake)
}

fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("valid request").into_parts().0
}

/// The service's answer to a GET at [`NOW`], asked as `http` asks it.
fn reply_with(uri: &str, headers: &[(&str, &str)]) -> Reply {
    let service = azure();
    let context = Context {
        request: request(Method::GET, uri, headers),
        body: None,
        now: time::OffsetDateTime::from_unix_timestamp(NOW).expect("a valid time"),
        caller: None,
    };
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(service.answer(context))
}

fn body(reply: &Reply) -> &[u8] {
    reply.bytes().expect("a whole body")
}

fn get(uri: &str) -> Reply {
    reply_with(uri, &[("Metadata", "true")])
}

fn json(reply: &Reply) -> Value {
    serde_json::from_slice(body(reply)).expect("JSON body")
}

#[test]
fn the_metadata_header_is_required_and_forwarded_requests_are_refused() {
    let missing = reply_with("/metadata/instance?api-version=2021-02-01", &[]);
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        json(&missing)["error"],
        "Bad request. Required metadata header not specified"
    );
    let wrong = reply_with(
        "/metadata/instance?api-version=2021-02-01",
        &[("Metadata", "True")],
    );
    assert_eq!(
        wrong.status,
        StatusCode::BAD_REQUEST,
        "the value is lower-case true"
    );
    let forwarded = reply_with(
        "/metadata/instance?api-version=2021-02-01",
        &[("Metadata", "true"), ("X-Forwarded-For", "10.0.0.9")],
    );
    assert_eq!(forwarded.status, StatusCode::BAD_REQUEST);
}

#[test]
fn api_version_is_required_except_for_versions_and_errors_list_the_newest() {
    assert_eq!(get("/metadata/versions").status, StatusCode::OK);
    let missing = get("/metadata/instance");
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    let body = json(&missing);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("api-version was not specified"))
    );
    assert_eq!(body["newest-versions"][0], "2024-03-15");
    let invalid = get("/metadata/instance?api-version=1999-01-01");
    assert!(
        json(&invalid)["error"]
            .as_str()
            .is_some_and(|e| e.contains("api-version is invalid"))
    );
    let duplicated = get("/metadata/instance?api-version=2021-02-01&api-version=2021-02-01");
    assert_eq!(duplicated.status, StatusCode::BAD_REQUEST);
}

#[test]
fn the_instance_document_and_its_routes_follow_the_format_rules() {
    let instance = AzureInstance::example();
    let whole = get("/metadata/instance?api-version=2021-02-01");
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(json(&whole)["compute"]["vmId"], instance.vm_id.as_str());
    let leaf = get("/metadata/instance/compute/vmId?api-version=2021-02-01&format=text");
    assert_eq!(body(&leaf), instance.vm_id.as_bytes());
    let ip = get(
        "/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress?api-version=2021-02-01&format=text",
    );
    assert_eq!(body(&ip), "10.0.0.7".as_bytes());
    let leaf_as_json = get("/metadata/instance/compute/vmId?api-version=2021-02-01");
    assert_eq!(leaf_as_json.status, StatusCode::BAD_REQUEST);
    let directory_as_text = get("/metadata/instance/compute?api-version=2021-02-01&format=text");
    assert_eq!(directory_as_text.status, StatusCode::BAD_REQUEST);
    let missing = get("/metadata/instance/compute/nothing?api-version=2021-02-01");
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[test]
fn a_managed_identity_token_has_string_numbers_and_names_its_resource() {
    let reply = get(
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F",
    );
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply
            .credentials_read
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("an Azure managed identity token for https://management.azure.com/"),
        "the audit line names the resource"
    );
    let body = json(&reply);
    assert_eq!(body["resource"], "https://management.azure.com/");
    assert_eq!(body["token_type"], "Bearer");
    assert!(
        body["expires_in"].is_string() && body["expires_on"].is_string(),
        "{body}"
    );
    assert_eq!(
        body["client_id"],
        AzureInstance::example().client_id.as_str()
    );
}

#[test]
fn a_token_needs_a_resource_and_a_known_identity() {
    let missing = get("/metadata/identity/oauth2/token?api-version=2018-02-01");
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        json(&missing)["error_description"],
        "Required query variable 'resource' is missing"
    );
    let instance = AzureInstance::example();
    let ours = get(&format!(
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=r&client_id={}",
        instance.client_id
    ));
    assert_eq!(ours.status, StatusCode::OK);
    let other = get(
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=r&client_id=00000000-0000-0000-0000-000000000000",
    );
    assert_eq!(other.status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&other)["error_description"], "Identity not found");
    let old = get("/metadata/identity/oauth2/token?api-version=2017-12-01&resource=r");
    assert_eq!(
        old.status,
        StatusCode::BAD_REQUEST,
        "identity starts at 2018-02-01"
    );
}

#[test]
fn scheduled_events_are_empty_and_only_get_and_their_post_are_served() {
    let events = get("/metadata/scheduledevents?api-version=2020-07-01");
    assert_eq!(
        json(&events),
        json!({ "DocumentIncarnation": 0, "Events": [] })
    );
    let service = azure();
    let Answer::Now(posted) = service.respond(&request(
        Method::POST,
        "/metadata/instance?api-version=2021-02-01",
        &[("Metadata", "true")],
    )) else {
        panic!("no token for a POST");
    };
    assert_eq!(posted.status, StatusCode::METHOD_NOT_ALLOWED);
    let start = |uri: &str, headers: &[(&str, &str)]| {
        let parts = request(Method::POST, uri, headers);
        (service.takes_body(&parts), service.respond(&parts))
    };
    assert!(matches!(
        start(
            "/metadata/scheduledevents?api-version=2020-07-01",
            &[("Metadata", "true")]
        ),
        (true, Answer::StartEvents)
    ));
    let (_, Answer::Now(unversioned)) = start("/metadata/scheduledevents", &[("Metadata", "true")])
    else {
        panic!("refused at once");
    };
    assert_eq!(unversioned.status, StatusCode::BAD_REQUEST);
    let (_, Answer::Now(unflagged)) =
        start("/metadata/scheduledevents?api-version=2020-07-01", &[])
    else {
        panic!("refused at once");
    };
    assert_eq!(unflagged.status, StatusCode::BAD_REQUEST);
}

#[test]
fn a_scheduled_event_is_listed_started_by_a_start_request_and_counted() {
    let service = azure();
    let now = time::OffsetDateTime::from_unix_timestamp(NOW).expect("a valid time");
    service
        .events()
        .update(|events| {
            events.schedule(
                events::ScheduledEvent {
                    id: "602d9444-d2cd-49c7-8624-8643e7171297".into(),
                    kind: events::EventType::Preempt,
                    not_before: now + time::Duration::seconds(30),
                    duration: -1,
                    started: None,
                },
                now,
            )
        })
        .expect("room");
    let listed = |version: &str| {
        let context = Context {
            request: request(
                Method::GET,
                &format!("/metadata/scheduledevents?api-version={version}"),
                &[("Metadata", "true")],
            ),
            body: None,
            now,
            caller: None,
        };
        let reply = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(service.answer(context));
        assert_eq!(reply.status, StatusCode::OK);
        json(&reply)
    };
    let document = listed("2020-07-01");
    assert_eq!(document["DocumentIncarnation"], 1);
    let event = &document["Events"][0];
    assert_eq!(event["EventType"], "Preempt");
    assert_eq!(event["EventStatus"], "Scheduled");
    assert_eq!(
        event["Resources"],
        json!([AzureInstance::example().vm_name])
    );
    assert_eq!(event["NotBefore"], "Tue, 14 Nov 2023 22:13:50 GMT");
    assert_eq!(event["DurationInSeconds"], -1);
    let unknown = service.start_requested(br#"{"StartRequests": [{"EventId": "nope"}]}"#, now);
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let malformed = service.start_requested(b"{\"Start\": 1}", now);
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        listed("2020-07-01")["DocumentIncarnation"],
        1,
        "nothing changed"
    );
    let started = service.start_requested(
        br#"{"StartRequests": [{"EventId": "602d9444-d2cd-49c7-8624-8643e7171297"}]}"#,
        now,
    );
    assert_eq!(started.status, StatusCode::OK);
    assert_eq!(body(&started), b"");
    let document = listed("2020-07-01");
    assert_eq!(document["DocumentIncarnation"], 2);
    assert_eq!(document["Events"][0]["EventStatus"], "Started");
    assert_eq!(document["Events"][0]["NotBefore"], "");
    assert!(
        listed("2017-11-01")["Events"][0]
            .get("DurationInSeconds")
            .is_none(),
        "the field came with 2020-07-01"
    );
}

#[test]
fn replies_carry_their_type_and_length_then_azures_server_header() {
    let reply = get("/metadata/versions");
    let names: Vec<&str> = reply.headers.keys().map(|name| name.as_str()).collect();
    assert_eq!(names, ["content-type", "content-length", "server"]);
    assert_eq!(reply.headers["server"], "IMDS/150.870.65.1854");
    assert!(reply.credentials_read.is_none());
}
