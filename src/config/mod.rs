//! Settings for one run: flags, an optional JSON file and machine-derived defaults, resolved once.
//!
//! Precedence is per field: a flag beats the file, the file beats the default. Resolution
//! validates every value and fails with one line that names the field, where it came from and
//! what was expected, so a bad setting stops the run before any device is created.
//!
//! - [`layer`]: every setting, once ([`Layer`]): the flags (clap) and the file's keys (serde).
//! - [`file`](mod@file): reading the JSON file into a [`Layer`], errors that never show a value.
//! - [`named_file`]: every read of a file the user named (whose rights, regular files only,
//!   size caps).
//! - [`defaults`]: stable, realistic defaults derived from the machine id.
//! - [`validate`]: format checks of single values.
//! - `origin`: which layer a value came from, and how its errors name it.
//! - [`resolve`](mod@resolve): layering and the checks that involve several fields, one file
//!   per layer it resolves for: `service`, `instance`, `credentials`, [`upstream`](proxy)
//!   (`--upstream` forwarding and the shared token of non-loopback listeners) and
//!   [`hardening`] (`--allow-from`, `--user` and the request limits).

pub mod defaults;
pub mod file;
pub mod layer;
pub mod named_file;
mod origin;
pub mod resolve;
pub mod validate;

use std::net::SocketAddr;
use std::time::Duration;

pub use crate::clouds::ec2::{Instance, PublicKey, SecurityGroup, TokenPolicy};
pub use crate::credentials::Settings as CredentialSettings;
pub use layer::{Imdsv2, Layer, PublicKeyLayer, Tag};
pub use named_file::Opener;
pub use resolve::hardening::{self, HardeningSettings};
pub use resolve::resolve;
pub use resolve::upstream::{
    self as proxy, ListenerProtection, ProxySettings, SharedToken, UpstreamSettings,
};

/// Everything a run needs, fully resolved and validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The TUN side; `None` with `--no-tun`.
    pub tun: Option<TunSettings>,
    /// Kernel TCP listeners serving the same service (`--listen`, repeatable).
    pub listen: Vec<SocketAddr>,
    /// Most concurrent TCP connections through the TUN.
    pub max_connections: usize,
    /// The IP hop limit of token replies through the TUN (`--hop-limit`).
    pub hop_limit: u8,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Who answers the requests.
    pub backend: Backend,
    /// The token non-loopback listeners require.
    pub listeners: ListenerProtection,
    /// Who may connect, whom to serve as, and what a request may cost.
    pub hardening: HardeningSettings,
}

/// Who answers the requests of a run.
#[derive(Debug, Clone)]
pub enum Backend {
    /// This process: the instance it describes and where its role credentials come from.
    Local(Box<LocalService>),
    /// Another metadata service every request is forwarded to (`--upstream`); this process
    /// answers nothing itself and needs no credentials.
    Upstream(UpstreamSettings),
}

/// The metadata service this process answers with itself.
#[derive(Debug, Clone)]
pub struct LocalService {
    /// Every metadata value the service answers with.
    pub instance: Instance,
    /// IMDSv2 token policy.
    pub token_policy: TokenPolicy,
    /// Where the role credentials come from.
    pub credentials: CredentialSettings,
    /// The GCE metadata server too (`--gcp-project`), or not.
    pub gce: Option<crate::clouds::gce::GceSettings>,
    /// The Azure VM (always served).
    pub azure: resolve::azure::AzureSettings,
    /// Interruptions to play from the start (`--scenario`).
    pub scenario: Option<Vec<crate::control::protocol::Step>>,
}

impl Settings {
    /// The local service, unless every request is forwarded.
    pub fn local(&self) -> Option<&LocalService> {
        match &self.backend {
            Backend::Local(local) => Some(local),
            Backend::Upstream(_) => None,
        }
    }

    /// The local service, for tests that know there is one.
    #[cfg(test)]
    pub(crate) fn into_local(self) -> LocalService {
        match self.backend {
            Backend::Local(local) => *local,
            Backend::Upstream(_) => panic!("expected a local service, found upstream mode"),
        }
    }

    /// Where requests are forwarded, in upstream mode.
    pub fn upstream(&self) -> Option<&UpstreamSettings> {
        match &self.backend {
            Backend::Upstream(upstream) => Some(upstream),
            Backend::Local(_) => None,
        }
    }
}

/// The TUN device to create.
#[derive(Debug, Clone)]
pub struct TunSettings {
    /// Interface name; a `%d` lets the kernel pick a free number.
    pub name: String,
    pub mtu: u16,
    /// Also claim `fd00:ec2::254` (`--ipv6`).
    pub ipv6: bool,
}

/// A setting that could not be used; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
