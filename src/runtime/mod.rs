//! One running imds-tun, as a library: the TCP stack on a packet device, the HTTP server and its
//! services, and the accept loops of the TUN and of the kernel listeners, until a graceful stop.
//!
//! [`Runtime::start`] is the composition root that the process (`crate::app`) and the in-memory
//! tests (`tests/in_process.rs`) share: given the settings, the services, a packet device (the
//! claimed TUN, or an in-memory pipe) and bound listeners, it wires the layers together; each
//! layer is built from its own part of [`Settings`], nothing is translated here. [`services()`]
//! builds a run's metadata services from the settings, selecting the credential source, and
//! the callers report (`crate::callers`) every answered request is counted in. The
//! kernel listeners share one connection limit (`listen_limit`), kept below the process's
//! open-file limit. What a run counts goes to its [`Metrics`] (`counting`: every answered
//! request and every served connection), scraped on the `--metrics` socket (`metrics_endpoint`).
//!
//! What it does not do: claim the metadata address, bind sockets, handle signals, give up root
//! or run the control channel. Those need privileges or belong to a process, and stay in
//! `crate::app`; so a test can start a whole imds-tun without root.

mod accept;
mod counting;
mod listen_limit;
pub mod metrics_endpoint;
mod services;
mod stack_connection;

pub use metrics_endpoint::MetricsEndpoint;
pub use services::{LocalServices, ServicesError, services};

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::attribution::{Attribution, KernelSockets};
use crate::callers::Callers;
use crate::config::{ListenerSettings, Settings};
use crate::credentials::roles::CallerRoles;
use crate::http::faults::FaultBoard;
use crate::http::{Server, Services};
use crate::metrics::Metrics;
use crate::platform::{LOCAL_ADDRESS, LOCAL_ADDRESS_V6};
use crate::stack::{self, Driver, PacketIo};

/// How long the stack may take to put the RSTs of aborted connections on the wire at the end.
const RESET_FLUSH: Duration = Duration::from_millis(20);

/// A kernel listener, bound by the process, with its settings.
#[derive(Debug)]
pub struct BoundListener {
    /// The socket, bound before the TUN is claimed (so a busy port fails before anything is
    /// created).
    pub socket: TcpListener,
    /// The `--listen` it was bound for: who may connect and what they must send.
    pub settings: ListenerSettings,
}

