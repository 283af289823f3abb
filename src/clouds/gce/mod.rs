//! The GCE metadata protocol (`/computeMetadata/v1/...`) as plain functions of a request.
//!
//! [`Gce::respond`] turns request headers into an [`Answer`]: a reply now, or a reply after a
//! wait (`?wait_for_change=true`). It does no I/O and never sleeps; the HTTP layer does the
//! waiting, so the rules stay testable without a clock. Rules, in order (Google's
//! "About VM metadata" and the metadata server's observed behaviour):
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
//! of its body, which `?wait_for_change=true&last_etag=E` compares against.

pub mod document;
pub mod identity_token;
pub mod instance;
pub mod tokens;

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

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

/// A reply before HEAD handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
    pub location: Option<String>,
}

impl Reply {
    fn text(body: impl Into<Bytes>) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: "application/text",
            body: body.into(),
            location: None,
        }
    }

    fn json(value: &Value) -> Reply {
        Reply {
            content_type: "application/json",
            ..Reply::text(value.to_string())
        }
    }

    fn error(status: StatusCode, message: &str) -> Reply {
        let reason = status.canonical_reason().unwrap_or("Error");
        Reply {
            status,
            content_type: "text/html; charset=UTF-8",
            body: Bytes::from(format!(
                "<!DOCTYPE html>\n<html lang=en>\n<title>Error {code} ({reason})</title>\n\
                 <p><b>{code}.</b> {message}\n",
                code = status.as_u16()
            )),
            location: None,
        }
    }

    /// The `ETag` of this reply: 16 hex digits of its body's hash, like the server's.
    pub fn etag(&self) -> String {
        Sha256::digest(&self.body)[..8]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// The HTTP response, with the headers every GCE reply carries.
    pub fn into_response(self, head: bool) -> Response<Bytes> {
        let etag = self.etag();
        let length = self.body.len();
        let mut response = Response::new(if head { Bytes::new() } else { self.body });
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(METADATA_FLAVOR, HeaderValue::from_static("Google"));
        headers.insert(
            header::SERVER,
            HeaderValue::from_static("Metadata Server for VM"),
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        if let Ok(etag) = HeaderValue::from_str(&etag) {
            headers.insert(header::ETAG, etag);
        }
        headers.insert("x-xss-protection", HeaderValue::from_static("0"));
        headers.insert(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        );
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        response
    }
}

/// What to send, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Now(Reply),
    /// `wait_for_change`: nothing changes while imds-tun runs, so the current value is sent when
    /// the wait is over.
    AfterWait {
        wait: Duration,
        reply: Reply,
    },
    /// An access token, from its source ([`Gce::token_reply`]).
    AccessToken,
    /// An identity token for this audience ([`Gce::token_reply`]).
    IdentityToken {
        audience: String,
        full: bool,
    },
}

/// What the GCE side is built from (see `config`).
#[derive(Debug, Clone)]
pub struct GceSettings {
    pub instance: GceInstance,
    pub access_tokens: AccessTokenSource,
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
}

impl Gce {
    pub fn new(settings: GceSettings, created: i64) -> Result<Gce, identity_token::KeyError> {
        Ok(Gce {
            document: document::build(&settings.instance),
            identity: IdentityTokens::new(settings.identity_tokens, IdentitySigner::load()?),
            access: AccessTokens::new(settings.access_tokens),
            instance: settings.instance,
            created,
        })
    }

    /// The reply to an [`Answer::AccessToken`] or [`Answer::IdentityToken`] at `now`; other
    /// answers are returned as they are (after no wait).
    pub async fn token_reply(&self, answer: Answer, now: i64) -> Reply {
        match answer {
            Answer::AccessToken => match self.access.token(now).await {
                Ok(token) => Reply::json(&serde_json::json!({
                    "access_token": token.value,
                    "expires_in": token.expires_in,
                    "token_type": "Bearer",
                })),
                Err(error) => token_failure(&error),
            },
            Answer::IdentityToken { audience, full } => match self
                .identity
                .token(&self.instance, &audience, full, now, self.created)
                .await
            {
                Ok(token) => Reply::text(token),
                Err(tokens::TokenError::Audience(why)) => Reply::error(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid audience: {why}."),
                ),
                Err(error) => token_failure(&error),
            },
            Answer::Now(reply) | Answer::AfterWait { reply, .. } => reply,
        }
    }

    pub fn instance(&self) -> &GceInstance {
        &self.instance
    }

