//! The tokens the clouds hand out, kept until shortly before they expire: one cache for the GCE
//! access and identity tokens and the Azure managed-identity tokens.
//!
//! Keyed by what the token is for (an audience, a resource; `()` for the one access token) and
//! bounded: at most `capacity` keys, the one that expires soonest making room for a new one.
//! Per key:
//!
//! - **One fetch at a time** (single flight): a burst of requests for one audience starts one
//!   `gcloud`, the rest wait for its answer. Each key has a lock of its own, held across its
//!   fetch; the cache's own lock is held only to find a key's slot, never while a command runs,
//!   so a slow audience does not hold up another.
//! - **Kept until [`RENEW_BEFORE`] before it expires**, then fetched again.
//! - **A failure is not retried for [`COOLDOWN_SECONDS`]**: a burst while the user's login has
//!   expired gets the same error at once instead of starting the command back to back. One
//!   audience's failure does not hold back another's.
//!
//! No clock is read here: every call says what time it is (Unix seconds), so the tests step time
//! by hand. Where a new key is admitted ([`TokenCache::get`], finding its slot) is where a
//! per-caller budget would go.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// A token is fetched again when it has less than this left (seconds).
pub const RENEW_BEFORE: i64 = 300;

/// How long a failed fetch is not tried again for the same key (seconds).
pub const COOLDOWN_SECONDS: i64 = 5;

/// A token and when it expires (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring<T> {
    /// The token.
    pub value: T,
    /// When it expires, in Unix seconds.
    pub expires: i64,
}

/// Why the cache gave neither a token nor a fresh failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotFetched {
    /// The last fetch for this key failed less than [`COOLDOWN_SECONDS`] ago.
    #[error("not run again for {seconds} s after it failed: {last}")]
    CoolingDown {
        /// Seconds left of the cooldown.
        seconds: i64,
        /// The failure, as it was reported then.
        last: String,
    },
    /// Every slot is taken by a fetch still running, so a new key has no room.
    #[error("{capacity} other tokens are being fetched at once; not starting another")]
    Busy {
        /// The cache's bound: how many fetches are running.
        capacity: usize,
    },
}

/// Tokens by key, each fetched once and kept until it is due for renewal.
pub struct TokenCache<K, T> {
    slots: Mutex<HashMap<K, Arc<Slot<T>>>>,
    capacity: usize,
}

impl<K, T> std::fmt::Debug for TokenCache<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// One key's token, behind the lock its fetch holds.
struct Slot<T> {
    state: tokio::sync::Mutex<State<T>>,
}

enum State<T> {
    Empty,
    Held(Expiring<T>),
    Failed { at: i64, why: String },
}

impl<T> Slot<T> {
    /// The last second this slot is worth keeping: a held token's last second before it is due,
    /// a failure's last second of cooldown. Only asked of a slot nobody else holds, so its lock
    /// is free.
    fn keep_until(&self) -> i64 {
        match self.state.try_lock().as_deref() {
            Ok(State::Held(token)) => token.expires - RENEW_BEFORE,
            Ok(State::Failed { at, .. }) => at + COOLDOWN_SECONDS - 1,
            Ok(State::Empty) | Err(_) => i64::MIN,
        }
    }
}

impl<K: Eq + Hash + Clone, T: Clone> TokenCache<K, T> {
    /// A cache of at most `capacity` keys (at least one).
    pub fn new(capacity: usize) -> TokenCache<K, T> {
        TokenCache {
            slots: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The token for `key` at `now`: the one held while it has [`RENEW_BEFORE`] left, else a
    /// new one from `fetch`, run by the first caller while the others for this key wait for it.
    /// A fetch's own error is returned as it is (and remembered for the cooldown).
    pub async fn get<E, F, Fut>(&self, key: &K, now: i64, fetch: F) -> Result<Expiring<T>, E>
    where
        E: From<NotFetched> + Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Expiring<T>, E>>,
    {
        let slot = self.slot(key, now)?;
        // Held across the fetch: the single flight for this key.
        let mut state = slot.state.lock().await;
        match &*state {
            State::Held(token) if token.expires - now >= RENEW_BEFORE => {
                return Ok(token.clone());
            }
            State::Failed { at, why } if now - at < COOLDOWN_SECONDS => {
                return Err(NotFetched::CoolingDown {
                    seconds: COOLDOWN_SECONDS - (now - at),
                    last: why.clone(),
                }
                .into());
            }
            _ => {}
        }
        match fetch().await {
            Ok(token) => {
                *state = State::Held(token.clone());
                Ok(token)
            }
            Err(error) => {
                *state = State::Failed {
                    at: now,
                    why: error.to_string(),
                };
                Err(error)
            }
        }
    }

    /// The slot of `key`, made (and room for it) if it has none.
    fn slot(&self, key: &K, now: i64) -> Result<Arc<Slot<T>>, NotFetched> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
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
            let soonest = slots
                .iter()
                .filter(|(_, slot)| idle(slot))
                .min_by_key(|(_, slot)| slot.keep_until())
                .map(|(key, _)| key.clone());
            match soonest {
                Some(soonest) => {
                    slots.remove(&soonest);
                }
                None => {
                    return Err(NotFetched::Busy {
                        capacity: self.capacity,
                    });
                }
            }
        }
        let slot = Arc::new(Slot {
            state: tokio::sync::Mutex::new(State::Empty),
        });
        slots.insert(key.clone(), slot.clone());
        Ok(slot)
    }

