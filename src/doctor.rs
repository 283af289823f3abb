//! `imds-tun --check`: can this machine run imds-tun with these settings, and if not, why not?
//!
//! Every check decides as a start would, and only looks: the TUN probes (`platform::
//! readiness`: `/dev/net/tun` and the capability sets on Linux, the utun control and root on
//! macOS) create no device; the address check is the start's own (`platform::check_claim`:
//! the claim lock's holder, interfaces and routes, `--tun-name`, and the kernel's route and
//! policy rules for the address); `--user` is looked up as the start looks it up; each
//! `--listen` address is bound and closed at once; with `--upstream` one `GET /` goes to the
//! upstream. Nothing is created, changed or left behind (a bound test socket is closed before
//! the report prints).
//!
//! Output is one line per check, `ok|warn|fail  <check>: <finding> — <what to do>` (the advice
//! is left out where there is nothing to do), on stdout. Exit status 0 when imds-tun can run
//! (no `fail`), 1 otherwise.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;

use crate::cli::Cli;
use crate::config::proxy::LISTENER_TOKEN_HEADER;
use crate::config::{Settings, UpstreamSettings};
use crate::credentials::{self, setup::Plan};
use crate::platform;
use crate::platform::readiness::{self, Probe, Readiness};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Nothing stands in the way (printed `ok`).
    Ok,
    /// imds-tun can run, but something may not work as expected (printed `warn`).
    Warn,
    /// imds-tun would not start, or not serve (printed `fail`; `--check` exits 1).
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How it came out: the line's first word.
    pub level: Level,
    /// What was checked, the line's label (`settings`, `tun device`, `metadata address`, ...).
    pub check: &'static str,
    /// What was found, in a sentence.
    pub finding: String,
    /// What to do about it; empty when nothing.
    pub advice: String,
}

impl Finding {
    fn new(
        level: Level,
        check: &'static str,
        finding: impl Into<String>,
        advice: impl Into<String>,
    ) -> Self {
        Finding {
            level,
            check,
            finding: finding.into(),
            advice: advice.into(),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "fail",
        };
        write!(f, "{level}  {}: {}", self.check, self.finding)?;
        if !self.advice.is_empty() {
            write!(f, " — {}", self.advice)?;
        }
        Ok(())
    }
}

/// Runs every check for `cli`'s settings, prints the report, returns 0 or 1.
pub fn main(cli: Cli) -> ExitCode {
    let findings = run(cli);
    let report: String = findings
        .iter()
        .map(|finding| format!("{finding}\n"))
        .collect();
    // The exit code says whether imds-tun can run, even when the reader left early
    // (`imds-tun --check | head -1`).
    let code = if findings.iter().any(|finding| finding.level == Level::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    };
    crate::output::finish(crate::output::print(&report), code)
}

/// All findings, in the order printed.
pub fn run(cli: Cli) -> Vec<Finding> {
    let mut findings = Vec::new();
    let settings = match cli.into_settings() {
        Ok(settings) => {
            findings.push(Finding::new(
                Level::Ok,
                "settings",
                "flags and config file are valid",
                "",
            ));
            Some(settings)
        }
        Err(error) => {
            findings.push(Finding::new(
                Level::Fail,
                "settings",
                error.to_string(),
                "fix that flag or config key (imds-tun would exit with status 2)",
            ));
            None
        }
    };
    let wants_tun = settings
        .as_ref()
        .is_none_or(|settings| settings.tun.is_some());
    // Asked first, as a start asks it: before the claim, whose check it changes.
    let real_route = settings
        .as_ref()
        .and_then(Settings::local)
        .and_then(|local| local.pass_through.as_ref())
        .map(|_| platform::real_metadata_route());
    if wants_tun {
        findings.extend(readiness::tun_probes().into_iter().map(from_probe));
        let mut request = settings
            .as_ref()
            .and_then(|settings| settings.tun.as_ref())
            .map_or_else(default_tun_request, |tun| tun.device.clone());
        request.real_route = real_route
            .as_ref()
            .and_then(|route| route.as_ref().ok())
            .map(|route| route.interface.clone());
        findings.extend(check_address(&request));
    } else {
        findings.push(Finding::new(Level::Ok, "tun", "not needed (--no-tun)", ""));
    }
    if let Some(settings) = &settings {
        findings.push(check_user(settings));
        findings.extend(check_listeners(settings));
        findings.extend(check_metrics(settings));
        findings.push(check_credentials(settings));
        if let Some(route) = real_route {
            findings.push(check_pass_through(route));
        }
        if settings.local().is_some_and(|local| local.gce.is_some()) {
            findings.push(check_gce_name(|name| {
                (name, 80)
                    .to_socket_addrs()
                    .map(|addresses| addresses.map(|address| address.ip()).collect())
                    .unwrap_or_default()
            }));
        }
    }
    findings
}

