//! The `--metrics` socket: Prometheus' scrapes of `GET /metrics`, on a kernel listener the
//! process bound, until the runtime stops accepting.
//!
//! A small HTTP server of its own rather than one more `http::MetadataService`: a scrape is not
//! a metadata request, must not be counted as one, must not meet `ctl fault`'s faults, and is
//! served on none of the metadata addresses. It keeps the metadata server's limits (the header
//! timeout, the largest request head) and the `--listen` sockets' shared token
//! (`http::shared_token`), and admits at most [`MAX_CONNECTIONS`] at once: a scraper needs one.
//!
//! `GET` (or `HEAD`) `/metrics` is answered with the exposition; another path is 404, another
//! method on `/metrics` is 405. The request's body is never read.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::http::shared_token::LISTENER_TOKEN_HEADER;
use crate::http::{Access, Limits};
use crate::metrics::{self, Metrics, Refusal};

/// Most scrapes served at once; a further connection is reset (and counted).
pub const MAX_CONNECTIONS: usize = 4;

/// The `--metrics` socket, bound by the process before anything is claimed.
#[derive(Debug)]
pub struct MetricsEndpoint {
    /// The bound socket.
    pub socket: TcpListener,
    /// Every request, or only those with the shared token (a non-loopback address).
    pub access: Access,
}

