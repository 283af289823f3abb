//! Settings for one run: flags, an optional JSON file and machine-derived defaults, resolved once.
//!
//! Precedence is per field: a flag beats the file, the file beats the default. Resolution
//! validates every value and fails with one line that names the field, where it came from and
//! what was expected, so a bad setting stops the run before any device is created.
//!
//! - [`file`](mod@file): the JSON schema ([`ConfigLayer`]) and reading it.
//! - [`named_file`]: every read of a file the user named (whose rights, regular files only,
//!   size caps).
//! - [`defaults`]: stable, realistic defaults derived from the machine id.
//! - [`validate`]: format checks of single values.
//! - [`resolve`](mod@resolve): layering and the checks that involve several fields.
//! - [`proxy`]: `--upstream` forwarding and the shared token of non-loopback listeners.
//! - [`hardening`]: `--allow-from`, `--user` and the request limits.

pub mod defaults;
pub mod file;
pub mod hardening;
pub mod named_file;
pub mod proxy;
pub mod resolve;
pub mod validate;

use std::net::SocketAddr;
use std::time::Duration;

use crate::credentials::Secret;
use crate::credentials::naming::RoleArn;

pub use crate::imds::{Instance, PublicKey, SecurityGroup, TokenPolicy};
pub use file::{ConfigLayer, PublicKeyLayer};
pub use hardening::{Cidr, HardeningSettings};
pub use named_file::Opener;
pub use proxy::{ProxySettings, SharedToken, UpstreamSettings};
pub use resolve::resolve;

/// Everything a run needs, fully resolved and validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The TUN side; `None` with `--no-tun`.
    pub tun: Option<TunSettings>,
    /// Kernel TCP listeners serving the same service (`--listen`, repeatable).
    pub listen: Vec<SocketAddr>,
    /// Most concurrent TCP connections through the TUN.
    pub max_connections: usize,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// IMDSv2 token policy.
    pub imdsv2: TokenPolicy,
    /// How long each set of fake role credentials is valid.
    pub credentials_lifetime: Duration,
    /// Where the role credentials come from.
    pub credentials: CredentialSettings,
    /// Every metadata value the service answers with.
    pub instance: Instance,
    /// `--upstream` forwarding and the token non-loopback listeners require.
    pub proxy: ProxySettings,
    /// Who may connect, whom to serve as, and what a request may cost.
    pub hardening: HardeningSettings,
}

/// Where the role credentials come from and how they are refreshed (docs/credentials.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSettings {
    /// `--mock-credentials`: fake credentials even if real ones could be had.
    pub mock: bool,
    /// `--role-arn`: assume this role; `None` serves the caller's own session.
    pub role_arn: Option<RoleArn>,
    /// `--profile`: the source profile (else `AWS_PROFILE`, else the default chain).
    pub profile: Option<String>,
    /// `None`: `USER@HOST`, decided at start-up.
    pub role_session_name: Option<String>,
    pub external_id: Option<String>,
    /// `None`: [`CredentialSettings::duration_or_default`].
    pub duration: Option<Duration>,
    pub mfa_serial: Option<String>,
    /// `None` with a serial: asked on the terminal at start-up.
    pub mfa_code: Option<Secret>,
    /// Refresh once less than this remains.
    pub refresh_margin: Duration,
    /// First retry delay after a failed refresh; doubles up to a minute.
    pub retry_base: Duration,
    /// Test-only cap on every set's lifetime.
    pub max_lifetime: Option<Duration>,
}

impl CredentialSettings {
    /// One hour for a role (STS's own default), twelve for the caller's own session.
    pub fn duration_or_default(&self) -> Duration {
        self.duration.unwrap_or(if self.role_arn.is_some() {
            Duration::from_secs(defaults::ROLE_DURATION_SECONDS)
        } else {
            Duration::from_secs(defaults::SESSION_DURATION_SECONDS)
        })
    }
}

/// The TUN device to create.
#[derive(Debug, Clone)]
pub struct TunSettings {
    /// Interface name; a `%d` lets the kernel pick a free number.
    pub name: String,
    pub mtu: u16,
}

/// A setting that could not be used; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
