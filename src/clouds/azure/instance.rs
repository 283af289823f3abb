//! Who the fake Azure VM is, and its `/metadata/instance` document.
//!
//! Every value has a default derived from this host (its name, its machine id, its primary
//! IPv4), so the VM is stable per host and shaped like a real one: GUIDs for the VM, the
//! subscription, the tenant and the managed identity, an ARM resource id built from them.

use std::net::Ipv4Addr;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// An Azure VM as IMDS describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureInstance {
    /// `compute.vmId`, a GUID derived from the machine.
    pub vm_id: String,
    /// `compute.name` and `osProfile.computerName`, the last segment of `resourceId`
    /// (`--azure-vm-name`; default this host's short name).
    pub vm_name: String,
    /// `compute.subscriptionId`, also in `resourceId` (`--azure-subscription-id`; a GUID).
    pub subscription_id: String,
    /// `compute.resourceGroupName`, also in `resourceId` (`--azure-resource-group`).
    pub resource_group: String,
    /// `compute.location` (`--azure-location`; default `eastus`).
    pub location: String,
    /// `compute.vmSize` (config `azure_vm_size`; default `Standard_D2s_v3`).
    pub vm_size: String,
    /// `network.interface[0].ipv4.ipAddress[0].privateIpAddress`, and the /24 subnet around
    /// it: this host's primary IPv4, else `10.0.0.4`.
    pub private_ipv4: Ipv4Addr,
    /// `network.interface[0].macAddress`: 12 upper-case hex digits without separators, as
    /// Azure writes it (`000D3A` and three derived bytes).
    pub mac: String,
    /// The Entra tenant: a token's `tid` and its issuer `https://sts.windows.net/TENANT/`
    /// (config `azure_tenant_id`; a GUID).
    pub tenant_id: String,
    /// The managed identity's client (application) id: the token answer's `client_id`, a
    /// token's `appid`, and a `client_id` a token request may name.
    pub client_id: String,
    /// The managed identity's object (principal) id: a token's `oid` and `sub`, and an
    /// `object_id` a token request may name.
    pub object_id: String,
}

impl AzureInstance {
    /// The VM for this host: `seed` is a stable per-machine text, `hostname` names the VM.
    pub fn derived(seed: &str, hostname: &str, primary_ipv4: Option<Ipv4Addr>) -> AzureInstance {
        let guid = |label: &str| {
            let digest = Sha256::digest(format!("{seed}/{label}").as_bytes());
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            format!(
                "{}-{}-4{}-a{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[13..16],
                &hex[17..20],
                &hex[20..32]
            )
        };
        let digest = Sha256::digest(format!("{seed}/mac").as_bytes());
        let vm_name: String = hostname
            .split('.')
            .next()
            .unwrap_or(hostname)
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(64)
            .collect();
        AzureInstance {
            vm_id: guid("vm"),
            vm_name: if vm_name.is_empty() {
                "imds-tun-vm".to_owned()
            } else {
                vm_name
            },
            subscription_id: guid("subscription"),
            resource_group: "imds-tun".to_owned(),
            location: "eastus".to_owned(),
            vm_size: "Standard_D2s_v3".to_owned(),
            private_ipv4: primary_ipv4.unwrap_or(Ipv4Addr::new(10, 0, 0, 4)),
            mac: format!("000D3A{:02X}{:02X}{:02X}", digest[0], digest[1], digest[2]),
            tenant_id: guid("tenant"),
            client_id: guid("client"),
            object_id: guid("object"),
        }
    }

    /// `/subscriptions/.../virtualMachines/NAME`.
    pub fn resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
            self.subscription_id, self.resource_group, self.vm_name
        )
    }

    /// The managed identity's ARM id (`msi_res_id`).
    pub fn identity_resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourcegroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}-identity",
            self.subscription_id, self.resource_group, self.vm_name
        )
    }

    /// The document `/metadata/instance` returns: every primitive a string, as Azure's are.
    pub fn document(&self) -> Value {
        let [a, b, c, _] = self.private_ipv4.octets();
        json!({
            "compute": {
                "azEnvironment": "AzurePublicCloud",
                "isHostCompatibilityLayerVm": "false",
                "licenseType": "",
                "location": self.location,
                "name": self.vm_name,
                "offer": "debian-12",
                "osProfile": {
                    "adminUsername": "azureuser",
                    "computerName": self.vm_name,
                    "disablePasswordAuthentication": "true",
                },
                "osType": "Linux",
                "placementGroupId": "",
                "plan": { "name": "", "product": "", "publisher": "" },
                "platformFaultDomain": "0",
                "platformUpdateDomain": "0",
                "priority": "Regular",
                "provider": "Microsoft.Compute",
                "publisher": "Debian",
                "resourceGroupName": self.resource_group,
                "resourceId": self.resource_id(),
                "sku": "12-gen2",
                "subscriptionId": self.subscription_id,
                "tags": "",
                "tagsList": [],
                "userData": "",
                "version": "0.20241210.1942",
                "vmId": self.vm_id,
                "vmScaleSetName": "",
                "vmSize": self.vm_size,
                "zone": "",
            },
            "network": {
                "interface": [{
                    "ipv4": {
                        "ipAddress": [{
                            "privateIpAddress": self.private_ipv4.to_string(),
                            "publicIpAddress": "",
                        }],
                        "subnet": [{ "address": format!("{a}.{b}.{c}.0"), "prefix": "24" }],
                    },
                    "ipv6": { "ipAddress": [] },
                    "macAddress": self.mac,
                }]
            },
        })
    }

    /// A fixed VM for tests.
    pub fn example() -> AzureInstance {
        AzureInstance::derived(
            "example-seed",
            "devbox.local",
            Some(Ipv4Addr::new(10, 0, 0, 7)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_primitives_are_strings(value: &Value) -> bool {
        match value {
            Value::String(_) => true,
            Value::Array(items) => items.iter().all(all_primitives_are_strings),
            Value::Object(map) => map.values().all(all_primitives_are_strings),
            _ => false,
        }
    }

    #[test]
    fn the_document_has_only_string_primitives_and_consistent_ids() {
        let instance = AzureInstance::example();
        let document = instance.document();
        assert!(all_primitives_are_strings(&document), "{document}");
        assert_eq!(document["compute"]["name"], "devbox");
        assert_eq!(
            document["compute"]["resourceId"],
            format!(
                "/subscriptions/{}/resourceGroups/imds-tun/providers/Microsoft.Compute/virtualMachines/devbox",
                instance.subscription_id
            )
        );
        assert_eq!(instance.vm_id.len(), 36);
        assert_eq!(AzureInstance::example(), instance, "stable per host");
    }
}
