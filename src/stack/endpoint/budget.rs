//! The link-local packet budget: EC2 drops packets to its link-local services beyond 1024 a
//! second per interface, silently (`linklocal_allowance_exceeded`), and clients see only their
//! own kernel's retransmissions. `--packet-budget PPS` and `ctl fault --packet-budget` model it
//! here, before TCP: a packet beyond the budget never reaches smoltcp, so a dropped SYN, ACK or
//! request is retransmitted by the client's kernel as on EC2, which an HTTP-level fault cannot
//! show.
//!
//! Two parts: a [`PacketBudget`] handle (the rate in force and the drops counted, atomics shared
//! with the control channel, which changes the rate while the stack runs), and the endpoint's
//! own token bucket (`Bucket`), which reads no clock: it is given the endpoint's `now`.
//!
//! What this does not do: tell callers apart (EC2's allowance is per interface, not per
//! caller), or drop anything the endpoint would not serve anyway (those are dropped before).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use smoltcp::time::Instant;

/// The largest budget, packets per second: far beyond what a TUN carries.
pub const MAX_PACKETS_PER_SECOND: u32 = 1_000_000;

/// The packet budget in force and its drops, shared by the endpoint and the control channel.
#[derive(Debug, Clone, Default)]
pub struct PacketBudget(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    /// The budget given at start (`--packet-budget`); 0: none.
    start: u32,
    /// The budget in force, packets per second; 0: none.
    rate: AtomicU32,
    /// Packets dropped for the budget since start.
    dropped: AtomicU64,
    /// Bumped at every change, so a timed change ends only if nothing changed it since.
    generation: AtomicU64,
}

impl PacketBudget {
    /// A budget of `packets_per_second` from the start (`None`: no budget).
    pub fn new(packets_per_second: Option<u32>) -> PacketBudget {
        let start = packets_per_second.unwrap_or(0);
        PacketBudget(Arc::new(Shared {
            start,
            rate: AtomicU32::new(start),
            dropped: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }))
    }

    /// The budget in force, packets per second; `None`: every packet passes.
    pub fn rate(&self) -> Option<u32> {
        match self.0.rate.load(Ordering::Relaxed) {
            0 => None,
            rate => Some(rate),
        }
    }

    /// Puts `packets_per_second` in force (at most [`MAX_PACKETS_PER_SECOND`]); the returned
    /// generation lets a timed change end only itself ([`PacketBudget::restore_if`]).
    pub fn set(&self, packets_per_second: u32) -> u64 {
        self.0.rate.store(
            packets_per_second.min(MAX_PACKETS_PER_SECOND),
            Ordering::Relaxed,
        );
        self.0.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Back to the budget given at start (`ctl fault clear`).
    pub fn restore(&self) {
        self.0.rate.store(self.0.start, Ordering::Relaxed);
        self.0.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Back to the start's budget if the change of `generation` is still the last one (a
    /// `--for` that ran out); whether it was.
    pub fn restore_if(&self, generation: u64) -> bool {
        let current = self.0.generation.load(Ordering::Relaxed);
        if current != generation {
            return false;
        }
        self.restore();
        true
    }

    /// Whether the budget in force is not the start's (a fault set it).
    pub fn changed(&self) -> bool {
        self.0.rate.load(Ordering::Relaxed) != self.0.start
    }

    /// Packets dropped for the budget since start.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    fn count_drop(&self) {
        self.0.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// The endpoint's token bucket: `rate` packets a second, a burst of up to one second's worth,
/// counted in millionths of a packet so that integer arithmetic keeps every fraction.
#[derive(Debug, Default)]
pub(crate) struct Bucket {
    /// Millionths of a packet in the bucket.
    micro_packets: u64,
    /// The rate the bucket was filled for; a new rate starts it full.
    rate: u32,
    /// When it was last filled.
    filled: Option<Instant>,
}

const MICRO: u64 = 1_000_000;

impl Bucket {
    /// Whether one more packet fits `budget` at `now`; a drop is counted in `budget`.
    pub(crate) fn admit(&mut self, budget: &PacketBudget, now: Instant) -> bool {
        let Some(rate) = budget.rate() else {
            self.rate = 0;
            return true;
        };
        let capacity = u64::from(rate) * MICRO;
        if rate != self.rate {
            self.rate = rate;
            self.micro_packets = capacity;
            self.filled = Some(now);
        }
        if let Some(filled) = self.filled
            && now > filled
        {
            let elapsed = (now - filled).total_micros();
            // `rate` packets a second is `rate` millionths of a packet a microsecond.
            let added = elapsed.saturating_mul(u64::from(rate));
            self.micro_packets = self.micro_packets.saturating_add(added).min(capacity);
        }
        self.filled = Some(now);
        if self.micro_packets >= MICRO {
            self.micro_packets -= MICRO;
            true
        } else {
            budget.count_drop();
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: i64) -> Instant {
        Instant::from_millis(millis)
    }

    #[test]
    fn without_a_budget_every_packet_passes() {
        let budget = PacketBudget::new(None);
        let mut bucket = Bucket::default();
        assert!((0..10_000).all(|_| bucket.admit(&budget, at(0))));
        assert_eq!(budget.dropped(), 0);
    }

    #[test]
    fn a_second_s_worth_passes_at_once_then_the_rate() {
        let budget = PacketBudget::new(Some(50));
        let mut bucket = Bucket::default();
        let passed = (0..300).filter(|_| bucket.admit(&budget, at(0))).count();
        assert_eq!(passed, 50);
        assert_eq!(budget.dropped(), 250);
        // 100 ms later: five more.
        let passed = (0..300).filter(|_| bucket.admit(&budget, at(100))).count();
        assert_eq!(passed, 5);
        // A long pause fills it to one second's worth, no more.
        let passed = (0..300)
            .filter(|_| bucket.admit(&budget, at(60_000)))
            .count();
        assert_eq!(passed, 50);
    }

    #[test]
    fn a_changed_budget_starts_full_and_a_restore_lifts_it() {
        let budget = PacketBudget::new(None);
        let mut bucket = Bucket::default();
        let generation = budget.set(10);
        assert!(budget.changed());
        let passed = (0..100).filter(|_| bucket.admit(&budget, at(0))).count();
        assert_eq!(passed, 10);
        let later = budget.set(20);
        assert!(!budget.restore_if(generation), "a later change stands");
        assert_eq!(budget.rate(), Some(20));
        assert!(budget.restore_if(later));
        assert_eq!(budget.rate(), None);
        assert!(!budget.changed());
        assert!((0..100).all(|_| bucket.admit(&budget, at(1))));
    }

    #[test]
    fn a_budget_beyond_the_largest_is_the_largest() {
        let budget = PacketBudget::new(None);
        budget.set(u32::MAX);
        assert_eq!(budget.rate(), Some(MAX_PACKETS_PER_SECOND));
    }
}
