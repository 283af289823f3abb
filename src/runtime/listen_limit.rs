//! The kernel listeners' connection limit (`--max-listen-connections`), one for every
//! `--listen` socket together, shared among callers as the TUN's is.
//!
//! Each kernel connection is a descriptor, and a descriptor is what a local user can exhaust:
//! 1,100 held `wait_for_change` requests from one user once kept imds-tun at its limit of 1024
//! descriptors, and then token commands, `/proc` and the control socket failed for everyone.
//! So the live kernel connections are counted, and at the limit the TUN's policy decides who
//! gives way (`crate::stack::admission`, a pure function of a snapshot): the caller holding the
//! most, else a quiet connection, else the newcomer is refused with a RST. Who a connection is
//! charged to is [`Attribution::caller`] (the socket owner's uid for a local caller, else its
//! address), asked only at the limit, off the async threads, once per connection. The runtime
//! keeps the limit below what the open-file limit leaves ([`super::listen_connections`]).
//!
//! A connection's place is a [`Place`], held by its [`KernelConnection`] (the stream the HTTP
//! server serves) and given back when the server drops it; the connection a newcomer evicts is
//! told through [`Place::evicted`] and closed with a RST.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::attribution::{Attribution, Caller};
use crate::http::{Connection, ReplyHops};
use crate::stack::admission::{self, Entry, Room, Stage};

