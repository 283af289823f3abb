//! Which requests `--pass-through` sends to the real metadata service: the rules as the user
//! wrote them, and the one question asked of them per request. Plain data and functions.
//!
//! A cloud's word (`ec2`, `gce`, `azure`) passes that cloud's metadata paths except the ones
//! that carry the real instance's credentials, which stay with imds-tun (so `--caller-role`
//! and refusals keep working): EC2's `iam/security-credentials/`, `iam/info` and
//! `identity-credentials/`, GCE's `service-accounts/`, Azure's `/metadata/identity`. Passing
//! credentials takes a prefix rule that names them (`--pass-through
//! /latest/meta-data/iam/`): the user wrote it, so the user meant it.
//!
//! What never passes, whatever the rules: the IMDSv2 token endpoint (clients get their tokens
//! from imds-tun, which holds its own with the real service), and a path the real service might
//! read differently from these rules (`//`, `.` or `..` segments, percent-escapes, a
//! backslash), which could reach a credentials path past an exclusion; such a request is
//! answered locally.

use std::fmt;
use std::str::FromStr;

/// The longest prefix rule accepted, in bytes.
pub const MAX_PREFIX_BYTES: usize = 256;

/// One `--pass-through` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `ec2`: EC2 paths (`/latest/...`, `/YYYY-MM-DD/...`) except credentials.
    Ec2,
    /// `gce`: `/computeMetadata/...` except `service-accounts/`.
    Gce,
    /// `azure`: `/metadata/...` except `/metadata/identity`.
    Azure,
    /// A path prefix starting with `/`: every request whose path starts with it.
    Prefix(String),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Ec2 => f.write_str("ec2"),
            Rule::Gce => f.write_str("gce"),
            Rule::Azure => f.write_str("azure"),
            Rule::Prefix(prefix) => f.write_str(prefix),
        }
    }
}

impl FromStr for Rule {
    type Err = String;

    fn from_str(text: &str) -> Result<Rule, String> {
        match text {
            "ec2" => return Ok(Rule::Ec2),
            "gce" => return Ok(Rule::Gce),
            "azure" => return Ok(Rule::Azure),
            _ => {}
        }
        if !text.starts_with('/') {
            return Err(
                "expected ec2, gce, azure, or a path prefix starting with / (e.g. \
                 /latest/meta-data/placement/)"
                    .into(),
            );
        }
        if text.len() > MAX_PREFIX_BYTES {
            return Err(format!(
                "a prefix of at most {MAX_PREFIX_BYTES} bytes is expected"
            ));
        }
        if text.bytes().any(|byte| !byte.is_ascii_graphic()) || text.contains(['?', '#']) {
            return Err(
                "a path prefix is printable ASCII without spaces, `?` or `#` (the query is not \
                 part of it)"
                    .into(),
            );
        }
        if !is_plain(text) {
            return Err(
                "a path prefix has no `//`, `.` or `..` segments, percent-escapes or `\\`: \
                 requests with those are never passed, so it would match nothing"
                    .into(),
            );
        }
        if text == "/" {
            return Err(
                "`/` would pass every request, role credentials included; name the paths \
                 (e.g. ec2, or /latest/meta-data/placement/)"
                    .into(),
            );
        }
        Ok(Rule::Prefix(text.to_owned()))
    }
}

/// Which protocol a passed request speaks, which decides what is added and removed on its way
/// (EC2: the client's token checked here and replaced by imds-tun's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// EC2's (any path that is not GCE's or Azure's).
    Ec2,
    /// GCE's (`/computeMetadata/`).
    Gce,
    /// Azure's (`/metadata/`).
    Azure,
}

impl Protocol {
    /// The protocol of a request for `path`.
    pub fn of(path: &str) -> Protocol {
        if starts_with_ignoring_case(path, "/computeMetadata/") {
            Protocol::Gce
        } else if starts_with_ignoring_case(path, "/metadata/") {
            Protocol::Azure
        } else {
            Protocol::Ec2
        }
    }
}

/// The rules of a run, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// The rules, as given.
    pub fn new(rules: Vec<Rule>) -> Rules {
        Rules { rules }
    }

    /// The rules, as given.
    pub fn list(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule that passes a request for `path` (without its query), if one does.
    pub fn passing(&self, path: &str) -> Option<&Rule> {
        if !is_plain(path) || is_token_endpoint(path) {
            return None;
        }
        self.rules.iter().find(|rule| match rule {
            Rule::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Rule::Ec2 => is_ec2_path(path) && !is_ec2_credentials(path),
            Rule::Gce => {
                starts_with_ignoring_case(path, "/computeMetadata/")
                    && !contains_ignoring_case(path, "/service-accounts")
            }
            Rule::Azure => {
                starts_with_ignoring_case(path, "/metadata/")
                    && !starts_with_ignoring_case(path, "/metadata/identity")
            }
        })
    }
}

