//! Upstream proxy mode: answer requests by forwarding them to another metadata service.
//!
//! [`Upstream`] is a [`MetadataService`] like the clouds: registered alone it claims every
//! request (`--upstream`); beside local services it would answer whatever they leave to it.
//!
//! A Vagrant guest (or any machine) keeps its TUN on 169.254.169.254 but owns no credentials:
//! each request is passed, method, path, query, body and end-to-end headers, to an upstream
//! that speaks the metadata protocol, typically `imds-tun --no-tun --listen ...` on the host,
//! and the response streams back unbuffered. IMDSv2 tokens are issued and checked by the
//! upstream, so they pass through like any other header.
//!
//! What this does *not* do: add `X-Forwarded-For` (real IMDS refuses token requests carrying
//! one, and so does imds-tun), forward hop-by-hop headers, speak TLS, or retry a request the
//! upstream has seen. A dead or slow upstream yields a 502 or 504 with a one-line body within
//! the configured connect and response timeouts, and one log line. Bodies sent to clients
//! never name the upstream: any local process can read them.
//!
//! Loops: every forwarded request carries `Via: 1.1 imds-tun-<id>` (appended to the client's
//! `Via`), where the id is random per process. A request that arrives with our own id, or that
//! has already passed [`MAX_HOPS`] imds-tun forwarders, is answered at once with 508 instead of
//! being forwarded: without that, `--upstream` pointing back at ourselves (directly or through
//! other instances) turned one request into an endless chain of connections.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::MAX_BODY;
use super::reply::Reply;
use super::service::{Answering, Context, MetadataService};
use super::shared_token::{LISTENER_TOKEN_HEADER, SharedToken};
use crate::log_limit::bounded;

/// How long an idle pooled connection to the upstream is kept. Below the 10 s an imds-tun
/// upstream keeps an idle connection, so we close first and rarely pick a dying one.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How many imds-tun forwarders a request may already have passed before it is refused: far
/// more than any real chain (a guest forwarding to its host is one).
pub const MAX_HOPS: usize = 8;

/// What every `Via` entry of ours starts with.
const VIA_PREFIX: &str = "imds-tun-";

/// Headers that describe one hop, never forwarded (RFC 9110 section 7.6.1, plus the
/// widespread non-standard ones). `Proxy-*` and the headers named in `Connection` go too.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Where `--upstream` forwards to and how long it waits.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// `http://HOST:PORT`, scheme and authority only.
    pub url: http::Uri,
    /// Sent as [`LISTENER_TOKEN_HEADER`] on every forwarded request.
    pub token: Option<SharedToken>,
    /// How long a connection to the upstream may take before the request is answered 502
    /// (config `upstream_connect_timeout_ms`, default 1 s).
    pub connect_timeout: Duration,
    /// How long the upstream may take to answer, connecting included, before the request is
    /// answered 504 (config `upstream_response_timeout_ms`, default 5 s).
    pub response_timeout: Duration,
    /// The interface every connection is bound to (`SO_BINDTODEVICE` on Linux, `IP_BOUND_IF`
    /// on macOS), so the kernel routes it out of that interface whatever else claims the
    /// address: `--pass-through` reaches the real metadata service past imds-tun's own TUN.
    /// `None` for `--upstream`, which follows the routing table.
    pub interface: Option<String>,
    /// The flag that set this up, named in the log lines (`--upstream`, `--pass-through`).
    pub flag: &'static str,
}

/// What is sent upstream: the client's body, bounded, or none.
type ForwardedBody = Either<Limited<Incoming>, Empty<Bytes>>;

