//! Choosing the credential source at start-up, and building the AWS side of it.
//!
//! ```text
//!  --mock-credentials ───────────────────────────────────────────► fake (warning)
//!  source chain: env → profile (SSO, credential_process, assume-role, …) → web identity → ECS
//!     ├─ --role-arn ─────────────────────────────────────────────► AssumeRole, refreshed
//!     ├─ long-term keys ─────────────────────────────────────────► GetSessionToken, refreshed
//!     ├─ a session (token, maybe an expiry) ─────────────────────► served as is, re-read
//!     └─ nothing ── with --role-arn: exit 2 ── without: ─────────► fake (warning)
//! ```
//!
//! The chain must never reach the instance-metadata service: that would be imds-tun asking
//! itself. aws-config reads the process environment (its only supported source; handing it an
//! `Env` of our own needs its test-only `test-util` feature), so [`sdk_environment`] says what
//! to change there and `main` applies it before any thread exists
//! (`platform::change_environment_before_threads`): `AWS_EC2_METADATA_DISABLED=true` switches off
//! the chain's IMDS provider, the IMDS region lookup and a profile's
//! `credential_source = Ec2InstanceMetadata` alike. Child processes (`credential_process`)
//! inherit the same environment.
//!
//! Under `sudo`, `HOME` becomes the invoking user's (`SUDO_USER`), so `~/.aws/config`,
//! `~/.aws/credentials` and the SSO token cache are that user's, unless `AWS_CONFIG_FILE` /
//! `AWS_SHARED_CREDENTIALS_FILE` name other files.

// Without the `sts` feature only the fake source remains, and the helpers that prepare the AWS
// environment go unused; that build is for fuzzing, not for users.
#![cfg_attr(not(feature = "sts"), allow(dead_code, unused_imports))]

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "sts")]
use aws_config::BehaviorVersion;
// aws_config::profile::load still takes this (deprecated) alias of aws-runtime's
// EnvConfigFiles; naming the alias spares a direct dependency on aws-runtime.
#[allow(deprecated)]
#[cfg(feature = "sts")]
use aws_config::profile::profile_file::ProfileFiles;
#[cfg(feature = "sts")]
use aws_config::retry::RetryConfig;
#[cfg(feature = "sts")]
use aws_config::timeout::TimeoutConfig;
#[cfg(feature = "sts")]
use aws_credential_types::provider::ProvideCredentials;
#[cfg(feature = "sts")]
use aws_credential_types::provider::error::CredentialsError;
#[cfg(feature = "sts")]
use aws_types::os_shim_internal::{Env, Fs};
#[cfg(feature = "sts")]
use aws_types::region::Region;

use super::CredentialSource;
#[cfg(feature = "sts")]
use super::cache::{Policy, RefreshingCredentials};
use super::fake::FakeCredentials;
#[cfg(feature = "sts")]
use super::naming;
use super::outage::Outage;
use super::roles::{RoleSource, RoleStarter};
use super::status::{CredentialsStatus, SourceKind};
#[cfg(feature = "sts")]
use super::sts::{self, AssumeRole, Mfa, OwnSession};
use super::{ServedAs, Settings, SetupError};

/// How long start-up waits for the source chain to answer before going on without knowing.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long start-up waits for the first STS answer (so the first clients get real keys).
const FIRST_FETCH_WAIT: Duration = Duration::from_secs(5);

/// The chosen source and one line saying what it is.
pub struct Selected {
    /// The instance role's credentials, as the EC2 service asks for them.
    pub source: Arc<dyn CredentialSource>,
    /// The start-up line that says where credentials come from (`credentials: AssumeRole
    /// ...`), or why they are fake; may be empty.
    pub summary: String,
    /// True for fake credentials: the caller logs the summary as a warning.
    pub fake: bool,
    /// How a `--caller-role` role's source is made: AssumeRole with the same source
    /// credentials, or distinct fake credentials.
    pub starter: RoleStarter,
    /// Every role's source, expiry and refreshes, the instance role's from the start, others
    /// once started: what `ctl status` and the metrics read.
    pub status: CredentialsStatus,
}

