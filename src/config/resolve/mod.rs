//! Layering: for each field take the flag, else the file, else the default; then validate.
//! One resolution per part, each into the settings its layer owns: `tun` (the device and the
//! stack's endpoint), `limits` (`http`'s), the listeners, `metrics`, `hardening` (`--allow-from`,
//! `--user`), `service`, `instance`, `credentials`, `gce`, `azure`, `containers` (the ECS ids
//! and the EKS Pod Identity token), [`upstream`] (with the listener token), `replay` (the
//! `--replay` snapshot and what the defaults alone describe beside it); this file assembles
//! them into [`Settings`].
//!
//! Only the value that wins is validated, and its error names where it came from: a file value
//! is `config: <json_key>`, a flag is `--<flag-name>`. Checks spanning fields (zone in region,
//! `--no-tun` needs `--listen`) run after the choice.

use super::defaults::{self, MachineDefaults};
use super::layer::Layer;
use super::named_file::{self, Opener};
use super::origin::{label, pick};
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
    let recorded = replay::read(file, flags, files)?;
    // A snapshot with GCE answers as GCE under its recorded project without `--gcp-project`.
    let file_layer = match &recorded {
        Some(recorded) => recorded.with_project(file, flags),
        None => std::borrow::Cow::Borrowed(file),
    };
    let file: &Layer = &file_layer;
    let service = service::resolve_service(file, flags)?;
    let addresses = listen::addresses(file, flags);
    let http = limits::resolve_limits(file, flags)?;
    let allow_from = hardening::resolve_allow_from(file, flags)?;
    let tun = tun::resolve_tun(file, flags, &addresses, &allow_from, http.header_timeout)?;
    // Before --upstream's own checks, so combining the two is named as such.
    let pass_through = pass_through::resolve_pass_through(file, flags)?;
    let proxy = upstream::resolve(file, flags, &addresses, tun.is_some(), files)?;
    if recorded.is_some() && proxy.upstream.is_some() {
        return Err(ConfigError(
            "--replay serves a snapshot here and --upstream forwards every request elsewhere; \
             give one of them"
                .into(),
        ));
    }
    let protection = ListenerProtection {
        listen_token: proxy.listen_token,
        insecure_listen_without_token: proxy.insecure_listen_without_token,
    };
    let listen = listen::resolve_listen(file, flags, &addresses, &protection, &allow_from)?;
    let metrics = metrics::resolve_metrics(file, flags, &protection)?;
    let user = hardening::resolve_user(file, flags)?;
    let allow_shared_user_ctl = pick(flags.allow_shared_user_ctl, file.allow_shared_user_ctl)
        .is_some_and(|(allowed, _)| allowed);
    let mut credentials = credentials::resolve_credentials(file, flags)?;
    credentials.fake_lifetime = service.credentials_lifetime;
    // The role in the tree is the assumed role's name unless --role-name says otherwise.
    // With --replay, the recorded role's name unless --role-arn names one.
    let role_default = match (&credentials.role_arn, &recorded) {
        (Some(arn), _) => arn.name.clone(),
        (None, Some(recorded)) => recorded
            .role_name()
            .unwrap_or_else(|| defaults::ROLE_NAME.to_owned()),
        (None, None) => defaults::ROLE_NAME.to_owned(),
    };
    let instance = instance::resolve_instance(file, flags, machine, role_default, files)?;
    let gce = gce::resolve_gce(file, flags, machine, files)?;
    let azure = azure::resolve_azure(file, flags, machine)?;
    let ecs = containers::resolve_ecs(file, flags)?;
    let pod_identity = containers::resolve_pod_identity(file, flags, files)?;
    let replay = recorded
        .map(|recorded| recorded.resolve(machine, files))
        .transpose()?
        .map(std::sync::Arc::new);
    let scenario = pick(flags.scenario.clone(), file.scenario.clone())
        .map(|(path, origin)| read_scenario(&path, &label(origin, "scenario"), files))
        .transpose()?;
    // Every value is validated in both modes, so a bad setting is reported even when
    // forwarding; only the local mode keeps the instance and the credentials.
    let backend = match proxy.upstream {
        Some(upstream) => Backend::Upstream(upstream),
        None => Backend::Local(Box::new(LocalService {
            instance,
            token_policy: service.imdsv2,
            max_token_ttl: service.max_token_ttl,
            credentials,
            gce,
            azure,
            ecs,
            pod_identity,
            scenario,
            pass_through,
            replay,
        })),
    };
    Ok(Settings {
        tun,
        listen,
        http,
        metrics,
        backend,
        user,
        allow_shared_user_ctl,
        shutdown_grace: service.shutdown_grace,
        log_format: pick(flags.log_format, file.log_format)
            .map_or_else(Default::default, |(format, _)| format),
    })
}

pub mod azure;
mod containers;
mod credentials;
mod gce;

/// A scenario file: a JSON list of steps within the control protocol's bounds, read with the
/// invoking user's rights under sudo.
pub fn read_scenario(
    path: &std::path::Path,
    what: &str,
    files: &Opener,
) -> Result<Vec<crate::control::protocol::Step>, ConfigError> {
    let cap = named_file::Cap {
        bytes: crate::control::protocol::MAX_SCENARIO_BYTES,
        advice: "a scenario is a list of steps; split a longer one",
    };
    let bytes =
        named_file::read(path, what, files, cap).map_err(|error| ConfigError(error.to_string()))?;
    let steps = super::file::parse_scenario(&bytes)
        .map_err(|error| ConfigError(format!("{what} {}: {error}", path.display())))?;
    crate::control::protocol::validate(&crate::control::protocol::Request::Play {
        steps: steps.clone(),
    })
    .map_err(|error| ConfigError(format!("{what} {}: {error}", path.display())))?;
    Ok(steps)
}
mod hardening;
mod instance;
mod limits;
mod listen;
mod metrics;
mod pass_through;
mod replay;
mod service;
mod tun;
pub mod upstream;

#[cfg(test)]
mod tests;
