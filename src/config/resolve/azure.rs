//! The Azure side: always on, every value defaulting to one derived from this host.

use super::super::ConfigError;
use super::super::defaults::MachineDefaults;
use super::super::layer::Layer;
use super::super::origin::{label, pick, text};
use super::super::validate;
use crate::clouds::azure::AzureInstance;
use crate::clouds::azure::tokens::TokenSource;
use crate::token_command::CommandLine;

/// What the Azure side is built from.
#[derive(Debug, Clone)]
pub struct AzureSettings {
    /// The VM `/metadata/instance` describes.
    pub instance: AzureInstance,
    /// Where managed-identity tokens come from (`--azure-token-command`, else fake).
    pub tokens: TokenSource,
}

pub(super) fn resolve_azure(
    file: &Layer,
    flags: &Layer,
    machine: &MachineDefaults,
) -> Result<AzureSettings, ConfigError> {
    let mut instance = AzureInstance::derived(
        &machine.seed_text("azure"),
        machine.hostname(),
        machine.primary_ipv4(),
    );
    let guid = |flag: &Option<String>, file: &Option<String>, key: &str| {
        text(pick(flag.clone(), file.clone()), key, validate::guid)
    };
    if let Some((id, _)) = guid(
        &flags.azure_subscription_id,
        &file.azure_subscription_id,
        "azure_subscription_id",
    )? {
        instance.subscription_id = id;
    }
    if let Some((id, _)) = guid(
        &flags.azure_tenant_id,
        &file.azure_tenant_id,
        "azure_tenant_id",
    )? {
        instance.tenant_id = id;
    }
    if let Some((id, _)) = guid(
        &flags.azure_client_id,
        &file.azure_client_id,
        "azure_client_id",
    )? {
        instance.client_id = id;
    }
    if let Some((id, _)) = guid(
        &flags.azure_object_id,
        &file.azure_object_id,
        "azure_object_id",
    )? {
        instance.object_id = id;
    }
    let name = |flag: &Option<String>, file: &Option<String>, key: &str| {
        text(pick(flag.clone(), file.clone()), key, validate::azure_name)
    };
    if let Some((group, _)) = name(
        &flags.azure_resource_group,
        &file.azure_resource_group,
        "azure_resource_group",
    )? {
        instance.resource_group = group;
    }
    if let Some((vm, _)) = name(&flags.azure_vm_name, &file.azure_vm_name, "azure_vm_name")? {
        instance.vm_name = vm;
    }
    if let Some((location, _)) = name(
        &flags.azure_location,
        &file.azure_location,
        "azure_location",
    )? {
        instance.location = location;
    }
    if let Some((size, _)) = name(&flags.azure_vm_size, &file.azure_vm_size, "azure_vm_size")? {
        instance.vm_size = size;
    }
    let tokens = match pick(
        flags.azure_token_command.clone(),
        file.azure_token_command.clone(),
    ) {
        None => TokenSource::Fake,
        Some((line, origin)) => TokenSource::Command(
            CommandLine::parse_with(&line, "{resource}").map_err(|error| {
                ConfigError(format!(
                    "{} {line:?}: {error}",
                    label(origin, "azure_token_command")
                ))
            })?,
        ),
    };
    Ok(AzureSettings { instance, tokens })
}
