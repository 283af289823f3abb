//! The snapshot of a metadata service: what `imds-tun record` writes and `--replay` serves, as
//! one versioned JSON document a person can read and edit (docs/snapshot.md is its reference).
//!
//! ```text
//! {
//!   "imds_tun_snapshot": 1,
//!   "recorded_at": "2026-12-06T16:40:00Z",
//!   "source": "http://169.254.169.254",
//!   "partial": false,
//!   "errors": [],
//!   "ec2": {
//!     "imdsv2": true,
//!     "leaves": {
//!       "meta-data/instance-id": "i-0123456789abcdef0",
//!       "meta-data/tags/instance/Team": "payments",
//!       "user-data": {"base64": "H4sIAAAA…"},
//!       "meta-data/iam/security-credentials/app": {"redacted": "credentials"},
//!       "dynamic/instance-identity/signature": {"redacted": "signature"}
//!     },
//!     "listings": {"meta-data/public-keys/": "0=my-key"}
//!   },
//!   "gce": {"document": {"instance": {…}, "project": {…}}},
//!   "azure": {"api_version": "2021-02-01", "instance": {"compute": {…}, "network": {…}}}
//! }
//! ```
//!
//! - EC2 paths are relative to the version root (`/latest/`), without leading or trailing `/`.
//!   A leaf is a string (text, served as the cloud serves that path), or an object with exactly
//!   one of `text`, `base64` (bytes that are not UTF-8, such as gzipped user-data) or `redacted`,
//!   and optionally `content_type`. `redacted` marks a path that exists but whose value is never
//!   recorded (credentials, tokens, signatures): its name is kept, its value is imds-tun's own.
//! - `listings` holds only the directory listings that differ from the one derived from the
//!   leaves (immediate children, sub-directories with a trailing `/`, one per line, no final
//!   newline); keys end in `/`, and `""` is the version root. A leaf added by hand is listed in
//!   its parent even where the parent has a recorded listing.
//! - `gce.document` is `/computeMetadata/v1/?recursive=true&alt=json`; `azure.instance` is
//!   `/metadata/instance?api-version=<api_version>`; both as recorded, tokens never included.
//!
//! This module owns the format only: parsing with errors that name the JSON path, the bounds
//! every snapshot keeps, and writing it back. Crawling is `record`'s job, serving `--replay`'s.
//! [`load`] reads what `--replay` is given: a snapshot, or cloud-init's `instance-data.json`,
//! which [`cloud_init`] converts into one.

pub mod cloud_init;

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u64 = 1;

/// The key naming the schema version; its presence tells a snapshot from other JSON.
pub const VERSION_KEY: &str = "imds_tun_snapshot";

/// Limits every snapshot keeps: `record` stops at them (and marks the snapshot partial), and
/// `--replay` refuses a file beyond them, so a snapshot never costs more memory than these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most EC2 paths (leaves and directories together).
    pub paths: usize,
    /// Most `/`-separated segments in an EC2 path.
    pub depth: usize,
    /// Longest EC2 path, in bytes.
    pub path_bytes: usize,
    /// Largest leaf (and GCE or Azure document), in bytes.
    pub leaf_bytes: usize,
    /// Most bytes of all leaves and documents together.
    pub total_bytes: usize,
}

/// The bounds of this version, documented in docs/snapshot.md.
pub const BOUNDS: Bounds = Bounds {
    paths: 10_000,
    depth: 16,
    path_bytes: 1024,
    leaf_bytes: 1024 * 1024,
    total_bytes: 16 * 1024 * 1024,
};

/// The largest snapshot file `--replay` reads: the total plus room for JSON escaping and base64.
pub const FILE_BYTES: u64 = 48 * 1024 * 1024;

