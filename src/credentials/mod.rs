//! Where role credentials come from: one small trait, one implementation per source.
//!
//! The metadata service asks a [`CredentialSource`] for the role's current keys on every request
//! to `iam/security-credentials/<role>`. Sources keep their credentials in memory and refresh
//! them on their own schedule, so answering never waits on I/O.
//!
//! - [`settings`]: what this layer is built from, and its setup errors.
//! - [`setup`]: picks the source at start-up (`--role-arn`, the caller's own session, or fake)
//!   and builds the AWS side; [`select`] is the one entry point.
//! - [`cache`]: the in-memory set and its single background refresher (single flight, back-off).
//! - [`sts`]: the fetchers, `AssumeRole` and the caller's own session (`GetSessionToken`).
//! - [`schedule`]: when to refresh and how long to back off, as plain functions.
//! - [`naming`]: role ARNs and session names.
//! - [`fake`]: well-formed fake credentials, for `--mock-credentials` or when none are found.
//! - [`status`]: each role's source, expiry, next refresh and refresh counts, as the sources
//!   write them (what `ctl status` and the metrics read).
//!
//! Details: `docs/credentials.md`.

pub mod cache;
pub mod fake;
pub mod naming;
pub mod outage;
pub mod roles;
pub mod schedule;
pub mod settings;
pub mod setup;
pub mod status;
#[cfg(feature = "sts")]
pub mod sts;

pub use settings::{ServedAs, Settings, SetupError};
pub use setup::{Selected, select};

use std::fmt;

use time::OffsetDateTime;

/// One set of temporary role credentials, as EC2 serves them.
#[derive(Clone, PartialEq, Eq)]
pub struct RoleCredentials {
    /// `AccessKeyId`: `ASIA...` for temporary keys.
    pub access_key_id: String,
    /// `SecretAccessKey`; never logged.
    pub secret_access_key: String,
    /// `Token`: the session token; never logged.
    pub token: String,
    /// `Expiration`: when the keys stop working.
    pub expiration: OffsetDateTime,
    /// `LastUpdated`: when this set was obtained (the STS call, or the fake's minting).
    pub last_updated: OffsetDateTime,
}

/// Secrets never reach logs: `Debug` shows the key id and times only.
impl fmt::Debug for RoleCredentials {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RoleCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("token", &"<redacted>")
            .field("expiration", &self.expiration)
            .field("last_updated", &self.last_updated)
            .finish()
    }
}

/// Why no credentials can be served, in EC2's terms: `code` such as
/// `AssumeRoleUnauthorizedAccess` and a human `message`; served as the `Code`/`Message` JSON.
/// Also why one fetch failed (`code` from STS, or imds-tun's own such as `NetworkError`): the
/// same two fields, and neither ever holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CredentialError {
    /// `Code`: a short machine-readable reason (`AssumeRoleUnauthorizedAccess`, STS's own,
    /// `NetworkError`).
    pub code: String,
    /// `Message`: what happened, for a person.
    pub message: String,
}

impl CredentialError {
    /// The kind of failure, for the `Message` EC2's error shape serves to every local process:
    /// never where STS is, who imds-tun is to it, or anything the SDK said (the log has that).
    pub fn public_reason(&self) -> String {
        match self.code.as_str() {
            "NetworkError" => "STS cannot be reached".to_owned(),
            "SourceCredentialsUnavailable" => "the source credentials cannot be loaded".to_owned(),
            "MfaSessionExpired" | "MfaCodeUsed" => "a new MFA code is needed".to_owned(),
            "RequestError" => "the credential source is unreachable".to_owned(),
            "InternalError" => "STS gave an answer imds-tun cannot use".to_owned(),
            // STS's own code (`AccessDenied`, `ExpiredToken`): a word of its API, not a secret;
            // anything else it could send is not repeated.
            code if !code.is_empty()
                && code.len() <= 64
                && code
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'.') =>
            {
                format!("STS refused the call ({code})")
            }
            _ => "STS refused the call".to_owned(),
        }
    }
}

/// A provider of the instance role's credentials.
pub trait CredentialSource: Send + Sync + 'static {
    /// Served from memory; must never block or do I/O.
    fn current(&self, now: OffsetDateTime) -> Result<RoleCredentials, CredentialError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secret_and_token() {
        let credentials = RoleCredentials {
            access_key_id: "ASIAEXAMPLEEXAMPLE22".into(),
            secret_access_key: "very-secret".into(),
            token: "session-token".into(),
            expiration: OffsetDateTime::UNIX_EPOCH,
            last_updated: OffsetDateTime::UNIX_EPOCH,
        };
        let shown = format!("{credentials:?}");
        assert!(shown.contains("ASIAEXAMPLEEXAMPLE22"));
        assert!(!shown.contains("very-secret"));
        assert!(!shown.contains("session-token"));
    }
}
