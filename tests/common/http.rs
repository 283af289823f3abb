//! A small raw HTTP/1.1 client over tokio `TcpStream`, so tests can assert on exact status codes,
//! header names and values (in wire order) and body bytes without a client library normalising
//! anything. It understands `Content-Length`, chunked bodies and read-to-close, and puts a
//! timeout on every exchange: a hang is a failure, not a stuck test.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long one request/response exchange may take.
pub(crate) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A request to send; `Host` and `Content-Length` (for bodies) are added unless given.
#[derive(Debug, Clone, Default)]
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub(crate) fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            ..Request::default()
        }
    }

    pub(crate) fn get(path: &str) -> Request {
        Request::new("GET", path)
    }

    pub(crate) fn put(path: &str) -> Request {
        Request::new("PUT", path)
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The IMDSv2 token request with the given TTL header value.
    pub(crate) fn token(ttl: &str) -> Request {
        Request::put("/latest/api/token").header("X-aws-ec2-metadata-token-ttl-seconds", ttl)
    }

    /// A GET carrying an IMDSv2 token.
    pub(crate) fn get_with_token(path: &str, token: &str) -> Request {
        Request::get(path).header("X-aws-ec2-metadata-token", token)
    }

    fn encode(&self, close: bool) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        let has = |name: &str| {
            self.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        if !has("host") {
            head.push_str("Host: 169.254.169.254\r\n");
        }
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if (!self.body.is_empty() || self.method == "PUT" || self.method == "POST")
            && !has("content-length")
        {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        if close && !has("connection") {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// A response as it came off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header names as sent, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub(crate) fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as UTF-8 (panics with the bytes if it is not).
    pub(crate) fn text(&self) -> &str {
        std::str::from_utf8(&self.body)
            .unwrap_or_else(|error| panic!("body is not UTF-8 ({error}): {:?}", self.body))
    }

    /// True when the server said it will close the connection after this response.
    pub(crate) fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"))
            || self.version == "HTTP/1.0"
                && !self
                    .header("connection")
                    .is_some_and(|value| value.eq_ignore_ascii_case("keep-alive"))
    }
}

/// One connection that can carry several requests (keep-alive).
#[derive(Debug)]
pub(crate) struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    pub(crate) async fn open(address: SocketAddr) -> Connection {
        let stream = tokio::time::timeout(EXCHANGE_TIMEOUT, TcpStream::connect(address))
            .await
            .unwrap_or_else(|_| panic!("connecting to {address} timed out"))
            .unwrap_or_else(|error| panic!("connecting to {address}: {error}"));
        Connection {
            stream: BufReader::new(stream),
        }
    }

    /// Sends `request` (keeping the connection open) and reads the response.
    pub(crate) async fn send(&mut self, request: &Request) -> Response {
        self.exchange(request, false).await
    }

    async fn exchange(&mut self, request: &Request, close: bool) -> Response {
        let bytes = request.encode(close);
        let work = async {
            self.stream.get_mut().write_all(&bytes).await?;
            read_response(&mut self.stream, request.method == "HEAD").await
        };
        match tokio::time::timeout(EXCHANGE_TIMEOUT, work).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => panic!("{} {}: {error}", request.method, request.path),
            Err(_) => panic!(
                "{} {}: no complete response within {EXCHANGE_TIMEOUT:?}",
                request.method, request.path
            ),
        }
    }

    /// Writes raw bytes (for malformed or partial requests).
    pub(crate) async fn write_raw(&mut self, bytes: &[u8]) {
        self.stream
            .get_mut()
            .write_all(bytes)
            .await
            .expect("writing raw bytes");
    }

    /// Reads one response after [`Connection::write_raw`].
    pub(crate) async fn read_response(&mut self) -> Response {
        tokio::time::timeout(EXCHANGE_TIMEOUT, read_response(&mut self.stream, false))
            .await
            .unwrap_or_else(|_| panic!("no response within {EXCHANGE_TIMEOUT:?}"))
            .expect("reading a response")
    }

    /// Waits for the server to close the connection; returns what it sent before (if anything).
    pub(crate) async fn read_to_close(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, self.stream.read_to_end(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("the server kept the connection open"));
        rest
    }
}

/// Sends `request` on a new connection with `Connection: close` and returns the response.
pub(crate) async fn send(address: SocketAddr, request: &Request) -> Response {
    Connection::open(address)
        .await
        .exchange(request, true)
        .await
}

/// `GET path` on a new connection.
pub(crate) async fn get(address: SocketAddr, path: &str) -> Response {
    send(address, &Request::get(path)).await
}

/// Fetches an IMDSv2 token with the given TTL; panics unless the answer is 200.
pub(crate) async fn token(address: SocketAddr, ttl: u32) -> String {
    let response = send(address, &Request::token(&ttl.to_string())).await;
    assert_eq!(
        response.status,
        200,
        "token PUT answered {} {}: {:?}",
        response.status,
        response.reason,
        String::from_utf8_lossy(&response.body)
    );
    response.text().to_string()
}

async fn read_response(
    stream: &mut BufReader<TcpStream>,
    head_only: bool,
) -> std::io::Result<Response> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Err(bad("connection closed before a status line".into()));
    }
    let status_line = line.trim_end().to_string();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_string();
    let status = parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let reason = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Err(bad("connection closed inside the headers".into()));
        }
        let header = line.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {header:?}")))?;
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    let no_body = head_only || status == 204 || status == 304 || (100..200).contains(&status);
    if !no_body {
        if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                line.clear();
                stream.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
                if size == 0 {
                    line.clear();
                    stream.read_line(&mut line).await?;
                    break;
                }
                let start = body.len();
                body.resize(start + size, 0);
                stream.read_exact(&mut body[start..]).await?;
                line.clear();
                stream.read_line(&mut line).await?;
            }
        } else if let Some(length) = find("content-length") {
            let length: usize = length
                .parse()
                .map_err(|_| bad(format!("bad Content-Length {length:?}")))?;
            body.resize(length, 0);
            stream.read_exact(&mut body).await?;
        } else {
            stream.read_to_end(&mut body).await?;
        }
    }
    Ok(Response {
        version,
        status,
        reason,
        headers,
        body,
    })
}