/// Forwards requests to one upstream metadata service over pooled keep-alive connections.
pub struct Upstream {
    client: Client<HttpConnector, ForwardedBody>,
    authority: http::uri::Authority,
    /// `http://HOST:PORT`, for the log (never for clients).
    display: String,
    token: Option<HeaderValue>,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// This process's name in `Via`: `imds-tun-<16 hex digits>`.
    hop_name: String,
    /// The flag that set this up, for the log.
    flag: &'static str,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.display)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// What a client's 502 or 504 calls the service it could not reach: the person reading
    /// it set up `--upstream`, or only `--pass-through` and no upstream at all.
    fn service(&self) -> &'static str {
        if self.flag == "--pass-through" {
            "real metadata service"
        } else {
            "upstream metadata service"
        }
    }

    /// A forwarder for `settings`; connects lazily, so a down upstream does not stop start-up.
    pub fn new(settings: &UpstreamSettings) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        if let Some(interface) = &settings.interface {
            bind_to_interface(&mut connector, interface);
        }
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        let authority = settings
            .url
            .authority()
            .cloned()
            .expect("config::proxy only accepts upstream URLs with a host");
        let token = settings.token.as_ref().map(|token| {
            let mut value = HeaderValue::from_str(token.expose())
                .expect("config::proxy only accepts printable ASCII tokens");
            value.set_sensitive(true);
            value
        });
        // Host and port only: user-info is refused by config::proxy, and must never reach a log.
        let mut display = match authority.port() {
            Some(port) => format!("http://{}:{port}", authority.host()),
            None => format!("http://{}", authority.host()),
        };
        if let Some(interface) = &settings.interface {
            display.push_str(&format!(" (via {interface})"));
        }
        Upstream {
            client,
            display,
            authority,
            token,
            connect_timeout: settings.connect_timeout,
            response_timeout: settings.response_timeout,
            hop_name: hop_name(),
            flag: settings.flag,
        }
    }

    /// A small request of imds-tun's own (no client's): `method` on `path` with `headers`,
    /// its status and at most `limit` bytes of its body, within the response timeout. For the
    /// token `--pass-through` holds with the real service.
    pub async fn fetch(
        &self,
        method: http::Method,
        path: &str,
        headers: HeaderMap,
        limit: usize,
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        use http_body_util::BodyExt;
        let uri = Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|error| error.to_string())?;
        let mut request = Request::new(Either::Right(Empty::new()));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        request.headers_mut().insert(
            header::VIA,
            with_our_via(&HeaderMap::new(), Version::HTTP_11, &self.hop_name),
        );
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| innermost_cause(&error))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|error| format!("reading its answer: {error}"))?
                .to_bytes();
            Ok((parts.status, parts.headers, body))
        };
        tokio::time::timeout(self.response_timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {:?}", self.response_timeout))?
    }

    /// The upstream's URL, `http://HOST:PORT`.
    pub fn url(&self) -> &str {
        &self.display
    }

    /// The name this process adds to `Via` when it forwards.
    pub fn hop_name(&self) -> &str {
        &self.hop_name
    }

    /// Forwards a request and returns the upstream's response with a streaming body, or a
    /// 502/504 explaining why there is none.
    pub async fn forward(&self, mut parts: Parts, body: Option<Incoming>) -> Reply {
        if let Err(hops) = check_hops(&parts.headers, &self.hop_name) {
            let why = match hops {
                Loop::CameBack => "it came back to this imds-tun".to_owned(),
                Loop::TooManyHops(hops) => format!("it already passed {hops} imds-tun forwarders"),
            };
            crate::warn_limited!(
                "forwarding loop: answered 508 ({why}); {} {} leads back here",
                self.flag,
                self.display
            );
            return gateway_error(
                StatusCode::LOOP_DETECTED,
                &format!(
                    "imds-tun: forwarding loop: this request has come back to an imds-tun it \
                     already passed (or through too many of them); check where {} points",
                    self.flag
                ),
            );
        }
        let via = with_our_via(&parts.headers, parts.version, &self.hop_name);
        let method = parts.method.clone();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        parts.uri = match Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path_and_query.as_str())
            .build()
        {
            Ok(uri) => uri,
            Err(_) => {
                return gateway_error(
                    StatusCode::BAD_REQUEST,
                    "imds-tun: cannot forward a request with this target",
                );
            }
        };
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.insert(header::VIA, via);
        // A client's own token header is never passed on: only ours, if configured.
        parts.headers.remove(LISTENER_TOKEN_HEADER);
        if let Some(token) = &self.token {
            parts.headers.insert(LISTENER_TOKEN_HEADER, token.clone());
        }
        let body = match body {
            Some(body) => Either::Left(Limited::new(body, MAX_BODY)),
            None => Either::Right(Empty::new()),
        };
        let request = Request::from_parts(parts, body);

        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                tracing::debug!(%method, path = path_and_query, status = parts.status.as_u16(), upstream = self.display, "forwarded");
                Reply::streamed(parts.status, parts.headers, body)
            }
            Ok(Err(error)) => {
                let cause = if timed_out(&error) {
                    format!("no connection within {:?}", self.connect_timeout)
                } else {
                    innermost_cause(&error)
                };
                if error.is_connect() {
                    crate::warn_limited!(
                        "upstream {} unreachable ({cause}); answered {method} {} with 502",
                        self.display,
                        bounded(path_and_query.as_bytes())
                    );
                    let body = if timed_out(&error) {
                        format!(
                            "imds-tun: the {} is unreachable (no connection within {:?}); see \
                             this imds-tun's log",
                            self.service(),
                            self.connect_timeout
                        )
                    } else {
                        format!(
                            "imds-tun: the {} is unreachable; see this imds-tun's log",
                            self.service()
                        )
                    };
                    gateway_error(StatusCode::BAD_GATEWAY, &body)
                } else {
                    crate::warn_limited!(
                        "upstream {} failed ({cause}); answered {method} {} with 502",
                        self.display,
                        bounded(path_and_query.as_bytes())
                    );
                    gateway_error(
                        StatusCode::BAD_GATEWAY,
                        &format!(
                            "imds-tun: the {} failed; see this imds-tun's log",
                            self.service()
                        ),
                    )
                }
            }
            Err(_) => {
                crate::warn_limited!(
                    "upstream {} did not answer within {:?}; answered {method} {} with 504",
                    self.display,
                    self.response_timeout,
                    bounded(path_and_query.as_bytes())
                );
                gateway_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!(
                        "imds-tun: the {} did not answer within {:?}",
                        self.service(),
                        self.response_timeout
                    ),
                )
            }
        }
    }
}

