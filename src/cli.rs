//! The command line (clap derive) and its translation into [`crate::config::Settings`].
//!
//! Flags carry no clap defaults on purpose: an absent flag must let the config file's value
//! through, so defaults are applied later by `config::resolve` (flag > file > default). The help
//! text states each default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::defaults::MachineDefaults;
use crate::config::{self, ConfigError, ConfigLayer, Opener, Settings, validate};
use crate::credentials::Secret;

/// Serve an EC2 instance metadata service on 169.254.169.254 through a TUN device.
#[derive(Debug, Default, clap::Parser)]
#[command(name = "imds-tun", version, about)]
pub struct Cli {
    /// JSON file with any of the settings below (keys: flag names with `_`, e.g. instance_id).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Also serve on a kernel TCP socket (repeatable).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Do not create a TUN device; serve only the --listen sockets.
    #[arg(long)]
    pub no_tun: bool,
    /// TUN interface name; `%d` lets the kernel pick a free number [default: imds%d].
    #[arg(long, value_name = "NAME")]
    pub tun_name: Option<String>,
    /// MTU of the TUN device, 576-65535 [default: 1500].
    #[arg(long, value_name = "BYTES")]
    pub mtu: Option<u64>,
    /// Most concurrent connections through the TUN, 1-65536 [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u64>,
    /// Seconds in-flight requests may take after SIGINT, SIGTERM or SIGHUP, 0-3600 [default: 5].
    #[arg(long, value_name = "SECONDS")]
    pub shutdown_grace: Option<u64>,
    /// Whether metadata requests need an IMDSv2 token [default: optional].
    #[arg(long, value_enum, value_name = "MODE")]
    pub imdsv2: Option<Imdsv2Arg>,

