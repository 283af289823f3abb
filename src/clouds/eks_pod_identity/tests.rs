//! The EKS Pod Identity endpoint, one request at a time, without sockets: a request carries the
//! `Destination` `http` would give it, and the time is fixed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::attribution::Origin;
use crate::clouds::ec2::Instance;
use crate::credentials::fake::FakeCredentials;
use crate::credentials::naming::RoleArn;
use crate::credentials::roles::{CallerRole, CallerRoles, RoleSource, RoleStarter, Selector};

const NOW: i64 = 1_700_000_000;
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.pod-identity-test-token";

fn role() -> InstanceRole {
    let instance = Instance::example();
    InstanceRole::new(
        Arc::new(FakeCredentials::new(Duration::from_secs(3600))),
        None,
        &instance.role_name,
        &instance.account_id,
        &instance.region,
    )
}

fn service_with(role: InstanceRole) -> PodIdentity {
    let token = SharedToken::parse(TOKEN).expect("a token");
    PodIdentity::new(&PodIdentitySettings { token }, role)
}

fn service() -> PodIdentity {
    service_with(role())
}

fn request_to(
    method: Method,
    uri: &str,
    authorization: &[&str],
    destination: Option<&str>,
) -> Parts {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "169.254.170.23");
    for value in authorization {
        builder = builder.header("authorization", *value);
    }
    let mut parts = builder.body(()).expect("valid request").into_parts().0;
    if let Some(destination) = destination {
        let address: SocketAddr = destination.parse().expect("an address");
        parts.extensions.insert(Destination(address));
    }
    parts
}

fn ask(
    service: &PodIdentity,
    method: Method,
    uri: &str,
    authorization: &[&str],
    caller: Option<&CallerIdentity>,
) -> Reply {
    let request = request_to(method, uri, authorization, Some("169.254.170.23:80"));
    assert!(service.claims(&request));
    let context = Context {
        request,
        body: None,
        now: OffsetDateTime::from_unix_timestamp(NOW).expect("a valid time"),
        caller,
    };
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(service.answer(context))
}

fn get(service: &PodIdentity, authorization: &[&str]) -> Reply {
    ask(service, Method::GET, CREDENTIALS_PATH, authorization, None)
}

fn text(reply: &Reply) -> &str {
    std::str::from_utf8(reply.bytes().expect("a whole body")).expect("UTF-8")
}

fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_str(text(reply)).expect("a JSON body")
}

#[test]
fn it_claims_what_reaches_its_two_addresses_and_nothing_else() {
    let service = service();
    let to = |destination| request_to(Method::GET, CREDENTIALS_PATH, &[], destination);
    assert!(service.claims(&to(Some("169.254.170.23:80"))));
    assert!(service.claims(&to(Some("[fd00:ec2::23]:80"))));
    assert!(!service.claims(&to(Some("169.254.170.2:80"))), "ECS's");
    assert!(
        !service.claims(&to(Some("[fd00:ec2::254]:80"))),
        "EC2's IPv6"
    );
    assert!(!service.claims(&to(None)));
    assert!(
        service.depends_on_caller(&to(None)),
        "refusals name the caller"
    );
}

#[test]
fn the_token_gets_the_instance_role_in_the_agents_body() {
    let reply = get(&service(), &[TOKEN]);
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), Some("application/json"));
    let body = text(&reply);
    let order: Vec<usize> = [
        "\"AccessKeyId\":",
        "\"SecretAccessKey\":",
        "\"Token\":",
        "\"AccountId\":",
        "\"Expiration\":",
    ]
    .iter()
    .map(|key| body.find(key).expect("every field"))
    .collect();
    assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "{body}");
    let body = json(&reply);
    assert_eq!(body.as_object().map(|object| object.len()), Some(5));
    assert_eq!(body["AccountId"], "123456789012");
    assert_eq!(body["Expiration"], "2023-11-14T23:13:20Z");
    assert!(
        body["AccessKeyId"]
            .as_str()
            .is_some_and(|key| key.starts_with("ASIA"))
    );
    assert_eq!(
        reply
            .credentials_read
            .map(|read| read.to_string())
            .as_deref(),
        Some("EKS Pod Identity credentials (role imds-tun)")
    );
}

