//! The command line (clap derive) and its translation into [`crate::config::Settings`].
//!
//! Every setting's flag is a field of [`config::Layer`], flattened here, which the config file
//! fills in too; this struct adds only what is not a setting: `--config` and `--check`. Flags
//! carry no clap defaults on purpose: an absent flag must let the config file's value through,
//! so defaults are applied later by `config::resolve` (flag > file > default). The help text
//! states each default.

use std::path::PathBuf;

pub mod reference;

use crate::config::defaults::MachineDefaults;
use crate::config::{self, ConfigError, Layer, Opener, Settings};
use crate::control::protocol::{EventEndRequest, Request};

/// Serve an EC2 instance metadata service on 169.254.169.254 through a TUN device.
#[derive(Debug, Default, clap::Parser)]
#[command(name = "imds-tun", version, about)]
pub struct Cli {
    /// JSON file with any of the settings below (keys: flag names with `_`, e.g. instance_id).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Every setting's flag: only what was given on the command line is `Some` (or non-empty).
    #[command(flatten)]
    pub settings: Layer,

    /// Check whether this machine can run imds-tun with these settings, change nothing, exit
    /// 0 (it can) or 1 (it cannot).
    #[arg(long)]
    pub check: bool,

    /// Without a subcommand imds-tun serves.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What else imds-tun can do besides serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Change the imds-tun running in this network namespace (root, or the user it serves as).
    Ctl {
        /// The change to make, or `status`.
        #[command(subcommand)]
        what: CtlCommand,
    },
    /// Print the completion script for SHELL, e.g. `imds-tun completions bash >
    /// /etc/bash_completion.d/imds-tun`.
    Completions {
        /// The shell to complete for.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `imds-tun man > /usr/local/share/man/man1/imds-tun.1`.
    Man,
    /// Print the `export` lines a process needs for the ECS or EKS Pod Identity endpoint, e.g.
    /// `eval "$(imds-tun env --ecs imds-tun)"`.
    Env(crate::container_env::EnvArgs),
    /// Record the metadata service at URL (EC2, GCE, Azure) as one JSON snapshot for
    /// `--replay`, as an ordinary client; credentials, tokens and signatures are never recorded
    /// (docs/snapshot.md). Exit 0 whole, 3 partial (written, with its errors), 1 none written.
    Record(crate::record::RecordArgs),
    /// Run CMD in a network namespace of its own whose 169.254.169.254 is this run's metadata
    /// service, with every setting a start takes; no root needed where unprivileged user
    /// namespaces are allowed and /dev/net/tun is 0666 (Debian, Ubuntu, Fedora). imds-tun stays
    /// in your network (STS, --token-command), pasta (package passt), when found, gives CMD the
    /// rest of the network, `imds-tun ctl` run by CMD reaches this instance only, signals are
    /// passed on to CMD, and CMD's exit status is imds-tun's; when CMD ends, or imds-tun is
    /// killed, nothing is left (docs/exec.md).
    Exec(Box<crate::exec::ExecArgs>),
}

/// `imds-tun ctl ...`: each prints the resulting status as JSON (exit 0), or why not (exit 1);
/// `callers` prints a table unless `--json`.
///
/// A default that clap applies is hidden from the help (`hide_default_value`): the help text
/// states it with what it means ("120, EC2's two minutes' notice"), and clap would repeat it.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CtlCommand {
    /// Spot interruption notice: meta-data/spot/instance-action (and termination-time for
    /// terminate); instance-life-cycle becomes spot.
    Spot {
        /// What EC2 will do to the instance (instance-action's "action").
        #[arg(long, value_parser = ["terminate", "stop", "hibernate"])]
        action: String,
        /// Seconds until the action [default: 120, EC2's two minutes' notice].
        #[arg(
            long = "in",
            value_name = "SECONDS",
            default_value_t = 120,
            hide_default_value = true
        )]
        in_seconds: u64,
    },
    /// Rebalance recommendation: meta-data/events/recommendations/rebalance.
    Rebalance {
        /// Seconds until it appears [default: 0, now].
        #[arg(
            long = "in",
            value_name = "SECONDS",
            default_value_t = 0,
            hide_default_value = true
        )]
        in_seconds: u64,
    },
    /// Scheduled event in meta-data/events/maintenance/scheduled; in history once it ends.
    Event {
        /// The event's kind (its "Code").
        #[arg(long, value_parser = ["system-reboot", "system-maintenance", "instance-reboot", "instance-retirement", "instance-stop"])]
        code: String,
        /// Seconds until NotBefore [default: 3600].
        #[arg(
            long = "in",
            value_name = "SECONDS",
            default_value_t = 3600,
            hide_default_value = true
        )]
        in_seconds: u64,
        /// Seconds from NotBefore to NotAfter [default: 900].
        #[arg(
            long,
            value_name = "SECONDS",
            default_value_t = 900,
            hide_default_value = true
        )]
        duration: u64,
    },
    /// Cancel a scheduled event (it moves to history as canceled).
    Cancel {
        /// The event's EventId (instance-event-...), as `ctl event` and `ctl status` print it.
        #[arg(value_name = "EVENT_ID")]
        id: String,
    },
    /// Complete a scheduled event now (it moves to history as completed).
    Complete {
        /// The event's EventId (instance-event-...), as `ctl event` and `ctl status` print it.
        #[arg(value_name = "EVENT_ID")]
        id: String,
    },
    /// Auto Scaling target lifecycle state: meta-data/autoscaling/target-lifecycle-state.
    Lifecycle {
        /// The state to serve.
        #[arg(value_parser = ["InService", "Terminated", "Warmed:Hibernated", "Warmed:Running", "Warmed:Stopped", "Warmed:Terminated"])]
        state: String,
    },
    /// Everything back to an on-demand instance with nothing pending; stops a scenario.
    Clear,
    /// What is active, as JSON.
    Status,
    /// Play a scenario: a JSON list of steps, each `{"at": "+30s", "command": "spot", ...}`.
    Play {
        /// The scenario file, read with the invoking user's rights under sudo.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Who has called since start: tokenless (IMDSv1) callers first, by process, user or
    /// address.
    Callers {
        /// Print the report as JSON (`callers`, `dropped`, `since`, `limit`) instead of a table.
        #[arg(long)]
        json: bool,
        /// Print the report, then empty the table: counting starts again from now.
        #[arg(long)]
        reset: bool,
    },
    /// IMDSv2 tokens: `tokens expire` ends every token issued so far.
    Tokens {
        /// What to do with the tokens.
        #[command(subcommand)]
        what: TokensCommand,
    },
    /// Make matching requests slow, failing, throttled or unanswered, or served credentials
    /// expired; `fault list`, `fault clear`.
    #[command(args_conflicts_with_subcommands = true)]
    Fault {
        /// `list` or `clear`; without one, the flags add a fault.
        #[command(subcommand)]
        what: Option<FaultCommand>,
        /// The fault to add, when no subcommand is given.
        #[command(flatten)]
        fault: FaultArgs,
    },
    /// GCE preemption: instance/preempted becomes TRUE (the scheduling that of a Spot VM).
    GcePreempt,
    /// GCE host maintenance: instance/maintenance-event.
    GceMaintenance {
        /// The value served [default: MIGRATE_ON_HOST_MAINTENANCE]; NONE ends it.
        #[arg(
            long,
            value_parser = ["MIGRATE_ON_HOST_MAINTENANCE", "TERMINATE_ON_HOST_MAINTENANCE", "NONE"],
            default_value = "MIGRATE_ON_HOST_MAINTENANCE",
            hide_default_value = true
        )]
        event: String,
    },
    /// Azure scheduled event in /metadata/scheduledevents; a VM's POST of StartRequests starts
    /// it early.
    AzureEvent {
        /// The event's EventType.
        #[arg(value_name = "TYPE", value_parser = ["Freeze", "Reboot", "Redeploy", "Preempt", "Terminate"])]
        event_type: String,
        /// Seconds until NotBefore, when it starts by itself [default: Azure's minimum notice:
        /// Freeze and Reboot 900, Redeploy 600, Preempt 30, Terminate 300].
        #[arg(long, value_name = "SECONDS")]
        not_before: Option<u64>,
        /// DurationInSeconds: how long it stays Started, -1 for unknown (until `ctl clear`)
        /// [default: 5 for Freeze, else -1].
        #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
        duration: Option<i64>,
    },
}

