//! The metadata tree under one version (`meta-data/…`, `dynamic/…`, `user-data`), built once.
//!
//! Leaves are fixed bytes except the role credentials, which are marked so the router asks the
//! credential source at request time, and the identity document's signatures, made once on
//! first use rather than at start-up. Directories and their listings are derived from the
//! leaves: a listing names immediate children only, sub-directories end in `/`, lines are
//! LF-separated without a trailing newline. The few listings EC2 writes differently (the version
//! root, `public-keys/`, `iam/`) are set explicitly.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use time::OffsetDateTime;

use super::Instance;
use super::responses::{iso8601_utc_seconds, pretty_json};
use super::signature::{DeferredSignatures, SignedForm};
use std::sync::Arc;

/// What a leaf serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    /// Fixed `text/plain` bytes.
    Text(Bytes),
    /// Fixed `application/octet-stream` bytes (user-data).
    Octets(Bytes),
    /// Fixed bytes with the `Content-Type` a snapshot recorded (`--replay`).
    Typed {
        /// The body.
        body: Bytes,
        /// Its `Content-Type`, as recorded.
        content_type: http::HeaderValue,
    },
    /// One signed form of the identity document, made on first use (see [`DeferredSignatures`]).
    Signed {
        /// Which form.
        form: SignedForm,
        /// The document's signatures.
        signatures: Arc<DeferredSignatures>,
    },
    /// The role's current credentials, fetched per request; `extended` adds `AccountId`.
    Credentials {
        /// `iam/security-credentials-extended/<role>` rather than `security-credentials`.
        extended: bool,
    },
}

/// A path in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory and its listing.
    Directory(Bytes),
    /// A value, fixed or fetched per request.
    Leaf(Leaf),
}

/// All paths of one version, keyed without leading or trailing `/` (`""` is the version root).
#[derive(Debug, Clone)]
pub struct Tree {
    /// FNV rather than SipHash: the keys are our own, fixed once the tree is built, so a path a
    /// client chooses can only be looked up, never placed; SipHash was ~2 % of the instructions
    /// of a request (docs/performance.md).
    nodes: HashMap<String, Node, fnv::FnvBuildHasher>,
}

impl Tree {
    /// Looks up a path relative to the version root (`meta-data/placement`).
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Every leaf and its path, in no particular order.
    pub fn leaves(&self) -> impl Iterator<Item = (&str, &Leaf)> {
        self.nodes.iter().filter_map(|(path, node)| match node {
            Node::Leaf(leaf) => Some((path.as_str(), leaf)),
            Node::Directory(_) => None,
        })
    }

    /// A tree of these leaves; each directory's listing is the one given in `listings` (keyed
    /// without a trailing `/`, `""` for the version root), else derived. A directory with a
    /// listing exists even when no leaf is under it.
    pub fn from_parts(leaves: BTreeMap<String, Leaf>, listings: BTreeMap<String, String>) -> Tree {
        TreeBuilder { leaves, listings }.finish()
    }

    /// The tree EC2 would serve for `instance`.
    pub fn build(
        instance: &Instance,
        identity_document: &str,
        signatures: &Arc<DeferredSignatures>,
        pending_time: OffsetDateTime,
    ) -> Tree {
        let mut tree = TreeBuilder::default();
        add_meta_data(&mut tree, instance, pending_time);

        tree.text("dynamic/instance-identity/document", identity_document);
        for (path, form) in [
            ("dynamic/instance-identity/signature", SignedForm::Signature),
            ("dynamic/instance-identity/pkcs7", SignedForm::Pkcs7),
            ("dynamic/instance-identity/rsa2048", SignedForm::Rsa2048),
        ] {
            let signatures = signatures.clone();
            tree.leaf(path, Leaf::Signed { form, signatures });
        }
        tree.text("dynamic/fws/instance-monitoring", "disabled");

        let mut root = vec!["dynamic", "meta-data"];
        if let Some(user_data) = &instance.user_data {
            tree.leaf("user-data", Leaf::Octets(user_data.clone()));
            root.push("user-data");
        }
        // The version root lists its three categories without the `/` of a directory.
        tree.listing("", root.join("\n"));
        tree.finish()
    }
}

