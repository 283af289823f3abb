//! The connection table: every connection the endpoint holds, each with its one smoltcp socket
//! alone in a `SocketSet` of its own, found by its [`ConnectionId`] or by the client's endpoint,
//! and the count of live connections the limit is checked against.
//!
//! A connection's life is its [`Phase`]; moving between phases goes through
//! [`Connection::enter`], which keeps the live count true without a walk over the table (a test
//! recounts it after every poll). The table decides nothing: the endpoint opens, evicts and reaps
//! connections, and [`super::admission`] chooses whom to evict from [`Table::snapshot`].

use super::StackConfig;
use super::admission::{Entry, Stage};
use super::reply_hops::ReplyHops;
use super::schedule::{ConnectionId, Slot};
use crate::attribution::Caller;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpEndpoint};
use std::collections::HashMap;

/// What a connection is known by: the client's endpoint and the address it dialled (with
/// `--ecs` or `--eks-pod-identity` there are several, and a client's kernel may use one source
/// port for two of them at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Flow {
    /// The client's address and port.
    pub(crate) peer: IpEndpoint,
    /// Ours: the address the client's SYN was sent to.
    pub(crate) local: IpAddress,
}

/// One connection.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) peer: IpEndpoint,
    /// The address the client dialled, which the socket listens on and answers from.
    pub(crate) local: IpAddress,
    pub(crate) phase: Phase,
    /// When the client last sent data (or its SYN); the idlest connection is evicted first.
    pub(crate) last_activity: Instant,
    /// Who the connection is charged to; asked for the first time the limit is reached, or
    /// known from the start for a connection admitted at the limit.
    pub(crate) caller: Option<Caller>,
    /// Whether its packets go with a lowered hop limit, and when that may end.
    pub(crate) hops: ReplyHops,
    /// Waiting for its limited reply to be acknowledged before the hop limit is lifted.
    pub(crate) releasing: bool,
    /// The connection's one socket, alone in its set.
    pub(crate) socket: SocketSet<'static>,
    handle: SocketHandle,
    pub(crate) slot: Slot,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Handshake under way, or connected and silent; no stream exists.
    Handshake,
    /// A stream owns it.
    Accepted,
    /// Reset to make room at the limit; its stream still owns it until it drops.
    Evicted,
    /// The stream was dropped at `since`; reap once closed or after the linger time.
    Detached { since: Instant },
}

impl Connection {
    /// What it is known by.
    #[inline]
    pub(crate) fn flow(&self) -> Flow {
        Flow {
            peer: self.peer,
            local: self.local,
        }
    }

    #[inline]
    pub(crate) fn tcp(&mut self) -> &mut tcp::Socket<'static> {
        self.socket.get_mut::<tcp::Socket>(self.handle)
    }

    #[inline]
    pub(crate) fn tcp_ref(&self) -> &tcp::Socket<'static> {
        self.socket.get::<tcp::Socket>(self.handle)
    }

    /// Whether it counts against the limit: handshaking or owned by a stream. Closing ones do
    /// not; they are bounded by the linger time.
    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Handshake | Phase::Accepted)
    }

    /// Moves to `phase`, keeping the count of live connections true.
    #[inline]
    pub(crate) fn enter(&mut self, phase: Phase, live: &mut usize) {
        let was_live = self.is_live();
        self.phase = phase;
        match (was_live, self.is_live()) {
            (true, false) => *live -= 1,
            (false, true) => *live += 1,
            _ => {}
        }
    }

    /// Lifts the hop limit once the limited bytes are acknowledged.
    pub(crate) fn lift_acknowledged_hop_limit(&mut self) {
        let acknowledged = {
            let send_queue = self.tcp_ref().send_queue();
            self.hops.acknowledged(send_queue)
        };
        if acknowledged {
            self.tcp().set_hop_limit(None);
        }
        self.releasing = self.hops.releasing();
    }

    /// When this connection needs a poll of its own: the earlier of smoltcp's timer and ours.
    pub(crate) fn next_deadline(
        &self,
        socket_poll_at: Option<Instant>,
        config: &StackConfig,
    ) -> Option<Instant> {
        let own = match self.phase {
            Phase::Detached { since } => Some(since + config.linger),
            // Connected but silent; a handshake's own timer belongs to smoltcp.
            Phase::Handshake if self.tcp_ref().state() == tcp::State::Established => {
                Some(self.last_activity + config.first_data_timeout)
            }
            _ => None,
        };
        [socket_poll_at, own].into_iter().flatten().min()
    }
}

