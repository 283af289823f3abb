//! The endpoint against a second smoltcp interface playing the client, packets shuttled in
//! memory: no TUN, no clock, fully deterministic. Questions about callers are answered at once,
//! as the runtime does between two rounds, by a function of the client's address and port.

use super::*;
use smoltcp::iface::SocketHandle;
use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv6Packet};
use std::net::IpAddr;
use std::ops::{Deref, DerefMut};

mod connections;
mod extra;
mod hops;
mod ingress;
mod limit;

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

/// The endpoint as its runtime drives it: every question about callers is answered by `who` as
/// soon as a packet is held.
struct Server {
    endpoint: Endpoint,
    who: fn(SocketAddr) -> Caller,
}

impl Server {
    fn new(config: StackConfig, who: fn(SocketAddr) -> Caller) -> Server {
        Server {
            endpoint: Endpoint::new(config, Instant::ZERO),
            who,
        }
    }

    /// Callers told apart by source address only.
    fn by_address(config: StackConfig) -> Server {
        Server::new(config, |client| Caller::Address(client.ip()))
    }

    /// [`Endpoint::receive`], then the answers to any question it raised.
    fn receive(&mut self, packet: Vec<u8>, now: Instant) -> Received {
        let received = self.endpoint.receive(packet, now);
        if let Some(questions) = self.endpoint.caller_questions() {
            let who = self.who;
            let answers = questions.answer(|client, _| who(client));
            self.endpoint.answer_callers(answers, now);
        }
        received
    }
}

impl Deref for Server {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }
}

fn stack(max_connections: usize) -> Server {
    Server::by_address(StackConfig::new(SERVER, 80, 1500, max_connections))
}

/// Moves packets both ways until neither side has anything to say; returns what the stack
/// handed out. Checks after every poll that the kept count of live connections is true.
fn shuttle(stack: &mut Server, client: &mut Client, now: Instant) -> Vec<Established> {
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
fn assert_live_count_true(stack: &Endpoint) {
    let live = stack
        .table
        .connections
        .values()
        .filter(|c| c.is_live())
        .count();
    assert_eq!(stack.table.live, live, "the kept live count drifted");
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

fn dual_stack(max_connections: usize) -> Server {
    let mut config = StackConfig::new(SERVER, 80, 1500, max_connections);
    config.address_v6 = Some(SERVER_V6);
    Server::by_address(config)
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