/// One recorded service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// When the recording started, RFC 3339 (informational).
    pub recorded_at: String,
    /// The URL recorded (informational).
    pub source: String,
    /// True when the recording stopped at a bound or an error; `errors` says where.
    pub partial: bool,
    /// What went wrong while recording, one line each.
    pub errors: Vec<String>,
    /// The EC2 tree, if the service answered as EC2.
    pub ec2: Option<Ec2Tree>,
    /// The GCE document, if the service answered as GCE.
    pub gce: Option<GceDocument>,
    /// The Azure instance document, if the service answered as Azure.
    pub azure: Option<AzureDocument>,
}

/// The EC2 metadata tree under one version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ec2Tree {
    /// Whether the recorded service gave an IMDSv2 token (false: recorded with IMDSv1).
    pub imdsv2: bool,
    /// Every leaf by path (`meta-data/instance-id`).
    pub leaves: BTreeMap<String, Leaf>,
    /// Listings that differ from the derived one, by directory path (`meta-data/public-keys/`,
    /// `""` for the version root).
    pub listings: BTreeMap<String, String>,
}

impl Ec2Tree {
    /// The listing of `directory` (a path without its final `/`, `""` for the version root)
    /// as derived from the leaves: the immediate children in byte order, sub-directories with a
    /// trailing `/`, LF-joined without a final newline; `record` keeps a served listing only
    /// where it differs from this, and `--replay` serves this where none is kept.
    pub fn derived_listing(&self, directory: &str) -> String {
        let prefix = if directory.is_empty() {
            String::new()
        } else {
            format!("{directory}/")
        };
        let mut children: Vec<String> = Vec::new();
        for path in self.leaves.keys() {
            let Some(rest) = path.strip_prefix(&prefix) else {
                continue;
            };
            let child = match rest.split_once('/') {
                Some((name, _)) => format!("{name}/"),
                None => rest.to_owned(),
            };
            if !rest.is_empty() {
                children.push(child);
            }
        }
        children.sort();
        children.dedup();
        children.join("\n")
    }
}

/// One EC2 leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// Its value.
    pub value: LeafValue,
    /// The Content-Type recorded, when it is not the one EC2 serves for the path.
    pub content_type: Option<String>,
}

/// What a leaf holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeafValue {
    /// UTF-8 text.
    Text(String),
    /// Bytes that are not UTF-8.
    Bytes(Vec<u8>),
    /// The path exists; its value was not recorded and imds-tun serves its own.
    Redacted(Redaction),
}

/// Why a value was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redaction {
    /// Role credentials (`iam/security-credentials/ROLE`, `identity-credentials/…`).
    Credentials,
    /// A signature of the identity document (`signature`, `pkcs7`, `rsa2048`).
    Signature,
    /// A token or other secret.
    Token,
}

impl Redaction {
    /// The word the schema uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Redaction::Credentials => "credentials",
            Redaction::Signature => "signature",
            Redaction::Token => "token",
        }
    }

    fn parse(word: &str) -> Option<Redaction> {
        [
            Redaction::Credentials,
            Redaction::Signature,
            Redaction::Token,
        ]
        .into_iter()
        .find(|redaction| redaction.as_str() == word)
    }
}

/// The GCE metadata server's recursive document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GceDocument {
    /// `{"instance": {…}, "project": {…}}`, camelCase keys as GCE writes them.
    pub document: Value,
}

/// Azure's instance document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureDocument {
    /// The api-version it was recorded with.
    pub api_version: String,
    /// `{"compute": {…}, "network": {…}}`.
    pub instance: Value,
}

/// A snapshot that does not parse or breaks the schema: where (a JSON path such as
/// `$.ec2.leaves["user-data"]`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// The JSON path of the offending value (`$` for the whole document).
    pub path: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

impl std::error::Error for SchemaError {}

fn error(path: impl Into<String>, problem: impl Into<String>) -> SchemaError {
    SchemaError {
        path: path.into(),
        problem: problem.into(),
    }
}

