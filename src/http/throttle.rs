//! The budget of a `--throttle` fault: a token bucket of RPS requests per second, for the
//! whole service or one per caller, as EC2 throttles metadata queries (HTTP 429).
//!
//! A bucket holds at most one second's worth of tokens (RPS), refills continuously, and each
//! admitted request takes one; a request that finds none is throttled and takes nothing. With a
//! budget per caller, each [`Caller`] (the socket owner's uid, else the address) has a bucket of
//! its own, at most [`MAX_CALLERS`] of them: a full bucket is the same as a new one, so full
//! buckets are forgotten first; callers beyond that share one overflow bucket, so a flood of
//! new addresses cannot buy itself a fresh budget each.
//!
//! What this does not do: decide which requests a fault matches or write the 429 (the fault
//! board and the service that claims the request do), or read a clock (every call passes
//! `now`).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::time::Instant;

use crate::attribution::Caller;

/// The most callers with a bucket of their own; more share the overflow bucket.
pub const MAX_CALLERS: usize = 1024;

/// The most requests per second a throttle may allow; beyond it a throttle throttles nothing a
/// TUN can carry.
pub const MAX_RATE: u32 = 1_000_000;

/// Tokens and when they were last counted.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    counted: Instant,
}

impl Bucket {
    fn full(rate: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate),
            counted: now,
        }
    }

    fn refill(&mut self, rate: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.counted).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(rate));
        self.counted = now;
    }

    fn is_full(&self, rate: u32) -> bool {
        self.tokens >= f64::from(rate)
    }

    /// Takes a token if there is one; whether there was.
    fn take(&mut self, rate: u32, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Buckets {
    /// The whole service's bucket; with a budget per caller, the overflow bucket.
    shared: Bucket,
    callers: HashMap<Caller, Bucket>,
}

/// One throttle's buckets.
#[derive(Debug)]
pub struct Throttle {
    rate: u32,
    per_caller: bool,
    buckets: Mutex<Buckets>,
}

impl Throttle {
    /// A throttle of `rate` requests per second (at least 1), full at `now`; `per_caller`
    /// gives each caller a budget of its own.
    pub fn new(rate: u32, per_caller: bool, now: Instant) -> Throttle {
        let rate = rate.clamp(1, MAX_RATE);
        Throttle {
            rate,
            per_caller,
            buckets: Mutex::new(Buckets {
                shared: Bucket::full(rate, now),
                callers: HashMap::new(),
            }),
        }
    }

    /// Whether each caller has a budget of its own (then [`Throttle::admit`] wants the caller).
    pub fn per_caller(&self) -> bool {
        self.per_caller
    }

    /// Whether one more request of `caller` is within the budget at `now` (it then counts).
    /// Without a budget per caller, or without a caller, the whole service's bucket decides.
    pub fn admit(&self, caller: Option<Caller>, now: Instant) -> bool {
        let rate = self.rate;
        // A poisoned lock only means a thread panicked mid-count; the numbers are still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(caller) = caller.filter(|_| self.per_caller) else {
            return buckets.shared.take(rate, now);
        };
        if !buckets.callers.contains_key(&caller) && buckets.callers.len() >= MAX_CALLERS {
            buckets.callers.retain(|_, bucket| {
                bucket.refill(rate, now);
                !bucket.is_full(rate)
            });
        }
        if buckets.callers.len() >= MAX_CALLERS && !buckets.callers.contains_key(&caller) {
            return buckets.shared.take(rate, now);
        }
        buckets
            .callers
            .entry(caller)
            .or_insert_with(|| Bucket::full(rate, now))
            .take(rate, now)
    }

    /// How many callers have a bucket of their own.
    pub fn callers(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .callers
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::time::Duration;

    fn admitted(throttle: &Throttle, caller: Option<Caller>, count: u32, now: Instant) -> u32 {
        (0..count)
            .filter(|_| throttle.admit(caller, now))
            .count()
            .try_into()
            .unwrap_or(u32::MAX)
    }

    #[test]
    fn a_bucket_admits_one_second_of_burst_then_refills_at_the_rate() {
        let start = Instant::now();
        let throttle = Throttle::new(5, false, start);
        assert_eq!(
            admitted(&throttle, None, 20, start),
            5,
            "one second's burst"
        );
        assert!(!throttle.admit(None, start + Duration::from_millis(100)));
        assert!(
            throttle.admit(None, start + Duration::from_millis(200)),
            "a token every 200 ms at 5 per second"
        );
        let later = start + Duration::from_secs(60);
        assert_eq!(
            admitted(&throttle, None, 20, later),
            5,
            "never more than RPS"
        );
    }

    #[test]
    fn without_a_budget_per_caller_every_caller_shares_one_bucket() {
        let start = Instant::now();
        let throttle = Throttle::new(3, false, start);
        assert_eq!(admitted(&throttle, Some(Caller::User(1)), 3, start), 3);
        assert!(!throttle.admit(Some(Caller::User(2)), start));
        assert_eq!(throttle.callers(), 0);
    }

    #[test]
    fn a_budget_per_caller_keeps_one_callers_flood_from_another() {
        let start = Instant::now();
        let throttle = Throttle::new(2, true, start);
        assert_eq!(admitted(&throttle, Some(Caller::User(1000)), 10, start), 2);
        assert_eq!(
            admitted(&throttle, Some(Caller::User(1001)), 10, start),
            2,
            "uid 1001 has its own budget"
        );
    }

    #[test]
    fn the_callers_table_is_bounded_and_new_callers_beyond_it_share_the_overflow() {
        let start = Instant::now();
        let throttle = Throttle::new(1, true, start);
        let address = |n: u32| Caller::Address(IpAddr::from(n.to_be_bytes()));
        for n in 0..u32::try_from(MAX_CALLERS).unwrap_or(u32::MAX) {
            assert!(throttle.admit(Some(address(n)), start));
        }
        assert_eq!(throttle.callers(), MAX_CALLERS);
        let beyond = u32::try_from(MAX_CALLERS).unwrap_or(u32::MAX);
        assert!(
            throttle.admit(Some(address(beyond)), start),
            "the overflow's token"
        );
        assert!(
            !throttle.admit(Some(address(beyond + 1)), start),
            "new callers share the overflow bucket: no fresh budget each"
        );
        assert_eq!(throttle.callers(), MAX_CALLERS, "never more");
        // Once their buckets are full again, old callers are forgotten to make room.
        let later = start + Duration::from_secs(2);
        assert!(throttle.admit(Some(address(beyond + 2)), later));
        assert_eq!(throttle.callers(), 1);
    }
}
