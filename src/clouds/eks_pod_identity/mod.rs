//! The EKS Pod Identity endpoint at 169.254.170.23 and fd00:ec2::23: `GET /v1/credentials`,
//! what `AWS_CONTAINER_CREDENTIALS_FULL_URI` points at, with the content of
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` in the `Authorization` header.
//!
//! [`PodIdentity`] claims every request whose [`Destination`] is one of those two addresses,
//! whatever its path. A request whose `Authorization` header is the token of
//! `--eks-pod-identity-token-file` (compared in constant time, hashed first) gets the instance's
//! role (per-caller roles apply) in the agent's body, `AccessKeyId`, `SecretAccessKey`, `Token`,
//! `AccountId`, `Expiration`. Refusals are JSON `{"Code","Message"}` (the agent writes plain
//! text; the JavaScript SDK reads `Code` and `Message` from a JSON error body):
//!
//! - no `Authorization`, or an empty one: 400, the agent's words ("Service account token cannot
//!   be empty");
//! - another token (or two headers): 400 `InvalidTokenException`, as EKS Auth refuses a token;
//!   both logged, one line per 5 s, naming the caller, never the token;
//! - anything but GET or HEAD: 405; another path: 404, Go's `404 page not found`.
//!
//! The token is read once, at start-up (`config`); a changed file takes a restart.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};
use serde::Serialize;
use time::OffsetDateTime;

use super::ec2::responses::iso8601_utc_seconds;
use super::instance_role::InstanceRole;
use crate::attribution::CallerIdentity;
use crate::http::shared_token::SharedToken;
use crate::http::{Answering, Context, CredentialsRead, Destination, MetadataService, Reply};

/// The IPv4 address of the Pod Identity agent.
pub const ADDRESS_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 23);
/// The IPv6 address of the Pod Identity agent (`fd00:ec2::23`).
pub const ADDRESS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23);

/// The one path served.
pub const CREDENTIALS_PATH: &str = "/v1/credentials";

const JSON: &str = "application/json";

/// What the Pod Identity endpoint is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentitySettings {
    /// The content of `--eks-pod-identity-token-file`: the `Authorization` a request must send.
    pub token: SharedToken,
}

/// The Pod Identity endpoint of one instance.
#[derive(Debug)]
pub struct PodIdentity {
    token: SharedToken,
    role: InstanceRole,
}

impl PodIdentity {
    /// Serves `role` to requests carrying `settings`' token.
    pub fn new(settings: &PodIdentitySettings, role: InstanceRole) -> PodIdentity {
        PodIdentity {
            token: settings.token.clone(),
            role,
        }
    }

    /// Whether the request carries exactly one `Authorization`, and it is the token.
    fn authorization(&self, request: &Parts) -> Authorization {
        let mut values = request.headers.get_all(AUTHORIZATION).iter();
        match (values.next(), values.next()) {
            (None, _) => Authorization::Missing,
            (Some(value), None) if value.as_bytes().is_empty() => Authorization::Missing,
            (Some(value), None) if self.token.matches(value.as_bytes()) => Authorization::Good,
            _ => Authorization::Wrong,
        }
    }

    async fn credentials(
        &self,
        request: &Parts,
        now: OffsetDateTime,
        caller: Option<&CallerIdentity>,
    ) -> Reply {
        let who = || caller.map_or_else(|| "an unknown caller".to_owned(), ToString::to_string);
        match self.authorization(request) {
            Authorization::Good => {}
            Authorization::Missing => {
                crate::warn_limited!(
                    "{}: EKS Pod Identity credentials refused: no Authorization header (400)",
                    who()
                );
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidTokenException",
                    "Service account token cannot be empty",
                );
            }
            Authorization::Wrong => {
                crate::warn_limited!(
                    "{}: EKS Pod Identity credentials refused: the Authorization header is not \
                     the token of --eks-pod-identity-token-file (400)",
                    who()
                );
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidTokenException",
                    "The service account token is not valid: it is not the token imds-tun \
                     was given (--eks-pod-identity-token-file)",
                );
            }
        }
        let role = match self.role.for_caller(caller).await {
            Ok(role) => role,
            Err(why) => {
                crate::warn_limited!(
                    "{}: no EKS Pod Identity credentials served: {why} (403; see \
                     docs/credentials.md#a-role-per-caller)",
                    who()
                );
                return error(
                    StatusCode::FORBIDDEN,
                    "AccessDeniedException",
                    "imds-tun cannot tell whether a --caller-role rule applies to this caller \
                     (its log says which rule and why)",
                );
            }
        };
        match role.source.current(now) {
            Ok(credentials) => json_reply(
                StatusCode::OK,
                &CredentialsBody {
                    access_key_id: &credentials.access_key_id,
                    secret_access_key: &credentials.secret_access_key,
                    token: &credentials.token,
                    account_id: &role.account_id,
                    expiration: iso8601_utc_seconds(credentials.expiration),
                },
            )
            .credentials_read({
                let read = CredentialsRead::new(PodIdentityRead(role.name.clone()));
                read.of_role(&role.name)
            }),
            Err(failure) => {
                crate::warn_limited!(code = %failure.code, "serving an EKS Pod Identity credential error");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &failure.code,
                    &failure.message,
                )
            }
        }
    }
}

/// What a request's `Authorization` is.
enum Authorization {
    Missing,
    Wrong,
    Good,
}

impl MetadataService for PodIdentity {
    fn name(&self) -> &'static str {
        "eks"
    }

    /// Every request to 169.254.170.23 or fd00:ec2::23, and nothing else.
    fn claims(&self, request: &Parts) -> bool {
        request
            .extensions
            .get::<Destination>()
            .is_some_and(|destination| {
                destination.0.ip() == IpAddr::V4(ADDRESS_V4)
                    || destination.0.ip() == IpAddr::V6(ADDRESS_V6)
            })
    }

    /// The credentials path: a refusal names the caller, and `--caller-role` rules apply.
    fn depends_on_caller(&self, request: &Parts) -> bool {
        request.uri.path() == CREDENTIALS_PATH
    }

    fn answer<'a>(&'a self, context: Context<'a>) -> Answering<'a> {
        Box::pin(async move {
            let request = &context.request;
            if request.method != Method::GET && request.method != Method::HEAD {
                return error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "imds-tun answers the EKS Pod Identity endpoint to GET and HEAD only",
                )
                .header(ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            if request.uri.path() != CREDENTIALS_PATH {
                return super::go_not_found();
            }
            self.credentials(request, context.now, context.caller).await
        })
    }
}

/// The agent's body, in its field order (its `EksCredentialsResponse`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialsBody<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    account_id: &'a str,
    expiration: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

/// `status` with `{"Code","Message"}`.
fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    json_reply(status, &ErrorBody { code, message })
}

fn json_reply(status: StatusCode, value: &impl Serialize) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => Reply::new(status).body(JSON, Bytes::from(body)),
        Err(_) => {
            Reply::new(StatusCode::INTERNAL_SERVER_ERROR).body(JSON, Bytes::from_static(b"{}"))
        }
    }
}

/// What a Pod Identity answer handed out, for the audit line.
#[derive(Debug)]
struct PodIdentityRead(String);

impl std::fmt::Display for PodIdentityRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EKS Pod Identity credentials (role {})", self.0)
    }
}

#[cfg(test)]
mod tests;
