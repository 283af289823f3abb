//! Which connections the callers report may pay a process lookup for.
//!
//! Finding the process behind a local connection is a `/proc` scan of up to
//! [`crate::attribution::SCAN_BUDGET`], and one user can open thousands of connections a
//! second. So each caller (a local user, or a source address) has a bucket of
//! [`BURST`] lookups, refilled at [`LOOKUPS_PER_SECOND`]; its other connections are counted
//! under the user without a pid. A script that runs a few `curl`s at once, or one now and
//! then, is named every time; a flood is named a few times a second, and costs no more.
//!
//! It does not run lookups, nor hold them back once started: the fair lookup slots
//! (`crate::attribution::slots`) bound how many run at once.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::attribution::Caller;

/// Process lookups per caller per second, once its burst is spent.
pub const LOOKUPS_PER_SECOND: u32 = 2;

/// Process lookups a caller may have at once after a quiet while.
pub const BURST: u32 = 8;

/// Callers whose bucket is remembered; beyond it, full buckets are forgotten (a forgotten
/// caller starts full again), and while none is full a new caller gets no lookup.
const REMEMBERED_CALLERS: usize = 1024;

/// The time one lookup takes to come back into a bucket.
const REFILL: Duration = Duration::from_millis(1000 / LOOKUPS_PER_SECOND as u64);

/// A caller's bucket: the lookups left, as of `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    left: u32,
    at: Instant,
}

impl Bucket {
    /// The bucket at `now`, refilled for the time since `at` (the part of a refill not yet
    /// earned is kept in `at`).
    fn at(self, now: Instant) -> Bucket {
        let elapsed = now.saturating_duration_since(self.at);
        let earned = u32::try_from(elapsed.as_millis() / REFILL.as_millis()).unwrap_or(u32::MAX);
        if self.left.saturating_add(earned) >= BURST {
            return Bucket {
                left: BURST,
                at: now,
            };
        }
        Bucket {
            left: self.left + earned,
            at: self.at + REFILL * earned,
        }
    }
}

/// Each caller's bucket.
#[derive(Debug, Default)]
pub struct Sampling {
    buckets: Mutex<HashMap<Caller, Bucket>>,
}

impl Sampling {
    /// Whether `caller` may have a process lookup at `now` (and, if so, takes it from its
    /// bucket).
    pub fn due(&self, caller: Caller, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= REMEMBERED_CALLERS && !buckets.contains_key(&caller) {
            buckets.retain(|_, bucket| bucket.at(now).left < BURST);
            if buckets.len() >= REMEMBERED_CALLERS {
                return false;
            }
        }
        let full = Bucket {
            left: BURST,
            at: now,
        };
        let bucket = buckets.entry(caller).or_insert(full);
        *bucket = bucket.at(now);
        if bucket.left == 0 {
            return false;
        }
        bucket.left -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_a_few_lookups_per_second_and_others_are_not_held_back() {
        let sampling = Sampling::default();
        let start = Instant::now();
        let flooder = Caller::User(1000);
        let granted = (0..1000)
            .filter(|n| sampling.due(flooder, start + Duration::from_micros(*n)))
            .count();
        assert_eq!(granted, BURST as usize, "a burst at once");
        assert!(sampling.due(Caller::User(2000), start), "another user");
        // Then a steady flood gets LOOKUPS_PER_SECOND.
        let later = start + Duration::from_millis(1);
        let granted = (0..10_000)
            .filter(|n| sampling.due(flooder, later + Duration::from_millis(*n)))
            .count();
        assert_eq!(granted, 10 * LOOKUPS_PER_SECOND as usize);
        assert!(
            sampling.due(flooder, later + Duration::from_secs(20)),
            "after a quiet while"
        );
    }

    #[test]
    fn the_buckets_remembered_are_bounded() {
        let sampling = Sampling::default();
        let start = Instant::now();
        for uid in 0..(REMEMBERED_CALLERS as u32) {
            assert!(sampling.due(Caller::User(uid), start));
        }
        assert!(
            !sampling.due(Caller::User(99_999), start),
            "no bucket is full: no room"
        );
        let later = start + REFILL;
        assert!(sampling.due(Caller::User(99_999), later), "full ones go");
        let remembered = sampling.buckets.lock().expect("lock").len();
        assert!(remembered <= REMEMBERED_CALLERS, "{remembered}");
    }
}