fn key_path(parent: &str, key: &str) -> String {
    if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !key.is_empty() {
        format!("{parent}.{key}")
    } else {
        format!("{parent}[{}]", Value::String(key.to_owned()))
    }
}

/// Reads a file `--replay` was given: an imds-tun snapshot (it has `"imds_tun_snapshot"`), or
/// cloud-init's `/run/cloud-init/instance-data.json` (it has a `"ds"` object), converted by
/// [`cloud_init::from_instance_data`]. Either way the result keeps [`BOUNDS`].
pub fn load(bytes: &[u8]) -> Result<Snapshot, SchemaError> {
    let value = parse_json(bytes)?;
    let is_snapshot = value.get(VERSION_KEY).is_some();
    if !is_snapshot && cloud_init::is_instance_data(&value) {
        return cloud_init::from_instance_data(&value);
    }
    if !is_snapshot && value.is_object() {
        return Err(error(
            "$",
            format!(
                "is neither an imds-tun snapshot (no \"{VERSION_KEY}\" key; `imds-tun record` \
                 writes one) nor cloud-init's instance-data.json (no \"{}\" object)",
                cloud_init::DATASOURCE_KEY
            ),
        ));
    }
    Snapshot::from_value(&value)
}

fn parse_json(bytes: &[u8]) -> Result<Value, SchemaError> {
    serde_json::from_slice(bytes).map_err(|e| {
        error(
            "$",
            format!("not JSON (line {}, column {}): {e}", e.line(), e.column()),
        )
    })
}