impl std::fmt::Debug for Selected {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Selected")
            .field("summary", &self.summary)
            .field("fake", &self.fake)
            .finish_non_exhaustive()
    }
}

/// What a start would do for credentials, decided the way [`select`] decides it but without
/// reaching the network, running a `credential_process` or asking for an MFA code: what
/// `imds-tun --check` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Fake credentials, and why.
    Fake(String),
    /// The AWS credential chain: AssumeRole with `--role-arn`, else the caller's own session.
    Chain,
}

#[cfg(feature = "sts")]
/// The decisions [`select`] makes before any network I/O: fake on request, an unknown profile
/// refused, fake when nothing the chain reads exists (an error with `--role-arn`).
pub async fn plan(wanted: &Settings) -> Result<Plan, SetupError> {
    if wanted.mock {
        return Ok(Plan::Fake("--mock-credentials given".into()));
    }
    // Already prepared by `main` (see [`sdk_environment`]).
    let env = process_environment();
    check_profile(&env, wanted.profile.is_some()).await?;
    if !could_find_credentials(&env) {
        let searched = format!("environment, {}, web identity, container", config_dir(&env));
        return match &wanted.role_arn {
            Some(arn) => Err(SetupError::NoSourceCredentials {
                role_arn: arn.arn.clone(),
                searched,
            }),
            // Loading aws-config costs ~10 ms and ~4 MiB (endpoint partitions, TLS roots) only
            // to learn what the environment and the file system already say: there is nothing.
            None => Ok(Plan::Fake(format!(
                "no AWS credentials found (searched {searched})"
            ))),
        };
    }
    Ok(Plan::Chain)
}

#[cfg(not(feature = "sts"))]
/// Without STS only fake credentials exist.
pub async fn plan(wanted: &Settings) -> Result<Plan, SetupError> {
    if wanted.role_arn.is_some() || wanted.profile.is_some() || wanted.mfa_serial.is_some() {
        return Err(SetupError::BuiltWithoutSts);
    }
    Ok(Plan::Fake("built without STS support".into()))
}

