//! Who hears of every answered request: an [`Observer`] is told what was asked and what was
//! answered ([`Served`]), once per request, after the answer exists and before it is written.
//!
//! This is how the callers report and the metrics count requests without `http` knowing
//! either, and without either knowing hyper. What an observer is told is words `http` and the
//! services chose (a service's [`name`](super::MetadataService::name), a status), plus the
//! request's method and path for an observer that keeps a bounded sample of them.
//!
//! What an observer must not do: wait. It runs on the request's path, so it counts (an atomic,
//! a short lock) and leaves anything slower to a task of its own.

use hyper::{Method, StatusCode};

/// One answered request.
#[derive(Debug)]
pub struct Served<'a> {
    /// The [`name`](super::MetadataService::name) of the service that claims the request
    /// (also when `http` refused it first: too long, misaddressed, without the listener's
    /// token, met by a fault), `None` when no service claims it.
    pub service: Option<&'static str>,
    /// The request's method.
    pub method: &'a Method,
    /// The request's path, as the client sent it (client-chosen: bound it before keeping it).
    pub path: &'a str,
    /// The status answered.
    pub status: StatusCode,
    /// The request asked without the session token its protocol offers (IMDSv1), served or
    /// refused for it ([`Reply::tokenless`](super::Reply::tokenless)).
    pub tokenless: bool,
    /// The answer handed out a credential.
    pub credentials_read: bool,
}

/// Is told of every answered request; see the module's rules.
pub trait Observer: Send + Sync {
    /// `served` was just answered.
    fn served(&self, served: &Served<'_>);
}