/// A platform probe as a line of the report; a probe that cannot tell is a warning.
fn from_probe(probe: Probe) -> Finding {
    let level = match probe.readiness {
        Readiness::Ready => Level::Ok,
        Readiness::NotReady => Level::Fail,
        Readiness::Unknown => Level::Warn,
    };
    Finding::new(level, probe.check, probe.finding, probe.advice)
}

/// The TUN a start makes when the settings cannot be read: the defaults.
fn default_tun_request() -> platform::TunRequest {
    platform::TunRequest {
        name: crate::config::defaults::TUN_NAME.to_owned(),
        mtu: 1500,
        ipv6: false,
        extra: Vec::new(),
        queue_packets: platform::transmit_queue_packets(1024),
        real_route: None,
    }
}

/// The claim a start would make, decided as it decides (`platform::check_claim`): nothing else
/// answers for the addresses (another imds-tun is named by its pid), a fixed `--tun-name` is
/// free, and no policy rule would route the address past a new device. The finding is the
/// start's own message.
fn check_address(request: &platform::TunRequest) -> Vec<Finding> {
    const CHECK: &str = "metadata address";
    let metadata_only = platform::TunRequest {
        extra: Vec::new(),
        ..request.clone()
    };
    let mut findings = vec![match platform::check_claim(&metadata_only) {
        Ok(()) if request.ipv6 => Finding::new(
            Level::Ok,
            CHECK,
            "169.254.169.254 and fd00:ec2::254 are not claimed by anything else",
            "",
        ),
        Ok(()) => Finding::new(
            Level::Ok,
            CHECK,
            "169.254.169.254 is not claimed by anything else",
            "",
        ),
        Err(error) => Finding::new(Level::Fail, CHECK, error.to_string(), ""),
    }];
    // One finding per container endpoint's address, in the start's words.
    findings.extend(request.extra.iter().map(|&extra| {
        const CHECK: &str = "container endpoint";
        match platform::check_extra_claim(request, extra) {
            Ok(()) => Finding::new(
                Level::Ok,
                CHECK,
                format!(
                    "{} ({}) is not claimed by anything else",
                    extra.address(),
                    extra.flag()
                ),
                "",
            ),
            Err(error) => Finding::new(Level::Fail, CHECK, error.to_string(), ""),
        }
    }));
    findings
}

/// The account a start would serve as (`--user`, or the user behind sudo), decided as it
/// decides: an unknown `--user` fails here as the start fails (status 2), `--user` without
/// root too.
fn check_user(settings: &Settings) -> Finding {
    const CHECK: &str = "user";
    match platform::privileges::account_to_serve_as(settings.user.as_deref()) {
        Ok(Some(account)) => Finding::new(
            Level::Ok,
            CHECK,
            format!(
                "serves as {} (uid {}) once the TUN and sockets exist",
                account.name, account.uid
            ),
            "",
        ),
        Ok(None) if nix::unistd::geteuid().is_root() => Finding::new(
            Level::Ok,
            CHECK,
            "serves as root (no --user, not started with sudo)",
            "pass --user NAME to serve as an unprivileged user",
        ),
        Ok(None) => Finding::new(
            Level::Ok,
            CHECK,
            format!(
                "serves as uid {}, the account that started imds-tun",
                nix::unistd::geteuid()
            ),
            "",
        ),
        Err(error @ platform::privileges::PrivilegeError::UnknownUser(_)) => Finding::new(
            Level::Fail,
            CHECK,
            error.to_string(),
            "name an existing account (imds-tun would exit with status 2)",
        ),
        Err(error) => Finding::new(Level::Fail, CHECK, error.to_string(), ""),
    }
}

