//! Who gives way when a new connection finds the table full (`--max-connections` on the TUN,
//! `--max-listen-connections` on the kernel listeners): a pure function of a snapshot of the
//! live connections, so every rule is tested with a table of cases and no socket. Generic over
//! how a connection is named ([`ConnectionId`] here; the kernel listeners' table in
//! `crate::runtime` names its own), so both limits share one policy.
//!
//! The limit itself is a count the endpoint keeps; this module decides only what happens once it
//! is reached: which connection is reset to make room, or that the newcomer is refused. It reads
//! no clock (each connection says how long it has been quiet) and asks nobody who is calling: the
//! endpoint hands in the callers, learnt by its runtime outside the stack lock. The goal is that
//! neither a flood of idle or half-open connections nor one caller's busy keep-alive connections
//! can lock another caller out: [`make_room`] states the rules, and
//! `docs/hardening.md#the-connection-limit-and-eviction` why.

use super::schedule::ConnectionId;
use crate::attribution::Caller;
use std::collections::HashMap;
use std::time::Duration;

/// How long a connection must have sent nothing before a new client may evict it.
pub(crate) const EVICTION_MIN_IDLE: Duration = Duration::from_secs(1);

/// How long a new handshake is safe from eviction: a local handshake completes in well under a
/// millisecond, and the grace keeps a burst of new clients arriving in one batch from evicting
/// each other.
pub(crate) const HANDSHAKE_GRACE: Duration = Duration::from_millis(50);

/// One live connection as the choice sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry<Id = ConnectionId> {
    pub(crate) id: Id,
    /// Who it is charged to.
    pub(crate) caller: Caller,
    pub(crate) stage: Stage,
    /// Since the client last sent data (or its SYN).
    pub(crate) quiet_for: Duration,
}

/// How far a live connection has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Handshaking, or connected and silent: no stream exists yet (a kernel connection: no
    /// byte read yet).
    Handshake,
    /// Owned by a stream (a kernel connection: its client has sent something).
    Accepted,
}

/// What becomes of a newcomer at the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Room<Id = ConnectionId> {
    /// Reset `victim` and admit the newcomer.
    Evict { victim: Id, why: Why },
    /// Nothing may go: the newcomer is refused (smoltcp answers its SYN with a RST).
    Refuse,
}

/// Why a connection was chosen to make room (for the log and the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// Its caller holds the most connections, at least two more than the newcomer would.
    Heaviest,
    /// The newcomer's own oldest handshake, past the grace.
    OwnHandshake,
    /// The oldest handshake of anyone, past the grace.
    StaleHandshake,
    /// Idle at least [`EVICTION_MIN_IDLE`], held by a caller with at least as many as the
    /// newcomer would hold.
    Idle,
}

/// Chooses what makes room for a new connection from `newcomer` among the `live` connections
/// (those handshaking or owned by a stream):
///
/// 1. Whoever holds the most live connections gives one up if, after admission, the newcomer
///    would still hold fewer: its oldest handshake past [`HANDSHAKE_GRACE`], else its idlest
///    connection, however busy, else its oldest handshake even within the grace.
/// 2. Otherwise only idle connections are recycled: the newcomer's own oldest handshake past the
///    grace (a flood recycles its own half-open connections, never a real client's handshake
///    that is still waiting in the TUN queue behind the flood), else the oldest handshake of
///    anyone once past the grace (it serves nobody: a real client completes it and speaks within
///    milliseconds), else the connection idle longest, if idle at least [`EVICTION_MIN_IDLE`],
///    among callers holding at least as many as the newcomer would (the newcomer's own
///    included).
///
/// Among equals the earlier entry goes, so the choice is a function of the snapshot alone.
pub(crate) fn make_room<Id: Copy>(newcomer: Caller, live: &[Entry<Id>]) -> Room<Id> {
    // Per caller: how many it holds, and where it first appears (ties go to the earlier one).
    let mut holdings: HashMap<Caller, (usize, usize)> = HashMap::new();
    for (index, entry) in live.iter().enumerate() {
        holdings.entry(entry.caller).or_insert((0, index)).0 += 1;
    }
    let holds = |caller: Caller| holdings.get(&caller).map_or(0, |&(count, _)| count);
    let newcomer_holds = holds(newcomer);
    let heaviest = holdings
        .iter()
        .filter(|&(&caller, _)| caller != newcomer)
        .min_by_key(|&(_, &(count, first))| (std::cmp::Reverse(count), first))
        .map(|(&caller, &(count, _))| (caller, count));
    if let Some((hog, count)) = heaviest
        && count > newcomer_holds + 1
        && let Some(victim) = given_up_by(hog, live)
    {
        return Room::Evict {
            victim,
            why: Why::Heaviest,
        };
    }
    idle_connection(newcomer, newcomer_holds, live, holds)
}

/// The connection `hog` gives up: its oldest handshake past the grace, else its idlest
/// connection, else its oldest handshake.
fn given_up_by<Id: Copy>(hog: Caller, live: &[Entry<Id>]) -> Option<Id> {
    let of_hog = |stage: Stage| {
        live.iter()
            .filter(move |entry| entry.stage == stage && entry.caller == hog)
    };
    quietest(of_hog(Stage::Handshake).filter(|entry| entry.quiet_for >= HANDSHAKE_GRACE))
        .or_else(|| quietest(of_hog(Stage::Accepted)))
        .or_else(|| quietest(of_hog(Stage::Handshake)))
        .map(|entry| entry.id)
}

/// A connection idle enough to recycle; see [`make_room`], rule 2.
fn idle_connection<Id: Copy>(
    newcomer: Caller,
    newcomer_holds: usize,
    live: &[Entry<Id>],
    holds: impl Fn(Caller) -> usize,
) -> Room<Id> {
    let handshakes = || live.iter().filter(|entry| entry.stage == Stage::Handshake);
    let past_grace = |entry: &&Entry<Id>| entry.quiet_for >= HANDSHAKE_GRACE;
    let own = quietest(handshakes().filter(|entry| entry.caller == newcomer));
    if let Some(entry) = own.filter(past_grace) {
        return Room::Evict {
            victim: entry.id,
            why: Why::OwnHandshake,
        };
    }
    if let Some(entry) = quietest(handshakes()).filter(past_grace) {
        return Room::Evict {
            victim: entry.id,
            why: Why::StaleHandshake,
        };
    }
    let eligible = |entry: &&Entry<Id>| {
        entry.stage == Stage::Accepted
            && (entry.caller == newcomer || holds(entry.caller) > newcomer_holds)
    };
    match quietest(live.iter().filter(eligible)) {
        Some(entry) if entry.quiet_for >= EVICTION_MIN_IDLE => Room::Evict {
            victim: entry.id,
            why: Why::Idle,
        },
        _ => Room::Refuse,
    }
}

/// The entry quiet longest; the first of equals.
fn quietest<'a, Id: 'a>(entries: impl Iterator<Item = &'a Entry<Id>>) -> Option<&'a Entry<Id>> {
    entries.min_by_key(|entry| std::cmp::Reverse(entry.quiet_for))
}

#[cfg(test)]
mod tests;
