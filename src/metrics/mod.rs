//! What imds-tun counts for Prometheus (`--metrics`), and its text exposition: one [`Metrics`]
//! per run, a cheap handle (clone it) that the layers which count are handed explicitly.
//!
//! Two kinds of numbers, for two kinds of owner:
//!
//! - **Events, counted where they happen**: answered requests by cloud and status, tokenless
//!   requests, connections open, connections refused. Each is an atomic add on the data path
//!   (prometheus-client's counters and gauges; a labelled family adds an uncontended read lock
//!   to find its child), done through the typed methods here ([`Metrics::request`],
//!   [`Metrics::refused`], [`Metrics::connection_opened`]).
//! - **States that already have an owner**, read at scrape time rather than copied: the
//!   credentials served per role (the credentials layer's own record, also what `ctl status`
//!   shows), the faults standing, the IMDSv2 tokens issued. The run hands a [`StateReader`]
//!   that returns a [`State`]; nothing is pushed, so nothing can drift.
//!
//! Every label value is a word imds-tun chose: a cloud's fixed name, a status code the server
//! answered with, a [`Refusal`]'s word, a role named in the configuration. None is text a
//! client sent, so the number of series is bounded by the configuration.
//!
//! What this module does not do: serve HTTP (the `--metrics` socket is served by
//! `crate::runtime`, bound by `crate::app`), or know any other layer: it imports nothing of
//! imds-tun's, so every layer may count into it. The process's own numbers (memory, descriptors,
//! CPU) come from `/proc/self` ([`process`]).

pub mod process;

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// The `Content-Type` of the exposition: Prometheus' text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric name this module can expose, as a scrape shows it (counters with their
/// `_total`): what `docs/metrics.md` lists, and what `tests/docs` holds it to.
pub const NAMES: &[&str] = &[
    "imds_tun_requests_total",
    "imds_tun_tokenless_requests_total",
    "imds_tun_open_connections",
    "imds_tun_refused_connections_total",
    "imds_tun_packets_over_budget_total",
    "imds_tun_credentials_expiration_timestamp_seconds",
    "imds_tun_credentials_refreshes_total",
    "imds_tun_faults_active",
    "imds_tun_imdsv2_tokens_issued_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_cpu_seconds_total",
    "process_start_time_seconds",
];

/// The labels of `imds_tun_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The claiming service's fixed name, or `none`.
    cloud: &'static str,
    /// The status answered (a number the server chose).
    status: u16,
}

/// Why a connection was refused: the `reason` of `imds_tun_refused_connections_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Refusal {
    /// Through the TUN, at `--max-connections`, with nobody to give way (or too many SYNs
    /// already waiting for their caller to be known).
    ConnectionLimit,
    /// Through the TUN, from an address `--allow-from` does not admit.
    AllowFrom,
    /// Through the TUN, after a shutdown signal (new SYNs are reset).
    ShuttingDown,
    /// On a `--listen` socket, at `--max-listen-connections`, with nobody to give way.
    ListenConnectionLimit,
    /// On a `--listen` socket, from an address `--allow-from` does not admit.
    ListenAllowFrom,
    /// On the `--metrics` socket, beyond its few concurrent connections.
    MetricsConnectionLimit,
}

impl Refusal {
    /// Every reason, in the order the docs list them.
    pub const ALL: [Refusal; 6] = [
        Refusal::ConnectionLimit,
        Refusal::AllowFrom,
        Refusal::ShuttingDown,
        Refusal::ListenConnectionLimit,
        Refusal::ListenAllowFrom,
        Refusal::MetricsConnectionLimit,
    ];

    /// The label value.
    pub fn word(self) -> &'static str {
        match self {
            Refusal::ConnectionLimit => "connection_limit",
            Refusal::AllowFrom => "allow_from",
            Refusal::ShuttingDown => "shutting_down",
            Refusal::ListenConnectionLimit => "listen_connection_limit",
            Refusal::ListenAllowFrom => "listen_allow_from",
            Refusal::MetricsConnectionLimit => "metrics_connection_limit",
        }
    }
}

impl EncodeLabelValue for Refusal {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.word())
    }
}

/// The labels of `imds_tun_refused_connections_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    reason: Refusal,
}

/// One role's credentials as the credentials layer reports them at a scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleState {
    /// The role's name as served (`iam/security-credentials/<role>`), from the configuration.
    pub role: String,
    /// When the credentials now served expire (Unix seconds); `None` while none are held.
    pub expiration_unix: Option<i64>,
    /// Refreshes that obtained a new set.
    pub refreshes_ok: u64,
    /// Refreshes that failed.
    pub refreshes_failed: u64,
}

/// The states read at a scrape ([`StateReader`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Each role served so far, at most one entry per role name.
    pub roles: Vec<RoleState>,
    /// Faults standing (`imds-tun ctl fault`).
    pub faults_active: u64,
    /// IMDSv2 session tokens issued since start.
    pub tokens_issued: u64,
}

/// Reads the [`State`] at a scrape: given by the run, which knows the owners.
pub type StateReader = Box<dyn Fn() -> State + Send + Sync>;

