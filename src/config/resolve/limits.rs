//! What one request may cost and how far a token reply travels: `http`'s own [`Limits`],
//! resolved straight from the flags and the file (`--header-timeout`, `--max-header-bytes`,
//! `--max-path-length`, `--hop-limit`). Why each limit exists and why its default: the fields
//! of [`Limits`] and docs/hardening.md.

use std::time::Duration;

use super::super::ConfigError;
use super::super::layer::Layer;
use super::super::origin::number_of;
use crate::http::Limits;

pub(super) fn resolve_limits(file: &Layer, flags: &Layer) -> Result<Limits, ConfigError> {
    Ok(Limits {
        header_timeout: Duration::from_secs(number_of!(
            file,
            flags,
            header_timeout,
            1..=3600,
            "seconds",
            Limits::DEFAULT_HEADER_TIMEOUT_SECONDS
        )?),
        // hyper's read buffer cannot be smaller than 8 KiB.
        max_header_bytes: size(number_of!(
            file,
            flags,
            max_header_bytes,
            8192..=1024 * 1024,
            "bytes",
            Limits::DEFAULT_MAX_HEADER_BYTES
        )?),
        max_path_length: size(number_of!(
            file,
            flags,
            max_path_length,
            16..=65_535,
            "bytes",
            Limits::DEFAULT_MAX_PATH_LENGTH
        )?),
        // EC2 accepts 1-64 for HttpPutResponseHopLimit.
        put_reply_hop_limit: u8::try_from(number_of!(
            file,
            flags,
            hop_limit,
            1..=64,
            "hops",
            u64::from(Limits::DEFAULT_PUT_REPLY_HOP_LIMIT)
        )?)
        .unwrap_or(u8::MAX),
    })
}

/// A validated size (its range is far below `usize::MAX` on every target).
fn size(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_bad_values_name_their_field() {
        let file = Layer {
            header_timeout: Some(30),
            hop_limit: Some(5),
            ..Layer::default()
        };
        let flags = Layer {
            header_timeout: Some(2),
            ..Layer::default()
        };
        let limits = resolve_limits(&file, &flags).expect("valid");
        assert_eq!(limits.header_timeout, Duration::from_secs(2));
        assert_eq!(limits.put_reply_hop_limit, 5);
        assert_eq!(limits.max_path_length, 1024, "the default");

        let small = Layer {
            max_header_bytes: Some(100),
            ..Layer::default()
        };
        let error = resolve_limits(&small, &Layer::default()).expect_err("too small");
        assert!(
            error
                .to_string()
                .starts_with("config: max_header_bytes 100"),
            "{error}"
        );
    }
}
