//! The Azure Instance Metadata Service (`/metadata/...`) as plain functions of a request.
//!
//! [`Azure`] is a [`MetadataService`] that claims `/metadata` and below ([`claims`]). Always
//! on: its paths collide with neither EC2's nor GCE's, and it costs one document. Its rules are
//! a plain function, [`Azure::respond`], from request headers to an [`Answer`]; the service's
//! answer asks the token source when one is wanted. Rules, in order (Azure's IMDS
//! documentation, "Errors and debugging"):
//!
//! 1. `X-Forwarded-For` → 400: a proxied request is not from the VM.
//! 2. `Metadata: true` is required (400 otherwise); azure-identity's availability probe relies
//!    on exactly this 400.
//! 3. GET only (405), but for the `POST` of `StartRequests` to `/metadata/scheduledevents`.
//! 4. A query parameter given twice → 400.
//! 5. `/metadata/versions` needs no `api-version`; every other path needs one this category
//!    supports (400 with `newest-versions` otherwise).
//! 6. `/metadata/instance[/PATH]`: the document or the part the route names (`compute/vmId`,
//!    `network/interface/0/...`); JSON by default, `format=text` for a leaf (a leaf asked for as
//!    JSON is a 400, as on Azure).
//! 7. `/metadata/identity/oauth2/token?resource=R[&client_id|object_id|msi_res_id]`: a managed
//!    identity token ([`tokens`]).
//! 8. `/metadata/scheduledevents`: the events `ctl azure-event` announced ([`events`]); a
//!    `POST` of `{"StartRequests": [{"EventId": ...}]}` (at most [`MAX_START_REQUEST_BYTES`])
//!    starts them now, as a VM approves them on Azure.
//!
//! Every primitive in a JSON answer is a string, as Azure's are (numbers in token answers
//! included).

pub mod events;
pub mod instance;
pub mod tokens;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::attribution::Caller;
use crate::clouds::token_cache;
use crate::http::{Answering, Context, CredentialsRead, MetadataService, Reply};
use crate::query::Query;
pub use instance::AzureInstance;
use tokens::{ManagedIdentity, TokenError, TokenSource};

/// The path prefix of every Azure request.
pub const PREFIX: &str = "/metadata/";

/// The API versions `/metadata/versions` lists, oldest first.
pub const API_VERSIONS: &[&str] = &[
    "2017-03-01",
    "2017-04-02",
    "2017-08-01",
    "2017-10-01",
    "2017-12-01",
    "2018-02-01",
    "2018-04-02",
    "2018-10-01",
    "2019-02-01",
    "2019-03-11",
    "2019-04-30",
    "2019-06-01",
    "2019-06-04",
    "2019-08-01",
    "2019-08-15",
    "2019-11-01",
    "2020-06-01",
    "2020-07-15",
    "2020-09-01",
    "2020-10-01",
    "2020-12-01",
    "2021-01-01",
    "2021-02-01",
    "2021-03-01",
    "2021-05-01",
    "2021-10-01",
    "2021-11-01",
    "2021-11-15",
    "2021-12-13",
    "2023-07-01",
    "2023-11-15",
    "2024-03-15",
];

/// The versions of the scheduled-events category.
pub const SCHEDULED_EVENTS_VERSIONS: &[&str] = &[
    "2017-11-01",
    "2019-01-01",
    "2019-04-01",
    "2019-08-01",
    "2020-07-01",
];

/// Where scheduled events are read, and started with a `POST`.
const SCHEDULED_EVENTS_PATH: &str = "/metadata/scheduledevents";

/// The largest `StartRequests` body read: room for every event the board holds, many times
/// over.
pub const MAX_START_REQUEST_BYTES: usize = 8 * 1024;

/// The oldest version the managed-identity endpoint accepts.
const IDENTITY_OLDEST: &str = "2018-02-01";

const METADATA_HEADER: HeaderName = HeaderName::from_static("metadata");
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Whether a request is for this protocol.
pub fn claims(path: &str) -> bool {
    path.starts_with(PREFIX) || path == "/metadata"
}

/// `status` with a body of `content_type`: its type and length, then the `Server` header
/// every Azure reply ends with.
fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    Reply::new(status)
        .body(content_type, body)
        .header(header::SERVER, HeaderValue::from_static(SERVER))
}

/// The `Server` header every Azure reply carries.
const SERVER: &str = "IMDS/150.870.65.1854";

fn json_reply(status: StatusCode, value: &Value) -> Reply {
    reply(status, "application/json; charset=utf-8", value.to_string())
}

