//! The GCE metadata protocol (`/computeMetadata/v1/...`) as plain functions of a request.
//!
//! [`Gce`] is a [`MetadataService`] that claims the GCE paths ([`claims`]). Its rules are a
//! plain function, [`Gce::respond`], from request headers to an [`Answer`]: a reply now, a reply
//! after a wait (`?wait_for_change=true`), or a token to ask its source for; the service's
//! answer then waits (in tokio's time, which a graceful shutdown cuts short with the connection)
//! or asks. Rules, in order (Google's "About VM metadata" and the metadata server's observed
//! behaviour):
//!
//! 1. The certificate paths of fake identity tokens ([`identity_token::CERTS_PATH`]) answer
//!    anyone, like Google's own certificate endpoints.
//! 2. `X-Forwarded-For` → 403: a proxied request is not from the VM.
//! 3. `Metadata-Flavor: Google` (or the legacy `X-Google-Metadata-Request: True`) is required
//!    everywhere but `/` → 403 with Google's message when missing or different.
//! 4. GET and HEAD only (405 otherwise).
//! 5. A directory named without its `/` redirects (301) to it, unless `recursive=true`.
//! 6. `alt=json|text` picks the format (400 for anything else); `recursive=true` returns a
//!    directory as JSON (or as `path value` lines with `alt=text`).
//! 7. `service-accounts/{default|EMAIL}/token` and `/identity?audience=` are answered from
//!    [`tokens`]; every other path from the [`document`].
//!
//! Every reply carries `Metadata-Flavor: Google`, `Server: Metadata Server for VM` and an `ETag`
//! of its body, which `?wait_for_change=true&last_etag=E` compares against. The values that can
//! change while imds-tun runs (`instance/preempted`, `instance/maintenance-event`: [`events`])
//! are read from their board at each answer, and a `wait_for_change` request wakes when the
//! board changes and its own value (so its `ETag`) is no longer the one it holds.

pub mod document;
pub mod events;
pub mod identity_token;
pub mod instance;
pub mod tokens;

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::attribution::Caller;
use crate::clouds::token_cache;
use crate::http::{Answering, Context, CredentialsRead, MetadataService, Reply};
use crate::query::Query;
use document::Entry;
pub use identity_token::IdentitySigner;
pub use instance::{GceInstance, HostFacts};
use tokens::{AccessTokenSource, AccessTokens, IdentityTokenSource, IdentityTokens};

/// The path prefix every GCE metadata request starts with.
pub const PREFIX: &str = "/computeMetadata/";

/// The longest a `wait_for_change` request is held, whatever `timeout_sec` asks: each one holds
/// a connection, and the connection limit is shared with every other caller.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

const METADATA_FLAVOR: HeaderName = HeaderName::from_static("metadata-flavor");
const LEGACY_REQUEST: HeaderName = HeaderName::from_static("x-google-metadata-request");
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Whether a request is for this protocol: its paths, or `/` asked with the GCE header.
pub fn claims(path: &str, headers: &http::HeaderMap) -> bool {
    path.starts_with(PREFIX)
        || path == "/computeMetadata"
        || path.starts_with("/imds-tun/gce/")
        || (path == "/" && headers.contains_key(METADATA_FLAVOR))
}

/// `status` with a body of `content_type`, and the headers every GCE reply carries, in the
/// server's order: `Metadata-Flavor`, `Server`, the type and length, the `ETag` of the body,
/// then `X-XSS-Protection` and `X-Frame-Options`.
fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let body = body.into();
    let etag = etag(&body);
    let reply = Reply::new(status)
        .header(METADATA_FLAVOR, HeaderValue::from_static("Google"))
        .header(
            header::SERVER,
            HeaderValue::from_static("Metadata Server for VM"),
        )
        .body(content_type, body);
    let reply = match HeaderValue::from_str(&etag) {
        Ok(etag) => reply.header(header::ETAG, etag),
        Err(_) => reply,
    };
    reply
        .header(
            HeaderName::from_static("x-xss-protection"),
            HeaderValue::from_static("0"),
        )
        .header(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        )
}

