//! Which connections a poll of the [`super::Endpoint`] must visit: those something happened
//! to since the last poll, and those whose timer is due. Nothing else is touched, so a poll costs
//! in proportion to the connections with work, not to the connections open.
//!
//! smoltcp's own `Interface::poll` walks every socket of its set on every call, and its ingress
//! looks for the socket a segment belongs to by walking the set too. With hundreds of clients
//! connected that walk was most of the stack's work per packet; the endpoint therefore gives each
//! connection a socket set of its own and asks this schedule which ones to poll.
//!
//! Plain data: the per-connection part ([`Slot`]) lives in the connection, the queues here.

use smoltcp::time::Instant;
use std::collections::BTreeSet;

/// A connection's key for the life of the stack; never reused, so a stale key finds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub(super) u64);

/// A connection's place in the schedule.
#[derive(Debug, Default)]
pub(super) struct Slot {
    /// Its entry in the timer queue, if any.
    wake_at: Option<Instant>,
    /// Queued for the next poll already.
    ready: bool,
    /// The last poll round that visited it; a connection both ready and due is visited once.
    visited: u64,
}

#[derive(Debug, Default)]
pub(super) struct Schedule {
    /// Connections touched since the last poll (a packet arrived, a stream read or wrote).
    ready: Vec<ConnectionId>,
    /// Timers: when each connection next needs a poll even if nothing happens to it.
    due: BTreeSet<(Instant, ConnectionId)>,
    round: u64,
}

impl Schedule {
    /// The connection has work for the next poll.
    #[inline]
    pub(super) fn mark_ready(&mut self, id: ConnectionId, slot: &mut Slot) {
        if !slot.ready {
            slot.ready = true;
            self.ready.push(id);
        }
    }

    /// The connection needs a poll at `at` (`None`: only when something happens to it), as
    /// decided by a visit at `now`.
    ///
    /// A timer still queued for no later than `at` stays where it is: waking early costs one
    /// visit, which reschedules, while moving the timer on every packet (smoltcp's idle timeout
    /// moves with each segment) cost two tree operations per packet.
    pub(super) fn wake_at(
        &mut self,
        id: ConnectionId,
        slot: &mut Slot,
        at: Option<Instant>,
        now: Instant,
    ) {
        // An entry at or before `now` was taken out by this round's `start_round`.
        let queued = slot.wake_at.filter(|&old| old > now);
        match (queued, at) {
            (Some(old), Some(new)) if old <= new => return,
            (Some(_), None) => return,
            _ => {}
        }
        if let Some(old) = queued {
            self.due.remove(&(old, id));
        }
        if let Some(at) = at {
            self.due.insert((at, id));
        }
        slot.wake_at = at;
    }

    /// The connection is gone: drop its timer (a stale ready entry finds no connection).
    pub(super) fn forget(&mut self, id: ConnectionId, slot: &Slot) {
        if let Some(at) = slot.wake_at {
            self.due.remove(&(at, id));
        }
    }

    /// Starts a poll round at `now`: the connections to visit, each once at most when visited
    /// through [`Schedule::visit`]. Timers due at `now` leave the timer queue, and every visit
    /// ends with [`Schedule::wake_at`] at the same `now`.
    pub(super) fn start_round(&mut self, now: Instant) -> Vec<ConnectionId> {
        self.round += 1;
        let mut work = std::mem::take(&mut self.ready);
        while let Some(&(at, id)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            work.push(id);
        }
        work
    }

    /// Whether this round should visit the connection (false if it already did).
    #[inline]
    pub(super) fn visit(&mut self, slot: &mut Slot) -> bool {
        if slot.visited == self.round {
            return false;
        }
        slot.visited = self.round;
        slot.ready = false;
        true
    }

    /// When the next poll is needed: now if any connection is ready, else the earliest timer.
    pub(super) fn next_wake(&self, now: Instant) -> Option<Instant> {
        if self.ready.is_empty() {
            self.due.first().map(|&(at, _)| at)
        } else {
            Some(now)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_visits_ready_and_due_connections_once_each_and_leaves_later_timers() {
        let mut schedule = Schedule::default();
        let (a, b, c) = (ConnectionId(1), ConnectionId(2), ConnectionId(3));
        let (mut slot_a, mut slot_b, mut slot_c) =
            (Slot::default(), Slot::default(), Slot::default());
        schedule.mark_ready(a, &mut slot_a);
        schedule.mark_ready(a, &mut slot_a);
        schedule.wake_at(a, &mut slot_a, Some(Instant::from_millis(5)), Instant::ZERO);
        schedule.wake_at(
            b,
            &mut slot_b,
            Some(Instant::from_millis(10)),
            Instant::ZERO,
        );
        schedule.wake_at(
            c,
            &mut slot_c,
            Some(Instant::from_millis(30)),
            Instant::ZERO,
        );
        assert_eq!(
            schedule.next_wake(Instant::ZERO),
            Some(Instant::ZERO),
            "ready: poll now"
        );

        let work = schedule.start_round(Instant::from_millis(20));
        let mut visited = Vec::new();
        for id in work {
            let slot = match id.0 {
                1 => &mut slot_a,
                2 => &mut slot_b,
                _ => &mut slot_c,
            };
            if schedule.visit(slot) {
                visited.push(id);
            }
        }
        assert_eq!(visited, [a, b]);
        assert_eq!(
            schedule.next_wake(Instant::from_millis(20)),
            Some(Instant::from_millis(30))
        );
    }

    #[test]
    fn a_timer_moves_earlier_at_once_and_later_only_after_it_fired() {
        let mut schedule = Schedule::default();
        let id = ConnectionId(7);
        let mut slot = Slot::default();
        let at = Instant::from_millis;
        schedule.wake_at(id, &mut slot, Some(at(50)), at(0));
        schedule.wake_at(id, &mut slot, Some(at(20)), at(1));
        assert_eq!(schedule.next_wake(at(1)), Some(at(20)), "earlier: moved");
        schedule.wake_at(id, &mut slot, Some(at(90)), at(2));
        assert_eq!(
            schedule.next_wake(at(2)),
            Some(at(20)),
            "later: kept, wakes early"
        );
        assert_eq!(schedule.due.len(), 1);

        // It fires; the visit reschedules at the later time.
        assert_eq!(schedule.start_round(at(20)), [id]);
        assert!(schedule.visit(&mut slot));
        schedule.wake_at(id, &mut slot, Some(at(90)), at(20));
        assert_eq!(schedule.next_wake(at(20)), Some(at(90)));
        assert_eq!(schedule.due.len(), 1);

        schedule.forget(id, &slot);
        assert_eq!(schedule.next_wake(at(20)), None);
    }
}
