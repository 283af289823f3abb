//! cloud-init's `/run/cloud-init/instance-data.json` read as a [`Snapshot`], so a file copied
//! from any instance cloud-init booted on EC2 is enough for `--replay` (docs/cloud-init.md).
//!
//! cloud-init's EC2 datasource crawls the metadata service at boot and keeps the tree under
//! `ds`: `ds["meta-data"]` (`ds.meta_data` in older releases) and
//! `ds.dynamic["instance-identity"]`, as nested JSON. It turned the tree into JSON in ways this
//! module undoes:
//!
//! - a directory became an object, a leaf a string;
//! - a leaf of several lines (`security-groups`, `pkcs7`) became a list of its lines: joined
//!   back with `\n` (a final newline is lost);
//! - a leaf that looked like a JSON object (`iam/info`, the identity document, a spot notice)
//!   was parsed: written back as imds-tun serves that path, EC2's layout (`"key" : value`, in
//!   EC2's field order) or, for the two interruption notices, compact JSON;
//! - `public-keys/` listed as `0=name` became `{"name": "ssh-rsa …"}`: numbered again in the
//!   file's (alphabetical) order;
//! - a value that was not UTF-8 is base64 with its path in `base64_encoded_keys` (or, in older
//!   files, prefixed `ci-b64:`): decoded to bytes.
//!
//! What the file never holds, and so no converted snapshot either:
//! - `user-data`: cloud-init keeps it out of the file (a `ds["user-data"]` added by hand is
//!   read);
//! - role credentials: cloud-init does not fetch `iam/security-credentials/` (releases that did
//!   wrote the keys only to the root-only `instance-data-sensitive.json` and `"redacted for
//!   non-root user"` in their place here). The role names found there are kept, redacted as
//!   [`Redaction::Credentials`]; without them the role is named after the instance profile in
//!   `iam/info` (the console names both alike; a profile holds one role), so `--replay` still
//!   serves credentials where SDKs look;
//! - signatures (`pkcs7`, `rsa2048`, `signature`): redacted as [`Redaction::Signature`] like in
//!   every snapshot;
//! - any other value the world-readable file shows as `"redacted for non-root user"`: left out.
//!
//! Whether the instance used IMDSv2 is not recorded either: cloud-init asks for a token only on
//! a platform it identified as AWS, so `imdsv2` is true unless `v1.cloud_name` names another.
//!
//! The result keeps [`BOUNDS`](super::BOUNDS) like any snapshot: each path and value is counted as it is
//! converted (an error names the path in *this* file), and the whole is checked again by
//! [`Snapshot::from_value`].

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::{
    Budget, Ec2Tree, Leaf, Redaction, SchemaError, Snapshot, check_ec2_path, error, key_path,
};

/// What cloud-init writes in the world-readable file instead of a sensitive value.
pub const REDACTED_FOR_NON_ROOT: &str = "redacted for non-root user";

/// The key whose presence tells cloud-init's instance data from other JSON.
pub const DATASOURCE_KEY: &str = "ds";

/// The keys of `ds` that may hold the EC2 `meta-data/` tree, newest first.
const META_DATA_KEYS: [&str; 2] = ["meta-data", "meta_data"];

/// The prefix cloud-init gave values it base64-encoded, in files older than
/// `base64_encoded_keys`.
const BASE64_PREFIX: &str = "ci-b64:";

/// Leaves EC2 serves as JSON objects, which cloud-init parsed, and the field order EC2 (and
/// imds-tun) writes them in; fields not named here follow in alphabetical order.
const JSON_LEAVES: &[(&str, JsonLayout)] = &[
    (
        "dynamic/instance-identity/document",
        JsonLayout::Ec2(&[
            "accountId",
            "architecture",
            "availabilityZone",
            "billingProducts",
            "devpayProductCodes",
            "marketplaceProductCodes",
            "imageId",
            "instanceId",
            "instanceType",
            "kernelId",
            "pendingTime",
            "privateIp",
            "ramdiskId",
            "region",
            "version",
        ]),
    ),
    (
        "meta-data/iam/info",
        JsonLayout::Ec2(&[
            "Code",
            "LastUpdated",
            "InstanceProfileArn",
            "InstanceProfileId",
        ]),
    ),
    (
        "meta-data/identity-credentials/ec2/info",
        JsonLayout::Ec2(&["Code", "LastUpdated", "AccountId"]),
    ),
    ("meta-data/spot/instance-action", JsonLayout::Compact),
    (
        "meta-data/events/recommendations/rebalance",
        JsonLayout::Compact,
    ),
];

