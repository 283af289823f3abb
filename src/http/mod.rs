//! HTTP/1.1 over any byte stream: one hyper connection per TCP connection, TUN or kernel.
//!
//! Both paths, a smoltcp [`crate::stack::TcpStream`] and a kernel `tokio::net::TcpStream`, end
//! up in [`Server::serve`], so they serve byte-identical responses. This layer reads the request
//! (bounded), asks the first of its [`Services`] that claims it for a [`Reply`] and writes it. It
//! knows no metadata protocol and names no cloud ([`service`] is the seam). It also tracks every
//! connection so a shutdown can let in-flight requests finish.
//!
//! Accepting connections is not handled here: see `crate::runtime` (the accept loops of both
//! paths).
//!
//! Every request passes the same checks first, whoever answers it: its length, the listener's
//! [`Access`] and the addressing rules of [`host_guard`]. Which requests a listener admits is
//! its [`Access`]: every one, or only those that carry the shared `X-Imds-Tun-Token`
//! (non-loopback `--listen` sockets). Faults set with `imds-tun ctl fault` ([`faults`]) come
//! next. The services answer the rest: the clouds, or an [`Upstream`] that forwards (proxy mode).
//!
//! The replies to PUT requests (the IMDSv2 token) travel at most `--hop-limit` IP hops where the
//! connection supports it ([`reply_hops`]): a connection is any [`Connection`]. A client that
//! leaves while its answer is pending (a `wait_for_change`, a fault, a token command) ends that
//! answer; a half-close is told from a departure as well as TCP allows (`answering.rs`). A
//! connection limit can take a connection back whatever it is doing ([`Server::serve_until`]).

mod answering;
pub mod faults;
pub mod observe;
pub mod reply;
pub mod reply_hops;
pub mod service;
pub mod shared_token;
mod tally;
pub mod throttle;
pub mod upstream;

use shared_token::{LISTENER_TOKEN_HEADER, SharedToken};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

use crate::attribution::{Attribution, CallerIdentity, Cgroup};
use crate::callers::Callers;
pub use observe::{Observer, Served};
pub use reply::{Body, CredentialsRead, Reply};
pub use reply_hops::{Connection, ReplyHops};
pub use service::{Answering, Context, Destination, MetadataService, Services};
pub use upstream::Upstream;

pub mod host_guard;

/// Largest request body read; metadata requests have none, a token PUT an empty one.
const MAX_BODY: usize = 64 * 1024;

/// A response body: a local answer in memory, or an upstream's, streamed as it arrives.
pub type ResponseBody = Either<Full<Bytes>, Incoming>;

/// Which requests a listener admits.
#[derive(Debug, Clone, Default)]
pub enum Access {
    /// Every request (the TUN, loopback listeners, or the explicit insecure opt-out).
    #[default]
    Open,
    /// Only requests whose `X-Imds-Tun-Token` header is this secret; others get 401.
    Token(Arc<SharedToken>),
}

impl Access {
    /// The 401 for a request this listener does not admit, `None` to serve it. The token
    /// header is removed either way: nothing past this check needs it.
    fn refusal(&self, request: &mut Request<Incoming>, peer: SocketAddr) -> Option<Reply> {
        let Access::Token(token) = self else {
            return None;
        };
        let given = request.headers_mut().remove(LISTENER_TOKEN_HEADER);
        let admitted = given
            .as_ref()
            .is_some_and(|value| token.matches(value.as_bytes()));
        if admitted {
            return None;
        }
        let why = if given.is_some() { "a wrong" } else { "no" };
        crate::warn_limited!(
            %peer,
            method = %request.method(),
            path = %crate::log_limit::bounded(request.uri().path().as_bytes()),
            "refused a request with {why} X-Imds-Tun-Token (401)"
        );
        Some(Reply::message(
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(
                b"imds-tun: this listener requires the shared secret in the X-Imds-Tun-Token header \
                  (the server's --listen-token-file; an imds-tun client sends it with --upstream-token-file)\n",
            ),
        ))
    }
}

