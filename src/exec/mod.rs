//! `imds-tun exec [SETTINGS…] -- CMD [ARGS…]`: one command in a network namespace of its own,
//! whose 169.254.169.254 is this run's metadata service; no root needed where unprivileged
//! user namespaces are allowed (docs/exec.md).
//!
//! This module owns what differs from a plain start: the command line and the settings it
//! refuses, what must happen before any thread exists (the namespace, made by a child
//! (`platform::namespace`), and the guard ([`guard`]), which ends pasta and CMD's process group
//! with imds-tun), and, once serving, CMD's life ([`command`]): pasta attached first, CMD
//! started, signals forwarded, its exit status returned. Serving itself is `crate::app`'s, unchanged but for where the device, the control
//! socket and the kernel's sockets come from.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

#[cfg(target_os = "linux")]
pub mod command;
#[cfg(target_os = "linux")]
pub mod guard;

use crate::config::{Layer, Settings};
use crate::output;

/// Without pasta, and without `--network`, this is said once at start.
pub const NO_PASTA_LINE: &str = "imds-tun: pasta not found (Debian/Ubuntu package passt): CMD gets \
                                 loopback and the metadata service only; install passt, or pass \
                                 --network none";

/// `--network pasta` as root: refused, exit 2.
pub const ROOT_PASTA_LINE: &str = "--network pasta: pasta run as root becomes nobody before it \
                                   attaches, and nobody may not enter CMD's namespace; run imds-tun \
                                   exec as your own user for pasta, or pass --network none";

/// Without `--network`, as root, where pasta is installed: said once at start.
pub const ROOT_NO_PASTA_LINE: &str = "imds-tun: as root, CMD gets loopback and the metadata \
                                      service only (pasta cannot attach for root); run imds-tun \
                                      exec as your own user for the network, or pass --network \
                                      none";

/// `imds-tun exec`'s command line: the settings of a start, how CMD reaches the network, CMD.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// JSON file with any of the settings (as for imds-tun itself).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Every setting's flag, as for imds-tun itself.
    #[command(flatten)]
    pub settings: Layer,

    /// How CMD reaches anything but the metadata service: `pasta` attaches pasta (Debian and
    /// Ubuntu package passt) so CMD reaches the network as you would; `none` leaves CMD with
    /// loopback and the metadata service only [default: pasta when found on PATH, else none,
    /// said once].
    #[arg(long, value_enum, value_name = "MODE")]
    pub network: Option<Network>,

    /// The command to run and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// How CMD reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Network {
    /// Loopback and the metadata service only.
    None,
    /// pasta, attached to the namespace: the network as the user running imds-tun sees it.
    Pasta,
}

/// What `exec` is started with, checked: the settings and CMD.
#[derive(Debug)]
pub struct Plan {
    /// The settings, as a start would resolve them.
    pub settings: Settings,
    /// CMD and its arguments.
    pub command: Vec<OsString>,
    /// The network mode decided (`--network`, else by pasta's presence).
    pub network: Network,
    /// pasta's path when it is used.
    pub pasta: Option<PathBuf>,
    /// The TUN device to claim inside CMD's namespace.
    pub request: crate::platform::TunRequest,
}

/// A setting that cannot apply to `exec`, or pasta asked for and absent: one line, exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

impl ExecArgs {
    /// The settings resolved as a start resolves them (flag > file > default), refusing what
    /// `exec` cannot do, and the network mode decided.
    pub fn plan(self) -> Result<Plan, PlanError> {
        let cli = crate::cli::Cli {
            config: self.config,
            settings: self.settings,
            ..crate::cli::Cli::default()
        };
        let settings = cli
            .into_settings()
            .map_err(|error| PlanError(error.to_string()))?;
        let request = refuse_what_exec_cannot_do(&settings)?;
        // pasta started as root turns itself into nobody before it opens the namespace, which
        // nobody may not enter: as root, CMD has no pasta.
        let as_root = nix::unistd::geteuid().is_root();
        if as_root && self.network == Some(Network::Pasta) {
            return Err(PlanError(ROOT_PASTA_LINE.to_owned()));
        }
        let found = find_on_path("pasta").filter(|_| !as_root);
        let (network, pasta) = match (self.network, found) {
            (Some(Network::None), _) => (Network::None, None),
            (Some(Network::Pasta), Some(path)) | (None, Some(path)) => (Network::Pasta, Some(path)),
            (Some(Network::Pasta), None) => {
                return Err(PlanError(
                    "--network pasta: pasta is not on PATH; install it (Debian/Ubuntu package \
                     passt), or pass --network none"
                        .to_owned(),
                ));
            }
            (None, None) => (Network::None, None),
        };
        Ok(Plan {
            settings,
            command: self.command,
            network,
            pasta,
            request,
        })
    }