/// A started imds-tun: serving until [`Runtime::stop`].
pub struct Runtime {
    server: Arc<Server>,
    callers: Arc<Callers>,
    driver: Option<Driver>,
    stop_accepting: watch::Sender<bool>,
    accepting: Vec<JoinHandle<()>>,
    shutdown_grace: Duration,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Starts serving `services` on `device` (the TUN side of `settings`; `None` with `--no-tun`)
    /// and on `listeners`, counting into metrics nobody scrapes. Must run inside a tokio runtime.
    pub fn start<D: PacketIo + 'static>(
        settings: &Settings,
        services: Services,
        device: Option<D>,
        listeners: Vec<BoundListener>,
    ) -> Runtime {
        Runtime::start_counting(
            settings,
            services,
            device,
            listeners,
            Metrics::default(),
            None,
            KernelSockets::here(),
        )
    }

    /// As [`Runtime::start`], counting into `metrics`, and serving them on `endpoint` (the
    /// `--metrics` socket) if given; callers are told apart by asking the kernel through
    /// `kernel` (the served namespace's sockets).
    pub fn start_counting<D: PacketIo + 'static>(
        settings: &Settings,
        services: Services,
        device: Option<D>,
        listeners: Vec<BoundListener>,
        metrics: Metrics,
        endpoint: Option<MetricsEndpoint>,
        kernel: KernelSockets,
    ) -> Runtime {
        let cgroup_prefixes = settings
            .local()
            .map(|local| CallerRoles::cgroup_prefixes(&local.credentials.caller_roles))
            .unwrap_or_default();
        let attribution = Arc::new(Attribution::open_in(
            kernel,
            local_sources(settings),
            cgroup_prefixes,
        ));
        if cfg!(target_os = "linux") && !attribution.knows_socket_owners() {
            tracing::warn!(
                "cannot ask the kernel who owns client sockets (NETLINK_SOCK_DIAG); local users \
                 are told apart neither in the credentials log nor at the connection limit"
            );
        }
        if attribution.wants_cgroups()
            && let Some(reason) = attribution.cgroup_blind_spot()
        {
            tracing::warn!(
                "cgroup: rules cannot see every caller here ({reason}); callers they could \
                 match get no credentials"
            );
        }
        // One caller-identity service for both questions: who reads credentials, and whose
        // connection gives way at the connection limit.
        let callers = Arc::new(Callers::new(time::OffsetDateTime::now_utc()));
        let server = Arc::new(
            Server::with_limits(services, settings.http)
                .with_attribution(attribution.clone())
                .with_callers(callers.clone())
                .with_observer(Arc::new(counting::RequestCounter(metrics.clone()))),
        );
        let (stop_accepting, stop) = watch::channel(false);
        let mut accepting = Vec::with_capacity(listeners.len() + 1);
        let driver = match (device, &settings.tun) {
            (Some(device), Some(tun)) => {
                let (door, driver) = stack::spawn(
                    device,
                    tun.stack.clone(),
                    attribution.clone(),
                    metrics.clone(),
                    accept::tun_hand_off(server.clone(), metrics.clone()),
                );
                accepting.push(tokio::spawn(accept::tun(door, stop.clone())));
                Some(driver)
            }
            _ => None,
        };
        if !listeners.is_empty() {
            let limit = listen_limit::ListenLimit::new(
                listen_connections(settings.listen.max_connections),
                attribution.clone(),
            );
            for listener in listeners {
                accepting.push(tokio::spawn(accept::kernel(
                    listener,
                    server.clone(),
                    limit.clone(),
                    metrics.clone(),
                    stop.clone(),
                )));
            }
        }
        if let Some(endpoint) = endpoint {
            accepting.push(tokio::spawn(metrics_endpoint::serve(
                endpoint,
                metrics,
                settings.http,
                stop.clone(),
            )));
        }
        Runtime {
            server,
            callers,
            driver,
            stop_accepting,
            accepting,
            shutdown_grace: settings.shutdown_grace,
        }
    }

    /// The faults every request meets, for the control channel to change.
    pub fn faults(&self) -> Arc<FaultBoard> {
        self.server.faults()
    }

    /// The TUN stack's packet budget, for the control channel to change (`None` without a
    /// TUN).
    pub fn packet_budget(&self) -> Option<crate::stack::PacketBudget> {
        self.driver.as_ref().map(stack::Driver::packet_budget)
    }

    /// Who has called, for `ctl callers` and the lines at exit.
    pub fn callers(&self) -> Arc<Callers> {
        self.callers.clone()
    }

    /// Waits until the packet device fails (it was deleted, or the kernel refused a write);
    /// never returns without a device.
    pub async fn failed(&mut self) -> io::Error {
        match &mut self.driver {
            Some(driver) => driver.failed().await,
            None => std::future::pending().await,
        }
    }

    /// Stops accepting: the stack resets a new SYN, the kernel listeners are closed; what is
    /// being served goes on. Returns once every accept loop has ended.
    pub async fn stop_accepting(&mut self) {
        let _ = self.stop_accepting.send(true);
        for task in self.accepting.drain(..) {
            let _ = task.await;
        }
    }

    /// Stops accepting, lets in-flight requests finish within the shutdown grace, then resets
    /// what is left. Returns false if some request was still running at the deadline.
    pub async fn stop(mut self) -> bool {
        self.stop_accepting().await;
        let finished = match Arc::into_inner(self.server) {
            Some(server) => server.shutdown(self.shutdown_grace).await,
            None => true,
        };
        if !finished {
            tracing::warn!(
                "some requests were still running after {:?}; closing them",
                self.shutdown_grace
            );
        }
        if let Some(driver) = self.driver {
            driver.stop(RESET_FLUSH).await;
        }
        finished
    }
}

/// Descriptors kept for everything but `--listen` connections: the TUN, the listeners, netlink,
/// the control socket and its clients, token commands' pipes, `/proc` reads, connections to STS
/// or an upstream.
const DESCRIPTORS_KEPT: u64 = 256;

/// The `--listen` connection limit: `wanted`, or less if the open-file limit (raised at start,
/// `platform::resources`) would not leave [`DESCRIPTORS_KEPT`] for the rest, so connections
/// are refused at the limit rather than everything failing with EMFILE; said once.
fn listen_connections(wanted: usize) -> usize {
    let Some(open_files) = crate::platform::resources::descriptor_limit() else {
        return wanted;
    };
    let room = open_files
        .saturating_sub(DESCRIPTORS_KEPT)
        .max(open_files / 2);
    let room = usize::try_from(room).unwrap_or(usize::MAX).max(1);
    if room < wanted {
        tracing::warn!(
            "--listen sockets take at most {room} connections at once, not {wanted}: the \
             open-file limit is {open_files} (raise it: LimitNOFILE= in the unit, ulimit -n)"
        );
    }
    wanted.min(room)
}

/// The source addresses that mean "a process on this host": our side of the TUN's
/// point-to-point links (the kernel's listeners see loopback for their own). The container
/// endpoints' routes (`--ecs`, `--eks-pod-identity`) carry the same side as their source, so
/// their clients come from these addresses too.
fn local_sources(settings: &Settings) -> Vec<IpAddr> {
    let mut sources = vec![IpAddr::V4(LOCAL_ADDRESS)];
    if settings.tun.as_ref().is_some_and(|tun| tun.device.ipv6) {
        sources.push(IpAddr::V6(LOCAL_ADDRESS_V6));
    }
    sources
}