impl MetadataService for Upstream {
    fn name(&self) -> &'static str {
        "upstream"
    }

    /// Every request: what is registered before it answers first.
    fn claims(&self, _request: &Parts) -> bool {
        true
    }

    /// The body goes upstream as it arrives.
    fn takes_body(&self, _request: &Parts) -> bool {
        true
    }

    fn answer<'a>(&'a self, context: Context<'a>) -> Answering<'a> {
        Box::pin(self.forward(context.request, context.body))
    }
}

/// Why a request must not be forwarded again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loop {
    /// Our own name is in its `Via`: it went round.
    CameBack,
    /// It has passed this many imds-tun forwarders, [`MAX_HOPS`] or more.
    TooManyHops(usize),
}

/// Reads the `Via` entries (`protocol received-by [comment]`, comma-separated, over any number
/// of header lines) and refuses a request that passed us or too many imds-tun forwarders.
fn check_hops(headers: &HeaderMap, ours: &str) -> Result<(), Loop> {
    let mut hops = 0;
    for value in headers.get_all(header::VIA) {
        let text = String::from_utf8_lossy(value.as_bytes());
        for entry in text.split(',') {
            let Some(received_by) = entry.split_whitespace().nth(1) else {
                continue;
            };
            if received_by == ours {
                return Err(Loop::CameBack);
            }
            if received_by.starts_with(VIA_PREFIX) {
                hops += 1;
            }
        }
    }
    if hops >= MAX_HOPS {
        return Err(Loop::TooManyHops(hops));
    }
    Ok(())
}

/// The `Via` to forward: the client's entries, then ours for the protocol it spoke to us.
fn with_our_via(headers: &HeaderMap, version: Version, ours: &str) -> HeaderValue {
    let protocol = if version == Version::HTTP_10 {
        "1.0"
    } else {
        "1.1"
    };
    let mut via = Vec::new();
    for value in headers.get_all(header::VIA) {
        via.extend_from_slice(value.as_bytes());
        via.extend_from_slice(b", ");
    }
    via.extend_from_slice(format!("{protocol} {ours}").as_bytes());
    // The client's values were valid header values, so the joined one is too; should that
    // ever not hold, our own entry alone still stops the loop.
    HeaderValue::from_bytes(&via).unwrap_or_else(|_| {
        HeaderValue::from_str(&format!("{protocol} {ours}"))
            .unwrap_or(HeaderValue::from_static("1.1 imds-tun"))
    })
}

