//! A simulated outage of the credential source (`imds-tun ctl fault --credential-source down`):
//! while it lasts, every refresh fails as if STS were unreachable, so the last good credentials
//! are served until they expire and then EC2's error is, exactly the path a real outage takes.
//!
//! An [`Outage`] is a handle, like the interruptions board and the fault board: created once at
//! start-up, held by every credential source of the process (each role's, too) and by the
//! control server, which begins and ends it. It is not a process-global, so a test can hold an
//! outage of its own.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;

use super::CredentialError;

/// Whether the credential source is down, and until when; cheap to clone (one shared state).
#[derive(Debug, Clone, Default)]
pub struct Outage {
    /// `None`: up. `Some(None)`: down until ended. `Some(Some(at))`: down until `at`.
    down_until: Arc<Mutex<Option<Option<Instant>>>>,
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
}