fn text(body: impl Into<Bytes>) -> Reply {
    reply(StatusCode::OK, "application/text", body)
}

fn json(value: &Value) -> Reply {
    reply(StatusCode::OK, "application/json", value.to_string())
}

fn error_reply(status: StatusCode, message: &str) -> Reply {
    let reason = status.canonical_reason().unwrap_or("Error");
    reply(
        status,
        "text/html; charset=UTF-8",
        format!(
            "<!DOCTYPE html>\n<html lang=en>\n<title>Error {code} ({reason})</title>\n\
             <p><b>{code}.</b> {message}\n",
            code = status.as_u16()
        ),
    )
}

/// The `ETag` of a body: 16 hex digits of its hash, like the server's.
fn etag(body: &[u8]) -> String {
    Sha256::digest(body)[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// What a token answer handed out, for the audit line.
#[derive(Debug, Clone, Copy)]
enum TokenRead {
    Access,
    Identity,
}

impl std::fmt::Display for TokenRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenRead::Access => "a GCE access token",
            TokenRead::Identity => "a GCE identity token",
        })
    }
}

/// What to send, and when.
#[derive(Debug)]
pub enum Answer {
    /// This reply, at once.
    Now(Reply),
    /// `wait_for_change`: held until the value changes (then the new value, with its new
    /// `ETag`) or the wait is over (then this value).
    AfterWait {
        /// How long to hold the request: `timeout_sec`, at most (and by default) [`MAX_WAIT`].
        wait: Duration,
        /// The value as it is now, sent if nothing changed when the wait is over.
        reply: Reply,
    },
    /// An access token, from its source.
    AccessToken,
    /// An identity token for this audience, from its source.
    IdentityToken {
        /// The `audience` query parameter: the token's `aud`.
        audience: String,
        /// `format=full`: the token also carries the `google.compute_engine` claims.
        full: bool,
    },
}

/// What the GCE side is built from (see `config`).
#[derive(Debug, Clone)]
pub struct GceSettings {
    /// The instance and project the document describes.
    pub instance: GceInstance,
    /// Where `service-accounts/*/token` answers come from (`--gcp-access-token-command`,
    /// `--gcp-access-token-file`, `GOOGLE_ACCESS_TOKEN`, else fake).
    pub access_tokens: AccessTokenSource,
    /// Where `service-accounts/*/identity` answers come from
    /// (`--gcp-identity-token-command`, else signed with the published key).
    pub identity_tokens: IdentityTokenSource,
}

/// The metadata server of one GCE instance.
#[derive(Debug)]
pub struct Gce {
    instance: GceInstance,
    document: Value,
    access: AccessTokens,
    identity: IdentityTokens,
    /// Unix seconds of the "instance creation" (this start).
    created: i64,
    /// Preemption and host maintenance, which `ctl` changes while the document stays.
    events: std::sync::Arc<events::Board>,
}

impl Gce {
    /// The metadata server for `settings`; `created` (Unix seconds, the start of this run) is
    /// the instance's creation time in identity tokens. Fails only if the committed signing key
    /// does not load.
    pub fn new(settings: GceSettings, created: i64) -> Result<Gce, identity_token::KeyError> {
        Ok(Gce {
            document: document::build(&settings.instance),
            identity: IdentityTokens::new(settings.identity_tokens, IdentitySigner::load()?),
            access: AccessTokens::new(settings.access_tokens),
            instance: settings.instance,
            created,
            events: std::sync::Arc::default(),
        })
    }

    /// Serves `document` instead of the one built from the settings (`--replay`); events are
    /// written into it as into a built one.
    pub fn with_document(mut self, document: Value) -> Gce {
        self.document = document;
        self
    }

    /// The preemption and host maintenance this instance is told about, for whoever changes
    /// them (`ctl`).
    pub fn events(&self) -> std::sync::Arc<events::Board> {
        self.events.clone()
    }

