//! The sans-IO TCP endpoint for `169.254.169.254:80` (and, with `--ipv6`, `[fd00:ec2::254]:80`;
//! with `--ecs` and `--eks-pod-identity` also the container endpoints' addresses, port 80):
//! packets in, packets and connections out.
//!
//! It owns the smoltcp [`Interface`], one smoltcp socket per connection and the bookkeeping
//! smoltcp leaves to its user. It does no I/O and reads no clock: the caller passes `now`, moves
//! packets, and answers the endpoint's questions about who is calling ([`CallerQuestions`]), so
//! tests drive it entirely in memory. Its runtime, the task, the lock and the device, is
//! [`super::runtime`].
//!
//! - `ingress`: what a packet is before smoltcp sees it (the packet filter, `--allow-from`).
//! - `table`: the connections, by id and by client endpoint, and the live count.
//! - `admission`: who gives way at the connection limit, a pure function of a snapshot.
//! - `callers`: the questions about callers the endpoint needs answered at the limit.
//! - `reply_hops`: when a lowered IP hop limit may be lifted again.
//! - `schedule`: which connections a poll visits.
//! - `device`: [`PacketQueues`], the in-memory packet queues smoltcp reads and writes.
//!
//! Read before changing:
//! - smoltcp has no listen backlog: one socket serves one connection. A socket is created when a
//!   SYN for a new 4-tuple arrives, *before* smoltcp sees the packet, and packets are fed one at a
//!   time so a burst of SYNs cannot outrun socket creation.
//! - Each connection's socket sits alone in a `SocketSet` of its own, and a packet is handed to
//!   smoltcp together with the set of the connection it belongs to (looked up by the client's
//!   endpoint, once per packet), or with an empty set when none does (smoltcp then answers with a
//!   RST, or an echo reply). smoltcp walks the whole set it is given for every packet and every
//!   poll; with one shared set that walk was most of the work per packet once hundreds of clients
//!   were connected (docs/performance.md). [`Endpoint::poll`] visits only the connections the
//!   `schedule` names: touched since the last poll, or with a timer due.
//! - A connection is keyed by the client's endpoint and the address it dialled (a `Flow`), and
//!   its socket listens on that address, so smoltcp answers from the address the SYN was sent
//!   to. Because packets go to the connection keyed so, a retransmitted SYN
//!   reaches the socket already answering it instead of creating a second one.
//! - Connections are known by a [`ConnectionId`] that is never reused, so a stream or hop-limit
//!   handle that outlives its connection finds nothing rather than another connection.
//! - Connections are handed out by [`Endpoint::poll`] once ESTABLISHED *and* the client has sent
//!   its first byte (or its FIN), so half-open handshakes and silent connections cost no HTTP
//!   task; a connection silent for `first_data_timeout` is reset here.
//! - A detached connection is reaped only after a poll: one that reached TIME-WAIT on the packet
//!   just received still owes the client the ACK of its FIN, and only the poll sends it.
//! - A connection's IP hop limit is lowered for a token reply and lifted again only once that
//!   reply is acknowledged (`reply_hops.rs` says why).
//! - A SYN that finds the table full may be held until its runtime says who is calling
//!   (`callers.rs`); nothing else waits on the runtime. The runtime answers before it feeds any
//!   packet read later. The rest of the SYN's own read batch goes first, which does no harm: a
//!   client waiting for our SYN-ACK sends nothing but the SYN again, or a RST that its kernel
//!   repeats when the late SYN-ACK arrives (the socket is then reaped at once).

pub(crate) mod admission;
pub mod budget;
mod callers;
mod device;
mod ingress;
mod reply_hops;
mod schedule;
mod table;

pub use callers::{CallerAnswers, CallerQuestions, Question};
pub use device::PacketQueues;
pub use schedule::ConnectionId;