    /// How many keys the cache holds now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[derive(Debug, PartialEq, Eq, thiserror::Error)]
    enum Failure {
        #[error("the command failed")]
        Command,
        #[error("{0}")]
        NotFetched(#[from] NotFetched),
    }

    /// A cache of strings and a counter of the fetches it made.
    struct Counted {
        cache: TokenCache<&'static str, String>,
        fetches: AtomicUsize,
    }

    impl Counted {
        fn new(capacity: usize) -> Counted {
            Counted {
                cache: TokenCache::new(capacity),
                fetches: AtomicUsize::new(0),
            }
        }

        /// The token for `key` at `now`; a fetch makes `key#N` (N counting every fetch) that
        /// lives `lifetime` seconds, or fails when `lifetime` is `None`.
        async fn get(
            &self,
            key: &'static str,
            now: i64,
            lifetime: Option<i64>,
        ) -> Result<Expiring<String>, Failure> {
            self.cache
                .get(&key, now, || async {
                    let run = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
                    let lifetime = lifetime.ok_or(Failure::Command)?;
                    Ok(Expiring {
                        value: format!("{key}#{run}"),
                        expires: now + lifetime,
                    })
                })
                .await
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn a_token_is_kept_until_five_minutes_are_left_then_fetched_again() {
        let cache = Counted::new(4);
        let first = cache.get("aud", 1_000, Some(3_600)).await.expect("token");
        assert_eq!(first.expires, 4_600);
        let kept = cache.get("aud", 4_600 - RENEW_BEFORE, Some(3_600)).await;
        assert_eq!(kept, Ok(first.clone()), "still five minutes left");
        assert_eq!(cache.fetches(), 1);
        let renewed = cache
            .get("aud", 4_600 - RENEW_BEFORE + 1, Some(3_600))
            .await
            .expect("token");
        assert_eq!(renewed.value, "aud#2");
        assert_eq!(cache.fetches(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_for_one_key_runs_one_fetch_and_everyone_gets_its_token() {
        let cache: Arc<TokenCache<&str, String>> = Arc::new(TokenCache::new(4));
        let fetches = Arc::new(AtomicUsize::new(0));
        let burst: Vec<_> = (0..8)
            .map(|_| {
                let (cache, fetches) = (cache.clone(), fetches.clone());
                tokio::spawn(async move {
                    cache
                        .get(&"aud", 5_000, || async {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            // A slow command, in tokio's paused time: the others arrive meanwhile.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            Ok::<_, Failure>(Expiring {
                                value: "ya29.from-command".to_owned(),
                                expires: 5_900,
                            })
                        })
                        .await
                })
            })
            .collect();
        for task in burst {
            let token = task.await.expect("task").expect("token");
            assert_eq!(token.value, "ya29.from-command");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "single flight");
    }

    #[tokio::test]
    async fn a_slow_fetch_for_one_key_does_not_hold_up_another() {
        let cache: Arc<TokenCache<&str, String>> = Arc::new(TokenCache::new(4));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (started, has_started) = tokio::sync::oneshot::channel::<()>();
        let slow = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get(&"slow", 100, || async {
                        let _ = started.send(());
                        let _ = released.await;
                        Ok::<_, Failure>(Expiring {
                            value: "slow".to_owned(),
                            expires: 10_000,
                        })
                    })
                    .await
            }
        });
        has_started.await.expect("the slow fetch started");
        let quick = cache
            .get(&"quick", 100, || async {
                Ok::<_, Failure>(Expiring {
                    value: "quick".to_owned(),
                    expires: 10_000,
                })
            })
            .await;
        assert_eq!(quick.map(|token| token.value), Ok("quick".to_owned()));
        release.send(()).expect("the slow fetch waits");
        let slow = slow.await.expect("task").expect("token");
        assert_eq!(slow.value, "slow");
    }

