//! Limits and access rules that make imds-tun safe to expose to every local process:
//! who may connect (`--allow-from`), whom to serve as (`--user`), and how much a request may
//! cost (`--header-timeout`, `--max-header-bytes`, `--max-path-length`).
//!
//! Why each exists is in `docs/hardening.md`; the defaults are generous for real SDKs (whose
//! requests are a few hundred bytes) and small for anything else.

use std::net::IpAddr;
use std::time::Duration;

pub use crate::cidr::{IpNet, allow_from_admits};

use super::super::ConfigError;
use super::super::layer::Layer;
use super::super::origin::{given, label, number, pick};

/// The request limits' defaults belong to the HTTP layer that enforces them.
pub const HEADER_TIMEOUT_SECONDS: u64 = crate::http::Limits::DEFAULT_HEADER_TIMEOUT_SECONDS;
pub const MAX_HEADER_BYTES: u64 = crate::http::Limits::DEFAULT_MAX_HEADER_BYTES;
pub const MAX_PATH_LENGTH: u64 = crate::http::Limits::DEFAULT_MAX_PATH_LENGTH;

/// Hardening settings, resolved.
#[derive(Debug, Clone)]
pub struct HardeningSettings {
    /// Serve as this user once the TUN and sockets exist (else the user behind sudo).
    pub user: Option<String>,
    /// Source networks allowed to connect; empty: everyone who can reach the address.
    pub allow_from: Vec<IpNet>,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_path_length: usize,
}

impl Default for HardeningSettings {
    fn default() -> Self {
        HardeningSettings {
            user: None,
            allow_from: Vec::new(),
            header_timeout: Duration::from_secs(HEADER_TIMEOUT_SECONDS),
            max_header_bytes: MAX_HEADER_BYTES as usize,
            max_path_length: MAX_PATH_LENGTH as usize,
        }
    }
}

impl HardeningSettings {
    /// Whether a client at `address` may connect.
    pub fn allows(&self, address: IpAddr) -> bool {
        allow_from_admits(&self.allow_from, address)
    }
}

pub fn resolve(file: &Layer, flags: &Layer) -> Result<HardeningSettings, ConfigError> {
    let user = pick(flags.user.clone(), file.user.clone())
        .map(|(name, origin)| {
            if name.trim().is_empty() {
                Err(ConfigError(format!(
                    "{}: expected a user name",
                    label(origin, "user")
                )))
            } else {
                Ok(name)
            }
        })
        .transpose()?;
    let allow_from = match pick(given(&flags.allow_from), given(&file.allow_from)) {
        None => Vec::new(),
        Some((blocks, origin)) => blocks
            .iter()
            .map(|text| {
                crate::cidr::parse(text).map_err(|why| {
                    ConfigError(format!("{} {text:?}: {why}", label(origin, "allow_from")))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let header_timeout = number(
        pick(flags.header_timeout, file.header_timeout),
        "header_timeout",
        1..=3600,
        "seconds",
        HEADER_TIMEOUT_SECONDS,
    )?;
    // hyper's read buffer cannot be smaller than 8 KiB.
    let max_header_bytes = number(
        pick(flags.max_header_bytes, file.max_header_bytes),
        "max_header_bytes",
        8192..=1024 * 1024,
        "bytes",
        MAX_HEADER_BYTES,
    )?;
    let max_path_length = number(
        pick(flags.max_path_length, file.max_path_length),
        "max_path_length",
        16..=65_535,
        "bytes",
        MAX_PATH_LENGTH,
    )?;
    Ok(HardeningSettings {
        user,
        allow_from,
        header_timeout: Duration::from_secs(header_timeout),
        max_header_bytes: max_header_bytes as usize,
        max_path_length: max_path_length as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cidr::{contains, parse};

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn cidr_blocks_contain_their_addresses_only() {
        let block = parse("10.0.2.0/24").expect("cidr");
        assert!(contains(&block, ip("10.0.2.15")));
        assert!(!contains(&block, ip("10.0.3.1")));
        assert!(contains(&block, ip("::ffff:10.0.2.7")), "v4-mapped v6");
        assert!(!contains(&block, ip("fd00::1")));
        let host = parse("169.254.169.253").expect("bare address");
        assert!(contains(&host, ip("169.254.169.253")));
        assert!(!contains(&host, ip("169.254.169.252")));
        assert!(contains(&parse("0.0.0.0/0").expect("all"), ip("192.0.2.1")));
        assert!(contains(&parse("fd00::/8").expect("v6"), ip("fd12::1")));
    }

    #[test]
    fn malformed_cidr_blocks_are_refused() {
        for text in [
            "10.0.0.0/33",
            "10.0.0/8",
            "fd00::/129",
            "x",
            "10.0.0.0/-1",
            "",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn no_allow_list_allows_everyone() {
        assert!(HardeningSettings::default().allows(ip("192.0.2.1")));
        assert!(allow_from_admits(&[], ip("fd00::1")));
    }

    #[test]
    fn an_allow_list_admits_only_clients_inside_one_of_its_blocks() {
        let blocks = [
            parse("10.0.2.0/24").expect("cidr"),
            parse("169.254.169.253").expect("bare address"),
        ];
        assert!(allow_from_admits(&blocks, ip("10.0.2.15")));
        assert!(allow_from_admits(&blocks, ip("169.254.169.253")));
        assert!(!allow_from_admits(&blocks, ip("10.0.3.1")));
        assert!(!allow_from_admits(&blocks, ip("169.254.169.252")));
    }

    #[test]
    fn flags_override_the_file_and_bad_values_name_their_field() {
        let file = Layer {
            header_timeout: Some(30),
            allow_from: vec!["10.0.0.0/8".into()],
            ..Layer::default()
        };
        let flags = Layer {
            header_timeout: Some(2),
            ..Layer::default()
        };
        let settings = resolve(&file, &flags).expect("valid");
        assert_eq!(settings.header_timeout, Duration::from_secs(2));
        assert_eq!(
            settings.allow_from,
            vec![parse("10.0.0.0/8").expect("cidr")]
        );

        let bad = Layer {
            allow_from: vec!["10.0.0.0/40".into()],
            ..Layer::default()
        };
        let error = resolve(&Layer::default(), &bad).expect_err("bad prefix");
        assert!(
            error
                .to_string()
                .starts_with("--allow-from \"10.0.0.0/40\""),
            "{error}"
        );
        let small = Layer {
            max_header_bytes: Some(100),
            ..Layer::default()
        };
        let error = resolve(&small, &Layer::default()).expect_err("too small");
        assert!(
            error
                .to_string()
                .starts_with("config: max_header_bytes 100"),
            "{error}"
        );
    }
}
