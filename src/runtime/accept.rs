//! The accept loops: connections from the TUN's stack and from the kernel listeners, handed to
//! the same [`Server`], until the runtime stops accepting.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{BoundListener, our_end};
use crate::http::{Access, Server};
use crate::stack::Listener;

/// Hands the stack's connections to `server`. Returning drops the listener: the stack then
/// resets new SYNs.
pub(super) async fn tun(
    mut listener: Listener,
    server: Arc<Server>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Some(stream) => {
                    let peer = stream.peer_addr();
                    server.serve_from(stream, peer, Some(our_end(peer)), Access::Open);
                }
                None => return,
            },
        }
    }
}

/// Hands a kernel listener's connections to `server`, refusing those `--allow-from` does not
/// admit. Returning closes the listener.
pub(super) async fn kernel(
    listener: BoundListener,
    server: Arc<Server>,
    mut stop: watch::Receiver<bool>,
) {
    let BoundListener { socket, settings } = listener;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = socket.accept() => match accepted {
                Ok((stream, peer))
                    if !crate::cidr::allow_from_admits(&settings.allow_from, peer.ip()) =>
                {
                    tracing::debug!(%peer, "refused by --allow-from");
                    // Close with a RST, as the TUN side does, rather than a FIN.
                    let _ = stream.set_zero_linger();
                    drop(stream);
                }
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let ours = stream.local_addr().ok();
                    server.serve_from(stream, peer, ours, settings.access.clone());
                }
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    crate::warn_limited!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}
