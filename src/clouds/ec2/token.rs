//! IMDSv2 session tokens: stateless, so any number of them costs no memory.
//!
//! A token is `base64url(expiry ‖ nonce ‖ tag)`: the expiry as big-endian Unix seconds (8
//! bytes), 16 random bytes, and the first 16 bytes of HMAC-SHA256 over both under a key drawn
//! once per process. Checking one is a decode, one HMAC and a compare: O(1), no lock, no table
//! that a client could fill. Tokens die with the process (the key is never stored), which
//! matches EC2, where a token does not survive a stop/start either.
//!
//! `imds-tun ctl tokens expire` ends every token issued so far at once by drawing a new key
//! ([`TokenMint::expire_all`]): no earlier token verifies any more, and new ones do, with no
//! list of tokens to keep.

use hmac::digest::KeyInit;
use hmac::digest::generic_array::GenericArray;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

type HmacSha256 = Hmac<Sha256>;

/// The TTL range EC2 accepts in `X-aws-ec2-metadata-token-ttl-seconds`.
pub const TTL_RANGE: std::ops::RangeInclusive<u32> = 1..=21600;

const EXPIRY_LEN: usize = 8;
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 16;
const TOKEN_LEN: usize = EXPIRY_LEN + NONCE_LEN + TAG_LEN;
/// HMAC-SHA256 keys are padded to the 64-byte block; a full block wastes nothing.
const KEY_LEN: usize = 64;

/// Why a presented token is refused (all are answered 401; the reason is for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    /// Not base64url of the right length.
    Malformed,
    /// Not made with this process's key, or altered.
    BadSignature,
    /// Made here, but its TTL has run out.
    Expired,
}

/// Issues and checks tokens under one per-process key.
pub struct TokenMint {
    /// Replaced, never changed in place, by [`TokenMint::expire_all`].
    key: std::sync::RwLock<[u8; KEY_LEN]>,
    /// Tokens issued so far (`ctl status`, the metrics).
    issued: std::sync::atomic::AtomicU64,
    /// Times every token was expired at once (`ctl tokens expire`).
    expirations: std::sync::atomic::AtomicU64,
}

/// The key must never be printed.
impl std::fmt::Debug for TokenMint {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TokenMint { key: <redacted> }")
    }
}

impl TokenMint {
    /// A mint with a fresh random key.
    pub fn new() -> TokenMint {
        TokenMint::with_key(fresh_key())
    }