/// What one request may cost (see `docs/hardening.md`), and how far a token may travel.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time for a request's headers to arrive; hyper runs the same timer while a keep-alive
    /// connection waits for its next request, so this is also the idle timeout.
    pub header_timeout: Duration,
    /// Largest request head (hyper answers 431 beyond it); at least 8 KiB.
    pub max_header_bytes: usize,
    /// Longest path and query (414 beyond it).
    pub max_path_length: usize,
    /// The IP hop limit (TTL) of the replies to PUT requests, the IMDSv2 token's, on
    /// connections that support it ([`reply_hops`]); EC2's `HttpPutResponseHopLimit`.
    pub put_reply_hop_limit: u8,
}

impl Limits {
    /// Seconds a client has to send a request's headers; also how long a keep-alive connection
    /// may wait idle for its next request.
    pub const DEFAULT_HEADER_TIMEOUT_SECONDS: u64 = 10;
    /// Largest request head accepted (request line and headers); beyond it: 431.
    pub const DEFAULT_MAX_HEADER_BYTES: u64 = 16 * 1024;
    /// Longest request path accepted; beyond it: 414.
    pub const DEFAULT_MAX_PATH_LENGTH: u64 = 1024;
    /// Hops a token reply may travel: a container on a bridge (one forwarding hop) gets its
    /// token, anything farther does not (why 2 and not EC2's classic 1: docs/guides/containers.md).
    pub const DEFAULT_PUT_REPLY_HOP_LIMIT: u8 = 2;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(Limits::DEFAULT_HEADER_TIMEOUT_SECONDS),
            max_header_bytes: Limits::DEFAULT_MAX_HEADER_BYTES as usize,
            max_path_length: Limits::DEFAULT_MAX_PATH_LENGTH as usize,
            put_reply_hop_limit: Limits::DEFAULT_PUT_REPLY_HOP_LIMIT,
        }
    }
}

/// Serves the metadata services on accepted connections.
pub struct Server {
    services: Arc<Services>,
    limits: Limits,
    graceful: GracefulShutdown,
    /// Who reads credentials, for the log (`crate::attribution`); none in tests and fuzzing.
    attribution: Option<Arc<Attribution>>,
    /// Faults set with `imds-tun ctl fault`, met by every request before any service.
    faults: Arc<faults::FaultBoard>,
    /// The time a request is answered at (the wall clock, but for tests).
    clock: fn() -> OffsetDateTime,
    /// Told of every answered request ([`observe`]).
    observers: Arc<[Arc<dyn Observer>]>,
    /// Who called (`ctl callers`); counted only with an [`Attribution`] to say who.
    callers: Option<Arc<Callers>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Server {
    /// A server of `services` with the default [`Limits`].
    pub fn new(services: Services) -> Self {
        Server::with_limits(services, Limits::default())
    }

    /// A server of `services` under `limits`; nobody is named in the log until
    /// [`Server::with_attribution`], and no request meets a fault until one is added to
    /// [`Server::faults`].
    pub fn with_limits(services: Services, limits: Limits) -> Self {
        Server {
            services: Arc::new(services),
            limits,
            graceful: GracefulShutdown::new(),
            attribution: None,
            faults: Arc::new(faults::FaultBoard::default()),
            clock: OffsetDateTime::now_utc,
            observers: Arc::new([]),
            callers: None,
        }
    }

    /// The faults this server's requests meet, for `control` to change.
    pub fn faults(&self) -> Arc<faults::FaultBoard> {
        self.faults.clone()
    }

    /// Names the caller in one log line per credentials read (and at debug level per request).
    pub fn with_attribution(mut self, attribution: impl Into<Arc<Attribution>>) -> Self {
        self.attribution = Some(attribution.into());
        self
    }

    /// Counts every answered request in `callers` under its caller, once
    /// [`Server::with_attribution`] says who that is (see `tally.rs` for what it costs).
    pub fn with_callers(mut self, callers: Arc<Callers>) -> Self {
        self.callers = Some(callers);
        self
    }

    /// Tells `observer` of every answered request, after the observers already added.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        let mut observers = self.observers.to_vec();
        observers.push(observer);
        self.observers = observers.into();
        self
    }

    /// Answers every request at the time `clock` gives instead of the wall clock's.
    pub fn with_clock(mut self, clock: fn() -> OffsetDateTime) -> Self {
        self.clock = clock;
        self
    }

