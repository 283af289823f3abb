//! The credentials layer's settings: where the role credentials come from and how they are
//! refreshed (`credentials::Settings`, docs/credentials.md).

use std::time::Duration;

use super::super::ConfigError;
use super::super::CredentialSettings;
use super::super::layer::Layer;
use super::super::origin::{label, number, pick, text};
use super::super::{defaults, validate};
use crate::credentials::naming::{self, RoleArn};
use crate::credentials::schedule;

/// Where the role credentials come from; see docs/credentials.md.
pub(super) fn resolve_credentials(
    file: &Layer,
    flags: &Layer,
) -> Result<CredentialSettings, ConfigError> {
    let role_arn = text(
        pick(flags.role_arn.clone(), file.role_arn.clone()),
        "role_arn",
        RoleArn::parse,
    )?;
    let mock = pick(flags.mock_credentials, file.mock_credentials);
    if let (Some((true, mock_origin)), Some((arn, _))) = (mock, &role_arn) {
        return Err(ConfigError(format!(
            "{} and role_arn {:?}: fake credentials or a real role, not both",
            label(mock_origin, "mock_credentials"),
            arn.arn
        )));
    }
    let profile = text(
        pick(flags.profile.clone(), file.profile.clone()),
        "profile",
        validate::single_line,
    )?;
    let role_session_name = text(
        pick(
            flags.role_session_name.clone(),
            file.role_session_name.clone(),
        ),
        "role_session_name",
        naming::session_name,
    )?;
    let external_id = text(
        pick(flags.external_id.clone(), file.external_id.clone()),
        "external_id",
        validate::external_id,
    )?;
    // STS's bounds, checked before any call: AssumeRole 15 min-12 h (the role's own maximum
    // may be lower; STS says so), GetSessionToken 15 min-36 h.
    let duration_range = if role_arn.is_some() {
        900..=43200
    } else {
        900..=129_600
    };
    let duration = match pick(flags.duration, file.duration) {
        None => None,
        chosen => Some(Duration::from_secs(number(
            chosen,
            "duration",
            duration_range,
            "seconds",
            0,
        )?)),
    };
    let mfa_serial = text(
        pick(flags.mfa_serial.clone(), file.mfa_serial.clone()),
        "mfa_serial",
        validate::mfa_serial,
    )?;
    let mfa_code = match &flags.mfa_code {
        None => None,
        Some(code) => {
            validate::mfa_code(code.expose())
                .map_err(|expected| ConfigError(format!("--mfa-code: {expected}")))?;
            if mfa_serial.is_none() {
                return Err(ConfigError(
                    "--mfa-code: also give --mfa-serial (the MFA device the code is from)".into(),
                ));
            }
            Some(code.clone())
        }
    };
    let refresh_margin = number(
        pick(flags.refresh_margin, file.refresh_margin),
        "refresh_margin",
        // The floor is EC2's own guarantee, below which the schedule would raise it anyway.
        schedule::EC2_MIN_MARGIN.as_secs()..=43200,
        "seconds",
        schedule::DEFAULT_REFRESH_MARGIN.as_secs(),
    )?;
    let retry_base = number(
        pick(flags.retry_base_ms, file.retry_base_ms),
        "retry_base_ms",
        10..=60_000,
        "milliseconds",
        defaults::RETRY_BASE_MS,
    )?;
    let max_lifetime = match pick(
        flags.credentials_max_lifetime,
        file.credentials_max_lifetime,
    ) {
        None => None,
        chosen => Some(Duration::from_secs(number(
            chosen,
            "credentials_max_lifetime",
            4..=43200,
            "seconds",
            0,
        )?)),
    };
    let caller_roles = resolve_caller_roles(file, flags)?;
    Ok(CredentialSettings {
        caller_roles,
        mock: mock.is_some_and(|(mock, _)| mock),
        role_arn: role_arn.map(|(arn, _)| arn),
        profile: profile.map(|(profile, _)| profile),
        role_session_name: role_session_name.map(|(name, _)| name),
        external_id: external_id.map(|(id, _)| id),
        duration,
        mfa_serial: mfa_serial.map(|(serial, _)| serial),
        mfa_code,
        refresh_margin: Duration::from_secs(refresh_margin),
        retry_base: Duration::from_millis(retry_base),
        max_lifetime,
        // Set with the service settings, where the flag lives.
        fake_lifetime: Duration::ZERO,
    })
}

/// `--caller-role SELECTOR=ROLE_ARN` rules: the flags' list replaces the file's (order matters,
/// so the two are not merged).
fn resolve_caller_roles(
    file: &Layer,
    flags: &Layer,
) -> Result<Vec<crate::credentials::roles::CallerRole>, ConfigError> {
    use super::super::origin::given;
    let Some((rules, origin)) = pick(given(&flags.caller_role), given(&file.caller_role)) else {
        return Ok(Vec::new());
    };
    let uid_of = |name: &str| {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|user| user.uid.as_raw())
    };
    rules
        .iter()
        .map(|rule| {
            let fail = |why: String| ConfigError(format!("{} {rule:?}: {why}", label(origin, "caller_role")));
            let (selector, arn) = rule
                .split_once('=')
                .ok_or_else(|| fail("expected SELECTOR=ROLE_ARN, e.g. user:alice=arn:aws:iam::123456789012:role/app".into()))?;
            Ok(crate::credentials::roles::CallerRole {
                selector: crate::credentials::roles::parse_selector(selector, uid_of).map_err(fail)?,
                role: RoleArn::parse(arn).map_err(|expected| fail(format!("role ARN {expected}")))?,
            })
        })
        .collect()
}
