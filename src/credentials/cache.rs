//! The in-memory credential cache and its one background refresher.
//!
//! ```text
//!  requests ──current(now)──► Mutex<State> ──clone──► served      (never waits, never I/O)
//!                                 │  due? notify_one()
//!                                 ▼
//!  refresher task (exactly one) ─ fetch() ─► STS / the chain ─► store or remember the error
//!        sleeps until refresh_at(…), a notification, or its back-off
//! ```
//!
//! Single flight is structural: only the refresher task ever calls [`Fetch::fetch`], so however
//! many clients ask, and however many of them see that a refresh is due, there is one call in
//! flight. A failure keeps the last good set in place until it expires, and is retried with
//! exponential back-off; requests in the meantime are answered from memory at once, with the
//! last good set or EC2's error shape.
//!
//! The task holds only a weak reference: dropping the source ends it.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Notify;

use super::schedule::{self, Backoff};
use super::{CredentialError, CredentialSource, RoleCredentials};

/// One way to obtain a fresh set of credentials. Called by one task at a time only.
pub trait Fetch: Send + 'static {
    /// What this fetcher calls, for log lines (`AssumeRole arn:…`).
    fn describe(&self) -> String;
    /// Obtains a new set; `last_updated` is the time of the call. A failure is a code (STS's, or
    /// imds-tun's own such as `NetworkError`) and a one-line message that never holds a secret.
    fn fetch(&mut self) -> impl Future<Output = Result<RoleCredentials, CredentialError>> + Send;
}

/// How the refresher behaves.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Refresh once less than this remains (at least five minutes, see [`schedule`]).
    pub refresh_margin: Duration,
    /// First retry delay after a failure; doubles up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Test-only: treat every set as expiring at most this long after it was issued.
    pub max_lifetime: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            refresh_margin: schedule::DEFAULT_REFRESH_MARGIN,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            max_lifetime: None,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    current: Option<RoleCredentials>,
    refresh_at: Option<OffsetDateTime>,
    last_error: Option<CredentialError>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    refresh_due: Notify,
    role_name: String,
}

/// A [`CredentialSource`] backed by a background refresher.
#[derive(Debug)]
pub struct RefreshingCredentials {
    shared: Arc<Shared>,
}