/// The identity document's signatures, never kept in a snapshot.
const SIGNATURES: [&str; 3] = [
    "dynamic/instance-identity/pkcs7",
    "dynamic/instance-identity/rsa2048",
    "dynamic/instance-identity/signature",
];

/// How a JSON leaf is written back.
#[derive(Debug, Clone, Copy)]
enum JsonLayout {
    /// EC2's pretty layout, `{\n  "key" : value,\n…}`, these fields first.
    Ec2(&'static [&'static str]),
    /// One line, as imds-tun serves the interruption notices.
    Compact,
}

/// True when `value` looks like cloud-init's instance data (an object with a `ds` key),
/// which [`from_instance_data`] reads.
pub fn is_instance_data(value: &Value) -> bool {
    value.get(DATASOURCE_KEY).is_some()
}

/// Converts cloud-init's `instance-data.json` (or `instance-data-sensitive.json`) into a
/// snapshot of the EC2 tree it holds. Errors name the JSON path in that file.
pub fn from_instance_data(value: &Value) -> Result<Snapshot, SchemaError> {
    let root = value
        .as_object()
        .ok_or_else(|| error("$", "must be an object"))?;
    let ds = match root.get(DATASOURCE_KEY) {
        Some(Value::Object(ds)) => ds,
        Some(_) => return Err(error("$.ds", "must be an object")),
        None => {
            return Err(error(
                "$",
                "not cloud-init's instance data (no \"ds\" object)",
            ));
        }
    };
    // `v1.platform` names the datasource's kind: only Ec2's `ds` holds the EC2 tree (another's
    // `meta_data` may have an `instance-id` too).
    if let Some(platform) = root.get("v1").and_then(|v1| v1.get("platform"))
        && platform != "ec2"
    {
        return Err(error(
            "$.v1.platform",
            format!(
                "is {platform}, not \"ec2\": cloud-init's datasource was not Ec2, so \"ds\" holds no EC2 tree"
            ),
        ));
    }
    let (meta_key, meta) = META_DATA_KEYS
        .iter()
        .find_map(|key| ds.get(*key).map(|meta| (*key, meta)))
        .ok_or_else(|| {
            error(
                "$.ds",
                "holds no EC2 metadata (no \"meta-data\" object): cloud-init's datasource was not Ec2",
            )
        })?;
    let meta_path = key_path("$.ds", meta_key);
    let meta = meta
        .as_object()
        .ok_or_else(|| error(&meta_path, "must be an object"))?;
    if !meta.contains_key("instance-id") {
        return Err(error(
            &meta_path,
            "has no \"instance-id\": not the EC2 metadata tree",
        ));
    }

    let mut converter = Converter {
        base64_keys: base64_keys(root)?,
        meta_json: meta_path.clone(),
        ..Converter::default()
    };
    converter.directory(
        &Place {
            ec2: "meta-data".into(),
            json: meta_path,
            cloud_init: format!("ds/{meta_key}"),
        },
        meta,
    )?;
    if let Some(dynamic) = ds.get("dynamic") {
        let here = "$.ds.dynamic";
        let dynamic = dynamic
            .as_object()
            .ok_or_else(|| error(here, "must be an object"))?;
        converter.directory(
            &Place {
                ec2: "dynamic".into(),
                json: here.into(),
                cloud_init: "ds/dynamic".into(),
            },
            dynamic,
        )?;
    }
    if let Some(user_data) = ds.get("user-data") {
        converter.value(
            &Place {
                ec2: "user-data".into(),
                json: key_path("$.ds", "user-data"),
                cloud_init: "ds/user-data".into(),
            },
            user_data,
        )?;
    }
    converter.role_from_instance_profile()?;

    let imdsv2 = match root
        .get("v1")
        .and_then(|v1| v1.get("cloud_name"))
        .and_then(Value::as_str)
    {
        Some(cloud) => cloud == "aws",
        None => true,
    };
    let source = match root
        .get("v1")
        .and_then(|v1| v1.get("subplatform"))
        .and_then(Value::as_str)
    {
        Some(subplatform) => format!("cloud-init instance-data.json, {subplatform}"),
        None => "cloud-init instance-data.json".to_owned(),
    };
    let snapshot = Snapshot {
        source,
        ec2: Some(Ec2Tree {
            imdsv2,
            leaves: converter.leaves,
            listings: converter.listings,
        }),
        ..Snapshot::default()
    };
    // The same checks a snapshot file gets, so a converted one can never hold more.
    Snapshot::from_value(&snapshot.to_value()).map_err(|invalid| {
        error(
            "$.ds",
            format!("converts to a snapshot that breaks its schema: {invalid}"),
        )
    })
}