/// Why binding a `--listen` address was refused, in words: what a start says after the
/// kernel's error, starting with ": "; empty for the rest.
pub fn listen_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => ": another process holds that port; pick another --listen",
        std::io::ErrorKind::PermissionDenied => ": ports below 1024 need root; pick a higher port",
        std::io::ErrorKind::AddrNotAvailable => ": no interface has that address",
        _ => "",
    }
}

/// Why binding the `--metrics` address was refused, in words, as [`listen_hint`] for
/// `--listen`.
pub fn metrics_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            ": another process holds that port; pick another --metrics port"
        }
        std::io::ErrorKind::PermissionDenied => ": ports below 1024 need root; pick a higher port",
        std::io::ErrorKind::AddrNotAvailable => ": no interface has that address",
        _ => "",
    }
}

/// The `/etc/hosts` line that lets every GCE client reach imds-tun by name (docs/metadata.md).
pub const GCE_HOSTS_LINE: &str =
    "169.254.169.254 metadata.google.internal metadata.google.internal.";

/// Whether GCE's clients find the server by name: Python and Java ask for
/// `metadata.google.internal`, Node for `metadata.google.internal.` as well. Never changes
/// `/etc/hosts`; says what to add.
fn check_gce_name(resolve: impl Fn(&str) -> Vec<std::net::IpAddr>) -> Finding {
    const CHECK: &str = "gce name";
    let metadata = std::net::IpAddr::V4(platform::METADATA_ADDRESS);
    let unresolved: Vec<&str> = ["metadata.google.internal", "metadata.google.internal."]
        .into_iter()
        .filter(|name| !resolve(name).contains(&metadata))
        .collect();
    if unresolved.is_empty() {
        return Finding::new(
            Level::Ok,
            CHECK,
            "metadata.google.internal resolves to 169.254.169.254",
            "",
        );
    }
    Finding::new(
        Level::Warn,
        CHECK,
        format!(
            "{} {} not resolve to 169.254.169.254, so Python, Java and Node clients will not \
             find the GCE metadata server by name",
            unresolved.join(" and "),
            if unresolved.len() == 1 { "does" } else { "do" }
        ),
        format!(
            "add the line `{GCE_HOSTS_LINE}` to /etc/hosts (harmless when imds-tun is not \
             running), or set GCE_METADATA_HOST=169.254.169.254 for the clients"
        ),
    )
}

/// Which listeners a start could bind (each is bound here and closed at once, as this user:
/// the start binds as the same user, before it gives root up), and who they are open to.
fn check_listeners(settings: &Settings) -> Vec<Finding> {
    settings
        .listen
        .listeners
        .iter()
        .map(|listener| {
            let address = listener.address;
            if let Err(error) = std::net::TcpListener::bind(address) {
                return Finding::new(
                    Level::Fail,
                    "listener",
                    format!("cannot listen on {address}: {error}{}", listen_hint(&error)),
                    "",
                );
            }
            if address.ip().is_loopback() {
                Finding::new(Level::Ok, "listener", format!("{address} is loopback-only"), "")
            } else if matches!(listener.access, crate::http::Access::Token(_)) {
                Finding::new(
                    Level::Ok,
                    "listener",
                    format!("{address} requires the shared X-Imds-Tun-Token"),
                    "",
                )
            } else {
                Finding::new(
                    Level::Warn,
                    "listener",
                    format!("{address} serves credentials to anyone who reaches it (--insecure-listen-without-token)"),
                    "protect it with --listen-token-file FILE",
                )
            }
        })
        .collect()
}