use self::admission::{Entry, Room};
use self::budget::{Bucket, PacketBudget};
use self::callers::{Held, MAX_HELD, Subject, socket_addr};
use self::ingress::Ingress;
use self::schedule::Schedule;
use self::table::{Flow, Phase, Table};
use crate::attribution::Caller;
use crate::metrics::Refusal;
use smoltcp::iface::{Config, Interface, PollResult, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What the endpoint is and how much it may hold.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The IPv4 address served (`169.254.169.254`).
    pub address: Ipv4Addr,
    /// The IPv6 address served too, if any (`--ipv6`: `fd00:ec2::254`).
    pub address_v6: Option<Ipv6Addr>,
    /// More addresses served on the same port (`--ecs`: `169.254.170.2`; `--eks-pod-identity`:
    /// `169.254.170.23`, and `fd00:ec2::23` with `--ipv6`); an IPv6 one only with
    /// `address_v6`. At most [`MAX_EXTRA_ADDRESSES`] are used.
    pub extra_addresses: Vec<IpAddr>,
    /// The TCP port served (80).
    pub port: u16,
    /// The largest IP packet, in bytes.
    pub mtu: usize,
    /// Connections beyond this are refused with a RST (the client sees ECONNREFUSED).
    pub max_connections: usize,
    /// Each connection's receive buffer, in bytes.
    pub receive_buffer: usize,
    /// Each connection's send buffer, in bytes.
    pub send_buffer: usize,
    /// How long an unacknowledged segment or handshake may wait before smoltcp gives up, and
    /// how long a connection may go without a packet from its client; idle connections are
    /// probed (keep-alive) three times within it, and a live client's kernel answers.
    pub retransmit_timeout: Duration,
    /// How long a connection whose stream is gone may linger before it is reset.
    pub linger: Duration,
    /// How long a connected client may stay silent before its first byte; then it is reset.
    /// (After the first byte, the HTTP layer's header timeout takes over.)
    pub first_data_timeout: Duration,
    /// Packets to the served addresses beyond this many a second are dropped before TCP, as
    /// EC2 drops link-local packets beyond 1024 (`--packet-budget`); `None`: no budget.
    pub packet_budget: Option<u32>,
    /// Seeds initial sequence numbers; take it from the OS RNG.
    pub random_seed: u64,
    /// Client networks allowed to connect (`--allow-from`); empty allows all. Others get a RST.
    pub allow_from: Vec<crate::cidr::IpNet>,
}

impl StackConfig {
    /// The defaults for everything but what is named.
    pub fn new(address: Ipv4Addr, port: u16, mtu: usize, max_connections: usize) -> Self {
        StackConfig {
            address,
            address_v6: None,
            extra_addresses: Vec::new(),
            port,
            mtu,
            max_connections,
            receive_buffer: 4 * 1024,
            send_buffer: 8 * 1024,
            retransmit_timeout: Duration::from_secs(10),
            linger: Duration::from_secs(5),
            first_data_timeout: Duration::from_secs(10),
            packet_budget: None,
            random_seed: 0,
            allow_from: Vec::new(),
        }
    }
}

/// How many extra addresses the interface holds beside the two of the metadata service: the
/// smoltcp feature `iface-max-addr-count-5` makes room for five in all.
pub const MAX_EXTRA_ADDRESSES: usize = 3;

impl StackConfig {
    /// Whether `address` is one the endpoint serves: a packet to any other is dropped.
    #[inline]
    pub(crate) fn serves(&self, address: IpAddress) -> bool {
        match address {
            IpAddress::Ipv4(v4) => {
                v4 == self.address || self.extra().any(|extra| extra == IpAddr::V4(v4))
            }
            IpAddress::Ipv6(v6) => {
                self.address_v6 == Some(v6)
                    || (self.address_v6.is_some()
                        && self.extra().any(|extra| extra == IpAddr::V6(v6)))
            }
        }
    }

    /// The extra addresses used (an IPv6 one only with an IPv6 address of our own).
    fn extra(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.extra_addresses
            .iter()
            .copied()
            .take(MAX_EXTRA_ADDRESSES)
    }
}

/// How often an idle connection is probed: three probes fit in the retransmission timeout, so
/// one lost probe does not end a live client's connection.
fn keep_alive_interval(timeout: Duration) -> Duration {
    timeout / 3
}

/// A connection that completed its handshake and whose client has spoken: ready for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Established {
    /// Its key for the life of the endpoint.
    pub id: ConnectionId,
    /// The client's end.
    pub peer: SocketAddr,
    /// Ours: the address and port the client dialled.
    pub local: SocketAddr,
}