/// Every connection, by id and by client endpoint.
///
/// The small methods on the per-packet path here, in `schedule.rs` and `ingress.rs` carry
/// `#[inline]`: they lived in one module before the endpoint was split, and across codegen units
/// the compiler no longer inlined them (callgrind: about 0.5k more instructions per new
/// connection, docs/performance.md).
///
/// The two maps hash differently on purpose. `by_peer` is keyed by what clients choose (their
/// address and port): SipHash with a per-process key, so nobody can aim a flood of SYNs at one
/// bucket. `connections` is keyed by ids this table hands out in sequence, which nobody else
/// chooses: FNV, a few instructions instead of SipHash's ~100, on the lookups every stream
/// operation and every poll makes (callgrind, docs/performance.md).
#[derive(Debug, Default)]
pub(crate) struct Table {
    by_peer: HashMap<Flow, ConnectionId>,
    pub(crate) connections: HashMap<ConnectionId, Connection, fnv::FnvBuildHasher>,
    /// Connections handshaking or owned by a stream: those counted against the limit.
    pub(crate) live: usize,
    next_id: u64,
}

impl Table {
    /// The connection `flow`'s packets belong to, if any: the one lookup per packet.
    #[inline]
    pub(crate) fn owner(&self, flow: &Flow) -> Option<ConnectionId> {
        self.by_peer.get(flow).copied()
    }

    /// Adds a live connection in [`Phase::Handshake`] for `flow`, whose socket is `handle` in
    /// `socket`, and returns its new id (never one used before).
    #[inline]
    pub(crate) fn insert(
        &mut self,
        flow: Flow,
        socket: SocketSet<'static>,
        handle: SocketHandle,
        caller: Option<Caller>,
        now: Instant,
    ) -> ConnectionId {
        self.next_id += 1;
        let id = ConnectionId(self.next_id);
        self.by_peer.insert(flow, id);
        self.live += 1;
        self.connections.insert(
            id,
            Connection {
                peer: flow.peer,
                local: flow.local,
                phase: Phase::Handshake,
                last_activity: now,
                caller,
                hops: ReplyHops::default(),
                releasing: false,
                socket,
                handle,
                slot: Slot::default(),
            },
        );
        id
    }

    /// Takes `id` out of the table; its schedule entry is the caller's to forget.
    #[inline]
    pub(crate) fn remove(&mut self, id: ConnectionId) -> Option<Connection> {
        let connection = self.connections.remove(&id)?;
        if connection.is_live() {
            self.live -= 1;
        }
        let flow = connection.flow();
        if self.by_peer.get(&flow) == Some(&id) {
            self.by_peer.remove(&flow);
        }
        Some(connection)
    }

    /// The live connections whose caller is not known yet.
    pub(crate) fn unknown_callers(&self) -> impl Iterator<Item = (ConnectionId, Flow)> + '_ {
        self.connections
            .iter()
            .filter(|(_, connection)| connection.is_live() && connection.caller.is_none())
            .map(|(&id, connection)| (id, connection.flow()))
    }

    /// The live connections as [`super::admission`] sees them, into `into`; `false` (and
    /// `into` incomplete) if a live connection's caller is not known yet.
    pub(crate) fn snapshot(&self, now: Instant, into: &mut Vec<Entry>) -> bool {
        into.clear();
        for (&id, connection) in &self.connections {
            let stage = match connection.phase {
                Phase::Handshake => Stage::Handshake,
                Phase::Accepted => Stage::Accepted,
                Phase::Evicted | Phase::Detached { .. } => continue,
            };
            let Some(caller) = connection.caller else {
                return false;
            };
            let quiet_for = if now > connection.last_activity {
                (now - connection.last_activity).into()
            } else {
                std::time::Duration::ZERO
            };
            into.push(Entry {
                id,
                caller,
                stage,
                quiet_for,
            });
        }
        true
    }
}
