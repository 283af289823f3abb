//! One run of imds-tun: settings → TUN and stack → HTTP server → signals → clean exit.
//!
//! This is the only place that knows every layer. It binds the kernel listeners before creating
//! the TUN (so a busy port fails before anything is claimed), prints one start-up line, accepts
//! connections from both paths into the same [`Server`], and on SIGINT, SIGTERM or SIGHUP stops
//! accepting, lets in-flight requests finish within the grace period and exits 0.

use crate::cli::Cli;
use crate::clouds::ec2::{Ec2, interruptions};
use crate::config::HardeningSettings;
use crate::config::{self, Settings, TokenPolicy};
use crate::http::{Access, Limits, Server, Services, Upstream};
use crate::platform::privileges;
use crate::platform::{self, METADATA_ADDRESS, METADATA_ADDRESS_V6, PlatformError, TunRequest};
use crate::stack::{self, StackConfig};
use clap::Parser;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

mod stack_connection;

/// Why a run ended badly; each message is one line for a person.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Platform(#[from] PlatformError),
    #[error("cannot listen on {address}: {source}{hint}")]
    Listen {
        address: SocketAddr,
        source: io::Error,
        hint: &'static str,
    },
    #[error("the TUN device failed: {0}; was it deleted? restart imds-tun")]
    TunFailed(io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    #[error("{0}")]
    Privileges(#[from] privileges::PrivilegeError),
}

/// The process entry point: exit 0 after a clean run, 2 for bad settings, 1 for anything else.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return command_line_error(error),
    };
    if let Some(crate::cli::Command::Ctl { what }) = cli.command {
        return ctl_main(what);
    }
    if cli.check {
        return crate::doctor::main(cli);
    }
    init_logging();
    let settings = match cli.into_settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("imds-tun: {error}");
            return ExitCode::from(2);
        }
    };
    // Decided before anything is created, so an unknown --user creates nothing; and before the
    // runtime's threads exist, so what is cut here is cut in all of them.
    let serve_as =
        match account_to_serve_as(settings.hardening.user.as_deref()).and_then(|account| {
            if let Some(account) = &account {
                privileges::prepare_to_become(account)?;
            }
            Ok(account)
        }) {
            Ok(account) => account,
            Err(error) => {
                eprintln!("imds-tun: {error}");
                return ExitCode::FAILURE;
            }
        };
    // aws-config reads only the process environment; prepare it while no thread can read it.
    if let Some(local) = settings.local().filter(|local| !local.credentials.mock) {
        let changes =
            crate::credentials::setup::sdk_environment(local.credentials.profile.as_deref());
        if let Err(error) = platform::change_environment_before_threads(&changes) {
            eprintln!("imds-tun: {error}");
            return ExitCode::FAILURE;
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("imds-tun: {}", AppError::Runtime(error));
            return ExitCode::FAILURE;
        }
    };
    // The credential source's simulated outage: one per process, held by every source and by
    // the control server.
    let outage = crate::credentials::outage::Outage::default();
    // Credential errors are settings errors (exit 2): a malformed ARN, an unknown profile, an
    // MFA serial without a code. A network failure is not: the source retries on its own.
    // Upstream mode answers nothing locally: no credential source is needed or probed.
    let (services, board) = match &settings.backend {
        config::Backend::Upstream(upstream) => {
            (crate::clouds::forwarding(Upstream::new(upstream)), None)
        }
        config::Backend::Local(local) => {
            let served = crate::credentials::ServedAs {
                role_name: &local.instance.role_name,
                region: &local.instance.region,
                hostname: &local.instance.hostname,
            };
            match runtime.block_on(crate::credentials::select(
                &local.credentials,
                served,
                &outage,
            )) {
                Ok(selected) => {
                    if selected.fake {
                        tracing::warn!("{}", selected.summary);
                    } else if !selected.summary.is_empty() {
                        tracing::info!("{}", selected.summary);
                    }
                    let mut ec2 = Ec2::new(&local.instance, local.token_policy, selected.source);
                    if !local.credentials.caller_roles.is_empty() {
                        for rule in &local.credentials.caller_roles {
                            tracing::info!(
                                "credentials: callers matching {} get role {} (assumed when first asked)",
                                rule.selector,
                                rule.role.arn
                            );
                        }
                        ec2 = ec2.with_caller_roles(crate::credentials::roles::CallerRoles::new(
                            &local.credentials.caller_roles,
                            selected.starter,
                        ));
                    }
                    let board = ec2.interruptions();
                    let gce = match local.gce.clone().map(start_gce).transpose() {
                        Ok(gce) => gce,
                        Err(error) => {
                            eprintln!("imds-tun: {error}");
                            return ExitCode::FAILURE;
                        }
                    };
                    let azure = crate::clouds::azure::Azure::new(
                        local.azure.instance.clone(),
                        local.azure.tokens.clone(),
                    );
                    (crate::clouds::local(ec2, gce, Some(azure)), Some(board))
                }
                Err(error) => {
                    eprintln!("imds-tun: {error}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    match runtime.block_on(run(settings, services, board, outage, serve_as)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("imds-tun: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `--help` and `--version` as clap prints them; any other command-line error as the one line
/// every failure gets (`imds-tun: ...`), exit 2, instead of clap's usage block.
/// The GCE metadata server for `settings`, saying at start-up where its tokens come from.
fn start_gce(
    settings: crate::clouds::gce::GceSettings,
) -> Result<crate::clouds::gce::Gce, crate::clouds::gce::identity_token::KeyError> {
    use crate::clouds::gce::tokens::{AccessTokenSource, IdentityTokenSource};
    let project = settings.instance.project_id.clone();
    match &settings.access_tokens {
        AccessTokenSource::Fake => tracing::warn!(
            project = %project,
            "GCE: serving FAKE access tokens ({}...): no Google API accepts them; give \
             --gcp-access-token-command 'gcloud auth print-access-token' for real ones",
            crate::clouds::gce::tokens::FAKE_PREFIX
        ),
        AccessTokenSource::Static(_) => {
            tracing::info!(project = %project, "GCE: serving a static access token")
        }
        AccessTokenSource::Command(line) => {
            tracing::info!(project = %project, command = %line, "GCE: access tokens from a command")
        }
    }
    if let IdentityTokenSource::Signed = settings.identity_tokens {
        tracing::warn!(
            "GCE: identity tokens are signed with imds-tun's PUBLISHED key (certificates at {}); \
             they prove nothing to anyone else",
            crate::clouds::gce::identity_token::CERTS_PATH
        );
    }
    let created = time::OffsetDateTime::now_utc().unix_timestamp();
    crate::clouds::gce::Gce::new(settings, created)
}

/// The control channel of the local service (its interruptions `board`), with the start-up
/// scenario playing; `None` in upstream mode (the upstream is the one to control) or when the
/// socket name is taken (said once: the metadata service runs on without it).
async fn start_control(
    server: &Server,
    board: Option<Arc<interruptions::Board>>,
    settings: &Settings,
    outage: crate::credentials::outage::Outage,
    serve_as: Option<&privileges::Account>,
) -> Option<crate::control::server::ControlServer> {
    let targets = crate::control::server::Targets {
        board: board?,
        faults: server.faults(),
        outage,
    };
    let allowed = crate::control::server::Allowed {
        user: serve_as
            .map(|account| account.uid.as_raw())
            .or_else(|| Some(nix::unistd::geteuid().as_raw()).filter(|uid| *uid != 0)),
    };
    match crate::control::server::ControlServer::start(targets.clone(), allowed) {
        Ok(control) => {
            if let Some(steps) = settings.local().and_then(|local| local.scenario.clone()) {
                control.play(targets, steps).await;
            }
            Some(control)
        }
        Err(error) => {
            tracing::warn!("{error}");
            None
        }
    }
}

/// `imds-tun ctl ...`: one request, the status as JSON on stdout (exit 0), or one line on
/// stderr (exit 1).
fn ctl_main(command: crate::cli::CtlCommand) -> ExitCode {
    let request = match command.into_request() {
        Ok(request) => request,
        Err(error) => {
            eprintln!("imds-tun ctl: {error}");
            return ExitCode::from(2);
        }
    };
    match crate::control::client::send(&request) {
        Ok(response) if response.ok => {
            let status = response.status.unwrap_or_default();
            println!(
                "{}",
                serde_json::to_string_pretty(&status).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(response) => {
            eprintln!(
                "imds-tun ctl: {}",
                response.error.unwrap_or_else(|| "refused".into())
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("imds-tun ctl: {error}");
            ExitCode::FAILURE
        }
    }
}

fn command_line_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    let text = error.to_string();
    let first = text.lines().next().unwrap_or_default();
    let reason = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("imds-tun: {reason} (see imds-tun --help)");
    ExitCode::from(2)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // aws-config logs its own provider failures as warnings on every retry; imds-tun logs
        // one line per failure itself (src/credentials/cache.rs).
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "info,aws_config=error,aws_smithy_runtime=error,aws_runtime=error",
            )
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

async fn run(
    settings: Settings,
    services: Services,
    board: Option<Arc<interruptions::Board>>,
    outage: crate::credentials::outage::Outage,
    serve_as: Option<privileges::Account>,
) -> Result<(), AppError> {
    let mut signals = Signals::install().map_err(AppError::Signals)?;

    let limits = Limits {
        header_timeout: settings.hardening.header_timeout,
        max_header_bytes: settings.hardening.max_header_bytes,
        max_path_length: settings.hardening.max_path_length,
        put_reply_hop_limit: settings.hop_limit,
    };
    // Opened now, while still root: who reads credentials goes to the log.
    let mut local_sources = vec![std::net::IpAddr::V4(platform::LOCAL_ADDRESS)];
    if settings.tun.as_ref().is_some_and(|tun| tun.ipv6) {
        local_sources.push(std::net::IpAddr::V6(platform::LOCAL_ADDRESS_V6));
    }
    // One service for both questions: who reads credentials, and whose connection gives way at
    // the connection limit.
    let attribution = Arc::new(crate::attribution::Attribution::open(local_sources));
    if cfg!(target_os = "linux") && !attribution.knows_socket_owners() {
        tracing::warn!(
            "cannot ask the kernel who owns client sockets (NETLINK_SOCK_DIAG); local users are \
             told apart neither in the credentials log nor at the connection limit"
        );
    }
    let server = Server::with_limits(services, limits).with_attribution(attribution.clone());

    let mut listeners = Vec::with_capacity(settings.listen.len());
    for &address in &settings.listen {
        listeners.push(bind(address).await?);
    }
    let tun = match &settings.tun {
        Some(tun) => Some(platform::claim_metadata_address(&TunRequest {
            name: tun.name.clone(),
            mtu: tun.mtu,
            ipv6: tun.ipv6,
            queue_packets: platform::transmit_queue_packets(settings.max_connections),
        })?),
        None => None,
    };
    let tun_name = tun.as_ref().map(|tun| tun.name().to_string());
    let (mut tun_listener, mut driver) = match tun {
        Some(tun) => {
            let mtu = settings.tun.as_ref().map_or(1500, |t| usize::from(t.mtu));
            let mut config = StackConfig::new(METADATA_ADDRESS, 80, mtu, settings.max_connections);
            config.address_v6 = settings
                .tun
                .as_ref()
                .is_some_and(|tun| tun.ipv6)
                .then_some(METADATA_ADDRESS_V6);
            config.allow_from = settings.hardening.allow_from.clone();
            config.first_data_timeout = settings.hardening.header_timeout.into();
            let (listener, driver) = stack::spawn(tun, config, attribution);
            (Some(listener), Some(driver))
        }
        None => (None, None),
    };

    // Bound while still root, so `ctl` can tell it from a squatter (see control::client).
    let control = start_control(&server, board, &settings, outage, serve_as.as_ref()).await;

    // Everything that needed root exists now: the TUN (its descriptor needs no privilege to
    // use) and the sockets. Give root up before the first request is served.
    if let Some(account) = &serve_as {
        privileges::become_account(account)?;
        tracing::info!(user = %account.name, uid = %account.uid, "gave up root");
    }

    announce(&settings, tun_name.as_deref(), &listeners);

    let (stop_accepting, accepting) = watch::channel(false);
    let server = Arc::new(server);
    let mut kernel_tasks = Vec::new();
    for listener in listeners {
        let access = listener_access(&settings, &listener);
        kernel_tasks.push(tokio::spawn(accept_kernel(
            listener,
            server.clone(),
            accepting.clone(),
            access,
            settings.hardening.clone(),
        )));
    }

    let outcome = loop {
        tokio::select! {
            signal = signals.next() => {
                tracing::info!("received {signal}; finishing in-flight requests");
                break Ok(());
            }
            accepted = accept_tun(&mut tun_listener) => match accepted {
                Some(stream) => {
                    let peer = stream.peer_addr();
                    // Our end as the kernel names it: the address the client dialled.
                    let ours: std::net::IpAddr = match peer {
                        std::net::SocketAddr::V4(_) => METADATA_ADDRESS.into(),
                        std::net::SocketAddr::V6(_) => METADATA_ADDRESS_V6.into(),
                    };
                    let ours = std::net::SocketAddr::new(ours, 80);
                    server.serve_from(stream, peer, Some(ours), Access::Open);
                }
                None => tun_listener = None,
            },
            error = driver_failed(&mut driver) => break Err(AppError::TunFailed(error)),
        }
    };

    let _ = stop_accepting.send(true);
    drop(control);
    drop(tun_listener);
    for task in kernel_tasks {
        let _ = task.await;
    }
    if let Some(server) = Arc::into_inner(server)
        && !server.shutdown(settings.shutdown_grace).await
    {
        tracing::warn!(
            "some requests were still running after {:?}; closing them",
            settings.shutdown_grace
        );
    }
    if let Some(driver) = driver {
        driver.stop(Duration::from_millis(20)).await;
    }
    outcome
}

async fn bind(address: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(address).await.map_err(|source| {
        let hint = match source.kind() {
            io::ErrorKind::AddrInUse => ": another process holds that port; pick another --listen",
            io::ErrorKind::PermissionDenied => ": ports below 1024 need root; pick a higher port",
            io::ErrorKind::AddrNotAvailable => ": no interface has that address",
            _ => "",
        };
        AppError::Listen {
            address,
            source,
            hint,
        }
    })
}

fn announce(settings: &Settings, tun_name: Option<&str>, listeners: &[TcpListener]) {
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
    let kernel: Vec<String> = listeners
        .iter()
        .filter_map(|listener| listener.local_addr().ok())
        .map(|address| address.to_string())
        .collect();
    let also = if kernel.is_empty() {
        String::new()
    } else {
        format!("; also listening on {}", kernel.join(", "))
    };
    let ipv6 = if settings.tun.as_ref().is_some_and(|tun| tun.ipv6) {
        format!(" and [{METADATA_ADDRESS_V6}]:80")
    } else {
        String::new()
    };
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

/// A non-loopback listener requires the shared token, unless the user opted out (loudly).
fn listener_access(settings: &Settings, listener: &TcpListener) -> Access {
    let Ok(address) = listener.local_addr() else {
        return Access::Open;
    };
    match settings.listeners.token_for(address) {
        Some(token) => Access::Token(Arc::new(token.clone())),
        None => {
            if !address.ip().is_loopback() {
                tracing::warn!(
                    "--insecure-listen-without-token: {address} serves role credentials to anyone who can reach it"
                );
            }
            Access::Open
        }
    }
}

async fn accept_kernel(
    listener: TcpListener,
    server: Arc<Server>,
    mut stop: watch::Receiver<bool>,
    access: Access,
    hardening: HardeningSettings,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if !hardening.allows(peer.ip()) => {
                    tracing::debug!(%peer, "refused by --allow-from");
                    // Close with a RST, as the TUN side does, rather than a FIN.
                    let _ = stream.set_zero_linger();
                    drop(stream);
                }
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let ours = stream.local_addr().ok();
                    server.serve_from(stream, peer, ours, access.clone());
                }
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    crate::warn_limited!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// The account to become after set-up: `--user` or the user behind sudo, when running as root
/// (see [`crate::platform::privileges`]); `None` to stay as we are.
fn account_to_serve_as(requested: Option<&str>) -> Result<Option<privileges::Account>, AppError> {
    let sudo_uid = std::env::var("SUDO_UID").ok();
    let sudo_gid = std::env::var("SUDO_GID").ok();
    let Some(account) =
        privileges::account_to_become(requested, sudo_uid.as_deref(), sudo_gid.as_deref())?
    else {
        if nix::unistd::geteuid().is_root() {
            tracing::info!("serving as root; pass --user NAME to serve as an unprivileged user");
        }
        return Ok(None);
    };
    let current = nix::unistd::geteuid();
    if current == account.uid {
        return Ok(None);
    }
    if !current.is_root() {
        return Err(AppError::Privileges(privileges::PrivilegeError::NotRoot(
            account.name,
        )));
    }
    Ok(Some(account))
}

async fn accept_tun(listener: &mut Option<stack::Listener>) -> Option<stack::TcpStream> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

async fn driver_failed(driver: &mut Option<stack::Driver>) -> io::Error {
    match driver {
        Some(driver) => driver.failed().await,
        None => std::future::pending().await,
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
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}