    /// The document as it stands now: the one built at start, with the current events written
    /// in (a copy only while an event stands).
    fn document(&self) -> Cow<'_, Value> {
        let events = self.events.snapshot();
        if events == events::GceEvents::default() {
            return Cow::Borrowed(&self.document);
        }
        let mut document = self.document.clone();
        events.apply_to(&mut document);
        Cow::Owned(document)
    }

    /// Holds a `wait_for_change` request until its value changes, answered then with the new
    /// value (and so a new `ETag`), or until `wait` is over, answered with `held`, the value
    /// it had. `changes` was subscribed before `held` was read, so no change is missed.
    async fn wait_for_change(
        &self,
        request: &http::request::Parts,
        mut changes: tokio::sync::watch::Receiver<events::GceEvents>,
        wait: Duration,
        held: Reply,
    ) -> Reply {
        let deadline = tokio::time::Instant::now() + wait;
        let held_etag = current_etag(&held).map(str::to_owned);
        loop {
            // Ended with the connection by a graceful shutdown's deadline, or when the client
            // leaves.
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // The wait is over (or the board went, which it does only with this service).
                Ok(Err(_)) | Err(_) => return held,
            }
            let now = match self.respond(request) {
                Answer::Now(reply) | Answer::AfterWait { reply, .. } => reply,
                // A token path is answered before any wait is decided.
                Answer::AccessToken | Answer::IdentityToken { .. } => return held,
            };
            // Another value changed (a maintenance event while this waits on `preempted`).
            if current_etag(&now) != held_etag.as_deref() {
                return now;
            }
        }
    }

    /// The reply to an [`Answer::AccessToken`] or [`Answer::IdentityToken`] at `now` (Unix
    /// seconds), marked as a credential read when one was handed out; other answers are
    /// returned as they are, without their wait.
    async fn token_reply(&self, answer: Answer, caller: Option<Caller>, now: i64) -> Reply {
        match answer {
            Answer::AccessToken => match self.access.token(caller, now).await {
                Ok(token) => json(&serde_json::json!({
                    "access_token": token.value,
                    "expires_in": token.expires_in,
                    "token_type": "Bearer",
                }))
                .credentials_read(CredentialsRead::new(TokenRead::Access)),
                Err(error) => token_failure(&error),
            },
            Answer::IdentityToken { audience, full } => match self
                .identity
                .token(&self.instance, &audience, full, caller, now, self.created)
                .await
            {
                Ok(token) => {
                    text(token).credentials_read(CredentialsRead::new(TokenRead::Identity))
                }
                Err(tokens::TokenError::Audience(why)) => error_reply(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid audience: {why}."),
                ),
                Err(error) => token_failure(&error),
            },
            Answer::Now(reply) | Answer::AfterWait { reply, .. } => reply,
        }
    }

    /// The instance this server describes.
    pub fn instance(&self) -> &GceInstance {
        &self.instance
    }

    /// What to answer one request with; the service's answer waits or asks a token source.
    pub fn respond(&self, request: &http::request::Parts) -> Answer {
        let path = request.uri.path();
        let query = Query::parse(request.uri.query().unwrap_or(""));
        if path == identity_token::CERTS_PATH {
            return Answer::Now(json(&self.identity.signer().certs()));
        }
        if path == identity_token::JWKS_PATH {
            return Answer::Now(json(self.identity.signer().jwks()));
        }
        if request.headers.contains_key(FORWARDED_FOR) {
            return Answer::Now(error_reply(
                StatusCode::FORBIDDEN,
                "Request forbidden: X-Forwarded-For header present.",
            ));
        }
        if path != "/" && !flavored(&request.headers) {
            return Answer::Now(error_reply(
                StatusCode::FORBIDDEN,
                &format!(
                    "Your client does not have permission to get URL <code>{}</code> from this \
                     server. Missing Metadata-Flavor:Google header.",
                    escape_html(path)
                ),
            ));
        }
        if request.method != Method::GET && request.method != Method::HEAD {
            return Answer::Now(error_reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed.",
            ));
        }
        let json_wanted = match query.get("alt") {
            None => None,
            Some("json") => Some(true),
            Some("text") => Some(false),
            Some(_) => {
                return Answer::Now(error_reply(
                    StatusCode::BAD_REQUEST,
                    "Invalid alt parameter: use json or text.",
                ));
            }
        };
        let reply = match self.lookup(path, &query, json_wanted) {
            Answer::Now(reply) => reply,
            token => return token,
        };
        match query.get("wait_for_change") {
            // `True` too: Python's `requests` writes a `True` it is given so, as Google's own
            // samples give it.
            Some(asked) if asked.eq_ignore_ascii_case("true") && reply.status == StatusCode::OK => {
                let changed = query
                    .get("last_etag")
                    .is_some_and(|asked| Some(asked) != current_etag(&reply) && asked != "0");
                if changed {
                    return Answer::Now(reply);
                }
                let wait = query
                    .get("timeout_sec")
                    .and_then(|seconds| seconds.parse::<u64>().ok())
                    .map_or(MAX_WAIT, |seconds| {
                        Duration::from_secs(seconds).min(MAX_WAIT)
                    });
                Answer::AfterWait { wait, reply }
            }
            _ => Answer::Now(reply),
        }
    }

    /// The reply for a path of the document, or the token answer to make.
    fn lookup(&self, path: &str, query: &Query, json_wanted: Option<bool>) -> Answer {
        match path {
            "/" => return Answer::Now(text("computeMetadata/\n")),
            "/computeMetadata" => return Answer::Now(redirect(path, query)),
            "/computeMetadata/" => return Answer::Now(text("v1/\n")),
            _ => {}
        }
        let Some(rest) = path.strip_prefix("/computeMetadata/v1") else {
            return Answer::Now(not_found());
        };
        let trailing_slash = rest.ends_with('/') || rest.is_empty();
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        if segments
            .iter()
            .any(|segment| *segment == "." || *segment == "..")
        {
            return Answer::Now(not_found());
        }
        if let Some(answer) = self.token_endpoint(&segments, query) {
            return answer;
        }
        let recursive = query.get("recursive") == Some("true");
        let current = self.document();
        Answer::Now(match document::lookup(&current, &segments) {
            None => not_found(),
            Some(Entry::Directory(_)) if !trailing_slash && !recursive => redirect(path, query),
            Some(Entry::Directory(directory)) if recursive => {
                if json_wanted == Some(false) {
                    text(document::flattened_text(directory))
                } else {
                    json(directory)
                }
            }
            Some(Entry::Directory(directory)) => {
                if json_wanted == Some(true) {
                    json(&listing_json(directory))
                } else {
                    let in_attributes = segments.last() == Some(&"attributes");
                    text(document::listing(directory, in_attributes))
                }
            }
            Some(Entry::Leaf(leaf)) => {
                if json_wanted == Some(true) {
                    json(leaf)
                } else {
                    text(document::leaf_text(leaf))
                }
            }
        })
    }

    /// `instance/service-accounts/ACCOUNT/{token,identity}`: `None` for other paths, a reply
    /// for a refusal, or the token answer to make.
    fn token_endpoint(&self, segments: &[&str], query: &Query) -> Option<Answer> {
        let ["instance", "service-accounts", account, endpoint] = segments else {
            return None;
        };
        if *endpoint != "token" && *endpoint != "identity" {
            return None;
        }
        if *account != "default" && *account != self.instance.service_account_email {
            return Some(Answer::Now(not_found()));
        }
        if *endpoint == "token" {
            return Some(Answer::AccessToken);
        }
        Some(match query.get("audience").filter(|a| !a.is_empty()) {
            None => Answer::Now(error_reply(
                StatusCode::BAD_REQUEST,
                "non-empty audience parameter required",
            )),
            Some(audience) => Answer::IdentityToken {
                audience: audience.to_owned(),
                full: query.get("format") == Some("full"),
            },
        })
    }
}