fn add_meta_data(tree: &mut TreeBuilder, instance: &Instance, pending_time: OffsetDateTime) {
    let (partition, domain) = super::partition(&instance.region);
    let local_ipv4 = instance.local_ipv4.to_string();
    let group_names: Vec<&str> = instance
        .security_groups
        .iter()
        .map(|group| group.name.as_str())
        .collect();
    let group_ids: Vec<&str> = instance
        .security_groups
        .iter()
        .map(|group| group.id.as_str())
        .collect();

    let m = |path: &str| format!("meta-data/{path}");
    tree.text(&m("ami-id"), &instance.ami_id);
    tree.text(&m("ami-launch-index"), "0");
    // EBS-backed images have no manifest.
    tree.text(&m("ami-manifest-path"), "(unknown)");
    tree.text(&m("block-device-mapping/ami"), "/dev/xvda");
    tree.text(&m("block-device-mapping/root"), "/dev/xvda");
    tree.text(&m("hostname"), &instance.hostname);
    tree.text(&m("instance-action"), "none");
    tree.text(&m("instance-id"), &instance.instance_id);
    tree.text(&m("instance-life-cycle"), "on-demand");
    tree.text(&m("instance-type"), &instance.instance_type);
    tree.text(&m("local-hostname"), &instance.local_hostname);
    tree.text(&m("local-ipv4"), &local_ipv4);
    tree.text(&m("mac"), &instance.mac);
    tree.text(&m("profile"), "default-hvm");
    tree.text(&m("reservation-id"), &instance.reservation_id);
    tree.text(&m("security-groups"), &group_names.join("\n"));
    tree.text(&m("services/domain"), domain);
    tree.text(&m("services/partition"), partition);
    tree.text(
        &m("placement/availability-zone"),
        &instance.availability_zone,
    );
    tree.text(
        &m("placement/availability-zone-id"),
        &instance.availability_zone_id,
    );
    tree.text(&m("placement/region"), &instance.region);
    if let Some(public_ipv4) = instance.public_ipv4 {
        tree.text(&m("public-ipv4"), &public_ipv4.to_string());
    }
    if let Some(public_hostname) = &instance.public_hostname {
        tree.text(&m("public-hostname"), public_hostname);
    }

    // IAM: the instance profile and its role.
    let role = &instance.role_name;
    tree.text(
        &m("iam/info"),
        &pretty_json(&[
            ("Code", "Success".into()),
            ("LastUpdated", iso8601_utc_seconds(pending_time).into()),
            (
                "InstanceProfileArn",
                format!(
                    "arn:{partition}:iam::{}:instance-profile/{role}",
                    instance.account_id
                )
                .into(),
            ),
            (
                "InstanceProfileId",
                instance.instance_profile_id.as_str().into(),
            ),
        ]),
    );
    tree.leaf(
        &m(&format!("iam/security-credentials/{role}")),
        Leaf::Credentials { extended: false },
    );
    tree.leaf(
        &m(&format!("iam/security-credentials-extended/{role}")),
        Leaf::Credentials { extended: true },
    );
    // EC2 lists the classic entries only; SDKs that know the extended API ask for it directly.
    tree.listing(&m("iam"), "info\nsecurity-credentials/".into());

    // The one network interface, carrying the instance's addresses.
    let interface = format!("network/interfaces/macs/{}", instance.mac);
    let i = |leaf: &str| m(&format!("{interface}/{leaf}"));
    tree.text(&i("device-number"), "0");
    tree.text(&i("interface-id"), &instance.interface_id);
    tree.text(&i("local-hostname"), &instance.local_hostname);
    tree.text(&i("local-ipv4s"), &local_ipv4);
    tree.text(&i("mac"), &instance.mac);
    tree.text(&i("network-card-index"), "0");
    tree.text(&i("owner-id"), &instance.account_id);
    tree.text(&i("security-groups"), &group_names.join("\n"));
    tree.text(&i("security-group-ids"), &group_ids.join("\n"));
    tree.text(&i("subnet-id"), &instance.subnet_id);
    tree.text(
        &i("subnet-ipv4-cidr-block"),
        &instance.subnet_ipv4_cidr_block,
    );
    tree.text(&i("vpc-id"), &instance.vpc_id);
    tree.text(&i("vpc-ipv4-cidr-block"), &instance.vpc_ipv4_cidr_block);
    tree.text(&i("vpc-ipv4-cidr-blocks"), &instance.vpc_ipv4_cidr_block);
    if let Some(public_ipv4) = instance.public_ipv4 {
        let public_ipv4 = public_ipv4.to_string();
        tree.text(&i("public-ipv4s"), &public_ipv4);
        tree.text(&i(&format!("ipv4-associations/{public_ipv4}")), &local_ipv4);
    }
    if let Some(public_hostname) = &instance.public_hostname {
        tree.text(&i("public-hostname"), public_hostname);
    }

    if let Some(key) = &instance.public_key {
        tree.text(&m("public-keys/0/openssh-key"), &key.openssh_key);
        // EC2 lists keys as `<index>=<name>`, not as the `0/` directory they are.
        tree.listing(&m("public-keys"), format!("0={}", key.name));
    }

    for (key, value) in &instance.tags {
        tree.text(&m(&format!("tags/instance/{key}")), value);
    }
}

/// Collects leaves, then derives every directory and its listing.
#[derive(Default)]
struct TreeBuilder {
    leaves: BTreeMap<String, Leaf>,
    listings: BTreeMap<String, String>,
}