    /// Serves HTTP/1.1 on `io` in a task of its own until the client is done.
    pub fn serve<IO: Connection>(&self, io: IO, peer: SocketAddr) {
        self.serve_with(io, peer, Access::Open);
    }

    /// Like [`Server::serve`], admitting only the requests `access` allows.
    pub fn serve_with<IO: Connection>(&self, io: IO, peer: SocketAddr, access: Access) {
        self.serve_from(io, peer, None, access);
    }

    /// Like [`Server::serve_with`], knowing our own end of the connection (`local`), which the
    /// kernel needs to name a local caller's socket.
    pub fn serve_from<IO: Connection>(
        &self,
        io: IO,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        access: Access,
    ) {
        self.serve_until(io, peer, local, access, std::future::pending());
    }

    /// Like [`Server::serve_from`], ending the connection (whatever it is doing) when `until`
    /// completes: how a connection limit takes back a place.
    pub fn serve_until<IO: Connection>(
        &self,
        io: IO,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        access: Access,
        until: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let services = self.services.clone();
        let limits = self.limits;
        let clock = self.clock;
        let hops = io.reply_hops();
        // Asked at most once per connection, the first time a request needs it.
        let caller = self
            .attribution
            .clone()
            .map(|attribution| ConnectionCaller::new(attribution, peer, local));
        let callers = self.callers.clone();
        let faults = self.faults.clone();
        let observers = self.observers.clone();
        let answering = answering::Answering::default();
        let io = answering.watch(io);
        let service = service_fn(move |mut request: Request<Incoming>| {
            // From here until the reply is written, the client's end of stream is held: it may
            // be a half-close (see `answering`).
            let pending = answering.begin();
            if let Some(local) = local {
                request.extensions_mut().insert(Destination(local));
            }
            let services = services.clone();
            // Counted for the callers report once answered; its lookup starts now.
            let tally = tally::Tally::begin(callers.as_ref(), caller.as_ref());
            let caller = caller.clone();
            let observers = observers.clone();
            // Decided before the answer exists, so hyper writes no byte of a PUT's reply before
            // its connection is limited (see `reply_hops`).
            reply_hops::before_reply(
                hops.as_deref(),
                request.method(),
                limits.put_reply_hop_limit,
            );
            let refused = uri_too_long(&request, limits.max_path_length)
                .map(|status| services.refusal(status))
                .or_else(|| access.refusal(&mut request, peer))
                .or_else(|| misaddressed(&request, &services));
            let decision = faults.decide(
                request.method(),
                request.uri().path(),
                tokio::time::Instant::now(),
                faults::percent_roll,
                // Asked only by a throttle per caller: one kernel question per connection.
                || match &caller {
                    Some(caller) => caller.classified().key(),
                    None => crate::attribution::Caller::Address(peer.ip()),
                },
            );
            async move {
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                // Moved apart and back (no copy): `claims` reads a head.
                let (head, body) = request.into_parts();
                let service = services.route(&head).map(MetadataService::name);
                let fault_page = decision
                    .status
                    .map(|status| services.fault_page(&head, status));
                let request = Request::from_parts(head, body);
                let reply = match refused {
                    Some(refused) => refused,
                    None => match apply_fault(&decision, fault_page).await {
                        Some(Ok(fault)) => fault,
                        Some(Err(close)) => return Err(close),
                        None => {
                            let reply = answer(&services, request, caller.as_ref(), clock()).await;
                            if let Some(caller) = &caller {
                                attribute(caller, &method, &path, &reply);
                            }
                            reply
                        }
                    },
                };
                let served = Served {
                    service,
                    method: &method,
                    path: &path,
                    status: reply.status,
                    tokenless: reply.tokenless,
                    credentials_read: reply.credentials_read.is_some(),
                };
                for observer in observers.iter() {
                    observer.served(&served);
                }
                if let Some(tally) = tally {
                    tally.count(&path, &reply, clock()).await;
                }
                Ok::<_, FaultClose>(reply.into_response().0.map(|body| pending.hold(body)))
            }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_header_bytes)
            .keep_alive(true)
            // hyper reads while an answer is pending, and an end of stream there ends the
            // connection and drops the answer: a client that left does not keep a held answer.
            // A half-close (`printf 'GET ...' | nc -N`) is not a departure: `answering` holds
            // the end of stream until the transport says the client is gone, or the reply is
            // written.
            .half_close(false)
            .serve_connection(TokioIo::new(io), service);
        let connection = self.graceful.watch(connection);
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => if let Err(error) = ended {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                },
                () = until => tracing::debug!(%peer, "connection ended to make room"),
            }
        });
    }

    /// Stops keep-alive, lets in-flight requests finish for up to `grace`, then returns.
    /// Returns false if some connection was still busy at the deadline.
    pub async fn shutdown(self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.graceful.shutdown())
            .await
            .is_ok()
    }
}

