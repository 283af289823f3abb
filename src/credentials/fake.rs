//! Fake role credentials: well-formed so SDKs accept them, unmistakably fake to a human.
//!
//! The access key id has the real temporary-key shape (`ASIA` + 16 base32 characters), the
//! secret is 40 base64-alphabet characters, and the session token is base64 of a text that
//! starts `imds-tun-fake` (its base64 always starts `aW1kcy10dW4tZmFrZ`), so anyone who decodes
//! it sees what it is. AWS rejects them, which is the point: they exercise the credential path
//! of a client without granting anything.
//!
//! Like instance-profile credentials they rotate: a new set is issued once less than
//! [`DEFAULT_REFRESH_MARGIN`] remains, well before EC2's guarantee of five minutes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::outage::Outage;
use super::schedule::DEFAULT_REFRESH_MARGIN;
use super::status::RoleStatus;
use super::{CredentialError, CredentialSource, RoleCredentials};

/// The decoded session token starts with this marker.
pub const TOKEN_MARKER: &str = "imds-tun-fake: not a real AWS session token; ";

/// A credential source that invents credentials and rotates them before they expire.
#[derive(Debug)]
pub struct FakeCredentials {
    lifetime: Duration,
    /// The process's simulated outage, once attached; a source of its own is never down.
    outage: Outage,
    /// The set being served; the lock is held only to compare times and maybe swap the set.
    current: Mutex<Option<RoleCredentials>>,
    /// Where each new set is recorded (`ctl status`, the metrics), once attached.
    status: Option<Arc<RoleStatus>>,
}

impl FakeCredentials {
    /// Credentials valid for `lifetime` each.
    pub fn new(lifetime: Duration) -> FakeCredentials {
        FakeCredentials {
            lifetime,
            outage: Outage::default(),
            current: Mutex::new(None),
            status: None,
        }
    }

    /// The same source, recording each set it issues in `status`.
    pub fn reporting(self, status: Arc<RoleStatus>) -> FakeCredentials {
        FakeCredentials {
            status: Some(status),
            ..self
        }
    }

    /// The same source, down while `outage` is (the process's, which `ctl` begins and ends).
    pub fn with_outage(self, outage: Outage) -> FakeCredentials {
        FakeCredentials { outage, ..self }
    }

    /// Credentials with the configured lifetime (`credentials_lifetime`).
    pub fn from_settings(settings: &super::Settings) -> FakeCredentials {
        FakeCredentials::new(settings.fake_lifetime)
    }

    fn issue(&self, now: OffsetDateTime) -> RoleCredentials {
        // Second precision: the served JSON has no fractions, and comparisons must match it.
        let now = now.replace_nanosecond(0).unwrap_or(now);
        RoleCredentials {
            access_key_id: format!("ASIA{}", random_text(16, BASE32)),
            secret_access_key: random_text(40, BASE64),
            token: fake_session_token(),
            expiration: now + self.lifetime,
            last_updated: now,
        }
    }
}