/// `imds-tun-` and 16 random hex digits: unguessable, so a client cannot make us refuse a
/// request by naming us, and distinct per process, so two instances never share a name.
fn hop_name() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Distinct per process is all the loop check needs.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        bytes[..4].copy_from_slice(&std::process::id().to_be_bytes());
        bytes[4..].copy_from_slice(&nanos.to_be_bytes());
    }
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{VIA_PREFIX}{hex}")
}

/// Binds every connection `connector` makes to `interface`: `SO_BINDTODEVICE` on Linux,
/// `IP_BOUND_IF` on macOS (both by hyper-util, which holds the socket code).
#[cfg(any(target_os = "linux", target_os = "macos"))]
fn bind_to_interface(connector: &mut HttpConnector, interface: &str) {
    connector.set_interface(interface);
}

/// Elsewhere there is no way to bind a connection to an interface; `--pass-through` is refused
/// before this is reached (`platform::real_metadata_route`).
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn bind_to_interface(_connector: &mut HttpConnector, _interface: &str) {}

/// Removes the hop-by-hop headers, the `Proxy-*` ones and those `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// True if an I/O error in the chain is a timeout (the connect timeout expired).
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        current = error.source();
    }
    false
}

/// The deepest error in the chain, which names the real cause ("Connection refused").
fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    let text = current.to_string();
    if text.is_empty() {
        error.to_string()
    } else {
        text
    }
}

fn gateway_error(status: StatusCode, message: &str) -> Reply {
    Reply::message(status, format!("{message}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Private"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::TRAILER, HeaderValue::from_static("x-sum"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        headers.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        headers.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        headers.insert("x-aws-ec2-metadata-token", HeaderValue::from_static("tok"));
        headers.insert(
            "x-aws-ec2-metadata-token-ttl-seconds",
            HeaderValue::from_static("21600"),
        );
        headers.insert(header::HOST, HeaderValue::from_static("169.254.169.254"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "content-length",
                "host",
                "x-aws-ec2-metadata-token",
                "x-aws-ec2-metadata-token-ttl-seconds"
            ]
        );
    }

    fn via(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::VIA, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn a_request_that_passed_us_or_too_many_forwarders_is_a_loop() {
        let ours = "imds-tun-00112233aabbccdd";
        assert_eq!(check_hops(&via(&[]), ours), Ok(()));
        assert_eq!(
            check_hops(&via(&["1.1 squid", "1.1 imds-tun-0000000000000001"]), ours),
            Ok(())
        );
        assert_eq!(
            check_hops(
                &via(&[
                    "1.0 proxy (comment)",
                    "1.1 imds-tun-00112233aabbccdd, 1.1 x"
                ]),
                ours
            ),
            Err(Loop::CameBack)
        );
        let seven: Vec<String> = (0..7).map(|i| format!("1.1 imds-tun-{i:016x}")).collect();
        let seven = seven.join(", ");
        assert_eq!(check_hops(&via(&[&seven]), ours), Ok(()));
        let eight = format!("{seven}, 1.1 imds-tun-ffffffffffffffff");
        assert_eq!(
            check_hops(&via(&[&eight]), ours),
            Err(Loop::TooManyHops(MAX_HOPS))
        );
    }

    #[test]
    fn our_via_entry_is_appended_to_the_clients() {
        let ours = "imds-tun-00112233aabbccdd";
        assert_eq!(
            with_our_via(&via(&[]), Version::HTTP_11, ours),
            "1.1 imds-tun-00112233aabbccdd"
        );
        assert_eq!(
            with_our_via(&via(&["1.0 a", "1.1 b"]), Version::HTTP_10, ours),
            "1.0 a, 1.1 b, 1.0 imds-tun-00112233aabbccdd"
        );
    }

    #[test]
    fn hop_names_are_random_per_process_instance() {
        let (one, two) = (hop_name(), hop_name());
        assert!(one.starts_with(VIA_PREFIX) && one.len() == VIA_PREFIX.len() + 16);
        assert_ne!(one, two);
    }

    #[test]
    fn gateway_errors_are_plain_text_lines() {
        let reply = gateway_error(StatusCode::BAD_GATEWAY, "imds-tun: down");
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
        assert_eq!(reply.content_type(), Some("text/plain; charset=utf-8"));
        assert_eq!(
            reply.bytes().map(|b| &b[..]),
            Some(&b"imds-tun: down\n"[..])
        );
    }
}
