//! What a metadata service answers: one [`Reply`] for every service, local or upstream, and how
//! `http` writes it.
//!
//! A reply is a status, its headers in the order they are written, a body (whole, or an
//! upstream's as it arrives) and, when it handed out a credential, a [`CredentialsRead`] for the
//! audit line. The services build it and `http` writes it as it is. A HEAD is answered like a
//! GET: hyper then writes the same status and headers, `Content-Length` included, and no body.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use super::ResponseBody;

/// A reply's body.
#[derive(Debug)]
pub enum Body {
    /// In memory, whole: every local answer.
    Whole(Bytes),
    /// Arriving from an upstream, passed on as it comes, framed as the upstream framed it.
    Streamed(Incoming),
}

/// Marks a reply that handed out a credential (an EC2 role's keys, a GCE or Azure token): what
/// was read, in the words of the service that handed it out, for the one log line naming the
/// caller (`{caller} read {what}`), and the role's name where there is one (a field of that
/// line). Never sent.
#[derive(Clone)]
pub struct CredentialsRead {
    what: Arc<dyn fmt::Display + Send + Sync>,
    role: Option<Arc<str>>,
}

impl CredentialsRead {
    /// `what` is printed after "read" in the audit line: say what it was ("role credentials
    /// web"), never the credential itself.
    pub fn new(what: impl fmt::Display + Send + Sync + 'static) -> CredentialsRead {
        CredentialsRead {
            what: Arc::new(what),
            role: None,
        }
    }

    /// The read was of the credentials of the role named `role`.
    pub fn of_role(mut self, role: &str) -> CredentialsRead {
        self.role = Some(role.into());
        self
    }

    /// The role's name, if the credential was a role's.
    pub fn role(&self) -> Option<&str> {
        self.role.as_deref()
    }
}

impl fmt::Display for CredentialsRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.what.fmt(f)
    }
}

impl fmt::Debug for CredentialsRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialsRead({})", self.what)
    }
}

/// One answer, before HEAD handling.
#[derive(Debug)]
pub struct Reply {
    /// The status line's code.
    pub status: StatusCode,
    /// Written in this order (each cloud has its own: EC2 writes `Server` first, Azure last).
    pub headers: HeaderMap,
    /// What follows the headers (hyper sends none for a HEAD).
    pub body: Body,
    /// Set when this reply hands out a credential.
    pub credentials_read: Option<CredentialsRead>,
    /// Set when the request asked without the session token its protocol offers (an EC2
    /// request with no IMDSv2 token: IMDSv1), whether it was served or refused for it: what the
    /// callers report and the metrics count. Never sent.
    pub tokenless: bool,
}

impl Reply {
    /// `status`, no headers, an empty body (hyper adds `content-length: 0`).
    pub fn new(status: StatusCode) -> Reply {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: Body::Whole(Bytes::new()),
            credentials_read: None,
            tokenless: false,
        }
    }

    /// An upstream's answer, passed on with its own headers.
    pub fn streamed(status: StatusCode, headers: HeaderMap, body: Incoming) -> Reply {
        Reply {
            status,
            headers,
            body: Body::Streamed(body),
            credentials_read: None,
            tokenless: false,
        }
    }

    /// Adds a header after those already there (or replaces one of the same name in place).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Reply {
        self.headers.insert(name, value);
        self
    }

    /// imds-tun's own words (the listener's 401, an upstream's 502): plain UTF-8 text, its
    /// `Content-Length` left to hyper, which writes it after any header it adds itself
    /// (`connection: close`), as imds-tun always has.
    pub fn message(status: StatusCode, text: impl Into<Bytes>) -> Reply {
        let mut reply = Reply::new(status).header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        reply.body = Body::Whole(text.into());
        reply
    }

    /// A whole body of `content_type`: its `Content-Type` and `Content-Length` go after the
    /// headers already there, the ones added next after them.
    pub fn body(mut self, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
        let body = body.into();
        self.headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        self.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        self.body = Body::Whole(body);
        self
    }

    /// Marks this reply as handing out a credential (see [`CredentialsRead`]).
    pub fn credentials_read(mut self, what: CredentialsRead) -> Reply {
        self.credentials_read = Some(what);
        self
    }

    /// The `Content-Type`, if it is text.
    pub fn content_type(&self) -> Option<&str> {
        self.headers.get(header::CONTENT_TYPE)?.to_str().ok()
    }

    /// The body, if it is whole.
    pub fn bytes(&self) -> Option<&Bytes> {
        match &self.body {
            Body::Whole(bytes) => Some(bytes),
            Body::Streamed(_) => None,
        }
    }

    /// The response to write, and the credential it hands out.
    pub fn into_response(self) -> (Response<ResponseBody>, Option<CredentialsRead>) {
        let body = match self.body {
            Body::Whole(bytes) => Either::Left(Full::new(bytes)),
            Body::Streamed(incoming) => Either::Right(incoming),
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        (response, self.credentials_read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_written_in_the_order_the_service_gave_them() {
        let reply = Reply::new(StatusCode::OK)
            .header(header::SERVER, HeaderValue::from_static("EC2ws"))
            .body("text/plain", "abc")
            .header(header::ETAG, HeaderValue::from_static("e"));
        let (response, _) = reply.into_response();
        let names: Vec<&str> = response.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["server", "content-type", "content-length", "etag"]);
        assert_eq!(response.headers()[header::CONTENT_LENGTH], "3");
    }

    #[test]
    fn a_message_leaves_its_length_to_hyper() {
        let reply = Reply::message(StatusCode::BAD_GATEWAY, "imds-tun: down\n");
        assert_eq!(reply.content_type(), Some("text/plain; charset=utf-8"));
        assert!(!reply.headers.contains_key(header::CONTENT_LENGTH));
        assert_eq!(
            reply.bytes().map(|b| &b[..]),
            Some(&b"imds-tun: down\n"[..])
        );
    }

    #[test]
    fn the_credential_marker_travels_beside_the_response_never_in_it() {
        let reply = Reply::new(StatusCode::OK)
            .body("text/plain", "{}")
            .credentials_read(CredentialsRead::new("role credentials web"));
        let (response, read) = reply.into_response();
        assert_eq!(
            read.map(|read| read.to_string()).as_deref(),
            Some("role credentials web")
        );
        assert!(response.extensions().is_empty());
        assert_eq!(response.headers().len(), 2);
    }
}