impl TreeBuilder {
    fn text(&mut self, path: &str, value: &str) {
        self.leaf(path, Leaf::Text(Bytes::copy_from_slice(value.as_bytes())));
    }

    fn leaf(&mut self, path: &str, leaf: Leaf) {
        self.leaves.insert(path.to_owned(), leaf);
    }

    /// Replaces the derived listing of the directory at `path`.
    fn listing(&mut self, path: &str, listing: String) {
        self.listings.insert(path.to_owned(), listing);
    }

    fn finish(self) -> Tree {
        let mut children: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let leaves = self.leaves.keys().map(|path| (path.as_str(), ""));
        // A directory given a listing exists even without leaves (`--replay` of an empty one).
        let directories = self.listings.keys().filter(|path| !path.is_empty());
        for (path, first_suffix) in leaves.chain(directories.map(|path| (path.as_str(), "/"))) {
            if !first_suffix.is_empty() {
                children.entry(path.to_owned()).or_default();
            }
            // Register each ancestor with its immediate child; directories get a `/`.
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
        let mut nodes: HashMap<String, Node, fnv::FnvBuildHasher> = HashMap::default();
        for (directory, names) in children {
            let listing = match self.listings.get(&directory) {
                Some(listing) => listing.clone(),
                None => names.into_iter().collect::<Vec<_>>().join("\n"),
            };
            nodes.insert(directory, Node::Directory(Bytes::from(listing)));
        }
        for (path, leaf) in self.leaves {
            nodes.insert(path, Node::Leaf(leaf));
        }
        Tree { nodes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn builder() -> TreeBuilder {
        let mut tree = TreeBuilder::default();
        tree.text("meta-data/ami-id", "ami-1");
        tree.text("meta-data/placement/region", "us-east-1");
        tree.text("meta-data/placement/availability-zone", "us-east-1a");
        tree.text(
            "meta-data/network/interfaces/macs/0e:00:00:00:00:01/mac",
            "x",
        );
        tree
    }

    fn listing(tree: &Tree, path: &str) -> String {
        match tree.get(path) {
            Some(Node::Directory(listing)) => String::from_utf8(listing.to_vec()).unwrap(),
            other => panic!("{path}: not a directory: {other:?}"),
        }
    }

    #[test]
    fn listing_names_immediate_children_with_directories_suffixed() {
        let tree = builder().finish();
        assert_eq!(listing(&tree, "meta-data"), "ami-id\nnetwork/\nplacement/");
        assert_eq!(
            listing(&tree, "meta-data/placement"),
            "availability-zone\nregion"
        );
        assert_eq!(listing(&tree, "meta-data/network"), "interfaces/");
        assert_eq!(
            listing(&tree, "meta-data/network/interfaces/macs"),
            "0e:00:00:00:00:01/"
        );
    }

    #[test]
    fn listing_has_no_trailing_newline() {
        let tree = builder().finish();
        assert!(!listing(&tree, "meta-data").ends_with('\n'));
    }

    #[test]
    fn explicit_listing_replaces_the_derived_one() {
        let mut tree = builder();
        tree.text("meta-data/public-keys/0/openssh-key", "ssh-ed25519 AAAA");
        tree.listing("meta-data/public-keys", "0=deploy".into());
        let tree = tree.finish();
        assert_eq!(listing(&tree, "meta-data/public-keys"), "0=deploy");
        assert_eq!(listing(&tree, "meta-data/public-keys/0"), "openssh-key");
    }

    #[test]
    fn unknown_paths_are_absent() {
        let tree = builder().finish();
        assert!(tree.get("meta-data/nope").is_none());
        assert!(tree.get("meta-data/ami-id/more").is_none());
    }

    #[test]
    fn built_tree_has_optional_parts_only_when_configured() {
        let mut instance = crate::clouds::ec2::Instance::example();
        let signatures = DeferredSignatures::new(b"{}");
        let start = OffsetDateTime::UNIX_EPOCH;
        let bare = Tree::build(&instance, "{}", &signatures, start);
        for absent in [
            "user-data",
            "meta-data/public-ipv4",
            "meta-data/public-hostname",
            "meta-data/public-keys",
            "meta-data/tags",
        ] {
            assert!(bare.get(absent).is_none(), "{absent}");
        }
        assert_eq!(listing(&bare, ""), "dynamic\nmeta-data");

        instance.public_ipv4 = Some(Ipv4Addr::new(54, 0, 0, 1));
        instance.user_data = Some(Bytes::from_static(b"#!"));
        instance.tags.insert("Name".into(), "web".into());
        let full = Tree::build(&instance, "{}", &signatures, start);
        assert_eq!(listing(&full, ""), "dynamic\nmeta-data\nuser-data");
        assert!(full.get("meta-data/public-ipv4").is_some());
        assert_eq!(listing(&full, "meta-data/tags/instance"), "Name");
    }
}
