//! The ECS endpoint, one request at a time, without sockets: a request carries the
//! `Destination` `http` would give it, and the time is fixed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::attribution::{CallerIdentity, Origin};
use crate::credentials::fake::FakeCredentials;
use crate::credentials::roles::{CallerRole, CallerRoles, RoleSource, Selector};
use crate::credentials::{CredentialError, CredentialSource, RoleCredentials};

const NOW: i64 = 1_700_000_000;

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(NOW).expect("a valid time")
}

fn arn(name: &str) -> RoleArn {
    RoleArn::parse(&format!("arn:aws:iam::123456789012:role/{name}")).expect("arn")
}

/// Fake keys per started role, and the names of the roles started, in order.
fn recording_starter() -> (RoleStarter, Arc<Mutex<Vec<String>>>) {
    let started = Arc::new(Mutex::new(Vec::new()));
    let log = started.clone();
    let starter: RoleStarter = Arc::new(move |role: &RoleArn| {
        log.lock().expect("lock").push(role.name.clone());
        Arc::new(FakeCredentials::new(Duration::from_secs(3600))) as Arc<dyn RoleSource>
    });
    (starter, started)
}

fn instance_role() -> InstanceRole {
    let instance = Instance::example();
    InstanceRole::new(
        Arc::new(FakeCredentials::new(Duration::from_secs(3600))),
        None,
        &instance.role_name,
        &instance.account_id,
        &instance.region,
    )
}

fn settings(ids: &[(&str, &str)]) -> EcsSettings {
    EcsSettings {
        credentials: ids
            .iter()
            .map(|(id, role)| EcsCredentials {
                id: (*id).to_owned(),
                role: arn(role),
            })
            .collect(),
    }
}

fn ecs_with(ids: &[(&str, &str)], role: InstanceRole, starter: RoleStarter) -> Ecs {
    Ecs::new(&Instance::example(), &settings(ids), role, starter, now())
}

fn ecs() -> Ecs {
    ecs_with(&[("app", "app")], instance_role(), recording_starter().0)
}

fn request_to(method: Method, uri: &str, destination: Option<&str>) -> Parts {
    let mut parts = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "169.254.170.2")
        .body(())
        .expect("valid request")
        .into_parts()
        .0;
    if let Some(destination) = destination {
        let address: SocketAddr = destination.parse().expect("an address");
        parts.extensions.insert(Destination(address));
    }
    parts
}

/// The answer to `method uri` sent to 169.254.170.2, as `http` asks it.
fn ask_as(ecs: &Ecs, method: Method, uri: &str, caller: Option<&CallerIdentity>) -> Reply {
    let request = request_to(method, uri, Some("169.254.170.2:80"));
    assert!(ecs.claims(&request), "ECS claims what reaches its address");
    let context = Context {
        request,
        body: None,
        now: now(),
        caller,
    };
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(ecs.answer(context))
}

fn get(ecs: &Ecs, uri: &str) -> Reply {
    ask_as(ecs, Method::GET, uri, None)
}

fn text(reply: &Reply) -> &str {
    std::str::from_utf8(reply.bytes().expect("a whole body")).expect("UTF-8")
}

fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_str(text(reply)).expect("a JSON body")
}

/// The keys of a flat JSON object, in the order they are written.
fn keys_in_order(body: &str) -> Vec<String> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(body).expect("an object");
    let mut keys: Vec<(usize, String)> = object
        .keys()
        .map(|key| {
            let at = body
                .find(&format!("\"{key}\":"))
                .expect("the key is in the body");
            (at, key.clone())
        })
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, key)| key).collect()
}

fn local_caller(uid: u32) -> CallerIdentity {
    CallerIdentity {
        address: Some("169.254.169.253".parse().expect("ip")),
        origin: Origin::Local,
        uid: Some(uid),
        ..CallerIdentity::default()
    }
}

