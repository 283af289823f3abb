//! Which connections the callers report may pay a process lookup for.
//!
//! Finding the process behind a local connection is a `/proc` scan of up to
//! [`crate::attribution::SCAN_BUDGET`], and one user can open thousands of connections a
//! second. So each caller (a local user, or a source address) gets at most
//! [`LOOKUPS_PER_SECOND`] lookups per second, counted in one-second windows; its other
//! connections are counted under the user without a pid. A script that runs one `curl` now
//! and then is named every time; a flood is named a few times a second, and costs no more.
//!
//! It does not run lookups, nor hold them back once started: the fair lookup slots
//! (`crate::attribution::slots`) bound how many run at once.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::attribution::Caller;

/// Process lookups per caller per second.
pub const LOOKUPS_PER_SECOND: u32 = 2;

/// Callers whose window is remembered; beyond it, windows that have ended are forgotten, and
/// while every one is current a new caller gets no lookup.
const REMEMBERED_CALLERS: usize = 1024;

const WINDOW: Duration = Duration::from_secs(1);

/// Each caller's current window: when it began and the lookups granted in it.
#[derive(Debug, Default)]
pub struct Sampling {
    windows: Mutex<HashMap<Caller, (Instant, u32)>>,
}

impl Sampling {
    /// Whether `caller` may have a process lookup at `now` (and, if so, counts it).
    pub fn due(&self, caller: Caller, now: Instant) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if windows.len() >= REMEMBERED_CALLERS && !windows.contains_key(&caller) {
            windows.retain(|_, (began, _)| now.saturating_duration_since(*began) < WINDOW);
            if windows.len() >= REMEMBERED_CALLERS {
                return false;
            }
        }
        let (began, granted) = windows.entry(caller).or_insert((now, 0));
        if now.saturating_duration_since(*began) >= WINDOW {
            *began = now;
            *granted = 0;
        }
        if *granted >= LOOKUPS_PER_SECOND {
            return false;
        }
        *granted += 1;
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
        assert_eq!(granted, LOOKUPS_PER_SECOND as usize);
        assert!(sampling.due(Caller::User(2000), start), "another user");
        assert!(
            sampling.due(flooder, start + Duration::from_millis(1001)),
            "the next second"
        );
    }

    #[test]
    fn the_windows_remembered_are_bounded() {
        let sampling = Sampling::default();
        let start = Instant::now();
        for uid in 0..(REMEMBERED_CALLERS as u32) {
            assert!(sampling.due(Caller::User(uid), start));
        }
        assert!(
            !sampling.due(Caller::User(99_999), start),
            "every window is current: no room"
        );
        let later = start + Duration::from_secs(2);
        assert!(sampling.due(Caller::User(99_999), later), "ended ones go");
        let remembered = sampling.windows.lock().expect("lock").len();
        assert!(remembered <= REMEMBERED_CALLERS, "{remembered}");
    }
}
