//! The GCE side (`--gcp-project` and the `gcp_*` settings): off unless a project is named;
//! every other value defaults to one derived from the project and this host.

use std::collections::BTreeMap;

use super::super::ConfigError;
use super::super::defaults::MachineDefaults;
use super::super::layer::{Layer, Tag};
use super::super::named_file::Opener;
use super::super::origin::{Origin, label, pick, text};
use super::super::validate;
use super::upstream::read_secret_file;
use crate::clouds::gce::tokens::{AccessTokenSource, IdentityTokenSource};
use crate::clouds::gce::{GceInstance, GceSettings, HostFacts};
use crate::secret::Secret;
use crate::token_command::CommandLine;

/// The environment variable a static access token may come from, as the GCE metadata emulator
/// reads it.
const ACCESS_TOKEN_VARIABLE: &str = "GOOGLE_ACCESS_TOKEN";

/// GCE's limits: 256 KiB for one value, 512 KiB for all of them together.
const MAX_ATTRIBUTE_VALUE: usize = 256 * 1024;
const MAX_ATTRIBUTES_TOTAL: usize = 512 * 1024;

pub(super) fn resolve_gce(
    file: &Layer,
    flags: &Layer,
    machine: &MachineDefaults,
    files: &Opener,
) -> Result<Option<GceSettings>, ConfigError> {
    let project = text(
        pick(flags.gcp_project.clone(), file.gcp_project.clone()),
        "gcp_project",
        validate::gcp_project,
    )?;
    let Some((project, _)) = project else {
        // The other gcp_* settings mean nothing without a project: say so instead of ignoring.
        if let Some(key) = given_without_project(file, flags) {
            return Err(ConfigError(format!(
                "{key}: only meaningful with --gcp-project ID (GCE metadata is off without a project)"
            )));
        }
        return Ok(None);
    };
    let mut instance = GceInstance::derived(
        &project,
        &HostFacts {
            hostname: Some(machine.hostname().to_owned()),
            machine_id: Some(machine.seed_text("gce")),
            primary_ipv4: machine.primary_ipv4(),
        },
    );
    if let Some((number, origin)) = pick(flags.gcp_project_number, file.gcp_project_number) {
        if !(1..=999_999_999_999_999).contains(&number) {
            return Err(ConfigError(format!(
                "{} {number}: expected a project number of 1 to 15 digits",
                label(origin, "gcp_project_number")
            )));
        }
        instance.numeric_project_id = number;
        instance.service_account_email = format!("{number}-compute@developer.gserviceaccount.com");
    }
    if let Some((zone, _)) = text(
        pick(flags.gcp_zone.clone(), file.gcp_zone.clone()),
        "gcp_zone",
        validate::gcp_zone,
    )? {
        instance.zone = zone;
    }
    if let Some((name, _)) = text(
        pick(
            flags.gcp_instance_name.clone(),
            file.gcp_instance_name.clone(),
        ),
        "gcp_instance_name",
        validate::gcp_instance_name,
    )? {
        instance.instance_name = name;
    }
    instance.hostname = format!(
        "{}.{}.c.{}.internal",
        instance.instance_name, instance.zone, instance.project_id
    );
    if let Some((hostname, _)) = text(
        pick(flags.gcp_hostname.clone(), file.gcp_hostname.clone()),
        "gcp_hostname",
        validate::path_segment,
    )? {
        instance.hostname = hostname;
    }
    if let Some((id, _)) = pick(flags.gcp_instance_id, file.gcp_instance_id) {
        instance.instance_id = id;
    }
    if let Some((machine_type, _)) = text(
        pick(
            flags.gcp_machine_type.clone(),
            file.gcp_machine_type.clone(),
        ),
        "gcp_machine_type",
        validate::instance_type,
    )? {
        instance.machine_type = machine_type;
    }
    if let Some((email, _)) = text(
        pick(
            flags.gcp_service_account.clone(),
            file.gcp_service_account.clone(),
        ),
        "gcp_service_account",
        validate::gcp_service_account,
    )? {
        instance.service_account_email = email;
    }
    instance.instance_attributes = attributes(
        &file.gcp_instance_attribute,
        &flags.gcp_instance_attribute,
        "gcp_instance_attribute",
    )?;
    instance.project_attributes = attributes(
        &file.gcp_project_attribute,
        &flags.gcp_project_attribute,
        "gcp_project_attribute",
    )?;
    let access_tokens = access_token_source(file, flags, files)?;
    let identity_tokens = match pick(
        flags.gcp_identity_token_command.clone(),
        file.gcp_identity_token_command.clone(),
    ) {
        None => IdentityTokenSource::Signed,
        Some((line, origin)) => IdentityTokenSource::Command(
            CommandLine::parse_with(&line, "{audience}").map_err(|error| {
                ConfigError(format!(
                    "{} {line:?}: {error}",
                    label(origin, "gcp_identity_token_command")
                ))
            })?,
        ),
    };
    Ok(Some(GceSettings {
        instance,
        access_tokens,
        identity_tokens,
    }))
}

