//! The `imds-tun ctl` side: send one request to the imds-tun of this network namespace and
//! return its answer.
//!
//! Before sending anything the client checks who holds the socket: an abstract name can be
//! bound by any local user, so a holder that is neither root, nor the caller, nor the imds-tun
//! that holds the claim on 169.254.169.254 (the packaged service's dynamic user) is not an
//! imds-tun this caller may control, and gets nothing (not even a `status`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::protocol::{MAX_REQUEST_BYTES, Request, Response};

/// How long the service may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read: a status with many events is a few KiB, the largest callers report
/// (`ctl callers`, `crate::callers::MAX_CALLERS` entries) under 2 MiB.
pub const MAX_ANSWER_BYTES: u64 = 4 * 1024 * 1024;

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// This system has no abstract sockets, so no control channel (outside Linux).
    #[error("{0}")]
    Unsupported(std::io::Error),
    /// Nothing listens on `@imds-tun/control` (the connect was refused).
    #[error(
        "no imds-tun is running in this network namespace (nothing listens on @imds-tun/control); \
         start one with `sudo imds-tun`"
    )]
    NotRunning,
    /// The connect failed otherwise.
    #[error("cannot reach the control socket: {0}")]
    Connect(std::io::Error),
    /// The socket's holder is neither root nor the caller: not an imds-tun the caller may
    /// control, so nothing was sent.
    #[error(
        "the control socket is held by uid {uid} (pid {pid}), which is neither root, nor you, nor \
         the imds-tun holding the claim on 169.254.169.254: not an imds-tun you may control; \
         refusing to talk to it"
    )]
    Impostor {
        /// The holder's user id (SO_PEERCRED).
        uid: u32,
        /// The holder's process id (SO_PEERCRED).
        pid: i32,
    },
    /// The holder's credentials (SO_PEERCRED) could not be read.
    #[error("cannot tell who holds the control socket: {0}")]
    Credentials(nix::Error),
    /// Sending the request or reading the answer failed, timed out (10 s), or met a closed
    /// connection.
    #[error("talking to imds-tun failed: {0}")]
    Io(std::io::Error),
    /// The request is longer than the service reads (a scenario over the bounds `--scenario`
    /// has too); its length in bytes.
    #[error(
        "the request is {0} bytes, more than imds-tun reads ({MAX_REQUEST_BYTES}); split the \
         scenario"
    )]
    TooLarge(usize),
    /// The answer was not a JSON [`Response`] line.
    #[error("imds-tun answered something that is not a response: {0}")]
    Garbled(serde_json::Error),
}

/// Sends `request` and returns the response.
pub fn send(request: &Request) -> Result<Response, ClientError> {
    let address = crate::platform::control_address().map_err(ClientError::Unsupported)?;
    let stream = UnixStream::connect_addr(&address).map_err(|error| {
        if error.kind() == std::io::ErrorKind::ConnectionRefused {
            ClientError::NotRunning
        } else {
            ClientError::Connect(error)
        }
    })?;
    check_holder(&stream)?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(ANSWER_TIMEOUT)))
        .map_err(ClientError::Io)?;
    let mut line = serde_json::to_vec(request).map_err(ClientError::Garbled)?;
    if line.len() > MAX_REQUEST_BYTES {
        return Err(ClientError::TooLarge(line.len()));
    }
    line.push(b'\n');
    // A refusal is sent before the request is read, so the write may meet a closed socket;
    // the refusal is still there to read.
    let written = (&stream).write_all(&line);
    let mut answer = Vec::new();
    let read = BufReader::new(std::io::Read::take(&stream, MAX_ANSWER_BYTES))
        .read_until(b'\n', &mut answer);
    if answer.is_empty() {
        return Err(ClientError::Io(
            written.err().or(read.err()).unwrap_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "imds-tun closed the connection without an answer",
                )
            }),
        ));
    }
    serde_json::from_slice(&answer).map_err(ClientError::Garbled)
}

/// The holder must be root (an imds-tun started with sudo binds the socket before giving root
/// up), the caller (an imds-tun the caller runs without root, `--no-tun`), or the process that
/// holds the claim lock as only a claimant may (root or CAP_NET_ADMIN: the packaged service,
/// which runs as a dynamic user holding CAP_NET_ADMIN, see `platform::claim_holder`).
#[cfg(target_os = "linux")]
fn check_holder(stream: &UnixStream) -> Result<(), ClientError> {
    let holder = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(ClientError::Credentials)?;
    let me = nix::unistd::geteuid().as_raw();
    if holder.uid() == 0 || holder.uid() == me {
        return Ok(());
    }
    if crate::platform::claim_holder().ok().flatten() == Some(holder.pid()) {
        Ok(())
    } else {
        Err(ClientError::Impostor {
            uid: holder.uid(),
            pid: holder.pid(),
        })
    }
}

#[cfg(not(target_os = "linux"))]
fn check_holder(_stream: &UnixStream) -> Result<(), ClientError> {
    Ok(())
}