impl Snapshot {
    /// Parses and checks a snapshot file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Snapshot, SchemaError> {
        Snapshot::from_value(&parse_json(bytes)?)
    }

    /// Checks an already parsed document against the schema.
    pub fn from_value(value: &Value) -> Result<Snapshot, SchemaError> {
        let root = object(value, "$")?;
        allow_keys(
            root,
            "$",
            &[
                VERSION_KEY,
                "recorded_at",
                "source",
                "partial",
                "errors",
                "ec2",
                "gce",
                "azure",
            ],
        )?;
        let version_path = key_path("$", VERSION_KEY);
        match root.get(VERSION_KEY) {
            Some(Value::Number(n)) if n.as_u64() == Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(error(
                    version_path,
                    format!(
                        "schema version {other} is not one this imds-tun reads ({SCHEMA_VERSION})"
                    ),
                ));
            }
            None => {
                return Err(error(
                    "$",
                    format!(
                        "not an imds-tun snapshot (no \"{VERSION_KEY}\" key); `imds-tun record` writes one"
                    ),
                ));
            }
        }
        let mut snapshot = Snapshot {
            recorded_at: optional_string(root, "$", "recorded_at")?.unwrap_or_default(),
            source: optional_string(root, "$", "source")?.unwrap_or_default(),
            ..Snapshot::default()
        };
        if let Some(partial) = root.get("partial") {
            snapshot.partial = partial
                .as_bool()
                .ok_or_else(|| error("$.partial", "must be true or false"))?;
        }
        if let Some(errors) = root.get("errors") {
            let list = errors
                .as_array()
                .ok_or_else(|| error("$.errors", "must be a list of strings"))?;
            for (index, line) in list.iter().enumerate() {
                let line = line
                    .as_str()
                    .ok_or_else(|| error(format!("$.errors[{index}]"), "must be a string"))?;
                snapshot.errors.push(line.to_owned());
            }
        }
        let mut budget = Budget::default();
        if let Some(ec2) = root.get("ec2") {
            snapshot.ec2 = Some(parse_ec2(ec2, &mut budget)?);
        }
        if let Some(gce) = root.get("gce") {
            let gce = object(gce, "$.gce")?;
            allow_keys(gce, "$.gce", &["document"])?;
            let document = gce
                .get("document")
                .ok_or_else(|| error("$.gce", "has no \"document\""))?;
            let fields = object(document, "$.gce.document")?;
            for part in ["instance", "project"] {
                let value = fields
                    .get(part)
                    .ok_or_else(|| error("$.gce.document", format!("has no \"{part}\" object")))?;
                object(value, &key_path("$.gce.document", part))?;
            }
            budget.document(document, "$.gce.document")?;
            snapshot.gce = Some(GceDocument {
                document: document.clone(),
            });
        }
        if let Some(azure) = root.get("azure") {
            let fields = object(azure, "$.azure")?;
            allow_keys(fields, "$.azure", &["api_version", "instance"])?;
            let api_version = optional_string(fields, "$.azure", "api_version")?
                .ok_or_else(|| error("$.azure", "has no \"api_version\""))?;
            let instance = fields
                .get("instance")
                .ok_or_else(|| error("$.azure", "has no \"instance\""))?;
            let instance_fields = object(instance, "$.azure.instance")?;
            let compute = instance_fields
                .get("compute")
                .ok_or_else(|| error("$.azure.instance", "has no \"compute\" object"))?;
            object(compute, "$.azure.instance.compute")?;
            budget.document(instance, "$.azure.instance")?;
            snapshot.azure = Some(AzureDocument {
                api_version,
                instance: instance.clone(),
            });
        }
        if snapshot.ec2.is_none() && snapshot.gce.is_none() && snapshot.azure.is_none() {
            return Err(error(
                "$",
                "holds no cloud: at least one of \"ec2\", \"gce\" or \"azure\"",
            ));
        }
        Ok(snapshot)
    }

    /// The document this snapshot is written as (keys in a stable order).
    pub fn to_value(&self) -> Value {
        let mut root = Map::new();
        root.insert(VERSION_KEY.into(), json!(SCHEMA_VERSION));
        root.insert("recorded_at".into(), json!(self.recorded_at));
        root.insert("source".into(), json!(self.source));
        root.insert("partial".into(), json!(self.partial));
        root.insert("errors".into(), json!(self.errors));
        if let Some(ec2) = &self.ec2 {
            let leaves: Map<String, Value> = ec2
                .leaves
                .iter()
                .map(|(path, leaf)| (path.clone(), leaf.to_value()))
                .collect();
            root.insert(
                "ec2".into(),
                json!({"imdsv2": ec2.imdsv2, "leaves": leaves, "listings": ec2.listings}),
            );
        }
        if let Some(gce) = &self.gce {
            root.insert("gce".into(), json!({"document": gce.document}));
        }
        if let Some(azure) = &self.azure {
            root.insert(
                "azure".into(),
                json!({"api_version": azure.api_version, "instance": azure.instance}),
            );
        }
        Value::Object(root)
    }

    /// The snapshot as a person reads it: pretty JSON with a final newline.
    pub fn to_pretty_json(&self) -> String {
        // A Value of strings, numbers and maps always serialises.
        let mut text = serde_json::to_string_pretty(&self.to_value()).unwrap_or_default();
        text.push('\n');
        text
    }
}

impl Leaf {
    /// A text leaf served with the path's usual content type.
    pub fn text(text: impl Into<String>) -> Leaf {
        Leaf {
            value: LeafValue::Text(text.into()),
            content_type: None,
        }
    }

    /// A leaf from the bytes a service answered: text if they are UTF-8, else bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Leaf {
        let value = match String::from_utf8(bytes) {
            Ok(text) => LeafValue::Text(text),
            Err(not_text) => LeafValue::Bytes(not_text.into_bytes()),
        };
        Leaf {
            value,
            content_type: None,
        }
    }

    /// A path whose value is never recorded.
    pub fn redacted(why: Redaction) -> Leaf {
        Leaf {
            value: LeafValue::Redacted(why),
            content_type: None,
        }
    }

    /// The bytes it serves; `None` when redacted.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.value {
            LeafValue::Text(text) => Some(text.as_bytes()),
            LeafValue::Bytes(bytes) => Some(bytes),
            LeafValue::Redacted(_) => None,
        }
    }

    fn to_value(&self) -> Value {
        let mut fields = Map::new();
        match &self.value {
            LeafValue::Text(text) if self.content_type.is_none() => return json!(text),
            LeafValue::Text(text) => fields.insert("text".into(), json!(text)),
            LeafValue::Bytes(bytes) => fields.insert(
                "base64".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ),
            LeafValue::Redacted(why) => fields.insert("redacted".into(), json!(why.as_str())),
        };
        if let Some(content_type) = &self.content_type {
            fields.insert("content_type".into(), json!(content_type));
        }
        Value::Object(fields)
    }
}

