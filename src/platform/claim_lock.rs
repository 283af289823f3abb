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

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::capabilities::{CAP_NET_ADMIN_BIT, effective_in};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, UnixAddr, bind, connect, getsockopt, listen, socket, sockopt,
};

/// The abstract socket name; one per metadata address.
const LOCK_NAME: &[u8] = b"imds-tun/169.254.169.254";

/// Holding the claim lock; dropping it (or exiting) releases the name.
#[derive(Debug)]
pub(crate) struct ClaimLock {
    _socket: Option<OwnedFd>,
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
        ClaimLock { _socket: None }
    }

    /// Takes the lock, or says who holds it. A squatter does not stop us: the returned lock is
    /// then empty and the caller relies on checking existing claims alone.
    pub(crate) fn acquire() -> io::Result<Result<ClaimLock, Holder>> {
        let address = UnixAddr::new_abstract(LOCK_NAME)?;
        let socket = new_socket()?;
        match bind(socket.as_raw_fd(), &address) {
            Ok(()) => {
                // Listening lets a rival read our credentials (SO_PEERCRED) to tell us from a
                // squatter. Nobody is ever accepted; the kernel bounds the backlog.
                listen(&socket, nix::sys::socket::Backlog::new(1)?)?;
                Ok(Ok(ClaimLock {
                    _socket: Some(socket),
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

fn new_socket() -> io::Result<OwnedFd> {
    Ok(socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

fn identify_holder(address: &UnixAddr) -> io::Result<Holder> {
    let probe = new_socket()?;
    if connect(probe.as_raw_fd(), address).is_err() {
        // Bound but not listening: no imds-tun does that.
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