fn text(text: String) -> Reply {
    reply(StatusCode::OK, "text/plain; charset=utf-8", text)
}

fn error(status: StatusCode, message: &str) -> Reply {
    json_reply(status, &json!({ "error": message }))
}

/// A fault's answer (`ctl fault --status`, `--throttle`) in IMDS's error shape: 429 says "Too
/// many requests", as IMDS documents its throttling (5 requests per second per VM).
pub fn fault_page(status: StatusCode) -> Reply {
    let message = match status {
        StatusCode::TOO_MANY_REQUESTS => "Too many requests",
        other => other.canonical_reason().unwrap_or("Error"),
    };
    error(status, message)
}

/// The identity endpoint's OAuth-style error.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Reply {
    json_reply(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

/// What a token answer handed out, for the audit line.
#[derive(Debug)]
struct TokenRead {
    resource: String,
}

impl std::fmt::Display for TokenRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "an Azure managed identity token for {}",
            crate::log_limit::bounded(self.resource.as_bytes())
        )
    }
}

/// What to send: now, or after asking the token source.
#[derive(Debug)]
pub enum Answer {
    /// This reply, at once.
    Now(Reply),
    /// A managed-identity token, from the token source.
    Token {
        /// The `resource` query parameter: the token's audience.
        resource: String,
    },
    /// The scheduled events at the time of the request, in this `api-version`'s fields.
    ScheduledEvents {
        /// The request's `api-version`, one the category supports.
        api_version: String,
    },
    /// A `POST` of `StartRequests`: the body names the events to start.
    StartEvents,
}

/// The metadata service of one Azure VM.
#[derive(Debug)]
pub struct Azure {
    instance: AzureInstance,
    document: Value,
    identity: ManagedIdentity,
    events: Arc<events::Board>,
}

impl Azure {
    /// The metadata service of `instance`, its tokens from `tokens`.
    pub fn new(instance: AzureInstance, tokens: TokenSource) -> Azure {
        Azure {
            document: instance.document(),
            identity: ManagedIdentity::new(tokens),
            events: Arc::new(events::Board::new(&instance.vm_name)),
            instance,
        }
    }

    /// Serves `document` at `/metadata/instance` instead of the one built from the settings
    /// (`--replay`).
    pub fn with_document(mut self, document: Value) -> Azure {
        self.document = document;
        self
    }

    /// The scheduled events this VM is told about, for whoever changes them (`ctl`).
    pub fn events(&self) -> Arc<events::Board> {
        self.events.clone()
    }

