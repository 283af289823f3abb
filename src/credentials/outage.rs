//! A simulated outage of the credential source, in its two faces:
//!
//! - `imds-tun ctl fault --credential-source down`: while it lasts, every refresh fails as if
//!   STS were unreachable, so the last good credentials are served until they expire and then
//!   EC2's error is, exactly the path a real outage takes.
//! - `imds-tun ctl fault --expired-credentials`: while it lasts, every source serves the keys it
//!   holds with an `Expiration` one second before the fault began (or their own, if earlier),
//!   as IMDS does when STS is down and it keeps handing out what it has (the SDKs' "static
//!   stability"). The keys themselves are the ones the source would serve anyway; afterwards
//!   the true `Expiration` is back. Every credentials endpoint (EC2, ECS, EKS Pod Identity)
//!   asks a source, so all of them serve it without knowing of the fault.
//!
//! An [`Outage`] is a handle, like the interruptions board and the fault board: created once at
//! start-up, held by every credential source of the process (each role's, too) and by the
//! control server, which begins and ends it. It is not a process-global, so a test can hold an
//! outage of its own.

use std::sync::{Arc, Mutex, PoisonError};

use time::OffsetDateTime;
use tokio::time::Instant;

use super::{CredentialError, RoleCredentials};

/// Whether the credential source is down, or serving expired credentials, and until when;
/// cheap to clone (one shared state).
#[derive(Debug, Clone, Default)]
pub struct Outage {
    /// `None`: up. `Some(None)`: down until ended. `Some(Some(at))`: down until `at`.
    down_until: Arc<Mutex<Option<Option<Instant>>>>,
    /// The expired-credentials fault, while it stands.
    expired: Arc<Mutex<Option<Expired>>>,
}

/// An expired-credentials fault: since when (by the wall clock), until when.
#[derive(Debug, Clone, Copy)]
struct Expired {
    /// The `Expiration` served: a second before the fault began.
    served_expiration: OffsetDateTime,
    /// When it ends by itself; `None`: when ended.
    until: Option<Instant>,
}

impl Outage {
    /// Starts an outage; `until` `None` lasts until [`Outage::end`].
    pub fn begin(&self, until: Option<Instant>) {
        *self.state() = Some(until);
    }

    /// Ends it.
    pub fn end(&self) {
        *self.state() = None;
    }

    /// Whether the source is down now.
    pub fn is_down(&self) -> bool {
        let mut down = self.state();
        match *down {
            None => false,
            Some(None) => true,
            Some(Some(until)) if Instant::now() < until => true,
            Some(Some(_)) => {
                *down = None;
                false
            }
        }
    }

    /// A poisoned lock only means a thread panicked while setting it; the value is still whole.
    fn state(&self) -> std::sync::MutexGuard<'_, Option<Option<Instant>>> {
        self.down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts serving expired credentials, the fault having begun at `began` (the wall clock);
    /// `until` `None` lasts until [`Outage::end_expired`]. A fault already standing keeps its
    /// `Expiration`, so the served set does not seem to change.
    pub fn expire_credentials(&self, began: OffsetDateTime, until: Option<Instant>) {
        let mut expired = self.expired_state();
        let served_expiration = match *expired {
            Some(standing) if standing.until.is_none_or(|at| Instant::now() < at) => {
                standing.served_expiration
            }
            // Whole seconds, as served: the served time is then surely before `began`.
            _ => began.replace_nanosecond(0).unwrap_or(began) - time::Duration::SECOND,
        };
        *expired = Some(Expired {
            served_expiration,
            until,
        });
    }

    /// Ends the expired-credentials fault: the true `Expiration` is served again.
    pub fn end_expired(&self) {
        *self.expired_state() = None;
    }

    /// The `Expiration` served while the expired-credentials fault stands; `None` when it
    /// does not.
    pub fn expired_since(&self) -> Option<OffsetDateTime> {
        let mut expired = self.expired_state();
        match *expired {
            Some(standing) if standing.until.is_none_or(|at| Instant::now() < at) => {
                Some(standing.served_expiration)
            }
            Some(_) => {
                *expired = None;
                None
            }
            None => None,
        }
    }

    /// `credentials` as a source serves them now: with the fault's past `Expiration` while
    /// the expired-credentials fault stands (their own if that is earlier), else as they are.
    pub fn served(&self, mut credentials: RoleCredentials) -> RoleCredentials {
        if let Some(expiration) = self.expired_since() {
            credentials.expiration = credentials.expiration.min(expiration);
        }
        credentials
    }

    fn expired_state(&self) -> std::sync::MutexGuard<'_, Option<Expired>> {
        self.expired.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The error a refresh meets during an outage.
pub fn error() -> CredentialError {
    CredentialError {
        code: "RequestError".into(),
        message:
            "the credential source is unreachable (imds-tun ctl fault --credential-source down)"
                .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn an_outage_lasts_until_ended_or_until_its_time_and_clones_share_it() {
        let outage = Outage::default();
        let held_by_a_source = outage.clone();
        assert!(!held_by_a_source.is_down());
        outage.begin(None);
        assert!(held_by_a_source.is_down());
        outage.end();
        assert!(!held_by_a_source.is_down());

        outage.begin(Some(Instant::now() + Duration::from_secs(30)));
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(held_by_a_source.is_down());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!held_by_a_source.is_down());
        assert!(!outage.is_down());

        assert!(!Outage::default().is_down(), "another outage is its own");
    }

    fn credentials(expiration: OffsetDateTime) -> RoleCredentials {
        RoleCredentials {
            access_key_id: "ASIAEXAMPLEEXAMPLE22".into(),
            secret_access_key: "secret".into(),
            token: "token".into(),
            expiration,
            last_updated: expiration - time::Duration::hours(6),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expired_credentials_serve_the_same_keys_expired_a_second_before_the_fault_until_it_ends()
     {
        let outage = Outage::default();
        let held_by_a_source = outage.clone();
        let began = time::macros::datetime!(2026-12-06 14:00:00.5 UTC);
        let fresh = credentials(began + time::Duration::hours(5));
        assert_eq!(held_by_a_source.served(fresh.clone()), fresh);

        outage.expire_credentials(began, Some(Instant::now() + Duration::from_secs(30)));
        let served = held_by_a_source.served(fresh.clone());
        assert_eq!(
            served.expiration,
            time::macros::datetime!(2026-12-06 13:59:59 UTC)
        );
        assert_eq!(served.access_key_id, fresh.access_key_id, "the same keys");
        assert_eq!(served.token, fresh.token);
        let long_gone = credentials(began - time::Duration::hours(1));
        assert_eq!(
            held_by_a_source.served(long_gone.clone()),
            long_gone,
            "an earlier Expiration stays"
        );

        // Set again while it stands: the same Expiration, a new end.
        outage.expire_credentials(began + time::Duration::seconds(20), None);
        assert_eq!(
            held_by_a_source.expired_since(),
            Some(time::macros::datetime!(2026-12-06 13:59:59 UTC))
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(held_by_a_source.expired_since().is_some(), "until ended");
        outage.end_expired();
        assert_eq!(held_by_a_source.served(fresh.clone()), fresh, "fresh after");

        outage.expire_credentials(began, Some(Instant::now() + Duration::from_secs(30)));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            held_by_a_source.served(fresh.clone()),
            fresh,
            "expired by itself"
        );
        assert!(!outage.is_down(), "the other face is untouched");
    }
}
