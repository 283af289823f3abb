//! Layering: for each field take the flag, else the file, else the default; then validate.
//! One resolution per layer: `service`, `instance`, `credentials`, [`upstream`] (with the
//! listener token), [`hardening`]; this file assembles them into [`Settings`].
//!
//! Only the value that wins is validated, and its error names where it came from: a file value
//! is `config: <json_key>`, a flag is `--<flag-name>`. Checks spanning fields (zone in region,
//! `--no-tun` needs `--listen`) run after the choice.

use super::defaults::{self, MachineDefaults};
use super::layer::Layer;
use super::named_file::Opener;
use super::{Backend, ConfigError, LocalService, Settings};
use upstream::ListenerProtection;

/// Resolves the flag layer over the file layer over `machine`'s defaults. Files the layers
/// name (user data, token files) are read here, with `files`' rights.
pub fn resolve(
    file: &Layer,
    flags: &Layer,
    machine: &MachineDefaults,
    files: &Opener,
) -> Result<Settings, ConfigError> {
    let service = service::resolve_service(file, flags)?;
    let proxy = upstream::resolve(file, flags, &service.listen, service.tun.is_some(), files)?;
    let hardening = hardening::resolve(file, flags)?;
    let mut credentials = credentials::resolve_credentials(file, flags)?;
    credentials.fake_lifetime = service.credentials_lifetime;
    // The role in the tree is the assumed role's name unless --role-name says otherwise.
    let role_default = credentials
        .role_arn
        .as_ref()
        .map_or_else(|| defaults::ROLE_NAME.to_owned(), |arn| arn.name.clone());
    let instance = instance::resolve_instance(file, flags, machine, role_default, files)?;
    let gce = gce::resolve_gce(file, flags, machine, files)?;
    let azure = azure::resolve_azure(file, flags, machine)?;
    // Every value is validated in both modes, so a bad setting is reported even when
    // forwarding; only the local mode keeps the instance and the credentials.
    let backend = match proxy.upstream {
        Some(upstream) => Backend::Upstream(upstream),
        None => Backend::Local(Box::new(LocalService {
            instance,
            token_policy: service.imdsv2,
            credentials,
            gce,
            azure,
        })),
    };
    Ok(Settings {
        tun: service.tun,
        listen: service.listen,
        max_connections: service.max_connections,
        shutdown_grace: service.shutdown_grace,
        backend,
        listeners: ListenerProtection {
            listen_token: proxy.listen_token,
            insecure_listen_without_token: proxy.insecure_listen_without_token,
        },
        hardening,
    })
}

pub mod azure;
mod credentials;
mod gce;
pub mod hardening;
mod instance;
mod service;
pub mod upstream;

#[cfg(test)]
mod tests;
