//! The tokens the clouds hand out, kept until shortly before they expire: one cache for the GCE
//! access and identity tokens and the Azure managed-identity tokens.
//!
//! Keyed by what the token is for (an audience, a resource; `()` for the one access token) and
//! bounded: at most `capacity` keys. Every local user can ask for any key, and a key not held
//! runs the user's `gcloud`/`az`, so the cache is built so that one caller can neither deny
//! another its tokens nor run the command at will:
//!
//! - **One fetch at a time per key** (single flight), without a lock held across it: a burst for
//!   one audience starts one command, the rest wait for its answer, other keys go on. The fetch
//!   runs in a task of its own, so a caller that leaves (its client went away) does not cancel
//!   it for the others, and its result is kept.
//! - **Kept until [`RENEW_BEFORE`] before it expires**, then fetched again; while that renewal
//!   runs (or after it failed) the token in hand is still served until it expires.
//! - **A failure is not retried for [`COOLDOWN_SECONDS`] for that key** only.
//! - **A budget per caller** (the user behind a local connection, else its address): at most
//!   [`CALLER_BURST`] fetches started at once, one more every [`CALLER_REFILL_SECONDS`], and at
//!   most [`CALLER_RUNNING`] running at a time; beyond it the caller is refused (429) and no
//!   command runs. Callers are `None` for sources that run no command (fakes): no budget.
//! - **A full cache makes room from the caller holding the most keys** if it holds more than
//!   the newcomer will, else from the newcomer's own keys: one caller's flood of new keys
//!   recycles its own, never a smaller caller's token.
//!
//! No clock is read here: every call says what time it is (Unix seconds), so the tests step time
//! by hand.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::attribution::{Caller, CallerIdentity};

/// A token is fetched again when it has less than this left (seconds).
pub const RENEW_BEFORE: i64 = 300;

/// How long a failed fetch is not tried again for the same key (seconds).
pub const COOLDOWN_SECONDS: i64 = 5;

/// Fetches one caller may start in a burst.
pub const CALLER_BURST: u32 = 16;

/// How often a caller's budget gains one more fetch (seconds).
pub const CALLER_REFILL_SECONDS: i64 = 60;

/// Fetches one caller may have running at once.
pub const CALLER_RUNNING: usize = 4;

/// Callers whose budgets are remembered; those with a full budget and nothing running are
/// forgotten first (they lose nothing).
const CALLERS: usize = 1024;

/// A token and when it expires (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring<T> {
    /// The token.
    pub value: T,
    /// When it expires, in Unix seconds.
    pub expires: i64,
}

/// Why the cache gave no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotFetched {
    /// The fetch this call waited for failed (as the fetch reported it).
    #[error("{0}")]
    Failed(String),
    /// The last fetch for this key failed less than [`COOLDOWN_SECONDS`] ago.
    #[error("not run again for {seconds} s after it failed: {last}")]
    CoolingDown {
        /// Seconds left of the cooldown.
        seconds: i64,
        /// The failure, as it was reported then.
        last: String,
    },
    /// Every slot is taken by a fetch still running, or by another caller's share.
    #[error("{capacity} other tokens are held or being fetched; not starting another")]
    Busy {
        /// The cache's bound: how many keys it holds.
        capacity: usize,
    },
    /// The caller started [`CALLER_BURST`] fetches recently.
    #[error(
        "{caller} started {CALLER_BURST} token fetches recently; not starting another for {seconds} s"
    )]
    OverBudget {
        /// Who asked.
        caller: Caller,
        /// Seconds until its budget allows one more.
        seconds: i64,
    },
    /// The caller has [`CALLER_RUNNING`] fetches running.
    #[error("{caller} has {CALLER_RUNNING} token fetches running; not starting another")]
    CallerBusy {
        /// Who asked.
        caller: Caller,
    },
}

impl NotFetched {
    /// Whether this is the caller's own budget speaking (answered 429), not the source failing.
    pub fn is_rate_limit(&self) -> bool {
        matches!(
            self,
            NotFetched::OverBudget { .. } | NotFetched::CallerBusy { .. }
        )
    }
}

