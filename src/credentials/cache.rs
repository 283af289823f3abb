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
//! last good set or EC2's error shape (which says the kind of failure, never its details). The
//! log hears of a run of failures once per change (its start, a different failure, the last
//! good set expiring, its end), each time with the count of failed attempts.
//!
//! The task holds only a weak reference: dropping the source ends it. It plans by the wall
//! clock (expirations are wall times, and a suspended laptop's monotonic clock stands still
//! while they pass), read through a [`WallClock`] so tests can run it under tokio's paused time.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Notify;

use super::outage::{self, Outage};
use super::schedule::{self, Backoff};
use super::status::{RoleStatus, SourceKind};
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
    /// The longest wait between two retries, however many failed in a row.
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
    /// Where each refresh's outcome is written (`ctl status`, the metrics).
    status: Arc<RoleStatus>,
    /// The simulated outage, whose expired-credentials fault changes what is served.
    outage: Outage,
}

/// The wall clock the refresher reads: the system's, or in tests one that moves with tokio's
/// (paused) clock.
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> OffsetDateTime + Send + Sync>);

impl WallClock {
    /// The system's clock (UTC), as every run outside tests reads it.
    pub fn system() -> WallClock {
        WallClock(Arc::new(OffsetDateTime::now_utc))
    }

    /// Starts at `start` and moves as tokio's clock does: under `start_paused` a test's sleeps
    /// pass wall time too, at once.
    #[cfg(test)]
    pub(crate) fn following_tokio(start: OffsetDateTime) -> WallClock {
        let origin = tokio::time::Instant::now();
        WallClock(Arc::new(move || start + origin.elapsed()))
    }

    /// The time now, by this clock.
    pub fn now(&self) -> OffsetDateTime {
        (self.0)()
    }
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("WallClock")
    }
}

/// A [`CredentialSource`] backed by a background refresher.
#[derive(Debug)]
pub struct RefreshingCredentials {
    shared: Arc<Shared>,
}

impl RefreshingCredentials {
    /// Starts the refresher on the current tokio runtime; the first fetch begins at once.
    /// `role_name` appears in the EC2-style error served while no valid set is held; while
    /// `outage` is down, every refresh fails as a real outage would.
    pub fn spawn<F: Fetch>(
        fetcher: F,
        policy: Policy,
        role_name: &str,
        outage: Outage,
    ) -> RefreshingCredentials {
        let status = RoleStatus::detached(role_name, SourceKind::StsRole);
        RefreshingCredentials::spawn_reporting(fetcher, policy, role_name, outage, status)
    }

    /// As [`RefreshingCredentials::spawn`], writing each refresh's outcome to `status` (what
    /// `ctl status` and the metrics read).
    pub fn spawn_reporting<F: Fetch>(
        fetcher: F,
        policy: Policy,
        role_name: &str,
        outage: Outage,
        status: Arc<RoleStatus>,
    ) -> RefreshingCredentials {
        let clock = WallClock::system();
        RefreshingCredentials::start_reporting(fetcher, policy, role_name, outage, clock, status)
    }

    /// As [`RefreshingCredentials::spawn`], reading the wall clock from `clock`.
    #[cfg(test)]
    fn start<F: Fetch>(
        fetcher: F,
        policy: Policy,
        role_name: &str,
        outage: Outage,
        clock: WallClock,
    ) -> RefreshingCredentials {
        let status = RoleStatus::detached(role_name, SourceKind::StsRole);
        RefreshingCredentials::start_reporting(fetcher, policy, role_name, outage, clock, status)
    }

    /// As [`RefreshingCredentials::spawn_reporting`], reading the wall clock from `clock`.
    fn start_reporting<F: Fetch>(
        fetcher: F,
        policy: Policy,
        role_name: &str,
        outage: Outage,
        clock: WallClock,
        status: Arc<RoleStatus>,
    ) -> RefreshingCredentials {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            refresh_due: Notify::new(),
            role_name: role_name.to_owned(),
            status,
            outage: outage.clone(),
        });
        let task = Refresher {
            policy,
            outage,
            clock,
        };
        tokio::spawn(task.run(Arc::downgrade(&shared), fetcher));
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
            Some(credentials) if now < credentials.expiration => {
                Ok(self.shared.outage.served(credentials.clone()))
            }
            _ => Err(ec2_error(&self.shared.role_name, state.last_error.as_ref())),
        }
    }
}

