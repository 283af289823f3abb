//! The GCE metadata tree as one JSON document, and the three ways the server reads it: a
//! directory listing, a leaf's text, and a subtree as JSON (`?recursive=true`).
//!
//! GCE names the same entry twice: the path uses kebab-case (`machine-type`,
//! `network-interfaces/0/ip`) and the recursive JSON camelCase (`machineType`). The document
//! holds camelCase, as the JSON shows it, and each path segment is matched by converting the
//! key; attribute names are the user's own and are matched as they are. Arrays are directories
//! of their indices (`network-interfaces/0/`), except arrays of strings (`scopes`, `aliases`,
//! `tags`), which are leaves.
//!
//! Token and identity endpoints are not in the document: they are answered by `gce::tokens`.

use serde_json::{Map, Value, json};

use super::instance::GceInstance;

/// The document `/computeMetadata/v1/?recursive=true` returns.
pub fn build(instance: &GceInstance) -> Value {
    let project = instance.numeric_project_id;
    let service_account = json!({
        "aliases": ["default"],
        "email": instance.service_account_email,
        "scopes": instance.scopes,
    });
    let mut accounts = Map::new();
    accounts.insert("default".into(), service_account.clone());
    accounts.insert(instance.service_account_email.clone(), service_account);
    json!({
        "instance": {
            "attributes": instance.instance_attributes,
            "cpuPlatform": "Intel Broadwell",
            "description": "",
            "hostname": instance.hostname,
            "id": instance.instance_id,
            "image": "projects/debian-cloud/global/images/debian-12-bookworm-v20241210",
            "machineType": format!("projects/{project}/machineTypes/{}", instance.machine_type),
            "maintenanceEvent": "NONE",
            "name": instance.instance_name,
            "networkInterfaces": [{
                "accessConfigs": [],
                "dnsServers": ["169.254.169.254"],
                "gateway": gateway(instance),
                "ip": instance.internal_ip.to_string(),
                "mac": instance.mac,
                "mtu": 1460,
                "network": format!("projects/{project}/networks/default"),
                "subnetmask": "255.255.240.0",
            }],
            "preempted": "FALSE",
            "scheduling": {
                "automaticRestart": "TRUE",
                "onHostMaintenance": "MIGRATE",
                "preemptible": "FALSE",
            },
            "serviceAccounts": accounts,
            "tags": [],
            "zone": format!("projects/{project}/zones/{}", instance.zone),
        },
        "project": {
            "attributes": instance.project_attributes,
            "numericProjectId": project,
            "projectId": instance.project_id,
        },
    })
}

fn gateway(instance: &GceInstance) -> String {
    let [a, b, c, _] = instance.internal_ip.octets();
    format!("{a}.{b}.{c}.1")
}

/// What a path names in the document.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Entry<'a> {
    /// An object, or an array of anything but strings: listed, or served whole with
    /// `?recursive=true`.
    Directory(&'a Value),
    /// A string, number, boolean or array of strings: served as a value.
    Leaf(&'a Value),
}

/// Looks `segments` (kebab-case, as in the URL) up under `root`.
pub fn lookup<'a>(root: &'a Value, segments: &[&str]) -> Option<Entry<'a>> {
    let mut node = root;
    // Below `attributes` the keys are the user's, matched verbatim.
    let mut verbatim = false;
    for segment in segments {
        node = match node {
            Value::Object(map) => {
                if verbatim {
                    map.get(*segment)?
                } else {
                    map.iter()
                        .find(|(key, _)| kebab(key) == *segment)
                        .map(|(_, value)| value)?
                }
            }
            Value::Array(items) if !is_leaf_array(node) => {
                let index: usize = segment.parse().ok()?;
                // `01` is not `1`: the canonical spelling only.
                if index.to_string() != *segment {
                    return None;
                }
                items.get(index)?
            }
            _ => return None,
        };
        verbatim = *segment == "attributes" && !verbatim;
    }
    Some(if is_directory(node) {
        Entry::Directory(node)
    } else {
        Entry::Leaf(node)
    })
}

/// Objects, and arrays of anything but strings.
pub fn is_directory(value: &Value) -> bool {
    match value {
        Value::Object(_) => true,
        Value::Array(_) => !is_leaf_array(value),
        _ => false,
    }
}

/// Arrays of strings (an empty one too: `tags` with no tags) are leaves.
fn is_leaf_array(value: &Value) -> bool {
    matches!(value, Value::Array(items) if items.iter().all(Value::is_string))
}