#[test]
fn it_claims_what_reaches_169_254_170_2_and_nothing_else() {
    let ecs = ecs();
    let to = |destination| request_to(Method::GET, "/v2/credentials/imds-tun", destination);
    assert!(ecs.claims(&to(Some("169.254.170.2:80"))));
    assert!(
        !ecs.claims(&to(Some("169.254.169.254:80"))),
        "EC2's address"
    );
    assert!(
        !ecs.claims(&to(Some("169.254.170.23:80"))),
        "Pod Identity's"
    );
    assert!(
        !ecs.claims(&to(Some("127.0.0.1:8080"))),
        "a --listen socket"
    );
    assert!(!ecs.claims(&to(None)), "a transport that does not say");
}

#[test]
fn the_instance_role_is_served_in_the_agents_body_and_marked_for_the_audit_line() {
    let reply = get(&ecs(), "/v2/credentials/imds-tun");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), Some("application/json"));
    assert_eq!(
        keys_in_order(text(&reply)),
        [
            "RoleArn",
            "AccessKeyId",
            "SecretAccessKey",
            "Token",
            "Expiration"
        ]
    );
    let body = json(&reply);
    assert_eq!(body["RoleArn"], "arn:aws:iam::123456789012:role/imds-tun");
    assert!(
        body["AccessKeyId"]
            .as_str()
            .is_some_and(|key| key.starts_with("ASIA"))
    );
    assert_eq!(
        body["Expiration"], "2023-11-14T23:13:20Z",
        "an hour after NOW"
    );
    assert!(!text(&reply).contains(' '), "compact, as Go writes it");
    let read = reply.credentials_read.as_ref().expect("an audit marker");
    assert_eq!(read.to_string(), "ECS credentials imds-tun (role imds-tun)");
    assert!(
        !read.to_string().contains("ASIA"),
        "the audit line names, never shows"
    );
}

#[test]
fn each_ecs_id_starts_its_own_role_once_on_its_first_ask_with_distinct_keys() {
    let (starter, started) = recording_starter();
    let ecs = ecs_with(
        &[("app", "app"), ("worker", "worker")],
        instance_role(),
        starter,
    );
    assert!(
        started.lock().expect("lock").is_empty(),
        "nothing assumed before an ask"
    );
    let app = json(&get(&ecs, "/v2/credentials/app"));
    let again = json(&get(&ecs, "/v2/credentials/app"));
    let worker = json(&get(&ecs, "/v2/credentials/worker"));
    let instance = json(&get(&ecs, "/v2/credentials/imds-tun"));
    assert_eq!(*started.lock().expect("lock"), ["app", "worker"]);
    assert_eq!(app["RoleArn"], "arn:aws:iam::123456789012:role/app");
    assert_eq!(worker["RoleArn"], "arn:aws:iam::123456789012:role/worker");
    assert_eq!(
        app["AccessKeyId"], again["AccessKeyId"],
        "cached, not reissued"
    );
    assert_ne!(app["AccessKeyId"], worker["AccessKeyId"]);
    assert_ne!(app["AccessKeyId"], instance["AccessKeyId"]);
    assert_ne!(worker["SecretAccessKey"], instance["SecretAccessKey"]);
    let read = get(&ecs, "/v2/credentials/worker").credentials_read;
    assert_eq!(
        read.map(|read| read.to_string()).as_deref(),
        Some("ECS credentials worker (role worker)")
    );
}

#[test]
fn unknown_ids_methods_and_paths_get_the_agents_answers_at_once() {
    let ecs = ecs();
    let unknown = get(&ecs, "/v2/credentials/nope");
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.content_type(), Some("application/json"));
    assert_eq!(
        text(&unknown),
        r#"{"code":"InvalidIdInRequest","message":"CredentialsV2Request: Credentials not found","HTTPErrorCode":400}"#
    );
    assert!(unknown.credentials_read.is_none());
    let empty = get(&ecs, "/v2/credentials/");
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        text(&empty),
        r#"{"code":"NoIdInRequest","message":"CredentialsV2Request: No Credential ID in the request","HTTPErrorCode":400}"#
    );
    assert_eq!(
        get(&ecs, "/v2/credentials/imds-tun/more").status,
        StatusCode::BAD_REQUEST,
        "the agent's id is everything after the prefix"
    );
    let put = ask_as(&ecs, Method::PUT, "/v2/credentials/imds-tun", None);
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(put.headers[ALLOW], "GET, HEAD");
    assert_eq!(json(&put)["HTTPErrorCode"], 405);
    assert!(put.credentials_read.is_none(), "no keys for a PUT");
    for path in [
        "/",
        "/v2/credentials",
        "/latest/meta-data/",
        "/v4/imds-tun/stats",
    ] {
        let reply = get(&ecs, path);
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(text(&reply), "404 page not found\n", "{path}");
        assert_eq!(reply.content_type(), Some("text/plain; charset=utf-8"));
    }
}

