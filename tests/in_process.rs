//! The whole data path in one process, as any user: packets → smoltcp → `TcpStream` → hyper
//! `http::Server` → `clouds::ec2::Ec2`, and back, with no root, no TUN and no network namespace.
//!
//! The binary's own composition root (`runtime::Runtime::start`, with the services
//! `runtime::services` builds from the same flags) runs on one end of an in-memory
//! [`PacketPipe`]; a second smoltcp interface plays the client on the other end, so every byte
//! crosses two real TCP implementations. This proves our own code fast and deterministically;
//! the namespace suites (`tests/namespace/`: `tun_transport`, `tun_lifecycle`, `hostile_*`) prove
//! the kernel's side, which this cannot.
//!
//! Each test runs on tokio's current-thread runtime: the client, the driver and hyper's
//! connection tasks take turns on one thread, so what happens between two packets is decided by
//! the code, not by thread timing. Timeouts are failure guards only; nothing sleeps to let
//! something happen.

use clap::Parser;
use imds_tun::cli::Cli;
use imds_tun::credentials::outage::Outage;
use imds_tun::runtime::{self, Runtime};
use imds_tun::stack::endpoint::PacketQueues;
use imds_tun::stack::{PacketIo, PacketPipe};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Packet, TcpPacket};
use std::net::Ipv4Addr;
use std::time::Duration;

const SERVER: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The source address every local client has on the real TUN.
const CLIENT: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 253);
const MTU: usize = 1500;
const INSTANCE_ID: &str = "i-0123456789abcdef0";
/// How long any one step may take before the test fails; everything here takes milliseconds.
const GUARD: Duration = Duration::from_secs(5);
/// Packets each direction of the pipe holds, well above what any test has in flight.
const PIPE_CAPACITY: usize = 256;

/// A whole imds-tun ([`Runtime`], as the binary starts it) on one end of the pipe, and a client
/// interface on the other.
struct InProcess {
    client: Client,
    runtime: Runtime,
}

impl InProcess {
    /// Starts imds-tun with `flags` (as on the command line, fake credentials) and room for
    /// `max_connections`.
    async fn start(flags: &[&str], max_connections: usize) -> InProcess {
        let max_connections = max_connections.to_string();
        let arguments = [
            "imds-tun",
            "--instance-id",
            INSTANCE_ID,
            "--mock-credentials",
            "--max-connections",
            &max_connections,
        ]
        .into_iter()
        .chain(flags.iter().copied());
        let settings = Cli::try_parse_from(arguments)
            .expect("the flags parse")
            .into_settings()
            .expect("the settings resolve");
        let built = runtime::services(&settings.backend, &Outage::default())
            .await
            .expect("the services start");
        let (stack_end, client_end) = PacketPipe::pair(PIPE_CAPACITY);
        let runtime = Runtime::start(&settings, built.services, Some(stack_end), Vec::new());
        InProcess {
            client: Client::new(client_end),
            runtime,
        }
    }
}

/// A client host: its own smoltcp interface at [`CLIENT`], packets through the pipe.
struct Client {
    interface: Interface,
    device: PacketQueues,
    sockets: SocketSet<'static>,
    pipe: PacketPipe,
    next_port: u16,
    /// The IP TTL of every packet from the server that carried data, in arrival order.
    data_ttls: Vec<u8>,
}

/// The client's clock: monotonic; it need not agree with the server's.
fn client_now() -> smoltcp::time::Instant {
    smoltcp::time::Instant::from(std::time::Instant::now())
}

impl Client {
    fn new(pipe: PacketPipe) -> Client {
        let mut device = PacketQueues::new(MTU);
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = 7;
        let mut interface = Interface::new(config, &mut device, client_now());
        interface.update_ip_addrs(|addresses| {
            addresses
                .push(IpCidr::new(IpAddress::Ipv4(CLIENT), 32))
                .expect("one address fits");
        });
        // With Medium::Ip a default route via our own address is all smoltcp needs to send.
        interface
            .routes_mut()
            .add_default_ipv4_route(CLIENT)
            .expect("a default route");
        Client {
            interface,
            device,
            sockets: SocketSet::new(Vec::new()),
            pipe,
            next_port: 40000,
            data_ttls: Vec::new(),
        }
    }

