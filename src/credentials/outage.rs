//! A simulated outage of the credential source (`imds-tun ctl fault --credential-source down`):
//! while it lasts, every refresh fails as if STS were unreachable, so the last good credentials
//! are served until they expire and then EC2's error is, exactly the path a real outage takes.
//!
//! One outage for the whole process (every role's source checks it), set and cleared by
//! `control`.

use std::sync::Mutex;
use std::time::Instant;

use super::CredentialError;

static DOWN_UNTIL: Mutex<Option<Option<Instant>>> = Mutex::new(None);

/// Starts an outage; `until` `None` lasts until [`end`].
pub fn begin(until: Option<Instant>) {
    *DOWN_UNTIL.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
}

/// Ends it.
pub fn end() {
    *DOWN_UNTIL.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

/// Whether the source is down now.
pub fn is_down() -> bool {
    let mut down = DOWN_UNTIL.lock().unwrap_or_else(|p| p.into_inner());
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

/// The error a refresh meets during an outage.
pub fn error() -> CredentialError {
    CredentialError {
        code: "RequestError".into(),
        message:
            "the credential source is unreachable (imds-tun ctl fault --credential-source down)"
                .into(),
    }
}
