//! The hop limit of token replies, on the wire.

use super::*;

/// Writes `data` as the stream would (recording it), polls, and returns the packets the
/// stack sends.
fn reply(stack: &mut Server, server: Established, data: &[u8], now: Instant) -> Vec<Vec<u8>> {
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