    /// A new socket connecting to the metadata port from the next free client port. Nothing is
    /// sent until the client next runs.
    fn connect(&mut self) -> SocketHandle {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 16 * 1024]),
            tcp::SocketBuffer::new(vec![0; 16 * 1024]),
        );
        let port = self.next_port;
        self.next_port += 1;
        socket
            .connect(
                self.interface.context(),
                (IpAddress::Ipv4(SERVER), 80),
                port,
            )
            .expect("connect");
        self.sockets.add(socket)
    }

    fn state(&self, handle: SocketHandle) -> tcp::State {
        self.sockets.get::<tcp::Socket>(handle).state()
    }

    /// Runs the client's side of the network until `done` says so: packets from the pipe into
    /// the interface, `done` (which may also read and write sockets), the interface's packets
    /// into the pipe. Waits for the next packet or the client's own TCP timer in between.
    async fn run_until(&mut self, mut done: impl FnMut(&mut SocketSet<'static>) -> bool) {
        let run = async {
            let mut buffer = vec![0u8; MTU + 64];
            loop {
                self.interface
                    .poll(client_now(), &mut self.device, &mut self.sockets);
                let finished = done(&mut self.sockets);
                let now = client_now();
                self.interface
                    .poll(now, &mut self.device, &mut self.sockets);
                let outgoing: Vec<Vec<u8>> = self.device.transmit.drain(..).collect();
                for packet in outgoing {
                    self.pipe
                        .send(&packet)
                        .await
                        .expect("the driver's end of the pipe is open");
                }
                if finished {
                    return;
                }
                let timer = self.interface.poll_delay(now, &self.sockets);
                tokio::select! {
                    ready = self.pipe.readable() => {
                        ready.expect("the driver's end of the pipe is open");
                        while let Ok(length) = self.pipe.try_recv(&mut buffer) {
                            let packet = buffer[..length].to_vec();
                            if let Some(ttl) = ttl_of_data(&packet) {
                                self.data_ttls.push(ttl);
                            }
                            self.device.receive.push_back(packet);
                        }
                    }
                    () = sleep_for(timer) => {}
                }
            }
        };
        if tokio::time::timeout(GUARD, run).await.is_err() {
            let states: Vec<tcp::State> = self
                .sockets
                .iter()
                .filter_map(|(_, socket)| match socket {
                    smoltcp::socket::Socket::Tcp(socket) => Some(socket.state()),
                    #[allow(unreachable_patterns)] // only TCP sockets are enabled
                    _ => None,
                })
                .collect();
            panic!("the exchange did not finish within {GUARD:?}; client sockets: {states:?}");
        }
    }

    /// Runs every exchange to its end.
    async fn finish(&mut self, exchanges: &mut [Exchange]) {
        self.run_until(|sockets| {
            // Every exchange advances every round: `all` would stop at the first unfinished one.
            let mut all_over = true;
            for exchange in exchanges.iter_mut() {
                all_over &= exchange.advance(sockets);
            }
            all_over
        })
        .await;
    }

    /// One request on a new connection, and its response.
    async fn exchange(&mut self, request: Vec<u8>) -> Response {
        let mut exchange = Exchange::new(self.connect(), request);
        self.finish(std::slice::from_mut(&mut exchange)).await;
        exchange.response()
    }
}

/// The IP TTL of a TCP segment that carries data; `None` for anything else.
fn ttl_of_data(packet: &[u8]) -> Option<u8> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    (!tcp.payload().is_empty()).then(|| ip.hop_limit())
}

async fn sleep_for(timer: Option<smoltcp::time::Duration>) {
    match timer {
        Some(delay) => tokio::time::sleep(delay.into()).await,
        None => std::future::pending().await,
    }
}

/// One HTTP exchange on one client socket: the request goes out once connected, the response
/// is read until the server closes (requests say `Connection: close`) or resets.
struct Exchange {
    handle: SocketHandle,
    request: Vec<u8>,
    sent: usize,
    /// Send a FIN right after the request, as `printf ... | nc -N` does.
    fin_after_request: bool,
    fin_sent: bool,
    response: Vec<u8>,
    /// The handshake completed at some point.
    connected: bool,
}

impl Exchange {
    fn new(handle: SocketHandle, request: Vec<u8>) -> Exchange {
        Exchange {
            handle,
            request,
            sent: 0,
            fin_after_request: false,
            fin_sent: false,
            response: Vec::new(),
            connected: false,
        }
    }

