//! The sans-IO TCP endpoint for `169.254.169.254:80`: packets in, packets and connections out.
//!
//! It owns the smoltcp [`Interface`], the [`SocketSet`] and the bookkeeping smoltcp leaves to its
//! user. It reads no clock and touches no descriptor: the caller passes `now` and moves packets,
//! so tests drive it entirely in memory.
//!
//! Read before changing:
//! - smoltcp has no listen backlog: one socket serves one connection. A socket is created when a
//!   SYN for a new 4-tuple arrives, *before* smoltcp sees the packet, and packets are fed one at a
//!   time so a burst of SYNs cannot outrun socket creation.
//! - smoltcp dispatches a packet to the first socket that accepts it, so a retransmitted SYN must
//!   not create a second socket: connections are keyed by the client's endpoint.
//! - A socket handle is an index that smoltcp reuses. A handle held by a live
//!   [`super::TcpStream`] is never removed; only detached (dropped) or never-accepted sockets are.
//! - Connections are handed out once ESTABLISHED, so half-open handshakes cost no HTTP task.

use super::device::PacketQueues;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpProtocol, Ipv4Address, Ipv4Packet, TcpPacket,
};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

/// What the endpoint is and how much it may hold.
#[derive(Debug, Clone)]
pub struct StackConfig {
    pub address: Ipv4Addr,
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
    /// Seeds initial sequence numbers; take it from the OS RNG.
    pub random_seed: u64,
}

impl StackConfig {
    pub fn new(address: Ipv4Addr, port: u16, mtu: usize, max_connections: usize) -> Self {
        StackConfig {
            address,
            port,
            mtu,
            max_connections,
            receive_buffer: 8 * 1024,
            send_buffer: 16 * 1024,
            retransmit_timeout: Duration::from_secs(10),
            linger: Duration::from_secs(5),
            random_seed: 0,
        }
    }
}

/// A connection that completed its handshake and is ready for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Established {
    pub handle: SocketHandle,
    pub peer: SocketAddr,
}

#[derive(Debug)]
struct Connection {
    peer: IpEndpoint,
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Handshake under way; no stream exists.
    Handshake,
    /// A stream owns it.
    Accepted,
    /// The stream was dropped at `since`; reap once closed or after the linger time.
    Detached { since: Instant },
}

/// The TCP endpoint.
pub struct Stack {
    config: StackConfig,
    interface: Interface,
    device: PacketQueues,
    sockets: SocketSet<'static>,
    by_peer: HashMap<IpEndpoint, SocketHandle>,
    connections: HashMap<SocketHandle, Connection>,
    handshakes: Vec<SocketHandle>,
    detached: Vec<SocketHandle>,
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
    pub fn new(config: StackConfig, now: Instant) -> Self {
        let mut device = PacketQueues::new(config.mtu);
        let mut interface_config = Config::new(HardwareAddress::Ip);
        interface_config.random_seed = config.random_seed;
        let mut interface = Interface::new(interface_config, &mut device, now);
        let address: Ipv4Address = config.address;
        interface.update_ip_addrs(|addrs| {
            // Capacity is IFACE_MAX_ADDR_COUNT (2); one address always fits.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(address), 32));
        });
        // Replies need a route back to clients; with Medium::Ip a default route via our own
        // address is enough, and without it smoltcp goes silent for a second per new peer.
        let _ = interface.routes_mut().add_default_ipv4_route(address);
        Stack {
            config,
            interface,
            device,
            sockets: SocketSet::new(Vec::new()),
            by_peer: HashMap::new(),
            connections: HashMap::new(),
            handshakes: Vec::new(),
            detached: Vec::new(),
        }
    }

    /// Live connections, in any phase.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Processes one packet read from the TUN.
    ///
    /// Only TCP and ICMP addressed to us reach smoltcp (which answers echo requests and resets
    /// connections to closed ports); anything else is dropped here without a reply.
    pub fn receive(&mut self, packet: Vec<u8>, now: Instant) {
        let opened = match self.classify(&packet) {
            Ingress::Drop => return,
            Ingress::NewConnection(peer) => self.open_for(peer),
            Ingress::Pass => None,
        };
        self.device.receive.push_back(packet);
        self.interface
            .poll_ingress_single(now, &mut self.device, &mut self.sockets);
        self.device.receive.clear();
        // smoltcp rejected the SYN (bad checksum, bad options): a socket left listening would
        // count against the limit forever and could swallow another client's SYN.
        if let Some(handle) = opened
            && self.sockets.get::<tcp::Socket>(handle).state() == tcp::State::Listen
        {
            self.remove(handle);
        }
    }

    /// Runs timers and emits everything due, then returns connections that just became
    /// established and reaps finished ones.
    pub fn poll(&mut self, now: Instant) -> Vec<Established> {
        self.interface
            .poll(now, &mut self.device, &mut self.sockets);
        let established = self.take_established();
        self.reap(now);
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
        let socket_delay = self.interface.poll_delay(now, &self.sockets);
        // Detached connections must be reaped on time even when smoltcp itself has no timer.
        let linger_delay = self
            .detached
            .iter()
            .filter_map(|handle| match self.connections.get(handle)?.phase {
                Phase::Detached { since } => Some(since + self.config.linger),
                _ => None,
            })
            .min()
            .map(|deadline| {
                if deadline > now {
                    deadline - now
                } else {
                    Duration::ZERO
                }
            });
        match (socket_delay, linger_delay) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The TCP socket behind a handle; `None` if it was reaped.
    pub fn socket(&mut self, handle: SocketHandle) -> Option<&mut tcp::Socket<'static>> {
        if self.connections.contains_key(&handle) {
            Some(self.sockets.get_mut::<tcp::Socket>(handle))
        } else {
            None
        }
    }

