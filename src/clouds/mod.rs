//! The clouds: every metadata protocol imds-tun speaks, one folder each, each a
//! [`MetadataService`](crate::http::MetadataService) that `http` asks without knowing which
//! cloud it is.
//!
//! - [`ec2`]: the EC2 instance metadata service (`/latest/...`, IMDSv2 tokens, role
//!   credentials), and the catch-all: it owns `/` and every path no other cloud claims.
//! - [`gce`]: the GCE metadata server (`/computeMetadata/v1/...`), with `--gcp-project`.
//! - [`azure`]: the Azure Instance Metadata Service (`/metadata/...`), always on.
//! - [`ecs`]: the ECS container endpoint (credentials and task metadata v4), claiming every
//!   request to 169.254.170.2; [`eks_pod_identity`]: the EKS Pod Identity endpoint, claiming
//!   every request to 169.254.170.23 and fd00:ec2::23. Both claim by the address the client
//!   connected to (`http::Destination`), before any path-based cloud, and serve the instance's
//!   role through [`instance_role`].
//! - [`token_cache`]: the expiring, single-flight cache the GCE and Azure tokens share.
//! - [`pass_through`]: `--pass-through`, the requests its rules name answered by the real
//!   metadata service; asked after the container endpoints and before every local cloud.
//! - [`replay`]: `--replay`, a recorded snapshot served in place of the built documents.
//!
//! **Adding a cloud or an endpoint** is one folder here, holding a type that implements
//! [`MetadataService`](crate::http::MetadataService) (which requests it claims, and its answer,
//! given the request, the time and, if it asks, the caller), and one line in [`local`]
//! registering it. The first service that claims a request answers it, so the order of those
//! lines is the routing; EC2 stays last.
//!
//! Not here: the connection and the refusals every service shares (length, `Host`, the
//! listener's token, faults), which are `crate::http`'s; where role credentials and tokens come
//! from (`crate::credentials`, `crate::token_command`); which clouds a run serves, which
//! `crate::config` decides.

pub mod azure;
pub mod ec2;
pub mod ecs;
pub mod eks_pod_identity;
pub mod gce;
pub mod instance_role;
pub mod pass_through;
pub mod replay;
pub mod token_cache;

use std::sync::Arc;

use crate::http::{Services, Upstream};

/// The endpoints that claim requests by the address they were sent to (169.254.170.2,
/// 169.254.170.23, fd00:ec2::23): asked first, so no path-based cloud answers there.
#[derive(Debug, Default)]
pub struct ContainerEndpoints {
    /// The ECS container endpoint.
    pub ecs: Option<ecs::Ecs>,
    /// The EKS Pod Identity endpoint (with `--eks-pod-identity-token-file`).
    pub pod_identity: Option<eks_pod_identity::PodIdentity>,
}

/// The services of a run that answers locally, in the order they are asked.
pub fn local(
    ec2: Arc<ec2::Ec2>,
    gce: Option<gce::Gce>,
    azure: Option<azure::Azure>,
    containers: ContainerEndpoints,
    pass_through: Option<pass_through::PassThrough>,
) -> Services {
    let mut services = base();
    if let Some(ecs) = containers.ecs {
        services = services.with(ecs);
    }
    if let Some(pod_identity) = containers.pod_identity {
        services = services.with(pod_identity);
    }
    // Before the local clouds: what its rules name is the real service's to answer.
    if let Some(pass_through) = pass_through {
        services = services.with(pass_through);
    }
    if let Some(gce) = gce {
        services = services.with(gce);
    }
    if let Some(azure) = azure {
        services = services.with(azure);
    }
    // The catch-all: whatever no cloud above claimed.
    services.with(ec2)
}

/// The services of a run that forwards everything to `upstream` (`--upstream`).
pub fn forwarding(upstream: Upstream) -> Services {
    base().with(upstream)
}

/// No service yet. `http`'s own refusals (400, 403, 414, a fault's status) are written as EC2
/// writes its errors, whichever service would have answered: the page a client of
/// 169.254.169.254 expects, and the one imds-tun has always sent.
fn base() -> Services {
    Services::new(ec2::responses::error)
}

#[cfg(test)]
mod tests;

/// What the ECS and Pod Identity agents' Go routers answer to a path they do not know
/// (`http.NotFound`), which both container endpoints answer the same way.
fn go_not_found() -> crate::http::Reply {
    crate::http::Reply::new(::http::StatusCode::NOT_FOUND)
        .header(
            ::http::header::HeaderName::from_static("x-content-type-options"),
            ::http::HeaderValue::from_static("nosniff"),
        )
        .body("text/plain; charset=utf-8", "404 page not found\n")
}
