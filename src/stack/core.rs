//! The sans-IO TCP endpoint for `169.254.169.254:80` (and, with `--ipv6`, `[fd00:ec2::254]:80`):
//! packets in, packets and connections out.
//!
//! It owns the smoltcp [`Interface`], one smoltcp socket per connection and the bookkeeping
//! smoltcp leaves to its user. It reads no clock and touches no descriptor: the caller passes
//! `now` and moves packets, so tests drive it entirely in memory.
//!
//! Read before changing:
//! - smoltcp has no listen backlog: one socket serves one connection. A socket is created when a
//!   SYN for a new 4-tuple arrives, *before* smoltcp sees the packet, and packets are fed one at a
//!   time so a burst of SYNs cannot outrun socket creation.
//! - Each connection's socket sits alone in a `SocketSet` of its own, and a packet is handed to
//!   smoltcp together with the set of the connection it belongs to (looked up by the client's
//!   endpoint), or with an empty set when none does (smoltcp then answers with a RST, or an echo
//!   reply). smoltcp walks the whole set it is given for every packet and every poll; with one
//!   shared set that walk was most of the work per packet once hundreds of clients were
//!   connected (docs/performance.md). [`Stack::poll`] visits only the connections the
//!   `schedule` names: touched since the last poll, or with a timer due.
//! - Because packets go to the connection keyed by the client's endpoint, a retransmitted SYN
//!   reaches the socket already answering it instead of creating a second one.
//! - Connections are known by a [`ConnectionId`] that is never reused, so a stream or hop-limit
//!   handle that outlives its connection finds nothing rather than another connection.
//! - Connections are handed out by [`Stack::poll`] once ESTABLISHED *and* the client has sent
//!   its first byte (or its FIN), so half-open handshakes and silent connections cost no HTTP
//!   task; a connection silent for `first_data_timeout` is reset here.
//! - A detached connection is reaped only after a poll: one that reached TIME-WAIT on the packet
//!   just received still owes the client the ACK of its FIN, and only the poll sends it.
//! - A connection's IP hop limit is lowered for a token reply and lifted again only once that
//!   reply is acknowledged (`reply_hops.rs` says why).

use super::caller::{BySourceAddress, Caller, Identify};
use super::device::PacketQueues;
use super::reply_hops::ReplyHops;
pub use super::schedule::ConnectionId;
use super::schedule::{Schedule, Slot};
use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpProtocol, Ipv4Address, Ipv4Packet,
    Ipv6Packet, TcpPacket,
};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

/// How long a connection must have sent nothing before a new client may evict it at the limit.
const EVICTION_MIN_IDLE: Duration = Duration::from_secs(1);

/// How long a new handshake is safe from eviction at the limit.
const HANDSHAKE_GRACE: Duration = Duration::from_millis(50);

/// What the endpoint is and how much it may hold.
#[derive(Debug, Clone)]
pub struct StackConfig {
    pub address: Ipv4Addr,
    /// The IPv6 address served too, if any (`--ipv6`: `fd00:ec2::254`).
    pub address_v6: Option<Ipv6Addr>,
    pub port: u16,
    pub mtu: usize,
    /// Connections beyond this are refused with a RST (the client sees ECONNREFUSED).
    pub max_connections: usize,
    pub receive_buffer: usize,
    pub send_buffer: usize,
    /// How long an unacknowledged segment or handshake may wait before smoltcp gives up.
    pub retransmit_timeout: Duration,
    /// How long a connection whose stream is gone may linger before it is reset.
    pub linger: Duration,
    /// How long a connected client may stay silent before its first byte; then it is reset.
    /// (After the first byte, the HTTP layer's header timeout takes over.)
    pub first_data_timeout: Duration,
    /// Seeds initial sequence numbers; take it from the OS RNG.
    pub random_seed: u64,
    /// Client networks allowed to connect (`--allow-from`); empty allows all. Others get a RST.
    pub allow_from: Vec<crate::cidr::IpNet>,
}

impl StackConfig {
    pub fn new(address: Ipv4Addr, port: u16, mtu: usize, max_connections: usize) -> Self {
        StackConfig {
            address,
            address_v6: None,
            port,
            mtu,
            max_connections,
            receive_buffer: 4 * 1024,
            send_buffer: 8 * 1024,
            retransmit_timeout: Duration::from_secs(10),
            linger: Duration::from_secs(5),
            first_data_timeout: Duration::from_secs(10),
            random_seed: 0,
            allow_from: Vec::new(),
        }
    }
}

/// A connection that completed its handshake and whose client has spoken: ready for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Established {
    pub id: ConnectionId,
    pub peer: SocketAddr,
}

#[derive(Debug)]
struct Connection {
    peer: IpEndpoint,
    phase: Phase,
    /// When the client last sent data (or its SYN); the idlest connection is evicted first.
    last_activity: Instant,
    /// Who the connection is charged to; learnt the first time the limit is reached.
    caller: Option<Caller>,
    /// Whether its packets go with a lowered hop limit, and when that may end.
    hops: ReplyHops,
    /// Waiting for its limited reply to be acknowledged before the hop limit is lifted.
    releasing: bool,
    /// The connection's one socket, alone in its set.
    socket: SocketSet<'static>,
    handle: SocketHandle,
    slot: Slot,
}

impl Connection {
    fn tcp(&mut self) -> &mut tcp::Socket<'static> {
        self.socket.get_mut::<tcp::Socket>(self.handle)
    }

    fn tcp_ref(&self) -> &tcp::Socket<'static> {
        self.socket.get::<tcp::Socket>(self.handle)
    }

    /// Whether it counts against the limit: handshaking or owned by a stream. Closing ones do
    /// not; they are bounded by the linger time.
    fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Handshake | Phase::Accepted)
    }

    /// Moves to `phase`, keeping the count of live connections true.
    fn enter(&mut self, phase: Phase, live: &mut usize) {
        let was_live = self.is_live();
        self.phase = phase;
        match (was_live, self.is_live()) {
            (true, false) => *live -= 1,
            (false, true) => *live += 1,
            _ => {}
        }
    }

    /// Lifts the hop limit once the limited bytes are acknowledged.
    fn lift_acknowledged_hop_limit(&mut self) {
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
    fn next_deadline(
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Handshake under way; no stream exists.
    Handshake,
    /// A stream owns it.
    Accepted,
    /// Reset to make room at the limit; its stream still owns it until it drops.
    Evicted,
    /// The stream was dropped at `since`; reap once closed or after the linger time.
    Detached { since: Instant },
}

/// The TCP endpoint.
pub struct Stack {
    config: StackConfig,
    interface: Interface,
    device: PacketQueues,
    /// What smoltcp is given for a packet no connection owns: it answers from an empty set.
    no_socket: SocketSet<'static>,
    by_peer: HashMap<IpEndpoint, ConnectionId>,
    connections: HashMap<ConnectionId, Connection>,
    schedule: Schedule,
    /// Connections handshaking or owned by a stream: those counted against the limit.
    live: usize,
    next_id: u64,
    identify: Box<dyn Identify>,
    /// False once the application stopped accepting: new SYNs are reset.
    accepting: bool,
    /// Connections visited by polls so far: what a test checks to see that idle ones are not.
    #[cfg(test)]
    visits: usize,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("config", &self.config)
            .field("connections", &self.connections.len())
            .finish()
    }
}