/// Whether a start could bind the `--metrics` socket (bound here and closed at once).
fn check_metrics(settings: &Settings) -> Option<Finding> {
    let address = settings.metrics.as_ref()?.address;
    Some(match std::net::TcpListener::bind(address) {
        Err(error) => Finding::new(
            Level::Fail,
            "metrics",
            format!(
                "cannot serve metrics on {address}: {error}{}",
                metrics_hint(&error)
            ),
            "imds-tun would exit with status 2",
        ),
        Ok(_) if address.ip().is_loopback() => Finding::new(
            Level::Ok,
            "metrics",
            format!("{address} is loopback-only"),
            "",
        ),
        Ok(_) => Finding::new(
            Level::Ok,
            "metrics",
            format!("{address} requires the shared X-Imds-Tun-Token"),
            "",
        ),
    })
}

/// Where the served credentials would come from.
fn check_credentials(settings: &Settings) -> Finding {
    const CHECK: &str = "credentials";
    let local = match &settings.backend {
        crate::config::Backend::Upstream(upstream) => return check_upstream(upstream),
        crate::config::Backend::Local(local) => local,
    };
    // The same decisions a start makes (credentials::setup::plan), on the same environment.
    let changes = credentials::setup::sdk_environment(local.credentials.profile.as_deref());
    if let Err(error) = platform::change_environment_before_threads(&changes) {
        return Finding::new(Level::Warn, CHECK, error.to_string(), "");
    }
    let plan = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(credentials::setup::plan(&local.credentials)),
        Err(error) => {
            return Finding::new(
                Level::Warn,
                CHECK,
                format!("cannot check: no async runtime ({error})"),
                "",
            );
        }
    };
    let profile = local
        .credentials
        .profile
        .as_deref()
        .unwrap_or("from AWS_PROFILE or default");
    match plan {
        Err(error) => Finding::new(
            Level::Fail,
            CHECK,
            error.to_string(),
            "imds-tun would exit with status 2",
        ),
        Ok(Plan::Fake(why)) => Finding::new(
            Level::Warn,
            CHECK,
            format!(
                "FAKE credentials for role {} ({why}; well-formed, rejected by AWS)",
                local.instance.role_name
            ),
            if local.credentials.mock {
                "fine for tests; drop --mock-credentials for real ones"
            } else {
                "configure a profile (--profile NAME) or export AWS_ACCESS_KEY_ID for real ones"
            },
        ),
        Ok(Plan::Chain) => Finding::new(
            Level::Ok,
            CHECK,
            match &local.credentials.role_arn {
                Some(arn) => format!(
                    "STS AssumeRole of {} with source credentials from the AWS chain (profile {profile})",
                    arn.arn
                ),
                None => format!(
                    "your own AWS session from the AWS chain (profile {profile}), served as role {}",
                    local.instance.role_name
                ),
            },
            "",
        ),
    }
}

/// The real metadata service `--pass-through` would use, and whether it answers one `GET /`
/// now (over the kernel's route, which is still the real service's: nothing is claimed).
fn check_pass_through(
    route: Result<platform::real_route::RealRoute, platform::real_route::NoRealRoute>,
) -> Finding {
    const CHECK: &str = "pass-through";
    let route = match route {
        Ok(route) => route,
        Err(error) => {
            return Finding::new(
                Level::Fail,
                CHECK,
                error.to_string(),
                "imds-tun would exit with status 2",
            );
        }
    };
    let probe = || -> std::io::Result<String> {
        let address = SocketAddr::from((platform::METADATA_ADDRESS, 80));
        let mut stream = TcpStream::connect_timeout(&address, std::time::Duration::from_secs(1))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        write!(stream, "GET / HTTP/1.0\r\nHost: 169.254.169.254\r\n\r\n")?;
        let mut reply = Vec::new();
        stream.take(4096).read_to_end(&mut reply)?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    };
    match probe() {
        Ok(reply) if reply.starts_with("HTTP/") => Finding::new(
            Level::Ok,
            CHECK,
            format!(
                "the real metadata service is {route}, and it answers ({})",
                reply.lines().next().unwrap_or("").trim()
            ),
            "",
        ),
        Ok(_) => Finding::new(
            Level::Warn,
            CHECK,
            format!("the real metadata service is {route}, but it does not answer HTTP"),
            "passed requests would get 502",
        ),
        Err(error) => Finding::new(
            Level::Warn,
            CHECK,
            format!("the real metadata service is {route}, but it is not reachable now ({error})"),
            "passed requests would get 502 or 504 until it is",
        ),
    }
}

