//! Which connections a poll of the [`super::core::Stack`] must visit: those something happened
//! to since the last poll, and those whose timer is due. Nothing else is touched, so a poll costs
//! in proportion to the connections with work, not to the connections open.
//!
//! smoltcp's own `Interface::poll` walks every socket of its set on every call, and its ingress
//! looks for the socket a segment belongs to by walking the set too. With hundreds of clients
//! connected that walk was most of the stack's work per packet; the stack therefore gives each
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
    pub(super) fn mark_ready(&mut self, id: ConnectionId, slot: &mut Slot) {
        if !slot.ready {
            slot.ready = true;
            self.ready.push(id);
        }
    }

    /// The connection needs a poll at `at` (`None`: only when something happens to it).
    pub(super) fn wake_at(&mut self, id: ConnectionId, slot: &mut Slot, at: Option<Instant>) {
        if slot.wake_at == at {
            return;
        }
        if let Some(old) = slot.wake_at.take() {
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

    /// Starts a poll round: the connections to visit, each once at most when visited through
    /// [`Schedule::visit`]. Timers due at `now` leave the timer queue.
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

    /// Whether this round should visit the connection (false if it already did); clears its
    /// queue state, so whatever the visit decides is scheduled afresh.
    pub(super) fn visit(&mut self, id: ConnectionId, slot: &mut Slot) -> bool {
        if slot.visited == self.round {
            return false;
        }
        slot.visited = self.round;
        slot.ready = false;
        // A due timer was taken out by `start_round` already; a later one goes now.
        if let Some(at) = slot.wake_at.take() {
            self.due.remove(&(at, id));
        }
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
        schedule.wake_at(a, &mut slot_a, Some(Instant::from_millis(5)));
        schedule.wake_at(b, &mut slot_b, Some(Instant::from_millis(10)));
        schedule.wake_at(c, &mut slot_c, Some(Instant::from_millis(30)));
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
            if schedule.visit(id, slot) {
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
    fn moving_or_forgetting_a_timer_leaves_no_stale_entry() {
        let mut schedule = Schedule::default();
        let id = ConnectionId(7);
        let mut slot = Slot::default();
        schedule.wake_at(id, &mut slot, Some(Instant::from_millis(5)));
        schedule.wake_at(id, &mut slot, Some(Instant::from_millis(50)));
        assert_eq!(schedule.due.len(), 1);
        assert_eq!(
            schedule.next_wake(Instant::ZERO),
            Some(Instant::from_millis(50))
        );
        schedule.forget(id, &slot);
        assert_eq!(schedule.next_wake(Instant::ZERO), None);
    }
}
