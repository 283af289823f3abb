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

const ALICE: Option<Caller> = Some(Caller::User(1000));
const MALLORY: Option<Caller> = Some(Caller::User(1001));

/// A cache of strings and a counter of the fetches it made.
struct Counted {
    cache: TokenCache<&'static str, String>,
    fetches: Arc<AtomicUsize>,
}

impl Counted {
    fn new(capacity: usize) -> Counted {
        Counted {
            cache: TokenCache::new(capacity),
            fetches: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The token for `key` at `now` for `caller`; a fetch makes `key#N` (N counting every
    /// fetch) that lives `lifetime` seconds, or fails when `lifetime` is `None`.
    async fn get_for(
        &self,
        caller: Option<Caller>,
        key: &'static str,
        now: i64,
        lifetime: Option<i64>,
    ) -> Result<Expiring<String>, Failure> {
        let fetches = self.fetches.clone();
        self.cache
            .get(&key, caller, now, move || async move {
                let run = fetches.fetch_add(1, Ordering::SeqCst) + 1;
                let lifetime = lifetime.ok_or(Failure::Command)?;
                Ok::<_, Failure>(Expiring {
                    value: format!("{key}#{run}"),
                    expires: now + lifetime,
                })
            })
            .await
    }

    async fn get(
        &self,
        key: &'static str,
        now: i64,
        lifetime: Option<i64>,
    ) -> Result<Expiring<String>, Failure> {
        self.get_for(None, key, now, lifetime).await
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A boxed fetch, as the gated tests hand them around.
type Fetch = std::pin::Pin<Box<dyn Future<Output = Result<Expiring<String>, Failure>> + Send>>;

/// A fetch that waits for its release, and tells when it has started.
fn gated(
    value: &'static str,
    expires: i64,
) -> (
    impl FnOnce() -> Fetch,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let (started, has_started) = tokio::sync::oneshot::channel::<()>();
    let fetch = move || -> Fetch {
        Box::pin(async move {
            let _ = started.send(());
            let _ = released.await;
            Ok::<_, Failure>(Expiring {
                value: value.to_owned(),
                expires,
            })
        })
    };
    (fetch, has_started, release)
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
                    .get(&"aud", ALICE, 5_000, move || async move {
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
        let token: Result<_, Failure> = task.await.expect("task");
        assert_eq!(token.expect("token").value, "ya29.from-command");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "single flight");
}

#[tokio::test]
async fn a_slow_fetch_for_one_key_does_not_hold_up_another() {
    let cache: Arc<TokenCache<&str, String>> = Arc::new(TokenCache::new(4));
    let (fetch, has_started, release) = gated("slow", 10_000);
    let slow = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get::<Failure, _, _, _>(&"slow", MALLORY, 100, fetch)
                .await
        }
    });
    has_started.await.expect("the slow fetch started");
    let quick = cache
        .get::<Failure, _, _, _>(&"quick", ALICE, 100, || async {
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
async fn a_renewal_under_way_serves_the_token_in_hand_until_it_expires() {
    let cache: Arc<TokenCache<&str, String>> = Arc::new(TokenCache::new(4));
    let first = cache
        .get::<Failure, _, _, _>(&"aud", ALICE, 0, || async {
            Ok::<_, Failure>(Expiring {
                value: "first".to_owned(),
                expires: 1_000,
            })
        })
        .await
        .expect("token");
    // Due for renewal (less than five minutes left): a slow renewal starts...
    let (fetch, has_started, release) = gated("second", 5_000);
    let renewal = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get::<Failure, _, _, _>(&"aud", ALICE, 800, fetch)
                .await
        }
    });
    has_started.await.expect("the renewal started");
    // ...and meanwhile the token in hand is served at once, as long as it is valid.
    let meanwhile = cache
        .get::<Failure, _, _, _>(&"aud", MALLORY, 900, || async {
            Err::<Expiring<String>, Failure>(Failure::Command)
        })
        .await;
    assert_eq!(meanwhile, Ok(first));
    release.send(()).expect("the renewal waits");
    assert_eq!(renewal.await.expect("task").expect("token").value, "second");
}

#[tokio::test]
async fn a_failure_cools_down_its_own_key_only() {
    let cache = Counted::new(4);
    assert_eq!(
        cache.get("a", 100, None).await,
        Err(Failure::NotFetched(NotFetched::Failed(
            "the command failed".to_owned()
        )))
    );
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
    let (fetch, has_started, release) = gated("running", 10_000);
    let running = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get::<Failure, _, _, _>(&"running", None, 0, fetch)
                .await
        }
    });
    has_started.await.expect("the fetch started");
    let refused = cache
        .get(&"new", None, 0, || async {
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
async fn a_fetch_outlives_the_caller_that_started_it_and_the_next_one_gets_its_token() {
    let cache = Counted::new(2);
    let fetches = cache.fetches.clone();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let abandoned = cache
        .cache
        .get::<Failure, _, _, _>(&"aud", ALICE, 0, move || async move {
            fetches.fetch_add(1, Ordering::SeqCst);
            let _ = released.await;
            Ok::<_, Failure>(Expiring {
                value: "aud#1".to_owned(),
                expires: 3_600,
            })
        });
    // Polled once (the fetch starts), then dropped, as hyper drops the answer of a client
    // that went away.
    assert!(poll_once(abandoned).await.is_none());
    release.send(()).expect("the fetch still runs");
    let token = cache.get_for(MALLORY, "aud", 0, Some(3_600)).await;
    assert_eq!(token.expect("token").value, "aud#1");
    assert_eq!(cache.fetches(), 1, "not run a second time");
}

#[tokio::test]
async fn a_caller_over_its_budget_runs_nothing_while_another_caller_still_can() {
    let cache = Counted::new(64);
    let keys: Vec<&'static str> = (0..=CALLER_BURST)
        .map(|n| &*Box::leak(format!("https://r{n}.example").into_boxed_str()))
        .collect();
    for key in &keys[..CALLER_BURST as usize] {
        cache
            .get_for(MALLORY, key, 0, Some(3_600))
            .await
            .expect("within the budget");
    }
    let refused = cache
        .get_for(MALLORY, keys[CALLER_BURST as usize], 0, Some(3_600))
        .await;
    assert_eq!(
        refused,
        Err(Failure::NotFetched(NotFetched::OverBudget {
            caller: Caller::User(1001),
            seconds: CALLER_REFILL_SECONDS
        }))
    );
    assert_eq!(cache.fetches(), CALLER_BURST as usize, "nothing ran for it");
    // Held tokens are still served to it, and another caller is not held back.
    cache
        .get_for(MALLORY, keys[0], 1, None)
        .await
        .expect("held");
    cache
        .get_for(ALICE, "https://vault.azure.net", 1, Some(3_600))
        .await
        .expect("token");
    // One more a minute later.
    cache
        .get_for(
            MALLORY,
            keys[CALLER_BURST as usize],
            CALLER_REFILL_SECONDS,
            Some(3_600),
        )
        .await
        .expect("the budget grew back");
}

#[tokio::test]
async fn a_callers_new_keys_make_room_from_its_own_never_from_a_smaller_callers() {
    let cache = Counted::new(4);
    cache
        .get_for(ALICE, "vault", 0, Some(10_000))
        .await
        .expect("token");
    for (n, key) in ["m1", "m2", "m3", "m4", "m5"].into_iter().enumerate() {
        cache
            .get_for(MALLORY, key, i64::try_from(n).expect("small"), Some(3_600))
            .await
            .expect("room from its own keys");
    }
    assert_eq!(cache.cache.len(), 4);
    let fetches = cache.fetches();
    cache
        .get_for(ALICE, "vault", 10, Some(10_000))
        .await
        .expect("token");
    assert_eq!(cache.fetches(), fetches, "alice's token was kept");
    // Alice's next key takes room from mallory, who holds more than alice will.
    cache
        .get_for(ALICE, "storage", 10, Some(10_000))
        .await
        .expect("token");
    cache
        .get_for(ALICE, "vault", 11, Some(10_000))
        .await
        .expect("token");
    assert_eq!(cache.fetches(), fetches + 1, "still kept");
}

#[tokio::test]
async fn a_caller_with_its_fetches_running_is_refused_another() {
    let cache: Arc<TokenCache<&str, String>> = Arc::new(TokenCache::new(64));
    let mut releases = Vec::new();
    let mut running = Vec::new();
    for key in ["a", "b", "c", "d"].into_iter().take(CALLER_RUNNING) {
        let (fetch, has_started, release) = gated("slow", 10_000);
        let cache = cache.clone();
        running.push(tokio::spawn(async move {
            cache.get::<Failure, _, _, _>(&key, MALLORY, 0, fetch).await
        }));
        has_started.await.expect("started");
        releases.push(release);
    }
    let refused = cache
        .get(&"e", MALLORY, 0, || async {
            Ok::<_, Failure>(Expiring {
                value: "e".to_owned(),
                expires: 10_000,
            })
        })
        .await;
    assert_eq!(
        refused,
        Err(Failure::NotFetched(NotFetched::CallerBusy {
            caller: Caller::User(1001)
        }))
    );
    for release in releases {
        release.send(()).expect("waits");
    }
    for task in running {
        task.await.expect("task").expect("token");
    }
}

/// Polls `future` once: `Some` if it finished then.
async fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|context| {
        std::task::Poll::Ready(match future.as_mut().poll(context) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}