#[test]
fn caller_roles_apply_to_the_instance_id_only() {
    let (starter, started) = recording_starter();
    let rules = Arc::new(CallerRoles::new(
        &[CallerRole {
            selector: Selector::Uid(1000),
            role: arn("alice"),
        }],
        starter.clone(),
    ));
    let ecs = ecs_with(
        &[("app", "app")],
        instance_role().with_caller_roles(rules),
        starter,
    );
    let instance_path = request_to(Method::GET, "/v2/credentials/imds-tun", None);
    let app_path = request_to(Method::GET, "/v2/credentials/app", None);
    assert!(ecs.depends_on_caller(&instance_path));
    assert!(
        !ecs.depends_on_caller(&app_path),
        "an id's role is the id's"
    );
    let alice = local_caller(1000);
    let hers = ask_as(&ecs, Method::GET, "/v2/credentials/imds-tun", Some(&alice));
    assert_eq!(
        json(&hers)["RoleArn"],
        "arn:aws:iam::123456789012:role/alice"
    );
    assert_eq!(
        hers.credentials_read
            .map(|read| read.to_string())
            .as_deref(),
        Some("ECS credentials imds-tun (role alice)")
    );
    let bob = local_caller(1001);
    let his = ask_as(&ecs, Method::GET, "/v2/credentials/imds-tun", Some(&bob));
    assert_eq!(
        json(&his)["RoleArn"],
        "arn:aws:iam::123456789012:role/imds-tun"
    );
    let app = ask_as(&ecs, Method::GET, "/v2/credentials/app", Some(&alice));
    assert_eq!(json(&app)["RoleArn"], "arn:aws:iam::123456789012:role/app");
    assert_eq!(*started.lock().expect("lock"), ["alice", "app"]);
    let closing = CallerIdentity {
        origin: Origin::Unidentified("TIME-WAIT"),
        ..local_caller(1000)
    };
    let refused = ask_as(
        &ecs,
        Method::GET,
        "/v2/credentials/imds-tun",
        Some(&closing),
    );
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.credentials_read.is_none());
    assert!(!text(&refused).contains("ASIA"));
}

/// A source whose role cannot be assumed.
struct Refusing;

impl CredentialSource for Refusing {
    fn current(&self, _now: OffsetDateTime) -> Result<RoleCredentials, CredentialError> {
        Err(CredentialError {
            code: "AssumeRoleUnauthorizedAccess".into(),
            message: "STS refused the call (AccessDenied)".into(),
        })
    }
}

#[test]
fn a_role_without_credentials_is_a_500_with_the_reason_and_no_audit_line() {
    let instance = Instance::example();
    let role = InstanceRole::new(
        Arc::new(Refusing),
        None,
        &instance.role_name,
        &instance.account_id,
        &instance.region,
    );
    let reply = get(
        &ecs_with(&[], role, recording_starter().0),
        "/v2/credentials/imds-tun",
    );
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(json(&reply)["code"], "AssumeRoleUnauthorizedAccess");
    assert!(reply.credentials_read.is_none());
}