/// `base64_encoded_keys`: the `/`-joined paths (`ds/meta-data/…`) whose values are base64.
fn base64_keys(root: &Map<String, Value>) -> Result<BTreeSet<String>, SchemaError> {
    let Some(keys) = root.get("base64_encoded_keys") else {
        return Ok(BTreeSet::new());
    };
    let here = "$.base64_encoded_keys";
    let list = keys
        .as_array()
        .ok_or_else(|| error(here, "must be a list of strings"))?;
    list.iter()
        .enumerate()
        .map(|(index, key)| {
            key.as_str()
                .map(str::to_owned)
                .ok_or_else(|| error(format!("{here}[{index}]"), "must be a string"))
        })
        .collect()
}

/// Where a value is: its EC2 path, its JSON path for errors, and its `/`-joined path as
/// `base64_encoded_keys` names it.
struct Place {
    ec2: String,
    json: String,
    cloud_init: String,
}

impl Place {
    fn child(&self, key: &str) -> Place {
        Place {
            ec2: format!("{}/{key}", self.ec2),
            json: key_path(&self.json, key),
            cloud_init: format!("{}/{key}", self.cloud_init),
        }
    }
}

/// The tree being built, counted against [`BOUNDS`](super::BOUNDS) as it grows.
#[derive(Default)]
struct Converter {
    base64_keys: BTreeSet<String>,
    leaves: BTreeMap<String, Leaf>,
    listings: BTreeMap<String, String>,
    budget: Budget,
    /// True once a `security-credentials` object named the roles (an empty one is an answer
    /// too: no role).
    roles_named: bool,
    /// The JSON path of the `meta-data` tree (`$.ds["meta-data"]`).
    meta_json: String,
}

impl Converter {
    fn directory(
        &mut self,
        place: &Place,
        entries: &Map<String, Value>,
    ) -> Result<(), SchemaError> {
        check_ec2_path(&place.ec2).map_err(|problem| error(&place.json, problem))?;
        if entries.is_empty() {
            // An empty directory has no leaf to derive it from: its listing says it exists.
            self.listing(place, String::new())?;
        }
        for (key, value) in entries {
            let child = place.child(key);
            match (place.ec2.as_str(), key.as_str()) {
                ("meta-data", "public-keys") => self.public_keys(&child, value)?,
                (
                    "meta-data/iam" | "meta-data/identity-credentials/ec2",
                    "security-credentials",
                ) => {
                    self.credentials(&child, value)?;
                }
                _ => self.value(&child, value)?,
            }
        }
        Ok(())
    }

    fn value(&mut self, place: &Place, value: &Value) -> Result<(), SchemaError> {
        if SIGNATURES.contains(&place.ec2.as_str()) {
            return self.leaf(place, Leaf::redacted(Redaction::Signature));
        }
        match value {
            Value::String(text) if text == REDACTED_FOR_NON_ROOT => Ok(()),
            Value::String(text) => {
                let leaf = self.text(place, text)?;
                self.leaf(place, leaf)
            }
            Value::Array(lines) => {
                let leaf = Leaf::text(lines_of(place, lines)?);
                self.leaf(place, leaf)
            }
            Value::Number(_) | Value::Bool(_) => self.leaf(place, Leaf::text(value.to_string())),
            Value::Object(fields) => match json_layout(&place.ec2, fields) {
                Some(layout) => self.leaf(place, Leaf::text(write_json(fields, layout))),
                None => self.directory(place, fields),
            },
            Value::Null => Err(error(
                &place.json,
                "must be text, a list of lines or an object",
            )),
        }
    }