    /// Instance id, `i-` + 8 or 17 lower-case hex digits [default: 17 derived from
    /// /etc/machine-id].
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
    /// Instance type [default: t3.micro].
    #[arg(long, value_name = "TYPE")]
    pub instance_type: Option<String>,
    /// Region [default: us-east-1, or the region of --availability-zone].
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Availability zone, inside the region [default: the region + `a`].
    #[arg(long, value_name = "ZONE")]
    pub availability_zone: Option<String>,
    /// AWS account id, 12 digits [default: 123456789012].
    #[arg(long, value_name = "ID")]
    pub account_id: Option<String>,
    /// Image id, `ami-` + 8 or 17 lower-case hex digits [default: 17 derived from
    /// /etc/machine-id].
    #[arg(long, value_name = "ID")]
    pub ami_id: Option<String>,
    /// Hostname (also local-hostname) [default: this host's name].
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Private IPv4 [default: this host's primary IPv4, else a stable 172.31.x.y].
    #[arg(long, value_name = "IP")]
    pub local_ipv4: Option<String>,
    /// Public IPv4 [default: none; the public-* leaves answer 404].
    #[arg(long, value_name = "IP")]
    pub public_ipv4: Option<String>,
    /// MAC of the primary interface [default: 0e:… derived from /etc/machine-id].
    #[arg(long, value_name = "MAC")]
    pub mac: Option<String>,
    /// Instance profile role name [default: the last segment of --role-arn, else imds-tun].
    #[arg(long, value_name = "NAME")]
    pub role_name: Option<String>,
    /// File served as user-data [default: none; user-data answers 404].
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// Instance tag KEY=VALUE, served under tags/instance/ (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tag: Vec<(String, String)>,

    /// Serve credentials of this role (STS AssumeRole with your own credentials); the role name
    /// in the tree is the ARN's last segment unless --role-name [default: your own session].
    #[arg(long, value_name = "ARN", help_heading = "Credentials")]
    pub role_arn: Option<String>,
    /// AWS profile with the source credentials [default: AWS_PROFILE, else the default chain].
    #[arg(long, value_name = "NAME", help_heading = "Credentials")]
    pub profile: Option<String>,
    /// Role session name, 2-64 of [A-Za-z0-9_+=,.@-] [default: USER@HOST].
    #[arg(long, value_name = "NAME", help_heading = "Credentials")]
    pub role_session_name: Option<String>,
    /// External id the role's trust policy asks for.
    #[arg(long, value_name = "ID", help_heading = "Credentials")]
    pub external_id: Option<String>,
    /// Lifetime of each set: 900-43200 with --role-arn [default: 3600], 900-129600 without
    /// [default: 43200].
    #[arg(long, value_name = "SECONDS", help_heading = "Credentials")]
    pub duration: Option<u64>,
    /// MFA device (ARN or serial) the role or session needs; the code is asked on the terminal.
    #[arg(long, value_name = "SERIAL", help_heading = "Credentials")]
    pub mfa_serial: Option<String>,
    /// The current 6-digit MFA code, instead of asking on the terminal (a one-time code, so
    /// acceptable on the command line; imds-tun takes no flag for secret keys).
    #[arg(long, value_name = "CODE", help_heading = "Credentials", value_parser = parse_secret)]
    pub mfa_code: Option<Secret>,
    /// Serve fake credentials even if real ones are available.
    #[arg(long, help_heading = "Credentials")]
    pub mock_credentials: bool,
    /// Refresh once less than this remains, 300-43200 [default: 900].
    #[arg(long, value_name = "SECONDS", help_heading = "Credentials")]
    pub refresh_margin: Option<u64>,
    /// First retry delay after a failed refresh, doubling to 60 s (tests).
    #[arg(long, value_name = "MS", hide = true)]
    pub retry_base_ms: Option<u64>,
    /// Test-only: treat every set as expiring this many seconds after it was obtained.
    #[arg(long, value_name = "SECONDS", hide = true)]
    pub credentials_max_lifetime: Option<u64>,

    /// Forward every request to this metadata service (e.g. another imds-tun on the host:
    /// http://10.0.2.2:8080) instead of answering locally; plain http only.
    #[arg(
        long,
        value_name = "URL",
        help_heading = "Upstream and listener protection"
    )]
    pub upstream: Option<String>,
    /// File holding the shared secret sent upstream as X-Imds-Tun-Token (not world-readable).
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Upstream and listener protection"
    )]
    pub upstream_token_file: Option<PathBuf>,
    /// File holding the shared secret that requests on non-loopback --listen sockets must carry
    /// as X-Imds-Tun-Token (not world-readable); required for such listeners.
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Upstream and listener protection"
    )]
    pub listen_token_file: Option<PathBuf>,
    /// Serve non-loopback --listen sockets WITHOUT a token: anyone who reaches them gets the
    /// role credentials.
    #[arg(long, help_heading = "Upstream and listener protection")]
    pub insecure_listen_without_token: bool,

    /// Serve as this user once the TUN and sockets exist [default: the user behind sudo; a
    /// root run outside sudo stays root].
    #[arg(long, value_name = "NAME", help_heading = "Hardening")]
    pub user: Option<String>,
    /// Accept connections only from this address block (repeatable), e.g. 169.254.169.253/32
    /// for this host only; others are reset [default: everyone who can reach the address].
    #[arg(long, value_name = "CIDR", help_heading = "Hardening")]
    pub allow_from: Vec<String>,
    /// Seconds a client has to send a request's headers; also the idle keep-alive timeout,
    /// 1-3600 [default: 10].
    #[arg(long, value_name = "SECONDS", help_heading = "Hardening")]
    pub header_timeout: Option<u64>,
    /// Largest request head in bytes (beyond it: 431), 8192-1048576 [default: 16384].
    #[arg(long, value_name = "BYTES", help_heading = "Hardening")]
    pub max_header_bytes: Option<u64>,
    /// Longest request path in bytes (beyond it: 414), 16-65535 [default: 1024].
    #[arg(long, value_name = "BYTES", help_heading = "Hardening")]
    pub max_path_length: Option<u64>,
    /// Largest user data in bytes, from --user-data or the config file; a larger one stops
    /// the start, 1-1048576 [default: 16384, EC2's own limit].
    #[arg(long, value_name = "BYTES", help_heading = "Hardening")]
    pub max_user_data_bytes: Option<u64>,
    /// Check whether this machine can run imds-tun with these settings, change nothing, exit
    /// 0 (it can) or 1 (it cannot).
    #[arg(long)]
    pub check: bool,
}