#[test]
fn task_metadata_v4_has_the_fields_agents_read_derived_from_the_instance() {
    let ecs = ecs();
    let container = get(&ecs, "/v4/app");
    assert_eq!(container.status, StatusCode::OK);
    assert_eq!(container.content_type(), Some("application/json"));
    assert!(container.credentials_read.is_none());
    let container = json(&container);
    let docker_id = container["DockerId"].as_str().expect("DockerId");
    assert_eq!(docker_id.len(), 64);
    assert!(docker_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(container["Name"], "app");
    assert_eq!(
        container["Image"],
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:latest"
    );
    assert_eq!(container["KnownStatus"], "RUNNING");
    assert_eq!(container["CreatedAt"], "2023-11-14T22:13:20Z");
    let network = &container["Networks"][0];
    assert_eq!(network["NetworkMode"], "awsvpc");
    assert_eq!(network["IPv4Addresses"][0], "172.31.40.7");
    assert_eq!(network["MACAddress"], "0e:31:a2:02:fe:5d");
    assert_eq!(network["IPv4SubnetCIDRBlock"], "172.31.32.0/20");
    assert_eq!(network["SubnetGatewayIpv4Address"], "172.31.32.1/20");

    let task = json(&get(&ecs, "/v4/app/task"));
    assert_eq!(task["Cluster"], "imds-tun");
    let task_arn = task["TaskARN"].as_str().expect("TaskARN");
    let task_id = task_arn
        .strip_prefix("arn:aws:ecs:us-east-1:123456789012:task/imds-tun/")
        .expect("in the instance's region and account");
    assert_eq!(task_id.len(), 32);
    assert_eq!(task["Family"], "app");
    assert_eq!(task["Revision"], "1");
    assert_eq!(task["DesiredStatus"], "RUNNING");
    assert_eq!(task["KnownStatus"], "RUNNING");
    assert_eq!(task["AvailabilityZone"], "us-east-1a");
    assert_eq!(task["LaunchType"], "EC2");
    assert_eq!(task["VPCID"], "vpc-29e7b9a42232ffcb1");
    assert_eq!(
        task["Containers"][0], container,
        "the task holds its container"
    );
    assert_eq!(
        container["Labels"]["com.amazonaws.ecs.task-arn"], task_arn,
        "the container's labels name its task"
    );

    let own = json(&get(&ecs, "/v4/imds-tun"));
    assert_ne!(
        own["DockerId"], container["DockerId"],
        "one container per id"
    );
    let rebuilt = json(&get(&ecs, "/v4/app"));
    assert_eq!(rebuilt, container, "stable on one machine");
}

#[test]
fn task_metadata_for_an_unknown_id_is_the_agents_404() {
    let ecs = ecs();
    let container = get(&ecs, "/v4/nope");
    assert_eq!(container.status, StatusCode::NOT_FOUND);
    assert_eq!(
        json(&container),
        "V4 container metadata handler: unable to get container ID from request: unable to get \
         docker ID from v3 endpoint ID: nope"
    );
    let task = get(&ecs, "/v4/no\"pe/task");
    assert_eq!(task.status, StatusCode::NOT_FOUND);
    assert!(
        json(&task)
            .as_str()
            .is_some_and(|message| message.ends_with("v3 endpoint ID: no\"pe")),
        "the id is escaped inside the JSON string"
    );
}

#[test]
fn ids_are_path_segments_and_imds_tun_is_reserved() {
    assert_eq!(parse_id("app-1.blue_2"), Ok("app-1.blue_2".to_owned()));
    assert!(parse_id("imds-tun").is_err());
    assert!(parse_id("").is_err());
    assert!(parse_id("..").is_err());
    assert!(parse_id("a/b").is_err());
    assert!(parse_id("a b").is_err());
    assert!(parse_id(&"a".repeat(MAX_ID_LEN)).is_ok());
    assert!(parse_id(&"a".repeat(MAX_ID_LEN + 1)).is_err());
}

#[test]
fn the_subnet_gateway_is_the_first_address_of_the_block() {
    assert_eq!(
        task::subnet_gateway("10.0.2.0/24").as_deref(),
        Some("10.0.2.1/24")
    );
    assert_eq!(
        task::subnet_gateway("172.31.40.7/20").as_deref(),
        Some("172.31.32.1/20")
    );
    assert_eq!(task::subnet_gateway("10.0.0.0/31"), None);
    assert_eq!(task::subnet_gateway("garbage"), None);
}
