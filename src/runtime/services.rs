//! The metadata services of a run, built from its settings: EC2 with its credential source and
//! per-caller roles, GCE when configured, Azure always, the ECS endpoint always and EKS Pod
//! Identity with its token file (both sharing EC2's role and rules); or the upstream
//! forwarder. With `--replay`, EC2, GCE and Azure serve the snapshot's tree and documents
//! (`clouds::replay`). Each start-up line that says where credentials and tokens come from (and
//! what is replayed) is written here, once.

use std::sync::Arc;

use crate::clouds::ec2::token::TokenMint;
use crate::clouds::ec2::{Ec2, interruptions};
use crate::clouds::ecs::Ecs;
use crate::clouds::eks_pod_identity::PodIdentity;
use crate::clouds::gce::identity_token::{CERTS_PATH, KeyError};
use crate::clouds::gce::tokens::{AccessTokenSource, FAKE_PREFIX, IdentityTokenSource};
use crate::clouds::gce::{Gce, GceSettings, document as gce_document};
use crate::clouds::instance_role::InstanceRole;
use crate::clouds::pass_through::PassThrough;
use crate::clouds::replay::Replay;
use crate::clouds::{self, azure::Azure};
use crate::config::{Backend, Instance, LocalService};
use crate::control::clouds::CloudBoards;
use crate::credentials::outage::Outage;
use crate::credentials::roles::CallerRoles;
use crate::credentials::status::CredentialsStatus;
use crate::credentials::{Selected, ServedAs};
use crate::http::{Services, Upstream};

/// The services of a run, and the interruptions board of its EC2 service when it answers
/// locally (what `ctl` changes).
#[derive(Debug)]
pub struct LocalServices {
    /// The services in the order they are asked (or the forwarder alone, with `--upstream`).
    pub services: Services,
    /// The EC2 service's interruptions; `None` with `--upstream`, where nothing answers here.
    pub board: Option<Arc<interruptions::Board>>,
    /// Each role's credentials (source, expiry, refreshes); `None` with `--upstream`.
    pub credentials: Option<CredentialsStatus>,
    /// The EC2 service's IMDSv2 token mint (how many it issued); `None` with `--upstream`.
    pub tokens: Option<Arc<TokenMint>>,
    /// The GCE and Azure events (what `ctl` changes beside the interruptions); none with
    /// `--upstream`.
    pub cloud_boards: CloudBoards,
}