/// `--imdsv2` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Imdsv2Arg {
    /// Tokenless (IMDSv1) requests are served too.
    Optional,
    /// Every metadata request needs a session token.
    Required,
}

fn parse_secret(value: &str) -> Result<Secret, String> {
    Ok(Secret::new(value))
}

fn parse_tag(value: &str) -> Result<(String, String), String> {
    validate::tag_pair(value)
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
            None => ConfigLayer::default(),
        };
        config::resolve(file, self.into_layer(), &MachineDefaults::probe(), files)
    }

    /// The flags as a config layer: only what was given on the command line is `Some`.
    fn into_layer(self) -> ConfigLayer {
        let strings = |addresses: Vec<SocketAddr>| {
            (!addresses.is_empty()).then(|| addresses.iter().map(ToString::to_string).collect())
        };
        ConfigLayer {
            listen: strings(self.listen),
            no_tun: self.no_tun.then_some(true),
            tun_name: self.tun_name,
            mtu: self.mtu,
            max_connections: self.max_connections,
            shutdown_grace_seconds: self.shutdown_grace,
            imdsv2: self.imdsv2.map(|mode| {
                match mode {
                    Imdsv2Arg::Optional => "optional",
                    Imdsv2Arg::Required => "required",
                }
                .to_owned()
            }),
            instance_id: self.instance_id,
            instance_type: self.instance_type,
            region: self.region,
            availability_zone: self.availability_zone,
            account_id: self.account_id,
            ami_id: self.ami_id,
            hostname: self.hostname,
            local_ipv4: self.local_ipv4,
            public_ipv4: self.public_ipv4,
            mac: self.mac,
            role_name: self.role_name,
            user_data_file: self.user_data,
            tags: (!self.tag.is_empty()).then(|| self.tag.into_iter().collect::<BTreeMap<_, _>>()),
            role_arn: self.role_arn,
            profile: self.profile,
            role_session_name: self.role_session_name,
            external_id: self.external_id,
            duration_seconds: self.duration,
            mfa_serial: self.mfa_serial,
            mfa_code: self.mfa_code,
            mock_credentials: self.mock_credentials.then_some(true),
            refresh_margin_seconds: self.refresh_margin,
            retry_base_ms: self.retry_base_ms,
            credentials_max_lifetime_seconds: self.credentials_max_lifetime,
            upstream: self.upstream,
            upstream_token_file: self.upstream_token_file,
            listen_token_file: self.listen_token_file,
            insecure_listen_without_token: self.insecure_listen_without_token.then_some(true),
            user: self.user,
            allow_from: (!self.allow_from.is_empty()).then_some(self.allow_from),
            header_timeout_seconds: self.header_timeout,
            max_header_bytes: self.max_header_bytes,
            max_path_length: self.max_path_length,
            max_user_data_bytes: self.max_user_data_bytes,
            ..ConfigLayer::default()
        }
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

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn absent_flags_leave_the_layer_empty() {
        let cli = Cli::try_parse_from(["imds-tun"]).unwrap();
        assert_eq!(cli.into_layer(), ConfigLayer::default());
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
        let layer = cli.into_layer();
        assert_eq!(layer.max_user_data_bytes, Some(20000));
        assert_eq!(layer.no_tun, Some(true));
        assert_eq!(layer.listen, Some(vec!["127.0.0.1:8080".to_string()]));
        assert_eq!(layer.imdsv2.as_deref(), Some("required"));
        let tags = layer.tags.unwrap();
        assert_eq!(tags["Name"], "web");
        assert_eq!(tags["Team"], "a=b");
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
        let layer = cli.into_layer();
        assert_eq!(
            layer.role_arn.as_deref(),
            Some("arn:aws:iam::123456789012:role/app")
        );
        assert_eq!(layer.profile.as_deref(), Some("dev"));
        assert_eq!(layer.duration_seconds, Some(900));
        assert_eq!(layer.refresh_margin_seconds, Some(600));
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
        let dir = std::env::temp_dir().join(format!("imds-tun-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
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
        assert_eq!(settings.listen.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