    /// The answer to a `POST` of `StartRequests` at `now`, its body read within
    /// [`MAX_START_REQUEST_BYTES`] (413 beyond).
    async fn start_events(
        &self,
        body: Option<hyper::body::Incoming>,
        now: time::OffsetDateTime,
    ) -> Reply {
        use http_body_util::BodyExt as _;
        let Some(body) = body else {
            return self.start_requested(b"", now);
        };
        match http_body_util::Limited::new(body, MAX_START_REQUEST_BYTES)
            .collect()
            .await
        {
            Ok(collected) => self.start_requested(&collected.to_bytes(), now),
            Err(refused) if refused.is::<http_body_util::LengthLimitError>() => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("Bad request. The body is longer than {MAX_START_REQUEST_BYTES} bytes"),
            ),
            Err(_) => error(StatusCode::BAD_REQUEST, "Bad request. Malformed body"),
        }
    }

    /// What a `StartRequests` body does at `now`: 200 with no body once the named events
    /// started (an event already started stays so); 400 for a body that is not one, or that
    /// names an event the VM was not told about (nothing starts then).
    pub fn start_requested(&self, body: &[u8], now: time::OffsetDateTime) -> Reply {
        #[derive(serde::Deserialize)]
        struct StartRequests {
            #[serde(rename = "StartRequests")]
            start_requests: Vec<StartRequest>,
        }
        #[derive(serde::Deserialize)]
        struct StartRequest {
            #[serde(rename = "EventId")]
            event_id: String,
        }
        let Ok(requests) = serde_json::from_slice::<StartRequests>(body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "Bad request. The body must be {\"StartRequests\": [{\"EventId\": \"...\"}]}",
            );
        };
        let ids: Vec<&str> = requests
            .start_requests
            .iter()
            .map(|request| request.event_id.as_str())
            .collect();
        match self.events.update(|events| events.start(&ids, now)) {
            Ok(()) => {
                Reply::new(StatusCode::OK).header(header::SERVER, HeaderValue::from_static(SERVER))
            }
            Err(refused) => error(StatusCode::BAD_REQUEST, &format!("Bad request. {refused}")),
        }
    }

    /// The VM this service describes.
    pub fn instance(&self) -> &AzureInstance {
        &self.instance
    }

    /// What to answer one request with; the service's answer asks the token source.
    pub fn respond(&self, request: &http::request::Parts) -> Answer {
        if request.headers.contains_key(FORWARDED_FOR) {
            return Answer::Now(error(
                StatusCode::BAD_REQUEST,
                "Bad request. Requests with the X-Forwarded-For header are not allowed",
            ));
        }
        let flagged = request
            .headers
            .get(METADATA_HEADER)
            .is_some_and(|value| value.as_bytes() == b"true");
        if !flagged {
            return Answer::Now(error(
                StatusCode::BAD_REQUEST,
                "Bad request. Required metadata header not specified",
            ));
        }
        let path = request.uri.path().trim_end_matches('/');
        let starts_events = request.method == Method::POST && path == SCHEDULED_EVENTS_PATH;
        if request.method != Method::GET && !starts_events {
            return Answer::Now(error(
                StatusCode::METHOD_NOT_ALLOWED,
                "The requested method is not supported. Use GET.",
            ));
        }
        let query = Query::parse(request.uri.query().unwrap_or(""));
        if let Some(name) = query.duplicated() {
            return Answer::Now(error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "Bad request. Query parameter '{}' was specified more than once",
                    bounded(name)
                ),
            ));
        }
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            ["metadata", "versions"] => Answer::Now(json_reply(
                StatusCode::OK,
                &json!({ "apiVersions": API_VERSIONS }),
            )),
            ["metadata", "instance", route @ ..] => {
                if let Some(reply) = version_refused(&query, API_VERSIONS) {
                    return Answer::Now(reply);
                }
                Answer::Now(self.instance_reply(route, &query))
            }
            ["metadata", "identity", "oauth2", "token"] => {
                let identity_versions: Vec<&str> = API_VERSIONS
                    .iter()
                    .copied()
                    .filter(|version| *version >= IDENTITY_OLDEST)
                    .collect();
                if let Some(reply) = version_refused(&query, &identity_versions) {
                    return Answer::Now(reply);
                }
                self.token_request(&query)
            }
            ["metadata", "scheduledevents"] => {
                if let Some(reply) = version_refused(&query, SCHEDULED_EVENTS_VERSIONS) {
                    return Answer::Now(reply);
                }
                if starts_events {
                    return Answer::StartEvents;
                }
                Answer::ScheduledEvents {
                    api_version: query.get("api-version").unwrap_or_default().to_owned(),
                }
            }
            _ => Answer::Now(error(StatusCode::NOT_FOUND, "Not found")),
        }
    }

    /// The token reply for an [`Answer::Token`] at `now` (Unix seconds), marked as a
    /// credential read when one was handed out; other answers as they are.
    async fn token_reply(&self, answer: Answer, caller: Option<Caller>, now: i64) -> Reply {
        let resource = match answer {
            Answer::Token { resource } => resource,
            Answer::Now(reply) => return reply,
            // Answered by the service with the request's time and body, never here.
            Answer::ScheduledEvents { .. } | Answer::StartEvents => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "Internal error");
            }
        };
        match self
            .identity
            .token(&self.instance, &resource, caller, now)
            .await
        {
            Ok(token) => {
                if self.identity.is_fake() {
                    // Said when it matters, not at every start: most users never ask Azure.
                    crate::warn_limited!(
                        "Azure: served a FAKE managed identity token (unsigned, \"imds_tun\": \"fake\"); \
                         give --azure-token-command 'az account get-access-token --resource {{resource}}' \
                         for real ones"
                    );
                }
                json_reply(
                    StatusCode::OK,
                    &json!({
                        "access_token": token.value,
                        "client_id": self.instance.client_id,
                        "expires_in": (token.expires - now).to_string(),
                        "expires_on": token.expires.to_string(),
                        "ext_expires_in": (token.expires - now).to_string(),
                        "not_before": now.to_string(),
                        "resource": resource,
                        "token_type": "Bearer",
                    }),
                )
                .credentials_read(CredentialsRead::new(TokenRead { resource }))
            }
            Err(TokenError::Resource(why)) => oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_resource",
                &format!("The resource is not valid: {why}"),
            ),
            Err(TokenError::NotFetched(refused)) if refused.is_rate_limit() => {
                crate::warn_limited!(error = %refused, "Azure managed identity token refused");
                oauth_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    "Too many new tokens asked for; try again later",
                )
            }
            Err(error) => {
                crate::warn_limited!(error = %error, "Azure managed identity token unavailable");
                oauth_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "unknown",
                    "Failed to retrieve token from the Active directory; see imds-tun's log",
                )
            }
        }
    }

    fn token_request(&self, query: &Query) -> Answer {
        let Some(resource) = query.get("resource").filter(|r| !r.is_empty()) else {
            return Answer::Now(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Required query variable 'resource' is missing",
            ));
        };
        let selectors = [
            ("client_id", self.instance.client_id.clone()),
            ("object_id", self.instance.object_id.clone()),
            ("msi_res_id", self.instance.identity_resource_id()),
        ];
        for (name, ours) in selectors {
            if let Some(asked) = query.get(name)
                && !asked.eq_ignore_ascii_case(&ours)
            {
                return Answer::Now(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Identity not found",
                ));
            }
        }
        Answer::Token {
            resource: resource.to_owned(),
        }
    }

    fn instance_reply(&self, route: &[&str], query: &Query) -> Reply {
        let mut node = &self.document;
        for segment in route {
            let next = match node {
                Value::Object(map) => map.get(*segment),
                Value::Array(items) => segment
                    .parse::<usize>()
                    .ok()
                    .filter(|index| index.to_string() == *segment)
                    .and_then(|index| items.get(index)),
                _ => None,
            };
            let Some(next) = next else {
                return error(StatusCode::NOT_FOUND, "Not found");
            };
            node = next;
        }
        let leaf = !matches!(node, Value::Object(_) | Value::Array(_));
        match (query.get("format"), leaf) {
            (Some("text"), true) => text(node.as_str().unwrap_or_default().to_owned()),
            (Some("text"), false) => error(
                StatusCode::BAD_REQUEST,
                "Bad request. Format 'text' is supported for leaf nodes only",
            ),
            (None | Some("json"), false) => json_reply(StatusCode::OK, node),
            (None | Some("json"), true) => error(
                StatusCode::BAD_REQUEST,
                "Bad request. Leaf nodes must be requested with format=text",
            ),
            (Some(_), _) => error(
                StatusCode::BAD_REQUEST,
                "Bad request. Unsupported format: use json or text",
            ),
        }
    }
}