impl MetadataService for Gce {
    fn name(&self) -> &'static str {
        "gce"
    }

    fn fault_page(&self, status: StatusCode) -> Option<Reply> {
        Some(fault_page(status))
    }

    fn claims(&self, request: &http::request::Parts) -> bool {
        claims(request.uri.path(), &request.headers)
    }

    /// A token a command may make is charged to its caller (`token_cache`).
    fn depends_on_caller(&self, request: &http::request::Parts) -> bool {
        let path = request.uri.path();
        let Some(account) = path.strip_prefix("/computeMetadata/v1/instance/service-accounts/")
        else {
            return false;
        };
        (account.ends_with("/token") && self.access.runs_a_command())
            || (account.ends_with("/identity") && self.identity.runs_a_command())
    }

    fn answer<'a>(&'a self, context: Context<'a>) -> Answering<'a> {
        Box::pin(async move {
            // Subscribed before the value is read: a change in between wakes the wait at once.
            let changes = self.events.subscribe();
            let answer = match self.respond(&context.request) {
                Answer::AfterWait { wait, reply } => Answer::Now(
                    self.wait_for_change(&context.request, changes, wait, reply)
                        .await,
                ),
                answer => answer,
            };
            let caller = token_cache::charged_to(context.caller);
            self.token_reply(answer, caller, context.now.unix_timestamp())
                .await
        })
    }
}