/// Serves scrapes on `endpoint` until `stop` changes. Returning closes the socket.
pub(super) async fn serve(
    endpoint: MetricsEndpoint,
    metrics: Metrics,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let access = Arc::new(endpoint.access);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = endpoint.socket.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(place) = places.clone().try_acquire_owned() else {
                        metrics.refused(Refusal::MetricsConnectionLimit);
                        let _ = stream.set_zero_linger();
                        continue;
                    };
                    let metrics = metrics.clone();
                    let access = access.clone();
                    let service = service_fn(move |request: Request<Incoming>| {
                        let response = answer(&request, &metrics, &access);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let connection = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(limits.header_timeout)
                        .max_buf_size(limits.max_header_bytes)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::spawn(async move {
                        // A scraper that stops reading is let go after the header timeout
                        // too: the exposition is a few KiB.
                        let _ = tokio::time::timeout(
                            limits.header_timeout + EXPOSITION_WRITE,
                            connection,
                        )
                        .await;
                        tracing::trace!(%peer, "metrics connection ended");
                        drop(place);
                    });
                }
                Err(error) => {
                    crate::warn_limited!(%error, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// How long writing one exposition may take, beyond the header timeout.
const EXPOSITION_WRITE: Duration = Duration::from_secs(10);

/// The answer to one request on the metrics socket.
fn answer<B>(request: &Request<B>, metrics: &Metrics, access: &Access) -> Response<Full<Bytes>> {
    // A loopback socket without a token could be read by a browser's page through DNS
    // rebinding (its name resolving to 127.0.0.1): the metadata paths' guard refuses a Host
    // that is a name other than the few documented ones. A token cannot be sent by a page.
    if matches!(access, Access::Open) && crate::http::host_guard::check(request).is_err() {
        return message(
            StatusCode::FORBIDDEN,
            "imds-tun: the metrics endpoint answers requests for an IP address or localhost only\n",
        );
    }
    if let Access::Token(token) = access {
        let admitted = request
            .headers()
            .get(LISTENER_TOKEN_HEADER)
            .is_some_and(|given| token.matches(given.as_bytes()));
        if !admitted {
            return message(
                StatusCode::UNAUTHORIZED,
                "imds-tun: the metrics endpoint requires the shared secret in the X-Imds-Tun-Token \
                 header (the server's --listen-token-file)\n",
            );
        }
    }
    if request.uri().path() != "/metrics" {
        return message(StatusCode::NOT_FOUND, "imds-tun: metrics are at /metrics\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = message(
            StatusCode::METHOD_NOT_ALLOWED,
            "imds-tun: /metrics answers GET\n",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    response
}

/// A short plain-text answer.
fn message(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::shared_token::SharedToken;

    fn request(method: Method, path: &str, token: Option<&str>) -> Request<()> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "127.0.0.1:9100");
        if let Some(token) = token {
            builder = builder.header(LISTENER_TOKEN_HEADER, token);
        }
        builder.body(()).expect("a request")
    }

    #[test]
    fn get_metrics_is_the_exposition_other_paths_404_other_methods_405() {
        let metrics = Metrics::default();
        metrics.request(Some("ec2"), 200, false);
        let open = Access::Open;
        let answer_to = |method, path| answer(&request(method, path, None), &metrics, &open);
        let scrape = answer_to(Method::GET, "/metrics?x=1");
        assert_eq!(scrape.status(), StatusCode::OK);
        assert_eq!(
            scrape
                .headers()
                .get(CONTENT_TYPE)
                .map(HeaderValue::as_bytes),
            Some(metrics::CONTENT_TYPE.as_bytes())
        );
        assert_eq!(answer_to(Method::HEAD, "/metrics").status(), StatusCode::OK);
        assert_eq!(answer_to(Method::GET, "/").status(), StatusCode::NOT_FOUND);
        assert_eq!(
            answer_to(Method::GET, "/metrics/").status(),
            StatusCode::NOT_FOUND
        );
        let post = answer_to(Method::POST, "/metrics");
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            post.headers().get(ALLOW).map(HeaderValue::as_bytes),
            Some(&b"GET, HEAD"[..])
        );
    }

    #[test]
    fn with_a_token_only_the_secret_is_admitted_whatever_the_path() {
        let metrics = Metrics::default();
        let secret = "0123456789abcdef0123";
        let guarded = Access::Token(Arc::new(SharedToken::parse(secret).expect("a secret")));
        for (token, path, status) in [
            (None, "/metrics", StatusCode::UNAUTHORIZED),
            (
                Some("0123456789abcdef0124"),
                "/metrics",
                StatusCode::UNAUTHORIZED,
            ),
            (None, "/elsewhere", StatusCode::UNAUTHORIZED),
            (Some(secret), "/metrics", StatusCode::OK),
            (Some(secret), "/elsewhere", StatusCode::NOT_FOUND),
        ] {
            let answered = answer(&request(Method::GET, path, token), &metrics, &guarded);
            assert_eq!(answered.status(), status, "{token:?} {path}");
        }
    }

    #[test]
    fn a_loopback_socket_refuses_a_host_name_a_rebound_page_would_send() {
        let metrics = Metrics::default();
        let with_host = |host: &str| {
            let request = Request::builder()
                .uri("/metrics")
                .header(hyper::header::HOST, host)
                .body(())
                .expect("a request");
            answer(&request, &metrics, &Access::Open).status()
        };
        assert_eq!(with_host("attacker.example:9100"), StatusCode::FORBIDDEN);
        assert_eq!(with_host("localhost:9100"), StatusCode::OK);
        assert_eq!(with_host("[::1]:9100"), StatusCode::OK);
    }

    /// Four scrapers that connect and send nothing hold every place until the header timeout;
    /// a fifth connection is reset at once, and counted.
    #[tokio::test]
    async fn a_fifth_scrape_at_once_is_reset_and_counted() {
        use tokio::io::AsyncReadExt as _;
        let socket = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let address = socket.local_addr().expect("its address");
        let metrics = Metrics::default();
        let (stop, stopped) = watch::channel(false);
        let endpoint = MetricsEndpoint {
            socket,
            access: Access::Open,
        };
        let server = tokio::spawn(serve(endpoint, metrics.clone(), Limits::default(), stopped));
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(
                tokio::net::TcpStream::connect(address)
                    .await
                    .expect("connected"),
            );
        }
        let mut fifth = tokio::net::TcpStream::connect(address)
            .await
            .expect("connected");
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), fifth.read(&mut byte))
            .await
            .expect("the fifth is not kept waiting");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(
            metrics.encode().contains(
                r#"imds_tun_refused_connections_total{reason="metrics_connection_limit"} 1"#
            ),
            "{}",
            metrics.encode()
        );
        drop(held);
        stop.send(true).expect("the server listens");
        server.await.expect("the server ends");
    }
}
