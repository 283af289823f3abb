//! GCE tokens: where access tokens (`service-accounts/default/token`) and identity tokens
//! (`.../identity?audience=`) come from, and how long the one in hand is kept.
//!
//! Access tokens, in the order the settings pick them: a command the user names (`gcloud auth
//! print-access-token`), a static token (`GOOGLE_ACCESS_TOKEN` or a file), else a clearly fake
//! one (`ya29.imds-tun-fake-...`, with a warning at start-up). Identity tokens: a command with
//! `{audience}` in it (`gcloud auth print-identity-token --audiences={audience}`), else fake
//! tokens signed with the committed key ([`super::identity_token`]).
//!
//! Tokens from a command or minted fakes are kept in a [`TokenCache`] (one fetch at a time per
//! key, a failure not retried for a few seconds, a command's runs charged to the caller who
//! asked, see `token_cache`): an access token for
//! [`COMMAND_TOKEN_LIFETIME`] (gcloud hands out tokens with at least that long left, and does
//! not say how long), an identity token until five minutes before the `exp` it carries, at most
//! [`MAX_AUDIENCES`] audiences at once.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::identity_token::IdentitySigner;
use super::instance::GceInstance;
use crate::attribution::Caller;
use crate::clouds::token_cache::{Expiring, NotFetched, RENEW_BEFORE, TokenCache};
use crate::secret::Secret;
use crate::token_command::{self, CommandError, CommandLine};

/// The prefix of every fake access token: no Google API accepts it, and a reader sees why.
pub const FAKE_PREFIX: &str = "ya29.imds-tun-fake-";

/// Lifetime of a fake token, as Google's access tokens.
const FAKE_LIFETIME: i64 = 3600;

/// How long a token printed by an access-token command is served before the command runs again.
pub const COMMAND_TOKEN_LIFETIME: i64 = 600;

/// The most identity-token audiences cached from a command at once.
pub const MAX_AUDIENCES: usize = 64;

/// What a token request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The token: the answer's `access_token`.
    pub value: String,
    /// Seconds until it expires.
    pub expires_in: i64,
}

