//! HTTP/1.1 over any byte stream: one hyper connection per TCP connection, TUN or kernel.
//!
//! Both paths, a smoltcp [`crate::stack::TcpStream`] and a kernel `tokio::net::TcpStream`, end
//! up in [`Server::serve`], so they serve byte-identical responses. This layer reads the request
//! (bounded), asks [`Imds`] for the answer and writes it; it knows nothing of metadata. It also
//! tracks every connection so a shutdown can let in-flight requests finish.
//!
//! Accepting connections is not handled here: see [`crate::app`].
//!
//! Who answers is a [`Backend`]: the local [`Imds`] or an [`Upstream`] that forwards (proxy
//! mode). Every request passes the same checks first, whichever backend answers: its length,
//! the listener's [`Access`] and the addressing rules of [`host_guard`]. Which requests a listener admits is its [`Access`]: every one, or only those that
//! carry the shared `X-Imds-Tun-Token` (non-loopback `--listen` sockets).
//!
//! The replies to PUT requests (the IMDSv2 token) travel at most `--hop-limit` IP hops where the
//! connection supports it ([`reply_hops`]): a connection is any [`Connection`].

pub mod faults;
pub mod reply_hops;
pub mod shared_token;
pub mod upstream;

use shared_token::{LISTENER_TOKEN_HEADER, SharedToken};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::attribution::{Attribution, CallerIdentity};
use crate::clouds::azure::{self, Azure};
use crate::clouds::ec2::Imds;
use crate::clouds::gce::{self, Gce};
use crate::credentials::CredentialsRead;
pub use reply_hops::{Connection, ReplyHops};
pub use upstream::Upstream;

pub mod host_guard;

/// Largest request body read; metadata requests have none, a token PUT an empty one.
const MAX_BODY: usize = 64 * 1024;

/// A response body: a local answer in memory, or an upstream's, streamed as it arrives.
pub type ResponseBody = Either<Full<Bytes>, Incoming>;

/// Who answers the requests of a [`Server`].
#[derive(Debug, Clone)]
pub enum Backend {
    /// This process's metadata services: EC2 always, GCE when configured, Azure when given.
    Local {
        ec2: Arc<Imds>,
        gce: Option<Arc<Gce>>,
        azure: Option<Arc<Azure>>,
    },
    /// Another metadata service, reached over HTTP (`--upstream`).
    Upstream(Arc<Upstream>),
}

impl From<Arc<Imds>> for Backend {
    fn from(ec2: Arc<Imds>) -> Backend {
        Backend::Local {
            ec2,
            gce: None,
            azure: None,
        }
    }
}

impl Backend {
    /// The response to `request`, from an unknown caller.
    pub async fn answer(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        self.answer_for(request, None).await
    }