/// Checks an EC2 path (a leaf's, or a listing's without its final `/`) against the bounds and
/// the tree's shape; the empty path is the version root.
pub fn check_ec2_path(path: &str) -> Result<(), String> {
    if path.len() > BOUNDS.path_bytes {
        return Err(format!(
            "is longer than {} bytes, the most a snapshot path may be",
            BOUNDS.path_bytes
        ));
    }
    if path.is_empty() {
        return Ok(());
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() > BOUNDS.depth {
        return Err(format!(
            "is deeper than {} segments, the most a snapshot path may be",
            BOUNDS.depth
        ));
    }
    for segment in &segments {
        if segment.is_empty() || *segment == "." || *segment == ".." {
            return Err(
                "must be relative to the version root (`meta-data/…`), without empty, `.` or `..` segments"
                    .into(),
            );
        }
        if segment
            .bytes()
            .any(|b| b.is_ascii_control() || b == b'?' || b == b'#' || b == b' ')
        {
            return Err("has a space, control character, `?` or `#` in it".into());
        }
    }
    if !matches!(segments[0], "meta-data" | "dynamic" | "user-data") {
        return Err("must start with meta-data/, dynamic/ or be user-data".into());
    }
    Ok(())
}

fn parse_ec2(value: &Value, budget: &mut Budget) -> Result<Ec2Tree, SchemaError> {
    let fields = object(value, "$.ec2")?;
    allow_keys(fields, "$.ec2", &["imdsv2", "leaves", "listings"])?;
    let mut tree = Ec2Tree {
        imdsv2: match fields.get("imdsv2") {
            None => true,
            Some(flag) => flag
                .as_bool()
                .ok_or_else(|| error("$.ec2.imdsv2", "must be true or false"))?,
        },
        ..Ec2Tree::default()
    };
    if let Some(leaves) = fields.get("leaves") {
        for (path, leaf) in object(leaves, "$.ec2.leaves")? {
            let here = key_path("$.ec2.leaves", path);
            check_ec2_path(path).map_err(|problem| error(&here, problem))?;
            let leaf = parse_leaf(leaf, &here)?;
            budget.count_path(&here)?;
            budget.bytes(leaf.bytes().map_or(0, <[u8]>::len), &here)?;
            tree.leaves.insert(path.clone(), leaf);
        }
    }
    if let Some(listings) = fields.get("listings") {
        for (path, listing) in object(listings, "$.ec2.listings")? {
            let here = key_path("$.ec2.listings", path);
            let directory = if path.is_empty() {
                ""
            } else {
                path.strip_suffix('/').ok_or_else(|| {
                    error(
                        &here,
                        "a listing's path ends in `/` (`\"\"` is the version root)",
                    )
                })?
            };
            check_ec2_path(directory).map_err(|problem| error(&here, problem))?;
            if tree.leaves.contains_key(directory) {
                return Err(error(
                    &here,
                    "is a leaf too; a path is a leaf or a directory",
                ));
            }
            let listing = listing
                .as_str()
                .ok_or_else(|| error(&here, "must be a string, one entry per line"))?;
            budget.count_path(&here)?;
            budget.bytes(listing.len(), &here)?;
            tree.listings.insert(path.clone(), listing.to_owned());
        }
    }
    // A leaf inside another leaf would make a path both a value and a directory.
    for path in tree.leaves.keys() {
        let mut parent = path.as_str();
        while let Some((up, _)) = parent.rsplit_once('/') {
            if tree.leaves.contains_key(up) {
                return Err(error(
                    key_path("$.ec2.leaves", path),
                    format!("is inside {up:?}, which is a leaf; a path is a leaf or a directory"),
                ));
            }
            parent = up;
        }
    }
    Ok(tree)
}

fn parse_leaf(value: &Value, here: &str) -> Result<Leaf, SchemaError> {
    let fields = match value {
        Value::String(text) => return Ok(Leaf::text(text.clone())),
        Value::Object(fields) => fields,
        _ => {
            return Err(error(
                here,
                "must be a string or an object with one of \"text\", \"base64\" or \"redacted\"",
            ));
        }
    };
    allow_keys(
        fields,
        here,
        &["text", "base64", "redacted", "content_type"],
    )?;
    let content_type = optional_string(fields, here, "content_type")?;
    if let Some(content_type) = &content_type
        && (content_type.len() > 256 || http::HeaderValue::from_str(content_type).is_err())
    {
        return Err(error(
            key_path(here, "content_type"),
            "must be a header value of at most 256 printable characters",
        ));
    }
    let kinds: Vec<&str> = ["text", "base64", "redacted"]
        .into_iter()
        .filter(|kind| fields.contains_key(*kind))
        .collect();
    let value = match kinds.as_slice() {
        ["text"] => LeafValue::Text(optional_string(fields, here, "text")?.unwrap_or_default()),
        ["base64"] => {
            let encoded = optional_string(fields, here, "base64")?.unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|e| error(key_path(here, "base64"), format!("is not base64: {e}")))?;
            LeafValue::Bytes(bytes)
        }
        ["redacted"] => {
            let word = optional_string(fields, here, "redacted")?.unwrap_or_default();
            LeafValue::Redacted(Redaction::parse(&word).ok_or_else(|| {
                error(
                    key_path(here, "redacted"),
                    "must be \"credentials\", \"signature\" or \"token\"",
                )
            })?)
        }
        _ => {
            return Err(error(
                here,
                "must have exactly one of \"text\", \"base64\" or \"redacted\"",
            ));
        }
    };
    Ok(Leaf {
        value,
        content_type,
    })
}