/// No empty, `.` or `..` segment, no percent-escape, no backslash: a path every server reads
/// the same way.
fn is_plain(path: &str) -> bool {
    if path.contains(['%', '\\']) {
        return false;
    }
    let Some(inner) = path.strip_prefix('/') else {
        return false;
    };
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    inner.is_empty()
        || inner
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// `/VERSION/api/token`: where IMDSv2 tokens are issued, always imds-tun's own.
fn is_token_endpoint(path: &str) -> bool {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let mut segments = trimmed.trim_start_matches('/').split('/');
    let _version = segments.next();
    matches!(
        (segments.next(), segments.next(), segments.next()),
        (Some(api), Some(token), None)
            if api.eq_ignore_ascii_case("api") && token.eq_ignore_ascii_case("token")
    )
}

/// `/latest/...` or `/YYYY-MM-DD/...`: EC2's versions.
fn is_ec2_path(path: &str) -> bool {
    let Some(version) = path.trim_start_matches('/').split('/').next() else {
        return false;
    };
    let dated = version.len() == 10
        && version.bytes().enumerate().all(|(at, byte)| match at {
            4 | 7 => byte == b'-',
            _ => byte.is_ascii_digit(),
        });
    version == "latest" || dated
}

/// Under `meta-data/` of any version: `iam/security-credentials`, `iam/info`,
/// `identity-credentials`; and the listings that lead to them (`meta-data/iam/` itself lists
/// `info` and `security-credentials/`, which imds-tun answers).
fn is_ec2_credentials(path: &str) -> bool {
    let rest = path
        .trim_start_matches('/')
        .split_once('/')
        .map_or("", |(_, rest)| rest);
    let rest = rest.to_ascii_lowercase();
    rest == "meta-data/iam"
        || rest.starts_with("meta-data/iam/")
        || rest.starts_with("meta-data/identity-credentials")
}

fn starts_with_ignoring_case(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

fn contains_ignoring_case(text: &str, needle: &str) -> bool {
    text.to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(words: &[&str]) -> Rules {
        Rules::new(words.iter().map(|word| word.parse().unwrap()).collect())
    }

    #[test]
    fn words_and_prefixes_parse_and_bad_ones_say_why() {
        assert_eq!("ec2".parse(), Ok(Rule::Ec2));
        assert_eq!("gce".parse(), Ok(Rule::Gce));
        assert_eq!("azure".parse(), Ok(Rule::Azure));
        assert_eq!(
            "/latest/meta-data/placement/".parse(),
            Ok(Rule::Prefix("/latest/meta-data/placement/".into()))
        );
        for bad in [
            "EC2",
            "latest/",
            "/",
            "/a b",
            "/a?x=1",
            "/latest//meta-data",
            "/latest/../x",
            "/latest/%69am",
            "",
        ] {
            assert!(bad.parse::<Rule>().is_err(), "{bad:?}");
        }
        assert!(
            format!("/{}", "a".repeat(MAX_PREFIX_BYTES))
                .parse::<Rule>()
                .is_err()
        );
    }

    #[test]
    fn ec2_passes_every_ec2_path_except_credentials() {
        let ec2 = rules(&["ec2"]);
        for passed in [
            "/latest/meta-data/instance-id",
            "/latest/meta-data/placement/availability-zone",
            "/latest/meta-data/tags/instance/Name",
            "/latest/dynamic/instance-identity/document",
            "/latest/user-data",
            "/2021-07-15/meta-data/instance-id",
            "/latest/meta-data/",
            "/latest/meta-data/iamx",
        ] {
            assert_eq!(ec2.passing(passed), Some(&Rule::Ec2), "{passed}");
        }
        for local in [
            "/latest/meta-data/iam/security-credentials/",
            "/latest/meta-data/iam/security-credentials/app",
            "/latest/meta-data/iam/info",
            "/latest/meta-data/iam",
            "/latest/meta-data/iam/",
            "/latest/meta-data/IAM/security-credentials/app",
            "/2021-07-15/meta-data/iam/security-credentials/app",
            "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
            "/latest/api/token",
            "/",
            "/computeMetadata/v1/instance/id",
            "/metadata/instance",
            "/other",
        ] {
            assert_eq!(ec2.passing(local), None, "{local}");
        }
    }

    #[test]
    fn a_path_the_real_service_could_read_otherwise_is_never_passed() {
        let everything = rules(&["ec2", "/latest/"]);
        for tricky in [
            "/latest//meta-data/iam/security-credentials/app",
            "/latest/meta-data/./iam/security-credentials/app",
            "/latest/meta-data/placement/../iam/security-credentials/app",
            "/latest/meta-data/iam/security%2Dcredentials/app",
            "/latest/meta-data\\iam",
            "/latest/api/token",
            "/latest/api/token/",
        ] {
            assert_eq!(everything.passing(tricky), None, "{tricky}");
        }
    }

    #[test]
    fn a_prefix_passes_what_it_names_credentials_included() {
        let prefix = rules(&["/latest/meta-data/placement/", "/latest/meta-data/iam/"]);
        assert!(
            prefix
                .passing("/latest/meta-data/placement/region")
                .is_some()
        );
        assert!(prefix.passing("/latest/meta-data/placement").is_none());
        assert!(
            prefix
                .passing("/latest/meta-data/iam/security-credentials/app")
                .is_some()
        );
        assert!(prefix.passing("/latest/meta-data/instance-id").is_none());
    }

    #[test]
    fn gce_and_azure_keep_their_tokens_local() {
        let clouds = rules(&["gce", "azure"]);
        assert_eq!(
            clouds.passing("/computeMetadata/v1/instance/name"),
            Some(&Rule::Gce)
        );
        assert_eq!(
            clouds.passing("/computeMetadata/v1/instance/service-accounts/default/token"),
            None
        );
        assert_eq!(
            clouds.passing("/metadata/instance/compute/name"),
            Some(&Rule::Azure)
        );
        assert_eq!(clouds.passing("/metadata/instance"), Some(&Rule::Azure));
        assert_eq!(clouds.passing("/metadata/identity/oauth2/token"), None);
        assert_eq!(clouds.passing("/latest/meta-data/instance-id"), None);
    }

    #[test]
    fn the_protocol_follows_the_path() {
        assert_eq!(Protocol::of("/computeMetadata/v1/x"), Protocol::Gce);
        assert_eq!(Protocol::of("/metadata/instance"), Protocol::Azure);
        assert_eq!(Protocol::of("/latest/meta-data/x"), Protocol::Ec2);
    }
}
