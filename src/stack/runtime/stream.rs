//! [`TcpStream`]: one smoltcp connection as an ordinary tokio `AsyncRead + AsyncWrite`.
//!
//! Reads and writes copy straight between the caller's buffers and the smoltcp socket buffers
//! under the stack lock; there is no second buffer and no per-connection task. Writes are
//! vectored, so hyper hands over its queue of shared response buffers instead of first copying
//! each response into a buffer of its own (see `docs/hardening.md`, clients that never read). When a socket has
//! nothing to read or no room to write, the task's waker is registered with smoltcp itself, which
//! wakes it when the driver's next poll changes the socket. Every operation that gives smoltcp
//! something to send (data, a FIN, a reopened window) wakes the driver through its `Notify`.
//!
//! Every write also tells the endpoint how much it queued and whether it was offered more than
//! fitted: that is how the endpoint knows when a reply sent with a lowered hop limit
//! ([`HopLimit`]) has been acknowledged in full.
//!
//! What HTTP asks of a connection (`http::Connection`, `http::ReplyHops`) is implemented for
//! these types by the wiring above both (`app/stack_connection.rs`), not here: the stack does
//! not know who serves its streams.

use super::shared::{Shared, now};
use crate::stack::endpoint::{ConnectionId, Established};
use smoltcp::socket::tcp::{RecvError, SendError};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TCP connection accepted on the TUN side.
pub struct TcpStream {
    shared: Arc<Shared>,
    id: ConnectionId,
    peer: SocketAddr,
    local: SocketAddr,
}

impl std::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStream")
            .field("peer", &self.peer)
            .field("local", &self.local)
            .finish()
    }
}

impl TcpStream {
    pub(super) fn new(shared: Arc<Shared>, established: Established) -> Self {
        TcpStream {
            shared,
            id: established.id,
            peer: established.peer,
            local: established.local,
        }
    }

    /// A handle that lowers and lifts the IP hop limit of this connection's packets; it may
    /// outlive the stream (then it does nothing).
    pub fn hop_limit(&self) -> HopLimit {
        HopLimit {
            shared: self.shared.clone(),
            id: self.id,
        }
    }

    /// The client's address and port.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Our address and port: the ones the client's SYN was sent to (169.254.169.254:80, or a
    /// container endpoint's address with `--ecs` or `--eks-pod-identity`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Drops the connection with a RST instead of a FIN.
    pub fn reset(self) {
        if let Some(socket) = self.shared.lock().socket(self.id) {
            socket.abort();
        }
    }
}

fn reset() -> io::Error {
    io::Error::from(io::ErrorKind::ConnectionReset)
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut endpoint = self.shared.lock();
        let Some(socket) = endpoint.socket(self.id) else {
            return Poll::Ready(Err(reset()));
        };
        let window_was_small = socket.recv_queue() * 2 >= socket.recv_capacity();
        // Copy only what has arrived into the caller's (possibly uninitialised) buffer; zeroing
        // the whole unfilled buffer first (`initialize_unfilled`) cost more than everything else
        // per request (callgrind: 45% of instructions in memset). The ring buffer may wrap, so
        // the data can come in two contiguous pieces.
        let mut read = 0;
        for _ in 0..2 {
            if buf.remaining() == 0 {
                break;
            }
            let piece = socket.recv(|data| {
                let length = data.len().min(buf.remaining());
                buf.put_slice(&data[..length]);
                (length, length)
            });
            match piece {
                Ok(0) => break,
                Ok(length) => read += length,
                Err(_) if read > 0 => break,
                Err(RecvError::Finished) => return Poll::Ready(Ok(())),
                Err(RecvError::InvalidState) => return Poll::Ready(Err(reset())),
            }
        }
        if read == 0 {
            socket.register_recv_waker(cx.waker());
            return Poll::Pending;
        }
        drop(endpoint);
        if window_was_small {
            // The peer may be waiting for the window to reopen.
            self.shared.wake_driver();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut endpoint = self.shared.lock();
        let Some(socket) = endpoint.socket(self.id) else {
            return Poll::Ready(Err(reset()));
        };
        match socket.send_slice(data) {
            Ok(0) if socket.may_send() => {
                socket.register_send_waker(cx.waker());
                endpoint.wrote(self.id, 0, true);
                Poll::Pending
            }
            Ok(0) | Err(SendError::InvalidState) => {
                Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe)))
            }
            Ok(written) => {
                endpoint.wrote(self.id, written, written < data.len());
                drop(endpoint);
                self.shared.wake_driver();
                Poll::Ready(Ok(written))
            }
        }
    }

    /// Copies as many of `slices` as fit into the socket's send buffer, in order. Without this
    /// hyper would flatten every response into a per-connection buffer first: a copy of the
    /// whole body (user-data included) for every client, held for as long as the client does
    /// not read. With it hyper queues the response's shared `Bytes` and writes them from here,
    /// so a connection never holds more than its socket's send buffer of copied bytes.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if slices.iter().all(|slice| slice.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        let mut endpoint = self.shared.lock();
        let Some(socket) = endpoint.socket(self.id) else {
            return Poll::Ready(Err(reset()));
        };
        let offered: usize = slices.iter().map(|slice| slice.len()).sum();
        let mut written = 0;
        for slice in slices {
            match socket.send_slice(slice) {
                Ok(count) => {
                    written += count;
                    if count < slice.len() {
                        break;
                    }
                }
                Err(SendError::InvalidState) if written > 0 => break,
                Err(SendError::InvalidState) => {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe)));
                }
            }
        }
        if written == 0 {
            if !socket.may_send() {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe)));
            }
            socket.register_send_waker(cx.waker());
            endpoint.wrote(self.id, 0, true);
            return Poll::Pending;
        }
        endpoint.wrote(self.id, written, written < offered);
        drop(endpoint);
        self.shared.wake_driver();
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are already queued in smoltcp and the driver has been woken.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut endpoint = self.shared.lock();
        if let Some(socket) = endpoint.socket(self.id) {
            socket.close();
        }
        drop(endpoint);
        self.shared.wake_driver();
        Poll::Ready(Ok(()))
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let now = now();
        self.shared.lock().detach(self.id, now);
        self.shared.wake_driver();
    }
}

/// Lowers and lifts the IP hop limit (TTL) of one connection's packets: what the HTTP layer
/// asks for around a token reply (`--hop-limit`). Cheap to clone; once its connection is gone
/// every call does nothing (connection ids are never reused).
#[derive(Clone)]
pub struct HopLimit {
    shared: Arc<Shared>,
    id: ConnectionId,
}

impl std::fmt::Debug for HopLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HopLimit").field("id", &self.id).finish()
    }
}

impl HopLimit {
    /// Every packet from now on, retransmissions of bytes written earlier included, leaves
    /// with hop limit `hops`.
    pub fn limit(&self, hops: u8) {
        self.shared.lock().limit_reply_hops(self.id, hops);
    }

    /// Back to the normal hop limit once everything written so far has been acknowledged.
    pub fn release(&self) {
        self.shared.lock().release_reply_hops(self.id);
    }
}