/// Counts paths and bytes against [`BOUNDS`] while parsing.
#[derive(Default)]
struct Budget {
    paths: usize,
    bytes: usize,
}

impl Budget {
    fn count_path(&mut self, here: &str) -> Result<(), SchemaError> {
        self.paths += 1;
        if self.paths > BOUNDS.paths {
            return Err(error(
                here,
                format!(
                    "is beyond {} EC2 paths, the most a snapshot holds",
                    BOUNDS.paths
                ),
            ));
        }
        Ok(())
    }

    fn bytes(&mut self, len: usize, here: &str) -> Result<(), SchemaError> {
        if len > BOUNDS.leaf_bytes {
            return Err(error(
                here,
                format!(
                    "holds {len} bytes, more than {}, the most one value may",
                    BOUNDS.leaf_bytes
                ),
            ));
        }
        self.bytes += len;
        if self.bytes > BOUNDS.total_bytes {
            return Err(error(
                here,
                format!(
                    "takes the snapshot beyond {} bytes of values, the most it may hold",
                    BOUNDS.total_bytes
                ),
            ));
        }
        Ok(())
    }

    fn document(&mut self, document: &Value, here: &str) -> Result<(), SchemaError> {
        // Serialising a Value cannot fail; its length is what serving it costs.
        let len = serde_json::to_vec(document).map_or(0, |bytes| bytes.len());
        self.bytes(len, here)
    }
}

fn object<'a>(value: &'a Value, here: &str) -> Result<&'a Map<String, Value>, SchemaError> {
    value
        .as_object()
        .ok_or_else(|| error(here, "must be an object"))
}

