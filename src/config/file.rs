//! The JSON configuration file: its schema and how it is read.
//!
//! One flat object whose keys are the long flag names with `_` for `-` (`instance_id` for
//! `--instance-id`), so the file and the command line describe the same settings. Every key is
//! optional; unknown keys are an error so a typo is reported instead of silently ignored. The
//! same struct carries the command-line layer (see `crate::cli`), which keeps precedence a
//! field-by-field choice between two values of one type.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use super::named_file::{self, Opener};

/// One layer of settings (the file, or the flags); `None` means "not given here".
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    // Service.
    pub listen: Option<Vec<String>>,
    pub no_tun: Option<bool>,
    pub tun_name: Option<String>,
    pub mtu: Option<u64>,
    pub max_connections: Option<u64>,
    pub shutdown_grace_seconds: Option<u64>,
    pub imdsv2: Option<String>,
    pub credentials_lifetime_seconds: Option<u64>,
    // Instance identity.
    pub instance_id: Option<String>,
    pub reservation_id: Option<String>,
    pub ami_id: Option<String>,
    pub instance_type: Option<String>,
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub availability_zone: Option<String>,
    pub availability_zone_id: Option<String>,
    // Network.
    pub hostname: Option<String>,
    pub local_hostname: Option<String>,
    pub local_ipv4: Option<String>,
    pub public_ipv4: Option<String>,
    pub public_hostname: Option<String>,
    pub mac: Option<String>,
    pub security_groups: Option<Vec<String>>,
    // IAM, keys, tags, user data.
    pub role_name: Option<String>,
    pub public_key: Option<PublicKeyLayer>,
    pub tags: Option<BTreeMap<String, String>>,
    pub user_data: Option<String>,
    pub user_data_file: Option<PathBuf>,
    pub max_user_data_bytes: Option<u64>,
    // Credentials (docs/credentials.md).
    pub role_arn: Option<String>,
    pub profile: Option<String>,
    pub role_session_name: Option<String>,
    pub external_id: Option<String>,
    pub duration_seconds: Option<u64>,
    pub mfa_serial: Option<String>,
    /// A one-time code: from the command line or the terminal only, never from a file.
    #[serde(skip)]
    pub mfa_code: Option<crate::credentials::Secret>,
    pub mock_credentials: Option<bool>,
    pub refresh_margin_seconds: Option<u64>,
    /// First retry delay after a failed refresh (tests make it small).
    pub retry_base_ms: Option<u64>,
    /// Test-only: cap every set's lifetime so expiry can be observed in seconds.
    pub credentials_max_lifetime_seconds: Option<u64>,
    // Upstream proxy mode and listener protection (see `config::proxy`).
    pub upstream: Option<String>,
    pub upstream_token_file: Option<PathBuf>,
    pub upstream_connect_timeout_ms: Option<u64>,
    pub upstream_response_timeout_ms: Option<u64>,
    pub listen_token_file: Option<PathBuf>,
    pub insecure_listen_without_token: Option<bool>,
    // Hardening (see `config::hardening`).
    pub user: Option<String>,
    pub allow_from: Option<Vec<String>>,
    pub header_timeout_seconds: Option<u64>,
    pub max_header_bytes: Option<u64>,
    pub max_path_length: Option<u64>,
}

/// `public-keys/0`: the key pair the instance was launched with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyLayer {
    pub name: String,
    pub openssh_key: String,
}

/// Reads and parses `path` with `opener`'s rights; any failure is one line naming the file
/// (and line/column for JSON).
pub fn load(path: &Path, opener: &Opener) -> Result<ConfigLayer, ConfigError> {
    let bytes = named_file::read(path, "--config", opener, named_file::CONFIG_CAP)
        .map_err(|error| ConfigError(error.to_string()))?;
    parse(&bytes).map_err(|error| ConfigError(format!("--config {}: {error}", path.display())))
}

/// Parses the JSON text of a config file; serde's message names the field and the position.
pub fn parse(bytes: &[u8]) -> Result<ConfigLayer, serde_json::Error> {
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_is_an_error_naming_it() {
        let error = parse(br#"{"instance_idd": "i-0123abcd"}"#).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("instance_idd"), "{message}");
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn mfa_code_cannot_come_from_a_file() {
        assert!(parse(br#"{"mfa_code": "123456"}"#).is_err());
        let layer = parse(
            br#"{"role_arn": "arn:aws:iam::123456789012:role/app", "refresh_margin_seconds": 600}"#,
        )
        .unwrap();
        assert_eq!(layer.refresh_margin_seconds, Some(600));
    }

    #[test]
    fn example_config_in_docs_parses() {
        let text = include_bytes!("../../docs/example-config.json");
        let layer = parse(text).unwrap();
        assert!(layer.instance_id.is_some());
        assert!(layer.tags.is_some_and(|tags| !tags.is_empty()));
    }

    #[test]
    fn unreadable_file_error_names_the_path() {
        let error = load(Path::new("/nonexistent/imds.json"), &Opener::OwnRights).unwrap_err();
        assert!(error.0.contains("/nonexistent/imds.json"), "{}", error.0);
    }

    #[test]
    fn invalid_json_error_names_path_and_position() {
        let dir = std::env::temp_dir().join(format!("imds-tun-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.json");
        std::fs::write(&path, "{\n  \"mtu\": \"big\"\n}").unwrap();
        let error = load(&path, &Opener::OwnRights).unwrap_err();
        assert!(error.0.contains("bad.json"), "{}", error.0);
        assert!(error.0.contains("line 2"), "{}", error.0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dev_zero_as_config_is_refused_at_once() {
        let error = load(Path::new("/dev/zero"), &Opener::OwnRights).unwrap_err();
        assert!(
            error
                .0
                .contains("--config /dev/zero: is a character device, not a regular file"),
            "{}",
            error.0
        );
    }
}