#[test]
fn a_missing_or_different_token_is_a_400_with_a_json_message_and_no_keys() {
    let service = service();
    for (authorization, message) in [
        (&[][..], "Service account token cannot be empty"),
        (&[""][..], "Service account token cannot be empty"),
        (
            &["eyJhbGciOiJSUzI1NiJ9.pod-identity-test-tokeX"][..],
            "not valid",
        ),
        (
            &["eyJhbGciOiJSUzI1NiJ9.pod-identity-test-token "][..],
            "not valid",
        ),
        (&[&TOKEN[..TOKEN.len() - 1]][..], "not valid"),
        (&[TOKEN, TOKEN][..], "not valid"),
        (&[&format!("Bearer {TOKEN}")[..]][..], "not valid"),
    ] {
        let reply = get(&service, authorization);
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{authorization:?}");
        assert_eq!(reply.content_type(), Some("application/json"));
        let body = json(&reply);
        assert_eq!(body["Code"], "InvalidTokenException");
        assert!(
            body["Message"]
                .as_str()
                .is_some_and(|text| text.contains(message)),
            "{authorization:?}: {body}"
        );
        assert!(reply.credentials_read.is_none());
        assert!(!text(&reply).contains("ASIA"));
        assert!(!text(&reply).contains(TOKEN), "the token is never repeated");
    }
}

#[test]
fn other_methods_and_paths_are_refused_before_the_token() {
    let service = service();
    let post = ask(&service, Method::POST, CREDENTIALS_PATH, &[TOKEN], None);
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers[ALLOW], "GET, HEAD");
    assert!(post.credentials_read.is_none());
    for path in [
        "/",
        "/v1/credentials/",
        "/v2/credentials/imds-tun",
        "/latest/meta-data/",
    ] {
        let reply = ask(&service, Method::GET, path, &[TOKEN], None);
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(text(&reply), "404 page not found\n");
    }
}

#[test]
fn caller_roles_apply_and_an_undecided_caller_gets_nothing() {
    let starter: RoleStarter = Arc::new(|_: &RoleArn| {
        Arc::new(FakeCredentials::new(Duration::from_secs(3600))) as Arc<dyn RoleSource>
    });
    let rules = Arc::new(CallerRoles::new(
        &[CallerRole {
            selector: Selector::Uid(1000),
            role: RoleArn::parse("arn:aws:iam::210987654321:role/alice").expect("arn"),
        }],
        starter,
    ));
    let service = service_with(role().with_caller_roles(rules));
    let alice = CallerIdentity {
        address: Some("169.254.170.22".parse().expect("ip")),
        origin: Origin::Local,
        uid: Some(1000),
        ..CallerIdentity::default()
    };
    let hers = ask(
        &service,
        Method::GET,
        CREDENTIALS_PATH,
        &[TOKEN],
        Some(&alice),
    );
    assert_eq!(
        json(&hers)["AccountId"],
        "210987654321",
        "the role's account"
    );
    assert_eq!(
        hers.credentials_read
            .map(|read| read.to_string())
            .as_deref(),
        Some("EKS Pod Identity credentials (role alice)")
    );
    let bob = CallerIdentity {
        uid: Some(1001),
        ..alice.clone()
    };
    let his = ask(
        &service,
        Method::GET,
        CREDENTIALS_PATH,
        &[TOKEN],
        Some(&bob),
    );
    assert_eq!(json(&his)["AccountId"], "123456789012");
    let closing = CallerIdentity {
        origin: Origin::Unidentified("TIME-WAIT"),
        ..alice
    };
    let refused = ask(
        &service,
        Method::GET,
        CREDENTIALS_PATH,
        &[TOKEN],
        Some(&closing),
    );
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.credentials_read.is_none());
    let wrong = ask(
        &service,
        Method::GET,
        CREDENTIALS_PATH,
        &["nope"],
        Some(&bob),
    );
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "the token first");
}
