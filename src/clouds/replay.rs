//! `--replay FILE`: serving a recorded [`Snapshot`] instead of the instance the settings describe,
//! with imds-tun's own value wherever a setting was given explicitly.
//!
//! The rule that decides between the recording and the settings, for every cloud, needs no
//! table of which flag feeds which path: the service is built twice from the settings, once from
//! the defaults alone (`base`, which [`Replay`] carries) and once from everything (`full`, the
//! run's own settings). Where the two agree, no explicit setting touched that value and the
//! recording wins; where they differ, a flag or the config file changed it and the full build
//! wins. So `--region eu-west-1` changes `placement/region`, the zone and the identity document's
//! `region`, and leaves every other recorded byte alone.
//!
//! - EC2: `ec2::replay` overlays the tree and the identity document (re-signed).
//! - GCE and Azure: [`overlay`] applies the same rule to their JSON documents.
//!
//! Not here: reading the file (with the invoking user's rights, `crate::config`), the schema
//! (`crate::snapshot`), and the routing, tokens, credentials, events and faults, which work on
//! the replayed documents as on built ones.

use std::path::PathBuf;

use serde_json::Value;

use crate::clouds::azure::AzureInstance;
use crate::clouds::ec2::Instance;
use crate::clouds::gce::GceInstance;
use crate::snapshot::{Ec2Tree, LeafValue, Snapshot};

/// A snapshot to serve, and what the defaults alone would have served in its place.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The file it came from (for the start-up line).
    pub path: PathBuf,
    /// What it recorded.
    pub snapshot: Snapshot,
    /// The EC2 instance the defaults alone describe (with the recorded role name).
    pub base_instance: Instance,
    /// The GCE instance the defaults alone describe (with the recorded project), when the
    /// snapshot holds GCE.
    pub base_gce: Option<GceInstance>,
    /// The Azure VM the defaults alone describe.
    pub base_azure: AzureInstance,
}

impl Replay {
    /// The instance the rest of a run describes beside the replayed tree (the credentials'
    /// fallback region, the container endpoints' task metadata): `full` with the recorded
    /// instance id, type, region, zone and account wherever no explicit setting changed them,
    /// so those answers agree with the tree.
    pub fn served_instance(&self, full: &Instance) -> Instance {
        let mut served = full.clone();
        let Some(ec2) = &self.snapshot.ec2 else {
            return served;
        };
        let base = &self.base_instance;
        let leaf = |path: &str| {
            leaf_text(ec2, path)
                .filter(|text| !text.is_empty() && !text.contains('\n'))
                .map(str::to_owned)
        };
        let document: Option<Value> = leaf_text(ec2, crate::clouds::ec2::replay::DOCUMENT)
            .and_then(|text| serde_json::from_str(text).ok());
        let account = document
            .as_ref()
            .and_then(|document| document.get("accountId")?.as_str().map(str::to_owned));
        let fields: [(&mut String, &String, Option<String>); 5] = [
            (
                &mut served.instance_id,
                &base.instance_id,
                leaf("meta-data/instance-id"),
            ),
            (
                &mut served.instance_type,
                &base.instance_type,
                leaf("meta-data/instance-type"),
            ),
            (
                &mut served.region,
                &base.region,
                leaf("meta-data/placement/region"),
            ),
            (
                &mut served.availability_zone,
                &base.availability_zone,
                leaf("meta-data/placement/availability-zone"),
            ),
            (&mut served.account_id, &base.account_id, account),
        ];
        for (field, base, recorded) in fields {
            if let Some(recorded) = recorded.filter(|_| field == base) {
                *field = recorded;
            }
        }
        served
    }
}

fn leaf_text<'a>(ec2: &'a Ec2Tree, path: &str) -> Option<&'a str> {
    match &ec2.leaves.get(path)?.value {
        LeafValue::Text(text) => Some(text),
        _ => None,
    }
}

/// The role name the recording shows: the one child of `meta-data/iam/security-credentials/`
/// (a recorded leaf, or the recorded listing), else the last segment of `iam/info`'s
/// `InstanceProfileArn`.
pub fn recorded_role_name(ec2: &Ec2Tree) -> Option<String> {
    const PREFIX: &str = "meta-data/iam/security-credentials/";
    let from_leaf = ec2.leaves.keys().find_map(|path| {
        path.strip_prefix(PREFIX)
            .filter(|name| !name.is_empty() && !name.contains('/'))
    });
    if let Some(name) = from_leaf {
        return Some(name.to_owned());
    }
    let from_listing = ec2
        .listings
        .get(PREFIX)
        .and_then(|listing| listing.lines().map(str::trim).find(|line| !line.is_empty()));
    if let Some(name) = from_listing {
        return Some(name.trim_end_matches('/').to_owned());
    }
    let info = ec2.leaves.get("meta-data/iam/info")?;
    let LeafValue::Text(text) = &info.value else {
        return None;
    };
    let info: Value = serde_json::from_str(text).ok()?;
    let arn = info.get("InstanceProfileArn")?.as_str()?;
    arn.rsplit_once('/')
        .map(|(_, name)| name.to_owned())
        .filter(|name| !name.is_empty())
}

/// The GCE project the recording shows (`project.projectId`).
pub fn recorded_gce_project(snapshot: &Snapshot) -> Option<&str> {
    snapshot
        .gce
        .as_ref()?
        .document
        .get("project")?
        .get("projectId")?
        .as_str()
}