    /// The stream for `handle` was dropped: close our side and forget it once TCP is done.
    pub fn detach(&mut self, handle: SocketHandle, now: Instant) {
        let Some(connection) = self.connections.get_mut(&handle) else {
            return;
        };
        connection.phase = Phase::Detached { since: now };
        self.sockets.get_mut::<tcp::Socket>(handle).close();
        self.detached.push(handle);
    }

    /// Resets every connection (used when the process gives up on graceful shutdown).
    pub fn abort_all(&mut self) {
        for &handle in self.connections.keys() {
            self.sockets.get_mut::<tcp::Socket>(handle).abort();
        }
    }

    fn classify(&self, packet: &[u8]) -> Ingress {
        let Ok(ip) = Ipv4Packet::new_checked(packet) else {
            return Ingress::Drop;
        };
        if ip.version() != 4 || ip.dst_addr() != self.config.address {
            return Ingress::Drop;
        }
        match ip.next_header() {
            IpProtocol::Icmp => Ingress::Pass,
            IpProtocol::Tcp => {
                // Fragments cannot be inspected; smoltcp is built without reassembly and drops them.
                if ip.more_frags() || ip.frag_offset() != 0 {
                    return Ingress::Drop;
                }
                let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
                    return Ingress::Drop;
                };
                let opens_connection = tcp.syn() && !tcp.ack() && !tcp.rst() && !tcp.fin();
                if opens_connection && tcp.dst_port() == self.config.port {
                    Ingress::NewConnection(IpEndpoint::new(
                        IpAddress::Ipv4(ip.src_addr()),
                        tcp.src_port(),
                    ))
                } else {
                    Ingress::Pass
                }
            }
            _ => Ingress::Drop,
        }
    }

    /// Makes sure a socket is listening for `peer`'s SYN, within the connection limit.
    fn open_for(&mut self, peer: IpEndpoint) -> Option<SocketHandle> {
        if let Some(&existing) = self.by_peer.get(&peer) {
            let state = self.sockets.get::<tcp::Socket>(existing).state();
            let reusable = matches!(state, tcp::State::TimeWait | tcp::State::Closed);
            let detached = matches!(
                self.connections.get(&existing).map(|c| c.phase),
                Some(Phase::Detached { .. })
            );
            if !reusable {
                // A retransmitted SYN: the socket already serving this peer answers it.
                return None;
            }
            if !detached {
                // The old stream still holds the handle; the client will retry its SYN.
                return None;
            }
            self.remove(existing);
        }
        if self.connections.len() >= self.config.max_connections {
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
        let endpoint = IpEndpoint::new(IpAddress::Ipv4(self.config.address), self.config.port);
        socket.listen(endpoint).ok()?;
        let handle = self.sockets.add(socket);
        self.by_peer.insert(peer, handle);
        self.connections.insert(
            handle,
            Connection {
                peer,
                phase: Phase::Handshake,
            },
        );
        self.handshakes.push(handle);
        Some(handle)
    }

    fn take_established(&mut self) -> Vec<Established> {
        let mut established = Vec::new();
        let sockets = &self.sockets;
        let connections = &mut self.connections;
        let mut failed = Vec::new();
        self.handshakes.retain(|&handle| {
            let socket = sockets.get::<tcp::Socket>(handle);
            match socket.state() {
                tcp::State::Listen | tcp::State::SynReceived => true,
                tcp::State::Closed | tcp::State::TimeWait => {
                    failed.push(handle);
                    false
                }
                // Established, or already past it (a client that sent data and FIN at once):
                // either way the request deserves a stream.
                _ => {
                    if let Some(connection) = connections.get_mut(&handle) {
                        connection.phase = Phase::Accepted;
                        established.push(Established {
                            handle,
                            peer: endpoint_to_socket_addr(connection.peer),
                        });
                    }
                    false
                }
            }
        });
        for handle in failed {
            self.remove(handle);
        }
        established
    }

    fn reap(&mut self, now: Instant) {
        let linger = self.config.linger;
        let mut finished = Vec::new();
        for &handle in &self.detached {
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            let done = match socket.state() {
                tcp::State::TimeWait => true,
                // Closed with no remote: any RST owed has been sent.
                tcp::State::Closed => socket.remote_endpoint().is_none(),
                _ => false,
            };
            if done {
                finished.push(handle);
                continue;
            }
            if let Some(Connection {
                phase: Phase::Detached { since },
                ..
            }) = self.connections.get(&handle)
                && now >= *since + linger
            {
                // The peer never finished closing: reset, reap on a later poll after the RST left.
                socket.abort();
            }
        }
        for handle in finished {
            self.remove(handle);
        }
    }

    fn remove(&mut self, handle: SocketHandle) {
        if let Some(connection) = self.connections.remove(&handle) {
            if self.by_peer.get(&connection.peer) == Some(&handle) {
                self.by_peer.remove(&connection.peer);
            }
            self.sockets.remove(handle);
        }
        self.handshakes.retain(|&h| h != handle);
        self.detached.retain(|&h| h != handle);
    }
}

enum Ingress {
    Drop,
    Pass,
    NewConnection(IpEndpoint),
}

fn endpoint_to_socket_addr(endpoint: IpEndpoint) -> SocketAddr {
    match endpoint.addr {
        IpAddress::Ipv4(addr) => SocketAddr::new(addr.into(), endpoint.port),
    }
}
