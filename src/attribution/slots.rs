//! The few slots the blocking lookups run in, shared fairly among callers.
//!
//! A lookup may scan `/proc` for tens of milliseconds, so only [`MAX_LOOKUPS`] run at once.
//! Were the slots one first-come queue, one user's burst of connections would line up ahead of
//! everybody else's (issue 23: a victim's credentials took 1.5–8 s behind 950 connections).
//! So each caller has one place in the shared queue at a time: its other lookups wait behind
//! its own, and a newcomer waits for at most one lookup per other caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Caller;

/// Lookups that may run at once.
pub const MAX_LOOKUPS: usize = 4;

/// Callers whose place is remembered; beyond it, places nobody holds are forgotten.
const REMEMBERED_CALLERS: usize = 1024;

/// The shared slots and each caller's place in line.
#[derive(Debug)]
pub struct LookupSlots {
    shared: Arc<Semaphore>,
    callers: Mutex<HashMap<Caller, Arc<Semaphore>>>,
}

impl Default for LookupSlots {
    fn default() -> Self {
        LookupSlots {
            shared: Arc::new(Semaphore::new(MAX_LOOKUPS)),
            callers: Mutex::default(),
        }
    }
}

/// A slot held; the next lookup may start once it is dropped.
#[derive(Debug)]
pub struct Slot {
    _shared: OwnedSemaphorePermit,
    _own: OwnedSemaphorePermit,
}

impl LookupSlots {
    /// Waits for `caller`'s earlier lookups to finish, then for a shared slot.
    pub async fn acquire(&self, caller: Caller) -> Option<Slot> {
        let own = self.place(caller).acquire_owned().await.ok()?;
        let shared = self.shared.clone().acquire_owned().await.ok()?;
        Some(Slot {
            _shared: shared,
            _own: own,
        })
    }

    /// Like [`LookupSlots::acquire`], but `None` at once when `caller` already has a lookup
    /// running or waiting: for work that may be skipped (the audit line's process name).
    pub async fn acquire_unless_busy(&self, caller: Caller) -> Option<Slot> {
        let own = self.place(caller).try_acquire_owned().ok()?;
        let shared = self.shared.clone().acquire_owned().await.ok()?;
        Some(Slot {
            _shared: shared,
            _own: own,
        })
    }

    /// `caller`'s place in line, made on first use.
    fn place(&self, caller: Caller) -> Arc<Semaphore> {
        let mut callers = self
            .callers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if callers.len() >= REMEMBERED_CALLERS && !callers.contains_key(&caller) {
            // Nobody holds or waits on a place only the map refers to.
            callers.retain(|_, place| Arc::strong_count(place) > 1);
        }
        callers
            .entry(caller)
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_callers_queue_does_not_hold_up_another_caller() {
        let slots = Arc::new(LookupSlots::default());
        let flooder = Caller::User(1000);
        // The flooder holds one slot and queues many more lookups behind it.
        let held = slots.acquire(flooder).await.expect("a slot");
        let mut queued = Vec::new();
        for _ in 0..50 {
            let slots = slots.clone();
            queued.push(tokio::spawn(async move {
                let _slot = slots.acquire(flooder).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }));
        }
        tokio::task::yield_now().await;
        // Another caller gets a slot at once: the flooder occupies one place, not fifty.
        let other = tokio::time::timeout(
            Duration::from_millis(100),
            slots.acquire(Caller::User(2000)),
        )
        .await;
        assert!(other.is_ok_and(|slot| slot.is_some()));
        assert!(
            slots.acquire_unless_busy(flooder).await.is_none(),
            "a busy caller's optional lookup is skipped"
        );
        drop(held);
        for task in queued {
            task.abort();
        }
    }

    #[tokio::test]
    async fn places_nobody_holds_are_forgotten_beyond_the_bound() {
        let slots = LookupSlots::default();
        for n in 0..(REMEMBERED_CALLERS as u32 + 10) {
            drop(slots.acquire(Caller::User(n)).await);
        }
        let remembered = slots.callers.lock().expect("lock").len();
        assert!(remembered <= REMEMBERED_CALLERS, "{remembered}");
    }
}
