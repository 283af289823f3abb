//! Every setting, written once: the field of [`Layer`] that both the command line (clap) and the
//! config file (serde) fill in.
//!
//! A field's name is its config key, and its long flag is the same name with `-` for `_`
//! (`shutdown_grace`, `--shutdown-grace`): no table maps one to the other, so a value's origin in
//! an error message is always `--flag-name` or `config: flag_name` (see `config::resolve`). A
//! field is `Option<T>` ("not given here" is `None`) or, for a repeatable flag, `Vec<T>` ("not
//! given" is empty), so precedence stays a field-by-field choice between two values of one type.
//!
//! Values are parsed here, once, at the edge: addresses, `--imdsv2`'s two modes and `--tag`'s
//! `KEY=VALUE` become types; checks that need a message naming the origin, or several fields,
//! belong to `config::resolve`. Defaults are *not* applied here (a clap default would hide the
//! file's value); the help text states them.
//!
//! Settings without a flag (the config file's richer identity, the upstream timeouts) carry
//! `#[arg(skip)]`; the one-time `--mfa-code` carries `#[serde(skip)]`, so no file can hold it.
//!
//! Adding a setting: one field here (doc comment = help text, with its default), one line in
//! the `config::resolve` part that builds the layer's settings it feeds (`number_of!` for a
//! number), and its use in that layer (see `crate::config`); then a README row (for a flag) and
//! a `docs/metadata.md` row, which `tests/docs/docs_settings.rs` demands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _, Unexpected};

use crate::secret::Secret;

