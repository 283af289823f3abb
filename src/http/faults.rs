//! Faults on demand (`imds-tun ctl fault`): make matching requests slow, failing or unanswered,
//! so a caller's retries, back-off and fallbacks can be tested.
//!
//! A fault matches by path prefix and method and does any of: hold the answer for a latency,
//! answer with a status (on the page of the service that claims the request, see `Services`),
//! answer 429 beyond a budget of requests per second (`--throttle`, see [`throttle`]), drop the
//! request (no answer: the client times out), or close the connection without an answer
//! ("reset"), the last two with a probability. Several faults can stand at once; a request
//! meets all that match: a drop or reset ends it, the longest latency delays it, the first
//! status (a throttle's 429 included) answers it. A fault may expire by itself.
//!
//! The faults are applied by [`crate::http::Server`] before a request reaches any backend, on
//! every path a request arrives by (the TUN, `--listen`); the control socket is not HTTP and
//! never meets them. Changing them is `control`'s job; reading them costs one lock per request.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::time::Instant;

use super::throttle::{self, Throttle};
use crate::attribution::Caller;

/// The longest a dropped request is held before its connection is closed: longer than any
/// client's metadata timeout, short enough that held connections come back.
pub const DROP_HOLD: Duration = Duration::from_secs(60);

/// The longest latency a fault may add.
pub const MAX_LATENCY: Duration = Duration::from_secs(300);

/// One fault as `ctl fault` sets it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FaultSpec {
    /// Answer with this status (on the page of `http`'s own refusals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Hold the answer this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Percent of matching requests dropped (never answered).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drop: u8,
    /// Percent of matching requests whose connection is closed without an answer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reset: u8,
    /// Only requests whose path starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Only requests with this method (`GET`, `PUT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Answer 429 beyond this many matching requests per second (a token bucket holding one
    /// second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<u32>,
    /// With `throttle`: each caller (`attribution::Caller`) has that budget, not the whole
    /// service.
    #[serde(default, skip_serializing_if = "is_false")]
    pub per_caller: bool,
}

fn is_zero(value: &u8) -> bool {
    *value == 0
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl FaultSpec {
    /// No effect and no filter: what a request without fault flags flattens to.
    pub fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.latency_ms.is_none()
            && self.drop == 0
            && self.reset == 0
            && self.path.is_none()
            && self.method.is_none()
            && self.throttle.is_none()
            && !self.per_caller
    }

    /// What is wrong with it, if anything: at least one effect, values in range.
    pub fn check(&self) -> Result<(), String> {
        if self.status.is_none()
            && self.latency_ms.is_none()
            && self.drop == 0
            && self.reset == 0
            && self.throttle.is_none()
        {
            return Err(
                "a fault needs at least one of --status, --latency, --drop, --reset, --throttle"
                    .into(),
            );
        }
        if self
            .throttle
            .is_some_and(|rate| !(1..=throttle::MAX_RATE).contains(&rate))
        {
            return Err(format!(
                "--throttle: requests per second, 1-{}",
                throttle::MAX_RATE
            ));
        }
        if self.per_caller && self.throttle.is_none() {
            return Err("--per-caller: only with --throttle RPS".into());
        }
        if let Some(status) = self.status
            && !(400..=599).contains(&status)
        {
            return Err("--status: use a 4xx or 5xx status".into());
        }
        if self
            .latency_ms
            .is_some_and(|ms| Duration::from_millis(ms) > MAX_LATENCY)
        {
            return Err(format!("--latency: at most {} ms", MAX_LATENCY.as_millis()));
        }
        if self.drop > 100 || self.reset > 100 {
            return Err("--drop and --reset are percentages, 0-100".into());
        }
        if let Some(method) = &self.method
            && Method::from_bytes(method.as_bytes()).is_err()
        {
            return Err("--method: not an HTTP method".into());
        }
        if self
            .path
            .as_ref()
            .is_some_and(|path| !path.starts_with('/'))
        {
            return Err("--path: a path prefix starting with /".into());
        }
        Ok(())
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.path
            .as_ref()
            .is_none_or(|prefix| path.starts_with(prefix.as_str()))
            && self
                .method
                .as_ref()
                .is_none_or(|wanted| wanted.eq_ignore_ascii_case(method.as_str()))
    }
}

/// A fault standing now.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Its number, from 1, as `ctl fault list` and the log name it.
    pub id: u32,
    /// What it does and which requests it matches.
    pub spec: FaultSpec,
    /// When it ends by itself; `None`: when cleared.
    pub until: Option<Instant>,
    /// The budget of a `throttle`, shared by every snapshot of the board.
    throttle: Option<Arc<Throttle>>,
}

