//! The shared secret that guards non-loopback `--listen` sockets and that an upstream-forwarding
//! instance sends: how it is compared, checked and kept out of logs. Where it comes from (a
//! token file) is the configuration's business.

/// The header a non-loopback listener checks and an upstream-forwarding instance sends.
pub const LISTENER_TOKEN_HEADER: &str = "x-imds-tun-token";

/// Shortest shared secret accepted: long enough that guessing is not an option.
const MIN_TOKEN_LEN: usize = 16;

/// A shared secret read from a file. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedToken(String);

impl std::fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedToken(<redacted>)")
    }
}

impl SharedToken {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True if `candidate` is the secret; the time taken does not depend on where they differ
    /// (both sides are hashed first, so not even the length leaks).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let expected = Sha256::digest(self.0.as_bytes());
        let given = Sha256::digest(candidate);
        expected.ct_eq(&given).into()
    }

    /// Checks the text of a token file: trimmed, long enough, header-safe.
    pub fn parse(text: &str) -> Result<SharedToken, String> {
        let token = text.trim();
        if token.is_empty() {
            return Err(
                "the file is empty; put a secret in it, e.g. `openssl rand -hex 32 > FILE`".into(),
            );
        }
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(
                "the secret must be printable ASCII without spaces (it travels in an HTTP header)"
                    .into(),
            );
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the secret is shorter than {MIN_TOKEN_LEN} characters; make a longer one, e.g. `openssl rand -hex 32 > FILE`"
            ));
        }
        Ok(SharedToken(token.to_owned()))
    }
}