/// The answer of the first service that claims `request` (a 404 if none does), at `now`.
async fn answer(
    services: &Services,
    request: Request<Incoming>,
    caller: Option<&ConnectionCaller>,
    now: OffsetDateTime,
) -> Reply {
    let (parts, body) = request.into_parts();
    let Some(service) = services.route(&parts) else {
        return services.refusal(StatusCode::NOT_FOUND);
    };
    let body = if service.takes_body(&parts) {
        Some(body)
    } else {
        if let Err(status) = drain(body).await {
            // Bare: hyper's `content-length: 0`, no page.
            return Reply::new(status);
        }
        None
    };
    // Identified only when the answer depends on it (a `--caller-role` rule).
    let caller = match caller {
        Some(caller) if service.depends_on_caller(&parts) => Some(caller.decided().await),
        _ => None,
    };
    service
        .answer(Context {
            request: parts,
            body,
            now,
            caller,
        })
        .await
}

/// A fault ended the connection without an answer (`--drop` after its hold, `--reset`).
#[derive(Debug)]
struct FaultClose;

impl std::fmt::Display for FaultClose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closed by a fault (imds-tun ctl fault)")
    }
}

impl std::error::Error for FaultClose {}

/// Applies a fault's decision: `None` lets the request through (after any latency); a
/// decided status is answered with `page`.
async fn apply_fault(
    decision: &faults::Decision,
    page: Option<Reply>,
) -> Option<Result<Reply, FaultClose>> {
    if decision.reset {
        return Some(Err(FaultClose));
    }
    if decision.drop {
        tokio::time::sleep(faults::DROP_HOLD).await;
        return Some(Err(FaultClose));
    }
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    page.map(Ok)
}

/// The caller of one connection, identified at most once per question, when a request first
/// needs it.
#[derive(Clone)]
struct ConnectionCaller {
    known: Arc<Known>,
    attribution: Arc<Attribution>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
}

/// What one connection's caller was found to be, question by question.
#[derive(Default)]
struct Known {
    /// Origin and owner: kernel questions only.
    classified: std::sync::OnceLock<CallerIdentity>,
    /// What an answer may depend on (that, and the cgroup where a rule needs it).
    decided: tokio::sync::OnceCell<CallerIdentity>,
    /// That and the process, for the audit line and the callers report; looked up after an
    /// answer, or for the report as the request arrives (`tally`), never before an answer
    /// waits for it.
    audited: tokio::sync::OnceCell<CallerIdentity>,
    /// Whether the callers report looks this connection's process up (decided once).
    report_lookup: std::sync::OnceLock<bool>,
}

impl ConnectionCaller {
    fn new(attribution: Arc<Attribution>, peer: SocketAddr, local: Option<SocketAddr>) -> Self {
        ConnectionCaller {
            known: Arc::default(),
            attribution,
            peer,
            local,
        }
    }

    /// Where the connection comes from and, for a local caller, its owner: kernel questions
    /// (microseconds, asked here, once per connection).
    fn classified(&self) -> &CallerIdentity {
        self.known
            .classified
            .get_or_init(|| self.attribution.classify(self.peer, self.local))
    }

    /// Who is asking, as far as an answer needs: [`ConnectionCaller::classified`], and where
    /// a `cgroup:` rule needs it a bounded walk in one of the lookup slots, this caller's turn
    /// among callers. Never the `/proc` scan for the process.
    async fn decided(&self) -> &CallerIdentity {
        self.known
            .decided
            .get_or_init(|| async {
                let attribution = self.attribution.clone();
                let identity = self.classified().clone();
                if !attribution.wants_cgroups() {
                    return identity;
                }
                let failed = CallerIdentity {
                    cgroup: Cgroup::Undecided("the cgroup lookup failed"),
                    ..identity.clone()
                };
                let Some(_slot) = attribution.lookups.acquire(identity.key()).await else {
                    return failed;
                };
                let mut identity = identity;
                tokio::task::spawn_blocking(move || {
                    attribution.find_cgroup(&mut identity);
                    identity
                })
                .await
                .unwrap_or(failed)
            })
            .await
    }