/// Applies the replay rule to a JSON document: wherever `base` (the defaults alone) and `full`
/// (every setting) differ, `recorded` takes `full`'s value; everything else stays as recorded.
/// Objects are compared key by key, so one changed attribute leaves the recorded others in
/// place; anything else (arrays included) is replaced whole. A key `full` lacks but `base` has
/// was removed by a setting, and goes where the recording holds `base`'s value for it.
pub fn overlay(recorded: &mut Value, base: &Value, full: &Value) {
    if base == full {
        return;
    }
    let (Value::Object(base), Value::Object(full), Value::Object(target)) =
        (base, full, &mut *recorded)
    else {
        *recorded = full.clone();
        return;
    };
    for (key, base_value) in base {
        if !full.contains_key(key) && target.get(key) == Some(base_value) {
            target.remove(key);
        }
    }
    for (key, full_value) in full {
        match (base.get(key), target.get_mut(key)) {
            (Some(base_value), _) if base_value == full_value => {}
            (Some(base_value), Some(target_value)) => overlay(target_value, base_value, full_value),
            _ => {
                target.insert(key.clone(), full_value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Leaf;
    use serde_json::json;

    #[test]
    fn an_unchanged_value_stays_as_recorded() {
        let mut recorded = json!({"project": {"projectId": "rec", "numericProjectId": 7}});
        let base = json!({"project": {"projectId": "rec", "numericProjectId": 1}});
        overlay(&mut recorded, &base, &base.clone());
        assert_eq!(recorded["project"]["numericProjectId"], 7);
    }

    #[test]
    fn a_value_a_setting_changed_wins_over_the_recording() {
        let mut recorded = json!({"compute": {"location": "westeurope", "name": "rec-vm"}});
        let base = json!({"compute": {"location": "eastus", "name": "host"}});
        let full = json!({"compute": {"location": "northeurope", "name": "host"}});
        overlay(&mut recorded, &base, &full);
        assert_eq!(
            recorded,
            json!({"compute": {"location": "northeurope", "name": "rec-vm"}})
        );
    }

    #[test]
    fn an_added_attribute_keeps_the_recorded_ones() {
        let mut recorded = json!({"attributes": {"team": "payments"}});
        let base = json!({"attributes": {}});
        let full = json!({"attributes": {"env": "dev"}});
        overlay(&mut recorded, &base, &full);
        assert_eq!(
            recorded,
            json!({"attributes": {"team": "payments", "env": "dev"}})
        );
    }

    #[test]
    fn an_array_a_setting_changed_is_replaced_whole() {
        let mut recorded = json!({"tags": ["a", "b"]});
        overlay(&mut recorded, &json!({"tags": []}), &json!({"tags": ["c"]}));
        assert_eq!(recorded, json!({"tags": ["c"]}));
    }

    fn tree(leaves: &[(&str, Leaf)], listings: &[(&str, &str)]) -> Ec2Tree {
        Ec2Tree {
            imdsv2: true,
            leaves: leaves
                .iter()
                .map(|(path, leaf)| ((*path).to_owned(), leaf.clone()))
                .collect(),
            listings: listings
                .iter()
                .map(|(path, listing)| ((*path).to_owned(), (*listing).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn the_served_instance_carries_the_recorded_values_no_setting_changed() {
        let base = Instance::example();
        let recorded = tree(
            &[
                ("meta-data/instance-id", Leaf::text("i-0123456789abcdef0")),
                ("meta-data/placement/region", Leaf::text("ap-south-1")),
                (
                    "meta-data/placement/availability-zone",
                    Leaf::text("ap-south-1b"),
                ),
                (
                    crate::clouds::ec2::replay::DOCUMENT,
                    Leaf::text(r#"{"accountId" : "210987654321"}"#),
                ),
            ],
            &[],
        );
        let replay = Replay {
            path: PathBuf::from("snapshot.json"),
            snapshot: Snapshot {
                ec2: Some(recorded),
                ..Snapshot::default()
            },
            base_instance: base.clone(),
            base_gce: None,
            base_azure: AzureInstance::example(),
        };
        let served = replay.served_instance(&base);
        assert_eq!(served.instance_id, "i-0123456789abcdef0");
        assert_eq!(served.region, "ap-south-1");
        assert_eq!(served.availability_zone, "ap-south-1b");
        assert_eq!(served.account_id, "210987654321");
        assert_eq!(served.instance_type, base.instance_type, "not recorded");

        let mut flagged = base.clone();
        flagged.region = "eu-west-1".into();
        flagged.availability_zone = "eu-west-1a".into();
        let served = replay.served_instance(&flagged);
        assert_eq!(served.region, "eu-west-1");
        assert_eq!(served.availability_zone, "eu-west-1a");
        assert_eq!(served.instance_id, "i-0123456789abcdef0");
    }

    #[test]
    fn the_role_name_comes_from_the_credentials_path_the_listing_or_the_profile() {
        let credentials = tree(
            &[(
                "meta-data/iam/security-credentials/app-role",
                Leaf::redacted(crate::snapshot::Redaction::Credentials),
            )],
            &[],
        );
        assert_eq!(
            recorded_role_name(&credentials).as_deref(),
            Some("app-role")
        );

        let listed = tree(
            &[("meta-data/iam/info", Leaf::text("{}"))],
            &[("meta-data/iam/security-credentials/", "listed")],
        );
        assert_eq!(recorded_role_name(&listed).as_deref(), Some("listed"));

        let profile = tree(
            &[(
                "meta-data/iam/info",
                Leaf::text(
                    r#"{"InstanceProfileArn" : "arn:aws:iam::123456789012:instance-profile/from-arn"}"#,
                ),
            )],
            &[],
        );
        assert_eq!(recorded_role_name(&profile).as_deref(), Some("from-arn"));

        assert_eq!(recorded_role_name(&tree(&[], &[])), None);
    }
}
