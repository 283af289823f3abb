//! The accept loops: connections from the TUN's stack and from the kernel listeners, handed to
//! the same [`Server`], until the runtime stops accepting. The stack's driver hands its
//! connections over itself ([`tun_hand_off`]); its loop only holds the door. A kernel
//! connection first needs a place under the `--listen` connection limit (`listen_limit`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::BoundListener;
use super::counting::counted_until;
use super::listen_limit::{KernelConnection, ListenLimit};
use crate::http::{Access, Server};
use crate::metrics::{Metrics, Refusal};
use crate::stack::{Door, TcpStream};

/// How a kernel connection finds out its client vanished without a word (its host or network
/// namespace went away: no FIN, no RST) while its answer is pending: after this long without a
/// packet from the client...
const PROBE_AFTER: Duration = Duration::from_secs(2);
/// ...it is probed this often...
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// ...and given up after this many probes go unanswered: about 4 s after the last packet.
const PROBES: u32 = 2;

/// What the stack's driver calls with each connection whose client has spoken: serve it. It runs
/// in the driver's task, and only spawns (see `stack::runtime::driver`).
pub(super) fn tun_hand_off(
    server: Arc<Server>,
    metrics: Metrics,
) -> impl FnMut(TcpStream) + Send + 'static {
    move |stream| {
        let peer = stream.peer_addr();
        // The address the SYN was sent to: which endpoint the client dialled.
        let ours = stream.local_addr();
        server.serve_until(
            stream,
            peer,
            Some(ours),
            Access::Open,
            counted_until(metrics.connection_opened(), std::future::pending()),
        );
    }
}

/// Holds the stack's door open until the runtime stops accepting; dropping it then makes the
/// stack reset new SYNs.
pub(super) async fn tun(door: Door, mut stop: watch::Receiver<bool>) {
    // An error means the runtime is gone: close the door all the same.
    let _ = stop.changed().await;
    drop(door);
}

/// Hands a kernel listener's connections to `server`, refusing those `--allow-from` does not
/// admit and those `limit` has no place for. Returning closes the listener.
pub(super) async fn kernel(
    listener: BoundListener,
    server: Arc<Server>,
    limit: Arc<ListenLimit>,
    metrics: Metrics,
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
                    metrics.refused(Refusal::ListenAllowFrom);
                    // Close with a RST, as the TUN side does, rather than a FIN.
                    let _ = stream.set_zero_linger();
                    drop(stream);
                }
                Ok((stream, peer)) => {
                    let Ok(ours) = stream.local_addr() else {
                        // Reset between accept and here.
                        continue;
                    };
                    let Some(place) = limit.admit(peer, ours).await else {
                        // Refused at the limit: a RST, as the TUN refuses a SYN.
                        metrics.refused(Refusal::ListenConnectionLimit);
                        let _ = stream.set_zero_linger();
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    if let Err(error) =
                        crate::platform::resources::probe_quiet_peer(&stream, PROBE_AFTER, PROBE_EVERY, PROBES)
                    {
                        tracing::debug!(%peer, %error, "cannot set keep-alive probes");
                    }
                    let evicted = place.evicted();
                    server.serve_until(
                        KernelConnection::new(stream, place),
                        peer,
                        Some(ours),
                        settings.access.clone(),
                        counted_until(metrics.connection_opened(), evicted),
                    );
                }
                Err(error) => {
                    // EMFILE and friends (the limit is kept below the open-file limit, so these
                    // mean something else holds descriptors): back off instead of spinning.
                    crate::warn_limited!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}