    /// A string leaf: base64 when `base64_encoded_keys` names it or it carries `ci-b64:`.
    fn text(&self, place: &Place, text: &str) -> Result<Leaf, SchemaError> {
        let encoded = if self.base64_keys.contains(&place.cloud_init) {
            Some(text)
        } else {
            text.strip_prefix(BASE64_PREFIX)
        };
        match encoded {
            None => Ok(Leaf::text(text)),
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map(Leaf::from_bytes)
                .map_err(|e| {
                    error(
                        &place.json,
                        format!("is marked as base64 but is not base64: {e}"),
                    )
                }),
        }
    }

    /// `{"name": "ssh-rsa …"}` back to `public-keys/<i>/openssh-key` listed as `<i>=name`.
    fn public_keys(&mut self, place: &Place, value: &Value) -> Result<(), SchemaError> {
        let keys = match value {
            Value::Object(keys) => keys,
            // A key that was not `i=name` (none on EC2): whatever it is, as it was.
            _ => return self.value(place, value),
        };
        let mut listing = Vec::new();
        for (index, (name, key)) in keys.iter().enumerate() {
            let here = key_path(&place.json, name);
            let text = match key {
                Value::String(text) => text.clone(),
                Value::Array(lines) => lines_of(place, lines)?,
                _ => return Err(error(here, "must be the key's text")),
            };
            let leaf = Place {
                ec2: format!("{}/{index}/openssh-key", place.ec2),
                json: here,
                cloud_init: format!("{}/{name}", place.cloud_init),
            };
            self.leaf(&leaf, Leaf::text(text))?;
            listing.push(format!("{index}={name}"));
        }
        self.listing(place, listing.join("\n"))
    }

    /// `security-credentials`: the role names, never their keys.
    fn credentials(&mut self, place: &Place, value: &Value) -> Result<(), SchemaError> {
        match value {
            Value::Object(roles) => {
                self.roles_named = true;
                for role in roles.keys() {
                    self.leaf(&place.child(role), Leaf::redacted(Redaction::Credentials))?;
                }
                Ok(())
            }
            // The world-readable file of a release that fetched credentials: names hidden too.
            Value::String(text) if text == REDACTED_FOR_NON_ROOT => Ok(()),
            _ => Err(error(
                &place.json,
                "must be an object of roles (or \"redacted for non-root user\")",
            )),
        }
    }

    /// A role under the instance profile's name when no `security-credentials` named one.
    fn role_from_instance_profile(&mut self) -> Result<(), SchemaError> {
        const INFO: &str = "meta-data/iam/info";
        const ROLES: &str = "meta-data/iam/security-credentials";
        if self.roles_named || self.leaves.keys().any(|path| path.starts_with(ROLES)) {
            return Ok(());
        }
        let Some(info) = self.leaves.get(INFO).and_then(Leaf::bytes) else {
            return Ok(());
        };
        let profile = serde_json::from_slice::<Value>(info)
            .ok()
            .and_then(|info| {
                let arn = info.get("InstanceProfileArn")?.as_str()?.to_owned();
                Some(arn.rsplit('/').next()?.to_owned())
            })
            .filter(|name| !name.is_empty() && check_ec2_path(&format!("{ROLES}/{name}")).is_ok());
        let Some(name) = profile else {
            return Ok(());
        };
        let place = Place {
            ec2: format!("{ROLES}/{name}"),
            json: key_path(&key_path(&self.meta_json, "iam"), "info"),
            cloud_init: String::new(),
        };
        self.leaf(&place, Leaf::redacted(Redaction::Credentials))
    }