/// The live kernel connections and who may have the next place.
pub(super) struct ListenLimit {
    limit: usize,
    attribution: Arc<Attribution>,
    /// What activity times count from.
    started: Instant,
    table: Mutex<Table>,
    /// One decision at the limit at a time (the listeners' accept loops share the table).
    deciding: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Table {
    /// By id, which grows: the oldest first, so equals are chosen by age.
    live: BTreeMap<u64, Live>,
    next: u64,
}

struct Live {
    peer: SocketAddr,
    local: SocketAddr,
    /// Asked the first time the limit is reached.
    caller: Option<Caller>,
    shared: Arc<Shared>,
}

/// What a place and its table entry share.
#[derive(Debug)]
struct Shared {
    /// When the connection was accepted, in milliseconds since [`ListenLimit::started`].
    opened: u64,
    /// When its client last sent something, the same way; 0 before its first byte.
    heard: AtomicU64,
    evicted: AtomicBool,
    eviction: Notify,
}

impl ListenLimit {
    /// At most `limit` live connections; callers asked of `attribution`.
    pub(super) fn new(limit: usize, attribution: Arc<Attribution>) -> Arc<ListenLimit> {
        Arc::new(ListenLimit {
            limit: limit.max(1),
            attribution,
            started: Instant::now(),
            table: Mutex::new(Table::default()),
            deciding: tokio::sync::Mutex::new(()),
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Milliseconds since the table started; at least 1, so 0 can mean "never".
    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// A place for the connection from `peer` to our `local` end, made at the limit by evicting
    /// another if the policy says so; `None`: refuse it.
    pub(super) async fn admit(
        self: &Arc<Self>,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Option<Place> {
        if let Some(place) = self.below_limit(peer, local) {
            return Some(place);
        }
        let _turn = self.deciding.lock().await;
        // A place may have been given back while this waited its turn.
        if let Some(place) = self.below_limit(peer, local) {
            return Some(place);
        }
        let unknown: Vec<(u64, SocketAddr, SocketAddr)> = self
            .table()
            .live
            .iter()
            .filter(|(_, live)| live.caller.is_none())
            .map(|(&id, live)| (id, live.peer, live.local))
            .collect();
        let attribution = self.attribution.clone();
        // One sock_diag question per local caller: blocking, off the async threads.
        let asked = tokio::task::spawn_blocking(move || {
            let newcomer = attribution.caller(peer, local);
            let answers: Vec<(u64, Caller)> = unknown
                .into_iter()
                .map(|(id, peer, local)| (id, attribution.caller(peer, local)))
                .collect();
            (newcomer, answers)
        })
        .await;
        // The blocking pool is gone (shutting down): what needs no question.
        let (newcomer, answers) = asked.unwrap_or((Caller::Address(peer.ip()), Vec::new()));
        let mut table = self.table();
        for (id, caller) in answers {
            if let Some(live) = table.live.get_mut(&id) {
                live.caller.get_or_insert(caller);
            }
        }
        if table.live.len() < self.limit {
            return Some(self.insert(&mut table, peer, local, Some(newcomer)));
        }
        let now = self.now();
        let snapshot: Vec<Entry<u64>> = table
            .live
            .iter()
            .map(|(&id, live)| entry(id, live, now))
            .collect();
        match admission::make_room(newcomer, &snapshot) {
            Room::Evict { victim, why } => {
                if let Some(gone) = table.live.remove(&victim) {
                    tracing::debug!(
                        peer = %gone.peer,
                        caller = %gone.caller.map_or_else(|| "?".to_owned(), |c| c.to_string()),
                        ?why,
                        "--listen connection limit reached; closing a connection to make room"
                    );
                    gone.shared.evicted.store(true, Ordering::Release);
                    gone.shared.eviction.notify_one();
                }
                Some(self.insert(&mut table, peer, local, Some(newcomer)))
            }
            Room::Refuse => {
                tracing::debug!(%peer, caller = %newcomer, "--listen connection limit reached; refusing");
                None
            }
        }
    }

    /// A place without asking anyone, while there is room.
    fn below_limit(self: &Arc<Self>, peer: SocketAddr, local: SocketAddr) -> Option<Place> {
        let mut table = self.table();
        (table.live.len() < self.limit).then(|| self.insert(&mut table, peer, local, None))
    }

    fn insert(
        self: &Arc<Self>,
        table: &mut Table,
        peer: SocketAddr,
        local: SocketAddr,
        caller: Option<Caller>,
    ) -> Place {
        table.next += 1;
        let id = table.next;
        let shared = Arc::new(Shared {
            opened: self.now(),
            heard: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            eviction: Notify::new(),
        });
        table.live.insert(
            id,
            Live {
                peer,
                local,
                caller,
                shared: shared.clone(),
            },
        );
        Place {
            limit: self.clone(),
            id,
            shared,
        }
    }

    /// Live connections now.
    #[cfg(test)]
    fn live(&self) -> usize {
        self.table().live.len()
    }
}

/// One connection as the policy sees it: silent since it was accepted, or quiet since its
/// client last sent something. A connection whose caller could not be asked is charged to its
/// address.
fn entry(id: u64, live: &Live, now: u64) -> Entry<u64> {
    let heard = live.shared.heard.load(Ordering::Relaxed);
    let (stage, since) = match heard {
        0 => (Stage::Handshake, live.shared.opened),
        heard => (Stage::Accepted, heard),
    };
    Entry {
        id,
        caller: live.caller.unwrap_or(Caller::Address(live.peer.ip())),
        stage,
        quiet_for: Duration::from_millis(now.saturating_sub(since)),
    }
}

/// A connection's place under the limit; given back when dropped.
pub(super) struct Place {
    limit: Arc<ListenLimit>,
    id: u64,
    shared: Arc<Shared>,
}

impl Place {
    /// Completes when a newcomer took this place: the connection must end.
    pub(super) fn evicted(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        async move {
            // `notify_one` keeps a permit, so an eviction before this waits is not lost.
            shared.eviction.notified().await;
        }
    }

    fn heard(&self) {
        self.shared.heard.store(self.limit.now(), Ordering::Relaxed);
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.limit.table().live.remove(&self.id);
    }
}

/// A kernel connection holding its place: what the HTTP server serves for `--listen`. Reads
/// tell the place when the client last spoke; a connection evicted to make room is closed
/// with a RST, as the TUN's are.
pub(super) struct KernelConnection {
    stream: TcpStream,
    place: Place,
}

impl KernelConnection {
    pub(super) fn new(stream: TcpStream, place: Place) -> KernelConnection {
        KernelConnection { stream, place }
    }
}

impl Drop for KernelConnection {
    fn drop(&mut self) {
        if self.place.shared.evicted.load(Ordering::Acquire) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for KernelConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.place.heard();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for KernelConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, slices)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Not hop-limited, as no kernel socket is (see `crate::http::reply_hops`).
impl Connection for KernelConnection {
    fn reply_hops(&self) -> Option<Arc<dyn ReplyHops>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn address(last: u8, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), port)
    }

    const OURS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 8080);

    /// Callers told apart by address (not local, so no kernel question).
    fn limit(places: usize) -> Arc<ListenLimit> {
        ListenLimit::new(places, Arc::new(Attribution::addresses_only()))
    }

    #[tokio::test]
    async fn places_are_given_back_when_a_connection_ends() {
        let limit = limit(2);
        let first = limit.admit(address(2, 1), OURS).await.expect("a place");
        let second = limit.admit(address(3, 1), OURS).await.expect("a place");
        assert_eq!(limit.live(), 2);
        drop(first);
        assert_eq!(limit.live(), 1);
        let third = limit
            .admit(address(4, 1), OURS)
            .await
            .expect("the freed place");
        assert_eq!(limit.live(), 2);
        drop((second, third));
        assert_eq!(limit.live(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_the_caller_holding_most_gives_way_and_a_lone_newcomer_is_refused() {
        let limit = limit(4);
        let mut hog = Vec::new();
        for port in 1..=4 {
            let place = limit.admit(address(9, port), OURS).await.expect("a place");
            place.heard();
            hog.push(place);
        }
        // Another caller gets in: the hog holds 4, more than 0 + 1.
        let victim = limit
            .admit(address(2, 1), OURS)
            .await
            .expect("room is made");
        victim.heard();
        assert_eq!(limit.live(), 4);
        let evicted = hog
            .iter()
            .filter(|place| place.shared.evicted.load(Ordering::Acquire));
        assert_eq!(evicted.count(), 1, "one of the hog's connections gave way");
        let notified = hog
            .iter()
            .find(|place| place.shared.evicted.load(Ordering::Acquire))
            .expect("evicted")
            .evicted();
        tokio::time::timeout(Duration::from_millis(10), notified)
            .await
            .expect("the evicted connection is told");
        // The hog cannot take it back while it holds more than the victim, and nothing is
        // quiet long enough to recycle: refused.
        assert!(limit.admit(address(9, 5), OURS).await.is_none());
        drop(victim);
    }
}