/// What became of a packet given to [`Endpoint::receive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Not for us, or nothing we serve: dropped without a reply.
    Dropped,
    /// Given to smoltcp, with its connection's socket, or with none (then smoltcp answers a
    /// segment with a RST and an echo request with a reply).
    Delivered,
    /// A SYN that found the table full, held until the callers it needs are known: see
    /// [`Endpoint::caller_questions`].
    Held,
}

/// What [`Endpoint::open_for`] did for a SYN.
enum Opening {
    Opened(ConnectionId),
    /// No new socket: refused, or a retransmission for the socket already serving the peer.
    NotOpened,
    /// Waiting for callers to be known.
    Held,
}

/// The TCP endpoint.
pub struct Endpoint {
    config: StackConfig,
    interface: Interface,
    device: PacketQueues,
    /// What smoltcp is given for a packet no connection owns: it answers from an empty set.
    no_socket: SocketSet<'static>,
    table: Table,
    schedule: Schedule,
    /// SYNs waiting for callers, in arrival order.
    held: Vec<Held>,
    /// Reused for the snapshot admission chooses from.
    snapshot: Vec<Entry>,
    /// False once the application stopped accepting: new SYNs are reset.
    accepting: bool,
    /// Where refused connections are counted (an atomic add; no I/O).
    metrics: crate::metrics::Metrics,
    /// The packet budget in force (changed by the control channel) and its drops.
    budget: PacketBudget,
    /// What of the budget is left now.
    bucket: Bucket,
    /// Connections visited by polls so far: what a test checks to see that idle ones are not.
    #[cfg(test)]
    visits: usize,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("config", &self.config)
            .field("connections", &self.table.connections.len())
            .field("held", &self.held.len())
            .finish()
    }
}