/// One `GET /` to the upstream, with the token if configured.
fn check_upstream(upstream: &UpstreamSettings) -> Finding {
    const CHECK: &str = "credentials";
    let authority = upstream
        .url
        .authority()
        .map_or("", |a| a.as_str())
        .to_owned();
    let url = format!("http://{authority}");
    let probe = || -> std::io::Result<String> {
        let host = upstream.url.host().unwrap_or_default();
        let port = upstream.url.port_u16().unwrap_or(80);
        let address: SocketAddr = (host.trim_matches(['[', ']']), port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("the name resolves to no address"))?;
        let mut stream = TcpStream::connect_timeout(&address, upstream.connect_timeout)?;
        stream.set_read_timeout(Some(upstream.response_timeout))?;
        let token = upstream
            .token
            .as_ref()
            .map(|token| format!("{LISTENER_TOKEN_HEADER}: {}\r\n", token.expose()))
            .unwrap_or_default();
        write!(
            stream,
            "GET / HTTP/1.0\r\nHost: 169.254.169.254\r\n{token}\r\n"
        )?;
        let mut reply = Vec::new();
        stream.take(4096).read_to_end(&mut reply)?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    };
    match probe() {
        Ok(reply) if reply.contains("X-Imds-Tun-Token") && reply.starts_with("HTTP/1.1 401") => {
            Finding::new(
                Level::Fail,
                CHECK,
                format!("the upstream {url} rejects our shared token"),
                "give --upstream-token-file the same secret as the host's --listen-token-file",
            )
        }
        Ok(reply) if reply.starts_with("HTTP/") => Finding::new(
            Level::Ok,
            CHECK,
            format!(
                "forwarded from the upstream {url}, which answers ({})",
                reply.lines().next().unwrap_or("").trim()
            ),
            "",
        ),
        Ok(_) => Finding::new(
            Level::Fail,
            CHECK,
            format!("{url} does not answer HTTP"),
            "point --upstream at an imds-tun --listen address",
        ),
        Err(error) => Finding::new(
            Level::Warn,
            CHECK,
            format!("forwarded from the upstream {url}, which is not reachable now ({error})"),
            "start `imds-tun --no-tun --listen ADDR:PORT --listen-token-file FILE` there; until then \
             requests get 502",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gce_name_check_wants_both_spellings_and_says_which_line_to_add() {
        let metadata = std::net::IpAddr::V4(platform::METADATA_ADDRESS);
        let finding = check_gce_name(|_| vec![metadata]);
        assert_eq!(finding.level, Level::Ok);
        let finding = check_gce_name(|name| {
            if name.ends_with('.') {
                Vec::new()
            } else {
                vec![metadata]
            }
        });
        assert_eq!(finding.level, Level::Warn);
        assert!(
            finding
                .finding
                .starts_with("metadata.google.internal. does not resolve")
        );
        assert!(finding.advice.contains(GCE_HOSTS_LINE));
        assert!(finding.advice.contains("GCE_METADATA_HOST=169.254.169.254"));
    }

    #[test]
    fn findings_print_as_one_line_with_level_check_finding_and_advice() {
        let line = Finding::new(
            Level::Fail,
            "metadata address",
            "claimed by lo",
            "remove it",
        )
        .to_string();
        assert_eq!(line, "fail  metadata address: claimed by lo — remove it");
        let line = Finding::new(Level::Ok, "tun", "fine", "").to_string();
        assert_eq!(line, "ok    tun: fine");
    }
}
