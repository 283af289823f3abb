//! The Prometheus endpoint (`--metrics`): its address, and what a scraper there must send.
//!
//! Loopback only, unless `--listen-token-file` is given: then a non-loopback endpoint requires
//! the same `X-Imds-Tun-Token` as the `--listen` sockets. `--insecure-listen-without-token`
//! does not open it: the metrics name the roles served and who is refused, and a scraper can
//! send a header as easily as it can be pointed at an address.

use std::sync::Arc;

use super::super::layer::Layer;
use super::super::origin::{label, pick};
use super::super::{ConfigError, MetricsSettings};
use super::upstream::ListenerProtection;
use crate::http::Access;

/// `--metrics`, or none; refused on a non-loopback address without a listen token.
pub(super) fn resolve_metrics(
    file: &Layer,
    flags: &Layer,
    protection: &ListenerProtection,
) -> Result<Option<MetricsSettings>, ConfigError> {
    let Some((address, origin)) = pick(flags.metrics, file.metrics) else {
        return Ok(None);
    };
    if address.ip().is_loopback() {
        return Ok(Some(MetricsSettings {
            address,
            access: Access::Open,
        }));
    }
    match &protection.listen_token {
        Some(token) => Ok(Some(MetricsSettings {
            address,
            access: Access::Token(Arc::new(token.clone())),
        })),
        None => Err(ConfigError(format!(
            "{} {address} is not a loopback address: serve the metrics on 127.0.0.1 or \
                 [::1], or require a shared secret with --listen-token-file FILE (scrapers send \
                 it as X-Imds-Tun-Token)",
            label(origin, "metrics")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::shared_token::SharedToken;

    fn layer(address: &str) -> Layer {
        Layer {
            metrics: Some(address.parse().expect("an address")),
            ..Layer::default()
        }
    }

    fn protected() -> ListenerProtection {
        ListenerProtection {
            listen_token: Some(SharedToken::parse("0123456789abcdef0123").expect("a secret")),
            insecure_listen_without_token: false,
        }
    }

    #[test]
    fn no_metrics_unless_asked() {
        let none = resolve_metrics(&Layer::default(), &Layer::default(), &protected());
        assert!(none.expect("no error").is_none());
    }

    #[test]
    fn loopback_needs_no_token_and_the_flag_beats_the_file() {
        let metrics = resolve_metrics(
            &layer("127.0.0.1:9000"),
            &layer("[::1]:9464"),
            &ListenerProtection::default(),
        )
        .expect("loopback is fine")
        .expect("metrics");
        assert_eq!(metrics.address, "[::1]:9464".parse().expect("an address"));
        assert!(matches!(metrics.access, Access::Open));
    }

    #[test]
    fn another_address_needs_the_listen_token_even_with_the_insecure_opt_out() {
        let insecure = ListenerProtection {
            listen_token: None,
            insecure_listen_without_token: true,
        };
        let error = resolve_metrics(&layer("0.0.0.0:9464"), &Layer::default(), &insecure)
            .expect_err("refused");
        assert!(
            error
                .0
                .starts_with("config: metrics 0.0.0.0:9464 is not a loopback address"),
            "{error}"
        );
        let error = resolve_metrics(&Layer::default(), &layer("10.0.0.1:9464"), &insecure)
            .expect_err("refused");
        assert!(error.0.starts_with("--metrics 10.0.0.1:9464"), "{error}");
        let metrics = resolve_metrics(&Layer::default(), &layer("0.0.0.0:9464"), &protected())
            .expect("a token guards it")
            .expect("metrics");
        assert!(matches!(metrics.access, Access::Token(_)));
    }

    #[test]
    fn the_file_key_is_one_address_said_as_the_flag_says_it() {
        let parsed: Layer =
            serde_json::from_str(r#"{"metrics": "127.0.0.1:9464"}"#).expect("a layer");
        assert_eq!(parsed.metrics, Some("127.0.0.1:9464".parse().expect("ok")));
        let error =
            serde_json::from_str::<Layer>(r#"{"metrics": "9464"}"#).expect_err("not an address");
        assert!(error.to_string().contains("ADDR:PORT"), "{error}");
    }
}