    /// The response to `request` from the connection's `caller`, who is identified only if the
    /// answer depends on it (a `--caller-role` rule).
    async fn answer_for(
        &self,
        request: Request<Incoming>,
        caller: Option<&ConnectionCaller>,
    ) -> Response<ResponseBody> {
        if let (Backend::Local { ec2, .. }, Some(caller)) = (self, caller)
            && ec2.depends_on_caller(request.uri().path())
        {
            let identity = caller.get().await;
            ec2.prepare_role(identity).await;
            return answer_as(ec2, request, Some(identity))
                .await
                .map(Either::Left);
        }
        match self {
            Backend::Local { gce: Some(gce), .. }
                if gce::claims(request.uri().path(), request.headers()) =>
            {
                answer_gce(gce, request).await.map(Either::Left)
            }
            Backend::Local {
                azure: Some(azure), ..
            } if azure::claims(request.uri().path()) => {
                answer_azure(azure, request).await.map(Either::Left)
            }
            Backend::Local { ec2, .. } => answer(ec2, request).await.map(Either::Left),
            Backend::Upstream(upstream) => upstream.forward(request).await,
        }
    }
}

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
    fn refusal(
        &self,
        request: &mut Request<Incoming>,
        peer: SocketAddr,
    ) -> Option<Response<ResponseBody>> {
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
        let mut response = Response::new(Either::Left(Full::new(Bytes::from_static(
            b"imds-tun: this listener requires the shared secret in the X-Imds-Tun-Token header \
              (the server's --listen-token-file; an imds-tun client sends it with --upstream-token-file)\n",
        ))));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Some(response)
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

/// Serves the metadata service on accepted connections.
pub struct Server {
    backend: Backend,
    limits: Limits,
    graceful: GracefulShutdown,
    /// Who reads credentials, for the log (`crate::attribution`); none in tests and fuzzing.
    attribution: Option<Arc<Attribution>>,
    /// Faults set with `imds-tun ctl fault`, met by every request before any backend.
    faults: Arc<faults::FaultBoard>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Server {
    pub fn new(backend: impl Into<Backend>) -> Self {
        Server::with_limits(backend, Limits::default())
    }

    pub fn with_limits(backend: impl Into<Backend>, limits: Limits) -> Self {
        Server {
            backend: backend.into(),
            limits,
            graceful: GracefulShutdown::new(),
            attribution: None,
            faults: Arc::new(faults::FaultBoard::default()),
        }
    }

    /// The faults this server's requests meet, for `control` to change.
    pub fn faults(&self) -> Arc<faults::FaultBoard> {
        self.faults.clone()
    }

    /// Names the caller in one log line per credentials read (and at debug level per request).
    pub fn with_attribution(mut self, attribution: Attribution) -> Self {
        self.attribution = Some(Arc::new(attribution));
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
        let backend = self.backend.clone();
        let limits = self.limits;
        let hops = io.reply_hops();
        // Asked at most once per connection, the first time a request needs it.
        let caller = self
            .attribution
            .clone()
            .map(|attribution| ConnectionCaller {
                cell: Arc::new(tokio::sync::OnceCell::new()),
                attribution,
                peer,
                local,
            });
        let faults = self.faults.clone();
        let service = service_fn(move |mut request: Request<Incoming>| {
            let backend = backend.clone();
            let caller = caller.clone();
            // Decided before the answer exists, so hyper writes no byte of a PUT's reply before
            // its connection is limited (see `reply_hops`).
            reply_hops::before_reply(
                hops.as_deref(),
                request.method(),
                limits.put_reply_hop_limit,
            );
            let refused = uri_too_long(&request, limits.max_path_length)
                .or_else(|| access.refusal(&mut request, peer))
                .or_else(|| misaddressed(&request));
            let decision = faults.decide(
                request.method(),
                request.uri().path(),
                tokio::time::Instant::now(),
                faults::percent_roll,
            );
            async move {
                if refused.is_none()
                    && let Some(fault) = apply_fault(&decision, &request).await
                {
                    return fault;
                }
                Ok::<_, FaultClose>(match refused {
                    None => {
                        let method = request.method().clone();
                        let path = request.uri().path().to_owned();
                        let response = backend.answer_for(request, caller.as_ref()).await;
                        if let Some(caller) = &caller {
                            attribute(caller, &method, &path, &response).await;
                        }
                        response
                    }
                    Some(refused) => refused,
                })
            }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_header_bytes)
            .keep_alive(true)
            // `printf 'GET ...' | nc -N` sends its request and FIN together; without this hyper
            // treats the EOF as an aborted request and answers nothing.
            .half_close(true)
            .serve_connection(TokioIo::new(io), service);
        let connection = self.graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }

    /// The interruptions board of the local EC2 service; `None` when forwarding upstream.
    pub fn interruptions(&self) -> Option<Arc<crate::clouds::ec2::interruptions::Board>> {
        match &self.backend {
            Backend::Local { ec2, .. } => Some(ec2.interruptions()),
            Backend::Upstream(_) => None,
        }
    }

    /// Stops keep-alive, lets in-flight requests finish for up to `grace`, then returns.
    /// Returns false if some connection was still busy at the deadline.
    pub async fn shutdown(self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.graceful.shutdown())
            .await
            .is_ok()
    }
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

/// Applies a fault's decision: `None` lets the request through (after any latency).
async fn apply_fault(
    decision: &faults::Decision,
    request: &Request<Incoming>,
) -> Option<Result<Response<ResponseBody>, FaultClose>> {
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
    let status = decision.status?;
    let head = request.method() == hyper::Method::HEAD;
    Some(Ok(crate::clouds::ec2::responses::Reply::error(status)
        .into_response(head)
        .map(|body| Either::Left(Full::new(body)))))
}

/// The caller of one connection, identified at most once, when a request first needs it.
#[derive(Clone)]
struct ConnectionCaller {
    cell: Arc<tokio::sync::OnceCell<CallerIdentity>>,
    attribution: Arc<Attribution>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
}

impl ConnectionCaller {
    async fn get(&self) -> &CallerIdentity {
        self.cell
            .get_or_init(|| async {
                let attribution = self.attribution.clone();
                let (peer, local) = (self.peer, self.local);
                // Bounded: waits for one of the few lookup slots rather than adding a thread.
                let _slot = self.attribution.lookups.acquire().await;
                // Netlink and a bounded /proc scan: blocking work, off the async threads.
                tokio::task::spawn_blocking(move || attribution.identify(peer, local))
                    .await
                    .unwrap_or_default()
            })
            .await
    }
}

/// The log line naming who read credentials (info, one per caller per 5 s), or who asked
/// (debug).
async fn attribute(
    caller: &ConnectionCaller,
    method: &hyper::Method,
    path: &str,
    response: &Response<ResponseBody>,
) {
    let read = response.extensions().get::<CredentialsRead>();
    if read.is_none() && !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let identity = caller.get().await;
    let attribution = &caller.attribution;
    tracing::debug!(
        caller = %identity,
        %method,
        path = %crate::log_limit::bounded(path.as_bytes()),
        status = response.status().as_u16(),
        "request"
    );
    if let Some(CredentialsRead(what)) = read {
        let caller = identity.to_string();
        if attribution.audit.admit(&caller, std::time::Instant::now()) {
            tracing::info!("{caller} read {what}");
        }
    }
}

/// The 400 or 403 for a request [`host_guard::check`] refuses, whichever backend answers.
fn misaddressed(request: &Request<Incoming>) -> Option<Response<ResponseBody>> {
    let refusal = host_guard::check(request).err()?;
    let is_head = request.method() == hyper::Method::HEAD;
    Some(
        crate::clouds::ec2::responses::Reply::error(refusal.status())
            .into_response(is_head)
            .map(|body| Either::Left(Full::new(body))),
    )
}

/// The 414 for a request whose path and query exceed `max`, before any other work.
fn uri_too_long(request: &Request<Incoming>, max: usize) -> Option<Response<ResponseBody>> {
    let length = request
        .uri()
        .path_and_query()
        .map_or(0, |path| path.as_str().len());
    (length > max).then(|| {
        tracing::debug!(length, max, "refused an over-long request path");
        let is_head = request.method() == hyper::Method::HEAD;
        crate::clouds::ec2::responses::Reply::error(StatusCode::URI_TOO_LONG)
            .into_response(is_head)
            .map(|body| Either::Left(Full::new(body)))
    })
}

/// Reads and drops the body: the services never need one, but reading it keeps the connection
/// reusable; a huge one is refused rather than buffered.
async fn drain(body: Incoming) -> Result<(), Response<Full<Bytes>>> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(_) => Ok(()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(plain_status(StatusCode::PAYLOAD_TOO_LARGE))
        }
        // A malformed body (a bad chunk size, a truncated chunk).
        Err(_) => Err(plain_status(StatusCode::BAD_REQUEST)),
    }
}

async fn answer(imds: &Imds, request: Request<Incoming>) -> Response<Full<Bytes>> {
    answer_as(imds, request, None).await
}

async fn answer_as(
    imds: &Imds,
    request: Request<Incoming>,
    caller: Option<&CallerIdentity>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    if let Err(refused) = drain(body).await {
        return refused;
    }
    let response = imds.respond_as(&parts, caller);
    response.map(Full::new)
}

/// A GCE request: answered now, after its `wait_for_change` wait, or from a token source.
async fn answer_gce(gce: &Gce, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    if let Err(refused) = drain(body).await {
        return refused;
    }
    let answer = gce.respond(&parts);
    if let gce::Answer::AfterWait { wait, .. } = &answer {
        // A graceful shutdown stops waiting at its deadline with the connection.
        tokio::time::sleep(*wait).await;
    }
    let read = match &answer {
        gce::Answer::AccessToken => Some("a GCE access token".to_owned()),
        gce::Answer::IdentityToken { .. } => Some("a GCE identity token".to_owned()),
        _ => None,
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let reply = gce.token_reply(answer, now).await;
    let served = reply.status == StatusCode::OK;
    let mut response = reply
        .into_response(parts.method == hyper::Method::HEAD)
        .map(Full::new);
    if let Some(what) = read.filter(|_| served) {
        response.extensions_mut().insert(CredentialsRead(what));
    }
    response
}

/// An Azure request: answered now, or from the managed-identity token source.
async fn answer_azure(azure: &Azure, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    if let Err(refused) = drain(body).await {
        return refused;
    }
    let answer = azure.respond(&parts);
    let read = match &answer {
        azure::Answer::Token { resource } => Some(format!(
            "an Azure managed identity token for {}",
            crate::log_limit::bounded(resource.as_bytes())
        )),
        azure::Answer::Now(_) => None,
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let reply = azure.token_reply(answer, now).await;
    let served = reply.status == StatusCode::OK;
    let mut response = reply
        .into_response(parts.method == hyper::Method::HEAD)
        .map(Full::new);
    if let Some(what) = read.filter(|_| served) {
        response.extensions_mut().insert(CredentialsRead(what));
    }
    response
}

fn plain_status(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
