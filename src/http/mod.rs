//! HTTP/1.1 over any byte stream: one hyper connection per TCP connection, TUN or kernel.
//!
//! Both paths, a smoltcp [`crate::stack::TcpStream`] and a kernel `tokio::net::TcpStream`, end
//! up in [`Server::serve`], so they serve byte-identical responses. This layer reads the request
//! (bounded), asks [`Imds`] for the answer and writes it; it knows nothing of metadata. It also
//! tracks every connection so a shutdown can let in-flight requests finish.
//!
//! Accepting connections is not handled here: see [`crate::app`].

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::imds::Imds;

pub mod host_guard;

/// Largest request body read; metadata requests have none, a token PUT an empty one.
const MAX_BODY: usize = 64 * 1024;

/// How long a client may take to send a request's headers (also bounds idle keep-alive).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the metadata service on accepted connections.
pub struct Server {
    imds: Arc<Imds>,
    graceful: GracefulShutdown,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Server {
    pub fn new(imds: Arc<Imds>) -> Self {
        Server {
            imds,
            graceful: GracefulShutdown::new(),
        }
    }

    /// Serves HTTP/1.1 on `io` in a task of its own until the client is done.
    pub fn serve<IO>(&self, io: IO, peer: SocketAddr)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let imds = self.imds.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let imds = imds.clone();
            async move { Ok::<_, Infallible>(answer(&imds, request).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), service);
        let connection = self.graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
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

async fn answer(imds: &Imds, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let host = parts.headers.get(hyper::header::HOST).map(|v| v.as_bytes());
    if !host_guard::host_is_allowed(host) {
        tracing::info!(
            host = %String::from_utf8_lossy(host.unwrap_or_default()),
            "refused a request for a foreign Host (DNS rebinding guard)"
        );
        let is_head = parts.method == hyper::Method::HEAD;
        return crate::imds::responses::Reply::error(StatusCode::FORBIDDEN)
            .into_response(is_head)
            .map(Full::new);
    }

    // The service never needs the body, but reading it keeps the connection reusable; a huge
    // one is refused rather than buffered.
    if Limited::new(body, MAX_BODY).collect().await.is_err() {
        return plain_status(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let response = imds.respond(&parts);
    tracing::debug!(method = %parts.method, path = parts.uri.path(), status = response.status().as_u16(), "request");
    response.map(Full::new)
}

fn plain_status(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
