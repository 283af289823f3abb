//! GCE tokens: where access tokens (`service-accounts/default/token`) and identity tokens
//! (`.../identity?audience=`) come from, and how long the one in hand is kept.
//!
//! Access tokens, in the order the settings pick them: a command the user names (`gcloud auth
//! print-access-token`), a static token (`GOOGLE_ACCESS_TOKEN` or a file), else a clearly fake
//! one (`ya29.imds-tun-fake-...`, with a warning at start-up). Identity tokens: a command with
//! `{audience}` in it (`gcloud auth print-identity-token --audiences={audience}`), else fake
//! tokens signed with the committed key ([`super::identity_token`]).
//!
//! Commands run one at a time (single flight: a burst of requests starts one `gcloud`, the rest
//! wait for its answer) and their output is cached: an access token for
//! [`COMMAND_TOKEN_LIFETIME`] (gcloud hands out tokens with at least that long left, and does
//! not say how long), an identity token until five minutes before the `exp` it carries, at most
//! [`MAX_AUDIENCES`] audiences at once.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::identity_token::IdentitySigner;
use super::instance::GceInstance;
use crate::secret::Secret;
use crate::token_command::{self, CommandError, CommandLine};

/// The prefix of every fake access token: no Google API accepts it, and a reader sees why.
pub const FAKE_PREFIX: &str = "ya29.imds-tun-fake-";

/// Lifetime of a fake token, as Google's access tokens.
const FAKE_LIFETIME: i64 = 3600;

/// A token is replaced when it has less than this left.
const RENEW_BEFORE: i64 = 300;

/// How long a token printed by an access-token command is served before the command runs again.
pub const COMMAND_TOKEN_LIFETIME: i64 = 600;

/// The most identity-token audiences cached from a command at once.
pub const MAX_AUDIENCES: usize = 64;

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
    #[error("the access token command failed: {0}")]
    Command(#[from] CommandError),
    #[error("audience refused: {0}")]
    Audience(&'static str),
}

/// The settings' choice of access-token source.
#[derive(Debug, Clone)]
pub enum AccessTokenSource {
    Command(CommandLine),
    Static(Secret),
    Fake,
}

/// The settings' choice of identity-token source.
#[derive(Debug, Clone)]
pub enum IdentityTokenSource {
    Command(CommandLine),
    Signed,
}

/// Access tokens, with their cache.
#[derive(Debug)]
pub struct AccessTokens {
    source: AccessTokenSource,
    current: tokio::sync::Mutex<Option<(String, i64)>>,
    cooldown: token_command::Cooldown,
}

impl AccessTokens {
    pub fn new(source: AccessTokenSource) -> AccessTokens {
        AccessTokens {
            source,
            current: tokio::sync::Mutex::new(None),
            cooldown: token_command::Cooldown::default(),
        }
    }

    pub fn fake() -> AccessTokens {
        AccessTokens::new(AccessTokenSource::Fake)
    }

    /// The token to hand out at `now` (Unix seconds).
    pub async fn token(&self, now: i64) -> Result<AccessToken, TokenError> {
        if let AccessTokenSource::Static(secret) = &self.source {
            return Ok(AccessToken {
                value: secret.expose().to_owned(),
                expires_in: FAKE_LIFETIME - 1,
            });
        }
        // Held across the command: the single flight.
        let mut current = self.current.lock().await;
        if let Some((value, expires)) = current.as_ref()
            && expires - now >= RENEW_BEFORE
        {
            return Ok(AccessToken {
                value: value.clone(),
                expires_in: expires - now,
            });
        }
        let (value, lifetime) = match &self.source {
            AccessTokenSource::Command(line) => (
                self.cooldown
                    .run(line.words(), now)
                    .await?
                    .expose()
                    .to_owned(),
                COMMAND_TOKEN_LIFETIME + RENEW_BEFORE,
            ),
            _ => (mint()?, FAKE_LIFETIME),
        };
        *current = Some((value.clone(), now + lifetime));
        Ok(AccessToken {
            value,
            expires_in: lifetime,
        })
    }
}

/// Identity tokens, with their cache per audience.
pub struct IdentityTokens {
    source: IdentityTokenSource,
    signer: IdentitySigner,
    cached: tokio::sync::Mutex<HashMap<String, (String, i64)>>,
    cooldown: token_command::Cooldown,
}

impl std::fmt::Debug for IdentityTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityTokens")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl IdentityTokens {
    pub fn new(source: IdentityTokenSource, signer: IdentitySigner) -> IdentityTokens {
        IdentityTokens {
            source,
            signer,
            cached: tokio::sync::Mutex::new(HashMap::new()),
            cooldown: token_command::Cooldown::default(),
        }
    }

    pub fn signer(&self) -> &IdentitySigner {
        &self.signer
    }

    /// A token for `audience` at `now`.
    pub async fn token(
        &self,
        instance: &GceInstance,
        audience: &str,
        full: bool,
        now: i64,
        created: i64,
    ) -> Result<String, TokenError> {
        let line = match &self.source {
            IdentityTokenSource::Signed => {
                return Ok(self.signer.token(instance, audience, full, now, created));
            }
            IdentityTokenSource::Command(line) => line,
        };
        token_command::check_value(audience).map_err(TokenError::Audience)?;
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.get(audience)
            && expires - now >= RENEW_BEFORE
        {
            return Ok(token.clone());
        }
        let token = self
            .cooldown
            .run(&line.with_value("{audience}", audience), now)
            .await?
            .expose()
            .to_owned();
        let expires = jwt_expiry(&token).unwrap_or(now + RENEW_BEFORE);
        cached.retain(|_, (_, expiry)| *expiry - now >= RENEW_BEFORE);
        if cached.len() >= MAX_AUDIENCES
            && let Some(soonest) = cached
                .iter()
                .min_by_key(|(_, (_, expiry))| *expiry)
                .map(|(key, _)| key.clone())
        {
            cached.remove(&soonest);
        }
        cached.insert(audience.to_owned(), (token.clone(), expires));
        Ok(token)
    }
}

