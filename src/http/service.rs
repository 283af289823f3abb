//! The seam between HTTP and what it serves: a [`MetadataService`] claims requests and answers
//! them, and [`Services`] is the ordered list a [`super::Server`] asks.
//!
//! hyper's pattern: the server defines the service it calls, and does not know what it serves.
//! `http` names no cloud. The clouds implement this trait in `crate::clouds` (which also says in
//! which order they are asked); the `--upstream` forwarder implements it in [`super::upstream`].
//! The first service that claims a request answers it, so a catch-all goes last.
//!
//! What a service does not do: see a request `http` refused (too long, misaddressed, without
//! the listener's token, met by a fault), or handle HEAD (answered like a GET; hyper then sends
//! the headers without the body). Both are `http`'s, the same for every service; a service only
//! lends a fault's answer its own page ([`MetadataService::fault_page`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::StatusCode;
use http::request::Parts;
use hyper::body::Incoming;
use time::OffsetDateTime;

use super::reply::Reply;
use crate::attribution::CallerIdentity;

/// The address and port the client connected to (169.254.169.254:80, a `--listen` address,
/// or another address the TUN serves), in every request's extensions when the transport knows
/// it: a service that answers on one address only claims by it
/// (`request.extensions.get::<Destination>()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination(pub std::net::SocketAddr);

/// An answer on its way.
pub type Answering<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// What a service is given to answer one request.
#[derive(Debug)]
pub struct Context<'a> {
    /// The request head.
    pub request: Parts,
    /// The request body, for a service that [takes it](MetadataService::takes_body); otherwise
    /// `http` has read and dropped it (a body too large is refused before any service runs).
    pub body: Option<Incoming>,
    /// The time of the request, read once by `http` (its clock can be set, for tests).
    pub now: OffsetDateTime,
    /// Who is calling, when the service said its answer [depends on
    /// it](MetadataService::depends_on_caller) and `http` can tell (a server with attribution).
    pub caller: Option<&'a CallerIdentity>,
}

/// One metadata service: which requests it answers, and the answer.
pub trait MetadataService: Send + Sync {
    /// This service's name where requests are counted (the metrics' `cloud` label, the callers
    /// report): `ec2`, `gce`, `azure`, `ecs`, `eks`, `upstream`. A fixed word, never a request's.
    fn name(&self) -> &'static str;

    /// Whether this service answers `request`: cheap, from the path and headers only.
    fn claims(&self, request: &Parts) -> bool;

    /// Whether the answer to `request` depends on who asks (a per-caller role): then `http`
    /// identifies the caller first, which costs a netlink question.
    fn depends_on_caller(&self, _request: &Parts) -> bool {
        false
    }

    /// Whether this service reads the body of `request` itself (a forwarder passes it on,
    /// Azure reads a `POST` of `StartRequests`); otherwise `http` reads and drops it before the
    /// answer.
    fn takes_body(&self, _request: &Parts) -> bool {
        false
    }

    /// The answer to a request this service claimed. It may wait (a GCE `wait_for_change`, a
    /// token command); a graceful shutdown ends the wait with the connection.
    fn answer<'a>(&'a self, context: Context<'a>) -> Answering<'a>;

    /// This service's own page for `status` when `http` answers a request it claimed without
    /// asking it (a fault's status, a throttle's 429), so the failure looks like this cloud's;
    /// `None`: the page of `http`'s own refusals ([`Services::refusal`]).
    fn fault_page(&self, _status: StatusCode) -> Option<Reply> {
        None
    }
}

/// A shared service is the service (a test or a caller that keeps a handle on one).
impl<T: MetadataService + ?Sized> MetadataService for Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn claims(&self, request: &Parts) -> bool {
        (**self).claims(request)
    }

    fn depends_on_caller(&self, request: &Parts) -> bool {
        (**self).depends_on_caller(request)
    }

    fn takes_body(&self, request: &Parts) -> bool {
        (**self).takes_body(request)
    }

    fn answer<'a>(&'a self, context: Context<'a>) -> Answering<'a> {
        (**self).answer(context)
    }

    fn fault_page(&self, status: StatusCode) -> Option<Reply> {
        (**self).fault_page(status)
    }
}

/// The services a server asks, in order, and the page of `http`'s own refusals.
#[derive(Clone)]
pub struct Services {
    list: Vec<Arc<dyn MetadataService>>,
    refusal: fn(StatusCode) -> Reply,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("services", &self.list.len())
            .finish_non_exhaustive()
    }
}

impl Services {
    /// No service yet; `refusal` writes the replies `http` gives of its own (400, 403, 404 for
    /// a request nothing claims, 414, a fault's status), so that they look like the service's
    /// own pages.
    pub fn new(refusal: fn(StatusCode) -> Reply) -> Services {
        Services {
            list: Vec::new(),
            refusal,
        }
    }

    /// Asks `service` after those already added.
    pub fn with(mut self, service: impl MetadataService + 'static) -> Services {
        self.list.push(Arc::new(service));
        self
    }

    /// The first service that claims `request`.
    pub fn route(&self, request: &Parts) -> Option<&dyn MetadataService> {
        self.list
            .iter()
            .find(|service| service.claims(request))
            .map(|service| service.as_ref())
    }

    /// `http`'s own reply with `status`.
    pub fn refusal(&self, status: StatusCode) -> Reply {
        (self.refusal)(status)
    }

    /// A fault's answer with `status` to `request`: on the page of the service that claims
    /// it, if it has one of its own ([`MetadataService::fault_page`]), else on `http`'s.
    pub fn fault_page(&self, request: &Parts, status: StatusCode) -> Reply {
        self.route(request)
            .and_then(|service| service.fault_page(status))
            .unwrap_or_else(|| self.refusal(status))
    }
}