    /// A mint with a given key (tests; or to share tokens between instances in one process).
    pub fn with_key(key: [u8; KEY_LEN]) -> TokenMint {
        TokenMint {
            key: std::sync::RwLock::new(key),
            issued: std::sync::atomic::AtomicU64::new(0),
            expirations: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many tokens this mint has issued.
    pub fn issued(&self) -> u64 {
        self.issued.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many times [`TokenMint::expire_all`] ended every token.
    pub fn expirations(&self) -> u64 {
        self.expirations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Ends every token issued so far (they answer 401 from now on, as expired tokens do);
    /// tokens issued from now on work. A new key: an old token's tag no longer verifies.
    pub fn expire_all(&self) {
        let key = fresh_key();
        *self
            .key
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = key;
        self.expirations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn mac(&self) -> HmacSha256 {
        let key = self
            .key
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        <HmacSha256 as KeyInit>::new(GenericArray::from_slice(&*key))
    }

    /// A token valid from `now_unix` for `ttl_seconds`.
    pub fn issue(&self, now_unix: i64, ttl_seconds: u32) -> String {
        let expiry = now_unix.saturating_add(i64::from(ttl_seconds));
        self.issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_LEN];
        if getrandom::fill(&mut nonce).is_err() {
            // Uniqueness is all a nonce needs here; the HMAC carries the security.
            nonce[..8].copy_from_slice(&now_unix.to_be_bytes());
        }
        let mut bytes = Vec::with_capacity(TOKEN_LEN);
        bytes.extend_from_slice(&expiry.to_be_bytes());
        bytes.extend_from_slice(&nonce);
        let mut mac = self.mac();
        mac.update(&bytes);
        let tag = mac.finalize().into_bytes();
        bytes.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Accepts a token this mint issued whose expiry is still ahead of `now_unix`.
    pub fn check(&self, token: &str, now_unix: i64) -> Result<(), TokenRejection> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| TokenRejection::Malformed)?;
        if bytes.len() != TOKEN_LEN {
            return Err(TokenRejection::Malformed);
        }
        let (signed, tag) = bytes.split_at(EXPIRY_LEN + NONCE_LEN);
        let mut mac = self.mac();
        mac.update(signed);
        // Constant-time comparison of the truncated tag.
        mac.verify_truncated_left(tag)
            .map_err(|_| TokenRejection::BadSignature)?;
        let mut expiry = [0u8; EXPIRY_LEN];
        expiry.copy_from_slice(&signed[..EXPIRY_LEN]);
        if now_unix < i64::from_be_bytes(expiry) {
            Ok(())
        } else {
            Err(TokenRejection::Expired)
        }
    }
}

impl Default for TokenMint {
    fn default() -> TokenMint {
        TokenMint::new()
    }
}

/// Parses `X-aws-ec2-metadata-token-ttl-seconds`: plain decimal digits within [`TTL_RANGE`].
pub fn parse_ttl(value: &[u8]) -> Option<u32> {
    let digits_only =
        !value.is_empty() && value.len() <= 10 && value.iter().all(u8::is_ascii_digit);
    if !digits_only {
        return None;
    }
    let ttl: u32 = std::str::from_utf8(value).ok()?.parse().ok()?;
    TTL_RANGE.contains(&ttl).then_some(ttl)
}

/// A key from the OS's randomness.
fn fresh_key() -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    if getrandom::fill(&mut key).is_err() {
        // Without OS randomness, a key from the clock and the process still keeps tokens
        // from other runs out; it is guessable by someone on the host, who could read the
        // metadata without a token anyway.
        tracing::warn!("no OS randomness; IMDSv2 token key derived from clock and pid");
        key = fallback_key();
    }
    key
}

fn fallback_key() -> [u8; KEY_LEN] {
    use sha2::Digest;
    let mut key = [0u8; KEY_LEN];
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    for (index, half) in key.chunks_mut(32).enumerate() {
        let mut hasher = Sha256::new();
        hasher.update(now.to_le_bytes());
        hasher.update(std::process::id().to_le_bytes());
        hasher.update(index.to_le_bytes());
        let stack_address = std::ptr::addr_of!(hasher) as usize;
        hasher.update(stack_address.to_le_bytes());
        half.copy_from_slice(&hasher.finalize());
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn issued_token_is_valid_until_its_ttl_runs_out() {
        let mint = TokenMint::new();
        let token = mint.issue(NOW, 60);
        assert_eq!(mint.check(&token, NOW), Ok(()));
        assert_eq!(mint.check(&token, NOW + 59), Ok(()));
        assert_eq!(mint.check(&token, NOW + 60), Err(TokenRejection::Expired));
    }

    #[test]
    fn expire_all_ends_every_earlier_token_and_new_ones_work() {
        let mint = TokenMint::new();
        let before = [mint.issue(NOW, 21600), mint.issue(NOW, 60)];
        mint.expire_all();
        for token in &before {
            assert!(mint.check(token, NOW).is_err(), "{token}");
        }
        let after = mint.issue(NOW, 60);
        assert_eq!(mint.check(&after, NOW), Ok(()));
        assert_eq!(mint.expirations(), 1);
        assert_eq!(mint.issued(), 3);
    }

    #[test]
    fn tampered_token_is_rejected() {
        let mint = TokenMint::new();
        let token = mint.issue(NOW, 60);
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        // Push the expiry far into the future without re-signing.
        bytes[0] ^= 0x01;
        let forged = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(mint.check(&forged, NOW), Err(TokenRejection::BadSignature));
    }

    #[test]
    fn token_from_another_key_is_rejected() {
        let token = TokenMint::with_key([1; KEY_LEN]).issue(NOW, 60);
        assert_eq!(
            TokenMint::with_key([2; KEY_LEN]).check(&token, NOW),
            Err(TokenRejection::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let mint = TokenMint::new();
        for garbage in ["", "not a token", "AAAA", "!!!!", &"A".repeat(4096)] {
            assert_eq!(mint.check(garbage, NOW), Err(TokenRejection::Malformed));
        }
    }

    #[test]
    fn tokens_are_unique() {
        let mint = TokenMint::new();
        assert_ne!(mint.issue(NOW, 60), mint.issue(NOW, 60));
    }

    #[test]
    fn ttl_must_be_plain_digits_within_range() {
        assert_eq!(parse_ttl(b"1"), Some(1));
        assert_eq!(parse_ttl(b"21600"), Some(21600));
        assert_eq!(parse_ttl(b"0"), None);
        assert_eq!(parse_ttl(b"21601"), None);
        assert_eq!(parse_ttl(b"+60"), None);
        assert_eq!(parse_ttl(b"-1"), None);
        assert_eq!(parse_ttl(b" 60"), None);
        assert_eq!(parse_ttl(b"6O"), None);
        assert_eq!(parse_ttl(b""), None);
        assert_eq!(parse_ttl(b"99999999999999999999"), None);
    }

    #[test]
    fn debug_hides_the_key() {
        let shown = format!("{:?}", TokenMint::with_key([7; KEY_LEN]));
        assert!(!shown.contains('7'));
    }
}
