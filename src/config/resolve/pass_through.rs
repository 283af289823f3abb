//! Settings of `--pass-through RULE` (config key `pass_through`): the rules, checked and
//! distinct, and the timeouts shared with `--upstream`. The interface the real service is
//! reached through is not a setting: it is the kernel's answer at start, before the claim
//! (`crate::app`), filled in there.

use std::time::Duration;

use super::super::ConfigError;
use super::super::layer::Layer;
use super::super::origin::{given, label, number, pick};
use super::upstream::{UPSTREAM_CONNECT_TIMEOUT_MS, UPSTREAM_RESPONSE_TIMEOUT_MS};
use crate::clouds::pass_through::{PassThroughSettings, Rule, Rules};
use crate::http::upstream::UpstreamSettings;

/// At most this many rules.
pub(super) const MAX_RULES: usize = 64;

/// The `--pass-through` rules (the flags' list replaces the file's), or `None`; refused beside
/// `--upstream`, where nothing answers locally to pass around.
pub(super) fn resolve_pass_through(
    file: &Layer,
    flags: &Layer,
) -> Result<Option<PassThroughSettings>, ConfigError> {
    let Some((entries, origin)) = pick(given(&flags.pass_through), given(&file.pass_through))
    else {
        return Ok(None);
    };
    let what = label(origin, "pass_through");
    if pick(flags.upstream.as_ref(), file.upstream.as_ref()).is_some() {
        return Err(ConfigError(format!(
            "{what} cannot be combined with --upstream: with --upstream every request is \
             forwarded already; drop one of them"
        )));
    }
    if entries.len() > MAX_RULES {
        return Err(ConfigError(format!(
            "{what}: {} rules, more than the limit of {MAX_RULES}",
            entries.len()
        )));
    }
    let mut rules: Vec<Rule> = Vec::with_capacity(entries.len());
    for entry in &entries {
        let rule: Rule = entry
            .parse()
            .map_err(|why: String| ConfigError(format!("{what} {entry:?}: {why}")))?;
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    let connect = number(
        pick(
            flags.upstream_connect_timeout_ms,
            file.upstream_connect_timeout_ms,
        ),
        "upstream_connect_timeout_ms",
        50..=60_000,
        "milliseconds",
        UPSTREAM_CONNECT_TIMEOUT_MS,
    )?;
    let response = number(
        pick(
            flags.upstream_response_timeout_ms,
            file.upstream_response_timeout_ms,
        ),
        "upstream_response_timeout_ms",
        50..=300_000,
        "milliseconds",
        UPSTREAM_RESPONSE_TIMEOUT_MS,
    )?;
    Ok(Some(PassThroughSettings {
        rules: Rules::new(rules),
        upstream: UpstreamSettings {
            url: http::Uri::from_static("http://169.254.169.254:80/"),
            token: None,
            connect_timeout: Duration::from_millis(connect),
            response_timeout: Duration::from_millis(response),
            interface: None,
            flag: "--pass-through",
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(rules: &[&str]) -> Layer {
        Layer {
            pass_through: rules.iter().map(|rule| (*rule).to_owned()).collect(),
            ..Layer::default()
        }
    }

    #[test]
    fn rules_are_parsed_deduplicated_and_the_flags_replace_the_file() {
        let file = Layer {
            pass_through: vec!["gce".into()],
            ..Layer::default()
        };
        let settings = resolve_pass_through(&file, &flags(&["azure", "/latest/x/", "azure"]))
            .unwrap()
            .unwrap();
        assert_eq!(
            settings.rules.list(),
            [Rule::Azure, Rule::Prefix("/latest/x/".into())]
        );
        assert_eq!(settings.upstream.flag, "--pass-through");
        let from_file = resolve_pass_through(&file, &Layer::default())
            .unwrap()
            .unwrap();
        assert_eq!(from_file.rules.list(), [Rule::Gce]);
        assert!(
            resolve_pass_through(&Layer::default(), &Layer::default())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_bad_rule_or_upstream_beside_it_is_one_line_naming_the_flag() {
        let error = resolve_pass_through(&Layer::default(), &flags(&["aws"])).unwrap_err();
        assert!(
            error.0.starts_with("--pass-through \"aws\": expected ec2"),
            "{error}"
        );
        let both = Layer {
            upstream: Some("http://10.0.2.2:8080".into()),
            ..flags(&["ec2"])
        };
        let error = resolve_pass_through(&Layer::default(), &both).unwrap_err();
        assert!(
            error
                .0
                .starts_with("--pass-through cannot be combined with --upstream"),
            "{error}"
        );
        let file = Layer {
            pass_through: vec!["/".into()],
            ..Layer::default()
        };
        let error = resolve_pass_through(&file, &Layer::default()).unwrap_err();
        assert!(error.0.starts_with("config: pass_through \"/\""), "{error}");
    }
}
