//! The imds-tun process: the command line, then one run: settings, privileges, the claimed
//! address and the bound listeners, a [`Runtime`] over them, signals, and a clean exit.
//!
//! What needs root or belongs to the process is here, in the order it must happen: bind the
//! kernel listeners before creating the TUN (so a busy port fails before anything is claimed),
//! claim the address, start the runtime and the control channel while still root, then give
//! root up before the first request is served; one start-up line; on SIGINT, SIGTERM or SIGHUP
//! stop accepting, let in-flight requests finish within the grace period, name the IMDSv1
//! (tokenless) callers of the run (`crate::callers::report::log_at_exit`) and exit 0; when the
//! claim is lost (the device deleted or set down, its address or route gone:
//! `platform::ClaimWatch`) the same, then exit 1 with one line saying what happened. How the
//! layers are wired together is `crate::runtime`'s.
//!
//! Every failure is one line on stderr and an exit code ([`AppError::exit_code`]): 2 for
//! settings that cannot work (an unknown `--user` among them), 1 for anything else.

use crate::cli::Cli;
use crate::clouds::ec2::interruptions;
use crate::config::{self, Settings, TokenPolicy};
use crate::credentials::outage::Outage;
use crate::http::Access;
use crate::metrics::{Metrics, RoleState, State, StateReader};
use crate::output;
use crate::platform::privileges;
use crate::platform::{self, METADATA_ADDRESS, METADATA_ADDRESS_V6, PlatformError};
use crate::runtime::{BoundListener, LocalServices, MetricsEndpoint, Runtime, ServicesError};
use clap::Parser;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// Why a run ended badly; each message is one line for a person.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A flag or config value that cannot work.
    #[error("{0}")]
    Settings(#[from] config::ConfigError),
    /// The metadata services could not be built (a credentials setting is a settings error).
    #[error("{0}")]
    Services(#[from] ServicesError),
    /// The TUN device or the metadata address could not be claimed.
    #[error("{0}")]
    Platform(#[from] PlatformError),
    /// A `--listen` address could not be bound (before anything was claimed).
    #[error("cannot listen on {address}: {source}{hint}")]
    Listen {
        /// The `--listen` address as given.
        address: SocketAddr,
        /// The kernel's refusal of the bind.
        source: io::Error,
        /// What to do about the usual refusals (port taken, below 1024, no such address),
        /// starting with ": "; empty for the rest.
        hint: &'static str,
    },
    /// The `--metrics` address could not be bound (before anything was claimed): a setting
    /// to change, so exit 2.
    #[error("cannot serve metrics on {address}: {source}{hint}")]
    Metrics {
        /// The `--metrics` address as given.
        address: SocketAddr,
        /// The kernel's refusal of the bind.
        source: io::Error,
        /// What to do about the usual refusals, starting with ": "; empty for the rest.
        hint: &'static str,
    },
    /// The claim on the metadata address was lost while serving (the device deleted or set
    /// down, its address or the route gone): the run ends, non-zero, so that a supervisor
    /// starts a new one, which claims the address afresh.
    #[error(
        "stopped serving: {0}; start imds-tun again (systemd's Restart=on-failure does so by \
         itself)"
    )]
    ClaimLost(platform::ClaimLoss),
    /// Reading or writing the TUN failed while serving: the device went away under us.
    #[error("the TUN device failed: {0}; was it deleted? restart imds-tun")]
    TunFailed(io::Error),
    /// tokio's multi-threaded runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
    /// SIGINT, SIGTERM or SIGHUP could not be caught, so no clean stop would be possible.
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    /// Becoming the `sudo` user or `--user` failed, or left a way back to root.
    #[error("{0}")]
    Privileges(#[from] privileges::PrivilegeError),
    /// The SDK's environment could not be prepared because other threads already ran.
    #[error("{0}")]
    Environment(#[from] platform::ThreadsRunning),
    /// `--pass-through` found no real metadata service to pass to (no route, or a route into
    /// another TUN): a setting that cannot work here, so exit 2.
    #[error("{0}")]
    PassThrough(#[from] platform::real_route::NoRealRoute),
    /// `imds-tun exec`'s namespace or pasta's guard could not be made.
    #[cfg(target_os = "linux")]
    #[error("{0}")]
    ExecPrepare(#[from] crate::exec::PrepareError),
    /// `imds-tun exec`'s CMD could not be given its network.
    #[cfg(target_os = "linux")]
    #[error("{0}")]
    ExecLaunch(#[from] crate::exec::LaunchError),
    /// `--pass-through` cannot bind its connections to the real service's interface once root
    /// is given up (an old kernel).
    #[error("{0}")]
    PassThroughSockets(String),
}

impl AppError {
    /// 2 for settings that cannot work (the user fixes a flag or key: an unknown `--user` too),
    /// 1 for the rest.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            AppError::Settings(_)
            | AppError::Metrics { .. }
            | AppError::PassThrough(_)
            | AppError::Services(ServicesError::Credentials(_))
            | AppError::Privileges(privileges::PrivilegeError::UnknownUser(_)) => ExitCode::from(2),
            #[cfg(target_os = "linux")]
            AppError::ExecPrepare(crate::exec::PrepareError::Namespace(error)) if error.refused => {
                ExitCode::from(2)
            }
            _ => ExitCode::FAILURE,
        }
    }
}

/// The process entry point: exit 0 after a clean run, else [`AppError::exit_code`].
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return command_line_error(error),
    };
    match cli.command {
        Some(crate::cli::Command::Ctl { what }) => return ctl_main(what),
        Some(crate::cli::Command::Completions { shell }) => {
            return print_reference("the completion script", |out| {
                crate::cli::reference::completions(shell, out)
            });
        }
        Some(crate::cli::Command::Man) => {
            return print_reference("the man page", crate::cli::reference::man_page);
        }
        Some(crate::cli::Command::Env(args)) => return env_main(&args),
        Some(crate::cli::Command::Record(args)) => return crate::record::main(args),
        Some(crate::cli::Command::Exec(args)) => return crate::exec::main(*args),
        None => {}
    }
    if cli.check {
        return crate::doctor::main(cli);
    }
    let ended = cli
        .into_settings()
        .map_err(AppError::from)
        .and_then(|settings| {
            // Once the settings say how; nothing before logs (a settings error is one line of
            // its own).
            crate::logging::init(settings.log_format);
            run(settings, None)
        });
    exit_with(ended)
}

/// The exit status of a run that `ended` so, its error said in one line.
fn exit_with(ended: Result<Ended, AppError>) -> ExitCode {
    match ended {
        Ok(Ended::Stopped(_)) => ExitCode::SUCCESS,
        Ok(Ended::Command(status)) => ExitCode::from(status),
        Err(error) => {
            if crate::logging::writes_json() {
                tracing::error!("imds-tun: {error}");
            } else {
                output::error_line(&format!("imds-tun: {error}"));
            }
            error.exit_code()
        }
    }
}

/// How a run that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Stopped by this signal: exit 0.
    Stopped(&'static str),
    /// `imds-tun exec`'s CMD ended with this status, which becomes imds-tun's.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Command(u8),
}

/// `imds-tun exec`: the namespace and pasta's guard before any thread exists, then a run that
/// serves inside the namespace and ends with CMD.
#[cfg(target_os = "linux")]
pub(crate) fn run_exec(plan: crate::exec::Plan) -> ExitCode {
    crate::logging::init_filtered(plan.settings.log_format, crate::logging::EXEC_FILTER);
    let prepared = crate::exec::prepare(plan);
    exit_with(
        prepared
            .map_err(AppError::from)
            .and_then(|(settings, exec)| run(settings, Some(exec))),
    )
}

/// One run, from the settings to a clean stop (or, for `exec`, CMD's end).
fn run(settings: Settings, exec: Option<Exec>) -> Result<Ended, AppError> {
    raise_open_file_limit();
    // Decided before anything is created, so an unknown --user creates nothing; and before the
    // runtime's threads exist, so what is cut here is cut in all of them.
    let serve_as = privileges::account_to_serve_as(settings.user.as_deref())?;
    if let Some(account) = &serve_as {
        privileges::prepare_to_become(account)?;
    }
    // aws-config reads only the process environment; prepare it while no thread can read it.
    if let Some(local) = settings.local().filter(|local| !local.credentials.mock) {
        let changes =
            crate::credentials::setup::sdk_environment(local.credentials.profile.as_deref());
        platform::change_environment_before_threads(&changes)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(AppError::Runtime)?;
    runtime.block_on(serve(settings, serve_as, exec))
}

/// What `imds-tun exec` brings to a run (nothing on other systems, which refuse it earlier).
#[cfg(target_os = "linux")]
type Exec = crate::exec::Prepared;
#[cfg(not(target_os = "linux"))]
type Exec = std::convert::Infallible;

/// systemd and most shells start a process with a soft open-file limit of 1024 and a far
/// higher hard one; each `--listen` connection is a descriptor. What is left decides the
/// `--listen` connection limit (`crate::runtime`); the unit sets `LimitNOFILE=` itself, as its
/// system-call filter forbids raising it here.
fn raise_open_file_limit() {
    match platform::resources::raise_descriptor_limit() {
        Ok(limit) => tracing::debug!(was = limit.was, now = limit.now, "open-file limit"),
        Err(error) => tracing::debug!(%error, "cannot raise the open-file limit"),
    }
}

async fn serve(
    mut settings: Settings,
    serve_as: Option<privileges::Account>,
    exec: Option<Exec>,
) -> Result<Ended, AppError> {
    let mut signals = Signals::install().map_err(AppError::Signals)?;
    // Before anything is claimed: afterwards the kernel's answer would be our own TUN.
    find_real_service(&mut settings)?;
    // The credential source's simulated outage: one per process, held by every source and by
    // the control server.
    let outage = Outage::default();
    let built = crate::runtime::services(&settings.backend, &outage).await?;

    let mut listeners = Vec::with_capacity(settings.listen.listeners.len());
    for listener in &settings.listen.listeners {
        listeners.push(BoundListener {
            socket: bind(listener.address).await?,
            settings: listener.clone(),
        });
    }
    let metrics_endpoint = match &settings.metrics {
        Some(wanted) => Some(MetricsEndpoint {
            socket: bind_metrics(wanted.address).await?,
            access: wanted.access.clone(),
        }),
        None => None,
    };
    let metrics_address = metrics_endpoint
        .as_ref()
        .and_then(|endpoint| endpoint.socket.local_addr().ok());
    #[cfg(target_os = "linux")]
    let (served, mut launch) = match exec {
        Some(exec) => {
            let (served, launch) = exec.split();
            (Some(served), Some(launch))
        }
        None => (None, None),
    };
    #[cfg(not(target_os = "linux"))]
    let served: Option<std::convert::Infallible> = exec;
    let (tun, kernel, control_listener) = match served {
        #[cfg(target_os = "linux")]
        Some(served) => (
            Some(platform::adopt_device(served.device)?),
            served.kernel,
            Some(served.control),
        ),
        #[cfg(not(target_os = "linux"))]
        Some(never) => match never {},
        None => (
            match &settings.tun {
                Some(tun) => Some(platform::claim_metadata_address(&tun.device)?),
                None => None,
            },
            crate::attribution::KernelSockets::here(),
            None,
        ),
    };
    let tun_name = tun.as_ref().map(|tun| tun.name().to_string());
    // Watched from now on: a device deleted, set down, stripped of its address or routed past
    // ends the run instead of leaving a process that holds the claim and serves nothing. Not
    // `exec`'s: its namespace is CMD's, and CMD has no capability to change it.
    let mut claim = match control_listener {
        Some(_) => None,
        None => tun.as_ref().map(platform::AsyncTun::watch),
    };
    let bound: Vec<SocketAddr> = listeners
        .iter()
        .filter_map(|listener| listener.socket.local_addr().ok())
        .collect();
    warn_about_open_listeners(&listeners);

    let faults = Arc::new(OnceLock::new());
    let metrics = Metrics::new(Some(state_reader(&built, faults.clone())));
    let mut running = Runtime::start_counting(
        &settings,
        built.services,
        tun,
        listeners,
        metrics,
        metrics_endpoint,
        kernel,
    );
    let _ = faults.set(running.faults());
    // Bound while still root, so `ctl` can tell it from a squatter (see control::client).
    let serving = crate::control::server::Serving {
        credentials: built.credentials,
        tokens: built.tokens,
        packets: running.packet_budget(),
    };
    let control = start_control(
        &running,
        built.board,
        built.cloud_boards,
        serving,
        &settings,
        outage,
        match control_listener {
            Some(listener) => ControlSocket::Bound(listener),
            None => ControlSocket::Bind(serve_as.as_ref()),
        },
    )
    .await;

    // Everything that needed root exists now: the TUN (its descriptor needs no privilege to
    // use) and the sockets. Give root up before the first request is served.
    if let Some(account) = &serve_as {
        privileges::become_account(account)?;
        tracing::info!(user = %account.name, uid = %account.uid, "gave up root");
    }
    check_pass_through_sockets(&settings)?;
    announce(&settings, tun_name.as_deref(), &bound);
    if let Some(address) = metrics_address {
        tracing::info!("serving Prometheus metrics at http://{address}/metrics");
    }
    // Said once it is true: a start that fails before serving never served as anyone.
    if serve_as.is_none() && nix::unistd::geteuid().is_root() {
        tracing::info!("serving as root; pass --user NAME to serve as an unprivileged user");
    }
    if let Some(account) = serve_as
        .as_ref()
        .filter(|account| privileges::is_shared_account(account.uid, &account.name))
    {
        tracing::warn!(
            "--user {name}: {name} is an account other programs share, and each of their \
             processes may signal imds-tun (and so end it); serve as an account of its own \
             (`useradd --system --no-create-home --shell /usr/sbin/nologin imds-tun`, then \
             --user imds-tun); imds-tun ctl stays root's{unless}",
            name = account.name,
            unless = if settings.allow_shared_user_ctl {
                " (but --allow-shared-user-ctl lets it in)"
            } else {
                " unless --allow-shared-user-ctl"
            }
        );
    }

    #[cfg(target_os = "linux")]
    let mut command = match launch.as_mut() {
        Some(launch) => Some(launch.start()?),
        None => None,
    };
    #[cfg(not(target_os = "linux"))]
    let mut command: Option<std::convert::Infallible> = None;

    let outcome = tokio::select! {
        ended = ended(&mut signals, command.as_mut()) => {
            // Said once new clients are refused, so that whoever reads the line (a supervisor,
            // a test) can rely on it: a client that connects after it gets a RST, not an
            // accepted connection closed without an answer.
            running.stop_accepting().await;
            match ended {
                Ended::Stopped(signal) => {
                    tracing::info!("received {signal}; finishing in-flight requests");
                }
                Ended::Command(status) => {
                    tracing::info!("CMD ended (status {status}); finishing in-flight requests");
                }
            }
            Ok(ended)
        }
        loss = claim_lost(claim.as_mut()) => Err(AppError::ClaimLost(loss)),
        error = running.failed() => {
            // The read error and the kernel's news race; say what the kernel says happened.
            match claim.as_ref().and_then(platform::ClaimWatch::check) {
                Some(loss) => Err(AppError::ClaimLost(loss)),
                None => Err(AppError::TunFailed(error)),
            }
        }
    };
    drop(control);
    let callers = running.callers();
    running.stop().await;
    // After the stop, so the requests finished in the grace are counted; not in proxy mode,
    // where the upstream, not this process, tells a tokenless request from another.
    if outcome.is_ok() && settings.local().is_some() {
        crate::callers::report::log_at_exit(&callers.report(), !callers.was_reset());
    }
    // CMD (killed if it still runs) and pasta go with the run.
    #[cfg(target_os = "linux")]
    {
        drop(command);
        drop(launch);
    }
    outcome
}

/// How the run ends: a signal, or with `exec`, CMD's end (the signals then passed on to CMD).
#[cfg(target_os = "linux")]
async fn ended(signals: &mut Signals, command: Option<&mut crate::exec::Started>) -> Ended {
    use crate::exec::Started;
    match command {
        Some(Started::Running(command)) => loop {
            let received = tokio::select! {
                status = command.finished() => return Ended::Command(status),
                received = signals.next_signal() => received,
            };
            command.forward(received.0, received.1);
        },
        Some(Started::Failed(status)) => Ended::Command(*status),
        None => Ended::Stopped(signals.next().await),
    }
}

#[cfg(not(target_os = "linux"))]
async fn ended(signals: &mut Signals, command: Option<&mut std::convert::Infallible>) -> Ended {
    if let Some(never) = command {
        match *never {}
    }
    Ended::Stopped(signals.next().await)
}

/// With `--pass-through`, asks the kernel where it routes the metadata address now, and
/// binds the pass-through's connections to that interface; the device's claim then leaves a
/// host route out of it in place (the device's own route outranks it).
fn find_real_service(settings: &mut Settings) -> Result<(), AppError> {
    let config::Backend::Local(local) = &mut settings.backend else {
        return Ok(());
    };
    let Some(pass_through) = local.pass_through.as_mut() else {
        return Ok(());
    };
    let route = platform::real_metadata_route()?;
    tracing::info!("--pass-through: the real metadata service is {route}");
    pass_through.upstream.interface = Some(route.interface.clone());
    if let Some(tun) = settings.tun.as_mut() {
        tun.device.real_route = Some(route.interface);
    }
    Ok(())
}

/// With `--pass-through`, proves that connections can still be bound to the real service's
/// interface now that root is given up (see [`platform::real_route::may_bind_to`]).
fn check_pass_through_sockets(settings: &Settings) -> Result<(), AppError> {
    let Some(interface) = settings
        .local()
        .and_then(|local| local.pass_through.as_ref())
        .and_then(|pass_through| pass_through.upstream.interface.as_deref())
    else {
        return Ok(());
    };
    platform::real_route::may_bind_to(interface).map_err(|error| {
        AppError::PassThroughSockets(format!(
            "--pass-through: cannot bind a connection to {interface} after giving up root \
             ({error}); Linux before 5.7 needs CAP_NET_RAW for that: use a newer kernel, or \
             drop --pass-through"
        ))
    })
}

/// Waits until the claim is lost; never without a TUN.
async fn claim_lost(watch: Option<&mut platform::ClaimWatch>) -> platform::ClaimLoss {
    match watch {
        Some(watch) => watch.lost().await,
        None => std::future::pending().await,
    }
}

/// The control channel and the scenario of the local service; dropping it stops both.
struct Control {
    _server: Option<crate::control::server::ControlServer>,
    scenario: crate::control::server::Scenario,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.scenario.stop();
    }
}

/// Where the control channel listens.
enum ControlSocket<'a> {
    /// Bound now, in this namespace; the user served as (if any) may use it.
    Bind(Option<&'a privileges::Account>),
    /// Bound already, in `imds-tun exec`'s namespace.
    Bound(std::os::unix::net::UnixListener),
}

/// The control channel of the local service (its interruptions `board` and the other clouds'
/// events, `clouds`; what it is `serving`, for `status`) and the start-up scenario, playing;
/// `None` in upstream mode (the upstream is the one to control). When the
/// socket name is taken that is said once, and the metadata service and the scenario run on
/// without a control channel: a squatter can neither stop the one nor cancel the other.
async fn start_control(
    running: &Runtime,
    board: Option<Arc<interruptions::Board>>,
    clouds: crate::control::clouds::CloudBoards,
    serving: crate::control::server::Serving,
    settings: &Settings,
    outage: Outage,
    socket: ControlSocket<'_>,
) -> Option<Control> {
    use crate::control::server::{Allowed, ControlServer, Scenario, Targets};
    let targets = Targets {
        board: board?,
        faults: running.faults(),
        outage,
        callers: running.callers(),
        serving,
        clouds,
    };
    // `exec`'s socket is bound in CMD's namespace, which only CMD (and whoever may enter the
    // namespace: the user running imds-tun, root) can reach: CMD's user may use it, shared
    // account or not.
    let allowed = Allowed {
        user: match &socket {
            ControlSocket::Bound(_) => Some(nix::unistd::geteuid().as_raw()),
            ControlSocket::Bind(serve_as) => {
                control_user(*serve_as, settings.allow_shared_user_ctl)
            }
        },
    };
    let scenario = Scenario::default();
    let started = match socket {
        ControlSocket::Bound(listener) => {
            ControlServer::serve(listener, targets.clone(), allowed, scenario.clone())
        }
        ControlSocket::Bind(_) => ControlServer::start(targets.clone(), allowed, scenario.clone()),
    };
    let server = match started {
        Ok(server) => Some(server),
        Err(error) => {
            tracing::warn!("{error}");
            None
        }
    };
    if let Some(steps) = settings.local().and_then(|local| local.scenario.clone()) {
        scenario.play(targets, steps).await;
    }
    Some(Control {
        _server: server,
        scenario,
    })
}

/// Who besides root may use `imds-tun ctl`: the user served as (or, without root, the user
/// running), unless that is an account other programs share (nobody), whose every process
/// could then set faults and end the service: that takes `--allow-shared-user-ctl`.
fn control_user(serve_as: Option<&privileges::Account>, allow_shared: bool) -> Option<u32> {
    let (uid, name) = match serve_as {
        Some(account) => (account.uid, account.name.clone()),
        None => {
            let uid = nix::unistd::geteuid();
            if uid.is_root() {
                return None;
            }
            let name = nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map_or_else(String::new, |user| user.name);
            (uid, name)
        }
    };
    if privileges::is_shared_account(uid, &name) && !allow_shared {
        return None;
    }
    Some(uid.as_raw())
}

/// A non-loopback listener that admits every request is the user's explicit choice; say what it
/// means once.
fn warn_about_open_listeners(listeners: &[BoundListener]) {
    for listener in listeners {
        if matches!(listener.settings.access, Access::Open)
            && !listener.settings.address.ip().is_loopback()
        {
            let address = listener
                .socket
                .local_addr()
                .unwrap_or(listener.settings.address);
            tracing::warn!(
                "--insecure-listen-without-token: {address} serves role credentials to anyone who can reach it"
            );
        }
    }
}

/// `imds-tun ctl ...`: one request, the status as JSON on stdout (exit 0), or one line on
/// stderr (exit 1).
fn ctl_main(command: crate::cli::CtlCommand) -> ExitCode {
    let as_table = matches!(command, crate::cli::CtlCommand::Callers { json: false, .. });
    let request = match command.into_request() {
        Ok(request) => request,
        Err(error) => {
            output::error_line(&format!("imds-tun ctl: {error}"));
            return ExitCode::from(2);
        }
    };
    match crate::control::client::send(&request) {
        Ok(response) if response.ok => {
            for note in &response.notes {
                output::error_line(&format!("imds-tun ctl: {note}"));
            }
            let status = response.status.unwrap_or_default();
            let text = match serde_json::from_value::<crate::callers::Report>(status.clone()) {
                Ok(report) if as_table => report.table().trim_end().to_owned(),
                _ => serde_json::to_string_pretty(&status).unwrap_or_default(),
            };
            let written = output::print_line(&text);
            output::finish(written, ExitCode::SUCCESS)
        }
        Ok(response) => {
            output::error_line(&format!(
                "imds-tun ctl: {}",
                response.error.unwrap_or_else(|| "refused".into())
            ));
            ExitCode::FAILURE
        }
        Err(error) => {
            output::error_line(&format!("imds-tun ctl: {error}"));
            ExitCode::FAILURE
        }
    }
}

/// `imds-tun env ...`: the `export` lines on stdout (exit 0), or one line on stderr (exit 2).
fn env_main(args: &crate::container_env::EnvArgs) -> ExitCode {
    let cwd = std::env::current_dir().unwrap_or_default();
    match crate::container_env::render(args, &cwd) {
        Ok(lines) => output::finish(output::print(&lines), ExitCode::SUCCESS),
        Err(error) => {
            output::error_line(&format!("imds-tun env: {error}"));
            ExitCode::from(2)
        }
    }
}

/// `imds-tun man` and `imds-tun completions SHELL`: `what` on stdout, exit 0. A reader that
/// went away (`imds-tun man | head`) ends it quietly; any other write error is one line, exit 1.
fn print_reference(
    what: &str,
    render: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
) -> ExitCode {
    let mut stdout = io::stdout().lock();
    match render(&mut stdout).and_then(|()| io::Write::flush(&mut stdout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("imds-tun: cannot write {what}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `--help` and `--version` as clap prints them (exit 0); any other command-line error as clap
/// words it, whole (the usage, a "similar argument exists" tip, the possible values), with
/// `imds-tun: ` for its `error: ` like every failure, and the help to read pointing at the
/// subcommand the user typed (`imds-tun ctl spot --help`), exit 2.
fn command_line_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        // clap writes help and version to stdout: a closed pipe ends quietly, a full disk is
        // one line.
        let printed = error
            .print()
            .and_then(|()| std::io::Write::flush(&mut std::io::stdout()));
        return output::finish(output::written(printed), ExitCode::SUCCESS);
    }
    let arguments: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let help = help_command(&arguments);
    // A missing subcommand (`imds-tun ctl`) is clap's help text, on stderr: an error all the same.
    let text = if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        error.to_string()
    } else {
        explain_command_line_error(&error.to_string(), &help)
    };
    // A failed write is dropped, never a panic: there is nowhere left to say it.
    let _ = io::Write::write_all(&mut io::stderr().lock(), text.as_bytes());
    ExitCode::from(2)
}

/// clap's message with `imds-tun: ` instead of its `error: `, and its closing "try '--help'"
/// naming `help`, the command whose help says more.
fn explain_command_line_error(clap_text: &str, help: &str) -> String {
    let text = clap_text.trim_end();
    let text = text.strip_prefix("error: ").unwrap_or(text);
    let body = text
        .strip_suffix("For more information, try '--help'.")
        .unwrap_or(text)
        .trim_end();
    format!("imds-tun: {body}\n\nFor more information, try '{help} --help'.\n")
}

/// `imds-tun` followed by the subcommands `arguments` name (`imds-tun ctl fault`), found by
/// walking the real command tree: a word is a subcommand only where the command reached so far
/// has one of that name and it is not the value of the option before it.
fn help_command(arguments: &[std::ffi::OsString]) -> String {
    use clap::CommandFactory;
    let mut command = Cli::command();
    let mut path = vec![command.get_name().to_owned()];
    let mut words = arguments.iter().skip(1).filter_map(|word| word.to_str());
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            let takes_value = !long.contains('=')
                && command
                    .get_arguments()
                    .any(|arg| arg.get_long() == Some(long) && arg.get_action().takes_values());
            if takes_value {
                words.next();
            }
            continue;
        }
        let Some(sub) = command.find_subcommand(word).cloned() else {
            continue;
        };
        path.push(sub.get_name().to_owned());
        command = sub;
    }
    path.join(" ")
}