/// The `exp` claim of a JWT, without verifying it (the command's output is trusted).
fn jwt_expiry(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.get("exp")?.as_i64()
}

fn mint() -> Result<String, TokenError> {
    let mut random = [0u8; 48];
    getrandom::fill(&mut random).map_err(|error| TokenError::Random(error.to_string()))?;
    Ok(format!("{FAKE_PREFIX}{}", URL_SAFE_NO_PAD.encode(random)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fake_token_is_kept_until_five_minutes_are_left_then_renewed() {
        let tokens = AccessTokens::fake();
        let first = tokens.token(1_000).await.expect("token");
        assert!(first.value.starts_with(FAKE_PREFIX));
        assert_eq!(first.expires_in, 3600);
        let later = tokens.token(1_000 + 3000).await.expect("token");
        assert_eq!(later.value, first.value);
        assert_eq!(later.expires_in, 600);
        let renewed = tokens.token(1_000 + 3400).await.expect("token");
        assert_ne!(renewed.value, first.value);
        assert_eq!(renewed.expires_in, 3600);
    }

    #[tokio::test]
    async fn a_command_token_is_cached_and_a_burst_runs_the_command_once() {
        let dir = std::env::temp_dir().join(format!("imds-tun-gce-cmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let counter = dir.join("runs");
        let script = dir.join("print-token");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho run >> {}\nsleep 0.2\necho ya29.from-command\n",
                counter.display()
            ),
        )
        .expect("script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let line = CommandLine::parse(&script.display().to_string()).expect("line");
        let tokens = std::sync::Arc::new(AccessTokens::new(AccessTokenSource::Command(line)));
        let burst: Vec<_> = (0..8)
            .map(|_| {
                let tokens = tokens.clone();
                tokio::spawn(async move { tokens.token(5_000).await })
            })
            .collect();
        for task in burst {
            let token = task.await.expect("task").expect("token");
            assert_eq!(token.value, "ya29.from-command");
        }
        let runs = std::fs::read_to_string(&counter).expect("counter");
        assert_eq!(runs.lines().count(), 1, "single flight");
        let later = tokens
            .token(5_000 + COMMAND_TOKEN_LIFETIME)
            .await
            .expect("token");
        assert_eq!(later.expires_in, RENEW_BEFORE);
        tokens
            .token(5_000 + COMMAND_TOKEN_LIFETIME + 1)
            .await
            .expect("token");
        let runs = std::fs::read_to_string(&counter).expect("counter");
        assert_eq!(
            runs.lines().count(),
            2,
            "run again once the cached token is near expiry"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_expiry_of_a_command_identity_token_is_read_from_its_claims() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"exp":1700003600,"aud":"x"}"#);
        assert_eq!(
            jwt_expiry(&format!("e30.{payload}.sig")),
            Some(1_700_003_600)
        );
        assert_eq!(jwt_expiry("not-a-jwt"), None);
    }
}