/// The `ETag` a reply carries.
fn current_etag(reply: &Reply) -> Option<&str> {
    reply.headers.get(header::ETAG)?.to_str().ok()
}

/// 503 for a token source that failed, 429 for a caller over its budget of command runs; the
/// cause goes to the log (never the token itself).
fn token_failure(error: &tokens::TokenError) -> Reply {
    crate::warn_limited!(error = %error, "GCE token unavailable");
    if matches!(error, tokens::TokenError::NotFetched(refused) if refused.is_rate_limit()) {
        return error_reply(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many new tokens asked for; try again later.",
        );
    }
    error_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "The token source failed; see imds-tun's log.",
    )
}

/// A fault's answer (`ctl fault --status`, `--throttle`) as the metadata server writes it: a
/// 429 is a line of text, as the server answers a caller over its query rate; any other status
/// Google's error page. Both with the headers of every GCE reply.
pub fn fault_page(status: StatusCode) -> Reply {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return reply(status, "text/plain; charset=utf-8", "Too Many Requests\n");
    }
    error_reply(
        status,
        status
            .canonical_reason()
            .unwrap_or("The server could not answer."),
    )
}

fn not_found() -> Reply {
    error_reply(
        StatusCode::NOT_FOUND,
        "The requested URL was not found on this server.",
    )
}

/// 301 to the directory's path with its `/`, the query kept; the body is the new URL.
fn redirect(path: &str, query: &Query) -> Reply {
    let location = match query.raw() {
        "" => format!("{path}/"),
        raw => format!("{path}/?{raw}"),
    };
    let reply = reply(
        StatusCode::MOVED_PERMANENTLY,
        "text/html; charset=UTF-8",
        format!("{location}\n"),
    );
    match HeaderValue::from_str(&location) {
        Ok(location) => reply.header(header::LOCATION, location),
        Err(_) => reply,
    }
}

/// A directory listing as a JSON array of its entries (`alt=json` without `recursive`).
fn listing_json(directory: &Value) -> Value {
    Value::Array(
        document::listing(directory, false)
            .lines()
            .map(|line| Value::String(line.to_owned()))
            .collect(),
    )
}

fn flavored(headers: &http::HeaderMap) -> bool {
    headers
        .get(METADATA_FLAVOR)
        .is_some_and(|value| value.as_bytes() == b"Google")
        || headers
            .get(LEGACY_REQUEST)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"true"))
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests;
