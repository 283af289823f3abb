//! The service as a whole: the shutdown grace, the token policy and the fake credentials'
//! lifetime.

use std::time::Duration;

use super::super::layer::{Imdsv2, Layer};
use super::super::origin::{number_of, pick};
use super::super::{ConfigError, TokenPolicy, defaults};

/// What the rest of the resolution needs from the service-wide settings.
pub(super) struct Service {
    pub(super) shutdown_grace: Duration,
    pub(super) imdsv2: TokenPolicy,
    pub(super) max_token_ttl: u32,
    pub(super) credentials_lifetime: Duration,
}

pub(super) fn resolve_service(file: &Layer, flags: &Layer) -> Result<Service, ConfigError> {
    let shutdown_grace = number_of!(
        file,
        flags,
        shutdown_grace,
        0..=3600,
        "seconds",
        defaults::SHUTDOWN_GRACE_SECONDS
    )?;
    // At least 30 minutes, so credentials outlive the 15-minute rotation margin; at most 12
    // hours, the longest an instance-profile session lasts.
    let credentials_lifetime = number_of!(
        file,
        flags,
        credentials_lifetime,
        1800..=43200,
        "seconds",
        defaults::CREDENTIALS_LIFETIME_SECONDS
    )?;
    let max_token_ttl = number_of!(file, flags, max_token_ttl, 1..=21600, "seconds", 21600)?;
    let imdsv2 = match pick(flags.imdsv2, file.imdsv2) {
        None | Some((Imdsv2::Optional, _)) => TokenPolicy::Optional,
        Some((Imdsv2::Required, _)) => TokenPolicy::Required,
    };
    Ok(Service {
        shutdown_grace: Duration::from_secs(shutdown_grace),
        imdsv2,
        // Within 1..=21600, checked above.
        max_token_ttl: u32::try_from(max_token_ttl).unwrap_or(21600),
        credentials_lifetime: Duration::from_secs(credentials_lifetime),
    })
}