impl Stack {
    /// An endpoint that tells callers apart by source address only.
    pub fn new(config: StackConfig, now: Instant) -> Self {
        Stack::with_identify(config, now, Box::new(BySourceAddress))
    }

    /// An endpoint that asks `identify` who is behind a connection when it must choose whose
    /// connection to give up at the limit.
    pub fn with_identify(config: StackConfig, now: Instant, identify: Box<dyn Identify>) -> Self {
        let mut device = PacketQueues::new(config.mtu);
        let mut interface_config = Config::new(HardwareAddress::Ip);
        interface_config.random_seed = config.random_seed;
        let mut interface = Interface::new(interface_config, &mut device, now);
        let address: Ipv4Address = config.address;
        interface.update_ip_addrs(|addrs| {
            // Capacity is IFACE_MAX_ADDR_COUNT (2): one IPv4 and one IPv6 address fit.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(address), 32));
            if let Some(v6) = config.address_v6 {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(v6), 128));
            }
        });
        // Replies need a route back to clients; with Medium::Ip a default route via our own
        // address is enough, and without it smoltcp goes silent for a second per new peer.
        // IFACE_MAX_ROUTE_COUNT (2) holds both.
        let _ = interface.routes_mut().add_default_ipv4_route(address);
        if let Some(v6) = config.address_v6 {
            let _ = interface.routes_mut().add_default_ipv6_route(v6);
        }
        Stack {
            config,
            interface,
            device,
            no_socket: SocketSet::new(Vec::new()),
            by_peer: HashMap::new(),
            connections: HashMap::new(),
            schedule: Schedule::default(),
            live: 0,
            next_id: 0,
            identify,
            accepting: true,
            #[cfg(test)]
            visits: 0,
        }
    }

    /// Live connections, in any phase.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Processes one packet read from the TUN.
    ///
    /// Only TCP and ICMP (ICMPv6) addressed to us reach smoltcp (which answers echo requests and
    /// resets connections to closed ports); anything else is dropped here without a reply.
    pub fn receive(&mut self, packet: Vec<u8>, now: Instant) {
        let (owner, opened, carries_data) = match self.classify(&packet) {
            Ingress::Drop => return,
            Ingress::NewConnection(peer) => {
                let opened = self.open_for(peer, now);
                let owner = opened.or_else(|| self.by_peer.get(&peer).copied());
                (owner, opened, false)
            }
            Ingress::Data(peer) => (self.by_peer.get(&peer).copied(), None, true),
            Ingress::Segment(peer) => (self.by_peer.get(&peer).copied(), None, false),
            Ingress::Icmp => (None, None, false),
        };
        self.device.receive.push_back(packet);
        match owner.and_then(|id| Some((id, self.connections.get_mut(&id)?))) {
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
        // smoltcp rejected the SYN (bad checksum, bad options): a socket left listening would
        // count against the limit forever and could swallow another client's SYN.
        if let Some(id) = opened
            && self
                .connections
                .get(&id)
                .is_some_and(|connection| connection.tcp_ref().state() == tcp::State::Listen)
        {
            self.remove(id);
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

    /// When the stack next needs [`Stack::poll`] even if no packet arrives; `None`: only on input.
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        self.schedule
            .next_wake(now)
            .map(|at| if at > now { at - now } else { Duration::ZERO })
    }

    /// The TCP socket of a connection, for its stream; `None` if it was reaped. The connection
    /// is visited by the next poll, which sends whatever the stream queued or reopened.
    pub fn socket(&mut self, id: ConnectionId) -> Option<&mut tcp::Socket<'static>> {
        let connection = self.connections.get_mut(&id)?;
        self.schedule.mark_ready(id, &mut connection.slot);
        Some(connection.tcp())
    }

    /// From now on every packet of the connection, retransmissions of earlier bytes included,
    /// leaves with IP hop limit (TTL) `hops`. Ignored for a connection that is gone.
    pub fn limit_reply_hops(&mut self, id: ConnectionId, hops: u8) {
        let Some(connection) = self.connections.get_mut(&id) else {
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
        let Some(connection) = self.connections.get_mut(&id) else {
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
        if let Some(connection) = self.connections.get_mut(&id) {
            connection.hops.wrote(queued, holds_more);
        }
    }

    /// The stream for `id` was dropped: close our side and forget it once TCP is done.
    pub fn detach(&mut self, id: ConnectionId, now: Instant) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        connection.enter(Phase::Detached { since: now }, &mut self.live);
        connection.tcp().close();
        self.schedule.mark_ready(id, &mut connection.slot);
    }

    /// The application accepts no more connections: reset handshakes not yet handed out, and
    /// answer every new SYN with a RST.
    pub fn refuse_new_connections(&mut self, now: Instant) {
        self.accepting = false;
        for (&id, connection) in &mut self.connections {
            if connection.phase == Phase::Handshake {
                connection.tcp().abort();
                connection.enter(Phase::Detached { since: now }, &mut self.live);
                self.schedule.mark_ready(id, &mut connection.slot);
            }
        }
    }

    /// Resets every connection (used when the process gives up on graceful shutdown).
    pub fn abort_all(&mut self) {
        for (&id, connection) in &mut self.connections {
            connection.tcp().abort();
            self.schedule.mark_ready(id, &mut connection.slot);
        }
    }

    /// One connection's turn in a poll: reset it if it overstayed, send what it has to send,
    /// hand it out or reap it, and schedule its next turn.
    fn visit(&mut self, id: ConnectionId, now: Instant, established: &mut Vec<Established>) {
        let Some(connection) = self.connections.get_mut(&id) else {
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
                connection.enter(Phase::Detached { since: now }, &mut self.live);
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
                    connection.enter(Phase::Accepted, &mut self.live);
                    established.push(Established {
                        id,
                        peer: endpoint_to_socket_addr(connection.peer),
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

    fn classify(&self, packet: &[u8]) -> Ingress {
        match packet.first().map(|byte| byte >> 4) {
            Some(4) => self.classify_v4(packet),
            Some(6) => self.classify_v6(packet),
            _ => Ingress::Drop,
        }
    }

    fn classify_v4(&self, packet: &[u8]) -> Ingress {
        let Ok(ip) = Ipv4Packet::new_checked(packet) else {
            return Ingress::Drop;
        };
        if ip.dst_addr() != self.config.address {
            return Ingress::Drop;
        }
        match ip.next_header() {
            IpProtocol::Icmp => Ingress::Icmp,
            IpProtocol::Tcp => {
                // Fragments cannot be inspected; smoltcp is built without reassembly and drops them.
                if ip.more_frags() || ip.frag_offset() != 0 {
                    return Ingress::Drop;
                }
                self.classify_tcp(IpAddress::Ipv4(ip.src_addr()), ip.payload())
            }
            _ => Ingress::Drop,
        }
    }

    /// IPv6 only when served, and only TCP or ICMPv6 right after the fixed header: extension
    /// headers (hop-by-hop options, fragments, routing) are dropped, as IPv4 fragments are.
    fn classify_v6(&self, packet: &[u8]) -> Ingress {
        let Some(address) = self.config.address_v6 else {
            return Ingress::Drop;
        };
        let Ok(ip) = Ipv6Packet::new_checked(packet) else {
            return Ingress::Drop;
        };
        if ip.dst_addr() != address {
            return Ingress::Drop;
        }
        match ip.next_header() {
            IpProtocol::Icmpv6 => Ingress::Icmp,
            IpProtocol::Tcp => self.classify_tcp(IpAddress::Ipv6(ip.src_addr()), ip.payload()),
            _ => Ingress::Drop,
        }
    }

    fn classify_tcp(&self, source: IpAddress, segment: &[u8]) -> Ingress {
        let Ok(tcp) = TcpPacket::new_checked(segment) else {
            return Ingress::Drop;
        };
        let peer = IpEndpoint::new(source, tcp.src_port());
        let opens_connection = tcp.syn() && !tcp.ack() && !tcp.rst() && !tcp.fin();
        if opens_connection && tcp.dst_port() == self.config.port {
            Ingress::NewConnection(peer)
        } else if !tcp.payload().is_empty() {
            Ingress::Data(peer)
        } else {
            Ingress::Segment(peer)
        }
    }

    /// Makes sure a socket is listening for `peer`'s SYN, within the connection limit.
    fn open_for(&mut self, peer: IpEndpoint, now: Instant) -> Option<ConnectionId> {
        if !self.accepting {
            // No socket: smoltcp resets the SYN.
            return None;
        }
        if !crate::cidr::allow_from_admits(&self.config.allow_from, IpAddr::from(peer.addr)) {
            // No socket: smoltcp resets the SYN.
            tracing::debug!(%peer, "refused by --allow-from");
            return None;
        }
        if let Some(&existing) = self.by_peer.get(&peer)
            && let Some(connection) = self.connections.get(&existing)
        {
            let state = connection.tcp_ref().state();
            if !matches!(state, tcp::State::TimeWait | tcp::State::Closed) {
                // A retransmitted SYN: the socket already serving this peer answers it.
                return None;
            }
            if !matches!(connection.phase, Phase::Detached { .. }) {
                // The old stream still holds the connection; the client will retry its SYN.
                return None;
            }
            self.remove(existing);
        }
        if self.live >= self.config.max_connections && !self.make_room(peer, now) {
            // No socket: smoltcp answers the SYN with a RST.
            tracing::debug!(%peer, "connection limit reached; refusing");
            return None;
        }
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; self.config.receive_buffer]),
            tcp::SocketBuffer::new(vec![0; self.config.send_buffer]),
        );
        // Request/response traffic: Nagle and delayed ACKs only add latency.
        socket.set_nagle_enabled(false);
        socket.set_ack_delay(None);
        socket.set_timeout(Some(self.config.retransmit_timeout));
        // Listen on the address the SYN was sent to: smoltcp then answers from it.
        let ours = match peer.addr {
            IpAddress::Ipv4(_) => IpAddress::Ipv4(self.config.address),
            IpAddress::Ipv6(_) => IpAddress::Ipv6(self.config.address_v6?),
        };
        socket
            .listen(IpEndpoint::new(ours, self.config.port))
            .ok()?;
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let handle = set.add(socket);
        self.next_id += 1;
        let id = ConnectionId(self.next_id);
        self.by_peer.insert(peer, id);
        self.live += 1;
        self.connections.insert(
            id,
            Connection {
                peer,
                phase: Phase::Handshake,
                last_activity: now,
                caller: None,
                hops: ReplyHops::default(),
                releasing: false,
                socket: set,
                handle,
                slot: Slot::default(),
            },
        );
        Some(id)
    }

    /// Makes room at the limit for a new connection from `newcomer`, so that neither a flood
    /// of idle or half-open connections nor one caller's busy keep-alive connections can lock
    /// another caller out. Returns false if the newcomer must be refused.
    ///
    /// 1. Whoever holds the most live connections gives one up if, after admission, the
    ///    newcomer would still hold fewer: its oldest handshake, else its idlest connection,
    ///    however busy.
    /// 2. Otherwise only idle connections are recycled: the newcomer's own oldest handshake
    ///    past [`HANDSHAKE_GRACE`] (a flood recycles its own half-open connections, never a
    ///    real client's handshake that is still waiting in the TUN queue behind the flood),
    ///    else the oldest connection that has not sent a byte, whoever holds it, once past the
    ///    grace (a local handshake completes in well under a millisecond, and the grace keeps a
    ///    burst of new clients arriving in one batch from evicting each other), else the
    ///    connection idle longest, if idle at least [`EVICTION_MIN_IDLE`], among callers holding
    ///    at least as many as the newcomer would (the newcomer's own included).
    fn make_room(&mut self, newcomer: IpEndpoint, now: Instant) -> bool {
        let server = SocketAddrV4::new(self.config.address, self.config.port);
        let newcomer = caller_of(self.identify.as_mut(), newcomer, server);
        let mut counts: HashMap<Caller, usize> = HashMap::new();
        for connection in self.connections.values_mut() {
            if !connection.is_live() {
                continue;
            }
            let caller = *connection
                .caller
                .get_or_insert_with(|| caller_of(self.identify.as_mut(), connection.peer, server));
            *counts.entry(caller).or_default() += 1;
        }
        let newcomer_holds = counts.get(&newcomer).copied().unwrap_or(0);
        let heaviest = counts
            .iter()
            .filter(|&(&caller, _)| caller != newcomer)
            .max_by_key(|&(_, &count)| count)
            .map(|(&caller, &count)| (caller, count));
        let victim = match heaviest {
            Some((hog, holds)) if holds > newcomer_holds + 1 => self.hogs_connection(hog, now),
            _ => self.idle_connection_among(
                newcomer,
                |caller| caller == newcomer || counts.get(&caller) > Some(&newcomer_holds),
                now,
            ),
        };
        let Some(victim) = victim else {
            tracing::debug!(caller = %newcomer, "connection limit reached; refusing");
            return false;
        };
        self.evict(victim, now);
        true
    }

    /// The connection `hog` gives up: its oldest handshake past the grace, else its idlest
    /// connection, else its newest handshake.
    fn hogs_connection(&self, hog: Caller, now: Instant) -> Option<ConnectionId> {
        let of_hog = |phase: Phase| {
            self.connections
                .iter()
                .filter(move |(_, c)| c.phase == phase && c.caller == Some(hog))
        };
        of_hog(Phase::Handshake)
            .filter(|(_, c)| now >= c.last_activity + HANDSHAKE_GRACE)
            .min_by_key(|(_, c)| c.last_activity)
            .or_else(|| of_hog(Phase::Accepted).min_by_key(|(_, c)| c.last_activity))
            .or_else(|| of_hog(Phase::Handshake).min_by_key(|(_, c)| c.last_activity))
            .map(|(&id, _)| id)
    }

    /// A connection idle enough to recycle: the newcomer's own handshake past the grace, else
    /// anyone's (it serves nobody: a real client completes it and speaks within milliseconds),
    /// else the idlest connection of an `eligible` caller.
    fn idle_connection_among(
        &self,
        newcomer: Caller,
        eligible: impl Fn(Caller) -> bool + Copy,
        now: Instant,
    ) -> Option<ConnectionId> {
        let oldest = |phase: Phase, eligible: &dyn Fn(Caller) -> bool| {
            self.connections
                .iter()
                .filter(|(_, c)| c.phase == phase && c.caller.is_some_and(eligible))
                .min_by_key(|(_, c)| c.last_activity)
                .map(|(&id, c)| (id, c.last_activity))
        };
        let past_grace = |(id, started): (ConnectionId, Instant)| {
            (now >= started + HANDSHAKE_GRACE).then_some(id)
        };
        let own_handshake = oldest(Phase::Handshake, &|caller| caller == newcomer);
        if let Some(id) = own_handshake.and_then(past_grace) {
            return Some(id);
        }
        match oldest(Phase::Handshake, &|_| true).and_then(past_grace) {
            Some(id) => Some(id),
            _ => match oldest(Phase::Accepted, &eligible) {
                Some((id, idle_since)) if now >= idle_since + EVICTION_MIN_IDLE => Some(id),
                _ => None,
            },
        }
    }

    fn evict(&mut self, victim: ConnectionId, now: Instant) {
        let Some(connection) = self.connections.get_mut(&victim) else {
            return;
        };
        tracing::debug!(
            peer = %connection.peer,
            caller = %connection.caller.map_or_else(|| "?".to_owned(), |c| c.to_string()),
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
        connection.enter(phase, &mut self.live);
        self.schedule.mark_ready(victim, &mut connection.slot);
    }

    fn remove(&mut self, id: ConnectionId) {
        let Some(connection) = self.connections.remove(&id) else {
            return;
        };
        if connection.is_live() {
            self.live -= 1;
        }
        if self.by_peer.get(&connection.peer) == Some(&id) {
            self.by_peer.remove(&connection.peer);
        }
        self.schedule.forget(id, &connection.slot);
    }
}

enum Ingress {
    Drop,
    Icmp,
    NewConnection(IpEndpoint),
    /// A segment carrying data from a client.
    Data(IpEndpoint),
    /// Any other TCP segment (an ACK, a FIN, a RST, a SYN to another port).
    Segment(IpEndpoint),
}

/// Who a connection from `peer` is charged to at the limit. `caller` names IPv4 callers only:
/// every IPv6 client shares one stand-in caller (the unspecified address), so an IPv6 flood
/// gives up its own connections first and cannot crowd out IPv4 callers; IPv6 callers are not
/// told apart from each other until `caller` learns IPv6.
fn caller_of(identify: &mut dyn Identify, peer: IpEndpoint, server: SocketAddrV4) -> Caller {
    match peer.addr {
        IpAddress::Ipv4(addr) => identify.identify(SocketAddrV4::new(addr, peer.port), server),
        IpAddress::Ipv6(_) => Caller::Address(Ipv4Addr::UNSPECIFIED),
    }
}

fn endpoint_to_socket_addr(endpoint: IpEndpoint) -> SocketAddr {
    SocketAddr::new(IpAddr::from(endpoint.addr), endpoint.port)
}

#[cfg(test)]
mod tests {
    //! The endpoint against a second smoltcp interface playing the client, packets shuttled in
    //! memory: no TUN, no clock, fully deterministic.

    use super::*;
    use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, Ipv4Packet};

    const SERVER: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 253);
    const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x253);

    /// What a speaking client sends as soon as it is connected.
    const FIRST_LINE: &[u8] = b"GET / HTTP/1.1\r\n";

    struct Client {
        interface: Interface,
        device: PacketQueues,
        sockets: SocketSet<'static>,
        /// The address it connects to.
        server: IpAddress,
        /// Sockets that send [`FIRST_LINE`] once connected, and whether they have.
        speakers: Vec<(SocketHandle, bool)>,
    }

    impl Client {
        fn new() -> Self {
            Client::at(IpAddress::Ipv4(CLIENT), IpAddress::Ipv4(SERVER))
        }

        /// A client on the IPv6 pair, as the kernel's `fd00:ec2::253` is.
        fn new_v6() -> Self {
            Client::at(IpAddress::Ipv6(CLIENT_V6), IpAddress::Ipv6(SERVER_V6))
        }

        fn at(address: IpAddress, server: IpAddress) -> Self {
            let mut device = PacketQueues::new(1500);
            let mut config = Config::new(HardwareAddress::Ip);
            config.random_seed = 7;
            let mut interface = Interface::new(config, &mut device, Instant::ZERO);
            interface.update_ip_addrs(|addrs| {
                let host = match address {
                    IpAddress::Ipv4(_) => 32,
                    IpAddress::Ipv6(_) => 128,
                };
                let _ = addrs.push(IpCidr::new(address, host));
            });
            match address {
                IpAddress::Ipv4(v4) => {
                    let _ = interface.routes_mut().add_default_ipv4_route(v4);
                }
                IpAddress::Ipv6(v6) => {
                    let _ = interface.routes_mut().add_default_ipv6_route(v6);
                }
            }
            Client {
                interface,
                device,
                sockets: SocketSet::new(Vec::new()),
                server,
                speakers: Vec::new(),
            }
        }

        /// Connects and, once connected, sends a first request line.
        fn connect(&mut self, local_port: u16, remote_port: u16) -> SocketHandle {
            let handle = self.connect_silent(local_port, remote_port);
            self.speakers.push((handle, false));
            handle
        }

        /// Connects and sends nothing.
        fn connect_silent(&mut self, local_port: u16, remote_port: u16) -> SocketHandle {
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 4096]),
                tcp::SocketBuffer::new(vec![0; 4096]),
            );
            socket
                .connect(
                    self.interface.context(),
                    (self.server, remote_port),
                    local_port,
                )
                .expect("connect");
            self.sockets.add(socket)
        }

        fn socket(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
            self.sockets.get_mut::<tcp::Socket>(handle)
        }

        /// Packets the client wants to send now.
        fn outgoing(&mut self, now: Instant) -> Vec<Vec<u8>> {
            for (handle, spoke) in &mut self.speakers {
                let socket = self.sockets.get_mut::<tcp::Socket>(*handle);
                if !*spoke && socket.state() == tcp::State::Established {
                    socket.send_slice(FIRST_LINE).expect("first line fits");
                    *spoke = true;
                }
            }
            self.interface
                .poll(now, &mut self.device, &mut self.sockets);
            self.device.transmit.drain(..).collect()
        }

        fn deliver(&mut self, packets: Vec<Vec<u8>>, now: Instant) {
            self.device.receive.extend(packets);
            self.interface
                .poll(now, &mut self.device, &mut self.sockets);
        }
    }

    fn stack(max_connections: usize) -> Stack {
        Stack::new(
            StackConfig::new(SERVER, 80, 1500, max_connections),
            Instant::ZERO,
        )
    }

    /// Moves packets both ways until neither side has anything to say; returns what the stack
    /// handed out. Checks after every poll that the kept count of live connections is true.
    fn shuttle(stack: &mut Stack, client: &mut Client, now: Instant) -> Vec<Established> {
        let mut established = Vec::new();
        for _ in 0..32 {
            let to_server = client.outgoing(now);
            let quiet = to_server.is_empty();
            for packet in to_server {
                stack.receive(packet, now);
            }
            established.extend(stack.poll(now));
            assert_live_count_true(stack);
            let to_client: Vec<Vec<u8>> = stack.transmit_queue().drain(..).collect();
            if quiet && to_client.is_empty() {
                break;
            }
            client.deliver(to_client, now);
        }
        established
    }

    /// The kept count of live connections (what the limit is checked against) matches a recount.
    fn assert_live_count_true(stack: &Stack) {
        let live = stack.connections.values().filter(|c| c.is_live()).count();
        assert_eq!(stack.live, live, "the kept live count drifted");
    }

    fn ipv4(protocol: IpProtocol, payload: &[u8]) -> Vec<u8> {
        let mut buffer = vec![0u8; 20 + payload.len()];
        let mut packet = Ipv4Packet::new_unchecked(&mut buffer);
        packet.set_version(4);
        packet.set_header_len(20);
        packet.set_total_len((20 + payload.len()) as u16);
        packet.set_hop_limit(64);
        packet.set_next_header(protocol);
        packet.set_src_addr(CLIENT);
        packet.set_dst_addr(SERVER);
        packet.set_dont_frag(true);
        packet.payload_mut().copy_from_slice(payload);
        packet.fill_checksum();
        buffer
    }

    fn dual_stack(max_connections: usize) -> Stack {
        let mut config = StackConfig::new(SERVER, 80, 1500, max_connections);
        config.address_v6 = Some(SERVER_V6);
        Stack::new(config, Instant::ZERO)
    }

    fn ipv6(next_header: IpProtocol, payload: &[u8]) -> Vec<u8> {
        let mut buffer = vec![0u8; 40 + payload.len()];
        let mut packet = Ipv6Packet::new_unchecked(&mut buffer);
        packet.set_version(6);
        packet.set_payload_len(payload.len() as u16);
        packet.set_next_header(next_header);
        packet.set_hop_limit(64);
        packet.set_src_addr(CLIENT_V6);
        packet.set_dst_addr(SERVER_V6);
        packet.payload_mut().copy_from_slice(payload);
        buffer
    }

    #[test]
    fn an_ipv6_client_is_served_on_the_ipv6_address_and_the_hop_limit_applies_to_it() {
        let mut stack = dual_stack(8);
        let mut client = Client::new_v6();
        let handle = client.connect(46000, 80);
        let established = shuttle(&mut stack, &mut client, Instant::ZERO);
        assert_eq!(established.len(), 1);
        assert_eq!(
            established[0].peer,
            SocketAddr::new(CLIENT_V6.into(), 46000)
        );
        let server = established[0];
        stack.limit_reply_hops(server.id, 2);
        let socket = stack.socket(server.id).expect("socket");
        socket.send_slice(b"token").expect("send");
        stack.poll(Instant::ZERO);
        let replies: Vec<Vec<u8>> = stack.transmit_queue().drain(..).collect();
        let reply = Ipv6Packet::new_checked(&replies[0]).expect("ipv6");
        assert_eq!(
            reply.src_addr(),
            SERVER_V6,
            "answered from the address it was asked on"
        );
        assert_eq!(reply.hop_limit(), 2);
        client.deliver(replies, Instant::ZERO);
        let mut received = [0u8; 8];
        let read = client
            .socket(handle)
            .recv_slice(&mut received)
            .expect("recv");
        assert_eq!(&received[..read], b"token");
    }

    #[test]
    fn ipv6_is_dropped_unless_it_is_served() {
        let mut stack = stack(8);
        let mut client = Client::new_v6();
        let handle = client.connect(46001, 80);
        assert!(shuttle(&mut stack, &mut client, Instant::ZERO).is_empty());
        assert_eq!(
            client.socket(handle).state(),
            tcp::State::SynSent,
            "no answer, not even a RST"
        );
        assert_eq!(stack.connection_count(), 0);
    }

    #[test]
    fn icmpv6_echo_is_answered_and_extension_headers_are_dropped() {
        let mut stack = dual_stack(8);
        let mut icmp = vec![0u8; 8 + 4];
        let mut echo = Icmpv6Packet::new_unchecked(&mut icmp);
        echo.set_msg_type(Icmpv6Message::EchoRequest);
        echo.set_msg_code(0);
        echo.set_echo_ident(0x1234);
        echo.set_echo_seq_no(1);
        echo.payload_mut().copy_from_slice(b"ping");
        echo.fill_checksum(&CLIENT_V6, &SERVER_V6);
        stack.receive(ipv6(IpProtocol::Icmpv6, &icmp), Instant::ZERO);
        stack.poll(Instant::ZERO);
        let replies: Vec<Vec<u8>> = stack.transmit_queue().drain(..).collect();
        assert_eq!(replies.len(), 1);
        let reply = Ipv6Packet::new_checked(&replies[0]).expect("ipv6");
        assert_eq!(reply.dst_addr(), CLIENT_V6);
        let reply = Icmpv6Packet::new_checked(reply.payload()).expect("icmpv6");
        assert_eq!(reply.msg_type(), Icmpv6Message::EchoReply);

        // Hop-by-hop options in front of the same echo: never reaches smoltcp.
        let mut options = vec![u8::from(IpProtocol::Icmpv6), 0, 1, 4, 0, 0, 0, 0];
        options.extend_from_slice(&icmp);
        stack.receive(ipv6(IpProtocol::HopByHop, &options), Instant::ZERO);
        stack.poll(Instant::ZERO);
        assert!(stack.transmit_queue().is_empty());
    }

    #[test]
    fn handshake_hands_out_exactly_one_connection() {
        let mut stack = stack(8);
        let mut client = Client::new();
        let handle = client.connect(40000, 80);
        let established = shuttle(&mut stack, &mut client, Instant::ZERO);
        assert_eq!(established.len(), 1);
        assert_eq!(established[0].peer, SocketAddr::new(CLIENT.into(), 40000));
        assert_eq!(client.socket(handle).state(), tcp::State::Established);
        assert_eq!(stack.connection_count(), 1);
    }

    #[test]
    fn retransmitted_syn_does_not_create_a_second_socket() {
        let mut stack = stack(8);
        let mut client = Client::new();
        client.connect(40001, 80);
        let syn = client.outgoing(Instant::ZERO);
        assert_eq!(syn.len(), 1);
        stack.receive(syn[0].clone(), Instant::ZERO);
        stack.receive(syn[0].clone(), Instant::ZERO);
        stack.poll(Instant::ZERO);
        assert_eq!(stack.connection_count(), 1);
    }

    #[test]
    fn other_ports_are_reset() {
        let mut stack = stack(8);
        let mut client = Client::new();
        let handle = client.connect(40004, 443);
        let established = shuttle(&mut stack, &mut client, Instant::ZERO);
        assert!(established.is_empty());
        assert_eq!(client.socket(handle).state(), tcp::State::Closed);
        assert_eq!(stack.connection_count(), 0);
    }

    #[test]
    fn data_flows_both_ways_and_a_closed_connection_is_reaped() {
        let mut stack = stack(8);
        let mut client = Client::new();
        let handle = client.connect_silent(40005, 80);
        assert!(
            shuttle(&mut stack, &mut client, Instant::ZERO).is_empty(),
            "no stream before the first byte"
        );
        assert_eq!(client.socket(handle).state(), tcp::State::Established);

        client
            .socket(handle)
            .send_slice(b"GET / HTTP/1.1\r\n\r\n")
            .expect("client send");
        let established = shuttle(&mut stack, &mut client, Instant::ZERO);
        assert_eq!(established.len(), 1, "the first byte brings the stream");
        let server = established[0].id;
        let mut request = [0u8; 64];
        let read = stack
            .socket(server)
            .expect("socket")
            .recv_slice(&mut request)
            .expect("server recv");
        assert_eq!(&request[..read], b"GET / HTTP/1.1\r\n\r\n");

        stack
            .socket(server)
            .expect("socket")
            .send_slice(b"HTTP/1.1 200 OK\r\n\r\n")
            .expect("server send");
        stack.detach(server, Instant::ZERO);
        shuttle(&mut stack, &mut client, Instant::ZERO);
        let mut response = [0u8; 64];
        let read = client
            .socket(handle)
            .recv_slice(&mut response)
            .expect("client recv");
        assert_eq!(&response[..read], b"HTTP/1.1 200 OK\r\n\r\n");

        client.socket(handle).close();
        shuttle(&mut stack, &mut client, Instant::ZERO);
        assert_eq!(stack.connection_count(), 0);
        assert_eq!(
            client.socket(handle).state(),
            tcp::State::Closed,
            "the client's FIN was acknowledged before its socket was reaped, so it need not \
             retransmit the FIN"
        );
    }

    #[test]
    fn a_new_client_costs_polls_nothing_for_the_idle_connections_already_open() {
        let mut stack = stack(1000);
        let mut client = Client::new();
        for port in 0..300 {
            client.connect(30000 + port, 80);
        }
        assert_eq!(shuttle(&mut stack, &mut client, Instant::ZERO).len(), 300);

        let visits_before = stack.visits;
        let newcomer = client.connect(31000, 80);
        assert_eq!(shuttle(&mut stack, &mut client, Instant::ZERO).len(), 1);
        assert_eq!(client.socket(newcomer).state(), tcp::State::Established);
        let visits = stack.visits - visits_before;
        assert!(
            visits <= 4,
            "the handshake and first byte visited {visits} connections; only the newcomer's \
             should have been"
        );
    }

    #[test]
    fn a_peer_that_never_finishes_closing_is_reset_after_the_linger_time() {
        let mut stack = stack(8);
        let mut client = Client::new();
        let handle = client.connect(40006, 80);
        let server = shuttle(&mut stack, &mut client, Instant::ZERO)[0].id;
        stack.detach(server, Instant::ZERO);
        // Our FIN reaches the client, which never closes its side.
        shuttle(&mut stack, &mut client, Instant::ZERO);
        assert_eq!(client.socket(handle).state(), tcp::State::CloseWait);
        assert_eq!(stack.connection_count(), 1);
        let later = Instant::from_secs(6);
        assert!(stack.poll_delay(Instant::ZERO).is_some());
        shuttle(&mut stack, &mut client, later);
        assert_eq!(stack.connection_count(), 0);

        assert_eq!(client.socket(handle).state(), tcp::State::Closed);
    }

    #[test]
    fn at_the_limit_a_new_client_evicts_the_connection_idle_longest() {
        let mut stack = stack(2);
        let mut client = Client::new();
        let idle = client.connect(41000, 80);
        let busy = client.connect(41001, 80);
        let accepted = shuttle(&mut stack, &mut client, Instant::ZERO);
        assert_eq!(accepted.len(), 2);
        let later = Instant::from_secs(2);
        client.socket(busy).send_slice(b"GET /").expect("send");
        shuttle(&mut stack, &mut client, later);

        let newcomer = client.connect(41002, 80);
        let accepted = shuttle(&mut stack, &mut client, later);
        assert_eq!(accepted.len(), 1, "the newcomer is served");
        assert_eq!(client.socket(newcomer).state(), tcp::State::Established);
        assert_eq!(
            client.socket(idle).state(),
            tcp::State::Closed,
            "the idle one was reset"
        );
        assert_eq!(client.socket(busy).state(), tcp::State::Established);
    }

    #[test]
    fn at_the_limit_recently_active_connections_are_not_evicted() {
        let mut stack = stack(1);
        let mut client = Client::new();
        let first = client.connect(41010, 80);
        shuttle(&mut stack, &mut client, Instant::ZERO);
        let second = client.connect(41011, 80);
        let accepted = shuttle(&mut stack, &mut client, Instant::from_millis(500));
        assert!(accepted.is_empty());
        assert_eq!(client.socket(first).state(), tcp::State::Established);
        assert_eq!(
            client.socket(second).state(),
            tcp::State::Closed,
            "refused with RST"
        );
    }

    /// Charges client ports from 50000 up to uid 1000 (a flooding user), the rest to root.
    struct ByPort;

    impl Identify for ByPort {
        fn identify(&mut self, client: SocketAddrV4, _server: SocketAddrV4) -> Caller {
            Caller::User(if client.port() >= 50000 { 1000 } else { 0 })
        }
    }

    #[test]
    fn at_the_limit_the_caller_holding_most_gives_up_a_busy_connection_and_cannot_retake_it() {
        let config = StackConfig::new(SERVER, 80, 1500, 4);
        let mut stack = Stack::with_identify(config, Instant::ZERO, Box::new(ByPort));
        let mut client = Client::new();
        let flood: Vec<SocketHandle> = (0..4).map(|i| client.connect(50000 + i, 80)).collect();
        assert_eq!(shuttle(&mut stack, &mut client, Instant::ZERO).len(), 4);

        // Every flooding connection spoke 100 ms ago: none is idle, yet one must go.
        let other_user = client.connect(40000, 80);
        let accepted = shuttle(&mut stack, &mut client, Instant::from_millis(100));
        assert_eq!(accepted.len(), 1);
        assert_eq!(client.socket(other_user).state(), tcp::State::Established);
        let reset = flood
            .iter()
            .filter(|&&handle| client.socket(handle).state() == tcp::State::Closed)
            .count();
        assert_eq!(reset, 1, "exactly one flooding connection made room");

        // The flooder (3 against 1) may not take the place back.
        let retry = client.connect(50010, 80);
        shuttle(&mut stack, &mut client, Instant::from_millis(200));
        assert_eq!(client.socket(retry).state(), tcp::State::Closed);
        assert_eq!(client.socket(other_user).state(), tcp::State::Established);
    }

    /// Charges each client port from 60000 up to a caller of its own (spoofed sources), the
    /// rest to root.
    struct SpoofedFromPort60000;

    impl Identify for SpoofedFromPort60000 {
        fn identify(&mut self, client: SocketAddrV4, _server: SocketAddrV4) -> Caller {
            match client.port() {
                port if port >= 60000 => {
                    Caller::Address(Ipv4Addr::new(10, 0, (port >> 8) as u8, port as u8))
                }
                _ => Caller::User(0),
            }
        }
    }

    #[test]
    fn half_open_handshakes_of_small_callers_still_make_room_for_a_bigger_one() {
        let config = StackConfig::new(SERVER, 80, 1500, 4);
        let mut stack = Stack::with_identify(config, Instant::ZERO, Box::new(SpoofedFromPort60000));
        let mut client = Client::new();
        let real = [client.connect(41000, 80), client.connect(41001, 80)];
        assert_eq!(shuttle(&mut stack, &mut client, Instant::ZERO).len(), 2);
        // Two spoofed SYNs, each its own caller: delivered, their SYN-ACKs go nowhere.
        client.connect(60000, 80);
        client.connect(60001, 80);
        for packet in client.outgoing(Instant::ZERO) {
            stack.receive(packet, Instant::ZERO);
        }
        stack.poll(Instant::ZERO);
        stack.transmit_queue().clear();
        assert_eq!(stack.connection_count(), 4);

        // Root already holds more than each spoofed caller, yet their dead handshakes go.
        let third = client.connect(41002, 80);
        let accepted = shuttle(&mut stack, &mut client, Instant::from_millis(100));
        assert_eq!(accepted.len(), 1);
        assert_eq!(client.socket(third).state(), tcp::State::Established);
        for handle in real {
            assert_eq!(client.socket(handle).state(), tcp::State::Established);
        }
    }

    #[test]
    fn a_flood_at_the_limit_recycles_its_own_handshakes_not_a_slow_real_clients() {
        let config = StackConfig::new(SERVER, 80, 1500, 4);
        let mut stack = Stack::with_identify(config, Instant::ZERO, Box::new(ByPort));
        let mut client = Client::new();
        // A real client (root) whose SYN arrives first; its ACK and request wait in the queue.
        let real = client.connect(41000, 80);
        for packet in client.outgoing(Instant::ZERO) {
            stack.receive(packet, Instant::ZERO);
        }
        stack.poll(Instant::ZERO);
        let syn_ack: Vec<Vec<u8>> = stack.transmit_queue().drain(..).collect();
        // uid 1000 floods: SYNs whose SYN-ACKs go nowhere, until the limit and beyond.
        for (i, at) in [(0, 10), (1, 20), (2, 30), (3, 100), (4, 110)] {
            client.connect(50000 + i, 80);
            let now = Instant::from_millis(at);
            for packet in client.outgoing(now) {
                stack.receive(packet, now);
            }
            stack.poll(now);
            stack.transmit_queue().clear();
        }
        // The real client's handshake completes late, behind the flood.
        let late = Instant::from_millis(120);
        client.deliver(syn_ack, late);
        let accepted = shuttle(&mut stack, &mut client, late);
        assert_eq!(accepted.len(), 1, "the real client is served");
        assert_eq!(client.socket(real).state(), tcp::State::Established);
    }

    #[test]
    fn a_handshake_the_client_resets_frees_its_slot() {
        let mut stack = stack(8);
        let mut client = Client::new();
        let handle = client.connect(41040, 80);
        for packet in client.outgoing(Instant::ZERO) {
            stack.receive(packet, Instant::ZERO);
        }
        stack.poll(Instant::ZERO);
        stack.transmit_queue().clear();
        assert_eq!(stack.connection_count(), 1);
        // The client gives up (a kernel answers a SYN-ACK for a SYN it never sent the same way).
        client.socket(handle).abort();
        for packet in client.outgoing(Instant::ZERO) {
            stack.receive(packet, Instant::ZERO);
        }
        stack.poll(Instant::ZERO);
        assert_eq!(stack.connection_count(), 0);
        assert_live_count_true(&stack);
    }

    #[test]
    fn half_open_handshakes_are_evicted_before_established_connections() {
        let mut stack = stack(2);
        let mut client = Client::new();
        let established = client.connect(41020, 80);
        shuttle(&mut stack, &mut client, Instant::ZERO);
        // A SYN whose handshake never completes: deliver it, drop the SYN-ACK.
        client.connect(41021, 80);
        for packet in client.outgoing(Instant::ZERO) {
            stack.receive(packet, Instant::ZERO);
        }
        stack.poll(Instant::ZERO);
        stack.transmit_queue().clear();
        assert_eq!(stack.connection_count(), 2);

        let newcomer = client.connect(41022, 80);
        let accepted = shuttle(&mut stack, &mut client, Instant::from_millis(100));
        assert_eq!(accepted.len(), 1);
        assert_eq!(client.socket(newcomer).state(), tcp::State::Established);
        assert_eq!(client.socket(established).state(), tcp::State::Established);
    }

    #[test]
    fn a_burst_of_new_clients_at_the_limit_evicts_idle_connections_not_each_other() {
        let mut stack = stack(2);
        let mut client = Client::new();
        let idle = [client.connect(44000, 80), client.connect(44001, 80)];
        assert_eq!(shuttle(&mut stack, &mut client, Instant::ZERO).len(), 2);
        let later = Instant::from_secs(2);
        let burst = [client.connect(44002, 80), client.connect(44003, 80)];
        assert_eq!(shuttle(&mut stack, &mut client, later).len(), 2);
        for handle in burst {
            assert_eq!(client.socket(handle).state(), tcp::State::Established);
        }
        for handle in idle {
            assert_eq!(client.socket(handle).state(), tcp::State::Closed);
        }
    }

    /// Writes `data` as the stream would (recording it), polls, and returns the packets the
    /// stack sends.
    fn reply(stack: &mut Stack, server: Established, data: &[u8], now: Instant) -> Vec<Vec<u8>> {
        let socket = stack.socket(server.id).expect("socket");
        let queued = socket.send_slice(data).expect("send");
        stack.wrote(server.id, queued, queued < data.len());
        stack.poll(now);
        stack.transmit_queue().drain(..).collect()
    }

    fn ttls(packets: &[Vec<u8>]) -> Vec<u8> {
        packets
            .iter()
            .map(|packet| Ipv4Packet::new_checked(packet).expect("ipv4").hop_limit())
            .collect()
    }

    #[test]
    fn a_limited_reply_leaves_with_the_hop_limit_and_the_next_goes_with_64_once_acknowledged() {
        let mut stack = stack(8);
        let mut client = Client::new();
        let handle = client.connect(45000, 80);
        let server = shuttle(&mut stack, &mut client, Instant::ZERO)[0];
        stack.limit_reply_hops(server.id, 1);
        let token = reply(&mut stack, server, b"token", Instant::ZERO);
        assert_eq!(ttls(&token), [1]);
        client.deliver(token, Instant::ZERO);
        // The client's ACK, after its delayed-ACK timer (10 ms).
        let later = Instant::from_millis(20);
        shuttle(&mut stack, &mut client, later);
        stack.release_reply_hops(server.id);
        let next = reply(&mut stack, server, b"metadata", later);
        assert_eq!(ttls(&next), [64]);
        client.deliver(next, later);
        let mut received = [0u8; 32];
        let read = client
            .socket(handle)
            .recv_slice(&mut received)
            .expect("recv");
        assert_eq!(&received[..read], b"tokenmetadata");
    }

    #[test]
    fn a_limited_reply_that_was_never_acknowledged_is_retransmitted_with_the_limit() {
        let mut stack = stack(8);
        let mut client = Client::new();
        client.connect(45001, 80);
        let server = shuttle(&mut stack, &mut client, Instant::ZERO)[0];
        stack.limit_reply_hops(server.id, 1);
        // The reply dies at a router: the client never sees it.
        assert_eq!(
            ttls(&reply(&mut stack, server, b"token", Instant::ZERO)),
            [1]
        );
        // A pipelined GET asks for the normal limit, and its reply is queued behind.
        stack.release_reply_hops(server.id);
        assert_eq!(
            ttls(&reply(&mut stack, server, b"metadata", Instant::ZERO)),
            [1],
            "still limited: the token reply is unacknowledged"
        );
        let later = Instant::from_secs(3);
        stack.poll(later);
        let retransmitted: Vec<Vec<u8>> = stack.transmit_queue().drain(..).collect();
        assert!(!retransmitted.is_empty(), "smoltcp retransmits");
        assert!(ttls(&retransmitted).iter().all(|&ttl| ttl == 1));
        // Now the client is reachable: it acknowledges everything and the limit is lifted.
        client.deliver(retransmitted, later);
        let acknowledged = later + Duration::from_millis(20);
        shuttle(&mut stack, &mut client, acknowledged);
        assert_eq!(
            ttls(&reply(&mut stack, server, b"more", acknowledged)),
            [64]
        );
    }

    #[test]
    fn a_stale_id_does_not_limit_a_later_connection() {
        let mut stack = stack(8);
        let mut client = Client::new();
        let first = client.connect(45002, 80);
        let old = shuttle(&mut stack, &mut client, Instant::ZERO)[0];
        stack.detach(old.id, Instant::ZERO);
        client.socket(first).close();
        shuttle(&mut stack, &mut client, Instant::ZERO);
        assert_eq!(stack.connection_count(), 0);
        client.connect(45003, 80);
        let new = shuttle(&mut stack, &mut client, Instant::ZERO)[0];
        assert_ne!(new.id, old.id, "ids are never reused");
        stack.limit_reply_hops(old.id, 1);
        assert_eq!(ttls(&reply(&mut stack, new, b"x", Instant::ZERO)), [64]);
    }

    #[test]
    fn an_evicted_connection_keeps_its_handle_until_its_stream_detaches() {
        let mut stack = stack(1);
        let mut client = Client::new();
        client.connect(41030, 80);
        let victim = shuttle(&mut stack, &mut client, Instant::ZERO)[0].id;
        client.connect(41031, 80);
        shuttle(&mut stack, &mut client, Instant::from_secs(2));
        let socket = stack
            .socket(victim)
            .expect("handle still valid for its stream");
        assert_eq!(socket.state(), tcp::State::Closed);
        stack.detach(victim, Instant::from_secs(2));
        stack.poll(Instant::from_secs(2));
        assert!(stack.socket(victim).is_none(), "reaped once detached");
        assert_eq!(stack.connection_count(), 1);
    }

    #[test]
    fn clients_outside_allow_from_are_reset() {
        let mut config = StackConfig::new(SERVER, 80, 1500, 8);
        config.allow_from = vec![crate::cidr::parse("10.0.0.0/8").expect("cidr")];
        let mut stack = Stack::new(config, Instant::ZERO);
        let mut client = Client::new();
        let handle = client.connect(42000, 80);
        assert!(shuttle(&mut stack, &mut client, Instant::ZERO).is_empty());
        assert_eq!(client.socket(handle).state(), tcp::State::Closed);
        assert_eq!(stack.connection_count(), 0);

        let mut config = StackConfig::new(SERVER, 80, 1500, 8);
        config.allow_from = vec![crate::cidr::parse("169.254.169.253/32").expect("cidr")];
        let mut stack = Stack::new(config, Instant::ZERO);
        client.connect(42001, 80);
        assert_eq!(shuttle(&mut stack, &mut client, Instant::ZERO).len(), 1);
    }

    #[test]
    fn a_connection_that_never_speaks_is_reset_after_the_first_data_timeout() {
        let mut stack = stack(8);
        let mut client = Client::new();
        let handle = client.connect_silent(43000, 80);
        assert!(shuttle(&mut stack, &mut client, Instant::ZERO).is_empty());
        let delay = stack
            .poll_delay(Instant::ZERO)
            .expect("a deadline to reset it");
        // A timer may wake it early (it then reschedules), never late.
        assert!(delay <= Duration::from_secs(10), "{delay:?}");
        assert!(shuttle(&mut stack, &mut client, Instant::from_secs(9)).is_empty());
        assert_eq!(client.socket(handle).state(), tcp::State::Established);
        shuttle(&mut stack, &mut client, Instant::from_secs(10));
        assert_eq!(client.socket(handle).state(), tcp::State::Closed);
        assert_eq!(stack.connection_count(), 0);
    }

    #[test]
    fn syn_with_a_bad_checksum_leaves_no_socket() {
        let mut stack = stack(8);
        let mut client = Client::new();
        client.connect(40007, 80);
        let mut syn = client.outgoing(Instant::ZERO).remove(0);
        let last = syn.len() - 1;
        syn[last] ^= 0xff;
        stack.receive(syn, Instant::ZERO);
        stack.poll(Instant::ZERO);
        assert_eq!(stack.connection_count(), 0);
        assert!(stack.transmit_queue().is_empty());
        assert_live_count_true(&stack);
    }

    #[test]
    fn icmp_echo_is_answered() {
        let mut stack = stack(8);
        let mut icmp = vec![0u8; 8 + 4];
        let mut echo = Icmpv4Packet::new_unchecked(&mut icmp);
        echo.set_msg_type(Icmpv4Message::EchoRequest);
        echo.set_msg_code(0);
        echo.set_echo_ident(0x1234);
        echo.set_echo_seq_no(1);
        echo.data_mut().copy_from_slice(b"ping");
        echo.fill_checksum();
        stack.receive(ipv4(IpProtocol::Icmp, &icmp), Instant::ZERO);
        stack.poll(Instant::ZERO);
        let replies: Vec<Vec<u8>> = stack.transmit_queue().drain(..).collect();
        assert_eq!(replies.len(), 1);
        let reply = Ipv4Packet::new_checked(&replies[0]).expect("ipv4");
        assert_eq!(reply.dst_addr(), CLIENT);
        let reply = Icmpv4Packet::new_checked(reply.payload()).expect("icmp");
        assert_eq!(reply.msg_type(), Icmpv4Message::EchoReply);
    }

    #[test]
    fn udp_and_other_protocols_are_dropped_without_a_reply() {
        let mut stack = stack(8);
        let udp = [
            0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, b'd', b'n', b's', b'?',
        ];
        stack.receive(ipv4(IpProtocol::Udp, &udp), Instant::ZERO);
        stack.receive(ipv4(IpProtocol::Unknown(253), b"x"), Instant::ZERO);
        stack.poll(Instant::ZERO);
        assert!(stack.transmit_queue().is_empty());
    }

    #[test]
    fn garbage_and_truncated_packets_are_dropped_without_panic() {
        let mut stack = stack(8);
        let mut client = Client::new();
        client.connect(40008, 80);
        let syn = client.outgoing(Instant::ZERO).remove(0);
        for cut in 0..syn.len() {
            stack.receive(syn[..cut].to_vec(), Instant::ZERO);
        }
        let mut state = 0x9e37_79b9_u32;
        for length in [0usize, 1, 19, 20, 21, 40, 60, 576, 1500, 9000] {
            let bytes: Vec<u8> = (0..length)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            stack.receive(bytes, Instant::ZERO);
        }
        stack.poll(Instant::ZERO);
        assert_eq!(stack.connection_count(), 0);
    }
}
