//! What a GCE instance is told about its own end: its preemption (`instance/preempted`) and
//! host maintenance (`instance/maintenance-event`), and the news of a change, which a
//! `?wait_for_change=true` request waits for.
//!
//! The state is plain data ([`GceEvents`]) behind a [`Board`], a tokio watch channel: a change
//! replaces the whole value and wakes every waiting request at once, each of which then answers
//! the new value, whose body (and so its `ETag`) differs. Changed only by `imds-tun ctl` and
//! scenarios. Not here: the rest of the document and how a path reads it
//! ([`super::document`]); who may change it (`control`).
//!
//! Values, from Google's "About VM metadata" and "Detect if a VM is preempted": `preempted` is
//! `TRUE` or `FALSE`; `maintenance-event` is `NONE`, `MIGRATE_ON_HOST_MAINTENANCE` or
//! `TERMINATE_ON_HOST_MAINTENANCE`. A VM that can be preempted is a preemptible (Spot) VM, whose
//! scheduling GCE fixes: `preemptible` `TRUE`, `automaticRestart` `FALSE`, `onHostMaintenance`
//! `TERMINATE`; a preempted instance shows them too.

use serde_json::{Map, Value, json};
use tokio::sync::watch;

/// `instance/maintenance-event`'s values, as GCE writes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MaintenanceEvent {
    /// `NONE`: no maintenance pending.
    #[default]
    None,
    /// `MIGRATE_ON_HOST_MAINTENANCE`: the VM is about to be live-migrated.
    MigrateOnHostMaintenance,
    /// `TERMINATE_ON_HOST_MAINTENANCE`: the VM is about to be stopped for the maintenance.
    TerminateOnHostMaintenance,
}

impl MaintenanceEvent {
    /// The value as `instance/maintenance-event` serves it.
    pub fn as_str(self) -> &'static str {
        match self {
            MaintenanceEvent::None => "NONE",
            MaintenanceEvent::MigrateOnHostMaintenance => "MIGRATE_ON_HOST_MAINTENANCE",
            MaintenanceEvent::TerminateOnHostMaintenance => "TERMINATE_ON_HOST_MAINTENANCE",
        }
    }
}

/// Everything the instance is currently told; the default is a running standard VM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GceEvents {
    /// `instance/preempted` is `TRUE`.
    pub preempted: bool,
    /// `instance/maintenance-event`.
    pub maintenance: MaintenanceEvent,
}

impl GceEvents {
    /// Writes these events into a document built by [`super::document::build`] (which holds
    /// the defaults: `FALSE`, `NONE`, a standard VM's scheduling).
    pub fn apply_to(&self, document: &mut Value) {
        let Some(instance) = document.get_mut("instance").and_then(Value::as_object_mut) else {
            return;
        };
        instance.insert("maintenanceEvent".into(), json!(self.maintenance.as_str()));
        if !self.preempted {
            return;
        }
        instance.insert("preempted".into(), json!("TRUE"));
        let mut spot = Map::new();
        spot.insert("automaticRestart".into(), json!("FALSE"));
        spot.insert("onHostMaintenance".into(), json!("TERMINATE"));
        spot.insert("preemptible".into(), json!("TRUE"));
        match instance
            .get_mut("scheduling")
            .and_then(Value::as_object_mut)
        {
            Some(scheduling) => scheduling.extend(spot),
            None => {
                instance.insert("scheduling".into(), Value::Object(spot));
            }
        }
    }

    /// What `imds-tun ctl status` shows under `gce`.
    pub fn status(&self) -> Value {
        json!({
            "preempted": if self.preempted { "TRUE" } else { "FALSE" },
            "maintenance-event": self.maintenance.as_str(),
        })
    }
}

/// The current [`GceEvents`], shared by the GCE service (one snapshot per answer, and a
/// subscription for each `wait_for_change`) and whoever changes them (`imds-tun ctl`, a
/// scenario).
#[derive(Debug)]
pub struct Board {
    current: watch::Sender<GceEvents>,
}

impl Default for Board {
    fn default() -> Board {
        Board {
            current: watch::Sender::new(GceEvents::default()),
        }
    }
}

impl Board {
    /// The current state, whole.
    pub fn snapshot(&self) -> GceEvents {
        *self.current.borrow()
    }

    /// Applies `change` and publishes the result, waking the waiting requests only when
    /// something changed; returns the state now.
    pub fn update(&self, change: impl FnOnce(&mut GceEvents)) -> GceEvents {
        self.current.send_if_modified(|events| {
            let before = *events;
            change(events);
            *events != before
        });
        self.snapshot()
    }

    /// A receiver that sees every change from now on (the current state counts as seen).
    pub fn subscribe(&self) -> watch::Receiver<GceEvents> {
        self.current.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clouds::gce::GceInstance;
    use crate::clouds::gce::document::build;

    #[test]
    fn the_defaults_are_the_documents_own_and_a_preemption_makes_a_spot_vm() {
        let base = build(&GceInstance::example());
        let mut unchanged = base.clone();
        GceEvents::default().apply_to(&mut unchanged);
        assert_eq!(unchanged, base, "the document holds the defaults");
        let mut preempted = base.clone();
        GceEvents {
            preempted: true,
            maintenance: MaintenanceEvent::TerminateOnHostMaintenance,
        }
        .apply_to(&mut preempted);
        let instance = &preempted["instance"];
        assert_eq!(instance["preempted"], "TRUE");
        assert_eq!(
            instance["maintenanceEvent"],
            "TERMINATE_ON_HOST_MAINTENANCE"
        );
        assert_eq!(instance["scheduling"]["preemptible"], "TRUE");
        assert_eq!(instance["scheduling"]["automaticRestart"], "FALSE");
        assert_eq!(instance["scheduling"]["onHostMaintenance"], "TERMINATE");
    }

    #[test]
    fn maintenance_events_read_as_gce_writes_them() {
        let event: MaintenanceEvent =
            serde_json::from_str("\"MIGRATE_ON_HOST_MAINTENANCE\"").expect("GCE's name");
        assert_eq!(event, MaintenanceEvent::MigrateOnHostMaintenance);
        assert_eq!(event.as_str(), "MIGRATE_ON_HOST_MAINTENANCE");
        assert!(serde_json::from_str::<MaintenanceEvent>("\"MIGRATE\"").is_err());
    }

    #[tokio::test]
    async fn a_change_wakes_a_subscriber_and_no_change_does_not() {
        let board = Board::default();
        let mut changes = board.subscribe();
        board.update(|events| events.maintenance = MaintenanceEvent::None);
        assert!(
            !changes.has_changed().expect("the board lives"),
            "the same value is no news"
        );
        board.update(|events| events.preempted = true);
        changes.changed().await.expect("news of the change");
        assert!(changes.borrow_and_update().preempted);
        assert!(board.snapshot().preempted);
    }
}
