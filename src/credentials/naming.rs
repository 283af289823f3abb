//! Names STS cares about: role ARNs and role session names, as pure functions of text.
//!
//! Both are checked before any call, so a typo stops the run at start-up with one line instead
//! of becoming an `AccessDenied` in the background.

/// The characters STS allows in a role session name (`[\w+=,.@-]`).
fn session_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-')
}

/// STS bounds on a role session name's length.
pub const SESSION_NAME_LEN: std::ops::RangeInclusive<usize> = 2..=64;

/// A parsed IAM role ARN: `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn {
    /// The ARN exactly as given.
    pub arn: String,
    /// The partition (`aws`, `aws-cn`, `aws-us-gov`), also of the instance profile ARN a
    /// `--caller-role` caller's `iam/info` shows.
    pub partition: String,
    /// The 12-digit account the role belongs to, also that instance profile's.
    pub account_id: String,
    /// The role's name: the last segment of the resource.
    pub name: String,
}

impl RoleArn {
    /// Parses `value`; the error is the expected form, for the caller to prefix with the field.
    pub fn parse(value: &str) -> Result<RoleArn, String> {
        const EXPECTED: &str = "expected a role ARN such as \"arn:aws:iam::123456789012:role/app\"";
        let parts: Vec<&str> = value.splitn(6, ':').collect();
        let [arn, partition, service, region, account_id, resource] = parts.as_slice() else {
            return Err(EXPECTED.into());
        };
        let partition_ok = !partition.is_empty()
            && partition
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-');
        let account_ok = account_id.len() == 12 && account_id.bytes().all(|b| b.is_ascii_digit());
        let Some(path_and_name) = resource.strip_prefix("role/") else {
            return Err(EXPECTED.into());
        };
        let name = path_and_name.rsplit('/').next().unwrap_or_default();
        // IAM role names: 1-64 of [\w+=,.@-]; path segments use the same characters.
        let name_ok = (1..=64).contains(&name.len()) && name.chars().all(session_char);
        let path_ok = path_and_name
            .split('/')
            .all(|segment| !segment.is_empty() && segment.chars().all(session_char));
        if *arn == "arn"
            && partition_ok
            && *service == "iam"
            && region.is_empty()
            && account_ok
            && name_ok
            && path_ok
        {
            Ok(RoleArn {
                arn: value.to_owned(),
                partition: (*partition).to_owned(),
                account_id: (*account_id).to_owned(),
                name: name.to_owned(),
            })
        } else {
            Err(EXPECTED.into())
        }
    }
}

/// Checks a session name given by the user: STS's characters and 2-64 of them.
pub fn session_name(value: &str) -> Result<String, String> {
    if SESSION_NAME_LEN.contains(&value.len()) && value.chars().all(session_char) {
        Ok(value.to_owned())
    } else {
        Err("expected 2 to 64 characters of letters, digits and _+=,.@-".into())
    }
}

/// The default session name, `USER@HOST`, made acceptable to STS: other characters become `-`,
/// the result is cut to 64 characters and padded to at least 2. CloudTrail then shows who ran
/// imds-tun where.
pub fn default_session_name(user: &str, host: &str) -> String {
    sanitize_session_name(&format!("{user}@{host}"))
}

/// Any text as a valid session name (see [`default_session_name`]).
pub fn sanitize_session_name(raw: &str) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| if session_char(c) { c } else { '-' })
        .take(*SESSION_NAME_LEN.end())
        .collect();
    while name.len() < *SESSION_NAME_LEN.start() {
        name.push('-');
    }
    name
}

/// The invoking user's name: `SUDO_USER` under sudo, else `USER`/`LOGNAME`, else the uid's
/// entry in the user database.
pub fn invoking_user(env: impl Fn(&str) -> Option<String>) -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .filter_map(|key| env(key))
        .find(|name| !name.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|user| user.name)
        })
        .unwrap_or_else(|| "user".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arn_with_and_without_path() {
        let arn = RoleArn::parse("arn:aws:iam::123456789012:role/app").unwrap();
        assert_eq!(arn.name, "app");
        assert_eq!(arn.account_id, "123456789012");
        assert_eq!(arn.partition, "aws");
        let arn = RoleArn::parse("arn:aws-us-gov:iam::123456789012:role/team/ci/deployer").unwrap();
        assert_eq!(arn.name, "deployer");
        assert_eq!(arn.partition, "aws-us-gov");
    }

    #[test]
    fn malformed_role_arns_are_rejected() {
        for bad in [
            "",
            "app",
            "arn:aws:iam::123456789012:user/alice",
            "arn:aws:sts::123456789012:role/app",
            "arn:aws:iam::12345678901:role/app",
            "arn:aws:iam:us-east-1:123456789012:role/app",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role//app",
            "arn:aws:iam::123456789012:role/app name",
            "arn:AWS:iam::123456789012:role/app",
            "arn:aws:iam::123456789012",
        ] {
            let error = RoleArn::parse(bad).unwrap_err();
            assert!(
                error.contains("arn:aws:iam::123456789012:role/app"),
                "{bad}"
            );
        }
    }

    #[test]
    fn session_names_follow_sts_rules() {
        assert!(session_name("ci-run_42@host.example,a=b+c").is_ok());
        assert!(session_name("a").is_err());
        assert!(session_name(&"x".repeat(65)).is_err());
        assert!(session_name(&"x".repeat(64)).is_ok());
        assert!(session_name("has space").is_err());
        assert!(session_name("slash/no").is_err());
    }

    #[test]
    fn default_session_name_is_sanitised() {
        assert_eq!(default_session_name("alice", "devbox"), "alice@devbox");
        assert_eq!(
            default_session_name("DOMAIN\\bob smith", "host:1"),
            "DOMAIN-bob-smith@host-1"
        );
        let long = default_session_name(&"u".repeat(50), &"h".repeat(50));
        assert_eq!(long.len(), 64);
        assert!(session_name(&long).is_ok());
        assert_eq!(sanitize_session_name(""), "--");
        assert_eq!(sanitize_session_name("é"), "--");
        assert!(session_name(&sanitize_session_name("ü")).is_ok());
    }

    #[test]
    fn invoking_user_prefers_sudo_user() {
        let env = |key: &str| match key {
            "SUDO_USER" => Some("alice".to_owned()),
            "USER" => Some("root".to_owned()),
            _ => None,
        };
        assert_eq!(invoking_user(env), "alice");
        let env = |key: &str| (key == "USER").then(|| "bob".to_owned());
        assert_eq!(invoking_user(env), "bob");
    }
}
