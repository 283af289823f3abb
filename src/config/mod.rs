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
//!   per part it resolves: the TUN side (`tun`: the device and the stack's endpoint), the
//!   request `limits` (`http`'s own), the kernel listeners (`listen`), `--allow-from` and
//!   `--user` (`hardening`), the `service` (token policy, grace), the `instance`, the
//!   `credentials`, GCE and Azure, the container endpoints (`containers`), and
//!   [`upstream`](proxy) (`--upstream` forwarding and the shared token of non-loopback
//!   listeners).
//!
//! Adding a setting takes three edits: its field in [`Layer`] (which is both the flag and the
//! file key), one line where its part is resolved into the layer's own struct, and its use in
//! that layer; plus its row in README.md, which `tests/docs/docs_settings.rs` holds to the code.

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
pub use resolve::resolve;
pub use resolve::upstream::{self as proxy, SharedToken, UpstreamSettings};

use crate::cidr::IpNet;
use crate::http::{Access, Limits};
use crate::platform::TunRequest;
use crate::stack::StackConfig;

/// Everything a run needs, fully resolved and validated, as the settings each layer owns: the
/// device for `platform`, the endpoint for `stack`, the limits for `http`, the listeners and the
/// services for the runtime. Nothing here is copied into another struct on its way.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The TUN side; `None` with `--no-tun`.
    pub tun: Option<TunSide>,
    /// Kernel TCP listeners serving the same services (`--listen`), and what they may hold.
    pub listen: ListenSettings,
    /// What one request may cost, and how far a token reply travels.
    pub http: Limits,
    /// The Prometheus endpoint (`--metrics`), or none.
    pub metrics: Option<MetricsSettings>,
    /// Who answers the requests.
    pub backend: Backend,
    /// Serve as this user once the TUN and sockets exist (`--user`; else the user behind sudo).
    pub user: Option<String>,
    /// The served user may use `imds-tun ctl` even when it is a shared account such as nobody
    /// (`--allow-shared-user-ctl`).
    pub allow_shared_user_ctl: bool,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// How log lines are written (`--log-format`).
    pub log_format: crate::logging::Format,
}

/// The TUN side of a run: the device `platform` claims and the TCP endpoint `stack` runs on it.
#[derive(Debug, Clone)]
pub struct TunSide {
    /// The device to create and the address to claim (`--tun-name`, `--mtu`, `--ipv6`).
    pub device: TunRequest,
    /// The userspace TCP endpoint on it: the metadata address, port 80, the MTU,
    /// `--max-connections`.
    pub stack: StackConfig,
}

/// The kernel listeners of a run: each one, and the limit they share.
#[derive(Debug, Clone)]
pub struct ListenSettings {
    /// Each `--listen ADDR:PORT` (repeatable), in the order given.
    pub listeners: Vec<ListenerSettings>,
    /// Most connections on all of them together (`--max-listen-connections`), before the
    /// open-file limit lowers it at start.
    pub max_connections: usize,
}

/// One kernel listener (`--listen`): where, and what a client there must pass.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// The address and port to bind, as `--listen` gave them.
    pub address: SocketAddr,
    /// Every request, or only those with the shared token (a non-loopback address).
    pub access: Access,
    /// Client networks allowed to connect (`--allow-from`); empty allows all.
    pub allow_from: Vec<IpNet>,
}

/// The Prometheus endpoint (`--metrics`): where, and what a scraper must send.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// The address and port to bind, as `--metrics` gave them.
    pub address: SocketAddr,
    /// Every request (loopback), or only those with the `--listen-token-file` secret.
    pub access: Access,
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
    /// The longest IMDSv2 token TTL granted (`--max-token-ttl`), seconds.
    pub max_token_ttl: u32,
    /// Where the role credentials come from.
    pub credentials: CredentialSettings,
    /// The GCE metadata server too (`--gcp-project`), or not.
    pub gce: Option<crate::clouds::gce::GceSettings>,
    /// The Azure VM (always served).
    pub azure: resolve::azure::AzureSettings,
    /// The ECS endpoint's own ids (`--ecs-credentials`).
    pub ecs: crate::clouds::ecs::EcsSettings,
    /// The EKS Pod Identity endpoint's token (`--eks-pod-identity-token-file`), or no endpoint.
    pub pod_identity: Option<crate::clouds::eks_pod_identity::PodIdentitySettings>,
    /// Interruptions to play from the start (`--scenario`).
    pub scenario: Option<Vec<crate::control::protocol::Step>>,
    /// The requests answered by the real metadata service (`--pass-through`), or none. Its
    /// interface is filled in by `crate::app` from the kernel's route, before the claim.
    pub pass_through: Option<crate::clouds::pass_through::PassThroughSettings>,
    /// The snapshot to serve (`--replay`), or none.
    pub replay: Option<std::sync::Arc<crate::clouds::replay::Replay>>,
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

/// A setting that could not be used; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