impl CredentialSource for FakeCredentials {
    fn current(&self, now: OffsetDateTime) -> Result<RoleCredentials, CredentialError> {
        // A poisoned lock only means another thread panicked mid-swap; the Option is still whole.
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh_enough = current
            .as_ref()
            .is_some_and(|credentials| credentials.expiration - now > DEFAULT_REFRESH_MARGIN);
        // During a simulated outage nothing new is issued: the last set serves until it expires.
        let down = self.outage.is_down();
        if !fresh_enough && !down {
            let issued = self.issue(now);
            if let Some(status) = &self.status {
                // Renewed by the first request once less than the margin is left.
                status.refreshed(
                    issued.expiration,
                    issued.expiration - DEFAULT_REFRESH_MARGIN,
                );
            }
            *current = Some(issued);
        }
        if down && current.as_ref().is_none_or(|c| c.expiration <= now) {
            return Err(super::cache::ec2_error("", Some(&super::outage::error())));
        }
        match current.as_ref() {
            Some(credentials) => Ok(self.outage.served(credentials.clone())),
            None => Err(CredentialError {
                code: "InternalError".into(),
                message: "no fake credentials were issued".into(),
            }),
        }
    }
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `length` characters drawn uniformly from `alphabet` (32 or 64 symbols divide 256 evenly).
fn random_text(length: usize, alphabet: &[u8]) -> String {
    let mut bytes = vec![0u8; length];
    random_bytes(&mut bytes);
    bytes
        .iter()
        .map(|byte| char::from(alphabet[usize::from(*byte) % alphabet.len()]))
        .collect()
}

/// Base64 of the marker and 256 random bytes: about the length of a real session token.
fn fake_session_token() -> String {
    let mut body = TOKEN_MARKER.as_bytes().to_vec();
    let mut noise = [0u8; 256];
    random_bytes(&mut noise);
    body.extend_from_slice(&noise);
    STANDARD.encode(body)
}

/// OS randomness; if the OS cannot provide it, a hash of the clock and a counter, which is still
/// unique per call (these values are fake and grant nothing, so unpredictability is a nicety).
fn random_bytes(out: &mut [u8]) {
    if getrandom::fill(out).is_ok() {
        return;
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for (index, chunk) in out.chunks_mut(32).enumerate() {
        let mut hasher = Sha256::new();
        hasher.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        hasher.update(index.to_le_bytes());
        hasher.update(
            OffsetDateTime::now_utc()
                .unix_timestamp_nanos()
                .to_le_bytes(),
        );
        hasher.update(std::process::id().to_le_bytes());
        let digest = hasher.finalize();
        chunk.copy_from_slice(&digest[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const SIX_HOURS: Duration = Duration::from_secs(6 * 3600);

    #[test]
    fn credentials_are_well_formed_and_marked_fake() {
        let now = datetime!(2025-01-01 12:00:00.5 UTC);
        let credentials = FakeCredentials::new(SIX_HOURS).current(now).unwrap();
        assert!(credentials.access_key_id.starts_with("ASIA"));
        assert_eq!(credentials.access_key_id.len(), 20);
        assert!(
            credentials.access_key_id[4..]
                .bytes()
                .all(|b| BASE32.contains(&b))
        );
        assert_eq!(credentials.secret_access_key.len(), 40);
        let decoded = STANDARD.decode(&credentials.token).unwrap();
        assert!(decoded.starts_with(b"imds-tun-fake"));
        assert!(credentials.token.starts_with("aW1kcy10dW4tZmFrZ"));
        assert_eq!(credentials.last_updated, datetime!(2025-01-01 12:00:00 UTC));
        assert_eq!(credentials.expiration, datetime!(2025-01-01 18:00:00 UTC));
    }

    #[test]
    fn same_credentials_are_served_until_rotation_is_due() {
        let source = FakeCredentials::new(SIX_HOURS);
        let start = datetime!(2025-01-01 00:00:00 UTC);
        let first = source.current(start).unwrap();
        let later = source
            .current(start + Duration::from_secs(5 * 3600))
            .unwrap();
        assert_eq!(first, later);
    }

    #[test]
    fn credentials_rotate_before_expiry() {
        let source = FakeCredentials::new(SIX_HOURS);
        let start = datetime!(2025-01-01 00:00:00 UTC);
        let first = source.current(start).unwrap();
        // 14 minutes before expiry: inside the rotation window, still valid.
        let near_expiry = first.expiration - Duration::from_secs(14 * 60);
        let second = source.current(near_expiry).unwrap();
        assert_ne!(first.access_key_id, second.access_key_id);
        assert_ne!(first.secret_access_key, second.secret_access_key);
        assert_eq!(second.last_updated, near_expiry);
        assert!(second.expiration > first.expiration);
        // New credentials appear while the old ones still have more than five minutes left.
        assert!(first.expiration - near_expiry > Duration::from_secs(5 * 60));
    }

    #[test]
    fn during_its_outage_the_last_set_serves_until_it_expires_then_ec2s_error() {
        let outage = Outage::default();
        let source = FakeCredentials::new(SIX_HOURS).with_outage(outage.clone());
        let start = datetime!(2025-01-01 00:00:00 UTC);
        let first = source.current(start).unwrap();
        outage.begin(None);
        let due = first.expiration - Duration::from_secs(14 * 60);
        assert_eq!(source.current(due).unwrap(), first, "nothing new is issued");
        let error = source.current(first.expiration).unwrap_err();
        assert_eq!(error.code, "AssumeRoleUnauthorizedAccess");
        assert!(
            error
                .message
                .contains("the credential source is unreachable"),
            "{}",
            error.message
        );
        assert!(
            FakeCredentials::new(SIX_HOURS).current(start).is_ok(),
            "a source without this outage is not down"
        );
        outage.end();
        assert!(source.current(first.expiration).unwrap().expiration > first.expiration);
    }

    #[test]
    fn debug_of_the_source_never_shows_secrets() {
        let source = FakeCredentials::new(SIX_HOURS);
        let credentials = source.current(OffsetDateTime::UNIX_EPOCH).unwrap();
        let shown = format!("{source:?}");
        assert!(!shown.contains(&credentials.secret_access_key));
        assert!(!shown.contains(&credentials.token));
    }
}
