//! `--replay FILE` (config `replay`): the snapshot, read with the invoking user's rights within
//! `snapshot::FILE_BYTES`, checked against the schema (an error names the JSON path), and what
//! the defaults alone would have served in its place, which `clouds::replay`'s rule compares
//! with the run's own settings.

use std::borrow::Cow;
use std::path::PathBuf;

use super::super::ConfigError;
use super::super::defaults::{self, MachineDefaults};
use super::super::layer::Layer;
use super::super::named_file::{self, Cap, Opener};
use super::super::origin::{label, number, pick};
use super::super::validate;
use crate::clouds::replay::{self, Replay};
use crate::snapshot::{self, Snapshot};

/// A snapshot read and checked, before the defaults are resolved beside it.
pub(super) struct Recorded {
    path: PathBuf,
    snapshot: Snapshot,
}

/// The snapshot `--replay` names, if any: read, parsed, and its user-data held to
/// `--max-user-data-bytes` as `--user-data` is.
pub(super) fn read(
    file: &Layer,
    flags: &Layer,
    files: &Opener,
) -> Result<Option<Recorded>, ConfigError> {
    let Some((path, origin)) = pick(flags.replay.clone(), file.replay.clone()) else {
        return Ok(None);
    };
    let what = label(origin, "replay");
    let cap = Cap {
        bytes: snapshot::FILE_BYTES,
        advice: "a snapshot is bounded (docs/snapshot.md); record a smaller one",
    };
    let bytes = named_file::read(&path, &what, files, cap)
        .map_err(|error| ConfigError(error.to_string()))?;
    let snapshot = snapshot::load(&bytes)
        .map_err(|error| ConfigError(format!("{what} {}: {error}", path.display())))?;
    let user_data_cap = number(
        pick(flags.max_user_data_bytes, file.max_user_data_bytes),
        "max_user_data_bytes",
        1..=defaults::MAX_USER_DATA_BYTES_LIMIT,
        "bytes",
        defaults::MAX_USER_DATA_BYTES,
    )?;
    let user_data = snapshot
        .ec2
        .as_ref()
        .and_then(|ec2| ec2.leaves.get("user-data"))
        .and_then(|leaf| leaf.bytes());
    if let Some(user_data) = user_data.filter(|bytes| bytes.len() as u64 > user_data_cap) {
        return Err(ConfigError(format!(
            "{what} {}: $.ec2.leaves[\"user-data\"]: {} bytes, more than the limit of \
             {user_data_cap} bytes (EC2 accepts at most 16384; allow more with \
             --max-user-data-bytes, up to {})",
            path.display(),
            user_data.len(),
            defaults::MAX_USER_DATA_BYTES_LIMIT
        )));
    }
    if let Some(project) = replay::recorded_gce_project(&snapshot) {
        validate::gcp_project(project).map_err(|expected| {
            ConfigError(format!(
                "{what} {}: $.gce.document.project.projectId {project:?}: {expected}",
                path.display()
            ))
        })?;
    } else if snapshot.gce.is_some() {
        return Err(ConfigError(format!(
            "{what} {}: $.gce.document.project: has no \"projectId\" string",
            path.display()
        )));
    }
    Ok(Some(Recorded { path, snapshot }))
}

impl Recorded {
    /// The role name the recording shows, which the tree serves unless `--role-name` or
    /// `--role-arn` says otherwise.
    pub(super) fn role_name(&self) -> Option<String> {
        self.snapshot
            .ec2
            .as_ref()
            .and_then(replay::recorded_role_name)
    }

    /// The file layer with the recorded GCE project where neither layer names one: a snapshot
    /// with GCE answers as GCE without `--gcp-project`.
    pub(super) fn with_project<'a>(&self, file: &'a Layer, flags: &Layer) -> Cow<'a, Layer> {
        match replay::recorded_gce_project(&self.snapshot) {
            Some(project) if flags.gcp_project.is_none() && file.gcp_project.is_none() => {
                let mut file = file.clone();
                file.gcp_project = Some(project.to_owned());
                Cow::Owned(file)
            }
            _ => Cow::Borrowed(file),
        }
    }

    /// The replay: the snapshot and what the defaults alone (with the recorded role name and
    /// GCE project) describe.
    pub(super) fn resolve(
        self,
        machine: &MachineDefaults,
        files: &Opener,
    ) -> Result<Replay, ConfigError> {
        let none = Layer::default();
        let role = self
            .role_name()
            .unwrap_or_else(|| defaults::ROLE_NAME.to_owned());
        let base_instance = super::instance::resolve_instance(&none, &none, machine, role, files)?;
        let base_gce = match replay::recorded_gce_project(&self.snapshot) {
            Some(project) => {
                let recorded = Layer {
                    gcp_project: Some(project.to_owned()),
                    ..Layer::default()
                };
                super::gce::resolve_gce(&recorded, &none, machine, files)?
                    .map(|settings| settings.instance)
            }
            None => None,
        };
        let base_azure = super::azure::resolve_azure(&none, &none, machine)?.instance;
        Ok(Replay {
            path: self.path,
            snapshot: self.snapshot,
            base_instance,
            base_gce,
            base_azure,
        })
    }
}
