//! The container endpoints' own settings: the ECS ids that serve other roles
//! (`--ecs-credentials ID=ROLE_ARN`) and the EKS Pod Identity token
//! (`--eks-pod-identity-token-file`).
//!
//! The token file is read as every secret file is (`read_secret_file`: with the invoking
//! user's rights under sudo, a regular file of at most 4 KiB, refused when every user may read
//! it), then checked as a shared token (16 printable ASCII characters or more) and refused
//! when it starts or ends with whitespace: the SDKs send the file's bytes as they are, and a
//! trailing newline is not a legal header value (botocore and Node refuse to send it).

use super::super::ConfigError;
use super::super::layer::Layer;
use super::super::named_file::Opener;
use super::super::origin::{given, label, pick};
use super::upstream::read_secret_file;
use crate::clouds::ecs::{self, EcsCredentials, EcsSettings};
use crate::clouds::eks_pod_identity::PodIdentitySettings;
use crate::credentials::naming::RoleArn;
use crate::http::shared_token::SharedToken;

/// The most `--ecs-credentials` ids: each may start a role of its own.
pub(super) const MAX_ECS_IDS: usize = 64;

/// `--ecs-credentials ID=ROLE_ARN`: the flags' list replaces the file's; ids are checked and
/// distinct.
pub(super) fn resolve_ecs(file: &Layer, flags: &Layer) -> Result<EcsSettings, ConfigError> {
    let Some((entries, origin)) = pick(given(&flags.ecs_credentials), given(&file.ecs_credentials))
    else {
        return Ok(EcsSettings::default());
    };
    let what = label(origin, "ecs_credentials");
    if entries.len() > MAX_ECS_IDS {
        return Err(ConfigError(format!(
            "{what}: {} ids, more than the limit of {MAX_ECS_IDS}",
            entries.len()
        )));
    }
    let mut credentials: Vec<EcsCredentials> = Vec::with_capacity(entries.len());
    for entry in &entries {
        let fail = |why: String| ConfigError(format!("{what} {entry:?}: {why}"));
        let (id, arn) = entry.split_once('=').ok_or_else(|| {
            fail("expected ID=ROLE_ARN, e.g. app=arn:aws:iam::123456789012:role/app".into())
        })?;
        let id = ecs::parse_id(id).map_err(fail)?;
        let role = RoleArn::parse(arn).map_err(|expected| fail(format!("role ARN {expected}")))?;
        if credentials.iter().any(|known| known.id == id) {
            return Err(fail(format!("the id {id:?} is given twice")));
        }
        credentials.push(EcsCredentials { id, role });
    }
    Ok(EcsSettings { credentials })
}

/// `--eks-pod-identity-token-file`: the token, or no Pod Identity endpoint. The endpoint and
/// its token come together: a claimed 169.254.170.23 with no token would answer every SDK
/// with a 404, and a token without the endpoint is a setting that does nothing.
pub(super) fn resolve_pod_identity(
    file: &Layer,
    flags: &Layer,
    files: &Opener,
) -> Result<Option<PodIdentitySettings>, ConfigError> {
    let endpoint = pick(flags.eks_pod_identity, file.eks_pod_identity);
    let token_file = pick(
        flags.eks_pod_identity_token_file.clone(),
        file.eks_pod_identity_token_file.clone(),
    );
    let Some((path, origin)) = token_file else {
        return match endpoint {
            Some((true, origin)) => Err(ConfigError(format!(
                "{} needs {} FILE: the token the SDKs send from \
                 AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                label(origin, "eks_pod_identity"),
                label(origin, "eks_pod_identity_token_file")
            ))),
            _ => Ok(None),
        };
    };
    let what = label(origin, "eks_pod_identity_token_file");
    if !matches!(endpoint, Some((true, _))) {
        return Err(ConfigError(format!(
            "{what} is read only with {}: add it, or drop the token file",
            label(origin, "eks_pod_identity")
        )));
    }
    let (text, described) = read_secret_file(&path, &what, files)?;
    if text.trim() != text {
        return Err(ConfigError(format!(
            "{described}: starts or ends with whitespace (a newline?), which the SDKs would send \
             as is in the Authorization header; write the token alone, e.g. `printf %s TOKEN > \
             FILE`"
        )));
    }
    let token =
        SharedToken::parse(&text).map_err(|why| ConfigError(format!("{described}: {why}")))?;
    Ok(Some(PodIdentitySettings { token }))
}

#[cfg(test)]
#[path = "containers_tests.rs"]
mod tests;
