//! `--replay` for EC2: the recorded tree, with imds-tun's value wherever an explicit setting
//! changed it (the rule is `crate::clouds::replay`'s), and the identity document re-signed.
//!
//! What the tree serves, path by path:
//! - a recorded leaf: its bytes, with the recorded `Content-Type`, else EC2's for the path
//!   (`application/octet-stream` for `user-data`, `text/plain` for every other);
//! - unless the two builds (defaults alone, every setting) differ at that path: then the
//!   setting's value, or nothing if the setting removed the path (a role renamed by
//!   `--role-name`);
//! - a path the settings add that the defaults lack (`--tag`, the `--role-name` role's
//!   credentials) is added, but for a network interface the recording does not have;
//! - redacted credentials under `iam/security-credentials/` and `-extended/` are the role's
//!   credentials from the usual source; other redacted values (tokens, the identity role's keys)
//!   are not served;
//! - the identity document is the recorded one, its keys overlaid by the same rule, and its
//!   `signature`, `pkcs7` and `rsa2048` are computed over the served bytes with imds-tun's key;
//! - listings: the recorded listing, with every child it does not list appended (a child is
//!   listed by a line `name`, `name/` or starting `name=`); else derived; the version root
//!   without `/`, as EC2 lists it.
//!
//! Not here: routing, tokens, interruptions and faults, which serve this tree as a built one.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use http::HeaderValue;
use serde_json::Value;
use time::OffsetDateTime;

use super::Instance;
use super::identity;
use super::responses::pretty_json;
use super::signature::{DeferredSignatures, SignedForm};
use super::tree::{Leaf, Node, Tree};
use crate::snapshot::{self, Ec2Tree, LeafValue, Redaction};

/// The identity document's path.
pub const DOCUMENT: &str = "dynamic/instance-identity/document";

/// The document's signatures, never recorded and always computed.
const SIGNATURES: [&str; 3] = [
    "dynamic/instance-identity/signature",
    "dynamic/instance-identity/pkcs7",
    "dynamic/instance-identity/rsa2048",
];

/// The tree to serve for `recorded`: `base` is the instance the defaults alone describe (with
/// the recorded role name), `full` the one every setting describes.
pub fn tree(
    recorded: &Ec2Tree,
    base: &Instance,
    full: &Instance,
    pending_time: OffsetDateTime,
) -> Tree {
    let base_document = identity::document(base, pending_time);
    let full_document = identity::document(full, pending_time);
    // Never made: the signatures are among the `computed` paths, set below.
    let unsigned = DeferredSignatures::new(b"");
    let base_tree = Tree::build(base, &base_document, &unsigned, pending_time);
    let full_tree = Tree::build(full, &full_document, &unsigned, pending_time);
    let computed = |path: &str| path == DOCUMENT || SIGNATURES.contains(&path);

    let mut leaves = BTreeMap::new();
    for (path, leaf) in &recorded.leaves {
        if computed(path) {
            continue;
        }
        if base_tree.get(path) != full_tree.get(path) {
            if let Some(Node::Leaf(leaf)) = full_tree.get(path) {
                leaves.insert(path.clone(), leaf.clone());
            }
            continue;
        }
        if let Some(leaf) = served(path, leaf) {
            leaves.insert(path.clone(), leaf);
        }
    }
    for (path, leaf) in full_tree.leaves() {
        if base_tree.get(path).is_none()
            && !computed(path)
            && !recorded.leaves.contains_key(path)
            && !in_unrecorded_interface(recorded, path)
        {
            leaves.insert(path.to_owned(), leaf.clone());
        }
    }
    if let Some(LeafValue::Text(text)) = recorded.leaves.get(DOCUMENT).map(|leaf| &leaf.value) {
        let document = overlay_document(text, &base_document, &full_document);
        let signatures = DeferredSignatures::new(document.as_bytes());
        signatures.warm_up();
        let forms = [
            SignedForm::Signature,
            SignedForm::Pkcs7,
            SignedForm::Rsa2048,
        ];
        for (path, form) in SIGNATURES.into_iter().zip(forms) {
            let signatures = signatures.clone();
            leaves.insert(path.to_owned(), Leaf::Signed { form, signatures });
        }
        leaves.insert(
            DOCUMENT.to_owned(),
            Leaf::Text(Bytes::copy_from_slice(document.as_bytes())),
        );
    }

    let directories: Vec<&str> = recorded
        .listings
        .keys()
        .map(|path| path.trim_end_matches('/'))
        .collect();
    let children = children(leaves.keys().map(String::as_str), &directories);
    let mut listings = BTreeMap::new();
    for (path, listing) in &recorded.listings {
        let directory = path.trim_end_matches('/');
        let names = children.get(directory).cloned().unwrap_or_default();
        listings.insert(directory.to_owned(), with_unlisted(listing, &names));
    }
    if !listings.contains_key("") {
        // EC2 lists the version root's three categories without the `/` of a directory.
        let root = children.get("").cloned().unwrap_or_default();
        let names: Vec<&str> = root.iter().map(|name| name.trim_end_matches('/')).collect();
        listings.insert(String::new(), names.join("\n"));
    }
    Tree::from_parts(leaves, listings)
}