async fn bind(address: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(address).await.map_err(|source| {
        let hint = crate::doctor::listen_hint(&source);
        AppError::Listen {
            address,
            source,
            hint,
        }
    })
}

/// Binds the `--metrics` socket; a refusal is a setting to change (exit 2).
async fn bind_metrics(address: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(address).await.map_err(|source| {
        let hint = crate::doctor::metrics_hint(&source);
        AppError::Metrics {
            address,
            source,
            hint,
        }
    })
}

/// What the metrics read at each scrape, from their owners: the credentials' record, the
/// faults standing (`faults`, filled in once the runtime exists) and the IMDSv2 token mint.
fn state_reader(
    built: &LocalServices,
    faults: Arc<OnceLock<Arc<crate::http::faults::FaultBoard>>>,
) -> StateReader {
    let credentials = built.credentials.clone();
    let tokens = built.tokens.clone();
    Box::new(move || State {
        roles: credentials
            .iter()
            .flat_map(|record| record.report())
            .map(|role| RoleState {
                role: role.role,
                expiration_unix: role.expiration.map(time::OffsetDateTime::unix_timestamp),
                refreshes_ok: role.refreshes_ok,
                refreshes_failed: role.refreshes_failed,
            })
            .collect(),
        faults_active: faults.get().map_or(0, |board| {
            u64::try_from(board.list(tokio::time::Instant::now()).len()).unwrap_or(u64::MAX)
        }),
        tokens_issued: tokens.as_ref().map_or(0, |mint| mint.issued()),
    })
}