/// `imds-tun ctl tokens expire`.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum TokensCommand {
    /// End every IMDSv2 token issued so far: each answers 401 from now on, as an expired token
    /// does; clients that ask for a new one get one that works.
    Expire,
}

/// `imds-tun ctl fault list|clear`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum FaultCommand {
    /// The faults standing, with their remaining time.
    List,
    /// Remove every fault and end a credential-source outage.
    Clear,
}

/// `imds-tun ctl fault --status 500 --path /latest/meta-data/iam/ --for 30`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FaultArgs {
    /// Answer matching requests with this status (4xx/5xx), on the page of the cloud that
    /// would have answered (EC2's, GCE's, Azure's).
    #[arg(long, value_name = "CODE")]
    pub status: Option<u16>,
    /// Delay matching answers by this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub latency: Option<u64>,
    /// Drop this percent of matching requests: no answer, the client times out.
    #[arg(long, value_name = "PERCENT")]
    pub drop: Option<u8>,
    /// Close the connection of this percent of matching requests without an answer.
    #[arg(long, value_name = "PERCENT")]
    pub reset: Option<u8>,
    /// Only requests under this path, e.g. /latest/meta-data/iam/ [default: all].
    #[arg(long, value_name = "PREFIX")]
    pub path: Option<String>,
    /// Only requests with this method [default: all].
    #[arg(long, value_parser = ["GET", "PUT"])]
    pub method: Option<String>,
    /// Expire by itself after this many seconds [default: until `fault clear`].
    #[arg(long = "for", value_name = "SECONDS")]
    pub for_seconds: Option<u64>,
    /// `down`: the next refreshes fail as if STS were unreachable.
    #[arg(long, value_name = "STATE", value_parser = ["down"])]
    pub credential_source: Option<String>,
    /// Drop packets to the metadata addresses beyond PPS a second, before TCP, as EC2 drops
    /// link-local packets beyond 1024; clients' kernels retransmit (the TUN only).
    #[arg(long, value_name = "PPS")]
    pub packet_budget: Option<u32>,
    /// Answer 429 (in the cloud's own shape) beyond this many matching requests per second,
    /// for the whole service unless --per-caller.
    #[arg(long, value_name = "RPS")]
    pub throttle: Option<u32>,
    /// With --throttle: each caller (its uid, else its address) has that budget.
    #[arg(long, requires = "throttle")]
    pub per_caller: bool,
    /// The credentials endpoints serve their keys with an Expiration in the past, as IMDS
    /// does during an STS outage.
    #[arg(long)]
    pub expired_credentials: bool,
}