/// Whether `path` is under a network interface the recording does not have: imds-tun's own
/// interface (its MAC from the settings) is not added beside the recorded ones because a
/// setting such as `--public-ipv4` adds a leaf to it.
fn in_unrecorded_interface(recorded: &Ec2Tree, path: &str) -> bool {
    const MACS: &str = "meta-data/network/interfaces/macs/";
    let Some((mac, _)) = path
        .strip_prefix(MACS)
        .and_then(|rest| rest.split_once('/'))
    else {
        return false;
    };
    let directory = format!("{MACS}{mac}/");
    !recorded
        .leaves
        .keys()
        .any(|recorded| recorded.starts_with(&directory))
}

/// What a recorded leaf serves, or `None` for a redacted value imds-tun has no source for.
fn served(path: &str, leaf: &snapshot::Leaf) -> Option<Leaf> {
    let body = match &leaf.value {
        LeafValue::Text(text) => Bytes::copy_from_slice(text.as_bytes()),
        LeafValue::Bytes(bytes) => Bytes::copy_from_slice(bytes),
        LeafValue::Redacted(Redaction::Credentials) => {
            let role = |prefix: &str| {
                path.strip_prefix(prefix)
                    .is_some_and(|name| !name.is_empty() && !name.contains('/'))
            };
            return if role("meta-data/iam/security-credentials/") {
                Some(Leaf::Credentials { extended: false })
            } else if role("meta-data/iam/security-credentials-extended/") {
                Some(Leaf::Credentials { extended: true })
            } else {
                None
            };
        }
        LeafValue::Redacted(_) => return None,
    };
    let content_type = leaf
        .content_type
        .as_deref()
        .and_then(|value| HeaderValue::from_str(value).ok());
    Some(match content_type {
        Some(content_type) => Leaf::Typed { body, content_type },
        None if path == "user-data" => Leaf::Octets(body),
        None => Leaf::Text(body),
    })
}

/// Each directory's immediate children, sub-directories with a `/`; `directories` exist even
/// without a leaf under them.
fn children<'a>(
    leaves: impl Iterator<Item = &'a str>,
    directories: &[&'a str],
) -> BTreeMap<String, BTreeSet<String>> {
    let mut children: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let paths = leaves
        .map(|path| (path, ""))
        .chain(directories.iter().map(|path| (*path, "/")));
    for (path, first_suffix) in paths {
        if path.is_empty() {
            continue;
        }
        let mut child = path;
        let mut suffix = first_suffix;
        loop {
            let (parent, name) = child.rsplit_once('/').unwrap_or(("", child));
            children
                .entry(parent.to_owned())
                .or_default()
                .insert(format!("{name}{suffix}"));
            if parent.is_empty() {
                break;
            }
            child = parent;
            suffix = "/";
        }
    }
    children
}

/// `listing` with each of `names` it does not list appended, one per line. A name is listed by
/// a line that is the name, the name with `/`, or starts with the name and `=` (`0=my-key`).
pub fn with_unlisted(listing: &str, names: &BTreeSet<String>) -> String {
    let mut listing = listing.to_owned();
    for name in names {
        let bare = name.trim_end_matches('/');
        let listed = listing.lines().any(|line| {
            line == bare
                || line.strip_suffix('/') == Some(bare)
                || line
                    .strip_prefix(bare)
                    .is_some_and(|rest| rest.starts_with('='))
        });
        if !listed {
            if !listing.is_empty() {
                listing.push('\n');
            }
            listing.push_str(name);
        }
    }
    listing
}