/// What the server does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// Never answer: hold the request for [`DROP_HOLD`], then close the connection.
    pub drop: bool,
    /// Close the connection at once, without an answer; wins over everything else.
    pub reset: bool,
    /// Wait this long before answering: the longest latency of the matching faults.
    pub delay: Duration,
    /// Answer with this status, on the page of the service that claims the request, instead of
    /// asking it: the first matching fault's (a throttle's 429 once its budget is spent);
    /// `None` serves the request.
    pub status: Option<StatusCode>,
}

/// The faults standing, shared by the server (reads) and `control` (writes).
#[derive(Debug, Default)]
pub struct FaultBoard {
    faults: RwLock<Arc<Vec<Fault>>>,
    next_id: std::sync::atomic::AtomicU32,
}

impl FaultBoard {
    /// Adds a fault; returns its id.
    pub fn add(&self, spec: FaultSpec, until: Option<Instant>) -> u32 {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let throttle = spec
            .throttle
            .map(|rate| Arc::new(Throttle::new(rate, spec.per_caller, Instant::now())));
        let mut faults = self.write();
        let mut next = Vec::clone(&faults);
        next.push(Fault {
            id,
            spec,
            until,
            throttle,
        });
        *faults = Arc::new(next);
        id
    }

    /// Removes every fault; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut faults = self.write();
        let count = faults.len();
        *faults = Arc::new(Vec::new());
        count
    }

    /// Removes the faults that have expired at `now`; returns them (for the log).
    pub fn expire(&self, now: Instant) -> Vec<Fault> {
        let mut faults = self.write();
        let (expired, standing): (Vec<Fault>, Vec<Fault>) = faults
            .iter()
            .cloned()
            .partition(|fault| fault.until.is_some_and(|until| until <= now));
        if !expired.is_empty() {
            *faults = Arc::new(standing);
        }
        expired
    }

    /// The faults standing at `now`.
    pub fn list(&self, now: Instant) -> Vec<Fault> {
        self.snapshot()
            .iter()
            .filter(|fault| fault.until.is_none_or(|until| until > now))
            .cloned()
            .collect()
    }

    /// What to do with a request; `roll` gives a number in 0..100 per percentage asked,
    /// `caller` who is asking, called at most once and only for a throttle per caller.
    pub fn decide(
        &self,
        method: &Method,
        path: &str,
        now: Instant,
        mut roll: impl FnMut() -> u8,
        mut caller: impl FnMut() -> Caller,
    ) -> Decision {
        let faults = self.snapshot();
        let mut decision = Decision::default();
        let mut known: Option<Caller> = None;
        for fault in faults.iter() {
            if fault.until.is_some_and(|until| until <= now) || !fault.spec.matches(method, path) {
                continue;
            }
            if fault.spec.drop > 0 && roll() < fault.spec.drop {
                decision.drop = true;
            }
            if fault.spec.reset > 0 && roll() < fault.spec.reset {
                decision.reset = true;
            }
            if let Some(ms) = fault.spec.latency_ms {
                decision.delay = decision.delay.max(Duration::from_millis(ms));
            }
            if decision.status.is_none() {
                decision.status = fault.spec.status.and_then(|s| StatusCode::from_u16(s).ok());
            }
            if let Some(throttle) = &fault.throttle {
                let key = throttle
                    .per_caller()
                    .then(|| *known.get_or_insert_with(&mut caller));
                if !throttle.admit(key, now) && decision.status.is_none() {
                    decision.status = Some(StatusCode::TOO_MANY_REQUESTS);
                }
            }
        }
        decision
    }

    fn snapshot(&self) -> Arc<Vec<Fault>> {
        self.faults
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Arc<Vec<Fault>>> {
        self.faults
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A number in 0..100 for a percentage roll.
pub fn percent_roll() -> u8 {
    let mut byte = [0u8; 2];
    if getrandom::fill(&mut byte).is_err() {
        return 99;
    }
    (u16::from_le_bytes(byte) % 100) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: Option<&str>, method: Option<&str>) -> FaultSpec {
        FaultSpec {
            status: None,
            latency_ms: None,
            drop: 0,
            reset: 0,
            path: path.map(str::to_owned),
            method: method.map(str::to_owned),
            throttle: None,
            per_caller: false,
        }
    }

    fn nobody() -> Caller {
        Caller::User(65534)
    }

    #[test]
    fn faults_match_by_path_prefix_and_method_and_combine() {
        let board = FaultBoard::default();
        let now = Instant::now();
        board.add(
            FaultSpec {
                status: Some(500),
                ..spec(Some("/latest/meta-data/iam/"), None)
            },
            None,
        );
        board.add(
            FaultSpec {
                latency_ms: Some(2000),
                ..spec(None, Some("GET"))
            },
            None,
        );
        let iam = board.decide(
            &Method::GET,
            "/latest/meta-data/iam/info",
            now,
            || 0,
            nobody,
        );
        assert_eq!(iam.status, Some(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(iam.delay, Duration::from_secs(2));
        let put = board.decide(&Method::PUT, "/latest/api/token", now, || 0, nobody);
        assert_eq!(put, Decision::default(), "neither fault is for token PUTs");
    }

    #[test]
    fn percentages_roll_and_faults_expire() {
        let board = FaultBoard::default();
        let now = Instant::now();
        board.add(
            FaultSpec {
                drop: 30,
                ..spec(None, Some("put"))
            },
            Some(now + Duration::from_secs(10)),
        );
        assert!(
            board
                .decide(&Method::PUT, "/latest/api/token", now, || 29, nobody)
                .drop
        );
        assert!(
            !board
                .decide(&Method::PUT, "/latest/api/token", now, || 30, nobody)
                .drop
        );
        let later = now + Duration::from_secs(10);
        assert!(
            !board
                .decide(&Method::PUT, "/latest/api/token", later, || 0, nobody)
                .drop
        );
        assert!(board.list(later).is_empty());
        assert_eq!(board.expire(later).len(), 1);
        assert_eq!(board.expire(later).len(), 0, "logged once");
    }

    #[test]
    fn specs_are_checked() {
        assert!(spec(None, None).check().is_err(), "no effect");
        assert!(
            FaultSpec {
                status: Some(200),
                ..spec(None, None)
            }
            .check()
            .is_err()
        );
        assert!(
            FaultSpec {
                drop: 101,
                ..spec(None, None)
            }
            .check()
            .is_err()
        );
        assert!(
            FaultSpec {
                status: Some(503),
                ..spec(Some("latest"), None)
            }
            .check()
            .is_err()
        );
        assert!(
            FaultSpec {
                status: Some(503),
                ..spec(Some("/latest/"), Some("PUT"))
            }
            .check()
            .is_ok()
        );
    }

    #[test]
    fn a_throttle_answers_429_beyond_its_budget_until_it_expires() {
        let board = FaultBoard::default();
        let now = Instant::now();
        board.add(
            FaultSpec {
                throttle: Some(2),
                ..spec(Some("/latest/"), None)
            },
            Some(now + Duration::from_secs(5)),
        );
        let ask = |at: Instant, path: &str| {
            board
                .decide(&Method::GET, path, at, || 99, || panic!("not per caller"))
                .status
        };
        assert_eq!(ask(now, "/latest/meta-data/"), None);
        assert_eq!(ask(now, "/latest/meta-data/"), None);
        assert_eq!(
            ask(now, "/latest/meta-data/"),
            Some(StatusCode::TOO_MANY_REQUESTS)
        );
        assert_eq!(ask(now, "/metadata/instance"), None, "not under --path");
        assert_eq!(
            ask(now + Duration::from_secs(1), "/latest/meta-data/"),
            None,
            "refilled"
        );
        let after = now + Duration::from_secs(5);
        for _ in 0..10 {
            assert_eq!(ask(after, "/latest/meta-data/"), None, "expired");
        }
    }

    #[test]
    fn a_throttle_per_caller_asks_who_is_calling_once_per_request() {
        let board = FaultBoard::default();
        let now = Instant::now();
        board.add(
            FaultSpec {
                throttle: Some(1),
                per_caller: true,
                ..spec(None, None)
            },
            None,
        );
        board.add(
            FaultSpec {
                throttle: Some(1),
                per_caller: true,
                ..spec(None, None)
            },
            None,
        );
        let mut asked = 0;
        let first = board.decide(
            &Method::GET,
            "/",
            now,
            || 99,
            || {
                asked += 1;
                Caller::User(1000)
            },
        );
        assert_eq!(first.status, None);
        assert_eq!(asked, 1, "two throttles, one question");
        let again = board.decide(&Method::GET, "/", now, || 99, || Caller::User(1000));
        assert_eq!(again.status, Some(StatusCode::TOO_MANY_REQUESTS));
        let other = board.decide(&Method::GET, "/", now, || 99, || Caller::User(1001));
        assert_eq!(other.status, None, "another caller's budget");
    }

    #[test]
    fn throttle_specs_are_checked() {
        let throttling = |rate: u32, per_caller: bool| FaultSpec {
            throttle: Some(rate),
            per_caller,
            ..spec(None, None)
        };
        assert!(throttling(5, true).check().is_ok());
        assert!(throttling(0, false).check().is_err());
        assert!(throttling(throttle::MAX_RATE + 1, false).check().is_err());
        assert!(
            FaultSpec {
                per_caller: true,
                status: Some(503),
                ..spec(None, None)
            }
            .check()
            .is_err(),
            "--per-caller without --throttle"
        );
    }
}
