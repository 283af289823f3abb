//! Who the fake GCE instance is: project, zone, names, ids, service account, attributes.
//!
//! Only `project_id` must be given (`--gcp-project`); everything else has a default derived from
//! it and from this host (its name, its machine id), so two developers get different but stable
//! instances, shaped like real ones: a 12-digit project number, a 19-digit instance id, the
//! Compute Engine default service account `NUMBER-compute@developer.gserviceaccount.com`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

/// The scopes a default Compute Engine VM's service account is given ("Allow default access").
pub const DEFAULT_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/devstorage.read_only",
    "https://www.googleapis.com/auth/logging.write",
    "https://www.googleapis.com/auth/monitoring.write",
    "https://www.googleapis.com/auth/servicecontrol",
    "https://www.googleapis.com/auth/service.management.readonly",
    "https://www.googleapis.com/auth/trace.append",
];

/// A GCE instance as its metadata server describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GceInstance {
    /// `project/project-id` (`--gcp-project`; the one value that must be given).
    pub project_id: String,
    /// `project/numeric-project-id`, also in `zone` and `machine-type`
    /// (`--gcp-project-number`; default 12 derived digits).
    pub numeric_project_id: u64,
    /// `instance/zone`, served as `projects/NUMBER/zones/ZONE` (`--gcp-zone`).
    pub zone: String,
    /// `instance/name` (`--gcp-instance-name`; default this host's short name).
    pub instance_name: String,
    /// `instance/id` (config `gcp_instance_id`; default 19 derived digits).
    pub instance_id: u64,
    /// `instance/hostname` (config `gcp_hostname`; default `NAME.ZONE.c.PROJECT.internal`).
    pub hostname: String,
    /// `instance/machine-type`, served as `projects/NUMBER/machineTypes/TYPE` (config
    /// `gcp_machine_type`; default `e2-medium`).
    pub machine_type: String,
    /// `instance/network-interfaces/0/ip`, and the network's gateway derived from it: this
    /// host's primary IPv4, else `10.128.0.2`.
    pub internal_ip: Ipv4Addr,
    /// `instance/network-interfaces/0/mac`: `42:01:0a:` and three derived bytes, as GCE's.
    pub mac: String,
    /// `service-accounts/default/email`, also listed by itself under `service-accounts/`
    /// (`--gcp-service-account`).
    pub service_account_email: String,
    /// The account's `scopes`: [`DEFAULT_SCOPES`], those of a VM created with default access.
    pub scopes: Vec<String>,
    /// `instance/attributes/` (`--gcp-instance-attribute KEY=VALUE`).
    pub instance_attributes: BTreeMap<String, String>,
    /// `project/attributes/` (`--gcp-project-attribute KEY=VALUE`).
    pub project_attributes: BTreeMap<String, String>,
}

/// What the defaults are derived from besides the project: this host's facts.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// This host's name; its first label, made a valid GCE name, is the instance's name.
    /// `None`: `imds-tun-instance`.
    pub hostname: Option<String>,
    /// A stable machine-specific text that, with the project, seeds the derived numbers and
    /// the MAC. `None`: every host derives the same ones.
    pub machine_id: Option<String>,
    /// This host's primary IPv4, the instance's `ip`. `None`: `10.128.0.2`.
    pub primary_ipv4: Option<Ipv4Addr>,
}

impl GceInstance {
    /// The instance for `project_id` with every other value derived; stable per host.
    pub fn derived(project_id: &str, host: &HostFacts) -> GceInstance {
        let seed = format!(
            "{project_id}/{}",
            host.machine_id.as_deref().unwrap_or("imds-tun")
        );
        let digest = Sha256::digest(seed.as_bytes());
        let number = |bytes: &[u8], digits: u32| {
            let mut value = 0u64;
            for &byte in bytes {
                value = value.wrapping_mul(256).wrapping_add(u64::from(byte));
            }
            let low = 10u64.pow(digits - 1);
            low + value % (9 * low)
        };
        let numeric_project_id = number(&digest[..8], 12);
        // 19 digits, as real ids have: a 1 followed by 18 derived ones.
        let instance_id = 1_000_000_000_000_000_000 + number(&digest[8..16], 18);
        let instance_name = host
            .hostname
            .as_deref()
            .map(instance_name_from)
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "imds-tun-instance".to_owned());
        let zone = "us-central1-a".to_owned();
        GceInstance {
            hostname: format!("{instance_name}.{zone}.c.{project_id}.internal"),
            project_id: project_id.to_owned(),
            numeric_project_id,
            zone,
            instance_name,
            instance_id,
            machine_type: "e2-medium".to_owned(),
            internal_ip: host.primary_ipv4.unwrap_or(Ipv4Addr::new(10, 128, 0, 2)),
            mac: format!(
                "42:01:0a:{:02x}:{:02x}:{:02x}",
                digest[16], digest[17], digest[18]
            ),
            service_account_email: format!(
                "{numeric_project_id}-compute@developer.gserviceaccount.com"
            ),
            scopes: DEFAULT_SCOPES
                .iter()
                .map(|scope| (*scope).to_owned())
                .collect(),
            instance_attributes: BTreeMap::new(),
            project_attributes: BTreeMap::new(),
        }
    }

    /// The region the zone is in (`us-central1-a` → `us-central1`).
    pub fn region(&self) -> &str {
        self.zone
            .rsplit_once('-')
            .map_or(self.zone.as_str(), |(region, _)| region)
    }

    /// A fixed instance for tests.
    pub fn example() -> GceInstance {
        GceInstance::derived(
            "imds-tun-example",
            &HostFacts {
                hostname: Some("devbox".into()),
                machine_id: Some("0123456789abcdef0123456789abcdef".into()),
                primary_ipv4: Some(Ipv4Addr::new(10, 128, 0, 7)),
            },
        )
    }
}

/// GCE instance names: lower-case letters, digits and `-`, starting with a letter, at most 63.
fn instance_name_from(hostname: &str) -> String {
    let short = hostname.split('.').next().unwrap_or(hostname);
    let mut name: String = short
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .skip_while(|c| !c.is_ascii_lowercase())
        .take(63)
        .collect();
    while name.ends_with('-') {
        name.pop();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_have_the_shapes_real_ones_have() {
        let instance = GceInstance::example();
        assert_eq!(instance.numeric_project_id.to_string().len(), 12);
        assert_eq!(instance.instance_id.to_string().len(), 19);
        assert_eq!(instance.instance_name, "devbox");
        assert_eq!(
            instance.hostname,
            "devbox.us-central1-a.c.imds-tun-example.internal"
        );
        assert_eq!(
            instance.service_account_email,
            format!(
                "{}-compute@developer.gserviceaccount.com",
                instance.numeric_project_id
            )
        );
        assert_eq!(instance.region(), "us-central1");
        assert_eq!(GceInstance::example(), instance, "stable for one host");
    }

    #[test]
    fn host_names_become_valid_instance_names() {
        assert_eq!(instance_name_from("Dev_Box.local"), "dev-box");
        assert_eq!(instance_name_from("42laptop"), "laptop");
        assert_eq!(instance_name_from("---"), "");
    }
}