#[cfg(feature = "sts")]
/// Picks and starts the credential source for `settings` (see the module docs). Errors are
/// settings errors (exit 2): an unknown profile, an MFA serial without a code, `--role-arn`
/// without any source credentials. A network failure is not an error: the source starts and
/// keeps retrying in the background.
pub async fn select(
    wanted: &Settings,
    served: ServedAs<'_>,
    outage: &Outage,
) -> Result<Selected, SetupError> {
    let role_name = served.role_name;
    if let Plan::Fake(why) = plan(wanted).await? {
        return Ok(fake(wanted, why, outage, role_name));
    }
    let env = process_environment();
    let mfa = mfa(wanted)?;

    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(2))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(25))
                .build(),
        )
        .load()
        .await;
    let region = sdk
        .region()
        .cloned()
        .unwrap_or_else(|| Region::new(served.region.to_owned()));
    let destination = sts::Destination::default();
    let sts_config = aws_sdk_sts::config::Builder::from(&sdk)
        .region(region.clone())
        .interceptor(destination.clone())
        .build();
    let client = aws_sdk_sts::Client::from_conf(sts_config.clone());
    let Some(chain) = sdk.credentials_provider() else {
        return Ok(fake(
            wanted,
            "aws-config built no credential chain".into(),
            outage,
            role_name,
        ));
    };
    let profile = env.get("AWS_PROFILE").map_or("default", String::as_str);
    let searched = format!(
        "environment, profile {profile:?} in {}, web identity, container",
        config_dir(&env)
    );

    let probe = tokio::time::timeout(PROBE_TIMEOUT, chain.provide_credentials()).await;
    let found = match probe {
        Ok(Ok(credentials)) => Some(Found {
            long_term: sts::is_long_term(&credentials),
            source: source_of(&credentials, profile, &profile_files(&env)),
        }),
        Ok(Err(CredentialsError::CredentialsNotLoaded(_))) => {
            if let Some(arn) = &wanted.role_arn {
                return Err(SetupError::NoSourceCredentials {
                    role_arn: arn.arn.clone(),
                    searched,
                });
            }
            return Ok(fake(
                wanted,
                format!("no AWS credentials found (searched {searched})"),
                outage,
                role_name,
            ));
        }
        Ok(Err(error)) => {
            tracing::warn!(
                "the source credentials are not available yet, retrying in the background: {}",
                sts::chain_error(&error).message
            );
            None
        }
        Err(_) => {
            tracing::warn!(
                "the source credentials did not load within {PROBE_TIMEOUT:?}; retrying in the background"
            );
            None
        }
    };
    let origin = found.as_ref().map_or_else(
        || "the source credentials (not loaded yet)".to_owned(),
        |found| {
            let kind = if found.long_term {
                "long-term keys"
            } else {
                "a session"
            };
            format!("{kind} from {}", found.source)
        },
    );
    let policy = Policy {
        refresh_margin: wanted.refresh_margin,
        retry_base: wanted.retry_base,
        retry_max: Duration::from_secs(60),
        max_lifetime: wanted.max_lifetime,
    };

    let status = CredentialsStatus::default();
    let session_name = wanted.role_session_name.clone().unwrap_or_else(|| {
        naming::default_session_name(
            &naming::invoking_user(|key| std::env::var(key).ok()),
            served.hostname,
        )
    });
    let starter: RoleStarter = {
        let client = client.clone();
        let config = sts_config.clone();
        let session_name = session_name.clone();
        let external_id = wanted.external_id.clone();
        let destination = destination.clone();
        // A caller role lasts STS's default hour unless --duration says otherwise.
        let duration = wanted
            .duration
            .unwrap_or(Duration::from_secs(super::settings::ROLE_DURATION_SECONDS));
        let policy = policy.clone();
        let outage = outage.clone();
        let status = status.clone();
        Arc::new(move |role| {
            let fetcher = AssumeRole {
                client: client.clone(),
                config: config.clone(),
                role_arn: role.arn.clone(),
                session_name: session_name.clone(),
                external_id: external_id.clone(),
                duration,
                // An MFA code is good once, at start-up: roles assumed later cannot use one.
                mfa: None,
                mfa_session: None,
                destination: destination.clone(),
            };
            Arc::new(RefreshingCredentials::spawn_reporting(
                fetcher,
                policy.clone(),
                &role.name,
                outage.clone(),
                status.register(&role.name, SourceKind::StsRole),
            )) as Arc<dyn RoleSource>
        })
    };
    let (source, summary) = if let Some(arn) = &wanted.role_arn {
        let summary = format!(
            "credentials: AssumeRole {} as session {session_name:?} for {}s{} with {origin}, \
             STS region {region}, served as role {role_name:?}",
            arn.arn,
            wanted.duration_or_default().as_secs(),
            mfa.as_ref()
                .map_or(String::new(), |m| format!(", MFA {}", m.serial)),
        );
        let fetcher = AssumeRole {
            client,
            config: sts_config,
            role_arn: arn.arn.clone(),
            session_name,
            external_id: wanted.external_id.clone(),
            duration: wanted.duration_or_default(),
            mfa,
            mfa_session: None,
            destination: destination.clone(),
        };
        let reported = status.register(role_name, SourceKind::StsRole);
        (
            RefreshingCredentials::spawn_reporting(
                fetcher,
                policy,
                role_name,
                outage.clone(),
                reported,
            ),
            summary,
        )
    } else {
        let how = match &found {
            Some(found) if found.long_term => format!(
                "GetSessionToken for {}s with the long-term keys from {}",
                wanted.duration_or_default().as_secs(),
                found.source
            ),
            Some(found) => format!("the session from {}, served as is", found.source),
            None => "the source credentials' session (not loaded yet; GetSessionToken for \
                     long-term keys)"
                .to_owned(),
        };
        let summary =
            format!("credentials: {how}, STS region {region}, served as role {role_name:?}");
        let fetcher = OwnSession {
            chain,
            client,
            duration: wanted.duration_or_default(),
            mfa,
            mfa_used: false,
            destination,
        };
        let reported = status.register(role_name, SourceKind::Session);
        (
            RefreshingCredentials::spawn_reporting(
                fetcher,
                policy,
                role_name,
                outage.clone(),
                reported,
            ),
            summary,
        )
    };
    if !source.wait_first(FIRST_FETCH_WAIT).await {
        tracing::warn!(
            "no credentials yet; serving the EC2 error for role {role_name:?} until a retry succeeds"
        );
    }
    Ok(Selected {
        source: Arc::new(source),
        summary,
        fake: false,
        starter,
        status,
    })
}

