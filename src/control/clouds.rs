//! What `imds-tun ctl` does to the events of the other clouds: GCE's preemption and host
//! maintenance (`gce-preempt`, `gce-maintenance`) and Azure's scheduled events
//! (`azure-event`), each on the board its cloud owns; and their part of `status` and `clear`.
//!
//! Not here: the EC2 interruptions (`super::protocol::apply`), the socket and who may use it
//! (`server`), how each cloud serves its events (`crate::clouds::gce::events`,
//! `crate::clouds::azure::events`).

use std::sync::Arc;

use serde_json::Value;
use time::OffsetDateTime;

use super::protocol::Request;
use crate::clouds::azure::events::{self as azure, ScheduledEvent};
use crate::clouds::gce::events as gce;

/// The boards of the clouds beside EC2 that a run serves: GCE's with `--gcp-project`,
/// Azure's always (both `None` when forwarding to an upstream).
#[derive(Debug, Clone, Default)]
pub struct CloudBoards {
    /// GCE's preemption and host maintenance.
    pub gce: Option<Arc<gce::Board>>,
    /// Azure's scheduled events.
    pub azure: Option<Arc<azure::Board>>,
}

impl CloudBoards {
    /// Carries out a GCE or Azure request at `now` (`random` makes an Azure event's id); `None`
    /// for any other request, which is not theirs.
    pub fn apply(
        &self,
        request: &Request,
        now: OffsetDateTime,
        random: u128,
    ) -> Option<Result<(), String>> {
        let gce_board = || {
            self.gce.as_ref().ok_or_else(|| {
                "this imds-tun serves no GCE metadata: start it with --gcp-project ID".to_owned()
            })
        };
        Some(match request {
            Request::GcePreempt => gce_board().map(|board| {
                board.update(|events| events.preempted = true);
            }),
            Request::GceMaintenance { event } => gce_board().map(|board| {
                board.update(|events| events.maintenance = *event);
            }),
            Request::AzureEvent {
                r#type,
                not_before,
                duration,
            } => {
                let Some(board) = &self.azure else {
                    return Some(Err("this imds-tun serves no Azure metadata".to_owned()));
                };
                let notice = not_before.unwrap_or_else(|| r#type.notice_seconds());
                let event = ScheduledEvent {
                    id: azure::event_id(random),
                    kind: *r#type,
                    not_before: now
                        + time::Duration::seconds(i64::try_from(notice).unwrap_or(i64::MAX / 2)),
                    duration: duration.unwrap_or_else(|| r#type.duration_seconds()),
                    started: None,
                };
                board
                    .update(|events| events.schedule(event, now))
                    .map_err(|refused| refused.to_string())
            }
            _ => return None,
        })
    }

    /// Ends every event (`ctl clear`): GCE back to `FALSE` and `NONE`, Azure's list empty.
    pub fn clear(&self, now: OffsetDateTime) {
        if let Some(board) = &self.gce {
            board.update(|events| *events = gce::GceEvents::default());
        }
        if let Some(board) = &self.azure {
            let _ = board.update(|events| {
                events.clear(now);
                Ok(())
            });
        }
    }

    /// Adds `gce` and `azure` to a `status` (each `null` when that cloud is not served).
    pub fn add_to(&self, status: &mut Value, now: OffsetDateTime) {
        let Some(object) = status.as_object_mut() else {
            return;
        };
        object.insert(
            "gce".into(),
            self.gce
                .as_ref()
                .map_or(Value::Null, |board| board.snapshot().status()),
        );
        object.insert(
            "azure".into(),
            self.azure
                .as_ref()
                .map_or(Value::Null, |board| board.snapshot().status(now)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-01 12:00:00 UTC);

    fn boards() -> CloudBoards {
        CloudBoards {
            gce: Some(Arc::default()),
            azure: Some(Arc::new(azure::Board::new("vm"))),
        }
    }

    #[test]
    fn commands_change_their_clouds_board_and_clear_ends_them() {
        let boards = boards();
        assert_eq!(boards.apply(&Request::Clear, NOW, 0), None, "not theirs");
        boards
            .apply(&Request::GcePreempt, NOW, 0)
            .expect("a GCE request")
            .expect("applied");
        let request: Request =
            serde_json::from_str(r#"{"command": "azure-event", "type": "Preempt"}"#)
                .expect("as a scenario writes it");
        boards
            .apply(&request, NOW, 7)
            .expect("an Azure request")
            .expect("applied");
        let mut status = serde_json::json!({});
        boards.add_to(&mut status, NOW);
        assert_eq!(status["gce"]["preempted"], "TRUE");
        let event = &status["azure"]["Events"][0];
        assert_eq!(event["EventType"], "Preempt");
        assert_eq!(event["DurationInSeconds"], -1);
        assert_eq!(
            event["NotBefore"], "Tue, 01 Dec 2026 12:00:30 GMT",
            "Azure's 30 s notice"
        );
        assert_eq!(status["azure"]["DocumentIncarnation"], 1);
        boards.clear(NOW);
        let mut cleared = serde_json::json!({});
        boards.add_to(&mut cleared, NOW);
        assert_eq!(cleared["gce"]["preempted"], "FALSE");
        assert_eq!(cleared["gce"]["maintenance-event"], "NONE");
        assert_eq!(cleared["azure"]["Events"], serde_json::json!([]));
        assert_eq!(
            cleared["azure"]["DocumentIncarnation"], 2,
            "clearing is a change"
        );
    }

    #[test]
    fn a_gce_command_without_gce_is_refused() {
        let boards = CloudBoards::default();
        let refused = boards
            .apply(&Request::GcePreempt, NOW, 0)
            .expect("a GCE request");
        assert!(
            refused.is_err_and(|why| why.contains("--gcp-project")),
            "says how to serve GCE"
        );
    }
}