    /// The answer to one request; token answers are completed by [`Gce::token_reply`].
    pub fn respond(&self, request: &http::request::Parts) -> Answer {
        let path = request.uri.path();
        let query = Query::parse(request.uri.query().unwrap_or(""));
        if path == identity_token::CERTS_PATH {
            return Answer::Now(Reply::json(&self.identity.signer().certs()));
        }
        if path == identity_token::JWKS_PATH {
            return Answer::Now(Reply::json(self.identity.signer().jwks()));
        }
        if request.headers.contains_key(FORWARDED_FOR) {
            return Answer::Now(Reply::error(
                StatusCode::FORBIDDEN,
                "Request forbidden: X-Forwarded-For header present.",
            ));
        }
        if path != "/" && !flavored(&request.headers) {
            return Answer::Now(Reply::error(
                StatusCode::FORBIDDEN,
                &format!(
                    "Your client does not have permission to get URL <code>{}</code> from this \
                     server. Missing Metadata-Flavor:Google header.",
                    escape_html(path)
                ),
            ));
        }
        if request.method != Method::GET && request.method != Method::HEAD {
            return Answer::Now(Reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed.",
            ));
        }
        let json_wanted = match query.get("alt") {
            None => None,
            Some("json") => Some(true),
            Some("text") => Some(false),
            Some(_) => {
                return Answer::Now(Reply::error(
                    StatusCode::BAD_REQUEST,
                    "Invalid alt parameter: use json or text.",
                ));
            }
        };
        let reply = match self.lookup(path, &query, json_wanted) {
            Ok(reply) => reply,
            Err(token) => return token,
        };
        match query.get("wait_for_change") {
            Some("true") if reply.status == StatusCode::OK => {
                let changed = query
                    .get("last_etag")
                    .is_some_and(|etag| etag != reply.etag() && etag != "0");
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

    /// The reply for a path of the document, or `Err` with the token answer to make.
    fn lookup(
        &self,
        path: &str,
        query: &Query,
        json_wanted: Option<bool>,
    ) -> Result<Reply, Answer> {
        match path {
            "/" => return Ok(Reply::text("computeMetadata/\n")),
            "/computeMetadata" => return Ok(redirect(path, query)),
            "/computeMetadata/" => return Ok(Reply::text("v1/\n")),
            _ => {}
        }
        let Some(rest) = path.strip_prefix("/computeMetadata/v1") else {
            return Ok(not_found());
        };
        let trailing_slash = rest.ends_with('/') || rest.is_empty();
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        if segments
            .iter()
            .any(|segment| *segment == "." || *segment == "..")
        {
            return Ok(not_found());
        }
        match self.token_endpoint(&segments, query) {
            Some(Ok(reply)) => return Ok(reply),
            Some(Err(answer)) => return Err(answer),
            None => {}
        }
        let recursive = query.get("recursive") == Some("true");
        Ok(match document::lookup(&self.document, &segments) {
            None => not_found(),
            Some(Entry::Directory(_)) if !trailing_slash && !recursive => redirect(path, query),
            Some(Entry::Directory(directory)) if recursive => {
                if json_wanted == Some(false) {
                    Reply::text(document::flattened_text(directory))
                } else {
                    Reply::json(directory)
                }
            }
            Some(Entry::Directory(directory)) => {
                if json_wanted == Some(true) {
                    Reply::json(&listing_json(directory))
                } else {
                    let in_attributes = segments.last() == Some(&"attributes");
                    Reply::text(document::listing(directory, in_attributes))
                }
            }
            Some(Entry::Leaf(leaf)) => {
                if json_wanted == Some(true) {
                    Reply::json(leaf)
                } else {
                    Reply::text(document::leaf_text(leaf))
                }
            }
        })
    }

    /// `instance/service-accounts/ACCOUNT/{token,identity}`: `None` for other paths, a reply
    /// for a refusal, or the token answer to make.
    fn token_endpoint(&self, segments: &[&str], query: &Query) -> Option<Result<Reply, Answer>> {
        let ["instance", "service-accounts", account, endpoint] = segments else {
            return None;
        };
        if *endpoint != "token" && *endpoint != "identity" {
            return None;
        }
        if *account != "default" && *account != self.instance.service_account_email {
            return Some(Ok(not_found()));
        }
        if *endpoint == "token" {
            return Some(Err(Answer::AccessToken));
        }
        Some(match query.get("audience").filter(|a| !a.is_empty()) {
            None => Ok(Reply::error(
                StatusCode::BAD_REQUEST,
                "non-empty audience parameter required",
            )),
            Some(audience) => Err(Answer::IdentityToken {
                audience: audience.to_owned(),
                full: query.get("format") == Some("full"),
            }),
        })
    }
}

/// 503 for a token source that failed; the cause goes to the log (never the token itself).
fn token_failure(error: &tokens::TokenError) -> Reply {
    crate::warn_limited!(error = %error, "GCE token unavailable");
    Reply::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "The token source failed; see imds-tun's log.",
    )
}

fn not_found() -> Reply {
    Reply::error(
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
    Reply {
        status: StatusCode::MOVED_PERMANENTLY,
        content_type: "text/html; charset=UTF-8",
        body: Bytes::from(format!("{location}\n")),
        location: Some(location),
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