/// A command, a file, or the environment, in that order; more than one of command and file is
/// a mistake worth stopping for.
fn access_token_source(
    file: &Layer,
    flags: &Layer,
    files: &Opener,
) -> Result<AccessTokenSource, ConfigError> {
    let command = pick(
        flags.gcp_access_token_command.clone(),
        file.gcp_access_token_command.clone(),
    );
    let token_file = pick(
        flags.gcp_access_token_file.clone(),
        file.gcp_access_token_file.clone(),
    );
    match (command, token_file) {
        (Some(_), Some(_)) => Err(ConfigError(
            "gcp_access_token_command and gcp_access_token_file both given; keep one".into(),
        )),
        (Some((line, origin)), None) => CommandLine::parse(&line)
            .map(AccessTokenSource::Command)
            .map_err(|error| {
                ConfigError(format!(
                    "{} {line:?}: {error}",
                    label(origin, "gcp_access_token_command")
                ))
            }),
        (None, Some((path, origin))) => {
            let what = label(origin, "gcp_access_token_file");
            let (text, described) = read_secret_file(&path, &what, files)?;
            static_token(text.trim()).map_err(|why| ConfigError(format!("{described}: {why}")))
        }
        (None, None) => match std::env::var(ACCESS_TOKEN_VARIABLE) {
            Ok(value) if !value.trim().is_empty() => static_token(value.trim())
                .map_err(|why| ConfigError(format!("{ACCESS_TOKEN_VARIABLE}: {why}"))),
            _ => Ok(AccessTokenSource::Fake),
        },
    }
}

fn static_token(token: &str) -> Result<AccessTokenSource, String> {
    if token.is_empty() {
        return Err("empty; put the access token in it".into());
    }
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err("an access token is printable ASCII without spaces".into());
    }
    Ok(AccessTokenSource::Static(Secret::new(token)))
}

/// The attributes of both layers, the flag's value winning per key.
fn attributes(
    file: &[Tag],
    flags: &[Tag],
    key_name: &str,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut attributes = BTreeMap::new();
    let mut total = 0;
    for (layer, origin) in [(file, Origin::File), (flags, Origin::Flag)] {
        for Tag { key, value } in layer {
            validate::gcp_attribute_key(key).map_err(|expected| {
                ConfigError(format!(
                    "{} key {key:?}: {expected}",
                    label(origin, key_name)
                ))
            })?;
            if value.len() > MAX_ATTRIBUTE_VALUE {
                return Err(ConfigError(format!(
                    "{} {key}: the value is {} bytes; GCE allows at most {MAX_ATTRIBUTE_VALUE}",
                    label(origin, key_name),
                    value.len()
                )));
            }
            total += key.len() + value.len();
            attributes.insert(key.clone(), value.clone());
        }
    }
    if total > MAX_ATTRIBUTES_TOTAL {
        return Err(ConfigError(format!(
            "{key_name}: {total} bytes of attributes; GCE allows at most {MAX_ATTRIBUTES_TOTAL} in all"
        )));
    }
    Ok(attributes)
}

/// The first `gcp_*` setting given without `gcp_project`, named as its origin would be.
fn given_without_project(file: &Layer, flags: &Layer) -> Option<String> {
    for (layer, origin) in [(flags, Origin::Flag), (file, Origin::File)] {
        let given = [
            ("gcp_project_number", layer.gcp_project_number.is_some()),
            ("gcp_zone", layer.gcp_zone.is_some()),
            ("gcp_instance_name", layer.gcp_instance_name.is_some()),
            ("gcp_instance_id", layer.gcp_instance_id.is_some()),
            ("gcp_hostname", layer.gcp_hostname.is_some()),
            ("gcp_machine_type", layer.gcp_machine_type.is_some()),
            ("gcp_service_account", layer.gcp_service_account.is_some()),
            (
                "gcp_instance_attribute",
                !layer.gcp_instance_attribute.is_empty(),
            ),
            (
                "gcp_project_attribute",
                !layer.gcp_project_attribute.is_empty(),
            ),
            (
                "gcp_access_token_command",
                layer.gcp_access_token_command.is_some(),
            ),
            (
                "gcp_access_token_file",
                layer.gcp_access_token_file.is_some(),
            ),
            (
                "gcp_identity_token_command",
                layer.gcp_identity_token_command.is_some(),
            ),
        ];
        if let Some((key, _)) = given.iter().find(|(_, given)| *given) {
            return Some(label(origin, key));
        }
    }
    None
}