    #[tokio::test]
    async fn a_failure_cools_down_its_own_key_only() {
        let cache = Counted::new(4);
        assert_eq!(cache.get("a", 100, None).await, Err(Failure::Command));
        assert_eq!(
            cache.get("a", 104, Some(3_600)).await,
            Err(Failure::NotFetched(NotFetched::CoolingDown {
                seconds: 1,
                last: "the command failed".to_owned()
            }))
        );
        assert_eq!(cache.fetches(), 1, "the cooling-down call fetched nothing");
        let other = cache.get("b", 104, Some(3_600)).await.expect("token");
        assert_eq!(other.value, "b#2", "another key is not held back");
        let again = cache.get("a", 105, Some(3_600)).await.expect("token");
        assert_eq!(
            again.value, "a#3",
            "fetched again once the cooldown is over"
        );
    }

    #[tokio::test]
    async fn at_most_capacity_keys_are_kept_and_the_soonest_due_makes_room() {
        let cache = Counted::new(2);
        cache.get("long", 0, Some(10_000)).await.expect("token");
        cache.get("short", 0, Some(1_000)).await.expect("token");
        cache.get("third", 0, Some(5_000)).await.expect("token");
        assert_eq!(cache.cache.len(), 2);
        assert_eq!(cache.fetches(), 3);
        cache.get("long", 0, Some(10_000)).await.expect("token");
        assert_eq!(cache.fetches(), 3, "the longest-lived token was kept");
        cache.get("short", 0, Some(1_000)).await.expect("token");
        assert_eq!(cache.fetches(), 4, "the soonest due went to make room");
    }

    #[tokio::test]
    async fn tokens_past_their_renewal_and_spent_failures_go_before_any_live_token() {
        let cache = Counted::new(3);
        cache.get("live", 0, Some(10_000)).await.expect("token");
        cache
            .get("due", 0, Some(RENEW_BEFORE + 10))
            .await
            .expect("token");
        assert!(cache.get("failed", 0, None).await.is_err());
        // At 20 the "due" token needs renewing and the failure's cooldown is over: both go.
        cache.get("new", 20, Some(10_000)).await.expect("token");
        assert_eq!(cache.cache.len(), 2);
        cache.get("live", 20, Some(10_000)).await.expect("token");
        assert_eq!(cache.fetches(), 4, "the live token stayed");
    }

    #[tokio::test]
    async fn with_every_slot_fetching_a_new_key_is_refused_at_once() {
        let cache: Arc<TokenCache<&str, String>> = Arc::new(TokenCache::new(1));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (started, has_started) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get(&"running", 0, || async {
                        let _ = started.send(());
                        let _ = released.await;
                        Ok::<_, Failure>(Expiring {
                            value: "running".to_owned(),
                            expires: 10_000,
                        })
                    })
                    .await
            }
        });
        has_started.await.expect("the fetch started");
        let refused = cache
            .get(&"new", 0, || async {
                Ok::<_, Failure>(Expiring {
                    value: "new".to_owned(),
                    expires: 10_000,
                })
            })
            .await;
        assert_eq!(
            refused,
            Err(Failure::NotFetched(NotFetched::Busy { capacity: 1 }))
        );
        release.send(()).expect("the fetch waits");
        assert!(running.await.expect("task").is_ok());
    }

    #[tokio::test]
    async fn a_fetch_given_up_half_way_leaves_the_key_to_the_next_caller() {
        let cache = Counted::new(2);
        let abandoned = cache.cache.get(&"aud", 0, || async {
            std::future::pending::<Result<Expiring<String>, Failure>>().await
        });
        // Polled once (the fetch starts and holds the key's lock), then dropped, as hyper drops
        // the answer of a client that went away.
        assert!(futures_poll_once(abandoned).await.is_none());
        let token = cache.get("aud", 0, Some(3_600)).await.expect("token");
        assert_eq!(token.value, "aud#1");
    }

    /// Polls `future` once: `Some` if it finished then.
    async fn futures_poll_once<F: Future>(future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|context| {
            std::task::Poll::Ready(match future.as_mut().poll(context) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