/// Whom a request for a token is charged to: the user behind a local connection, else its
/// address (`None` when the server names nobody: tests, fuzzing).
pub fn charged_to(caller: Option<&CallerIdentity>) -> Option<Caller> {
    let caller = caller?;
    Some(match (caller.uid, caller.address) {
        (Some(uid), _) => Caller::User(uid),
        (None, Some(address)) => Caller::Address(address),
        (None, None) => Caller::Address(std::net::Ipv4Addr::UNSPECIFIED.into()),
    })
}

/// Tokens by key, each fetched once and kept until it is due for renewal.
pub struct TokenCache<K, T> {
    slots: Mutex<HashMap<K, Arc<Slot<T>>>>,
    /// Shared with the running fetches, which give their caller's place back.
    budgets: Arc<Mutex<Budgets>>,
    capacity: usize,
}

type Budgets = HashMap<Caller, Budget>;

impl<K, T> std::fmt::Debug for TokenCache<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// One key's token and its fetch.
struct Slot<T> {
    /// Who brought the key in: whose share of the cache it is.
    owner: Option<Caller>,
    state: Mutex<State<T>>,
    /// Told when a fetch ends.
    fetched: Notify,
}

struct State<T> {
    held: Option<Expiring<T>>,
    /// When the last fetch that failed started, and why it failed.
    failed: Option<(i64, String)>,
    /// A fetch is running.
    fetching: bool,
    /// Fetches ended so far: a waiter knows whether the one it waited for has.
    ended: u64,
}

/// One caller's budget of fetches.
#[derive(Debug, Clone, Copy)]
struct Budget {
    left: u32,
    /// When `left` was last brought up to date.
    at: i64,
    running: usize,
}

impl Budget {
    fn new(now: i64) -> Budget {
        Budget {
            left: CALLER_BURST,
            at: now,
            running: 0,
        }
    }

    /// Brings `left` up to date at `now`.
    fn refill(&mut self, now: i64) {
        let gained = (now - self.at) / CALLER_REFILL_SECONDS;
        if gained > 0 {
            let gained = u32::try_from(gained).unwrap_or(u32::MAX);
            self.left = self.left.saturating_add(gained).min(CALLER_BURST);
            self.at = if self.left == CALLER_BURST {
                now
            } else {
                self.at + i64::from(gained) * CALLER_REFILL_SECONDS
            };
        }
    }

