//! The one HTTP client `record` asks the metadata service through: plain HTTP/1.1 over a pooled
//! keep-alive connection (hyper-util's client), every exchange bounded in time and in bytes.
//!
//! Each request, from connecting to the body's last byte, must finish within
//! [`super::REQUEST_TIMEOUT`] and before the recording's deadline; its head may be at most
//! [`super::MAX_HEAD_BYTES`], its body at most the limit the caller names. A body beyond the
//! limit is not read further: the connection is dropped at the bound, so a 1 GiB answer costs
//! the limit, not a gigabyte. What the answer means (a listing, a leaf, a document) is not this
//! module's business; it only says what came back or why nothing did.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

/// One answer: its status, `Content-Type` (if any, and if it is a visible string) and body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FetchError {
    /// No TCP connection (refused, no route, connect timeout).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The answer did not arrive whole within its time.
    #[error("no whole answer within {0} s")]
    Timeout(u64),
    /// The recording's total time is used up.
    #[error("the recording's {0} s are used up")]
    Deadline(u64),
    /// The body is longer than the limit; reading stopped there.
    #[error("the answer is larger than {0} bytes, the most one value may be")]
    TooLarge(usize),
    /// Anything else HTTP-level: a malformed or oversized head, a connection cut mid-answer.
    #[error("{0}")]
    Http(String),
}

impl FetchError {
    /// True when the service could not be reached at all.
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, FetchError::Connect(_))
    }
}

/// The client, the base URL (`http://host[:port]`) and the recording's deadline.
pub(crate) struct MetadataClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    base: String,
    deadline: Instant,
}

impl MetadataClient {
    /// A client for `base` (scheme and authority, no final `/`) that stops at `deadline`.
    pub(crate) fn new(base: &str, deadline: Instant) -> MetadataClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(super::REQUEST_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .http1_max_buf_size(super::MAX_HEAD_BYTES)
            .pool_max_idle_per_host(1)
            .build(connector);
        MetadataClient {
            client,
            base: base.trim_end_matches('/').to_owned(),
            deadline,
        }
    }

    /// `method path_and_query` with `headers`, a body of at most `limit` bytes.
    pub(crate) async fn fetch(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(HeaderName, HeaderValue)],
        limit: usize,
    ) -> Result<Answer, FetchError> {
        let now = Instant::now();
        if now >= self.deadline {
            return Err(FetchError::Deadline(super::TOTAL_TIMEOUT.as_secs()));
        }
        let remaining = self.deadline - now;
        let (budget, on_expiry) = if remaining < super::REQUEST_TIMEOUT {
            (
                remaining,
                FetchError::Deadline(super::TOTAL_TIMEOUT.as_secs()),
            )
        } else {
            (
                super::REQUEST_TIMEOUT,
                FetchError::Timeout(super::REQUEST_TIMEOUT.as_secs()),
            )
        };
        let uri: Uri = format!("{}{}", self.base, path_and_query)
            .parse()
            .map_err(|e| {
                FetchError::Http(format!("cannot make a URL of {path_and_query:?}: {e}"))
            })?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::USER_AGENT, USER_AGENT);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| FetchError::Http(format!("cannot build the request: {e}")))?;
        match tokio::time::timeout(budget, self.exchange(request, limit)).await {
            Ok(result) => result,
            Err(_) => Err(on_expiry),
        }
    }

    async fn exchange(
        &self,
        request: Request<Empty<Bytes>>,
        limit: usize,
    ) -> Result<Answer, FetchError> {
        let response = self.client.request(request).await.map_err(|error| {
            if error.is_connect() {
                FetchError::Connect(innermost(&error))
            } else {
                FetchError::Http(innermost(&error))
            }
        })?;
        let (parts, body) = response.into_parts();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        // A declared length beyond the limit is refused before a byte of it is read.
        if let Some(length) = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok())
            && length > limit as u64
        {
            return Err(FetchError::TooLarge(limit));
        }
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|error| {
                if error
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    FetchError::TooLarge(limit)
                } else {
                    FetchError::Http(format!("the answer broke off: {error}"))
                }
            })?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            content_type,
            body,
        })
    }
}

/// What `record` calls itself on the wire.
const USER_AGENT: &str = concat!("imds-tun-record/", env!("CARGO_PKG_VERSION"));

/// The innermost cause of an error chain: hyper-util's outer message ("client error
/// (Connect)") says less than the `io::Error` inside it ("Connection refused").
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut inner: &(dyn std::error::Error + 'static) = error;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}