/// One source of settings (the flags, or the file); `None` or empty means "not given here".
#[derive(Debug, Default, Clone, PartialEq, Eq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    // Service.
    /// Also serve on a kernel TCP socket (repeatable).
    #[arg(long, value_name = "ADDR:PORT", value_parser = listen_address)]
    #[serde(default, deserialize_with = "socket_addresses")]
    pub listen: Vec<SocketAddr>,
    /// Serve Prometheus metrics at GET /metrics on this kernel TCP socket: loopback, or any
    /// address with --listen-token-file (requests then carry its X-Imds-Tun-Token)
    /// [default: none].
    #[arg(long, value_name = "ADDR:PORT", value_parser = listen_address)]
    #[serde(default, deserialize_with = "socket_address")]
    pub metrics: Option<SocketAddr>,
    /// Do not create a TUN device; serve only the --listen sockets.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub no_tun: Option<bool>,
    /// TUN interface name; `%d` lets the kernel pick a free number [default: imds%d].
    #[arg(long, value_name = "NAME")]
    pub tun_name: Option<String>,
    /// MTU of the TUN device, 576-65535 [default: 1500].
    #[arg(long, value_name = "BYTES")]
    pub mtu: Option<u64>,
    /// Also serve on fd00:ec2::254, the IPv6 endpoint SDKs use with
    /// AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6 (Linux; the TUN only) [default: off].
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub ipv6: Option<bool>,
    /// Also claim 169.254.170.2 on the TUN, the ECS container endpoint SDKs dial with
    /// AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (Linux; the TUN only) [default: off].
    #[arg(
        long,
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Container endpoints"
    )]
    pub ecs: Option<bool>,
    /// Also claim 169.254.170.23 on the TUN (and fd00:ec2::23 with --ipv6), the EKS Pod
    /// Identity endpoint SDKs dial with AWS_CONTAINER_CREDENTIALS_FULL_URI (Linux; the TUN
    /// only) [default: off].
    #[arg(
        long,
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Container endpoints"
    )]
    pub eks_pod_identity: Option<bool>,
    /// Most concurrent connections through the TUN, 1-65536 [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u64>,
    /// Drop packets to the metadata addresses beyond PPS a second, before TCP, as EC2 drops
    /// link-local packets beyond 1024 (then clients retransmit), 1-1000000 [default: off].
    #[arg(long, value_name = "PPS")]
    pub packet_budget: Option<u64>,
    /// Most concurrent connections on the --listen sockets together, 1-65536; at the limit one
    /// caller gives way as on the TUN [default: 1024, less if the open-file limit is low].
    #[arg(long, value_name = "N")]
    pub max_listen_connections: Option<u64>,
    /// IP hop limit (TTL) of the IMDSv2 token reply through the TUN, 1-64, as EC2's
    /// HttpPutResponseHopLimit: 1 keeps containers on a bridge from getting a token [default: 2].
    #[arg(long, value_name = "N")]
    pub hop_limit: Option<u64>,
    /// Seconds in-flight requests may take after SIGINT, SIGTERM or SIGHUP, 0-3600 [default: 5].
    #[arg(long, value_name = "SECONDS")]
    pub shutdown_grace: Option<u64>,
    /// How log lines are written to stderr: `text` for people, `json` one object per line with
    /// each field a key, for machines [default: text].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<crate::logging::Format>,
    /// Whether metadata requests need an IMDSv2 token [default: optional].
    #[arg(long, value_enum, value_name = "MODE")]
    pub imdsv2: Option<Imdsv2>,
    /// Longest IMDSv2 token TTL granted, 1-21600 seconds: a PUT asking for more gets a token
    /// of this many, as a short TTL on EC2 makes long-lived clients meet 401s [default: 21600,
    /// EC2's own cap].
    #[arg(long, value_name = "SECONDS")]
    pub max_token_ttl: Option<u64>,
    /// Lifetime of the fake credentials, 1800-43200 seconds [default: 21600].
    #[arg(skip)]
    pub credentials_lifetime: Option<u64>,

    // Instance identity.
    /// Instance id, `i-` + 8 or 17 lower-case hex digits [default: 17 derived from
    /// /etc/machine-id].
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
    /// Reservation id, `r-` + 8 or 17 hex digits [default: derived].
    #[arg(skip)]
    pub reservation_id: Option<String>,
    /// Instance type [default: t3.micro].
    #[arg(long, value_name = "TYPE")]
    pub instance_type: Option<String>,
    /// Region [default: us-east-1, or the region of --availability-zone].
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Availability zone, inside the region [default: the region + `a`].
    #[arg(long, value_name = "ZONE")]
    pub availability_zone: Option<String>,
    /// Zone id such as `use1-az1` [default: derived from the region and the zone letter].
    #[arg(skip)]
    pub availability_zone_id: Option<String>,
    /// AWS account id, 12 digits [default: 123456789012].
    #[arg(long, value_name = "ID")]
    pub account_id: Option<String>,
    /// Image id, `ami-` + 8 or 17 lower-case hex digits [default: 17 derived from
    /// /etc/machine-id].
    #[arg(long, value_name = "ID")]
    pub ami_id: Option<String>,

    // Network.
    /// Hostname (also local-hostname) [default: this host's name].
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// local-hostname [default: the hostname].
    #[arg(skip)]
    pub local_hostname: Option<String>,
    /// Private IPv4 [default: this host's primary IPv4, else a stable 172.31.x.y].
    #[arg(long, value_name = "IP")]
    pub local_ipv4: Option<String>,
    /// Public IPv4 [default: none; the public-* leaves answer 404].
    #[arg(long, value_name = "IP")]
    pub public_ipv4: Option<String>,
    /// public-hostname; needs a public IPv4 [default: derived from it].
    #[arg(skip)]
    pub public_hostname: Option<String>,
    /// MAC of the primary interface [default: 0e:… derived from /etc/machine-id].
    #[arg(long, value_name = "MAC")]
    pub mac: Option<String>,
    /// Security group names, at least one [default: ["default"]].
    #[arg(skip)]
    pub security_groups: Option<Vec<String>>,

    // IAM, keys, tags, user data.
    /// Instance profile role name [default: the last segment of --role-arn, else imds-tun].
    #[arg(long, value_name = "NAME")]
    pub role_name: Option<String>,
    /// The key pair under public-keys/0 [default: none].
    #[arg(skip)]
    pub public_key: Option<PublicKeyLayer>,
    /// File served as user-data [default: none; user-data answers 404].
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// User data written in the config file itself, instead of `user_data` (a file).
    #[arg(skip)]
    pub user_data_text: Option<String>,
    /// Instance tag KEY=VALUE, served under tags/instance/ (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    #[serde(default)]
    pub tag: Vec<Tag>,

    // Credentials (docs/credentials.md).
    /// Serve credentials of this role (STS AssumeRole with your own credentials); the role name
    /// in the tree is the ARN's last segment unless --role-name [default: your own session].
    #[arg(long, value_name = "ARN", help_heading = "Credentials")]
    pub role_arn: Option<String>,
    /// AWS profile with the source credentials [default: AWS_PROFILE, else the default chain].
    #[arg(long, value_name = "NAME", help_heading = "Credentials")]
    pub profile: Option<String>,
    /// Role session name, 2-64 of [A-Za-z0-9_+=,.@-] [default: USER@HOST].
    // The doc is clap's --help text: its `[...]` are clap's conventions, not links.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, value_name = "NAME", help_heading = "Credentials")]
    pub role_session_name: Option<String>,
    /// External id the role's trust policy asks for.
    #[arg(long, value_name = "ID", help_heading = "Credentials")]
    pub external_id: Option<String>,
    /// Lifetime of each set in seconds: 900-43200 with --role-arn, 900-129600 without
    /// [default: 3600 with --role-arn, 43200 without].
    #[arg(long, value_name = "SECONDS", help_heading = "Credentials")]
    pub duration: Option<u64>,
    /// MFA device (ARN or serial) the role or session needs; the code is asked on the terminal.
    #[arg(long, value_name = "SERIAL", help_heading = "Credentials")]
    pub mfa_serial: Option<String>,
    /// The current 6-digit MFA code, instead of asking on the terminal (a one-time code, so
    /// acceptable on the command line; imds-tun takes no flag for secret keys).
    #[arg(long, value_name = "CODE", help_heading = "Credentials", value_parser = parse_secret)]
    #[serde(skip)]
    pub mfa_code: Option<Secret>,
    /// Serve fake credentials even if real ones are available.
    #[arg(
        long,
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Credentials"
    )]
    pub mock_credentials: Option<bool>,
    /// Serve callers matching SELECTOR this role instead (repeatable; first match wins):
    /// `uid:N`, `user:NAME`, `cidr:ADDR/LEN`, `cgroup:PREFIX`, e.g.
    /// `user:alice=arn:aws:iam::123456789012:role/app` [default: every caller gets the
    /// instance's role].
    #[arg(long, value_name = "SELECTOR=ROLE_ARN", help_heading = "Credentials")]
    #[serde(default)]
    pub caller_role: Vec<String>,
    /// Refresh once less than this remains, 300-43200 [default: 900].
    #[arg(long, value_name = "SECONDS", help_heading = "Credentials")]
    pub refresh_margin: Option<u64>,
    /// First retry delay after a failed refresh, doubling to 60 s (tests).
    #[arg(long, value_name = "MS", hide = true)]
    pub retry_base_ms: Option<u64>,
    /// Test-only: treat every set as expiring this many seconds after it was obtained.
    #[arg(long, value_name = "SECONDS", hide = true)]
    pub credentials_max_lifetime: Option<u64>,

    // Interruptions (docs/metadata.md#interruptions).
    /// Play this scenario from the start: a JSON list of steps such as `{"at": "+30s",
    /// "command": "spot", "action": "terminate"}`; `imds-tun ctl` changes it later [default:
    /// an on-demand instance with nothing pending].
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,

    /// Serve this snapshot (`imds-tun record`'s JSON, or cloud-init's instance-data.json): its
    /// EC2 tree, GCE and Azure documents, with explicit settings overriding it (docs/replay.md)
    /// [default: none].
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,

    // Google Compute Engine (docs/metadata.md#gce).
    /// Also answer as a GCE instance of this project on /computeMetadata/v1/ (Metadata-Flavor:
    /// Google) [default: off].
    #[arg(long, value_name = "ID", help_heading = "Google Compute Engine")]
    pub gcp_project: Option<String>,
    /// The project number [default: 12 digits derived from the project and /etc/machine-id].
    #[arg(long, value_name = "NUMBER", help_heading = "Google Compute Engine")]
    pub gcp_project_number: Option<u64>,
    /// Zone [default: us-central1-a].
    #[arg(long, value_name = "ZONE", help_heading = "Google Compute Engine")]
    pub gcp_zone: Option<String>,
    /// Instance name [default: this host's short name].
    #[arg(long, value_name = "NAME", help_heading = "Google Compute Engine")]
    pub gcp_instance_name: Option<String>,
    /// Numeric instance id [default: 19 digits derived].
    #[arg(skip)]
    pub gcp_instance_id: Option<u64>,
    /// The instance's hostname [default: NAME.ZONE.c.PROJECT.internal].
    #[arg(skip)]
    pub gcp_hostname: Option<String>,
    /// Machine type [default: e2-medium].
    #[arg(skip)]
    pub gcp_machine_type: Option<String>,
    /// Service account email [default: NUMBER-compute@developer.gserviceaccount.com].
    // The doc is clap's --help text: its `[...]` are clap's conventions, not links.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, value_name = "EMAIL", help_heading = "Google Compute Engine")]
    pub gcp_service_account: Option<String>,
    /// Instance attribute KEY=VALUE under instance/attributes/ (repeatable).
    #[arg(long, value_name = "KEY=VALUE", help_heading = "Google Compute Engine")]
    #[serde(default)]
    pub gcp_instance_attribute: Vec<Tag>,
    /// Project attribute KEY=VALUE under project/attributes/ (repeatable).
    #[arg(long, value_name = "KEY=VALUE", help_heading = "Google Compute Engine")]
    #[serde(default)]
    pub gcp_project_attribute: Vec<Tag>,
    /// Command printing an access token, run as the served user without a shell, e.g. `gcloud
    /// auth print-access-token` [default: --gcp-access-token-file, else GOOGLE_ACCESS_TOKEN,
    /// else fake tokens].
    #[arg(long, value_name = "COMMAND", help_heading = "Google Compute Engine")]
    pub gcp_access_token_command: Option<String>,
    /// File holding a static access token (not world-readable).
    #[arg(long, value_name = "FILE", help_heading = "Google Compute Engine")]
    pub gcp_access_token_file: Option<PathBuf>,
    /// Command printing an identity token, `{audience}` replaced by each request's audience,
    /// e.g. `gcloud auth print-identity-token --audiences={audience}` [default: fake tokens
    /// signed with imds-tun's published key].
    #[arg(long, value_name = "COMMAND", help_heading = "Google Compute Engine")]
    pub gcp_identity_token_command: Option<String>,

    // Azure (docs/metadata.md#azure); always served.
    /// Subscription id of the Azure VM [default: a GUID derived from /etc/machine-id].
    #[arg(long, value_name = "GUID", help_heading = "Azure")]
    pub azure_subscription_id: Option<String>,
    /// Resource group [default: imds-tun].
    #[arg(long, value_name = "NAME", help_heading = "Azure")]
    pub azure_resource_group: Option<String>,
    /// VM name [default: this host's short name].
    #[arg(long, value_name = "NAME", help_heading = "Azure")]
    pub azure_vm_name: Option<String>,
    /// Location (region) [default: eastus].
    #[arg(long, value_name = "LOCATION", help_heading = "Azure")]
    pub azure_location: Option<String>,
    /// VM size [default: Standard_D2s_v3].
    #[arg(skip)]
    pub azure_vm_size: Option<String>,
    /// Tenant id [default: a derived GUID].
    #[arg(skip)]
    pub azure_tenant_id: Option<String>,
    /// The managed identity's client id [default: a derived GUID].
    #[arg(skip)]
    pub azure_client_id: Option<String>,
    /// The managed identity's object id [default: a derived GUID].
    #[arg(skip)]
    pub azure_object_id: Option<String>,
    /// Command printing a managed-identity token, `{resource}` replaced by each request's
    /// resource, run as the served user without a shell, e.g. `az account get-access-token
    /// --resource {resource}` [default: fake tokens].
    #[arg(long, value_name = "COMMAND", help_heading = "Azure")]
    pub azure_token_command: Option<String>,

    // Container endpoints (docs/metadata.md#ecs, docs/metadata.md#eks-pod-identity).
    /// Serve ROLE_ARN's credentials at 169.254.170.2/v2/credentials/ID and its task metadata at
    /// /v4/ID (repeatable; ID: 1-64 of [A-Za-z0-9._-]); the id `imds-tun` always serves the
    /// instance's role [default: only `imds-tun`].
    // The doc is clap's --help text: its `[...]` are clap's conventions, not links.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, value_name = "ID=ROLE_ARN", help_heading = "Container endpoints")]
    #[serde(default)]
    pub ecs_credentials: Vec<String>,
    /// File whose content an EKS Pod Identity request must send as its Authorization header
    /// (not world-readable; read once at start-up); serves 169.254.170.23/v1/credentials.
    #[arg(long, value_name = "FILE", help_heading = "Container endpoints")]
    pub eks_pod_identity_token_file: Option<PathBuf>,

    // Upstream proxy mode and listener protection (see `config::proxy`).
    /// Forward every request to this metadata service (e.g. another imds-tun on the host:
    /// http://10.0.2.2:8080) instead of answering locally; plain http only.
    #[arg(
        long,
        value_name = "URL",
        help_heading = "Upstream and listener protection"
    )]
    pub upstream: Option<String>,
    /// On a real cloud VM, answer requests this rule names from the real metadata service (the
    /// one the kernel reached before imds-tun claimed the address), the rest locally
    /// (repeatable): ec2 (every EC2 path but credentials), gce, azure (likewise), or a path
    /// prefix such as /latest/meta-data/placement/ [default: none].
    // The doc is clap's --help text: its `[...]` are clap's conventions, not links.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(
        long,
        value_name = "RULE",
        help_heading = "Upstream and listener protection"
    )]
    #[serde(default)]
    pub pass_through: Vec<String>,
    /// File holding the shared secret sent upstream as X-Imds-Tun-Token (not world-readable).
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Upstream and listener protection"
    )]
    pub upstream_token_file: Option<PathBuf>,
    /// Time to connect to the upstream, 50-60000 ms [default: 1000].
    #[arg(skip)]
    pub upstream_connect_timeout_ms: Option<u64>,
    /// Time from a forwarded request to its response head, 50-300000 ms [default: 5000].
    #[arg(skip)]
    pub upstream_response_timeout_ms: Option<u64>,
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
    #[arg(
        long,
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Upstream and listener protection"
    )]
    pub insecure_listen_without_token: Option<bool>,

    // Hardening (see `config::hardening`).
    /// Serve as this user once the TUN and sockets exist [default: the user behind sudo; a
    /// root run outside sudo stays root].
    #[arg(long, value_name = "NAME", help_heading = "Hardening")]
    pub user: Option<String>,
    /// Let the served user use `imds-tun ctl` even when it is an account other programs share
    /// (nobody) [default: off: then only root may].
    #[arg(
        long,
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Hardening"
    )]
    pub allow_shared_user_ctl: Option<bool>,
    /// Accept connections only from this address block (repeatable), e.g. 169.254.169.253/32
    /// for this host only; others are reset [default: everyone who can reach the address].
    #[arg(long, value_name = "CIDR", help_heading = "Hardening")]
    #[serde(default)]
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
}