    fn is_idle(&self) -> bool {
        self.left == CALLER_BURST && self.running == 0
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> Slot<T> {
    /// The last second this slot is worth keeping: a held token's last second before it is due,
    /// a failure's last second of cooldown. Never waits: a slot whose state is busy is kept.
    fn keep_until(&self) -> i64 {
        match self.state.try_lock().as_deref() {
            Ok(State { fetching: true, .. }) | Err(_) => i64::MAX,
            Ok(State {
                held: Some(token), ..
            }) => token.expires - RENEW_BEFORE,
            Ok(State {
                failed: Some((at, _)),
                ..
            }) => at + COOLDOWN_SECONDS - 1,
            Ok(_) => i64::MIN,
        }
    }
}

impl<K: Eq + Hash + Clone, T: Clone + Send + 'static> TokenCache<K, T> {
    /// A cache of at most `capacity` keys (at least one).
    pub fn new(capacity: usize) -> TokenCache<K, T> {
        TokenCache {
            slots: Mutex::new(HashMap::new()),
            budgets: Arc::new(Mutex::new(HashMap::new())),
            capacity: capacity.max(1),
        }
    }

    /// The token for `key` at `now`, asked by `caller`: the one held while it has
    /// [`RENEW_BEFORE`] left (or, while a renewal runs or cools down, until it expires), else a
    /// new one from `fetch`, started in a task of its own if `caller`'s budget allows, while
    /// everyone asking for `key` waits for it. A failed fetch is reported as
    /// [`NotFetched::Failed`] with its error's text.
    pub async fn get<E, F, Fut, FE>(
        &self,
        key: &K,
        caller: Option<Caller>,
        now: i64,
        fetch: F,
    ) -> Result<Expiring<T>, E>
    where
        E: From<NotFetched>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Expiring<T>, FE>> + Send + 'static,
        FE: Display,
    {
        let slot = self.slot(key, caller, now)?;
        let mut fetch = Some(fetch);
        let mut waited_for: Option<u64> = None;
        loop {
            let fetched = slot.fetched.notified();
            tokio::pin!(fetched);
            // Registered before the state is read, so a fetch ending in between is not missed.
            fetched.as_mut().enable();
            {
                let mut state = lock(&slot.state);
                if let Some(token) = &state.held
                    && token.expires - now >= RENEW_BEFORE
                {
                    return Ok(token.clone());
                }
                if let (Some(ended), Some((_, why))) = (waited_for, &state.failed)
                    && state.ended > ended
                {
                    return Err(NotFetched::Failed(why.clone()).into());
                }
                // Due for renewal, but good until it expires.
                let in_hand = state
                    .held
                    .as_ref()
                    .filter(|token| token.expires > now)
                    .cloned();
                if !state.fetching {
                    if let Some((at, why)) = &state.failed
                        && now - at < COOLDOWN_SECONDS
                    {
                        return in_hand.ok_or_else(|| {
                            NotFetched::CoolingDown {
                                seconds: COOLDOWN_SECONDS - (now - at),
                                last: why.clone(),
                            }
                            .into()
                        });
                    }
                    let Some(fetch) = fetch.take() else {
                        // Unreachable in practice: a fetch this call started has ended.
                        return in_hand.ok_or_else(|| NotFetched::Busy { capacity: 0 }.into());
                    };
                    if let Err(refused) = self.charge(caller, now) {
                        return in_hand.ok_or_else(|| refused.into());
                    }
                    state.fetching = true;
                    let future = fetch();
                    self.run(slot.clone(), caller, now, future);
                } else if let Some(token) = in_hand {
                    return Ok(token);
                }
                waited_for = Some(state.ended);
            }
            fetched.await;
        }
    }

    /// Runs `future` for `slot` in a task of its own: it outlives any one caller, keeps its
    /// result in the slot, gives the caller's running fetch back and tells the waiters.
    fn run<Fut, FE>(&self, slot: Arc<Slot<T>>, caller: Option<Caller>, started: i64, future: Fut)
    where
        Fut: Future<Output = Result<Expiring<T>, FE>> + Send + 'static,
        FE: Display,
    {
        let ended = Ended {
            slot,
            budgets: self.budgets.clone(),
            caller,
            started,
            result: None,
        };
        tokio::spawn(async move {
            let mut ended = ended;
            let result = future.await;
            ended.result = Some(result.map_err(|error| error.to_string()));
        });
    }

    /// Takes one fetch from `caller`'s budget, or says why not.
    fn charge(&self, caller: Option<Caller>, now: i64) -> Result<(), NotFetched> {
        let Some(caller) = caller else {
            return Ok(());
        };
        let mut budgets = lock(&self.budgets);
        if !budgets.contains_key(&caller) && budgets.len() >= CALLERS {
            budgets.retain(|_, budget| {
                budget.refill(now);
                !budget.is_idle()
            });
            if budgets.len() >= CALLERS
                && let Some(oldest) = budgets
                    .iter()
                    .filter(|(_, budget)| budget.running == 0)
                    .min_by_key(|(_, budget)| budget.at)
                    .map(|(caller, _)| *caller)
            {
                budgets.remove(&oldest);
            }
        }
        let budget = budgets.entry(caller).or_insert_with(|| Budget::new(now));
        budget.refill(now);
        if budget.running >= CALLER_RUNNING {
            return Err(NotFetched::CallerBusy { caller });
        }
        if budget.left == 0 {
            return Err(NotFetched::OverBudget {
                caller,
                seconds: (budget.at + CALLER_REFILL_SECONDS - now).max(1),
            });
        }
        budget.left -= 1;
        budget.running += 1;
        Ok(())
    }

    /// The slot of `key`, made if it has none, and room for it: see the module documentation.
    fn slot(&self, key: &K, caller: Option<Caller>, now: i64) -> Result<Arc<Slot<T>>, NotFetched> {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get(key) {
            return Ok(slot.clone());
        }
        // Only a slot that no task holds may go: held once, by this map, nobody is fetching,
        // reading or waiting on it, and nobody can reach it without the lock held here.
        let idle = |slot: &Arc<Slot<T>>| Arc::strong_count(slot) == 1;
        if slots.len() >= self.capacity {
            slots.retain(|_, slot| !idle(slot) || slot.keep_until() >= now);
        }
        if slots.len() >= self.capacity {
            // A new key at a full cache needs a fetch: a caller with no budget left makes no
            // room.
            if let Some(caller) = caller
                && let Some(budget) = lock(&self.budgets).get_mut(&caller)
            {
                budget.refill(now);
                if budget.left == 0 {
                    return Err(NotFetched::OverBudget {
                        caller,
                        seconds: (budget.at + CALLER_REFILL_SECONDS - now).max(1),
                    });
                }
            }
            let Some(room) = room_for(&slots, caller, idle) else {
                return Err(NotFetched::Busy {
                    capacity: self.capacity,
                });
            };
            slots.remove(&room);
        }
        let slot = Arc::new(Slot {
            owner: caller,
            state: Mutex::new(State {
                held: None,
                failed: None,
                fetching: false,
                ended: 0,
            }),
            fetched: Notify::new(),
        });
        slots.insert(key.clone(), slot.clone());
        Ok(slot)
    }

    /// How many keys the cache holds now.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.slots).len()
    }
}