/// The recorded identity document with each key the settings changed (`base` and `full`
/// differ) set to `full`'s value. Unchanged, it is the recorded bytes; changed, it is written
/// in EC2's layout with the recorded keys in their order. A recorded document that is not a
/// JSON object is served as it is.
fn overlay_document(recorded: &str, base: &str, full: &str) -> String {
    let (Ok(base), Ok(full)) = (
        serde_json::from_str::<serde_json::Map<String, Value>>(base),
        serde_json::from_str::<serde_json::Map<String, Value>>(full),
    ) else {
        return recorded.to_owned();
    };
    let changed: Vec<(&String, &Value)> = full
        .iter()
        .filter(|(key, value)| base.get(*key) != Some(*value))
        .collect();
    if changed.is_empty() {
        return recorded.to_owned();
    }
    let Ok(Ordered(mut fields)) = serde_json::from_str::<Ordered>(recorded) else {
        return recorded.to_owned();
    };
    for (key, value) in changed {
        match fields.iter_mut().find(|(name, _)| name == key) {
            Some(field) => field.1 = value.clone(),
            None => fields.push((key.clone(), value.clone())),
        }
    }
    let fields: Vec<(&str, Value)> = fields
        .iter()
        .map(|(key, value)| (key.as_str(), value.clone()))
        .collect();
    pretty_json(&fields)
}