    /// Whether `--network` was given (without it, a missing pasta is said once).
    pub fn network_given(&self) -> bool {
        self.network.is_some()
    }
}

/// `exec` serves only inside CMD's namespace, as the user running it; the TUN device to claim
/// there.
fn refuse_what_exec_cannot_do(
    settings: &Settings,
) -> Result<crate::platform::TunRequest, PlanError> {
    let Some(tun) = &settings.tun else {
        return Err(PlanError(
            "--no-tun: imds-tun exec serves CMD through a TUN device in CMD's own namespace; \
             drop --no-tun"
                .to_owned(),
        ));
    };
    if !settings.listen.listeners.is_empty() {
        return Err(PlanError(
            "--listen: imds-tun exec serves only inside CMD's namespace; drop --listen (CMD \
             reaches 169.254.169.254 itself)"
                .to_owned(),
        ));
    }
    if settings.user.is_some() {
        return Err(PlanError(
            "--user: imds-tun exec serves as the user running it; drop --user".to_owned(),
        ));
    }
    Ok(tun.device.clone())
}

/// The first executable `name` in `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// `imds-tun exec …`: CMD's exit status, or one line and 2 (settings, refusals) or 1.
pub fn main(args: ExecArgs) -> ExitCode {
    let network_given = args.network_given();
    let plan = match args.plan() {
        Ok(plan) => plan,
        Err(error) => {
            output::error_line(&format!("imds-tun: {error}"));
            return ExitCode::from(2);
        }
    };
    if plan.network == Network::None && !network_given {
        if nix::unistd::geteuid().is_root() && find_on_path("pasta").is_some() {
            output::error_line(ROOT_NO_PASTA_LINE);
        } else {
            output::error_line(NO_PASTA_LINE);
        }
    }
    run(plan)
}

#[cfg(target_os = "linux")]
fn run(plan: Plan) -> ExitCode {
    crate::app::run_exec(plan)
}

#[cfg(not(target_os = "linux"))]
fn run(_plan: Plan) -> ExitCode {
    output::error_line(
        "imds-tun: imds-tun exec needs Linux's user and network namespaces; on this system run \
         `sudo imds-tun` instead",
    );
    ExitCode::from(2)
}

/// What `exec` made before any thread existed: the namespace, pasta's guard, CMD to run.
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub struct Prepared {
    namespace: crate::platform::namespace::Namespace,
    guard: guard::Guard,
    pasta: Option<PathBuf>,
    command: Vec<OsString>,
}

/// Why `exec` could not prepare: one line, exit 2 for what the user must change.
#[cfg(target_os = "linux")]
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The namespace could not be made.
    #[error("{0}")]
    Namespace(#[from] crate::platform::namespace::NamespaceError),
    /// The guard could not be started.
    #[error("cannot start the process that ends CMD and pasta with imds-tun: {0}")]
    Guard(std::io::Error),
}

/// Makes the namespace and pasta's guard: call before any thread exists. The settings come
/// back for the run.
#[cfg(target_os = "linux")]
pub fn prepare(plan: Plan) -> Result<(Settings, Prepared), PrepareError> {
    // The guard first, so it holds none of the namespace's descriptors.
    let guard = guard::Guard::fork().map_err(PrepareError::Guard)?;
    let namespace = crate::platform::namespace::create(&plan.request)?;
    Ok((
        plan.settings,
        Prepared {
            namespace,
            guard,
            pasta: plan.pasta,
            command: plan.command,
        },
    ))
}

/// What serving takes over from the namespace: the device, the control socket, the kernel's
/// sockets for telling callers apart.
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub struct Served {
    /// The TUN device, claimed inside.
    pub device: crate::platform::CreatedDevice,
    /// The control socket, bound inside.
    pub control: std::os::unix::net::UnixListener,
    /// The namespace's netlink sockets.
    pub kernel: crate::attribution::KernelSockets,
}