/// The key that makes room for one of `caller`'s: the idle key due soonest of the owner holding
/// the most keys, if that owner holds more than `caller` will (as the connection limits share
/// their places), else `caller`'s own idle key due soonest; `None`: no room.
fn room_for<K: Clone, T>(
    slots: &HashMap<K, Arc<Slot<T>>>,
    caller: Option<Caller>,
    idle: impl Fn(&Arc<Slot<T>>) -> bool,
) -> Option<K> {
    let mut holds: HashMap<Option<Caller>, usize> = HashMap::new();
    for slot in slots.values() {
        *holds.entry(slot.owner).or_default() += 1;
    }
    let soonest_of = |owner: Option<Caller>| {
        slots
            .iter()
            .filter(|(_, slot)| slot.owner == owner && idle(slot))
            .min_by_key(|(_, slot)| slot.keep_until())
            .map(|(key, _)| key.clone())
    };
    let newcomer_holds = holds.get(&caller).copied().unwrap_or(0);
    let mut heavier: Vec<(Option<Caller>, usize)> = holds
        .into_iter()
        .filter(|(owner, count)| *owner != caller && *count > newcomer_holds + 1)
        .collect();
    heavier.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    heavier
        .into_iter()
        .find_map(|(owner, _)| soonest_of(owner))
        .or_else(|| soonest_of(caller))
}

/// A running fetch's end, whenever it comes: dropped when the fetch's task finishes (or is
/// cancelled, or panics), it records the result, gives the caller's running fetch back and
/// tells the waiters.
struct Ended<T> {
    slot: Arc<Slot<T>>,
    budgets: Arc<Mutex<Budgets>>,
    caller: Option<Caller>,
    /// When the fetch started: a failure's cooldown counts from it.
    started: i64,
    result: Option<Result<Expiring<T>, String>>,
}

impl<T> Drop for Ended<T> {
    fn drop(&mut self) {
        {
            let mut state = lock(&self.slot.state);
            state.fetching = false;
            state.ended += 1;
            match self.result.take() {
                Some(Ok(token)) => {
                    state.held = Some(token);
                    state.failed = None;
                }
                Some(Err(why)) => state.failed = Some((self.started, why)),
                None => {
                    state.failed = Some((self.started, "the fetch was cancelled".to_owned()));
                }
            }
        }
        if let Some(caller) = self.caller
            && let Some(budget) = lock(&self.budgets).get_mut(&caller)
        {
            budget.running = budget.running.saturating_sub(1);
        }
        self.slot.fetched.notify_waiters();
    }
}

#[cfg(test)]
mod tests;