/// `--imdsv2` and `"imdsv2"`: whether metadata requests need a session token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Imdsv2 {
    /// Tokenless (IMDSv1) requests are served too.
    Optional,
    /// Every metadata request needs a session token.
    Required,
}

/// `--tag KEY=VALUE` and each string of `"tag": ["KEY=VALUE", ...]`: split at the first `=`.
///
/// The key's rules (not empty, no `/`) are checked in `config::resolve`, whose message names
/// where the tag came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// What comes before the first `=`: the tag's key, or the attribute's name.
    pub key: String,
    /// Everything after it, further `=` included; may be empty.
    pub value: String,
}

impl FromStr for Tag {
    type Err = String;

    fn from_str(text: &str) -> Result<Tag, String> {
        match text.split_once('=') {
            Some((key, value)) => Ok(Tag {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            None => Err("expected KEY=VALUE".into()),
        }
    }
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Tag, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|_| D::Error::invalid_value(Unexpected::Str(&text), &"KEY=VALUE"))
    }
}

/// `public-keys/0`: the key pair the instance was launched with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyLayer {
    /// `public_key.name`: the key pair's name, listed as `0=<name>`.
    pub name: String,
    /// `public_key.openssh_key`: the public key's one line, served at
    /// `public-keys/0/openssh-key`.
    pub openssh_key: String,
}

