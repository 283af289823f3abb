//! GCE access tokens (`service-accounts/default/token`): where they come from and how long the
//! one in hand is good for.
//!
//! Sources, in the order the settings pick them: a static token the user supplies (from the
//! environment or a file), else a clearly fake one (`ya29.imds-tun-fake-...`, with a warning at
//! start-up). A fake token lives an hour, like Google's, and a new one is minted when less than
//! five minutes are left, so clients that refresh early see a new token as they would on GCE.

use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The prefix of every fake access token: no Google API accepts it, and a reader sees why.
pub const FAKE_PREFIX: &str = "ya29.imds-tun-fake-";

/// Lifetime of a fake token, as Google's access tokens.
const FAKE_LIFETIME: i64 = 3600;

/// A fake token is replaced when it has less than this left.
const RENEW_BEFORE: i64 = 300;

/// What a token request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub value: String,
    /// Seconds until it expires.
    pub expires_in: i64,
}

/// Why no token could be given.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no randomness for a fake token: {0}")]
    Random(String),
}

/// Where access tokens come from.
#[derive(Debug)]
pub enum AccessTokens {
    /// A token the user supplied; its lifetime is unknown, so it is reported as an hour.
    Static(String),
    /// Fake tokens minted here.
    Fake(Mutex<Option<(String, i64)>>),
}

impl AccessTokens {
    pub fn fake() -> AccessTokens {
        AccessTokens::Fake(Mutex::new(None))
    }

    /// The token to hand out at `now` (Unix seconds).
    pub fn token(&self, now: i64) -> Result<AccessToken, TokenError> {
        match self {
            AccessTokens::Static(value) => Ok(AccessToken {
                value: value.clone(),
                expires_in: FAKE_LIFETIME - 1,
            }),
            AccessTokens::Fake(current) => {
                let mut current = current
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let fresh = current
                    .as_ref()
                    .is_some_and(|(_, expires)| expires - now >= RENEW_BEFORE);
                if !fresh {
                    *current = Some((mint()?, now + FAKE_LIFETIME));
                }
                let (value, expires) = current.as_ref().map_or((String::new(), now), |c| c.clone());
                Ok(AccessToken {
                    value,
                    expires_in: expires - now,
                })
            }
        }
    }
}

fn mint() -> Result<String, TokenError> {
    let mut random = [0u8; 48];
    getrandom::fill(&mut random).map_err(|error| TokenError::Random(error.to_string()))?;
    Ok(format!("{FAKE_PREFIX}{}", URL_SAFE_NO_PAD.encode(random)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fake_token_is_kept_until_five_minutes_are_left_then_renewed() {
        let tokens = AccessTokens::fake();
        let first = tokens.token(1_000).expect("token");
        assert!(first.value.starts_with(FAKE_PREFIX));
        assert_eq!(first.expires_in, 3600);
        let later = tokens.token(1_000 + 3000).expect("token");
        assert_eq!(later.value, first.value);
        assert_eq!(later.expires_in, 600);
        let renewed = tokens.token(1_000 + 3400).expect("token");
        assert_ne!(renewed.value, first.value);
        assert_eq!(renewed.expires_in, 3600);
    }
}
