//! The ECS container endpoint at 169.254.170.2: task role credentials (`/v2/credentials/ID`,
//! what `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` points at) and task metadata v4 (`/v4/ID`,
//! `/v4/ID/task`, what `ECS_CONTAINER_METADATA_URI_V4` points at), answered as the ECS agent
//! answers them.
//!
//! [`Ecs`] claims every request whose [`Destination`] is 169.254.170.2, whatever its path, so
//! nothing else answers there and nothing here answers on 169.254.169.254. Routing:
//!
//! 1. Anything but GET or HEAD: 405 with the agent's error JSON (the agent itself serves any
//!    method; imds-tun hands out no credentials to a PUT or POST).
//! 2. `/v2/credentials/ID`: [`INSTANCE_ROLE_ID`] serves the instance's role (per-caller roles
//!    apply, as on EC2); an `--ecs-credentials ID=ROLE_ARN` id serves that role, assumed on its
//!    first ask with the same machinery as a `--caller-role` role (or distinct fake keys with
//!    `--mock-credentials`); no id is 400 `NoIdInRequest`, any other id 400
//!    `InvalidIdInRequest`, with the agent's words.
//! 3. `/v4/ID` and `/v4/ID/task` for the same ids: the container and its task ([`task`]);
//!    another id is 404 with the agent's JSON string.
//! 4. Any other path: 404 `404 page not found`, the agent's router's own text.
//!
//! Every credentials answer carries a [`CredentialsRead`] for the audit line; no answer or log
//! line holds a key.

pub mod task;

use bytes::Bytes;
use http::header::{ALLOW, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};
use serde::Serialize;
use time::OffsetDateTime;

use super::ec2::Instance;
use super::ec2::responses::iso8601_utc_seconds;
use super::instance_role::{FIRST_CREDENTIALS_WAIT, InstanceRole, ServedRole};
use crate::credentials::naming::RoleArn;
use crate::credentials::roles::{LazyRole, RoleStarter};
use crate::http::{Answering, Context, CredentialsRead, Destination, MetadataService, Reply};

/// The address the ECS agent answers on, inside every task.
pub const ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 170, 2);

/// The credentials id that serves the instance's own role.
pub const INSTANCE_ROLE_ID: &str = "imds-tun";

/// The longest credentials id `--ecs-credentials` takes (the agent's are 36-character UUIDs).
pub const MAX_ID_LEN: usize = 64;

const CREDENTIALS_PREFIX: &str = "/v2/credentials/";
const METADATA_PREFIX: &str = "/v4/";
const JSON: &str = "application/json";

/// One `--ecs-credentials ID=ROLE_ARN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsCredentials {
    /// The id in `/v2/credentials/ID` and `/v4/ID`.
    pub id: String,
    /// The role it serves.
    pub role: RoleArn,
}

/// What the ECS endpoint serves besides the instance's role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EcsSettings {
    /// `--ecs-credentials`, in the order given; ids are distinct and none is
    /// [`INSTANCE_ROLE_ID`].
    pub credentials: Vec<EcsCredentials>,
}

/// Checks a credentials id: 1 to [`MAX_ID_LEN`] of letters, digits, `-`, `_` and `.`, not
/// [`INSTANCE_ROLE_ID`] (which is always the instance's role), and not a dot segment.
pub fn parse_id(text: &str) -> Result<String, String> {
    if text == INSTANCE_ROLE_ID {
        return Err(format!(
            "the id {INSTANCE_ROLE_ID:?} always serves the instance's role; choose another id"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if (1..=MAX_ID_LEN).contains(&text.len())
        && text.chars().all(allowed)
        && text != "."
        && text != ".."
    {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "expected an id of 1 to {MAX_ID_LEN} letters, digits, '-', '_' or '.' (it is a path \
             segment of AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)"
        ))
    }
}

/// One id the endpoint knows: its role, and its task's metadata.
struct Known {
    id: String,
    role: Role,
    task: task::Documents,
}

/// Where an id's keys come from.
enum Role {
    /// [`INSTANCE_ROLE_ID`]: the instance's, per-caller roles applying.
    Instance,
    /// An `--ecs-credentials` role, started on its first ask.
    Own(LazyRole),
}

/// The ECS endpoint of one instance. Immutable after `new` but for the roles' own caches.
pub struct Ecs {
    ids: Vec<Known>,
    instance_role: InstanceRole,
    starter: RoleStarter,
}

impl std::fmt::Debug for Ecs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.ids.iter().map(|known| known.id.as_str()).collect();
        f.debug_struct("Ecs")
            .field("ids", &ids)
            .finish_non_exhaustive()
    }
}

