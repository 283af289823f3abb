//! A connection's life: handshake, first byte, data both ways, close, reaping, timers.

use super::*;

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

/// Issue 23, item 21: a client that sent its request and waits for an answer we are still
/// preparing sends nothing; smoltcp's timeout took that silence for a vanished client and reset
/// the connection after 10 s. Keep-alive probes, answered by the client's stack, keep it open.
#[test]
fn a_client_waiting_a_minute_for_its_answer_is_not_reset() {
    let mut stack = stack(8);
    let mut client = Client::new();
    let handle = client.connect(40007, 80);
    let server = shuttle(&mut stack, &mut client, Instant::ZERO)[0].id;
    let mut request = [0u8; 64];
    let read = stack
        .socket(server)
        .expect("socket")
        .recv_slice(&mut request)
        .expect("server recv");
    assert_eq!(&request[..read], FIRST_LINE);
    // Nothing to say for a minute: the client only answers what the stack sends it.
    for second in 1..=60 {
        shuttle(&mut stack, &mut client, Instant::from_secs(second));
    }
    let socket = stack.socket(server).expect("still there after a minute");
    assert_eq!(socket.state(), tcp::State::Established);
    socket
        .send_slice(b"HTTP/1.1 200 OK\r\n\r\n")
        .expect("the answer is written");
    shuttle(&mut stack, &mut client, Instant::from_secs(61));
    let mut response = [0u8; 64];
    let read = client
        .socket(handle)
        .recv_slice(&mut response)
        .expect("client recv");
    assert_eq!(&response[..read], b"HTTP/1.1 200 OK\r\n\r\n");
}

/// The other side of the same timer: a client that is gone (its packets go nowhere, nothing
/// answers the probes) is still reset within the retransmission timeout.
#[test]
fn a_client_that_vanished_while_waiting_is_reset_within_the_timeout() {
    let mut stack = stack(8);
    let mut client = Client::new();
    client.connect(40008, 80);
    let server = shuttle(&mut stack, &mut client, Instant::ZERO)[0].id;
    let mut probes = 0;
    for second in 1..=10 {
        stack.poll(Instant::from_secs(second));
        probes += stack.transmit_queue().drain(..).count();
    }
    assert!(probes >= 2, "{probes} keep-alive probes in 10 s");
    assert_eq!(
        stack.socket(server).map(|socket| socket.state()),
        Some(tcp::State::Closed),
        "reset 10 s after the client's last packet"
    );
}
