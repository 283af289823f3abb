//! The connection limit: who gives way, against real handshakes; and how the endpoint holds a
//! SYN until its runtime says who is calling.

use super::*;

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

/// Charges client ports from 50000 up to uid 1000 (a flooding user), the rest to root; either
/// family, as the kernel names the owners of IPv4 and IPv6 sockets alike.
fn by_port(client: SocketAddr) -> Caller {
    Caller::User(if client.port() >= 50000 { 1000 } else { 0 })
}

#[test]
fn at_the_limit_the_caller_holding_most_gives_up_a_busy_connection_and_cannot_retake_it() {
    let config = StackConfig::new(SERVER, 80, 1500, 4);
    let mut stack = Server::new(config, by_port);
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
fn spoofed_from_port_60000(client: SocketAddr) -> Caller {
    match client.port() {
        port if port >= 60000 => Caller::Address(IpAddr::V4(Ipv4Addr::new(
            10,
            0,
            (port >> 8) as u8,
            port as u8,
        ))),
        _ => Caller::User(0),
    }
}

#[test]
fn half_open_handshakes_of_small_callers_still_make_room_for_a_bigger_one() {
    let config = StackConfig::new(SERVER, 80, 1500, 4);
    let mut stack = Server::new(config, spoofed_from_port_60000);
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
    let mut stack = Server::new(config, by_port);
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
fn ipv6_callers_are_told_apart_at_the_limit_like_ipv4_ones() {
    let mut config = StackConfig::new(SERVER, 80, 1500, 4);
    config.address_v6 = Some(SERVER_V6);
    let mut stack = Server::new(config, by_port);
    let mut client = Client::new_v6();
    // uid 1000 fills the table over IPv6 with busy connections.
    let flood: Vec<SocketHandle> = (0..4).map(|i| client.connect(50000 + i, 80)).collect();
    assert_eq!(shuttle(&mut stack, &mut client, Instant::ZERO).len(), 4);

    // Root, over IPv6 too, from the same address: the flood gives one up.
    let other_user = client.connect(40000, 80);
    let accepted = shuttle(&mut stack, &mut client, Instant::from_millis(100));
    assert_eq!(accepted.len(), 1, "another IPv6 user is served");
    assert_eq!(client.socket(other_user).state(), tcp::State::Established);
    let reset = flood
        .iter()
        .filter(|&&handle| client.socket(handle).state() == tcp::State::Closed)
        .count();
    assert_eq!(reset, 1, "exactly one flooding connection made room");
}

/// Delivers what `client` has to send straight to the endpoint, answering nothing.
fn send_unanswered(stack: &mut Server, client: &mut Client, now: Instant) -> Vec<Received> {
    let packets = client.outgoing(now);
    packets
        .into_iter()
        .map(|packet| stack.endpoint.receive(packet, now))
        .collect()
}

#[test]
fn a_syn_at_the_limit_waits_for_the_callers_and_each_connection_is_asked_about_once() {
    let mut stack = Server::new(StackConfig::new(SERVER, 80, 1500, 2), by_port);
    let mut client = Client::new();
    client.connect(50000, 80);
    client.connect(50001, 80);
    assert_eq!(shuttle(&mut stack, &mut client, Instant::ZERO).len(), 2);
    assert!(
        stack.caller_questions().is_none(),
        "below the limit nobody is asked about"
    );

    // Two SYNs of root arrive in one batch at the limit: both wait, nothing is sent yet.
    let later = Instant::from_millis(100);
    let first = client.connect(40000, 80);
    let second = client.connect(40001, 80);
    let received = send_unanswered(&mut stack, &mut client, later);
    assert_eq!(received, [Received::Held, Received::Held]);
    stack.poll(later);
    assert!(stack.transmit_queue().is_empty(), "no answer to a held SYN");

    let questions = stack.caller_questions().expect("questions");
    let mut asked: Vec<(u16, u16)> = questions
        .iter()
        .map(|question| (question.client.port(), question.server.port()))
        .collect();
    asked.sort_unstable();
    assert_eq!(
        asked,
        [(40000, 80), (40001, 80), (50000, 80), (50001, 80)],
        "both newcomers and both connections, each once"
    );
    assert!(
        questions
            .iter()
            .all(|question| question.server.ip() == IpAddr::V4(SERVER))
    );
    stack
        .endpoint
        .answer_callers(questions.answer(|client, _| by_port(client)), later);
    assert!(stack.caller_questions().is_none(), "nothing held any more");
    // uid 1000 held both places: it gives up one for the first newcomer; then both hold one
    // each, and the second newcomer finds nobody idle and is refused.
    let accepted = shuttle(&mut stack, &mut client, later);
    assert_eq!(accepted.len(), 1);
    assert_eq!(client.socket(first).state(), tcp::State::Established);
    assert_eq!(client.socket(second).state(), tcp::State::Closed);

    // The next SYN at the limit asks only about itself: every connection's caller is known.
    client.connect(40002, 80);
    let received = send_unanswered(&mut stack, &mut client, later);
    assert_eq!(received, [Received::Held]);
    let questions = stack.caller_questions().expect("questions");
    assert_eq!(questions.len(), 1);
    assert_eq!(
        questions.iter().next().map(|q| q.client.port()),
        Some(40002)
    );
}

#[test]
fn a_held_syn_is_refused_once_the_application_stops_accepting() {
    let mut stack = stack(1);
    let mut client = Client::new();
    client.connect(41000, 80);
    assert_eq!(shuttle(&mut stack, &mut client, Instant::ZERO).len(), 1);
    let later = Instant::from_secs(2);
    let newcomer = client.connect(41001, 80);
    assert_eq!(
        send_unanswered(&mut stack, &mut client, later),
        [Received::Held]
    );
    stack.refuse_new_connections(later);
    let questions = stack.caller_questions().expect("questions");
    stack.endpoint.answer_callers(
        questions.answer(|client, _| Caller::Address(client.ip())),
        later,
    );
    shuttle(&mut stack, &mut client, later);
    assert_eq!(client.socket(newcomer).state(), tcp::State::Closed);
}