impl Ecs {
    /// The endpoint for `instance`: the instance's role (`instance_role`) under
    /// [`INSTANCE_ROLE_ID`] and each of `settings`' ids, whose roles `starter` makes (AssumeRole,
    /// or fake keys) when first asked. `started` is the tasks' creation time.
    pub fn new(
        instance: &Instance,
        settings: &EcsSettings,
        instance_role: InstanceRole,
        starter: RoleStarter,
        started: OffsetDateTime,
    ) -> Ecs {
        let mut ids = vec![Known {
            id: INSTANCE_ROLE_ID.to_owned(),
            role: Role::Instance,
            task: task::Documents::build(instance, INSTANCE_ROLE_ID, started),
        }];
        ids.extend(settings.credentials.iter().map(|credentials| Known {
            id: credentials.id.clone(),
            role: Role::Own(LazyRole::new(credentials.role.clone())),
            task: task::Documents::build(instance, &credentials.id, started),
        }));
        Ecs {
            ids,
            instance_role,
            starter,
        }
    }

    fn known(&self, id: &str) -> Option<&Known> {
        self.ids.iter().find(|known| known.id == id)
    }

    /// The role `id` serves to `caller`; `Err` is the reply instead.
    async fn role_for(
        &self,
        known: &Known,
        caller: Option<&crate::attribution::CallerIdentity>,
    ) -> Result<ServedRole, Reply> {
        match &known.role {
            Role::Instance => self.instance_role.for_caller(caller).await.map_err(|why| {
                crate::warn_limited!(
                    "{}: no ECS credentials served: {why} (403; see \
                     docs/credentials.md#a-role-per-caller)",
                    caller.map_or_else(|| "an unknown caller".to_owned(), ToString::to_string)
                );
                error(
                    StatusCode::FORBIDDEN,
                    "AccessDenied",
                    "CredentialsV2Request: imds-tun cannot tell whether a --caller-role rule \
                     applies to this caller (its log says which rule and why)",
                )
            }),
            Role::Own(role) => {
                let source = role.source_with(&self.starter);
                if !source.wait_first(FIRST_CREDENTIALS_WAIT).await {
                    crate::warn_limited!(role = %role.role.arn, "no credentials yet for this ECS id's role");
                }
                Ok(ServedRole {
                    source,
                    arn: role.role.arn.clone(),
                    name: role.role.name.clone(),
                    account_id: role.role.account_id.clone(),
                })
            }
        }
    }