/// A JSON object's fields in the order they were written.
struct Ordered(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Ordered, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Ordered;
            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Ordered, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_entry::<String, Value>()? {
                    fields.push(field);
                }
                Ok(Ordered(fields))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot::Leaf as Recorded;

    fn recorded(leaves: &[(&str, Recorded)], listings: &[(&str, &str)]) -> Ec2Tree {
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

    fn body(tree: &Tree, path: &str) -> String {
        match tree.get(path) {
            Some(Node::Directory(bytes)) | Some(Node::Leaf(Leaf::Text(bytes))) => {
                String::from_utf8(bytes.to_vec()).unwrap()
            }
            Some(Node::Leaf(Leaf::Signed { form, signatures })) => {
                signatures.get().form(*form).to_owned()
            }
            other => panic!("{path}: {other:?}"),
        }
    }

    fn start() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH
    }

    #[test]
    fn recorded_leaves_are_served_and_defaults_the_recording_lacks_are_not() {
        let base = Instance::example();
        let snapshot = recorded(
            &[
                ("meta-data/ami-launch-index", Recorded::text("3")),
                ("meta-data/placement/partition-number", Recorded::text("2")),
                ("meta-data/placement/region", Recorded::text("ap-south-1")),
            ],
            &[],
        );
        let tree = tree(&snapshot, &base, &base.clone(), start());
        assert_eq!(body(&tree, "meta-data/ami-launch-index"), "3");
        assert_eq!(body(&tree, "meta-data/placement/region"), "ap-south-1");
        assert_eq!(
            body(&tree, "meta-data/placement"),
            "partition-number\nregion"
        );
        assert!(tree.get("meta-data/instance-id").is_none());
        assert_eq!(body(&tree, ""), "meta-data");
    }

    #[test]
    fn an_explicit_setting_wins_where_it_changes_the_built_tree() {
        let base = Instance::example();
        let mut full = base.clone();
        full.region = "eu-west-1".into();
        full.availability_zone = "eu-west-1a".into();
        let snapshot = recorded(
            &[
                ("meta-data/placement/region", Recorded::text("ap-south-1")),
                ("meta-data/services/partition", Recorded::text("aws")),
                (
                    "meta-data/instance-id",
                    Recorded::text("i-0123456789abcdef0"),
                ),
            ],
            &[],
        );
        let tree = tree(&snapshot, &base, &full, start());
        assert_eq!(body(&tree, "meta-data/placement/region"), "eu-west-1");
        assert_eq!(body(&tree, "meta-data/services/partition"), "aws");
        assert_eq!(body(&tree, "meta-data/instance-id"), "i-0123456789abcdef0");
    }

    #[test]
    fn a_tag_given_as_a_flag_joins_the_recorded_tags() {
        let base = Instance::example();
        let mut full = base.clone();
        full.tags.insert("Env".into(), "dev".into());
        let snapshot = recorded(
            &[("meta-data/tags/instance/Team", Recorded::text("payments"))],
            &[],
        );
        let tree = tree(&snapshot, &base, &full, start());
        assert_eq!(body(&tree, "meta-data/tags/instance"), "Env\nTeam");
        assert_eq!(body(&tree, "meta-data/tags/instance/Env"), "dev");
    }

    #[test]
    fn a_public_address_given_as_a_flag_adds_no_interface_beside_the_recorded_one() {
        let base = Instance::example();
        let mut full = base.clone();
        full.public_ipv4 = Some(std::net::Ipv4Addr::new(54, 0, 0, 1));
        let recorded_interface = "meta-data/network/interfaces/macs/0a:00:00:00:00:01/mac";
        let snapshot = recorded(
            &[(recorded_interface, Recorded::text("0a:00:00:00:00:01"))],
            &[],
        );
        let tree = tree(&snapshot, &base, &full, start());
        assert_eq!(body(&tree, "meta-data/public-ipv4"), "54.0.0.1");
        assert_eq!(
            body(&tree, "meta-data/network/interfaces/macs"),
            "0a:00:00:00:00:01/"
        );
    }

    #[test]
    fn a_renamed_role_replaces_the_recorded_one() {
        let mut base = Instance::example();
        base.role_name = "recorded".into();
        let mut full = base.clone();
        full.role_name = "renamed".into();
        let snapshot = recorded(
            &[(
                "meta-data/iam/security-credentials/recorded",
                Recorded::redacted(Redaction::Credentials),
            )],
            &[],
        );
        let tree = tree(&snapshot, &base, &full, start());
        assert!(
            tree.get("meta-data/iam/security-credentials/recorded")
                .is_none()
        );
        assert_eq!(
            tree.get("meta-data/iam/security-credentials/renamed"),
            Some(&Node::Leaf(Leaf::Credentials { extended: false }))
        );
        assert_eq!(body(&tree, "meta-data/iam/security-credentials"), "renamed");
    }

    #[test]
    fn the_document_keeps_its_bytes_unless_a_setting_changed_a_key_and_is_signed() {
        let base = Instance::example();
        let recorded_document = "{\n  \"region\" : \"ap-south-1\",\n  \"zzz\" : 1\n}";
        let snapshot = recorded(
            &[
                (DOCUMENT, Recorded::text(recorded_document)),
                (SIGNATURES[1], Recorded::redacted(Redaction::Signature)),
            ],
            &[],
        );
        let same = tree(&snapshot, &base, &base.clone(), start());
        assert_eq!(body(&same, DOCUMENT), recorded_document);
        assert!(!body(&same, SIGNATURES[1]).is_empty());

        let mut full = base.clone();
        full.region = "eu-west-1".into();
        let changed = tree(&snapshot, &base, &full, start());
        assert_eq!(
            body(&changed, DOCUMENT),
            "{\n  \"region\" : \"eu-west-1\",\n  \"zzz\" : 1\n}"
        );
        assert_ne!(body(&changed, SIGNATURES[1]), body(&same, SIGNATURES[1]));
    }

    #[test]
    fn user_data_bytes_and_recorded_content_types_are_kept() {
        let base = Instance::example();
        let mut typed = Recorded::text("{}");
        typed.content_type = Some("application/json".into());
        let snapshot = recorded(
            &[
                ("user-data", Recorded::from_bytes(vec![0x1f, 0x8b, 0xff])),
                ("meta-data/custom/x", typed),
            ],
            &[],
        );
        let tree = tree(&snapshot, &base, &base.clone(), start());
        assert_eq!(
            tree.get("user-data"),
            Some(&Node::Leaf(Leaf::Octets(Bytes::from_static(&[
                0x1f, 0x8b, 0xff
            ]))))
        );
        assert!(matches!(
            tree.get("meta-data/custom/x"),
            Some(Node::Leaf(Leaf::Typed { content_type, .. })) if content_type == "application/json"
        ));
        assert_eq!(body(&tree, ""), "meta-data\nuser-data");
    }

    #[test]
    fn a_leaf_added_by_hand_is_listed_under_a_recorded_listing() {
        let base = Instance::example();
        let snapshot = recorded(
            &[
                (
                    "meta-data/public-keys/0/openssh-key",
                    Recorded::text("ssh-ed25519 A"),
                ),
                (
                    "meta-data/public-keys/1/openssh-key",
                    Recorded::text("ssh-ed25519 B"),
                ),
                ("meta-data/ami-id", Recorded::text("ami-1")),
            ],
            &[
                ("meta-data/public-keys/", "0=first"),
                ("meta-data/", "ami-id\npublic-keys/"),
                ("meta-data/events/", ""),
            ],
        );
        let tree = tree(&snapshot, &base, &base.clone(), start());
        assert_eq!(body(&tree, "meta-data/public-keys"), "0=first\n1/");
        assert_eq!(body(&tree, "meta-data"), "ami-id\npublic-keys/\nevents/");
        assert_eq!(body(&tree, "meta-data/events"), "");
    }

    #[test]
    fn a_child_counts_as_listed_by_its_name_a_slash_or_an_equals() {
        let names: BTreeSet<String> = ["a".into(), "b/".into(), "0/".into(), "new".into()].into();
        assert_eq!(with_unlisted("a/\nb\n0=key", &names), "a/\nb\n0=key\nnew");
        assert_eq!(with_unlisted("", &names), "0/\na\nb/\nnew");
    }
}