/// EC2's answer when an instance cannot obtain its role's credentials: its `Code`, and a
/// `Message` with the kind of failure only ([`CredentialError::public_reason`]). Every local
/// process reads it, so where STS is, who imds-tun is to it and what the SDK said stay in the
/// log, which the message points to.
pub fn ec2_error(role_name: &str, reason: Option<&CredentialError>) -> CredentialError {
    let reason = match reason {
        Some(error) => format!("{}; imds-tun's log says why", error.public_reason()),
        None => "the first attempt is still in progress".to_owned(),
    };
    CredentialError {
        code: "AssumeRoleUnauthorizedAccess".into(),
        message: format!(
            "EC2 cannot assume the role {role_name}. imds-tun has no valid credentials: {reason}"
        ),
    }
}

/// What the refresher last said about a run of failures, so it speaks once per change: the
/// first failure, a different one, the last good set expiring, and the recovery.
struct Failing {
    /// The failure as logged (`CredentialError::message`).
    message: String,
    /// When the run began, by the wall clock.
    since: OffsetDateTime,
    /// Attempts failed in this run.
    attempts: u32,
    /// Whether the last good set was still being served when this was last said.
    serving_last_good: bool,
}

/// What the refresher task holds besides the source's shared state.
struct Refresher {
    policy: Policy,
    outage: Outage,
    clock: WallClock,
}

impl Refresher {
    async fn run<F: Fetch>(self, shared: Weak<Shared>, mut fetcher: F) {
        let Refresher {
            policy,
            outage,
            clock,
        } = &self;
        let what = fetcher.describe();
        let mut backoff = Backoff::new(policy.retry_base, policy.retry_max);
        let mut failing: Option<Failing> = None;
        loop {
            let result = if outage.is_down() {
                Err(outage::error())
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
                    let recovered = failing.take().map_or_else(String::new, |run| {
                        format!(
                            " (after {} since {}; the last: {})",
                            attempts(run.attempts),
                            rfc3339(run.since),
                            run.message
                        )
                    });
                    let expiration = credentials.expiration;
                    tracing::info!(
                        "{what}: new credentials, valid until {}, next refresh at {}{recovered}",
                        rfc3339(credentials.expiration),
                        rfc3339(at)
                    );
                    {
                        let mut state = strong.state.lock().unwrap_or_else(PoisonError::into_inner);
                        state.current = Some(credentials);
                        state.refresh_at = Some(at);
                        state.last_error = None;
                    }
                    strong.status.refreshed(expiration, at);
                    backoff.reset();
                    drop(strong);
                    if !wait_until(&shared, at, clock).await {
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
                    let exact_now = clock.now();
                    strong.status.failed(exact_now + delay);
                    // Seconds are enough for a log line.
                    let now = exact_now.replace_nanosecond(0).unwrap_or(exact_now);
                    let last_good_until = still_valid.filter(|expiration| *expiration > exact_now);
                    let serving = match last_good_until {
                        Some(expiration) => format!(
                            "serving the last good credentials until {}",
                            rfc3339(expiration)
                        ),
                        None => "no valid credentials to serve".to_owned(),
                    };
                    let retry = format!("retrying in {:.1} s", delay.as_secs_f64());
                    match failing.as_mut() {
                        None => {
                            tracing::warn!(
                                "{what} failed: {}; {serving}; {retry}, and saying so again \
                                 only when something changes",
                                error.message
                            );
                            failing = Some(Failing {
                                message: error.message.clone(),
                                since: now,
                                attempts: 1,
                                serving_last_good: last_good_until.is_some(),
                            });
                        }
                        Some(run) => {
                            run.attempts = run.attempts.saturating_add(1);
                            if run.message != error.message {
                                tracing::warn!(
                                    "{what} now fails differently: {}; {serving}; {retry} ({} \
                                     since {}, before: {})",
                                    error.message,
                                    attempts(run.attempts),
                                    rfc3339(run.since),
                                    run.message
                                );
                                run.message.clone_from(&error.message);
                            } else if run.serving_last_good && last_good_until.is_none() {
                                tracing::warn!(
                                    "{what}: the last good credentials have expired; serving \
                                     EC2's error until a retry succeeds ({} since {}: {})",
                                    attempts(run.attempts),
                                    rfc3339(run.since),
                                    run.message
                                );
                            } else {
                                tracing::debug!(
                                    "{what} failed again: {}; {serving}; {retry} ({})",
                                    error.message,
                                    attempts(run.attempts)
                                );
                            }
                            run.serving_last_good = last_good_until.is_some();
                        }
                    }
                    drop(strong);
                    // Back-off is not cut short by requests: clients asking harder must not turn
                    // into more calls to STS. It is cut by the last good set expiring, only to
                    // say so when it happens rather than at the next attempt (up to a minute
                    // later).
                    let expires_in = last_good_until
                        .and_then(|expiration| Duration::try_from(expiration - exact_now).ok())
                        .filter(|left| *left < delay);
                    match (expires_in, failing.as_mut()) {
                        (Some(left), Some(run)) => {
                            tokio::time::sleep(left).await;
                            tracing::warn!(
                                "{what}: the last good credentials have expired; serving EC2's \
                                 error until a retry succeeds ({} since {}: {})",
                                attempts(run.attempts),
                                rfc3339(run.since),
                                run.message
                            );
                            run.serving_last_good = false;
                            tokio::time::sleep(delay.saturating_sub(left)).await;
                        }
                        _ => tokio::time::sleep(delay).await,
                    }
                }
            }
        }
    }
}