    async fn credentials(
        &self,
        id: &str,
        now: OffsetDateTime,
        caller: Option<&crate::attribution::CallerIdentity>,
    ) -> Reply {
        if id.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "NoIdInRequest",
                "CredentialsV2Request: No Credential ID in the request",
            );
        }
        let Some(known) = self.known(id) else {
            crate::info_limited!(
                id = %crate::log_limit::bounded(id.as_bytes()),
                "ECS credentials asked for an unknown id (400)"
            );
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidIdInRequest",
                "CredentialsV2Request: Credentials not found",
            );
        };
        let role = match self.role_for(known, caller).await {
            Ok(role) => role,
            Err(reply) => return reply,
        };
        match role.source.current(now) {
            Ok(credentials) => {
                let body = CredentialsBody {
                    role_arn: &role.arn,
                    access_key_id: &credentials.access_key_id,
                    secret_access_key: &credentials.secret_access_key,
                    token: &credentials.token,
                    expiration: iso8601_utc_seconds(credentials.expiration),
                };
                let read = CredentialsRead::new(EcsCredentialsRead {
                    id: known.id.clone(),
                    role: role.name.clone(),
                })
                .of_role(&role.name);
                json_reply(StatusCode::OK, &body).credentials_read(read)
            }
            Err(failure) => {
                crate::warn_limited!(code = %failure.code, "serving an ECS credential error");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &failure.code,
                    &format!("CredentialsV2Request: {}", failure.message),
                )
            }
        }
    }

    fn metadata(&self, rest: &str) -> Reply {
        let (id, task) = match rest.split_once('/') {
            None => (rest, false),
            Some((id, "task")) => (id, true),
            Some(_) => return super::go_not_found(),
        };
        match self.known(id) {
            Some(known) if task => json_bytes(StatusCode::OK, known.task.task.clone()),
            Some(known) => json_bytes(StatusCode::OK, known.task.container.clone()),
            // The agent's words, a JSON string; the id is the client's, escaped by serde.
            None if task => json_reply(
                StatusCode::NOT_FOUND,
                &format!(
                    "V4 task metadata handler: unable to get task arn from request: unable to \
                     get task Arn from v3 endpoint ID: {id}"
                ),
            ),
            None => json_reply(
                StatusCode::NOT_FOUND,
                &format!(
                    "V4 container metadata handler: unable to get container ID from request: \
                     unable to get docker ID from v3 endpoint ID: {id}"
                ),
            ),
        }
    }
}

impl MetadataService for Ecs {
    fn name(&self) -> &'static str {
        "ecs"
    }

    /// Every request to 169.254.170.2, and nothing else.
    fn claims(&self, request: &Parts) -> bool {
        request
            .extensions
            .get::<Destination>()
            .is_some_and(|destination| destination.0.ip() == std::net::IpAddr::V4(ADDRESS))
    }

    /// Only the instance role's credentials, and only with `--caller-role` rules.
    fn depends_on_caller(&self, request: &Parts) -> bool {
        self.instance_role.has_caller_roles()
            && request
                .uri
                .path()
                .strip_prefix(CREDENTIALS_PREFIX)
                .is_some_and(|id| id == INSTANCE_ROLE_ID)
    }

    fn answer<'a>(&'a self, context: Context<'a>) -> Answering<'a> {
        Box::pin(async move {
            let request = &context.request;
            if request.method != Method::GET && request.method != Method::HEAD {
                return error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "imds-tun answers the ECS endpoint to GET and HEAD only",
                )
                .header(ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            let path = request.uri.path();
            if let Some(id) = path.strip_prefix(CREDENTIALS_PREFIX) {
                return self.credentials(id, context.now, context.caller).await;
            }
            match path.strip_prefix(METADATA_PREFIX) {
                Some(rest) => self.metadata(rest),
                None => super::go_not_found(),
            }
        })
    }
}

/// The credentials body, in the agent's field order (its `IAMRoleCredentials`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialsBody<'a> {
    role_arn: &'a str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: String,
}

/// The agent's error body (its `ErrorMessage`: the status is repeated in `HTTPErrorCode`).
#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(rename = "HTTPErrorCode")]
    http_error_code: u16,
}

/// `status` with the agent's error JSON.
fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    json_reply(
        status,
        &ErrorBody {
            code,
            message,
            http_error_code: status.as_u16(),
        },
    )
}

/// `value` as compact JSON, as Go's `json.Marshal` writes it.
fn json_reply(status: StatusCode, value: &impl Serialize) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => json_bytes(status, Bytes::from(body)),
        // Plain structs and strings always serialize; this is the agent's own fallback.
        Err(_) => json_bytes(StatusCode::INTERNAL_SERVER_ERROR, Bytes::from_static(b"{}")),
    }
}

fn json_bytes(status: StatusCode, body: Bytes) -> Reply {
    Reply::new(status).body(JSON, body)
}

/// What an ECS credentials answer handed out, for the audit line.
#[derive(Debug)]
struct EcsCredentialsRead {
    id: String,
    role: String,
}

impl std::fmt::Display for EcsCredentialsRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ECS credentials {} (role {})", self.id, self.role)
    }
}

#[cfg(test)]
mod tests;
