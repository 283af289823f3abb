//! The eviction rules as a table: each case a snapshot of the live connections, a newcomer, and
//! what must become of it. No socket, no clock.

use super::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const ROOT: Caller = Caller::User(0);
const ALICE: Caller = Caller::User(1000);
const BOB: Caller = Caller::User(1001);
const CONTAINER: Caller = Caller::Address(IpAddr::V4(Ipv4Addr::new(172, 17, 0, 2)));
const GUEST_V6: Caller = Caller::Address(IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 7)));

/// `count` connections of `caller` at `stage`, each quiet for `quiet_ms`, numbered from `first`.
fn held(first: u64, count: u64, caller: Caller, stage: Stage, quiet_ms: u64) -> Vec<Entry> {
    (first..first + count)
        .map(|id| Entry {
            id: ConnectionId(id),
            caller,
            stage,
            quiet_for: Duration::from_millis(quiet_ms),
        })
        .collect()
}

fn evict(id: u64, why: Why) -> Room {
    Room::Evict {
        victim: ConnectionId(id),
        why,
    }
}

use Stage::{Accepted, Handshake};

#[test]
fn the_rules_choose_as_documented() {
    struct Case {
        name: &'static str,
        live: Vec<Entry>,
        newcomer: Caller,
        expect: Room,
    }
    let cases = [
        Case {
            name: "one user's busy keep-alive flood gives up its idlest, however busy",
            live: [
                held(1, 3, ALICE, Accepted, 100),
                held(4, 1, ALICE, Accepted, 300),
            ]
            .concat(),
            newcomer: BOB,
            expect: evict(4, Why::Heaviest),
        },
        Case {
            name: "the heaviest gives up its oldest handshake past the grace before a busy one",
            live: [
                held(1, 3, ALICE, Accepted, 5_000),
                held(4, 1, ALICE, Handshake, 60),
                held(5, 1, ALICE, Handshake, 10),
            ]
            .concat(),
            newcomer: BOB,
            expect: evict(4, Why::Heaviest),
        },
        Case {
            name: "the heaviest with only young handshakes gives up its oldest one",
            live: [
                held(1, 1, ALICE, Handshake, 10),
                held(2, 1, ALICE, Handshake, 30),
                held(3, 1, ALICE, Handshake, 20),
            ]
            .concat(),
            newcomer: BOB,
            expect: evict(2, Why::Heaviest),
        },
        Case {
            name: "a flooder may not take a place back from one it was made to give up",
            live: [
                held(1, 3, ALICE, Accepted, 100),
                held(4, 1, ROOT, Accepted, 100),
            ]
            .concat(),
            newcomer: ALICE,
            expect: Room::Refuse,
        },
        Case {
            name: "one more than the newcomer would hold is no reason to give one up",
            live: [
                held(1, 2, ALICE, Accepted, 100),
                held(3, 1, BOB, Accepted, 100),
            ]
            .concat(),
            newcomer: BOB,
            expect: Room::Refuse,
        },
        Case {
            name: "a flood recycles its own handshake, not an older real client's",
            live: [
                held(1, 1, ROOT, Handshake, 120),
                held(2, 1, ALICE, Handshake, 110),
                held(3, 1, ALICE, Handshake, 100),
                held(4, 1, ALICE, Handshake, 90),
            ]
            .concat(),
            newcomer: ALICE,
            expect: evict(2, Why::OwnHandshake),
        },
        Case {
            name: "the newcomer's own handshake within the grace is kept; an older stale one goes",
            live: [
                held(1, 1, CONTAINER, Handshake, 200),
                held(2, 1, ALICE, Handshake, 10),
            ]
            .concat(),
            newcomer: ALICE,
            expect: evict(1, Why::StaleHandshake),
        },
        Case {
            name: "small callers' dead handshakes make room for a bigger caller",
            live: [
                held(1, 2, ROOT, Accepted, 100),
                held(
                    3,
                    1,
                    Caller::Address(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
                    Handshake,
                    100,
                ),
                held(
                    4,
                    1,
                    Caller::Address(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
                    Handshake,
                    100,
                ),
            ]
            .concat(),
            newcomer: ROOT,
            expect: evict(3, Why::StaleHandshake),
        },
        Case {
            name: "a burst of newcomers does not evict each other's handshakes within the grace",
            live: [
                held(1, 1, ALICE, Handshake, 0),
                held(2, 1, BOB, Handshake, 1),
            ]
            .concat(),
            newcomer: ROOT,
            expect: Room::Refuse,
        },
        Case {
            name: "the connection idle longest goes, once idle a second",
            live: [
                held(1, 1, ROOT, Accepted, 2_000),
                held(2, 1, ROOT, Accepted, 0),
            ]
            .concat(),
            newcomer: ROOT,
            expect: evict(1, Why::Idle),
        },
        Case {
            name: "recently active connections are not evicted",
            live: held(1, 1, ROOT, Accepted, 500),
            newcomer: ROOT,
            expect: Room::Refuse,
        },
        Case {
            name: "an idle connection of a caller holding fewer than the newcomer would is kept",
            live: [
                held(1, 1, BOB, Accepted, 9_000),
                held(2, 1, ALICE, Accepted, 0),
            ]
            .concat(),
            newcomer: ALICE,
            expect: Room::Refuse,
        },
        Case {
            name: "an idle connection of a caller holding as many as the newcomer would goes",
            live: [
                held(1, 2, BOB, Accepted, 1_500),
                held(3, 1, ALICE, Accepted, 0),
            ]
            .concat(),
            newcomer: ALICE,
            expect: evict(1, Why::Idle),
        },
        Case {
            name: "IPv6 callers are callers like any other: a v6 guest's flood gives way",
            live: [
                held(1, 3, GUEST_V6, Accepted, 100),
                held(4, 1, ALICE, Accepted, 100),
            ]
            .concat(),
            newcomer: ALICE,
            expect: evict(1, Why::Heaviest),
        },
        Case {
            name: "ties go to the earlier entry",
            live: [
                held(1, 3, ALICE, Accepted, 100),
                held(4, 3, BOB, Accepted, 100),
            ]
            .concat(),
            newcomer: ROOT,
            expect: evict(1, Why::Heaviest),
        },
        Case {
            name: "an empty table has nothing to give",
            live: Vec::new(),
            newcomer: ROOT,
            expect: Room::Refuse,
        },
    ];
    for case in cases {
        assert_eq!(
            make_room(case.newcomer, &case.live),
            case.expect,
            "{}",
            case.name
        );
    }
}

#[test]
fn the_grace_and_the_idle_time_are_inclusive_bounds() {
    let just = |stage, quiet_for| Entry {
        id: ConnectionId(1),
        caller: BOB,
        stage,
        quiet_for,
    };
    let handshake = [just(Handshake, HANDSHAKE_GRACE)];
    assert_eq!(make_room(ALICE, &handshake), evict(1, Why::StaleHandshake));
    let younger = [just(Handshake, HANDSHAKE_GRACE - Duration::from_millis(1))];
    assert_eq!(make_room(ALICE, &younger), Room::Refuse);
    let idle = [just(Accepted, EVICTION_MIN_IDLE)];
    assert_eq!(make_room(BOB, &idle), evict(1, Why::Idle));
    let busier = [just(Accepted, EVICTION_MIN_IDLE - Duration::from_millis(1))];
    assert_eq!(make_room(BOB, &busier), Room::Refuse);
}