/// What starts CMD once imds-tun serves: the namespaces, pasta, CMD.
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub struct Launch {
    user: Option<std::os::fd::OwnedFd>,
    net: std::os::fd::OwnedFd,
    routes: std::os::fd::OwnedFd,
    device_index: u32,
    guard: guard::Guard,
    pasta: Option<PathBuf>,
    command: Vec<OsString>,
}

#[cfg(target_os = "linux")]
impl Prepared {
    /// Splits into what serving takes and what starts CMD.
    pub fn split(self) -> (Served, Launch) {
        let namespace = self.namespace;
        let device_index = namespace.device.index;
        (
            Served {
                device: namespace.device,
                control: namespace.control,
                kernel: crate::attribution::KernelSockets::adopt(
                    namespace.route,
                    namespace.sock_diag,
                ),
            },
            Launch {
                user: namespace.user,
                net: namespace.net,
                routes: namespace.watch_route,
                device_index,
                guard: self.guard,
                pasta: self.pasta,
                command: self.command,
            },
        )
    }
}

/// CMD could not be given its network or started.
#[cfg(target_os = "linux")]
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// pasta failed.
    #[error("{0}")]
    Pasta(#[from] guard::PastaError),
    /// The namespace's route socket could not be used.
    #[error("cannot watch CMD's namespace for pasta's network: {0}")]
    Routes(std::io::Error),
}

#[cfg(target_os = "linux")]
impl Launch {
    /// Attaches pasta (when used) and starts CMD; from the main thread, once imds-tun serves.
    /// CMD that cannot be started ends the run with the shell's status (127, 126).
    pub fn start(&mut self) -> Result<Started, LaunchError> {
        use std::os::fd::AsRawFd;
        if let Some(program) = &self.pasta {
            let routes = self.routes.try_clone().map_err(LaunchError::Routes)?;
            let mut routes = crate::platform::netlink::LocalAddresses::adopt(routes)
                .map_err(LaunchError::Routes)?;
            self.guard.attach(
                program,
                self.user.as_ref(),
                &self.net,
                &mut routes,
                self.device_index,
            )?;
        }
        Ok(
            match command::spawn(
                &self.command,
                self.user.as_ref().map(AsRawFd::as_raw_fd),
                self.net.as_raw_fd(),
            ) {
                Ok(cmd) => {
                    if let Err(error) = self.guard.watch_group(cmd.pid()) {
                        tracing::warn!(
                            "cannot tell the guard CMD's process group ({error}); if imds-tun is \
                             killed, what CMD started may outlive it"
                        );
                    }
                    Started::Running(cmd)
                }
                Err(error) => {
                    output::error_line(&format!("imds-tun: {error}"));
                    Started::Failed(error.status())
                }
            },
        )
    }
}

/// CMD started, or the shell's status for why it could not be.
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub enum Started {
    /// CMD runs.
    Running(command::Cmd),
    /// CMD could not be started: 127 or 126.
    Failed(u8),
}

/// The exit status a shell gives for CMD's end: its own code, or 128 + the signal that
/// killed it.
pub fn shell_status(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn cmd_s_end_becomes_the_shell_s_status() {
        assert_eq!(shell_status(std::process::ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(shell_status(std::process::ExitStatus::from_raw(0)), 0);
        // Killed by SIGKILL (9): 137, as a shell says.
        assert_eq!(shell_status(std::process::ExitStatus::from_raw(9)), 137);
    }

    #[test]
    fn exec_refuses_what_it_cannot_do() {
        use clap::Parser;
        for (flags, says) in [
            (vec!["--no-tun", "--listen", "127.0.0.1:8080"], "--no-tun"),
            (vec!["--listen", "127.0.0.1:8080"], "--listen"),
            (vec!["--user", "nobody"], "--user"),
        ] {
            let mut line = vec!["imds-tun", "exec"];
            line.extend(flags);
            line.extend(["--", "true"]);
            let cli = crate::cli::Cli::try_parse_from(&line).expect("parses");
            let Some(crate::cli::Command::Exec(args)) = cli.command else {
                panic!("not exec: {line:?}");
            };
            let error = (*args).plan().expect_err("refused");
            assert!(error.0.starts_with(says), "{line:?}: {}", error.0);
        }
    }
}