/// What the start-up probe of the chain found.
#[cfg(feature = "sts")]
struct Found {
    /// An IAM user's keys (no session token), traded for a session before serving.
    long_term: bool,
    /// Which provider of the chain answered, for the `credentials:` line ([`source_of`]).
    source: String,
}

/// Which provider of aws-config's chain gave `credentials`, in the words of its settings
/// (`the environment (AWS_ACCESS_KEY_ID)`, `profile "dev" in /home/alice/.aws`, ...).
///
/// The chain marks what it used on the credentials it returns (`AwsCredentialFeature`, the
/// SDK's own record for its user-agent metrics, which aws-config's tests pin per provider; the
/// accessor is doc-hidden in aws-credential-types 1.x, so should the record go away this says
/// "the default credential chain" and `tests/sdk/sts_e2e.rs` fails); `profile` and `files` are
/// what the profile provider read, as the chain decided it.
#[cfg(feature = "sts")]
fn source_of(
    credentials: &aws_credential_types::Credentials,
    profile: &str,
    files: &str,
) -> String {
    use aws_credential_types::credential_feature::AwsCredentialFeature as Used;
    let used: &[Used] = credentials
        .get_property::<Vec<Used>>()
        .map_or(&[], Vec::as_slice);
    let has = |feature: Used| used.contains(&feature);
    if has(Used::CredentialsEnvVars) {
        return "the environment (AWS_ACCESS_KEY_ID)".to_owned();
    }
    if has(Used::CredentialsProfile) {
        let how = if has(Used::CredentialsSso) {
            "SSO of "
        } else if has(Used::CredentialsProcess) {
            "the credential_process of "
        } else if has(Used::CredentialsStsAssumeRole) {
            "the role_arn of "
        } else if has(Used::CredentialsProfileStsWebIdToken) {
            "the web identity of "
        } else {
            ""
        };
        return format!("{how}profile {profile:?} in {files}");
    }
    if has(Used::CredentialsProfileStsWebIdToken) || has(Used::CredentialsStsAssumeRoleWebId) {
        return "web identity (AWS_WEB_IDENTITY_TOKEN_FILE)".to_owned();
    }
    if has(Used::CredentialsHttp) {
        return "the container credentials endpoint (AWS_CONTAINER_CREDENTIALS_*)".to_owned();
    }
    if has(Used::CredentialsProcess) {
        return "a credential_process".to_owned();
    }
    "the default credential chain".to_owned()
}

/// Without the `sts` feature (a build for fuzzing or for offline use only): fake credentials,
/// and a clear refusal for flags that need STS.
#[cfg(not(feature = "sts"))]
pub async fn select(
    wanted: &Settings,
    served: ServedAs<'_>,
    outage: &Outage,
) -> Result<Selected, SetupError> {
    match plan(wanted).await? {
        Plan::Fake(why) => Ok(fake(wanted, why, outage, served.role_name)),
        Plan::Chain => Err(SetupError::BuiltWithoutSts),
    }
}

fn fake(settings: &Settings, why: String, outage: &Outage, role_name: &str) -> Selected {
    let lifetime = settings.fake_lifetime;
    let for_roles = outage.clone();
    let status = CredentialsStatus::default();
    let roles_status = status.clone();
    Selected {
        starter: Arc::new(move |role| {
            Arc::new(
                FakeCredentials::new(lifetime)
                    .with_outage(for_roles.clone())
                    .reporting(roles_status.register(&role.name, SourceKind::Fake)),
            ) as Arc<dyn RoleSource>
        }),
        source: Arc::new(
            FakeCredentials::from_settings(settings)
                .with_outage(outage.clone())
                .reporting(status.register(role_name, SourceKind::Fake)),
        ),
        status,
        summary: format!(
            "{why}; serving FAKE credentials that AWS rejects (see docs/credentials.md: --role-arn, --profile)"
        ),
        fake: true,
    }
}