    /// More request bytes, sent on the next [`Exchange::advance`].
    fn push(&mut self, bytes: &[u8]) {
        self.request.extend_from_slice(bytes);
    }

    /// Sends what it can, reads what arrived; true once the server has closed or reset.
    fn advance(&mut self, sockets: &mut SocketSet<'static>) -> bool {
        let socket = sockets.get_mut::<tcp::Socket>(self.handle);
        if socket.may_send() {
            self.connected = true;
            self.sent += socket
                .send_slice(&self.request[self.sent..])
                .expect("the socket may send");
            if self.fin_after_request && self.sent == self.request.len() && !self.fin_sent {
                socket.close();
                self.fin_sent = true;
            }
        }
        while socket.can_recv() {
            let read = socket
                .recv(|data| (data.len(), data.to_vec()))
                .expect("the socket may receive");
            self.response.extend_from_slice(&read);
        }
        let over = matches!(
            socket.state(),
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::Closing
                | tcp::State::TimeWait
                | tcp::State::Closed
        );
        if over && socket.state() == tcp::State::CloseWait {
            // The server is done; close our side so it can reap the connection.
            socket.close();
        }
        over
    }

    fn response(&self) -> Response {
        Response::parse(&self.response)
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    body: String,
}

impl Response {
    /// Status and body of a `Connection: close` response (the body runs to the close).
    fn parse(bytes: &[u8]) -> Response {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("a complete response head, got {text:?}"));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|status| status.parse().ok())
            .unwrap_or_else(|| panic!("a status line, got {head:?}"));
        Response {
            status,
            body: body.to_owned(),
        }
    }
}

/// A complete request that asks the server to close afterwards.
fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    request.into_bytes()
}

#[tokio::test]
async fn a_get_of_the_instance_id_is_served_in_memory() {
    let mut imds = InProcess::start(&[], 8).await;
    let response = imds
        .client
        .exchange(request("GET", "/latest/meta-data/instance-id", &[]))
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, INSTANCE_ID);
}

#[tokio::test]
async fn token_put_then_get_with_the_token_is_served_in_memory() {
    let mut imds = InProcess::start(&["--imdsv2", "required"], 8).await;
    let tokenless = imds
        .client
        .exchange(request("GET", "/latest/meta-data/instance-id", &[]))
        .await;
    assert_eq!(tokenless.status, 401, "required mode wants a token");

    let put = imds
        .client
        .exchange(request(
            "PUT",
            "/latest/api/token",
            &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
        ))
        .await;
    assert_eq!(put.status, 200, "{put:?}");
    assert!(!put.body.is_empty(), "the token is the body");

    let get = imds
        .client
        .exchange(request(
            "GET",
            "/latest/meta-data/instance-id",
            &[("X-aws-ec2-metadata-token", &put.body)],
        ))
        .await;
    assert_eq!(get.status, 200, "{get:?}");
    assert_eq!(get.body, INSTANCE_ID);
}

#[tokio::test]
async fn twenty_concurrent_connections_are_all_answered() {
    let mut imds = InProcess::start(&[], 64).await;
    let mut exchanges: Vec<Exchange> = (0..20)
        .map(|_| {
            Exchange::new(
                imds.client.connect(),
                request("GET", "/latest/meta-data/instance-id", &[]),
            )
        })
        .collect();
    imds.client.finish(&mut exchanges).await;
    for (index, exchange) in exchanges.iter().enumerate() {
        let response = exchange.response();
        assert_eq!(response.status, 200, "connection {index}: {response:?}");
        assert_eq!(response.body, INSTANCE_ID, "connection {index}");
    }
}

#[tokio::test]
async fn a_request_sent_with_a_fin_right_behind_it_is_still_answered() {
    let mut imds = InProcess::start(&[], 8).await;
    let mut exchange = Exchange::new(
        imds.client.connect(),
        request("GET", "/latest/meta-data/instance-id", &[]),
    );
    exchange.fin_after_request = true;
    imds.client
        .finish(std::slice::from_mut(&mut exchange))
        .await;
    assert!(exchange.fin_sent, "the client half-closed");
    let response = exchange.response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, INSTANCE_ID);
}