impl CtlCommand {
    /// The request this command sends; `play` reads its file now, with the invoking user's
    /// rights under sudo.
    pub fn into_request(self) -> Result<Request, String> {
        let parse = |value: serde_json::Value| {
            serde_json::from_value::<Request>(value).map_err(|error| error.to_string())
        };
        match self {
            CtlCommand::Spot { action, in_seconds } => {
                parse(serde_json::json!({"command": "spot", "action": action, "in": in_seconds}))
            }
            CtlCommand::Rebalance { in_seconds } => Ok(Request::Rebalance { r#in: in_seconds }),
            CtlCommand::Event {
                code,
                in_seconds,
                duration,
            } => parse(serde_json::json!({
                "command": "event", "code": code, "in": in_seconds, "duration": duration,
            })),
            CtlCommand::Cancel { id } => Ok(Request::EndEvent {
                id,
                how: EventEndRequest::Cancel,
            }),
            CtlCommand::Complete { id } => Ok(Request::EndEvent {
                id,
                how: EventEndRequest::Complete,
            }),
            CtlCommand::Lifecycle { state } => Ok(Request::Lifecycle { state }),
            CtlCommand::Clear => Ok(Request::Clear),
            CtlCommand::Status => Ok(Request::Status),
            CtlCommand::Callers { reset, .. } => Ok(Request::Callers { reset }),
            CtlCommand::Tokens {
                what: TokensCommand::Expire,
            } => Ok(Request::TokensExpire),
            CtlCommand::Fault {
                what: Some(FaultCommand::List),
                ..
            } => Ok(Request::FaultList),
            CtlCommand::Fault {
                what: Some(FaultCommand::Clear),
                ..
            } => Ok(Request::FaultClear),
            CtlCommand::Fault { what: None, fault } => {
                let spec = crate::http::faults::FaultSpec {
                    status: fault.status,
                    latency_ms: fault.latency,
                    drop: fault.drop.unwrap_or(0),
                    reset: fault.reset.unwrap_or(0),
                    path: fault.path,
                    method: fault.method,
                    throttle: fault.throttle,
                    per_caller: fault.per_caller,
                };
                let request = Request::Fault {
                    spec: (!spec.is_empty()).then_some(spec),
                    r#for: fault.for_seconds,
                    credential_source: fault
                        .credential_source
                        .map(|_| crate::control::protocol::SourceState::Down),
                    packet_budget: fault.packet_budget,
                    expired_credentials: fault.expired_credentials,
                };
                crate::control::protocol::validate(&request)?;
                Ok(request)
            }
            CtlCommand::GcePreempt => Ok(Request::GcePreempt),
            CtlCommand::GceMaintenance { event } => {
                parse(serde_json::json!({"command": "gce-maintenance", "event": event}))
            }
            CtlCommand::AzureEvent {
                event_type,
                not_before,
                duration,
            } => {
                let request = parse(serde_json::json!({
                    "command": "azure-event", "type": event_type,
                    "not_before": not_before, "duration": duration,
                }))?;
                crate::control::protocol::validate(&request)?;
                Ok(request)
            }
            CtlCommand::Play { file } => {
                let files = Opener::from_environment().map_err(|error| error.to_string())?;
                let steps = config::resolve::read_scenario(&file, "scenario", &files)
                    .map_err(|error| error.to_string())?;
                Ok(Request::Play { steps })
            }
        }
    }
}

impl Cli {
    /// Resolves flags, the config file and defaults into one validated `Settings`. Every file
    /// named is read now, with the invoking user's rights under sudo (see
    /// [`config::named_file`]); so this runs before any other thread exists.
    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        let files = Opener::from_environment().map_err(|error| ConfigError(error.to_string()))?;
        self.into_settings_with(&files)
    }

    /// [`Cli::into_settings`] with files opened by `files`.
    pub fn into_settings_with(self, files: &Opener) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(path) => config::file::load(path, files)?,
            None => Layer::default(),
        };
        config::resolve(&file, &self.settings, &MachineDefaults::probe(), files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The help must say what the program does: ids of 8 or 17 digits (what the validator
    /// takes), every signal that stops it, and the role name --role-arn implies.
    #[test]
    fn help_matches_the_validator_the_signals_and_the_role_default() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("`i-` + 8 or 17 lower-case hex digits"),
            "{help}"
        );
        assert!(
            flat.contains("`ami-` + 8 or 17 lower-case hex digits"),
            "{help}"
        );
        assert!(crate::config::validate::instance_id("i-0123abcd").is_ok());
        assert!(crate::config::validate::instance_id("i-0123456789abcdef0").is_ok());
        assert!(flat.contains("SIGINT, SIGTERM or SIGHUP"), "{help}");
        assert!(
            flat.contains("the last segment of --role-arn, else imds-tun"),
            "{help}"
        );
    }
    use clap::Parser;