/// The invoking user's home under `sudo` (root with `SUDO_USER` set to someone else).
fn sudo_home(env: &HashMap<String, String>) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = env
        .get("SUDO_USER")
        .filter(|user| !user.is_empty() && *user != "root")?;
    let entry = nix::unistd::User::from_name(user).ok().flatten()?;
    entry.dir.to_str().map(str::to_owned)
}

/// The process environment as text (variables that are not UTF-8 are skipped).
fn process_environment() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

/// What to change in this process's environment before aws-config reads it (see the module
/// docs): the changes that turn the current environment into [`sdk_env`]'s.
pub fn sdk_environment(profile: Option<&str>) -> Vec<(String, Option<String>)> {
    let current = process_environment();
    let home = sudo_home(&current);
    let wanted = sdk_env(current.clone(), profile, home.as_deref());
    environment_changes(&current, &wanted)
}

/// The sets and removals that turn `current` into `wanted`, in a stable order.
fn environment_changes(
    current: &HashMap<String, String>,
    wanted: &HashMap<String, String>,
) -> Vec<(String, Option<String>)> {
    let mut changes: Vec<(String, Option<String>)> = wanted
        .iter()
        .filter(|(key, value)| current.get(*key) != Some(value))
        .map(|(key, value)| (key.clone(), Some(value.clone())))
        .collect();
    changes.extend(
        current
            .keys()
            .filter(|key| !wanted.contains_key(*key))
            .map(|key| (key.clone(), None)),
    );
    changes.sort();
    changes
}

/// The environment aws-config sees: the process's, IMDS disabled, `HOME` the invoking user's
/// under sudo, and with `--profile` that profile instead of any keys in the environment (as
/// the AWS CLI does).
pub fn sdk_env(
    mut env: HashMap<String, String>,
    profile: Option<&str>,
    home: Option<&str>,
) -> HashMap<String, String> {
    env.insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
    if let Some(home) = home {
        env.insert("HOME".into(), home.to_owned());
    }
    if let Some(profile) = profile {
        env.insert("AWS_PROFILE".into(), profile.to_owned());
        for key in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ] {
            env.remove(key);
        }
    }
    env
}

/// Whether anything the default chain reads exists: credential or profile variables, web
/// identity or container settings, or an AWS config or credentials file. False means the chain
/// is certain to come back empty.
pub fn could_find_credentials(env: &HashMap<String, String>) -> bool {
    const SOURCES: &[&str] = &[
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ];
    if SOURCES.iter().any(|key| env.contains_key(*key)) {
        return true;
    }
    let home = env.get("HOME");
    let file = |variable: &str, default_name: &str| {
        env.get(variable)
            .map(std::path::PathBuf::from)
            .or_else(|| home.map(|home| std::path::Path::new(home).join(".aws").join(default_name)))
    };
    [
        file("AWS_CONFIG_FILE", "config"),
        file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
    ]
    .into_iter()
    .flatten()
    .any(|path| path.exists())
}

/// Where the profile provider reads: `~/.aws`, or the files `AWS_CONFIG_FILE` and
/// `AWS_SHARED_CREDENTIALS_FILE` name instead.
#[cfg(feature = "sts")]
fn profile_files(env: &HashMap<String, String>) -> String {
    let home = env
        .get("HOME")
        .map_or_else(|| "~/.aws".to_owned(), |home| format!("{home}/.aws"));
    match (
        env.get("AWS_CONFIG_FILE"),
        env.get("AWS_SHARED_CREDENTIALS_FILE"),
    ) {
        (None, None) => home,
        (config, credentials) => format!(
            "{} and {}",
            config.map_or_else(|| format!("{home}/config"), Clone::clone),
            credentials.map_or_else(|| format!("{home}/credentials"), Clone::clone)
        ),
    }
}