impl MetadataService for Azure {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn fault_page(&self, status: StatusCode) -> Option<Reply> {
        Some(fault_page(status))
    }

    fn claims(&self, request: &http::request::Parts) -> bool {
        claims(request.uri.path())
    }

    /// A token a command may make is charged to its caller (`token_cache`).
    fn depends_on_caller(&self, request: &http::request::Parts) -> bool {
        request.uri.path() == "/metadata/identity/oauth2/token" && self.identity.runs_a_command()
    }

    /// Only a `POST` of `StartRequests` has a body to read.
    fn takes_body(&self, request: &http::request::Parts) -> bool {
        request.method == Method::POST
            && request.uri.path().trim_end_matches('/') == SCHEDULED_EVENTS_PATH
    }

    fn answer<'a>(&'a self, context: Context<'a>) -> Answering<'a> {
        Box::pin(async move {
            let answer = match self.respond(&context.request) {
                Answer::ScheduledEvents { api_version } => {
                    let document = self.events.snapshot().document(context.now, &api_version);
                    return json_reply(StatusCode::OK, &document);
                }
                Answer::StartEvents => return self.start_events(context.body, context.now).await,
                answer => answer,
            };
            let caller = token_cache::charged_to(context.caller);
            self.token_reply(answer, caller, context.now.unix_timestamp())
                .await
        })
    }
}

/// A query value for an error message: short and printable.
fn bounded(text: &str) -> String {
    crate::log_limit::bounded(text.as_bytes()).to_string()
}

/// The 400 Azure sends unless `api-version` is present and one of `supported`.
fn version_refused(query: &Query, supported: &[&str]) -> Option<Reply> {
    let error = match query.get("api-version") {
        Some(version) if supported.contains(&version) => return None,
        None | Some("") => {
            "Bad request. api-version was not specified in the request. For more information refer to aka.ms/azureimds"
        }
        Some(_) => {
            "Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds"
        }
    };
    let newest: Vec<&str> = supported.iter().rev().take(3).copied().collect();
    Some(json_reply(
        StatusCode::BAD_REQUEST,
        &json!({ "error": error, "newest-versions": newest }),
    ))
}

#[cfg(test)]
mod tests;