fn announce(settings: &Settings, tun_name: Option<&str>, listeners: &[SocketAddr]) {
    let mode = match &settings.backend {
        config::Backend::Upstream(upstream) => format!(
            "forwarding to upstream http://{}",
            upstream.url.authority().map_or("", |a| a.as_str())
        ),
        config::Backend::Local(local) => {
            let policy = match local.token_policy {
                TokenPolicy::Optional => "IMDSv2 optional",
                TokenPolicy::Required => "IMDSv2 required",
            };
            match &local.gce {
                Some(gce) => format!(
                    "{policy}; GCE metadata for project {}",
                    gce.instance.project_id
                ),
                None => policy.to_owned(),
            }
        }
    };
    let kernel: Vec<String> = listeners.iter().map(SocketAddr::to_string).collect();
    let also = if kernel.is_empty() {
        String::new()
    } else {
        format!("; also listening on {}", kernel.join(", "))
    };
    let mut ipv6 = if settings.tun.as_ref().is_some_and(|tun| tun.device.ipv6) {
        format!(" and [{METADATA_ADDRESS_V6}]:80")
    } else {
        String::new()
    };
    // The container endpoints' addresses (--ecs, --eks-pod-identity), claimed on the same TUN.
    for extra in settings.tun.iter().flat_map(|tun| &tun.device.extra) {
        let address = std::net::SocketAddr::new(extra.address(), 80);
        ipv6.push_str(&format!(", {address} ({})", extra.flag()));
    }
    match tun_name {
        Some(name) => tracing::info!(
            "serving EC2 instance metadata on {METADATA_ADDRESS}:80{ipv6} via TUN device {name} ({mode}){also}"
        ),
        None => tracing::info!(
            "serving EC2 instance metadata without a TUN ({mode}); listening on {}",
            kernel.join(", ")
        ),
    }
}