    /// Who is asking, with the process when it can be found: once per connection (a second
    /// asker waits for the first's lookup), in a lookup slot unless this caller already has a
    /// lookup running or waiting (then without it, and a later ask tries again).
    async fn audited(&self) -> CallerIdentity {
        if let Some(done) = self.known.audited.get() {
            return done.clone();
        }
        let decided = self.decided().await;
        let found = self
            .known
            .audited
            .get_or_try_init(|| async {
                let Some(_slot) = self
                    .attribution
                    .lookups
                    .acquire_unless_busy(decided.key())
                    .await
                else {
                    return Err(());
                };
                let attribution = self.attribution.clone();
                let mut identity = decided.clone();
                tokio::task::spawn_blocking(move || {
                    attribution.complete(&mut identity);
                    identity
                })
                .await
                .map_err(|_| ())
            })
            .await;
        match found {
            Ok(done) => done.clone(),
            Err(()) => decided.clone(),
        }
    }
}

/// The log line naming who read credentials (info, one per caller per 5 s), or who asked
/// (debug). Written from a task of its own once the answer exists, so the lookup behind it
/// (a `/proc` scan of up to [`crate::attribution::SCAN_BUDGET`]) delays no answer; it starts
/// while the answer is being sent, so a client that exits at once may be named by its uid
/// only.
fn attribute(caller: &ConnectionCaller, method: &hyper::Method, path: &str, reply: &Reply) {
    let read = reply.credentials_read.clone();
    if read.is_none() && !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let caller = caller.clone();
    let method = method.clone();
    let path = path.to_owned();
    let status = reply.status.as_u16();
    tokio::spawn(async move {
        let decided = caller.decided().await.to_string();
        tracing::debug!(
            caller = %decided,
            %method,
            path = %crate::log_limit::bounded(path.as_bytes()),
            status,
            "request"
        );
        if let Some(what) = read {
            let identity = caller.audited().await;
            let words = identity.to_string();
            if caller
                .attribution
                .audit
                .admit(&words, std::time::Instant::now())
            {
                let cgroup = match &identity.cgroup {
                    Cgroup::Found(path) => Some(crate::log_limit::bounded(path.as_bytes())),
                    _ => None,
                };
                // The same facts as fields, for `--log-format json` (`crate::logging`).
                tracing::info!(
                    target: crate::logging::CALLER_TARGET,
                    uid = identity.uid,
                    pid = identity.pid,
                    command = identity.command.as_deref(),
                    address = identity.address.map(tracing::field::display),
                    cgroup = cgroup.map(tracing::field::display),
                    role = what.role(),
                    "{words} read {what}"
                );
            }
        }
    });
}

/// The 400 or 403 for a request [`host_guard::check`] refuses, whoever would answer it.
fn misaddressed(request: &Request<Incoming>, services: &Services) -> Option<Reply> {
    let refusal = host_guard::check(request).err()?;
    Some(services.refusal(refusal.status()))
}

/// 414 for a request whose path and query exceed `max`, before any other work.
fn uri_too_long(request: &Request<Incoming>, max: usize) -> Option<StatusCode> {
    let length = request
        .uri()
        .path_and_query()
        .map_or(0, |path| path.as_str().len());
    (length > max).then(|| {
        tracing::debug!(length, max, "refused an over-long request path");
        StatusCode::URI_TOO_LONG
    })
}

/// Reads and drops the body: the local services never need one, but reading it keeps the
/// connection reusable; a huge one is refused rather than buffered.
async fn drain(body: Incoming) -> Result<(), StatusCode> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(_) => Ok(()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        }
        // A malformed body (a bad chunk size, a truncated chunk).
        Err(_) => Err(StatusCode::BAD_REQUEST),
    }
}

#[cfg(test)]
mod tests;