    fn leaf(&mut self, place: &Place, leaf: Leaf) -> Result<(), SchemaError> {
        check_ec2_path(&place.ec2).map_err(|problem| error(&place.json, problem))?;
        self.budget.count_path(&place.json)?;
        self.budget
            .bytes(leaf.bytes().map_or(0, <[u8]>::len), &place.json)?;
        self.leaves.insert(place.ec2.clone(), leaf);
        Ok(())
    }

    fn listing(&mut self, place: &Place, listing: String) -> Result<(), SchemaError> {
        self.budget.count_path(&place.json)?;
        self.budget.bytes(listing.len(), &place.json)?;
        self.listings.insert(format!("{}/", place.ec2), listing);
        Ok(())
    }
}

/// A leaf cloud-init split into lines, joined again.
fn lines_of(place: &Place, lines: &[Value]) -> Result<String, SchemaError> {
    lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            line.as_str()
                .ok_or_else(|| error(format!("{}[{index}]", place.json), "must be a string"))
        })
        .collect::<Result<Vec<&str>, SchemaError>>()
        .map(|lines| lines.join("\n"))
}

/// How the object at `path` is written back if it is a parsed JSON leaf, `None` for a
/// directory. Beyond the paths EC2 documents as JSON, an object of values only (no
/// sub-directory) with one that no leaf could be (a number, `true`/`false`, `null`) was JSON
/// too.
fn json_layout(path: &str, fields: &Map<String, Value>) -> Option<JsonLayout> {
    if let Some((_, layout)) = JSON_LEAVES.iter().find(|(known, _)| *known == path) {
        return Some(*layout);
    }
    let scalar = |value: &Value| matches!(value, Value::Number(_) | Value::Bool(_) | Value::Null);
    (fields.values().any(scalar) && !fields.values().any(Value::is_object))
        .then_some(JsonLayout::Ec2(&[]))
}

/// A parsed JSON leaf as imds-tun serves it.
fn write_json(fields: &Map<String, Value>, layout: JsonLayout) -> String {
    let order = match layout {
        // serde_json writes an object's keys in order, as the interruption notices are served.
        JsonLayout::Compact => return Value::Object(fields.clone()).to_string(),
        JsonLayout::Ec2(order) => order,
    };
    let known = order.iter().filter_map(|key| fields.get_key_value(*key));
    let rest = fields
        .iter()
        .filter(|(key, _)| !order.contains(&key.as_str()));
    let lines: Vec<String> = known
        .chain(rest)
        .map(|(key, value)| {
            // EC2 prints a list inline with spaces, `[ "a", "b" ]` (an empty one as `[]`).
            let value = match value {
                Value::Array(items) if !items.is_empty() => {
                    let items: Vec<String> = items.iter().map(Value::to_string).collect();
                    format!("[ {} ]", items.join(", "))
                }
                other => other.to_string(),
            };
            format!("  {} : {value}", Value::from(key.as_str()))
        })
        .collect();
    format!("{{\n{}\n}}", lines.join(",\n"))
}

#[cfg(test)]
mod tests {
    use super::super::{BOUNDS, LeafValue, load};
    use super::*;
    use serde_json::json;

    /// Written by cloud-init 22.4.2 crawling imds-tun (`--region eu-west-1 --instance-id
    /// i-0123456789abcdef0 --tag Team=payments --user-data … --mock-credentials`, two security
    /// groups, a key pair, a public address); see its VERSION file beside it.
    const FIXTURE: &str = include_str!("../../tests/fixtures/cloud-init/instance-data.json");

    fn fixture() -> Value {
        serde_json::from_str(FIXTURE).expect("the fixture is JSON")
    }

    fn convert(value: &Value) -> Ec2Tree {
        from_instance_data(value)
            .unwrap_or_else(|e| panic!("{e}"))
            .ec2
            .expect("an EC2 tree")
    }