/// Why the services of a run could not be built; each message is one line for a person.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// A credentials setting that cannot work (a malformed ARN, an unknown profile, an MFA
    /// serial without a code): a settings error.
    #[error("{0}")]
    Credentials(#[from] crate::credentials::SetupError),
    /// The key GCE identity tokens are signed with does not load (a broken checkout).
    #[error("{0}")]
    GceKey(#[from] KeyError),
}

/// The services `backend` describes. A local run selects its credential source first
/// (`credentials::select`: STS, or fake credentials, said in one line); a network failure is no
/// error, the source retries on its own. Forwarding needs no credentials and probes none.
pub async fn services(backend: &Backend, outage: &Outage) -> Result<LocalServices, ServicesError> {
    let local = match backend {
        Backend::Upstream(upstream) => {
            return Ok(LocalServices {
                services: clouds::forwarding(Upstream::new(upstream)),
                board: None,
                credentials: None,
                tokens: None,
                cloud_boards: CloudBoards::default(),
            });
        }
        Backend::Local(local) => local,
    };
    // Beside a replayed tree, the instance the snapshot recorded where no setting changed it.
    let instance = match &local.replay {
        Some(replay) => std::borrow::Cow::Owned(replay.served_instance(&local.instance)),
        None => std::borrow::Cow::Borrowed(&local.instance),
    };
    let served = ServedAs {
        role_name: &instance.role_name,
        region: &instance.region,
        hostname: &instance.hostname,
    };
    if let Some(replay) = &local.replay {
        log_replay(replay);
    }
    let selected = crate::credentials::select(&local.credentials, served, outage).await?;
    if selected.fake {
        tracing::warn!("{}", selected.summary);
    } else if !selected.summary.is_empty() {
        tracing::info!("{}", selected.summary);
    }
    let credentials = selected.status.clone();
    let caller_roles = caller_roles(local, &selected);
    let containers = containers(local, &instance, &selected, caller_roles.clone());
    let ec2 = Arc::new(ec2(local, &instance, selected, caller_roles));
    let board = ec2.interruptions();
    let tokens = ec2.token_mint();
    let pass_through = local.pass_through.as_ref().map(|settings| {
        tracing::info!(
            "--pass-through {}: answered by the real metadata service {}",
            settings
                .rules
                .list()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            settings.upstream.interface.as_deref().map_or_else(
                || "(no interface)".to_owned(),
                |interface| format!("through {interface}")
            )
        );
        PassThrough::new(settings, ec2.clone())
    });
    let gce = local
        .gce
        .clone()
        .map(|settings| gce(settings, local.replay.as_deref()))
        .transpose()?;
    let mut azure = Azure::new(local.azure.instance.clone(), local.azure.tokens.clone());
    if let Some((recorded, replay)) = local
        .replay
        .as_deref()
        .and_then(|replay| Some((replay.snapshot.azure.as_ref()?, replay)))
    {
        let mut document = recorded.instance.clone();
        clouds::replay::overlay(
            &mut document,
            &replay.base_azure.document(),
            &local.azure.instance.document(),
        );
        azure = azure.with_document(document);
    }
    let cloud_boards = CloudBoards {
        gce: gce.as_ref().map(Gce::events),
        azure: Some(azure.events()),
    };
    Ok(LocalServices {
        services: clouds::local(ec2, gce, Some(azure), containers, pass_through),
        board: Some(board),
        credentials: Some(credentials),
        tokens: Some(tokens),
        cloud_boards,
    })
}

/// The `--caller-role` rules, one set for every endpoint, so a role is assumed once.
fn caller_roles(local: &LocalService, selected: &Selected) -> Option<Arc<CallerRoles>> {
    if local.credentials.caller_roles.is_empty() {
        return None;
    }
    for rule in &local.credentials.caller_roles {
        tracing::info!(
            "credentials: callers matching {} get role {} (assumed when first asked)",
            rule.selector,
            rule.role.arn
        );
    }
    Some(Arc::new(CallerRoles::new(
        &local.credentials.caller_roles,
        selected.starter.clone(),
    )))
}

/// EC2, serving `local`'s instance or its replayed tree, whose credentials name `served`'s
/// account.
fn ec2(
    local: &LocalService,
    served: &Instance,
    selected: Selected,
    roles: Option<Arc<CallerRoles>>,
) -> Ec2 {
    let recorded = local
        .replay
        .as_deref()
        .and_then(|replay| Some((replay.snapshot.ec2.as_ref()?, replay)));
    let ec2 = match recorded {
        Some((tree, replay)) => Ec2::replaying(
            tree,
            &replay.base_instance,
            &local.instance,
            served,
            local.token_policy,
            selected.source,
        ),
        None => Ec2::new(&local.instance, local.token_policy, selected.source),
    }
    .with_max_token_ttl(local.max_token_ttl);
    match roles {
        Some(roles) => ec2.with_caller_roles(roles),
        None => ec2,
    }
}

/// The ECS endpoint (always: it answers only what reaches 169.254.170.2) and the EKS Pod
/// Identity endpoint (with its token file), serving the instance's role as EC2 does.
fn containers(
    local: &LocalService,
    instance: &Instance,
    selected: &Selected,
    roles: Option<Arc<CallerRoles>>,
) -> clouds::ContainerEndpoints {
    let mut role = InstanceRole::new(
        selected.source.clone(),
        local.credentials.role_arn.as_ref(),
        &instance.role_name,
        &instance.account_id,
        &instance.region,
    );
    if let Some(roles) = roles {
        role = role.with_caller_roles(roles);
    }
    for id in &local.ecs.credentials {
        tracing::info!(
            "ECS: credentials id {} serves role {} (assumed when first asked)",
            id.id,
            id.role.arn
        );
    }
    let started = time::OffsetDateTime::now_utc();
    let ecs = Ecs::new(
        instance,
        &local.ecs,
        role.clone(),
        selected.starter.clone(),
        started.replace_nanosecond(0).unwrap_or(started),
    );
    let pod_identity = local
        .pod_identity
        .as_ref()
        .map(|settings| PodIdentity::new(settings, role));
    clouds::ContainerEndpoints {
        ecs: Some(ecs),
        pod_identity,
    }
}

/// The GCE metadata server for `settings`, saying at start-up where its tokens come from;
/// serving the recorded document where `replay` holds one.
fn gce(settings: GceSettings, replay: Option<&Replay>) -> Result<Gce, KeyError> {
    let replayed = replay.and_then(|replay| {
        let recorded = replay.snapshot.gce.as_ref()?;
        let base = replay.base_gce.as_ref()?;
        let mut document = recorded.document.clone();
        clouds::replay::overlay(
            &mut document,
            &gce_document::build(base),
            &gce_document::build(&settings.instance),
        );
        Some(document)
    });
    let project = settings.instance.project_id.clone();
    match &settings.access_tokens {
        AccessTokenSource::Fake => tracing::warn!(
            project = %project,
            "GCE: serving FAKE access tokens ({FAKE_PREFIX}...): no Google API accepts them; give \
             --gcp-access-token-command 'gcloud auth print-access-token' for real ones",
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
            "GCE: identity tokens are signed with imds-tun's PUBLISHED key (certificates at \
             {CERTS_PATH}); they prove nothing to anyone else",
        );
    }
    let created = time::OffsetDateTime::now_utc().unix_timestamp();
    let gce = Gce::new(settings, created)?;
    Ok(match replayed {
        Some(document) => gce.with_document(document),
        None => gce,
    })
}

/// The start-up line of `--replay`: which file, recorded when and where, and what it serves.
fn log_replay(replay: &Replay) {
    let snapshot = &replay.snapshot;
    let mut clouds = Vec::new();
    if let Some(ec2) = &snapshot.ec2 {
        clouds.push(format!("EC2 ({} leaves)", ec2.leaves.len()));
    }
    if snapshot.gce.is_some() {
        clouds.push("GCE".to_owned());
    }
    if snapshot.azure.is_some() {
        clouds.push("Azure".to_owned());
    }
    tracing::info!(
        "replaying {} (recorded {} from {}): {}; explicit settings override it",
        replay.path.display(),
        if snapshot.recorded_at.is_empty() {
            "at an unknown time"
        } else {
            &snapshot.recorded_at
        },
        if snapshot.source.is_empty() {
            "an unknown source"
        } else {
            &snapshot.source
        },
        clouds.join(", ")
    );
    if snapshot.partial {
        tracing::warn!(
            "{} is a partial recording ({}); paths it missed answer 404",
            replay.path.display(),
            snapshot
                .errors
                .first()
                .map_or("no reason given", String::as_str)
        );
    }
}