/// Sleeps until the wall-clock time `at`, or until a request notices it has passed. Returns
/// false once the source is gone.
async fn wait_until(shared: &Weak<Shared>, at: OffsetDateTime, clock: &WallClock) -> bool {
    loop {
        let now = clock.now();
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

/// `1 failed attempt`, `7 failed attempts`.
fn attempts(count: u32) -> String {
    if count == 1 {
        "1 failed attempt".to_owned()
    } else {
        format!("{count} failed attempts")
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests {
    //! Every test runs under tokio's paused clock, with a wall clock that moves with it: the
    //! refresher's sleeps, its back-off and the credentials' lifetimes pass at once, and a
    //! request "answered at once" is one answered before any time passed.

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use time::macros::datetime;

    /// A fetcher that counts its calls, takes `delay` and answers from a script.
    struct Scripted {
        calls: Arc<AtomicUsize>,
        delay: Duration,
        lifetime: Duration,
        fail_from_call: Option<usize>,
        clock: WallClock,
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
            let now = self.clock.now();
            Ok(RoleCredentials {
                access_key_id: format!("ASIAFAKE{call:012}"),
                secret_access_key: "secret".into(),
                token: "token".into(),
                expiration: now + self.lifetime,
                last_updated: now,
            })
        }
    }

    /// A source over a [`Scripted`] fetcher, the clock it reads, and the count of fetches.
    struct Rig {
        source: Arc<RefreshingCredentials>,
        clock: WallClock,
        calls: Arc<AtomicUsize>,
    }

    impl Rig {
        fn start(delay_ms: u64, lifetime: Duration, fail_from_call: Option<usize>) -> Rig {
            Rig::with_policy(delay_ms, lifetime, fail_from_call, Policy::default())
        }

        fn with_policy(
            delay_ms: u64,
            lifetime: Duration,
            fail_from_call: Option<usize>,
            policy: Policy,
        ) -> Rig {
            let clock = WallClock::following_tokio(datetime!(2026-01-01 00:00:00 UTC));
            let calls = Arc::new(AtomicUsize::new(0));
            let fetcher = Scripted {
                calls: calls.clone(),
                delay: Duration::from_millis(delay_ms),
                lifetime,
                fail_from_call,
                clock: clock.clone(),
            };
            let source = RefreshingCredentials::start(
                fetcher,
                policy,
                "app",
                Outage::default(),
                clock.clone(),
            );
            Rig {
                source: Arc::new(source),
                clock,
                calls,
            }
        }

        fn current(&self) -> Result<RoleCredentials, CredentialError> {
            self.source.current(self.clock.now())
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn many_concurrent_requests_share_one_fetch() {
        let rig = Rig::start(200, HOUR, None);
        // While the first fetch is in flight, 200 requests from as many tasks: all answered at
        // once (with the error), none starts a fetch of its own.
        let started = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let source = rig.source.clone();
            let clock = rig.clock.clone();
            tasks.push(tokio::spawn(async move {
                let answer = source.current(clock.now());
                (answer, started.elapsed())
            }));
        }
        for task in tasks {
            let (answer, elapsed) = task.await.unwrap();
            assert_eq!(elapsed, Duration::ZERO, "a request waited");
            let error = answer.expect_err("the first fetch is still in flight");
            assert!(error.message.contains("still in progress"), "{error}");
        }
        assert!(rig.source.wait_first(Duration::from_secs(5)).await);
        // Requests that see a refresh as due only wake the one refresher.
        let far_future = rig.clock.now() + Duration::from_secs(50 * 60);
        for _ in 0..100 {
            let _ = rig.source.current(far_future);
        }
        for _ in 0..100 {
            assert!(rig.current().is_ok());
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(rig.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_answer_names_the_role_and_the_reason() {
        let policy = Policy {
            retry_base: Duration::from_secs(30),
            ..Policy::default()
        };
        let rig = Rig::with_policy(0, HOUR, Some(1), policy);
        assert!(!rig.source.wait_first(Duration::from_secs(5)).await);
        let error = rig.current().unwrap_err();
        assert_eq!(error.code, "AssumeRoleUnauthorizedAccess");
        assert!(
            error.message.starts_with("EC2 cannot assume the role app."),
            "{}",
            error.message
        );
        // The kind of failure only: the message of the fetch stays in the log.
        assert_eq!(
            error.message,
            "EC2 cannot assume the role app. imds-tun has no valid credentials: STS cannot be \
             reached; imds-tun's log says why"
        );
        // Requests during the back-off (at least 24 s of the 30, after jitter) do not cause
        // calls.
        for _ in 0..50 {
            let _ = rig.current();
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(rig.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn last_good_credentials_are_served_while_refreshes_fail_then_expire() {
        // Lifetime 2 s: refresh halfway (1 s), which fails; still served until 2 s, then the
        // error.
        let policy = Policy {
            retry_base: Duration::from_millis(100),
            ..Policy::default()
        };
        let rig = Rig::with_policy(0, Duration::from_secs(2), Some(2), policy);
        assert!(rig.source.wait_first(Duration::from_secs(5)).await);
        let first = rig.current().unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(rig.calls() >= 2, "a refresh was attempted");
        let still = rig.current().unwrap();
        assert_eq!(first, still);
        tokio::time::sleep(Duration::from_millis(700)).await;
        let error = rig.current().unwrap_err();
        assert_eq!(error.code, "AssumeRoleUnauthorizedAccess");
    }

    #[tokio::test(start_paused = true)]
    async fn credentials_are_refreshed_before_they_expire() {
        let rig = Rig::start(0, Duration::from_secs(2), None);
        assert!(rig.source.wait_first(Duration::from_secs(5)).await);
        let first = rig.current().unwrap();
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let second = rig.current().unwrap();
        assert_ne!(first.access_key_id, second.access_key_id);
        assert!(second.last_updated < first.expiration);
        assert_eq!(rig.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn each_refresh_and_failure_is_recorded_with_the_expiry_served() {
        let clock = WallClock::following_tokio(datetime!(2026-01-01 00:00:00 UTC));
        let fetcher = Scripted {
            calls: Arc::new(AtomicUsize::new(0)),
            delay: Duration::ZERO,
            lifetime: Duration::from_secs(2),
            fail_from_call: Some(2),
            clock: clock.clone(),
        };
        let status = RoleStatus::detached("app", SourceKind::StsRole);
        let source = RefreshingCredentials::start_reporting(
            fetcher,
            Policy::default(),
            "app",
            Outage::default(),
            clock.clone(),
            status.clone(),
        );
        assert!(source.wait_first(Duration::from_secs(5)).await);
        let served = source.current(clock.now()).unwrap();
        let report = status.report();
        assert_eq!(report.expiration, Some(served.expiration));
        assert!(report.next_refresh.is_some_and(|at| at < served.expiration));
        assert_eq!((report.refreshes_ok, report.refreshes_failed), (1, 0));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let report = status.report();
        assert_eq!(report.refreshes_ok, 1);
        assert!(report.refreshes_failed >= 1, "{report:?}");
        assert_eq!(
            report.expiration,
            Some(served.expiration),
            "a failure keeps the set held"
        );
        // The retry's time, kept to the second.
        assert!(
            report
                .next_refresh
                .is_some_and(|at| at + time::Duration::SECOND > clock.now()),
            "{report:?} at {}",
            clock.now()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_lifetime_cap_shortens_the_served_expiration() {
        let policy = Policy {
            max_lifetime: Some(Duration::from_secs(20)),
            ..Policy::default()
        };
        let rig = Rig::with_policy(0, HOUR, None, policy);
        assert!(rig.source.wait_first(Duration::from_secs(5)).await);
        let credentials = rig.current().unwrap();
        assert_eq!(
            credentials.expiration - credentials.last_updated,
            time::Duration::seconds(20)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_source_ends_the_refresher() {
        let rig = Rig::start(0, Duration::from_secs(2), None);
        assert!(rig.source.wait_first(Duration::from_secs(5)).await);
        drop(rig.source);
        // A refresher still running would fetch every second for the hour.
        tokio::time::sleep(HOUR).await;
        assert!(rig.calls.load(Ordering::SeqCst) <= 2);
    }

    #[tokio::test(start_paused = true)]
    async fn during_an_expired_credentials_fault_the_held_keys_are_served_expired() {
        let outage = Outage::default();
        let clock = WallClock::following_tokio(datetime!(2026-01-01 00:00:00 UTC));
        let fetcher = Scripted {
            calls: Arc::new(AtomicUsize::new(0)),
            delay: Duration::ZERO,
            lifetime: HOUR,
            fail_from_call: None,
            clock: clock.clone(),
        };
        let source = RefreshingCredentials::start(
            fetcher,
            Policy::default(),
            "app",
            outage.clone(),
            clock.clone(),
        );
        assert!(source.wait_first(Duration::from_secs(5)).await);
        let fresh = source.current(clock.now()).unwrap();
        assert!(fresh.expiration > clock.now());
        let began = clock.now();
        outage.expire_credentials(began, None);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let served = source.current(clock.now()).unwrap();
        assert_eq!(served.access_key_id, fresh.access_key_id, "the same keys");
        assert_eq!(
            served.expiration,
            began.replace_nanosecond(0).unwrap() - time::Duration::SECOND
        );
        assert!(served.expiration < clock.now(), "in the past");
        outage.end_expired();
        assert_eq!(source.current(clock.now()).unwrap(), fresh, "fresh again");
    }

    #[tokio::test(start_paused = true)]
    async fn during_an_outage_refreshes_fail_without_calling_the_fetcher() {
        let outage = Outage::default();
        let clock = WallClock::following_tokio(datetime!(2026-01-01 00:00:00 UTC));
        let calls = Arc::new(AtomicUsize::new(0));
        let fetcher = Scripted {
            calls: calls.clone(),
            delay: Duration::ZERO,
            lifetime: Duration::from_secs(2),
            fail_from_call: None,
            clock: clock.clone(),
        };
        let policy = Policy {
            retry_base: Duration::from_millis(100),
            ..Policy::default()
        };
        let source =
            RefreshingCredentials::start(fetcher, policy, "app", outage.clone(), clock.clone());
        assert!(source.wait_first(Duration::from_secs(5)).await);
        let first = source.current(clock.now()).unwrap();
        outage.begin(None);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            source.current(clock.now()).unwrap(),
            first,
            "the last good set"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let error = source.current(clock.now()).unwrap_err();
        assert!(
            error
                .message
                .contains("the credential source is unreachable"),
            "{error}"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "STS is not called while down"
        );
        outage.end();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(source.current(clock.now()).is_ok(), "back after the outage");
        assert!(calls.load(Ordering::SeqCst) >= 2);
    }

    /// A fetcher that fails while `down` is set, as STS refusing connections does.
    struct Switchable {
        down: Arc<std::sync::atomic::AtomicBool>,
        calls: Arc<AtomicUsize>,
        clock: WallClock,
    }

    impl Fetch for Switchable {
        fn describe(&self) -> String {
            "AssumeRole test".into()
        }

        async fn fetch(&mut self) -> Result<RoleCredentials, CredentialError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(CredentialError {
                    code: "NetworkError".into(),
                    message: "cannot reach STS at 127.0.0.1:5999: connection refused".into(),
                });
            }
            let now = self.clock.now();
            Ok(RoleCredentials {
                access_key_id: "ASIAFAKE".into(),
                secret_access_key: "secret".into(),
                token: "token".into(),
                expiration: now + Duration::from_secs(10),
                last_updated: now,
            })
        }
    }

    /// What the refresher logs on this thread (it runs on the test's one thread), captured.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    thread_local! {
        static CAPTURING: std::cell::RefCell<Option<Captured>> = const { std::cell::RefCell::new(None) };
    }

    /// Where every thread's events go: to the thread's [`Captured`], if it has one.
    struct ThisThreadsCapture;

    impl std::io::Write for ThisThreadsCapture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            CAPTURING.with(|slot| {
                if let Some(captured) = slot.borrow().as_ref() {
                    captured.0.lock().unwrap().extend_from_slice(bytes);
                }
            });
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// Captures this thread's events from now on.
        ///
        /// One global subscriber, not a scoped `set_default`: with a scoped one, a callsite that
        /// another test's thread registered at the same moment was cached as "never" and this
        /// test saw no line at all (1 run in 5 of the whole suite). A global subscriber that
        /// wants everything leaves no interest to race on.
        fn on_this_thread() -> Captured {
            static GLOBAL: std::sync::Once = std::sync::Once::new();
            GLOBAL.call_once(|| {
                let subscriber = tracing_subscriber::fmt()
                    .with_max_level(tracing::Level::DEBUG)
                    .with_ansi(false)
                    .with_writer(|| ThisThreadsCapture)
                    .finish();
                tracing::subscriber::set_global_default(subscriber)
                    .expect("no other test sets a global subscriber");
            });
            let captured = Captured::default();
            CAPTURING.with(|slot| *slot.borrow_mut() = Some(captured.clone()));
            captured
        }

        fn lines(&self, level: &str) -> Vec<String> {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .filter(|line| line.contains(level))
                .map(str::to_owned)
                .collect()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_of_failures_is_logged_once_per_change_with_its_count() {
        let captured = Captured::on_this_thread();
        let clock = WallClock::following_tokio(datetime!(2026-01-01 00:00:00 UTC));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let fetcher = Switchable {
            down: down.clone(),
            calls: calls.clone(),
            clock: clock.clone(),
        };
        let policy = Policy {
            retry_base: Duration::from_millis(100),
            ..Policy::default()
        };
        let source =
            RefreshingCredentials::start(fetcher, policy, "app", Outage::default(), clock.clone());
        assert!(source.wait_first(Duration::from_secs(1)).await);
        down.store(true, Ordering::SeqCst);
        // The 10 s set is refreshed halfway, at 5 s; every attempt from then on fails.
        tokio::time::sleep(Duration::from_millis(9_900)).await;
        let warned = captured.lines("WARN");
        assert_eq!(warned.len(), 1, "{warned:#?}");
        assert!(
            warned[0].contains(
                "AssumeRole test failed: cannot reach STS at 127.0.0.1:5999: connection refused; \
                 serving the last good credentials until 2026-01-01T00:00:10Z"
            ),
            "{warned:#?}"
        );
        let failed_by_now = calls.load(Ordering::SeqCst) - 1;
        assert!(failed_by_now >= 4, "{failed_by_now} attempts");
        assert_eq!(captured.lines("DEBUG").len(), failed_by_now - 1);
        // The expiry is said when it happens, not at the next attempt.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst) - 1,
            failed_by_now,
            "no attempt since"
        );
        let warned = captured.lines("WARN");
        assert_eq!(warned.len(), 2, "{warned:#?}");
        assert!(
            warned[1].contains("the last good credentials have expired")
                && warned[1].contains(&format!("({failed_by_now} failed attempts since ")),
            "{warned:#?}"
        );
        // STS comes back: one line, with the count.
        let failed = calls.load(Ordering::SeqCst) - 1;
        down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(source.current(clock.now()).is_ok());
        let recovered = captured.lines("(after ");
        assert_eq!(recovered.len(), 1, "{recovered:#?}");
        assert!(
            recovered[0].contains("new credentials")
                && recovered[0].contains(&format!("(after {failed} failed attempts since ")),
            "{recovered:#?}"
        );
        assert_eq!(captured.lines("WARN").len(), 2);
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
            status: RoleStatus::detached("app", SourceKind::StsRole),
            outage: Outage::default(),
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
