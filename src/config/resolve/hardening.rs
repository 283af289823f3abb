//! Who may connect (`--allow-from`, on every path a client arrives by) and whom to serve as
//! (`--user`). The request limits are `http`'s own settings (`limits.rs`); why each rule exists
//! is in `docs/hardening.md`.

use super::super::ConfigError;
use super::super::layer::Layer;
use super::super::origin::{given, label, pick};
use crate::cidr::IpNet;

/// `--user`: serve as this account once the TUN and sockets exist.
pub(super) fn resolve_user(file: &Layer, flags: &Layer) -> Result<Option<String>, ConfigError> {
    pick(flags.user.clone(), file.user.clone())
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
        .transpose()
}

/// `--allow-from`: the client networks that may connect; empty allows all.
pub(super) fn resolve_allow_from(file: &Layer, flags: &Layer) -> Result<Vec<IpNet>, ConfigError> {
    match pick(given(&flags.allow_from), given(&file.allow_from)) {
        None => Ok(Vec::new()),
        Some((blocks, origin)) => blocks
            .iter()
            .map(|text| {
                crate::cidr::parse(text).map_err(|why| {
                    ConfigError(format!("{} {text:?}: {why}", label(origin, "allow_from")))
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cidr::parse;

    #[test]
    fn flags_override_the_file_and_bad_blocks_name_their_field() {
        let file = Layer {
            allow_from: vec!["10.0.0.0/8".into()],
            ..Layer::default()
        };
        assert_eq!(
            resolve_allow_from(&file, &Layer::default()).expect("valid"),
            vec![parse("10.0.0.0/8").expect("cidr")]
        );
        let flags = Layer {
            allow_from: vec!["192.0.2.0/24".into()],
            ..Layer::default()
        };
        assert_eq!(
            resolve_allow_from(&file, &flags).expect("valid"),
            vec![parse("192.0.2.0/24").expect("cidr")]
        );
        let bad = Layer {
            allow_from: vec!["10.0.0.0/40".into()],
            ..Layer::default()
        };
        let error = resolve_allow_from(&Layer::default(), &bad).expect_err("bad prefix");
        assert!(
            error
                .to_string()
                .starts_with("--allow-from \"10.0.0.0/40\""),
            "{error}"
        );
    }

    #[test]
    fn an_empty_user_is_refused_with_its_field() {
        let flags = Layer {
            user: Some(" ".into()),
            ..Layer::default()
        };
        let error = resolve_user(&Layer::default(), &flags).expect_err("empty");
        assert_eq!(error.to_string(), "--user: expected a user name");
    }
}
