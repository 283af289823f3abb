//! The claim lock: makes "check that 169.254.169.254 is free, then take it" atomic between two
//! imds-tun processes in one network namespace.
//!
//! The lock is a listening Unix socket in the *abstract* namespace (`@imds-tun/169.254.169.254`).
//! The kernel scopes abstract names per network namespace and releases the name when the socket
//! closes, SIGKILL included, so there is no file to create or clean up. Binding the name is the
//! atomic step: of two processes that start at the same moment, exactly one binds it.
//!
//! Abstract names have no permissions, so an unprivileged local user could bind the name first
//! to lock imds-tun out. A holder counts only if it listened as root or holds CAP_NET_ADMIN (the
//! systemd unit's dynamic user), as every imds-tun that can create a TUN does; anyone else is a
//! squatter: imds-tun names it in a warning and goes on without the lock, falling back to the
//! non-atomic check of existing claims.
//!
//! A rival learns who holds the lock by connecting to it and reading the holder's credentials
//! (`SO_PEERCRED`). The holder accepts and closes every such connection at once (a thread of its
//! own): unaccepted ones would stay in the backlog for good, and once it is full every later
//! probe, a `--check` or a rival start, would be refused, or with a blocking connect wait
//! forever. Probes connect without blocking, so a squatter that fills its own backlog cannot
//! stall a start either.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use super::capabilities::{CAP_NET_ADMIN_BIT, effective_in};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, Shutdown, SockFlag, SockType, UnixAddr, accept4, bind, connect, getsockopt,
    listen, shutdown, socket, sockopt,
};

/// The abstract socket name; one per metadata address.
const LOCK_NAME: &[u8] = b"imds-tun/169.254.169.254";

/// Holding the claim lock; dropping it (or exiting) releases the name.
#[derive(Debug)]
pub(crate) struct ClaimLock {
    socket: Option<Arc<OwnedFd>>,
}

impl Drop for ClaimLock {
    fn drop(&mut self) {
        if let Some(socket) = &self.socket {
            // Wakes the thread that answers probes (its accept fails), which then lets its
            // handle go, so the name is released now, not at exit.
            let _ = shutdown(socket.as_raw_fd(), Shutdown::Both);
        }
    }
}

/// Who holds the lock, when someone else does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Holder {
    /// Another imds-tun (or something as privileged): the address is taken.
    Privileged { pid: i32 },
    /// An unprivileged process squatting the name: ignored, with a warning.
    Squatter { pid: Option<i32>, uid: Option<u32> },
}

impl ClaimLock {
    /// No lock: a squatter holds the name.
    pub(crate) fn unheld() -> ClaimLock {
        ClaimLock { socket: None }
    }

    /// Takes the lock, or says who holds it. A squatter does not stop us: the returned lock is
    /// then empty and the caller relies on checking existing claims alone.
    pub(crate) fn acquire() -> io::Result<Result<ClaimLock, Holder>> {
        let address = UnixAddr::new_abstract(LOCK_NAME)?;
        let socket = new_socket(true)?;
        match bind(socket.as_raw_fd(), &address) {
            Ok(()) => {
                // Listening lets a rival read our credentials (SO_PEERCRED) to tell us from a
                // squatter. A rival's connection waits in the backlog until it is accepted,
                // and a full backlog refuses the next rival: so every connection is accepted
                // and closed at once, by a thread of its own.
                listen(&socket, nix::sys::socket::Backlog::new(16)?)?;
                let socket = Arc::new(socket);
                answer_probes(socket.clone())?;
                Ok(Ok(ClaimLock {
                    socket: Some(socket),
                }))
            }
            Err(Errno::EADDRINUSE) => {
                let holder = identify_holder(&address)?;
                match holder {
                    Holder::Privileged { .. } => Ok(Err(holder)),
                    Holder::Squatter { pid, uid } => {
                        tracing::warn!(
                            pid = pid.map_or_else(|| "?".to_owned(), |p| p.to_string()),
                            uid = uid.map_or_else(|| "?".to_owned(), |u| u.to_string()),
                            "an unprivileged process holds imds-tun's claim lock (@imds-tun/169.254.169.254); ignoring it"
                        );
                        Ok(Ok(ClaimLock::unheld()))
                    }
                }
            }
            Err(errno) => Err(errno.into()),
        }
    }
}

/// Who holds the lock now, without taking it (what `--check` asks): `None` when nobody
/// listens on the name.
pub(crate) fn holder() -> io::Result<Option<Holder>> {
    let address = UnixAddr::new_abstract(LOCK_NAME)?;
    match identify_holder(&address)? {
        Holder::Squatter {
            pid: None,
            uid: None,
        } => Ok(None),
        holder => Ok(Some(holder)),
    }
}

/// Accepts and closes every connection to the lock, so rivals' probes never fill its backlog;
/// ends when the lock is dropped (its socket shut down) or the process exits.
fn answer_probes(socket: Arc<OwnedFd>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("claim-lock".into())
        .spawn(move || {
            loop {
                match accept4(socket.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                    // SAFETY: accept4 returned a new descriptor that nothing else owns.
                    #[allow(unsafe_code)]
                    Ok(fd) => drop(unsafe { OwnedFd::from_raw_fd(fd) }),
                    Err(Errno::EINTR | Errno::ECONNABORTED) => {}
                    Err(_) => return,
                }
            }
        })
        .map(|_| ())
}

/// A Unix stream socket: blocking for the lock (its thread waits in accept), non-blocking for
/// a probe.
fn new_socket(blocking: bool) -> io::Result<OwnedFd> {
    let flags = if blocking {
        SockFlag::SOCK_CLOEXEC
    } else {
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK
    };
    Ok(socket(AddressFamily::Unix, SockType::Stream, flags, None)?)
}

fn identify_holder(address: &UnixAddr) -> io::Result<Holder> {
    let probe = new_socket(false)?;
    // Non-blocking: a holder whose backlog is full (a squatter can fill its own) refuses the
    // probe at once (EAGAIN) instead of stalling the start; such a holder is no imds-tun,
    // which answers every probe.
    if connect(probe.as_raw_fd(), address).is_err() {
        // Bound but not listening, or not answering: no imds-tun does that.
        return Ok(Holder::Squatter {
            pid: None,
            uid: None,
        });
    }
    // The credentials recorded when the holder called listen(): root for an imds-tun started
    // with sudo, even after it gave root up.
    let credentials = getsockopt(&probe, sockopt::PeerCredentials)?;
    let pid = credentials.pid();
    if credentials.uid() == 0 || has_net_admin(pid) {
        Ok(Holder::Privileged { pid })
    } else {
        Ok(Holder::Squatter {
            pid: Some(pid),
            uid: Some(credentials.uid()),
        })
    }
}

fn has_net_admin(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| effective_in(&status))
        .is_some_and(|mask| mask & (1 << CAP_NET_ADMIN_BIT) != 0)
}