fn parse_secret(value: &str) -> Result<Secret, String> {
    Ok(Secret::new(value))
}

/// What `--listen` and `"listen"` take, said the same way for both.
const LISTEN_EXPECTED: &str = "ADDR:PORT such as \"127.0.0.1:8080\"";

/// `--listen ADDR:PORT`: std's parser, with the message the config file gives (std's own is
/// "invalid socket address syntax").
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("expected {LISTEN_EXPECTED}"))
}

/// `"metrics": "127.0.0.1:9100"`, parsed as the flag parses it.
fn socket_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse()
        .map(Some)
        .map_err(|_| D::Error::invalid_value(Unexpected::Str(&text), &LISTEN_EXPECTED))
}

/// `"listen": ["127.0.0.1:8080", ...]`, each parsed as the flag parses it.
fn socket_addresses<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| {
            text.parse()
                .map_err(|_| D::Error::invalid_value(Unexpected::Str(text), &LISTEN_EXPECTED))
        })
        .collect()
}

impl Layer {
    /// Every config key: the serde field names (`#[serde(skip)]` ones excluded), in order.
    pub fn keys() -> &'static [&'static str] {
        let mut fields: &'static [&'static str] = &[];
        // serde's derive hands the field names to `deserialize_struct`; nothing else is read.
        let _ = Layer::deserialize(FieldNames(&mut fields));
        fields
    }
}

/// A deserializer that only records the field names a struct asks for, then stops.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

/// [`FieldNames`]' way of stopping.
#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("field names recorded")
    }
}

impl std::error::Error for Stop {}

impl serde::de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Stop {
        Stop
    }
}

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = Stop;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        *self.0 = fields;
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Command};

    /// The one naming rule: a flag is its key with `-`; only `--mfa-code` has no key.
    #[test]
    fn every_flag_is_its_config_key_with_dashes() {
        let command = Layer::augment_args(Command::new("layer"));
        let keys = Layer::keys();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            assert_eq!(arg.get_long(), Some(id.replace('_', "-").as_str()), "{id}");
            assert!(keys.contains(&id) || id == "mfa_code", "{id} has no key");
        }
        assert!(!keys.contains(&"mfa_code"));
        assert!(keys.contains(&"public_key") && keys.contains(&"tag"));
    }

    #[test]
    fn tags_split_at_the_first_equals_sign() {
        let tag: Tag = "Team=a=b".parse().unwrap();
        assert_eq!((tag.key.as_str(), tag.value.as_str()), ("Team", "a=b"));
        assert!("novalue".parse::<Tag>().is_err());
    }
}