impl Endpoint {
    /// An endpoint serving what `config` names, its clock starting at `now`.
    pub fn new(config: StackConfig, now: Instant) -> Self {
        let mut device = PacketQueues::new(config.mtu);
        let mut interface_config = Config::new(HardwareAddress::Ip);
        interface_config.random_seed = config.random_seed;
        let mut interface = Interface::new(interface_config, &mut device, now);
        let address: Ipv4Address = config.address;
        interface.update_ip_addrs(|addrs| {
            // Capacity is IFACE_MAX_ADDR_COUNT (5, a feature in Cargo.toml): the metadata
            // service's two and MAX_EXTRA_ADDRESSES fit.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(address), 32));
            if let Some(v6) = config.address_v6 {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(v6), 128));
            }
            for extra in config.extra() {
                if config.serves(extra.into()) {
                    let length = if extra.is_ipv6() { 128 } else { 32 };
                    let _ = addrs.push(IpCidr::new(extra.into(), length));
                }
            }
        });
        // Replies need a route back to clients; with Medium::Ip a default route via our own
        // address is enough, and without it smoltcp goes silent for a second per new peer.
        // IFACE_MAX_ROUTE_COUNT (2) holds both.
        let _ = interface.routes_mut().add_default_ipv4_route(address);
        if let Some(v6) = config.address_v6 {
            let _ = interface.routes_mut().add_default_ipv6_route(v6);
        }
        let budget = PacketBudget::new(config.packet_budget);
        Endpoint {
            config,
            interface,
            device,
            no_socket: SocketSet::new(Vec::new()),
            table: Table::default(),
            schedule: Schedule::default(),
            held: Vec::new(),
            snapshot: Vec::new(),
            accepting: true,
            metrics: crate::metrics::Metrics::default(),
            budget,
            bucket: Bucket::default(),
            #[cfg(test)]
            visits: 0,
        }
    }

    /// The same endpoint, counting the connections it refuses into `metrics`.
    pub fn counting_into(self, metrics: crate::metrics::Metrics) -> Self {
        Endpoint { metrics, ..self }
    }

    /// The packet budget this endpoint drops by, for the control channel to change.
    pub fn packet_budget(&self) -> PacketBudget {
        self.budget.clone()
    }

    /// Connections held, in any phase.
    pub fn connection_count(&self) -> usize {
        self.table.connections.len()
    }

    /// Processes one packet read from the TUN.
    ///
    /// Only TCP and ICMP (ICMPv6) addressed to us reach smoltcp (which answers echo requests and
    /// resets connections to closed ports); anything else is dropped here without a reply.
    pub fn receive(&mut self, packet: Vec<u8>, now: Instant) -> Received {
        let ingress = ingress::classify(&self.config, &packet);
        // Beyond the budget a packet we serve is dropped before TCP, silently, as EC2 drops
        // link-local packets beyond its allowance; the client's kernel retransmits.
        if ingress != Ingress::Drop && !self.bucket.admit(&self.budget, now) {
            self.metrics.packet_over_budget();
            return Received::Dropped;
        }
        let (owner, carries_data) = match ingress {
            Ingress::Drop => return Received::Dropped,
            Ingress::NewConnection(flow) => return self.receive_syn(packet, flow, None, now),
            Ingress::Data(flow) => (self.table.owner(&flow), true),
            Ingress::Segment(flow) => (self.table.owner(&flow), false),
            Ingress::Icmp => (None, false),
        };
        self.deliver(packet, owner, carries_data, now);
        Received::Delivered
    }

    /// A SYN to our port along `flow`, charged to `caller` if known.
    fn receive_syn(
        &mut self,
        packet: Vec<u8>,
        flow: Flow,
        caller: Option<Caller>,
        now: Instant,
    ) -> Received {
        let opened = match self.open_for(flow, now, caller) {
            Opening::Held => {
                self.held.push(Held {
                    packet,
                    flow,
                    caller,
                });
                return Received::Held;
            }
            Opening::Opened(id) => Some(id),
            Opening::NotOpened => None,
        };
        let owner = opened.or_else(|| self.table.owner(&flow));
        self.deliver(packet, owner, false, now);
        // smoltcp rejected the SYN (bad checksum, bad options): a socket left listening would
        // count against the limit forever and could swallow another client's SYN.
        if let Some(id) = opened
            && self
                .table
                .connections
                .get(&id)
                .is_some_and(|connection| connection.tcp_ref().state() == tcp::State::Listen)
        {
            self.remove(id);
        }
        Received::Delivered
    }

    /// Hands `packet` to smoltcp with the socket of `owner`, or with none.
    fn deliver(
        &mut self,
        packet: Vec<u8>,
        owner: Option<ConnectionId>,
        carries_data: bool,
        now: Instant,
    ) {
        self.device.receive.push_back(packet);
        match owner.and_then(|id| Some((id, self.table.connections.get_mut(&id)?))) {
            Some((id, connection)) => {
                if carries_data {
                    connection.last_activity = now;
                }
                self.interface
                    .poll_ingress_single(now, &mut self.device, &mut connection.socket);
                self.schedule.mark_ready(id, &mut connection.slot);
            }
            None => {
                self.interface
                    .poll_ingress_single(now, &mut self.device, &mut self.no_socket);
            }
        }
        self.device.receive.clear();
    }

    /// Who the endpoint must know about before it can admit the SYNs it holds at the limit:
    /// each held SYN's client not yet known, and each live connection whose caller is not
    /// known. `None` when no SYN is held (the common case, asked once per round: one branch).
    #[inline]
    pub fn caller_questions(&self) -> Option<CallerQuestions> {
        if self.held.is_empty() {
            return None;
        }
        Some(self.questions())
    }

    fn questions(&self) -> CallerQuestions {
        let mut questions = CallerQuestions::default();
        let mut asked: Vec<Flow> = Vec::new();
        for held in &self.held {
            if held.caller.is_none() && !asked.contains(&held.flow) {
                asked.push(held.flow);
                questions.push(
                    Subject::Newcomer(held.flow),
                    held.flow.peer,
                    self.server_for(held.flow),
                );
            }
        }
        for (id, flow) in self.table.unknown_callers() {
            questions.push(Subject::Connection(id), flow.peer, self.server_for(flow));
        }
        questions
    }

    /// Takes the answers to [`Endpoint::caller_questions`] and feeds the held SYNs whose caller
    /// is now known again, in their order. An answer about a connection that is gone by now is
    /// dropped; a SYN held after the questions were asked stays held.
    pub fn answer_callers(&mut self, answers: CallerAnswers, now: Instant) {
        for (about, caller) in answers.into_inner() {
            match about {
                Subject::Connection(id) => {
                    if let Some(connection) = self.table.connections.get_mut(&id) {
                        connection.caller.get_or_insert(caller);
                    }
                }
                Subject::Newcomer(flow) => {
                    for held in self.held.iter_mut().filter(|held| held.flow == flow) {
                        held.caller.get_or_insert(caller);
                    }
                }
            }
        }
        let held = std::mem::take(&mut self.held);
        for held in held {
            match held.caller {
                // Held again if a live connection is still unknown (opened since the question).
                Some(caller) => {
                    let _ = self.receive_syn(held.packet, held.flow, Some(caller), now);
                }
                None => self.held.push(held),
            }
        }
    }

    /// Runs the timers that are due and emits everything the connections touched since the
    /// last poll have to send, then returns the connections ready for a stream (established,
    /// and the client's first byte or FIN arrived) and reaps finished ones. Connections with
    /// nothing to do are not visited.
    pub fn poll(&mut self, now: Instant) -> Vec<Established> {
        let mut established = Vec::new();
        for id in self.schedule.start_round(now) {
            self.visit(id, now, &mut established);
        }
        established
    }

    /// Packets to write to the TUN, in order.
    pub fn transmit_queue(&mut self) -> &mut std::collections::VecDeque<Vec<u8>> {
        &mut self.device.transmit
    }

    /// Hands a written packet buffer back for reuse.
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        self.device.recycle(buffer);
    }

    /// When the endpoint next needs [`Endpoint::poll`] even if no packet arrives; `None`: only
    /// on input.
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        self.schedule
            .next_wake(now)
            .map(|at| if at > now { at - now } else { Duration::ZERO })
    }

    /// The TCP socket of a connection, for its stream; `None` if it was reaped. The connection
    /// is visited by the next poll, which sends whatever the stream queued or reopened.
    pub fn socket(&mut self, id: ConnectionId) -> Option<&mut tcp::Socket<'static>> {
        let connection = self.table.connections.get_mut(&id)?;
        self.schedule.mark_ready(id, &mut connection.slot);
        Some(connection.tcp())
    }

    /// From now on every packet of the connection, retransmissions of earlier bytes included,
    /// leaves with IP hop limit (TTL) `hops`. Ignored for a connection that is gone.
    pub fn limit_reply_hops(&mut self, id: ConnectionId, hops: u8) {
        let Some(connection) = self.table.connections.get_mut(&id) else {
            return;
        };
        connection.hops.limit();
        connection.releasing = false;
        // smoltcp refuses 0; the configuration never gives it.
        connection.tcp().set_hop_limit(Some(hops.max(1)));
    }

    /// The replies from now on need no limit: back to the normal hop limit as soon as every
    /// byte written so far is acknowledged (see `reply_hops.rs`).
    pub fn release_reply_hops(&mut self, id: ConnectionId) {
        let Some(connection) = self.table.connections.get_mut(&id) else {
            return;
        };
        if connection.hops.release() {
            connection.releasing = true;
            // The common case: the client acknowledged the limited reply with its next request.
            connection.lift_acknowledged_hop_limit();
        }
    }

    /// The stream queued `queued` bytes on the socket; `holds_more` when it was offered more
    /// than fitted (its writer still holds bytes).
    pub fn wrote(&mut self, id: ConnectionId, queued: usize, holds_more: bool) {
        if let Some(connection) = self.table.connections.get_mut(&id) {
            connection.hops.wrote(queued, holds_more);
        }
    }

    /// The stream for `id` was dropped: close our side and forget it once TCP is done.
    pub fn detach(&mut self, id: ConnectionId, now: Instant) {
        let Some(connection) = self.table.connections.get_mut(&id) else {
            return;
        };
        connection.enter(Phase::Detached { since: now }, &mut self.table.live);
        connection.tcp().close();
        self.schedule.mark_ready(id, &mut connection.slot);
    }

    /// The application accepts no more connections: reset handshakes not yet handed out, and
    /// answer every new SYN with a RST.
    pub fn refuse_new_connections(&mut self, now: Instant) {
        self.accepting = false;
        for (&id, connection) in &mut self.table.connections {
            if connection.phase == Phase::Handshake {
                connection.tcp().abort();
                connection.enter(Phase::Detached { since: now }, &mut self.table.live);
                self.schedule.mark_ready(id, &mut connection.slot);
            }
        }
    }

    /// Resets every connection (used when the process gives up on graceful shutdown).
    pub fn abort_all(&mut self) {
        for (&id, connection) in &mut self.table.connections {
            connection.tcp().abort();
            self.schedule.mark_ready(id, &mut connection.slot);
        }
    }

    /// One connection's turn in a poll: reset it if it overstayed, send what it has to send,
    /// hand it out or reap it, and schedule its next turn.
    fn visit(&mut self, id: ConnectionId, now: Instant, established: &mut Vec<Established>) {
        let Some(connection) = self.table.connections.get_mut(&id) else {
            return;
        };
        if !self.schedule.visit(&mut connection.slot) {
            return;
        }
        #[cfg(test)]
        {
            self.visits += 1;
        }
        let config = &self.config;
        let live = &mut self.table.live;
        // Resets first, so they leave in this turn.
        match connection.phase {
            Phase::Detached { since } if now >= since + config.linger => {
                // The peer never finished closing.
                connection.tcp().abort();
            }
            // Connected but silent: no stream (and no HTTP buffers) until the first byte, so an
            // idle connection costs only its socket; one silent too long is reset.
            Phase::Handshake
                if connection.tcp_ref().state() == tcp::State::Established
                    && connection.tcp_ref().recv_queue() == 0
                    && now >= connection.last_activity + config.first_data_timeout =>
            {
                tracing::debug!(peer = %connection.peer, "connected but sent nothing; resetting");
                connection.tcp().abort();
                connection.enter(Phase::Detached { since: now }, live);
            }
            _ => {}
        }
        // smoltcp sends at most one packet per socket per call.
        while matches!(
            self.interface
                .poll_egress(now, &mut self.device, &mut connection.socket),
            PollResult::SocketStateChanged
        ) {}
        if connection.releasing {
            connection.lift_acknowledged_hop_limit();
        }
        let state = connection.tcp_ref().state();
        let finished = match connection.phase {
            Phase::Handshake => match state {
                tcp::State::SynReceived => false,
                // Back in LISTEN: the client answered our SYN-ACK with a RST (as a kernel does
                // for a SYN it never sent), and smoltcp went back to listening. Nobody else's
                // SYN reaches this socket, so it only held a slot.
                tcp::State::Listen | tcp::State::Closed | tcp::State::TimeWait => true,
                tcp::State::Established if connection.tcp_ref().recv_queue() == 0 => false,
                // Data arrived, or the connection is already past ESTABLISHED (a client that
                // sent its request and FIN at once): the request deserves a stream.
                _ => {
                    connection.enter(Phase::Accepted, live);
                    established.push(Established {
                        id,
                        peer: socket_addr(connection.peer),
                        local: SocketAddr::new(connection.local.into(), config.port),
                    });
                    false
                }
            },
            // TIME-WAIT: the ACK of the peer's FIN left in this turn. Closed with no remote:
            // any RST owed has been sent.
            Phase::Detached { .. } => match state {
                tcp::State::TimeWait => true,
                tcp::State::Closed => connection.tcp_ref().remote_endpoint().is_none(),
                _ => false,
            },
            Phase::Accepted | Phase::Evicted => false,
        };
        if finished {
            self.remove(id);
            return;
        }
        let socket_poll_at = self.interface.poll_at(now, &connection.socket);
        let deadline = connection.next_deadline(socket_poll_at, config);
        self.schedule
            .wake_at(id, &mut connection.slot, deadline, now);
    }

    /// Our end of a connection along `flow`: the address the client dialled.
    fn server_for(&self, flow: Flow) -> SocketAddr {
        SocketAddr::new(flow.local.into(), self.config.port)
    }

    /// Makes sure a socket is listening for the SYN along `flow`, within the connection limit;
    /// at the limit `caller` is who the newcomer is, if known.
    fn open_for(&mut self, flow: Flow, now: Instant, caller: Option<Caller>) -> Opening {
        let peer = flow.peer;
        if !self.accepting {
            // No socket: smoltcp resets the SYN.
            self.metrics.refused(Refusal::ShuttingDown);
            return Opening::NotOpened;
        }
        if !ingress::allowed(&self.config, peer) {
            // No socket: smoltcp resets the SYN.
            tracing::debug!(%peer, "refused by --allow-from");
            self.metrics.refused(Refusal::AllowFrom);
            return Opening::NotOpened;
        }
        if let Some(existing) = self.table.owner(&flow)
            && let Some(connection) = self.table.connections.get(&existing)
        {
            let state = connection.tcp_ref().state();
            if !matches!(state, tcp::State::TimeWait | tcp::State::Closed) {
                // A retransmitted SYN: the socket already serving this peer answers it.
                return Opening::NotOpened;
            }
            if !matches!(connection.phase, Phase::Detached { .. }) {
                // The old stream still holds the connection; the client will retry its SYN.
                return Opening::NotOpened;
            }
            self.remove(existing);
        }
        if self.table.live >= self.config.max_connections
            && let Err(instead) = self.make_room(peer, caller, now)
        {
            return instead;
        }
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; self.config.receive_buffer]),
            tcp::SocketBuffer::new(vec![0; self.config.send_buffer]),
        );
        // Request/response traffic: Nagle and delayed ACKs only add latency.
        socket.set_nagle_enabled(false);
        socket.set_ack_delay(None);
        socket.set_timeout(Some(self.config.retransmit_timeout));
        // smoltcp's timeout counts from the client's last packet, whoever is silent: a client
        // that sent its request and waits for an answer we are still preparing (a GCE
        // `wait_for_change`, a fault's latency, a slow token command) would be reset after it.
        // Keep-alive probes, which a live client's kernel answers, restart that count, so the
        // timeout ends only a client that is gone; the HTTP layer's header timeout and the
        // first-data timeout below bound the idle ones. Set before the handshake: on an
        // established idle socket smoltcp would send the first probe at once.
        socket.set_keep_alive(Some(keep_alive_interval(self.config.retransmit_timeout)));
        // Listen on the address the SYN was sent to (ingress let only served ones through):
        // smoltcp then answers from it.
        if socket
            .listen(IpEndpoint::new(flow.local, self.config.port))
            .is_err()
        {
            return Opening::NotOpened;
        }
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let handle = set.add(socket);
        Opening::Opened(self.table.insert(flow, set, handle, caller, now))
    }

    /// At the limit: evicts what `admission::make_room` chooses (then `Ok`: open), or says
    /// what to do instead: refuse, or hold the SYN while a caller it needs is unknown.
    fn make_room(
        &mut self,
        peer: IpEndpoint,
        caller: Option<Caller>,
        now: Instant,
    ) -> Result<(), Opening> {
        let known = self.table.snapshot(now, &mut self.snapshot);
        let (Some(newcomer), true) = (caller, known) else {
            if self.held.len() >= MAX_HELD {
                tracing::debug!(%peer, "connection limit reached, too many waiting; refusing");
                self.metrics.refused(Refusal::ConnectionLimit);
                return Err(Opening::NotOpened);
            }
            return Err(Opening::Held);
        };
        match admission::make_room(newcomer, &self.snapshot) {
            Room::Evict { victim, why } => {
                self.evict(victim, why, now);
                Ok(())
            }
            Room::Refuse => {
                // No socket: smoltcp answers the SYN with a RST.
                tracing::debug!(%peer, caller = %newcomer, "connection limit reached; refusing");
                self.metrics.refused(Refusal::ConnectionLimit);
                Err(Opening::NotOpened)
            }
        }
    }

    fn evict(&mut self, victim: ConnectionId, why: admission::Why, now: Instant) {
        let Some(connection) = self.table.connections.get_mut(&victim) else {
            return;
        };
        tracing::debug!(
            peer = %connection.peer,
            caller = %connection.caller.map_or_else(|| "?".to_owned(), |c| c.to_string()),
            ?why,
            "connection limit reached; resetting a connection to make room"
        );
        connection.tcp().abort();
        let phase = if connection.phase == Phase::Handshake {
            // No stream exists: reap it like a dropped one once the RST has left.
            Phase::Detached { since: now }
        } else {
            // The stream sees a reset on its next read and detaches; the connection stays
            // until then, but no longer counts as live.
            Phase::Evicted
        };
        connection.enter(phase, &mut self.table.live);
        self.schedule.mark_ready(victim, &mut connection.slot);
    }

    fn remove(&mut self, id: ConnectionId) {
        if let Some(connection) = self.table.remove(id) {
            self.schedule.forget(id, &connection.slot);
        }
    }
}

#[cfg(test)]
mod tests;