/// The handles of one run's metrics; clones share them.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    tokenless: Counter,
    open_connections: Gauge,
    refused: Family<RefusedLabels, Counter>,
    over_budget: Counter,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    /// Metrics that read no state: for a run without `--metrics`, and tests.
    fn default() -> Self {
        Metrics::new(None)
    }
}

impl Metrics {
    /// The metrics of one run; `state` is read at every scrape, and the process's own numbers
    /// are added where the platform offers them.
    pub fn new(state: Option<StateReader>) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "imds_tun_requests",
            "Requests answered, by the service that claimed them (cloud: ec2, gce, azure, ecs, \
             eks, upstream, or none) and the status answered",
            requests.clone(),
        );
        let tokenless = Counter::default();
        registry.register(
            "imds_tun_tokenless_requests",
            "EC2 metadata reads without an IMDSv2 session token (IMDSv1), served or refused",
            tokenless.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "imds_tun_open_connections",
            "Connections being served over HTTP, through the TUN and on --listen sockets",
            open_connections.clone(),
        );
        let refused = Family::<RefusedLabels, Counter>::default();
        for reason in Refusal::ALL {
            // Every reason from the start, so a rate over a reason that never happened is 0,
            // not absent.
            let _ = refused.get_or_create(&RefusedLabels { reason });
        }
        registry.register(
            "imds_tun_refused_connections",
            "Connections refused (a RST), by reason",
            refused.clone(),
        );
        let over_budget = Counter::default();
        registry.register(
            "imds_tun_packets_over_budget",
            "Packets to the metadata addresses dropped before TCP beyond the packet budget \
             (--packet-budget, ctl fault --packet-budget)",
            over_budget.clone(),
        );
        if let Some(read) = state {
            registry.register_collector(Box::new(StateCollector { read }));
        }
        if process::supported() {
            registry.register_collector(Box::new(process::ProcessCollector::new()));
        }
        Metrics {
            inner: Arc::new(Inner {
                registry,
                requests,
                tokenless,
                open_connections,
                refused,
                over_budget,
            }),
        }
    }

    /// A request was answered with `status` by the service named `cloud` (`None`: no service
    /// claimed it); `tokenless` if it was an IMDSv1 read.
    pub fn request(&self, cloud: Option<&'static str>, status: u16, tokenless: bool) {
        let labels = RequestLabels {
            cloud: cloud.unwrap_or("none"),
            status,
        };
        self.inner.requests.get_or_create(&labels).inc();
        if tokenless {
            self.inner.tokenless.inc();
        }
    }

    /// A packet was dropped beyond the packet budget.
    pub fn packet_over_budget(&self) {
        self.inner.over_budget.inc();
    }

    /// A connection was refused for `reason`.
    pub fn refused(&self, reason: Refusal) {
        self.inner
            .refused
            .get_or_create(&RefusedLabels { reason })
            .inc();
    }

    /// A connection is being served from now until the returned guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.inner.open_connections.inc();
        OpenConnection {
            gauge: self.inner.open_connections.clone(),
        }
    }

    /// The exposition, in Prometheus' text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(4096);
        // Writing into a String fails only if a collector fails, and ours do not.
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.inner.registry)
        {
            text.push_str(&format!("# imds-tun: encoding stopped: {error}\n"));
        }
        text
    }
}

/// A connection counted in `imds_tun_open_connections` while this lives.
#[derive(Debug)]
pub struct OpenConnection {
    gauge: Gauge,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The states read at each scrape.
struct StateCollector {
    read: StateReader,
}

impl fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateCollector")
    }
}

/// The labels of the per-role metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: String,
}

/// The labels of `imds_tun_credentials_refreshes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    role: String,
    result: &'static str,
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let state = (self.read)();
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "imds_tun_credentials_expiration_timestamp_seconds",
            "When the credentials now served for the role expire (Unix time); absent while none \
             are held.",
            None,
            gauge.metric_type(),
        )?;
        for role in &state.roles {
            if let Some(expiration) = role.expiration_unix {
                ConstGauge::new(expiration).encode(family.encode_family(&RoleLabels {
                    role: role.role.clone(),
                })?)?;
            }
        }
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "imds_tun_credentials_refreshes",
            "Attempts to obtain the role's credentials (STS, the session, or fake), by result \
             (ok, error).",
            None,
            counter.metric_type(),
        )?;
        for role in &state.roles {
            for (result, count) in [("ok", role.refreshes_ok), ("error", role.refreshes_failed)] {
                let labels = RefreshLabels {
                    role: role.role.clone(),
                    result,
                };
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        let faults = ConstGauge::new(i64::try_from(state.faults_active).unwrap_or(i64::MAX));
        faults.encode(encoder.encode_descriptor(
            "imds_tun_faults_active",
            "Faults standing (imds-tun ctl fault).",
            None,
            faults.metric_type(),
        )?)?;
        let tokens = ConstCounter::new(state.tokens_issued);
        tokens.encode(encoder.encode_descriptor(
            "imds_tun_imdsv2_tokens_issued",
            "IMDSv2 session tokens issued.",
            None,
            tokens.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