    fn text<'a>(tree: &'a Ec2Tree, path: &str) -> &'a str {
        match tree.leaves.get(path).map(|leaf| &leaf.value) {
            Some(LeafValue::Text(text)) => text,
            other => panic!("{path}: {other:?} in {:?}", tree.leaves.keys()),
        }
    }

    /// The smallest instance data with an EC2 tree, plus `meta` merged into `meta-data`.
    fn instance_data(meta: Value) -> Value {
        let mut tree = json!({"instance-id": "i-0123456789abcdef0"});
        if let (Some(tree), Some(extra)) = (tree.as_object_mut(), meta.as_object()) {
            tree.extend(extra.clone());
        }
        json!({"ds": {"meta-data": tree}})
    }

    #[test]
    fn the_fixture_keeps_instance_id_region_tag_and_role_name() {
        let tree = convert(&fixture());
        assert_eq!(text(&tree, "meta-data/instance-id"), "i-0123456789abcdef0");
        assert_eq!(text(&tree, "meta-data/placement/region"), "eu-west-1");
        assert_eq!(text(&tree, "meta-data/tags/instance/Team"), "payments");
        let document: Value =
            serde_json::from_str(text(&tree, "dynamic/instance-identity/document")).unwrap();
        assert_eq!(document["region"], "eu-west-1");
        assert_eq!(document["instanceId"], "i-0123456789abcdef0");
        // cloud-init never fetched the credentials: the role is the instance profile's name.
        assert_eq!(
            tree.leaves["meta-data/iam/security-credentials/imds-tun"].value,
            LeafValue::Redacted(Redaction::Credentials)
        );
        assert!(tree.imdsv2);
        // cloud-init keeps user-data out of instance-data.json.
        assert!(!tree.leaves.contains_key("user-data"));
    }

    #[test]
    fn the_fixture_is_written_back_as_imds_tun_serves_it() {
        let tree = convert(&fixture());
        let mac = text(&tree, "meta-data/mac").to_owned();
        assert_eq!(text(&tree, "meta-data/security-groups"), "default\nweb");
        assert_eq!(
            text(
                &tree,
                &format!("meta-data/network/interfaces/macs/{mac}/ipv4-associations/203.0.113.25")
            ),
            "172.31.250.247"
        );
        assert!(text(&tree, "meta-data/public-keys/0/openssh-key").ends_with(" laptop"));
        assert_eq!(tree.listings["meta-data/public-keys/"], "0=laptop");
        assert_eq!(text(&tree, "meta-data/events/maintenance/scheduled"), "[]");
        let info = text(&tree, "meta-data/iam/info");
        assert!(
            info.starts_with("{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"20"),
            "{info}"
        );
        assert!(info.ends_with("\n  \"InstanceProfileId\" : \"AIPA8A08BE0C136ABC6C0\"\n}"));
        let document = text(&tree, "dynamic/instance-identity/document");
        assert!(
            document.starts_with("{\n  \"accountId\" : \"123456789012\",\n  \"architecture\""),
            "{document}"
        );
        assert!(
            document.contains("\"billingProducts\" : null,\n"),
            "{document}"
        );
        assert!(
            document.ends_with("  \"version\" : \"2017-09-30\"\n}"),
            "{document}"
        );
        for signature in ["pkcs7", "rsa2048", "signature"] {
            assert_eq!(
                tree.leaves[&format!("dynamic/instance-identity/{signature}")].value,
                LeafValue::Redacted(Redaction::Signature)
            );
        }
        // Nothing of cloud-init's own bookkeeping becomes a path.
        assert!(
            tree.leaves
                .keys()
                .all(|path| path.starts_with("meta-data/") || path.starts_with("dynamic/")),
            "{:?}",
            tree.leaves.keys()
        );
    }

    #[test]
    fn a_converted_snapshot_reads_back_as_a_snapshot_file() {
        let snapshot = from_instance_data(&fixture()).unwrap();
        assert_eq!(
            Snapshot::parse(snapshot.to_pretty_json().as_bytes()),
            Ok(snapshot.clone())
        );
        assert!(
            snapshot.source.contains("169.254.169.254"),
            "{}",
            snapshot.source
        );
    }

    #[test]
    fn no_credential_or_signature_value_reaches_the_snapshot() {
        // An older cloud-init's root-only file, which held the keys themselves.
        let keys = json!({
            "Code": "Success",
            "AccessKeyId": "ASIAFAKEFAKEFAKE1234",
            "SecretAccessKey": "not-a-secret-but-never-copied",
            "Token": "token-never-copied",
        });
        let mut data = instance_data(json!({
            "iam": {
                "info": {"Code": "Success", "InstanceProfileArn": "arn:aws:iam::1:instance-profile/profile"},
                "security-credentials": {"app": keys.clone()},
            },
            "identity-credentials": {"ec2": {"security-credentials": {"ec2-instance": keys}}},
        }));
        data["ds"]["dynamic"] = fixture()["ds"]["dynamic"].clone();
        let snapshot = from_instance_data(&data).unwrap();
        let written = snapshot.to_pretty_json();
        for secret in [
            "ASIAFAKEFAKEFAKE1234",
            "not-a-secret-but-never-copied",
            "token-never-copied",
        ] {
            assert!(!written.contains(secret), "{secret} in {written}");
        }
        let pkcs7 = fixture()["ds"]["dynamic"]["instance-identity"]["pkcs7"][1].clone();
        assert!(!written.contains(pkcs7.as_str().unwrap()), "{written}");
        let tree = snapshot.ec2.unwrap();
        for path in [
            "meta-data/iam/security-credentials/app",
            "meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
        ] {
            assert_eq!(
                tree.leaves[path].value,
                LeafValue::Redacted(Redaction::Credentials)
            );
        }
        // The role was named: no second one after the instance profile.
        assert!(
            !tree
                .leaves
                .contains_key("meta-data/iam/security-credentials/profile")
        );
    }

    #[test]
    fn redacted_credentials_leave_the_role_to_the_instance_profile() {
        let data = instance_data(json!({
            "iam": {
                "info": {"Code": "Success", "InstanceProfileArn": "arn:aws:iam::1:instance-profile/path/web"},
                "security-credentials": REDACTED_FOR_NON_ROOT,
            },
        }));
        let tree = convert(&data);
        let roles: Vec<&String> = tree
            .leaves
            .keys()
            .filter(|path| path.contains("security-credentials"))
            .collect();
        assert_eq!(roles, ["meta-data/iam/security-credentials/web"]);
        // Any other value the world-readable file hides is left out, not served as the phrase.
        let tree = convert(&instance_data(json!({"secret": REDACTED_FOR_NON_ROOT})));
        assert!(!tree.leaves.contains_key("meta-data/secret"));
    }

    #[test]
    fn user_data_added_by_hand_is_text_or_base64() {
        let mut data = instance_data(json!({}));
        data["ds"]["user-data"] = json!("#cloud-config\n");
        assert_eq!(text(&convert(&data), "user-data"), "#cloud-config\n");

        data["ds"]["user-data"] = json!("H4sI/w==");
        data["base64_encoded_keys"] = json!(["ds/user-data"]);
        let tree = convert(&data);
        assert_eq!(
            tree.leaves["user-data"].value,
            LeafValue::Bytes(vec![0x1f, 0x8b, 0x08, 0xff])
        );

        let mut data = instance_data(json!({"odd": "ci-b64:/w=="}));
        data["ds"]["user-data"] = json!("ci-b64:aGk=");
        let tree = convert(&data);
        assert_eq!(
            tree.leaves["meta-data/odd"].value,
            LeafValue::Bytes(vec![0xff])
        );
        assert_eq!(text(&tree, "user-data"), "hi");
    }

    #[test]
    fn json_leaves_and_empty_directories_keep_their_shape() {
        let tree = convert(&instance_data(json!({
            "spot": {"instance-action": {"time": "2017-09-18T08:22:00Z", "action": "terminate"}},
            "future": {"thing": {"Enabled": true, "Name": "x"}},
            "tags": {"instance": {}},
        })));
        // Compact, keys in order, as imds-tun serves the interruption notices.
        assert_eq!(
            text(&tree, "meta-data/spot/instance-action"),
            r#"{"action":"terminate","time":"2017-09-18T08:22:00Z"}"#
        );
        // An object no directory could be (a `true`): a JSON leaf in EC2's layout.
        assert_eq!(
            text(&tree, "meta-data/future/thing"),
            "{\n  \"Enabled\" : true,\n  \"Name\" : \"x\"\n}"
        );
        assert_eq!(tree.listings["meta-data/tags/instance/"], "");
    }

    #[test]
    fn load_takes_a_snapshot_or_instance_data_and_says_when_it_is_neither() {
        let converted = load(FIXTURE.as_bytes()).unwrap();
        assert_eq!(converted, from_instance_data(&fixture()).unwrap());
        let written = converted.to_pretty_json();
        assert_eq!(load(written.as_bytes()), Ok(converted));

        let cases = [
            ("{}", "$", "neither an imds-tun snapshot"),
            ("[]", "$", "must be an object"),
            ("{\"ds\": 1}", "$.ds", "must be an object"),
            (
                "{\"ds\": {\"meta_data\": {}}}",
                "$.ds.meta_data",
                "no \"instance-id\"",
            ),
            (
                "{\"ds\": {\"_doc\": \"x\"}}",
                "$.ds",
                "no \"meta-data\" object",
            ),
            (
                "{\"ds\": {}, \"imds_tun_snapshot\": 1}",
                "$.ds",
                "not a snapshot key",
            ),
        ];
        for (text, path, problem) in cases {
            let error = load(text.as_bytes()).expect_err(text);
            assert_eq!(error.path, path, "{text}: {error}");
            assert!(error.problem.contains(problem), "{text}: {error}");
            assert!(!error.to_string().contains('\n'), "{error}");
        }
    }

    #[test]
    fn errors_name_the_json_path_in_the_instance_data() {
        let cases = [
            (
                json!({"kernel-id": null}),
                "$.ds[\"meta-data\"][\"kernel-id\"]",
                "must be text",
            ),
            (
                json!({"security-groups": ["a", 1]}),
                "$.ds[\"meta-data\"][\"security-groups\"][1]",
                "must be a string",
            ),
            (
                json!({"iam": {"info": {"Code": "Success"}, "security-credentials": 5}}),
                "$.ds[\"meta-data\"].iam[\"security-credentials\"]",
                "must be an object of roles",
            ),
            (
                json!({"public-keys": {"k": 5}}),
                "$.ds[\"meta-data\"][\"public-keys\"].k",
                "must be the key's text",
            ),
            (
                json!({"bad path": "x"}),
                "$.ds[\"meta-data\"][\"bad path\"]",
                "has a space",
            ),
        ];
        for (meta, path, problem) in cases {
            let error =
                from_instance_data(&instance_data(meta.clone())).expect_err(&meta.to_string());
            assert_eq!(error.path, path, "{meta}: {error}");
            assert!(error.problem.contains(problem), "{meta}: {error}");
        }
        let mut data = instance_data(json!({"odd": "!!"}));
        data["base64_encoded_keys"] = json!(["ds/meta-data/odd"]);
        let error = from_instance_data(&data).unwrap_err();
        assert_eq!(error.path, "$.ds[\"meta-data\"].odd");
        assert!(error.problem.contains("not base64"), "{error}");
    }

    #[test]
    fn the_bounds_of_every_snapshot_hold_for_a_converted_one() {
        let mut deep = json!("leaf");
        for _ in 0..BOUNDS.depth + 4 {
            deep = json!({ "d": deep });
        }
        let error = from_instance_data(&instance_data(json!({ "d": deep }))).unwrap_err();
        assert!(error.problem.contains("deeper than 16"), "{error}");
        assert!(error.path.starts_with("$.ds[\"meta-data\"].d.d"), "{error}");

        let big = "x".repeat(BOUNDS.leaf_bytes + 1);
        let error = from_instance_data(&instance_data(json!({ "big": big }))).unwrap_err();
        assert_eq!(error.path, "$.ds[\"meta-data\"].big");
        assert!(error.problem.contains("the most one value may"), "{error}");

        let many: Map<String, Value> = (0..=BOUNDS.paths)
            .map(|i| (format!("p{i}"), json!("1")))
            .collect();
        let error = from_instance_data(&instance_data(json!({ "many": many }))).unwrap_err();
        assert!(error.problem.contains("EC2 paths"), "{error}");
    }
}