    /// Every command of the tree, `imds-tun` first, with its path (`imds-tun ctl spot`).
    fn every_command() -> Vec<(String, clap::Command)> {
        use clap::CommandFactory;
        let mut found = Vec::new();
        let mut pending = vec![("imds-tun".to_owned(), Cli::command())];
        while let Some((path, command)) = pending.pop() {
            for sub in command
                .get_subcommands()
                .filter(|sub| sub.get_name() != "help")
            {
                pending.push((format!("{path} {}", sub.get_name()), sub.clone()));
            }
            found.push((path, command));
        }
        found
    }

    /// What `--help` shows is what a person reads: every visible argument and subcommand says
    /// what it is, no default is shown twice (the text's own and clap's), and no example is
    /// broken by a line wrap of the source (`arn:aws:iam:: 123456789012`).
    #[test]
    fn every_help_text_is_there_once_and_unbroken() {
        let mut problems = Vec::new();
        for (path, mut command) in every_command() {
            for sub in command
                .get_subcommands()
                .filter(|sub| sub.get_name() != "help")
            {
                if sub
                    .get_about()
                    .is_none_or(|about| about.to_string().trim().is_empty())
                {
                    problems.push(format!("{path} {}: no description", sub.get_name()));
                }
            }
            for arg in command.get_arguments().filter(|arg| !arg.is_hide_set()) {
                let name = arg.get_id().as_str();
                if matches!(name, "help" | "version") {
                    continue;
                }
                if arg
                    .get_help()
                    .is_none_or(|help| help.to_string().trim().is_empty())
                {
                    problems.push(format!("{path} {name}: no description"));
                }
            }
            let help = command.render_long_help().to_string();
            for line in help.lines() {
                if line.matches("[default:").count() > 1 {
                    problems.push(format!("{path}: a default shown twice: {}", line.trim()));
                }
            }
            let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
            if flat.contains(":: ") {
                problems.push(format!("{path}: an example broken by a space after `::`"));
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
        // The walk reached the leaves, so the check above read them.
        let paths: Vec<String> = every_command().into_iter().map(|(path, _)| path).collect();
        assert!(
            paths.contains(&"imds-tun ctl fault list".to_owned()),
            "{paths:?}"
        );
    }

    #[test]
    fn listen_says_what_it_expects_on_the_command_line_as_in_the_file() {
        let error = Cli::try_parse_from(["imds-tun", "--listen", "8080"]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("expected ADDR:PORT such as \"127.0.0.1:8080\""),
            "{error}"
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn absent_flags_leave_the_layer_empty() {
        let cli = Cli::try_parse_from(["imds-tun"]).unwrap();
        assert_eq!(cli.settings, Layer::default());
    }

    #[test]
    fn flags_become_a_layer() {
        let cli = Cli::try_parse_from([
            "imds-tun",
            "--no-tun",
            "--listen",
            "127.0.0.1:8080",
            "--imdsv2",
            "required",
            "--tag",
            "Name=web",
            "--tag",
            "Team=a=b",
            "--instance-id",
            "i-0123456789abcdef0",
            "--max-user-data-bytes",
            "20000",
        ])
        .unwrap();
        let layer = cli.settings;
        assert_eq!(layer.max_user_data_bytes, Some(20000));
        assert_eq!(layer.no_tun, Some(true));
        assert_eq!(layer.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(layer.imdsv2, Some(config::Imdsv2::Required));
        let tags: Vec<_> = layer
            .tag
            .iter()
            .map(|tag| (tag.key.as_str(), tag.value.as_str()))
            .collect();
        assert_eq!(tags, [("Name", "web"), ("Team", "a=b")]);
        assert_eq!(layer.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    }

    #[test]
    fn credential_flags_become_a_layer() {
        let cli = Cli::try_parse_from([
            "imds-tun",
            "--role-arn",
            "arn:aws:iam::123456789012:role/app",
            "--profile",
            "dev",
            "--duration",
            "900",
            "--mfa-serial",
            "arn:aws:iam::123456789012:mfa/alice",
            "--mfa-code",
            "123456",
            "--refresh-margin",
            "600",
            "--retry-base-ms",
            "50",
        ])
        .unwrap();
        let layer = cli.settings;
        assert_eq!(
            layer.role_arn.as_deref(),
            Some("arn:aws:iam::123456789012:role/app")
        );
        assert_eq!(layer.profile.as_deref(), Some("dev"));
        assert_eq!(layer.duration, Some(900));
        assert_eq!(layer.refresh_margin, Some(600));
        assert_eq!(layer.retry_base_ms, Some(50));
        assert_eq!(layer.mfa_code.as_ref().map(|c| c.expose()), Some("123456"));
        assert!(!format!("{layer:?}").contains("\"123456\""));
    }

    #[test]
    fn tag_without_equals_is_rejected_by_the_parser() {
        assert!(Cli::try_parse_from(["imds-tun", "--tag", "novalue"]).is_err());
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = crate::temp_dir::TempDir::new();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"instance_type": "m5.large", "region": "eu-west-1", "listen": ["127.0.0.1:9000"]}"#,
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "imds-tun",
            "--config",
            path.to_str().unwrap(),
            "--instance-type",
            "c7g.large",
        ])
        .unwrap();
        let settings = cli.into_settings_with(&Opener::OwnRights).unwrap();
        assert_eq!(
            settings
                .local()
                .expect("a local service")
                .instance
                .instance_type,
            "c7g.large"
        );
        assert_eq!(
            settings.local().expect("a local service").instance.region,
            "eu-west-1"
        );
        assert_eq!(settings.listen.listeners.len(), 1);
    }
}