impl RefreshingCredentials {
    /// Starts the refresher on the current tokio runtime; the first fetch begins at once.
    /// `role_name` appears in the EC2-style error served while no valid set is held.
    pub fn spawn<F: Fetch>(fetcher: F, policy: Policy, role_name: &str) -> RefreshingCredentials {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            refresh_due: Notify::new(),
            role_name: role_name.to_owned(),
        });
        tokio::spawn(refresher(Arc::downgrade(&shared), fetcher, policy));
        RefreshingCredentials { shared }
    }

    /// Waits (up to `timeout`) until the first fetch has succeeded or failed; for start-up logs
    /// and tests. Returns whether a valid set is held.
    pub async fn wait_first(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let state = self
                    .shared
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if state.current.is_some() {
                    return true;
                }
                if state.last_error.is_some() {
                    return false;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl CredentialSource for RefreshingCredentials {
    fn current(&self, now: OffsetDateTime) -> Result<RoleCredentials, CredentialError> {
        let state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if state.refresh_at.is_some_and(|at| now >= at) {
            // The refresher may be asleep past its time (a suspended laptop's monotonic clock
            // stood still); wake it. A stored permit, never a second fetch.
            self.shared.refresh_due.notify_one();
        }
        match &state.current {
            Some(credentials) if now < credentials.expiration => Ok(credentials.clone()),
            _ => Err(ec2_error(&self.shared.role_name, state.last_error.as_ref())),
        }
    }
}

/// EC2's answer when an instance cannot obtain its role's credentials, with the reason.
pub fn ec2_error(role_name: &str, reason: Option<&CredentialError>) -> CredentialError {
    let reason = match reason {
        Some(error) => format!("the last attempt failed: {error}"),
        None => "the first attempt is still in progress".to_owned(),
    };
    CredentialError {
        code: "AssumeRoleUnauthorizedAccess".into(),
        message: format!(
            "EC2 cannot assume the role {role_name}. imds-tun has no valid credentials: {reason}"
        ),
    }
}

async fn refresher<F: Fetch>(shared: Weak<Shared>, mut fetcher: F, policy: Policy) {
    let what = fetcher.describe();
    let mut backoff = Backoff::new(policy.retry_base, policy.retry_max);
    loop {
        let result = if super::outage::is_down() {
            Err(super::outage::error())
        } else {
            fetcher.fetch().await
        };
        let Some(strong) = shared.upgrade() else {
            return;
        };
        match result {
            Ok(mut credentials) => {
                if let Some(cap) = policy.max_lifetime {
                    credentials.expiration =
                        credentials.expiration.min(credentials.last_updated + cap);
                }
                let at = schedule::refresh_at(
                    credentials.last_updated,
                    credentials.expiration,
                    policy.refresh_margin,
                );
                tracing::info!(
                    "{what}: new credentials, valid until {}, next refresh at {}",
                    rfc3339(credentials.expiration),
                    rfc3339(at)
                );
                {
                    let mut state = strong.state.lock().unwrap_or_else(PoisonError::into_inner);
                    state.current = Some(credentials);
                    state.refresh_at = Some(at);
                    state.last_error = None;
                }
                backoff.reset();
                drop(strong);
                if !wait_until(&shared, at).await {
                    return;
                }
            }
            Err(error) => {
                let delay = backoff.next_delay(schedule::random_jitter());
                let still_valid = {
                    let mut state = strong.state.lock().unwrap_or_else(PoisonError::into_inner);
                    state.last_error = Some(error.clone());
                    state.current.as_ref().map(|current| current.expiration)
                };
                let serving = match still_valid {
                    Some(expiration) if expiration > OffsetDateTime::now_utc() => {
                        format!(
                            "serving the last good credentials until {}",
                            rfc3339(expiration)
                        )
                    }
                    _ => "no valid credentials to serve".to_owned(),
                };
                tracing::warn!(
                    "{what} failed: {error}; {serving}; retrying in {:.1} s",
                    delay.as_secs_f64()
                );
                drop(strong);
                // Back-off is not cut short by requests: clients asking harder must not turn into
                // more calls to STS.
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Sleeps until the wall-clock time `at`, or until a request notices it has passed. Returns
/// false once the source is gone.
async fn wait_until(shared: &Weak<Shared>, at: OffsetDateTime) -> bool {
    loop {
        let now = OffsetDateTime::now_utc();
        if now >= at {
            return true;
        }
        let Some(strong) = shared.upgrade() else {
            return false;
        };
        let left = Duration::try_from(at - now).unwrap_or_default();
        // Re-check at least once a minute so a source that is dropped ends its task.
        let nap = left.min(Duration::from_secs(60));
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            () = strong.refresh_due.notified() => {}
        }
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fetcher that counts its calls, takes `delay` and answers from a script.
    struct Scripted {
        calls: Arc<AtomicUsize>,
        delay: Duration,
        lifetime: Duration,
        fail_from_call: Option<usize>,
    }

    impl Fetch for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }

        async fn fetch(&mut self) -> Result<RoleCredentials, CredentialError> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.delay).await;
            if self.fail_from_call.is_some_and(|from| call >= from) {
                return Err(CredentialError {
                    code: "NetworkError".into(),
                    message: "cannot reach STS".into(),
                });
            }
            let now = OffsetDateTime::now_utc();
            Ok(RoleCredentials {
                access_key_id: format!("ASIAFAKE{call:012}"),
                secret_access_key: "secret".into(),
                token: "token".into(),
                expiration: now + self.lifetime,
                last_updated: now,
            })
        }
    }

    fn scripted(
        delay_ms: u64,
        lifetime: Duration,
        fail_from_call: Option<usize>,
    ) -> (Scripted, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        (
            Scripted {
                calls: calls.clone(),
                delay: Duration::from_millis(delay_ms),
                lifetime,
                fail_from_call,
            },
            calls,
        )
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_concurrent_requests_share_one_fetch() {
        let (fetcher, calls) = scripted(200, HOUR, None);
        let source = Arc::new(RefreshingCredentials::spawn(
            fetcher,
            Policy::default(),
            "app",
        ));
        // While the first fetch is in flight, 200 requests from many tasks: all answered at
        // once (with the error), none starts a fetch of its own.
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let source = source.clone();
            tasks.push(tokio::spawn(async move {
                let started = std::time::Instant::now();
                let answer = source.current(OffsetDateTime::now_utc());
                (answer.is_ok(), started.elapsed())
            }));
        }
        for task in tasks {
            let (_, elapsed) = task.await.unwrap();
            assert!(
                elapsed < Duration::from_millis(50),
                "a request waited {elapsed:?}"
            );
        }
        assert!(source.wait_first(Duration::from_secs(5)).await);
        // Requests that see a refresh as due only wake the one refresher.
        let far_future = OffsetDateTime::now_utc() + Duration::from_secs(50 * 60);
        for _ in 0..100 {
            let _ = source.current(far_future);
        }
        for _ in 0..100 {
            assert!(source.current(OffsetDateTime::now_utc()).is_ok());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_error_answer_names_the_role_and_the_reason() {
        let (fetcher, calls) = scripted(0, HOUR, Some(1));
        let policy = Policy {
            retry_base: Duration::from_secs(30),
            ..Policy::default()
        };
        let source = RefreshingCredentials::spawn(fetcher, policy, "app");
        assert!(!source.wait_first(Duration::from_secs(5)).await);
        let error = source.current(OffsetDateTime::now_utc()).unwrap_err();
        assert_eq!(error.code, "AssumeRoleUnauthorizedAccess");
        assert!(
            error.message.starts_with("EC2 cannot assume the role app."),
            "{}",
            error.message
        );
        assert!(
            error.message.contains("NetworkError: cannot reach STS"),
            "{}",
            error.message
        );
        // Requests during the back-off do not cause calls.
        for _ in 0..50 {
            let _ = source.current(OffsetDateTime::now_utc());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn last_good_credentials_are_served_while_refreshes_fail_then_expire() {
        // Lifetime 2 s: refresh halfway (1 s), which fails; still served until 2 s, then the
        // error.
        let (fetcher, calls) = scripted(0, Duration::from_secs(2), Some(2));
        let policy = Policy {
            retry_base: Duration::from_millis(100),
            ..Policy::default()
        };
        let source = RefreshingCredentials::spawn(fetcher, policy, "app");
        assert!(source.wait_first(Duration::from_secs(5)).await);
        let first = source.current(OffsetDateTime::now_utc()).unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(calls.load(Ordering::SeqCst) >= 2, "a refresh was attempted");
        let still = source.current(OffsetDateTime::now_utc()).unwrap();
        assert_eq!(first, still);
        tokio::time::sleep(Duration::from_millis(700)).await;
        let error = source.current(OffsetDateTime::now_utc()).unwrap_err();
        assert_eq!(error.code, "AssumeRoleUnauthorizedAccess");
    }

    #[tokio::test]
    async fn credentials_are_refreshed_before_they_expire() {
        let (fetcher, calls) = scripted(0, Duration::from_secs(2), None);
        let source = RefreshingCredentials::spawn(fetcher, Policy::default(), "app");
        assert!(source.wait_first(Duration::from_secs(5)).await);
        let first = source.current(OffsetDateTime::now_utc()).unwrap();
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let second = source.current(OffsetDateTime::now_utc()).unwrap();
        assert_ne!(first.access_key_id, second.access_key_id);
        assert!(second.last_updated < first.expiration);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_lifetime_cap_shortens_the_served_expiration() {
        let (fetcher, _) = scripted(0, HOUR, None);
        let policy = Policy {
            max_lifetime: Some(Duration::from_secs(20)),
            ..Policy::default()
        };
        let source = RefreshingCredentials::spawn(fetcher, policy, "app");
        assert!(source.wait_first(Duration::from_secs(5)).await);
        let credentials = source.current(OffsetDateTime::now_utc()).unwrap();
        assert_eq!(
            credentials.expiration - credentials.last_updated,
            time::Duration::seconds(20)
        );
    }

    #[tokio::test]
    async fn dropping_the_source_ends_the_refresher() {
        let (fetcher, calls) = scripted(0, Duration::from_secs(2), None);
        let source = RefreshingCredentials::spawn(fetcher, Policy::default(), "app");
        assert!(source.wait_first(Duration::from_secs(5)).await);
        drop(source);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(calls.load(Ordering::SeqCst) <= 2);
    }

    #[test]
    fn debug_of_the_cache_never_shows_secrets() {
        let shared = Shared {
            state: Mutex::new(State {
                current: Some(RoleCredentials {
                    access_key_id: "ASIAEXAMPLE".into(),
                    secret_access_key: "very-secret".into(),
                    token: "session-token".into(),
                    expiration: OffsetDateTime::UNIX_EPOCH,
                    last_updated: OffsetDateTime::UNIX_EPOCH,
                }),
                ..State::default()
            }),
            refresh_due: Notify::new(),
            role_name: "app".into(),
        };
        let shown = format!(
            "{:?}",
            RefreshingCredentials {
                shared: Arc::new(shared)
            }
        );
        assert!(!shown.contains("very-secret") && !shown.contains("session-token"));
    }
}