fn optional_string(
    fields: &Map<String, Value>,
    parent: &str,
    key: &str,
) -> Result<Option<String>, SchemaError> {
    match fields.get(key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(error(key_path(parent, key), "must be a string")),
    }
}

fn allow_keys(
    fields: &Map<String, Value>,
    parent: &str,
    known: &[&str],
) -> Result<(), SchemaError> {
    match fields.keys().find(|key| !known.contains(&key.as_str())) {
        None => Ok(()),
        Some(unknown) => Err(error(
            key_path(parent, unknown),
            format!("is not a snapshot key; known here: {}", known.join(", ")),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Snapshot, SchemaError> {
        Snapshot::parse(text.as_bytes())
    }

    fn minimal_with(ec2: &str) -> String {
        format!(r#"{{"imds_tun_snapshot": 1, "ec2": {ec2}}}"#)
    }

    #[test]
    fn a_written_snapshot_reads_back_the_same() {
        let mut ec2 = Ec2Tree {
            imdsv2: true,
            ..Ec2Tree::default()
        };
        ec2.leaves
            .insert("meta-data/instance-id".into(), Leaf::text("i-0123"));
        ec2.leaves
            .insert("user-data".into(), Leaf::from_bytes(vec![0x1f, 0x8b, 0xff]));
        ec2.leaves.insert(
            "meta-data/iam/security-credentials/app".into(),
            Leaf::redacted(Redaction::Credentials),
        );
        ec2.leaves.insert(
            "dynamic/odd".into(),
            Leaf {
                value: LeafValue::Text("{}".into()),
                content_type: Some("application/json".into()),
            },
        );
        ec2.listings
            .insert("meta-data/public-keys/".into(), "0=my-key".into());
        let snapshot = Snapshot {
            recorded_at: "2026-12-06T16:40:00Z".into(),
            source: "http://169.254.169.254".into(),
            partial: true,
            errors: vec!["stopped".into()],
            ec2: Some(ec2),
            gce: Some(GceDocument {
                document: json!({"instance": {"id": 1}, "project": {}}),
            }),
            azure: Some(AzureDocument {
                api_version: "2021-02-01".into(),
                instance: json!({"compute": {"name": "vm"}}),
            }),
        };
        let text = snapshot.to_pretty_json();
        assert_eq!(parse(&text), Ok(snapshot));
        assert!(text.contains(r#""base64": "H4v/""#), "{text}");
    }

    #[test]
    fn errors_name_the_json_path_of_the_value() {
        let cases = [
            ("[]", "$", "must be an object"),
            ("{}", "$", "no \"imds_tun_snapshot\" key"),
            (
                r#"{"imds_tun_snapshot": 2}"#,
                "$.imds_tun_snapshot",
                "schema version 2",
            ),
            (r#"{"imds_tun_snapshot": 1}"#, "$", "holds no cloud"),
            (
                r#"{"imds_tun_snapshot": 1, "extra": 1}"#,
                "$.extra",
                "not a snapshot key",
            ),
            (
                &minimal_with(r#"{"leaves": {"user-data": 5}}"#),
                "$.ec2.leaves[\"user-data\"]",
                "must be a string or an object",
            ),
            (
                &minimal_with(r#"{"leaves": {"/meta-data/x": "1"}}"#),
                "$.ec2.leaves[\"/meta-data/x\"]",
                "relative to the version root",
            ),
            (
                &minimal_with(r#"{"leaves": {"meta-data/../x": "1"}}"#),
                "$.ec2.leaves[\"meta-data/../x\"]",
                "`..`",
            ),
            (
                &minimal_with(r#"{"leaves": {"latest/x": "1"}}"#),
                "$.ec2.leaves[\"latest/x\"]",
                "must start with meta-data/",
            ),
            (
                &minimal_with(r#"{"leaves": {"user-data": {"base64": "!!"}}}"#),
                "$.ec2.leaves[\"user-data\"].base64",
                "is not base64",
            ),
            (
                &minimal_with(r#"{"leaves": {"user-data": {"text": "a", "base64": ""}}}"#),
                "$.ec2.leaves[\"user-data\"]",
                "exactly one of",
            ),
            (
                &minimal_with(r#"{"leaves": {"meta-data/a": {"redacted": "why"}}}"#),
                "$.ec2.leaves[\"meta-data/a\"].redacted",
                "must be \"credentials\"",
            ),
            (
                &minimal_with(r#"{"leaves": {"meta-data/a": "1", "meta-data/a/b": "2"}}"#),
                "$.ec2.leaves[\"meta-data/a/b\"]",
                "which is a leaf",
            ),
            (
                &minimal_with(r#"{"listings": {"meta-data": "a"}}"#),
                "$.ec2.listings[\"meta-data\"]",
                "ends in `/`",
            ),
            (
                r#"{"imds_tun_snapshot": 1, "gce": {"document": {"instance": {}}}}"#,
                "$.gce.document",
                "no \"project\" object",
            ),
            (
                r#"{"imds_tun_snapshot": 1, "azure": {"api_version": "x", "instance": {}}}"#,
                "$.azure.instance",
                "no \"compute\" object",
            ),
        ];
        for (text, path, problem) in cases {
            let error = parse(text).expect_err(text);
            assert_eq!(error.path, path, "{text}: {error}");
            assert!(error.problem.contains(problem), "{text}: {error}");
        }
    }

    #[test]
    fn a_derived_listing_names_immediate_children_and_sub_directories() {
        let mut ec2 = Ec2Tree::default();
        for path in [
            "meta-data/instance-id",
            "meta-data/placement/region",
            "meta-data/placement/availability-zone",
            "meta-data/public-keys/0/openssh-key",
            "meta-data-x/odd",
            "user-data",
        ] {
            ec2.leaves.insert(path.into(), Leaf::text("v"));
        }
        assert_eq!(
            ec2.derived_listing("meta-data"),
            "instance-id\nplacement/\npublic-keys/"
        );
        assert_eq!(
            ec2.derived_listing("meta-data/placement"),
            "availability-zone\nregion"
        );
        assert_eq!(
            ec2.derived_listing(""),
            "meta-data-x/\nmeta-data/\nuser-data"
        );
        assert_eq!(ec2.derived_listing("dynamic"), "");
    }

    #[test]
    fn a_file_that_is_not_json_says_where() {
        let error = parse("{\n  \"imds_tun_snapshot\": 1,\n  oops").expect_err("not JSON");
        assert_eq!(error.path, "$");
        assert!(error.problem.contains("line 3"), "{error}");
    }

    #[test]
    fn bounds_are_kept_when_reading() {
        let deep = vec!["d"; BOUNDS.depth + 1].join("/");
        let error = parse(&minimal_with(&format!(
            r#"{{"leaves": {{"meta-data/{deep}": "1"}}}}"#
        )))
        .expect_err("too deep");
        assert!(error.problem.contains("deeper than 16"), "{error}");

        let big = "x".repeat(BOUNDS.leaf_bytes + 1);
        let error = parse(&minimal_with(&format!(
            r#"{{"leaves": {{"meta-data/big": "{big}"}}}}"#
        )))
        .expect_err("too big");
        assert!(error.problem.contains("the most one value may"), "{error}");

        let many: Vec<String> = (0..=BOUNDS.paths)
            .map(|i| format!(r#""meta-data/p{i}": "1""#))
            .collect();
        let error = parse(&minimal_with(&format!(
            r#"{{"leaves": {{{}}}}}"#,
            many.join(",")
        )))
        .expect_err("too many");
        assert!(error.problem.contains("EC2 paths"), "{error}");
    }
}
