//! Who is on the other end of a connection, so the connection limit is shared fairly.
//!
//! Every local process reaches the TUN from the same source address, so an address alone cannot
//! tell one user's flood from another user's request. A local connection is attributed to the
//! user who owns the connecting socket (the kernel knows it; see [`LocalSocketOwners`]); a
//! connection forwarded from elsewhere (a container, a guest) to its source address.
//!
//! The stack asks only when it must choose a victim at the limit, and remembers the answer per
//! connection, so the common path costs nothing.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

/// The party a connection is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A local process of this user.
    User(u32),
    /// Anything arriving from this source address whose owner is not known.
    Address(Ipv4Addr),
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::User(uid) => write!(f, "uid {uid}"),
            Caller::Address(address) => write!(f, "{address}"),
        }
    }
}

/// Tells callers apart.
pub trait Identify: Send {
    /// The caller behind the connection from `client` to our `server` endpoint.
    fn identify(&mut self, client: SocketAddrV4, server: SocketAddrV4) -> Caller;
}

/// Attribution by source address only: what is known without asking the kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct BySourceAddress;

impl Identify for BySourceAddress {
    fn identify(&mut self, client: SocketAddrV4, _server: SocketAddrV4) -> Caller {
        Caller::Address(*client.ip())
    }
}

/// Attribution of local connections to the owner of the client socket (Linux sock_diag).
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub struct LocalSocketOwners {
    owners: crate::platform::netlink::SocketOwners,
    /// The source address local processes use (our side of the point-to-point link).
    local_source: Ipv4Addr,
}

#[cfg(target_os = "linux")]
impl LocalSocketOwners {
    /// Opens the netlink socket now, while this process may still open anything it needs.
    pub fn open(local_source: Ipv4Addr) -> std::io::Result<LocalSocketOwners> {
        Ok(LocalSocketOwners {
            owners: crate::platform::netlink::SocketOwners::open()?,
            local_source,
        })
    }
}

#[cfg(target_os = "linux")]
impl Identify for LocalSocketOwners {
    fn identify(&mut self, client: SocketAddrV4, server: SocketAddrV4) -> Caller {
        if *client.ip() != self.local_source {
            return Caller::Address(*client.ip());
        }
        match self.owners.owner(client, server) {
            Ok(Some(owner)) => Caller::User(owner.uid),
            // Closed already, or not ours to see: charge the shared local address.
            Ok(None) | Err(_) => Caller::Address(*client.ip()),
        }
    }
}
