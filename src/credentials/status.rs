//! What each role's credentials are doing now: where they come from, when the set served
//! expires, when the next refresh is due, and how many refreshes succeeded or failed. One
//! [`RoleStatus`] per role, kept in one [`CredentialsStatus`] per run; `ctl status` and the
//! metrics read it.
//!
//! The sources write it (the cache's refresher after each fetch, the fake source when it
//! issues a set) with atomic stores, off the request path or as cheap as it; nothing here
//! decides anything. The roles are those of the configuration (the instance's, `--caller-role`
//! and `--ecs-credentials` roles, each registered when first started), never a name a client
//! sent, so the record is bounded by the configuration.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use time::OffsetDateTime;

/// Where a role's credentials come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// STS AssumeRole (`--role-arn`, `--caller-role`, `--ecs-credentials`).
    StsRole,
    /// The caller's own session: GetSessionToken for long-term keys, or a session served as is.
    Session,
    /// Fake credentials.
    Fake,
}

impl SourceKind {
    /// The word `ctl status` shows.
    pub fn word(self) -> &'static str {
        match self {
            SourceKind::StsRole => "sts-role",
            SourceKind::Session => "session",
            SourceKind::Fake => "fake",
        }
    }
}

/// "No time": nothing held yet.
const NONE: i64 = i64::MIN;

/// One role's record; its source writes it.
#[derive(Debug)]
pub struct RoleStatus {
    role: String,
    source: SourceKind,
    expiration: AtomicI64,
    next_refresh: AtomicI64,
    refreshes_ok: AtomicU64,
    refreshes_failed: AtomicU64,
}

impl RoleStatus {
    /// A record for `role`'s credentials from `source`, kept by nobody (tests, a source
    /// started outside a run).
    pub fn detached(role: &str, source: SourceKind) -> Arc<RoleStatus> {
        Arc::new(RoleStatus {
            role: role.to_owned(),
            source,
            expiration: AtomicI64::new(NONE),
            next_refresh: AtomicI64::new(NONE),
            refreshes_ok: AtomicU64::new(0),
            refreshes_failed: AtomicU64::new(0),
        })
    }

    /// A new set was obtained, valid until `expiration`, next refreshed at `next_refresh`.
    pub fn refreshed(&self, expiration: OffsetDateTime, next_refresh: OffsetDateTime) {
        self.expiration
            .store(expiration.unix_timestamp(), Ordering::Relaxed);
        self.next_refresh
            .store(next_refresh.unix_timestamp(), Ordering::Relaxed);
        self.refreshes_ok.fetch_add(1, Ordering::Relaxed);
    }

    /// A refresh failed; the next attempt is at `retry_at`. The set held, if any, stays.
    pub fn failed(&self, retry_at: OffsetDateTime) {
        self.next_refresh
            .store(retry_at.unix_timestamp(), Ordering::Relaxed);
        self.refreshes_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// The record now.
    pub fn report(&self) -> RoleReport {
        let time = |cell: &AtomicI64| match cell.load(Ordering::Relaxed) {
            NONE => None,
            seconds => OffsetDateTime::from_unix_timestamp(seconds).ok(),
        };
        RoleReport {
            role: self.role.clone(),
            source: self.source,
            expiration: time(&self.expiration),
            next_refresh: time(&self.next_refresh),
            refreshes_ok: self.refreshes_ok.load(Ordering::Relaxed),
            refreshes_failed: self.refreshes_failed.load(Ordering::Relaxed),
        }
    }
}

/// One role's record as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleReport {
    /// The role's name as served.
    pub role: String,
    /// Where its credentials come from.
    pub source: SourceKind,
    /// When the set now held expires; `None` before the first.
    pub expiration: Option<OffsetDateTime>,
    /// When the next refresh (or retry) is due; for fake credentials, the first request after
    /// it gets a new set.
    pub next_refresh: Option<OffsetDateTime>,
    /// Refreshes that obtained a set.
    pub refreshes_ok: u64,
    /// Refreshes that failed.
    pub refreshes_failed: u64,
}

/// The records of a run's roles; clones share them.
#[derive(Debug, Clone, Default)]
pub struct CredentialsStatus {
    roles: Arc<Mutex<Vec<Arc<RoleStatus>>>>,
}

impl CredentialsStatus {
    /// The record for `role` from `source`: a new one, or the one already kept for that role and
    /// source (a role is started once, but two rules may name one role).
    pub fn register(&self, role: &str, source: SourceKind) -> Arc<RoleStatus> {
        let mut roles = self.roles.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(kept) = roles
            .iter()
            .find(|kept| kept.role == role && kept.source == source)
        {
            return kept.clone();
        }
        let status = RoleStatus::detached(role, source);
        roles.push(status.clone());
        status
    }

    /// Every role's record, in the order they were started.
    pub fn report(&self) -> Vec<RoleReport> {
        self.roles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|status| status.report())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_role_is_kept_once_and_reports_what_its_source_wrote() {
        let record = CredentialsStatus::default();
        let status = record.register("app", SourceKind::StsRole);
        assert!(Arc::ptr_eq(
            &status,
            &record.register("app", SourceKind::StsRole)
        ));
        assert_eq!(record.report()[0].expiration, None);
        status.refreshed(
            datetime!(2030-01-01 01:00 UTC),
            datetime!(2030-01-01 00:45 UTC),
        );
        status.failed(datetime!(2030-01-01 00:46 UTC));
        let report = record.report();
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].expiration, Some(datetime!(2030-01-01 01:00 UTC)));
        assert_eq!(
            report[0].next_refresh,
            Some(datetime!(2030-01-01 00:46 UTC))
        );
        assert_eq!((report[0].refreshes_ok, report[0].refreshes_failed), (1, 1));
        assert_eq!(report[0].source.word(), "sts-role");
    }
}