#[tokio::test]
async fn at_the_connection_limit_the_next_syn_is_reset_and_the_holders_are_still_served() {
    let mut imds = InProcess::start(&[], 2).await;
    let client = &mut imds.client;
    // Two connections that have spoken (so the stack handed them out) and wait mid-request.
    let mut holders: Vec<Exchange> = (0..2)
        .map(|_| {
            Exchange::new(
                client.connect(),
                b"GET /latest/meta-data/instance-id HTTP/1.1\r\n".to_vec(),
            )
        })
        .collect();
    client
        .run_until(|sockets| {
            let mut all_heard = true;
            for holder in &mut holders {
                holder.advance(sockets);
                // Acknowledged means the stack has the bytes, and so handed the connection out.
                let acknowledged = sockets.get::<tcp::Socket>(holder.handle).send_queue() == 0;
                all_heard &= holder.sent == holder.request.len() && acknowledged;
            }
            all_heard
        })
        .await;

    // The holders speak again, queued before the newcomer's SYN: on this one-thread runtime
    // all three packets reach the driver in one batch, with one clock reading, so neither
    // holder has been idle at all when the SYN is judged (idle ones could be evicted).
    for holder in &mut holders {
        holder.push(b"Host: 169.254.169.254\r\n");
        holder.advance(&mut client.sockets);
    }
    let newcomer = client.connect();
    client
        .run_until(|sockets| sockets.get::<tcp::Socket>(newcomer).state() != tcp::State::SynSent)
        .await;
    assert_eq!(
        client.state(newcomer),
        tcp::State::Closed,
        "the third SYN is answered with a RST"
    );

    for holder in &mut holders {
        assert_eq!(client.state(holder.handle), tcp::State::Established);
        holder.push(b"Connection: close\r\n\r\n");
    }
    client.finish(&mut holders).await;
    for holder in &holders {
        let response = holder.response();
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body, INSTANCE_ID);
    }
}

#[tokio::test]
async fn once_the_listener_is_dropped_a_new_syn_is_reset() {
    let mut imds = InProcess::start(&[], 8).await;
    let before = imds
        .client
        .exchange(request("GET", "/latest/meta-data/instance-id", &[]))
        .await;
    assert_eq!(before.status, 200, "served while accepting");

    tokio::time::timeout(GUARD, imds.runtime.stop_accepting())
        .await
        .expect("the accept loops stop in time");
    let mut after = Exchange::new(
        imds.client.connect(),
        request("GET", "/latest/meta-data/instance-id", &[]),
    );
    imds.client.finish(std::slice::from_mut(&mut after)).await;
    assert_eq!(imds.client.state(after.handle), tcp::State::Closed);
    assert!(!after.connected, "refused during the handshake, with a RST");
    assert!(after.response.is_empty());
}

#[tokio::test]
async fn the_driver_stops_when_the_other_end_of_its_pipe_is_dropped() {
    let InProcess {
        client,
        mut runtime,
    } = InProcess::start(&[], 8).await;
    drop(client);
    let error = tokio::time::timeout(GUARD, runtime.failed())
        .await
        .expect("the driver notices in time");
    assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
}

#[tokio::test]
async fn the_token_reply_leaves_with_the_hop_limit_and_a_later_get_on_the_same_connection_does_not()
{
    let mut imds = InProcess::start(&["--hop-limit", "1"], 8).await;
    let put = "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n\
               X-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n\r\n";
    let mut exchange = Exchange::new(imds.client.connect(), put.as_bytes().to_vec());
    // Keep-alive: wait for the whole token reply (its head says how long the body is).
    imds.client
        .run_until(|sockets| {
            exchange.advance(sockets);
            let text = String::from_utf8_lossy(&exchange.response);
            text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                head.lines()
                    .filter_map(|line| line.strip_prefix("content-length: "))
                    .any(|length| length.parse() == Ok(body.len()))
            })
        })
        .await;
    let token_packets = imds.client.data_ttls.len();
    assert!(token_packets > 0);
    exchange.push(&request("GET", "/latest/meta-data/instance-id", &[]));
    imds.client
        .finish(std::slice::from_mut(&mut exchange))
        .await;
    let ttls = &imds.client.data_ttls;
    assert!(
        ttls[..token_packets].iter().all(|&ttl| ttl == 1),
        "the token reply goes with TTL 1: {ttls:?}"
    );
    assert!(
        ttls.len() > token_packets && ttls[token_packets..].iter().all(|&ttl| ttl == 64),
        "the GET reply after it goes with TTL 64: {ttls:?}"
    );
    let text = String::from_utf8_lossy(&exchange.response);
    assert!(text.ends_with(INSTANCE_ID), "{text}");
}