/// Why no token could be given.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The operating system gave no random bytes for a fake token (its error, as text).
    #[error("no randomness for a fake token: {0}")]
    Random(String),
    /// The user's token command could not run, failed, or printed nothing usable.
    #[error("the token command failed: {0}")]
    Command(#[from] CommandError),
    /// The request's audience may not be put into the command (why); answered 400.
    #[error("audience refused: {0}")]
    Audience(&'static str),
    /// The cache did not run the command: it failed moments ago, or too many run at once.
    #[error("{0}")]
    NotFetched(#[from] NotFetched),
}

/// The settings' choice of access-token source.
#[derive(Debug, Clone)]
pub enum AccessTokenSource {
    /// `--gcp-access-token-command`: run it, serve what it prints for
    /// [`COMMAND_TOKEN_LIFETIME`].
    Command(CommandLine),
    /// `--gcp-access-token-file` or `GOOGLE_ACCESS_TOKEN`: this token, always.
    Static(Secret),
    /// Neither: fake tokens starting [`FAKE_PREFIX`].
    Fake,
}

/// The settings' choice of identity-token source.
#[derive(Debug, Clone)]
pub enum IdentityTokenSource {
    /// `--gcp-identity-token-command`: run it with `{audience}` replaced.
    Command(CommandLine),
    /// Without a command: fake tokens signed with imds-tun's published key.
    Signed,
}

/// Access tokens, with their cache.
#[derive(Debug)]
pub struct AccessTokens {
    source: AccessTokenSource,
    cache: TokenCache<(), String>,
}

impl AccessTokens {
    /// Tokens from `source`, with an empty cache.
    pub fn new(source: AccessTokenSource) -> AccessTokens {
        AccessTokens {
            source,
            cache: TokenCache::new(1),
        }
    }

    /// Fake tokens only ([`AccessTokenSource::Fake`]).
    pub fn fake() -> AccessTokens {
        AccessTokens::new(AccessTokenSource::Fake)
    }

    /// Whether a token may run the user's command (then its caller matters: see
    /// `token_cache`).
    pub fn runs_a_command(&self) -> bool {
        matches!(self.source, AccessTokenSource::Command(_))
    }

    /// The token to hand out at `now` (Unix seconds) to `caller` (a command's run is charged to
    /// it).
    pub async fn token(&self, caller: Option<Caller>, now: i64) -> Result<AccessToken, TokenError> {
        let words = match &self.source {
            AccessTokenSource::Static(secret) => {
                return Ok(AccessToken {
                    value: secret.expose().to_owned(),
                    expires_in: FAKE_LIFETIME - 1,
                });
            }
            AccessTokenSource::Command(line) => Some(line.words().to_vec()),
            AccessTokenSource::Fake => None,
        };
        // Minting a fake costs nothing: no budget.
        let caller = caller.filter(|_| words.is_some());
        let token = self
            .cache
            .get::<TokenError, _, _, _>(&(), caller, now, move || async move {
                Ok::<_, TokenError>(match words {
                    Some(words) => Expiring {
                        value: token_command::run(&words).await?.expose().to_owned(),
                        expires: now + COMMAND_TOKEN_LIFETIME + RENEW_BEFORE,
                    },
                    None => Expiring {
                        value: mint()?,
                        expires: now + FAKE_LIFETIME,
                    },
                })
            })
            .await?;
        Ok(AccessToken {
            value: token.value,
            expires_in: token.expires - now,
        })
    }
}

/// Identity tokens, with their cache per audience.
pub struct IdentityTokens {
    source: IdentityTokenSource,
    signer: IdentitySigner,
    cache: TokenCache<String, String>,
}

impl std::fmt::Debug for IdentityTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityTokens")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl IdentityTokens {
    /// Tokens from `source`; `signer` signs them when there is no command, and publishes the
    /// key either way.
    pub fn new(source: IdentityTokenSource, signer: IdentitySigner) -> IdentityTokens {
        IdentityTokens {
            source,
            signer,
            cache: TokenCache::new(MAX_AUDIENCES),
        }
    }

    /// The key fake identity tokens are signed with, for `/imds-tun/gce/certs` and `jwks`.
    pub fn signer(&self) -> &IdentitySigner {
        &self.signer
    }

    /// Whether a token may run the user's command (then its caller matters: see
    /// `token_cache`).
    pub fn runs_a_command(&self) -> bool {
        matches!(self.source, IdentityTokenSource::Command(_))
    }

    /// A token for `audience` at `now`, for `caller` (a command's run is charged to it).
    pub async fn token(
        &self,
        instance: &GceInstance,
        audience: &str,
        full: bool,
        caller: Option<Caller>,
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
        let words = line.with_value("{audience}", audience);
        let token = self
            .cache
            .get::<TokenError, _, _, _>(&audience.to_owned(), caller, now, move || async move {
                let printed = token_command::run(&words).await?;
                let value = printed.expose().to_owned();
                let expires = jwt_expiry(&value).unwrap_or(now + RENEW_BEFORE);
                Ok::<_, TokenError>(Expiring { value, expires })
            })
            .await?;
        Ok(token.value)
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
        let first = tokens.token(None, 1_000).await.expect("token");
        assert!(first.value.starts_with(FAKE_PREFIX));
        assert_eq!(first.expires_in, 3600);
        let later = tokens.token(None, 1_000 + 3000).await.expect("token");
        assert_eq!(later.value, first.value);
        assert_eq!(later.expires_in, 600);
        let renewed = tokens.token(None, 1_000 + 3400).await.expect("token");
        assert_ne!(renewed.value, first.value);
        assert_eq!(renewed.expires_in, 3600);
    }

    #[tokio::test]
    async fn a_command_token_is_served_for_ten_minutes_then_the_command_runs_again() {
        let dir = std::env::temp_dir().join(format!("imds-tun-gce-cmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let counter = dir.join("runs");
        let script = dir.join("print-token");
        std::fs::write(
            &script,
            format!(
                "echo run >> {}\necho ya29.from-command\n",
                counter.display()
            ),
        )
        .expect("script");
        // Read by `sh`, not executed: nothing to race with another test's fork (ETXTBSY).
        let line = CommandLine::parse(&format!("sh {}", script.display())).expect("line");
        let tokens = AccessTokens::new(AccessTokenSource::Command(line));
        let runs = || {
            std::fs::read_to_string(&counter)
                .expect("counter")
                .lines()
                .count()
        };
        let first = tokens.token(None, 5_000).await.expect("token");
        assert_eq!(first.value, "ya29.from-command");
        assert_eq!(first.expires_in, COMMAND_TOKEN_LIFETIME + RENEW_BEFORE);
        let later = tokens
            .token(None, 5_000 + COMMAND_TOKEN_LIFETIME)
            .await
            .expect("token");
        assert_eq!(later.expires_in, RENEW_BEFORE);
        assert_eq!(runs(), 1, "served from the cache");
        tokens
            .token(None, 5_000 + COMMAND_TOKEN_LIFETIME + 1)
            .await
            .expect("token");
        assert_eq!(runs(), 2, "run again once the cached token is near expiry");
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