/// The signals that end a run.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> io::Result<Self> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        self.next_signal().await.0
    }

    /// The next signal received, by name and number.
    async fn next_signal(&mut self) -> (&'static str, nix::sys::signal::Signal) {
        use nix::sys::signal::Signal;
        tokio::select! {
            _ = self.interrupt.recv() => ("SIGINT", Signal::SIGINT),
            _ = self.terminate.recv() => ("SIGTERM", Signal::SIGTERM),
            _ = self.hangup.recv() => ("SIGHUP", Signal::SIGHUP),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<std::ffi::OsString> {
        line.split_whitespace().map(Into::into).collect()
    }

    #[test]
    fn the_help_named_is_that_of_the_subcommand_typed() {
        for (line, help) in [
            ("imds-tun --regoin x", "imds-tun"),
            ("imds-tun ctl spot", "imds-tun ctl spot"),
            (
                "imds-tun ctl lifecycle terminated",
                "imds-tun ctl lifecycle",
            ),
            ("imds-tun ctl fault list --bogus", "imds-tun ctl fault list"),
            // A value that happens to be a subcommand's name is still the option's value.
            ("imds-tun --region ctl --regoin", "imds-tun"),
            ("imds-tun --region=x ctl spot", "imds-tun ctl spot"),
            ("imds-tun -- ctl", "imds-tun"),
        ] {
            assert_eq!(help_command(&words(line)), help, "{line}");
        }
    }

    #[test]
    fn clap_s_message_is_kept_whole_and_points_at_that_help() {
        let clap = "error: the following required arguments were not provided:\n  --action \
                    <ACTION>\n\nUsage: imds-tun ctl spot --action <ACTION>\n\nFor more \
                    information, try '--help'.\n";
        assert_eq!(
            explain_command_line_error(clap, "imds-tun ctl spot"),
            "imds-tun: the following required arguments were not provided:\n  --action \
             <ACTION>\n\nUsage: imds-tun ctl spot --action <ACTION>\n\nFor more information, \
             try 'imds-tun ctl spot --help'.\n"
        );
        // A message without clap's closing line still gets the pointer, once.
        let text = explain_command_line_error("error: something", "imds-tun");
        assert_eq!(
            text,
            "imds-tun: something\n\nFor more information, try 'imds-tun --help'.\n"
        );
    }
}
