//! Upstream proxy mode: answer every request by forwarding it to another metadata service.
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
//! the configured connect and response timeouts, and one log line.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{MAX_BODY, ResponseBody};
use crate::config::UpstreamSettings;
use crate::config::proxy::TOKEN_HEADER;

/// How long an idle pooled connection to the upstream is kept. Below the 10 s an imds-tun
/// upstream keeps an idle connection, so we close first and rarely pick a dying one.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Forwards requests to one upstream metadata service over pooled keep-alive connections.
pub struct Upstream {
    client: Client<HttpConnector, Limited<Incoming>>,
    authority: http::uri::Authority,
    /// The upstream as the user wrote it, for messages.
    display: String,
    token: Option<HeaderValue>,
    connect_timeout: Duration,
    response_timeout: Duration,
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
    /// A forwarder for `settings`; connects lazily, so a down upstream does not stop start-up.
    pub fn new(settings: &UpstreamSettings) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
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
        Upstream {
            client,
            display: format!("http://{authority}"),
            authority,
            token,
            connect_timeout: settings.connect_timeout,
            response_timeout: settings.response_timeout,
        }
    }

    /// The upstream's URL, `http://HOST:PORT`.
    pub fn url(&self) -> &str {
        &self.display
    }

    /// Forwards `request` and returns the upstream's response with a streaming body, or a
    /// 502/504 explaining why there is none.
    pub async fn forward(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let (mut parts, body) = request.into_parts();
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
        // A client's own token header is never passed on: only ours, if configured.
        parts.headers.remove(TOKEN_HEADER);
        if let Some(token) = &self.token {
            parts.headers.insert(TOKEN_HEADER, token.clone());
        }
        let request = Request::from_parts(parts, Limited::new(body, MAX_BODY));

        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                tracing::debug!(%method, path = path_and_query, status = parts.status.as_u16(), upstream = self.display, "forwarded");
                Response::from_parts(parts, Either::Right(body))
            }
            Ok(Err(error)) => {
                let cause = if timed_out(&error) {
                    format!("no connection within {:?}", self.connect_timeout)
                } else {
                    innermost_cause(&error)
                };
                if error.is_connect() {
                    tracing::warn!(
                        "upstream {} unreachable ({cause}); answered {method} {path_and_query} with 502",
                        self.display
                    );
                    gateway_error(
                        StatusCode::BAD_GATEWAY,
                        &format!(
                            "imds-tun: cannot reach the upstream metadata service {} ({cause}); \
                             is `imds-tun --no-tun --listen ...` running there?",
                            self.display
                        ),
                    )
                } else {
                    tracing::warn!(
                        "upstream {} failed ({cause}); answered {method} {path_and_query} with 502",
                        self.display
                    );
                    gateway_error(
                        StatusCode::BAD_GATEWAY,
                        &format!(
                            "imds-tun: the upstream metadata service {} failed: {cause}",
                            self.display
                        ),
                    )
                }
            }
            Err(_) => {
                tracing::warn!(
                    "upstream {} did not answer within {:?}; answered {method} {path_and_query} with 504",
                    self.display,
                    self.response_timeout
                );
                gateway_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!(
                        "imds-tun: the upstream metadata service {} did not answer within {:?}",
                        self.display, self.response_timeout
                    ),
                )
            }
        }
    }
}

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

fn gateway_error(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(format!("{message}\n")))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
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

    #[test]
    fn gateway_errors_are_plain_text_lines() {
        let response = gateway_error(StatusCode::BAD_GATEWAY, "imds-tun: down");
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }
}