fn config_dir(env: &HashMap<String, String>) -> String {
    match (env.get("AWS_CONFIG_FILE"), env.get("HOME")) {
        (Some(file), _) => file.clone(),
        (None, Some(home)) => format!("{home}/.aws"),
        (None, None) => "~/.aws".to_owned(),
    }
}

#[cfg(feature = "sts")]
/// A named profile (`--profile`, or `AWS_PROFILE`) must exist in the config or credentials file.
async fn check_profile(env: &HashMap<String, String>, from_flag: bool) -> Result<(), SetupError> {
    let Some(name) = env.get("AWS_PROFILE") else {
        return Ok(());
    };
    let label = if from_flag {
        "--profile"
    } else {
        "AWS_PROFILE"
    };
    #[allow(deprecated)] // see the `use` of ProfileFiles
    let files = ProfileFiles::default();
    let profiles = aws_config::profile::load(&Fs::real(), &Env::from(env.clone()), &files, None)
        .await
        .map_err(|error| SetupError::ProfileFilesUnreadable {
            label,
            name: name.clone(),
            reason: error.to_string(),
        })?;
    if profiles.get_profile(name).is_some() {
        Ok(())
    } else {
        let mut known: Vec<&str> = profiles.profiles().collect();
        known.sort_unstable();
        Err(SetupError::UnknownProfile {
            label,
            name: name.clone(),
            searched_in: config_dir(env),
            known: if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            },
        })
    }
}

#[cfg(feature = "sts")]
/// The MFA serial and code: `--mfa-code`, else asked on the terminal now.
fn mfa(wanted: &Settings) -> Result<Option<Mfa>, SetupError> {
    let Some(serial) = &wanted.mfa_serial else {
        return Ok(None);
    };
    let code = match &wanted.mfa_code {
        Some(code) => code.expose().to_owned(),
        None => ask_mfa_code(serial)?,
    };
    Ok(Some(Mfa {
        serial: serial.clone(),
        code,
    }))
}

#[cfg(feature = "sts")]
/// Asks for the code on the controlling terminal (not stdin: it may be a pipe).
fn ask_mfa_code(serial: &str) -> Result<String, SetupError> {
    let no_terminal = |why: String| SetupError::NoTerminalForMfa {
        serial: serial.to_owned(),
        why,
    };
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|error| no_terminal(error.to_string()))?;
    let mut writer = &tty;
    write!(writer, "MFA code for {serial}: ")
        .and_then(|()| writer.flush())
        .map_err(|error| no_terminal(error.to_string()))?;
    let mut line = String::new();
    std::io::BufReader::new(&tty)
        .read_line(&mut line)
        .map_err(|error| no_terminal(error.to_string()))?;
    super::settings::mfa_code(line.trim()).map_err(|expected| SetupError::BadMfaCode {
        serial: serial.to_owned(),
        expected,
    })
}

#[cfg(all(test, feature = "sts"))]
mod tests {
    use super::*;

    #[test]
    fn the_source_is_named_by_the_provider_that_answered() {
        use aws_credential_types::credential_feature::AwsCredentialFeature as Used;
        let with = |used: Vec<Used>| {
            let mut credentials =
                aws_credential_types::Credentials::new("AKIA", "secret", None, None, "test");
            credentials.set_property(used);
            source_of(&credentials, "dev", "/home/alice/.aws")
        };
        assert_eq!(
            with(vec![Used::CredentialsEnvVars]),
            "the environment (AWS_ACCESS_KEY_ID)"
        );
        assert_eq!(
            with(vec![Used::CredentialsProfile]),
            "profile \"dev\" in /home/alice/.aws"
        );
        assert_eq!(
            with(vec![Used::CredentialsSso, Used::CredentialsProfile]),
            "SSO of profile \"dev\" in /home/alice/.aws"
        );
        assert_eq!(
            with(vec![Used::CredentialsProfileStsWebIdToken]),
            "web identity (AWS_WEB_IDENTITY_TOKEN_FILE)"
        );
        assert_eq!(
            with(vec![Used::CredentialsHttp]),
            "the container credentials endpoint (AWS_CONTAINER_CREDENTIALS_*)"
        );
        assert_eq!(with(vec![]), "the default credential chain");
    }

    fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn nothing_to_find_means_no_variables_and_no_files() {
        let scratch = crate::temp_dir::TempDir::new();
        let empty_home = scratch.path();
        let home = empty_home.to_string_lossy().into_owned();
        assert!(!could_find_credentials(&env_of(&[("HOME", &home)])));
        assert!(could_find_credentials(&env_of(&[
            ("HOME", &home),
            ("AWS_ACCESS_KEY_ID", "AKIA")
        ])));
        assert!(could_find_credentials(&env_of(&[
            ("HOME", &home),
            ("AWS_PROFILE", "dev")
        ])));
        std::fs::create_dir_all(empty_home.join(".aws")).expect(".aws");
        std::fs::write(empty_home.join(".aws/credentials"), "[default]\n").expect("file");
        assert!(could_find_credentials(&env_of(&[("HOME", &home)])));
        let config = empty_home
            .join(".aws/credentials")
            .to_string_lossy()
            .into_owned();
        assert!(could_find_credentials(&env_of(&[(
            "AWS_CONFIG_FILE",
            &config
        )])));
    }

    #[test]
    fn the_environment_changes_set_what_differs_and_remove_what_must_go() {
        let current = env_of(&[
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("HOME", "/root"),
            ("PATH", "/bin"),
        ]);
        let wanted = sdk_env(current.clone(), Some("dev"), Some("/home/alice"));
        assert_eq!(
            environment_changes(&current, &wanted),
            vec![
                ("AWS_ACCESS_KEY_ID".to_owned(), None),
                (
                    "AWS_EC2_METADATA_DISABLED".to_owned(),
                    Some("true".to_owned())
                ),
                ("AWS_PROFILE".to_owned(), Some("dev".to_owned())),
                ("HOME".to_owned(), Some("/home/alice".to_owned())),
            ]
        );
    }

    #[test]
    fn imds_is_always_disabled_for_aws_config() {
        let env = sdk_env(
            env_of(&[("AWS_EC2_METADATA_DISABLED", "false")]),
            None,
            None,
        );
        assert_eq!(env["AWS_EC2_METADATA_DISABLED"], "true");
    }

    #[test]
    fn profile_flag_beats_keys_in_the_environment() {
        let env = sdk_env(
            env_of(&[
                ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
                ("AWS_PROFILE", "other"),
            ]),
            Some("dev"),
            Some("/home/alice"),
        );
        assert_eq!(env["AWS_PROFILE"], "dev");
        assert_eq!(env["HOME"], "/home/alice");
        assert!(!env.contains_key("AWS_ACCESS_KEY_ID"));
        assert!(!env.contains_key("AWS_SECRET_ACCESS_KEY"));
    }

    #[test]
    fn without_profile_flag_the_environment_is_kept() {
        let env = sdk_env(
            env_of(&[
                ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
                ("AWS_PROFILE", "other"),
            ]),
            None,
            None,
        );
        assert_eq!(env["AWS_PROFILE"], "other");
        assert_eq!(env["AWS_ACCESS_KEY_ID"], "AKIAEXAMPLE");
    }

    #[tokio::test]
    async fn an_unknown_profile_is_named_with_the_known_ones() {
        let dir = crate::temp_dir::TempDir::new();
        let config = dir.path().join("config");
        std::fs::write(
            &config,
            "[default]\nregion = us-east-1\n[profile dev]\nregion = eu-west-1\n",
        )
        .unwrap();
        let env = env_of(&[
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
            ("AWS_PROFILE", "prod"),
        ]);
        let error = check_profile(&env, true).await.unwrap_err().to_string();
        assert!(
            error.starts_with("--profile \"prod\": no such profile"),
            "{error}"
        );
        assert!(error.contains("default, dev"), "{error}");
        let env = env_of(&[
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
            ("AWS_PROFILE", "dev"),
        ]);
        assert!(check_profile(&env, true).await.is_ok());
    }
}
