//! Azure managed-identity tokens: from a command the user names (`az account get-access-token
//! --resource {resource}`), else clearly fake.
//!
//! The command runs as the served user without a shell (`token_command`), and its answer is
//! kept in a [`TokenCache`] per resource (one run at a time per resource, a failure not retried
//! for a few seconds, runs charged to the caller who asked) until five minutes before it
//! expires, at most [`MAX_RESOURCES`] resources
//! at once; fake tokens likewise. It may print `az`'s JSON (`accessToken` with
//! `expires_on` in Unix seconds, or `expiresOn` as local time, which is not trusted: then the
//! token is kept [`ASSUMED_LIFETIME`]) or the bare token.
//!
//! Fake tokens are JWT-shaped with `alg: none` and no signature, claims naming the resource,
//! the tenant and the identity, and `"imds_tun": "fake"`: code that reads claims works, and no
//! Azure service accepts them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::instance::AzureInstance;
use crate::attribution::Caller;
use crate::clouds::token_cache::{Expiring, NotFetched, TokenCache};
use crate::token_command::{self, CommandError, CommandLine};

/// The most resources cached from a command at once.
pub const MAX_RESOURCES: usize = 64;

/// How long a token whose expiry the command did not state is kept.
pub const ASSUMED_LIFETIME: i64 = 600;

/// Lifetime of a fake token: Azure's managed-identity tokens live about a day.
const FAKE_LIFETIME: i64 = 86_399;

/// The settings' choice.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// `--azure-token-command`: run it with `{resource}` replaced.
    Command(CommandLine),
    /// Without a command: unsigned fake tokens, warned about when served.
    Fake,
}

/// Why no token could be given.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The user's token command could not run, failed, or printed nothing usable.
    #[error("the managed identity token command failed: {0}")]
    Command(#[from] CommandError),
    /// The request's resource may not be put into the command (why); answered 400.
    #[error("resource refused: {0}")]
    Resource(&'static str),
    /// The cache did not run the command: it failed moments ago, or too many run at once.
    #[error("{0}")]
    NotFetched(#[from] NotFetched),
}

/// A token and when it expires (Unix seconds).
pub type Token = Expiring<String>;

/// Managed-identity tokens with their cache.
#[derive(Debug)]
pub struct ManagedIdentity {
    source: TokenSource,
    cache: TokenCache<String, String>,
}

impl ManagedIdentity {
    /// Tokens from `source`, with an empty cache.
    pub fn new(source: TokenSource) -> ManagedIdentity {
        ManagedIdentity {
            source,
            cache: TokenCache::new(MAX_RESOURCES),
        }
    }

    /// Whether a token may run the user's command (then its caller matters: see
    /// `token_cache`).
    pub fn runs_a_command(&self) -> bool {
        matches!(self.source, TokenSource::Command(_))
    }

    /// Whether the tokens are fakes (no `--azure-token-command`), so serving one is warned
    /// about.
    pub fn is_fake(&self) -> bool {
        matches!(self.source, TokenSource::Fake)
    }

    /// A token for `resource` at `now`, for `caller` (a command's run is charged to it).
    pub async fn token(
        &self,
        instance: &AzureInstance,
        resource: &str,
        caller: Option<Caller>,
        now: i64,
    ) -> Result<Token, TokenError> {
        token_command::check_value(resource).map_err(TokenError::Resource)?;
        enum Make {
            Fake(Token),
            Run(Vec<String>),
        }
        // A fake costs nothing to make: no budget.
        let (make, caller) = match &self.source {
            TokenSource::Fake => (Make::Fake(fake_token(instance, resource, now)), None),
            TokenSource::Command(line) => {
                (Make::Run(line.with_value("{resource}", resource)), caller)
            }
        };
        self.cache
            .get(&resource.to_owned(), caller, now, move || async move {
                Ok::<_, TokenError>(match make {
                    Make::Fake(token) => token,
                    Make::Run(words) => {
                        let printed = token_command::run(&words).await?;
                        from_command_output(printed.expose(), now)
                    }
                })
            })
            .await
    }
}

/// `az account get-access-token`'s JSON, or a bare token.
fn from_command_output(output: &str, now: i64) -> Token {
    if let Ok(document) = serde_json::from_str::<serde_json::Value>(output)
        && let Some(value) = document.get("accessToken").and_then(|v| v.as_str())
    {
        let expires = document
            .get("expires_on")
            .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
            .filter(|expires| *expires > now)
            .unwrap_or(now + ASSUMED_LIFETIME);
        return Token {
            value: value.to_owned(),
            expires,
        };
    }
    Token {
        value: output.to_owned(),
        expires: now + ASSUMED_LIFETIME,
    }
}

fn fake_token(instance: &AzureInstance, resource: &str, now: i64) -> Token {
    let header = json!({ "typ": "JWT", "alg": "none" });
    let claims = json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{}/", instance.tenant_id),
        "iat": now,
        "nbf": now,
        "exp": now + FAKE_LIFETIME,
        "appid": instance.client_id,
        "oid": instance.object_id,
        "sub": instance.object_id,
        "tid": instance.tenant_id,
        "xms_mirid": instance.identity_resource_id(),
        "imds_tun": "fake",
    });
    Token {
        value: format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        ),
        expires: now + FAKE_LIFETIME,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fake_tokens_name_the_resource_and_are_cached_per_resource() {
        let identity = ManagedIdentity::new(TokenSource::Fake);
        let instance = AzureInstance::example();
        let vault = identity
            .token(&instance, "https://vault.azure.net", None, 1_000)
            .await
            .expect("token");
        let again = identity
            .token(&instance, "https://vault.azure.net", None, 2_000)
            .await
            .expect("token");
        assert_eq!(vault, again);
        let claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(vault.value.split('.').nth(1).expect("claims"))
                .expect("base64"),
        )
        .expect("json");
        assert_eq!(claims["aud"], "https://vault.azure.net");
        assert_eq!(claims["imds_tun"], "fake");
        let management = identity
            .token(&instance, "https://management.azure.com/", None, 1_000)
            .await
            .expect("token");
        assert_ne!(management.value, vault.value);
        assert!(identity.token(&instance, "-rf", None, 1_000).await.is_err());
    }

    #[test]
    fn az_json_gives_the_token_and_its_expiry_and_a_bare_token_is_kept_ten_minutes() {
        let json = r#"{"accessToken":"eyJ.real","expiresOn":"2026-12-01 20:00:00.000000","expires_on":1796160000,"tokenType":"Bearer"}"#;
        assert_eq!(
            from_command_output(json, 1_796_150_000),
            Token {
                value: "eyJ.real".into(),
                expires: 1_796_160_000
            }
        );
        assert_eq!(
            from_command_output("eyJ.bare", 100),
            Token {
                value: "eyJ.bare".into(),
                expires: 700
            }
        );
    }
}
