//! What the credentials layer is built from, in its own words, and why setting it up can fail.

use std::time::Duration;

use super::naming::RoleArn;
use crate::secret::Secret;

/// STS's own default lifetime of an assumed role's credentials.
pub const ROLE_DURATION_SECONDS: u64 = 3600;
/// The lifetime asked of GetSessionToken when none is given: twelve hours.
pub const SESSION_DURATION_SECONDS: u64 = 12 * 3600;

/// Where the role credentials come from and how they are refreshed (docs/credentials.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `--mock-credentials`: fake credentials even if real ones could be had.
    pub mock: bool,
    /// `--role-arn`: assume this role; `None` serves the caller's own session.
    pub role_arn: Option<RoleArn>,
    /// `--profile`: the source profile (else `AWS_PROFILE`, else the default chain).
    pub profile: Option<String>,
    /// `None`: `USER@HOST`, decided at start-up.
    pub role_session_name: Option<String>,
    /// `--external-id`: the `ExternalId` the role's trust policy asks for; `None` sends none.
    pub external_id: Option<String>,
    /// `None`: [`Settings::duration_or_default`].
    pub duration: Option<Duration>,
    /// `--mfa-serial`: the MFA device whose code signs the first STS call; `None`: no MFA.
    pub mfa_serial: Option<String>,
    /// `None` with a serial: asked on the terminal at start-up.
    pub mfa_code: Option<Secret>,
    /// Refresh once less than this remains.
    pub refresh_margin: Duration,
    /// First retry delay after a failed refresh; doubles up to a minute.
    pub retry_base: Duration,
    /// Test-only cap on every set's lifetime.
    pub max_lifetime: Option<Duration>,
    /// How long each set of fake credentials is valid.
    pub fake_lifetime: Duration,
    /// `--caller-role`: other roles for some callers, in the order given.
    pub caller_roles: Vec<super::roles::CallerRole>,
}

impl Settings {
    /// One hour for a role (STS's own default), twelve for the caller's own session.
    pub fn duration_or_default(&self) -> Duration {
        self.duration.unwrap_or(if self.role_arn.is_some() {
            Duration::from_secs(ROLE_DURATION_SECONDS)
        } else {
            Duration::from_secs(SESSION_DURATION_SECONDS)
        })
    }
}

/// What the credentials are served as: facts of the instance the metadata service describes.
#[derive(Debug, Clone, Copy)]
pub struct ServedAs<'a> {
    /// The instance profile's role (`iam/security-credentials/<role_name>`).
    pub role_name: &'a str,
    /// The STS region when neither the environment nor the profile names one.
    pub region: &'a str,
    /// The host part of the default role session name (`USER@HOST`).
    pub hostname: &'a str,
}

/// Why the credential source could not be set up; every message names the setting and what
/// to do. These are settings errors: the run stops with exit 2.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `--role-arn` with nothing the credential chain could sign `AssumeRole` with.
    #[error(
        "--role-arn {role_arn}: no source credentials to assume it with (searched {searched}); \
         configure a profile (--profile NAME) or export AWS_ACCESS_KEY_ID, or use --mock-credentials"
    )]
    NoSourceCredentials {
        /// `--role-arn` as given.
        role_arn: String,
        /// Where the chain looked ("environment, ~/.aws, web identity, container").
        searched: String,
    },
    /// A setting that needs STS, in a build without the `sts` feature.
    #[error(
        "this imds-tun was built without STS support (cargo feature `sts`); rebuild with default \
         features for --role-arn, --profile or --mfa-serial"
    )]
    BuiltWithoutSts,
    /// The AWS config or credentials file could not be read to look the profile up.
    #[error("{label} {name:?}: cannot read the AWS config files: {reason}")]
    ProfileFilesUnreadable {
        /// Where the profile name came from: `--profile` or `AWS_PROFILE`.
        label: &'static str,
        /// The profile's name.
        name: String,
        /// aws-config's error, as text.
        reason: String,
    },
    /// The named profile is in neither the config nor the credentials file.
    #[error("{label} {name:?}: no such profile in {searched_in} (known: {known})")]
    UnknownProfile {
        /// Where the profile name came from: `--profile` or `AWS_PROFILE`.
        label: &'static str,
        /// The profile's name.
        name: String,
        /// Where the files were looked for: `AWS_CONFIG_FILE`, else `~/.aws`.
        searched_in: String,
        /// The profiles that do exist, comma-separated, or `none`.
        known: String,
    },
    /// `--mfa-serial` without `--mfa-code`, and no terminal to ask on.
    #[error(
        "--mfa-serial {serial}: no --mfa-code given and no terminal to ask for one ({why}); pass \
         --mfa-code CODE"
    )]
    NoTerminalForMfa {
        /// `--mfa-serial` as given.
        serial: String,
        /// Why the terminal (`/dev/tty`) could not be opened or prompted on.
        why: String,
    },
    /// The code typed at the terminal is not six digits.
    #[error("MFA code for {serial}: {expected}")]
    BadMfaCode {
        /// `--mfa-serial` as given.
        serial: String,
        /// What a code looks like.
        expected: String,
    },
}

/// An MFA code as STS takes it: six digits.
pub fn mfa_code(value: &str) -> Result<String, String> {
    if value.len() == 6 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value.to_owned())
    } else {
        Err("expected the 6-digit code shown by the MFA device".into())
    }
}
