//! How far a token may travel: the IP hop limit of the replies to PUT requests (`--hop-limit`,
//! EC2's `HttpPutResponseHopLimit`).
//!
//! On EC2 the reply to `PUT /latest/api/token` leaves with a small IP TTL, so a client more
//! forwarding hops away than the limit (a container behind the instance's bridge, when the limit
//! is 1) never receives its token: the reply dies at the router that would forward it, and the
//! client's PUT times out. This layer knows which replies those are (the replies to PUT
//! requests: the token request is the only PUT any metadata service answers); the connection
//! below knows how to limit its packets. [`Connection`] is what the server asks of a connection
//! for that, so this layer never sees smoltcp.
//!
//! What a connection does with the request:
//! - the TUN stack's `TcpStream` lowers the hop limit of every packet from the PUT's reply on,
//!   retransmissions included, and lifts it after a later request once the limited reply has been
//!   acknowledged in full (`src/stack/endpoint/reply_hops.rs`), so GET replies go with the normal
//!   hop limit. Its impls of these traits live in the wiring (`src/runtime/stack_connection.rs`):
//!   neither layer imports the other;
//! - a kernel socket from `--listen` is not limited, on purpose: the hop limit measures the
//!   distance from the metadata address, and a `--listen` socket is reached at another address
//!   by clients that are 0 hops from it (loopback; a guest's forwarder reaching the host's
//!   address directly) or by an `--upstream` forwarder that applies its own hop limit to its own
//!   clients. Limiting here would cut off the forwarder, not the distant client;
//! - an in-memory stream (tests, the fuzz target) has no IP header to limit.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

/// Lowers and lifts the IP hop limit of one connection's replies.
pub trait ReplyHops: Send + Sync {
    /// Packets from now on, retransmissions of earlier bytes included, leave with hop limit
    /// `hops`: a PUT's reply is about to be written.
    fn limit(&self, hops: u8);
    /// The reply about to be written needs no limit: go back to the normal hop limit once the
    /// limited reply before it can no longer be retransmitted.
    fn release(&self);
}

/// A connection [`super::Server`] can serve: bytes both ways, and the hop limit of its replies
/// where the transport has one to set.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// How to limit this connection's replies; `None` where they are not limited.
    fn reply_hops(&self) -> Option<Arc<dyn ReplyHops>>;
}

/// Not limited: see the module documentation for why.
impl Connection for tokio::net::TcpStream {
    fn reply_hops(&self) -> Option<Arc<dyn ReplyHops>> {
        None
    }
}

/// In memory (tests, the fuzz target): no IP header to limit.
impl Connection for tokio::io::DuplexStream {
    fn reply_hops(&self) -> Option<Arc<dyn ReplyHops>> {
        None
    }
}

/// Whether the reply to a request with this method goes with the limited hop count.
fn is_limited(method: &http::Method) -> bool {
    method == http::Method::PUT
}

/// What the server does for one request before answering it: limit the hop count for a PUT's
/// reply, release it for any other.
pub(super) fn before_reply(hops: Option<&dyn ReplyHops>, method: &http::Method, limit: u8) {
    let Some(hops) = hops else {
        return;
    };
    if is_limited(method) {
        hops.limit(limit);
    } else {
        hops.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<String>>);

    impl ReplyHops for Recorded {
        fn limit(&self, hops: u8) {
            self.0.lock().expect("lock").push(format!("limit {hops}"));
        }

        fn release(&self) {
            self.0.lock().expect("lock").push("release".into());
        }
    }

    #[test]
    fn a_put_reply_is_limited_and_every_other_reply_releases_the_limit() {
        let recorded = Recorded::default();
        for method in [http::Method::GET, http::Method::PUT, http::Method::HEAD] {
            before_reply(Some(&recorded), &method, 2);
        }
        assert_eq!(
            *recorded.0.lock().expect("lock"),
            ["release", "limit 2", "release"]
        );
        before_reply(None, &http::Method::PUT, 1);
    }
}