/// A directory's listing, one entry a line, sub-directories with a trailing `/`. Attribute names
/// (`in_attributes`) are listed as they are, other keys in kebab-case.
pub fn listing(directory: &Value, in_attributes: bool) -> String {
    let mut out = String::new();
    match directory {
        Value::Object(map) => {
            for (key, value) in map {
                out.push_str(&if in_attributes {
                    key.clone()
                } else {
                    kebab(key)
                });
                if is_directory(value) {
                    out.push('/');
                }
                out.push('\n');
            }
        }
        Value::Array(items) => {
            for (index, value) in items.iter().enumerate() {
                out.push_str(&index.to_string());
                if is_directory(value) {
                    out.push('/');
                }
                out.push('\n');
            }
        }
        _ => {}
    }
    out
}

/// A leaf as `alt=text` shows it: strings raw, numbers and booleans as written, arrays of
/// strings one a line.
pub fn leaf_text(leaf: &Value) -> String {
    match leaf {
        Value::String(text) => text.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|item| format!("{item}\n"))
            .collect(),
        other => other.to_string(),
    }
}

/// A subtree as `?recursive=true&alt=text` shows it: one `path value` line per leaf, paths
/// relative to the subtree in kebab-case.
pub fn flattened_text(subtree: &Value) -> String {
    let mut out = String::new();
    flatten_into(subtree, "", false, &mut out);
    out
}

fn flatten_into(value: &Value, prefix: &str, in_attributes: bool, out: &mut String) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let name = if in_attributes {
                    key.clone()
                } else {
                    kebab(key)
                };
                let path = format!("{prefix}{name}");
                if is_directory(child) {
                    flatten_into(child, &format!("{path}/"), key == "attributes", out);
                } else {
                    for line in leaf_text(child).lines() {
                        out.push_str(&format!("{path} {line}\n"));
                    }
                }
            }
        }
        Value::Array(items) if is_directory(value) => {
            for (index, child) in items.iter().enumerate() {
                flatten_into(child, &format!("{prefix}{index}/"), false, out);
            }
        }
        leaf => out.push_str(&format!("{prefix} {}\n", leaf_text(leaf))),
    }
}

/// `machineType` → `machine-type`.
pub fn kebab(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Value {
        let mut instance = GceInstance::example();
        instance
            .instance_attributes
            .insert("startupScript".into(), "echo hi".into());
        build(&instance)
    }

    #[test]
    fn paths_use_kebab_case_and_attributes_their_own_names() {
        let document = document();
        assert_eq!(
            lookup(&document, &["instance", "machine-type"]),
            Some(Entry::Leaf(&json!(format!(
                "projects/{}/machineTypes/e2-medium",
                GceInstance::example().numeric_project_id
            ))))
        );
        assert!(lookup(&document, &["instance", "machineType"]).is_none());
        assert_eq!(
            lookup(&document, &["instance", "attributes", "startupScript"]),
            Some(Entry::Leaf(&json!("echo hi")))
        );
        assert!(lookup(&document, &["instance", "attributes", "startup-script"]).is_none());
        assert_eq!(
            lookup(&document, &["instance", "network-interfaces", "0", "ip"]),
            Some(Entry::Leaf(&json!("10.128.0.7")))
        );
        assert!(lookup(&document, &["instance", "network-interfaces", "00"]).is_none());
    }

    #[test]
    fn listings_mark_directories_and_string_arrays_are_leaves() {
        let document = document();
        let Some(Entry::Directory(account)) =
            lookup(&document, &["instance", "service-accounts", "default"])
        else {
            panic!("default account is a directory");
        };
        assert_eq!(listing(account, false), "aliases\nemail\nscopes\n");
        let Some(Entry::Leaf(scopes)) = lookup(
            &document,
            &["instance", "service-accounts", "default", "scopes"],
        ) else {
            panic!("scopes is a leaf");
        };
        assert!(
            leaf_text(scopes).starts_with("https://www.googleapis.com/auth/devstorage.read_only\n")
        );
        let Some(Entry::Directory(instance)) = lookup(&document, &["instance"]) else {
            panic!("instance is a directory");
        };
        let text = listing(instance, false);
        assert!(text.contains("network-interfaces/\n"), "{text}");
        assert!(text.contains("machine-type\n"), "{text}");
        assert!(text.contains("attributes/\n"), "{text}");
    }

    #[test]
    fn flattened_text_names_every_leaf_by_its_path() {
        let document = document();
        let Some(Entry::Directory(project)) = lookup(&document, &["project"]) else {
            panic!("project is a directory");
        };
        let text = flattened_text(project);
        assert!(text.contains("project-id imds-tun-example\n"), "{text}");
        assert!(text.contains("numeric-project-id "), "{text}");
    }
}
