//! Interruptions an instance is told about: spot interruption notices, rebalance
//! recommendations, scheduled maintenance events and the Auto Scaling target lifecycle state.
//!
//! The state is plain data ([`Interruptions`]) changed by whole-value replacement (`imds-tun
//! ctl`, a scenario, start-up flags) and read as one snapshot per request, so no answer mixes
//! two states. What a path shows is a pure function of a snapshot and the time
//! ([`Interruptions::lookup`]): a maintenance event moves from `scheduled` to `history`
//! ("completed") once its `NotAfter` has passed, a rebalance recommendation appears at its notice
//! time, without anyone touching the state.
//!
//! Formats, from EC2's documentation ("Instance metadata categories", "Spot Instance
//! interruption notices", "Scheduled events", "Rebalance recommendations", "Auto Scaling
//! lifecycle"): `spot/instance-action` is `{"action": ..., "time": "2017-09-18T08:22:00Z"}`;
//! `spot/termination-time` the same time as bare text, present only for `terminate`;
//! `events/recommendations/rebalance` is `{"noticeTime": "..."}`; `events/maintenance/scheduled`
//! and `history` are JSON arrays of events whose times read `21 Jan 2019 09:00:43 GMT`;
//! `autoscaling/target-lifecycle-state` is bare text.

use bytes::Bytes;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::format_description;

use super::responses::iso8601_utc_seconds;
use super::tree::Node;

/// What a spot interruption will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpotAction {
    /// `terminate`: the only action that also serves `spot/termination-time`.
    Terminate,
    /// `stop`.
    Stop,
    /// `hibernate`.
    Hibernate,
}

impl SpotAction {
    /// The name `spot/instance-action`'s `action` carries (`terminate`, `stop`, `hibernate`).
    pub fn as_str(self) -> &'static str {
        match self {
            SpotAction::Terminate => "terminate",
            SpotAction::Stop => "stop",
            SpotAction::Hibernate => "hibernate",
        }
    }
}

/// The kinds of scheduled event EC2 announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventCode {
    /// `system-reboot`: a reboot of the host; the owner may reschedule it.
    SystemReboot,
    /// `system-maintenance`: network or power maintenance that may briefly affect the instance.
    SystemMaintenance,
    /// `instance-reboot`: a reboot of the instance; the owner may reschedule it.
    InstanceReboot,
    /// `instance-retirement`: the instance will be stopped or terminated.
    InstanceRetirement,
    /// `instance-stop`: the instance is stopped, and starts elsewhere when started again.
    InstanceStop,
}

impl EventCode {
    /// The event's `Code` as EC2 writes it (`system-reboot`, `instance-stop`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventCode::SystemReboot => "system-reboot",
            EventCode::SystemMaintenance => "system-maintenance",
            EventCode::InstanceReboot => "instance-reboot",
            EventCode::InstanceRetirement => "instance-retirement",
            EventCode::InstanceStop => "instance-stop",
        }
    }

    fn description(self) -> &'static str {
        match self {
            EventCode::SystemReboot | EventCode::InstanceReboot => "scheduled reboot",
            EventCode::SystemMaintenance => "scheduled maintenance",
            EventCode::InstanceRetirement => "scheduled retirement",
            EventCode::InstanceStop => "scheduled stop",
        }
    }

    /// Reboots can be rescheduled by the owner, up to a deadline a week later.
    fn reschedulable(self) -> bool {
        matches!(self, EventCode::SystemReboot | EventCode::InstanceReboot)
    }
}

/// The Auto Scaling target lifecycle states an instance can be told.
pub const LIFECYCLE_STATES: &[&str] = &[
    "InService",
    "Terminated",
    "Warmed:Hibernated",
    "Warmed:Running",
    "Warmed:Stopped",
    "Warmed:Terminated",
];

/// Why an event ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventEnd {
    /// Cancelled (`imds-tun ctl cancel`): `State` `canceled`, the description `[Canceled] ...`.
    Canceled,
    /// Completed (`imds-tun ctl complete`, or its `NotAfter` passed): `State` `completed`, the
    /// description `[Completed] ...`.
    Completed,
}

/// One scheduled maintenance event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceEvent {
    /// `EventId`: `instance-event-` and 17 hex digits ([`event_id`]).
    pub id: String,
    /// `Code`, and from it `Description` (and `NotBeforeDeadline` for reboots).
    pub code: EventCode,
    /// `NotBefore`: the start of the event's window.
    pub not_before: OffsetDateTime,
    /// `NotAfter`: the end of its window; once passed, the event moves to `history` as
    /// completed.
    pub not_after: OffsetDateTime,
    /// Set when the event was cancelled (or completed by command) before its `NotAfter`.
    pub ended: Option<EventEnd>,
}

impl MaintenanceEvent {
    /// Where the event stands at `now`: `None` while scheduled.
    fn end_at(&self, now: OffsetDateTime) -> Option<EventEnd> {
        self.ended
            .or((now >= self.not_after).then_some(EventEnd::Completed))
    }

    fn to_json(&self, now: OffsetDateTime) -> Value {
        let (state, description) = match self.end_at(now) {
            None => ("active", self.code.description().to_owned()),
            Some(EventEnd::Canceled) => (
                "canceled",
                format!("[Canceled] {}", self.code.description()),
            ),
            Some(EventEnd::Completed) => (
                "completed",
                format!("[Completed] {}", self.code.description()),
            ),
        };
        let mut event = json!({
            "NotBefore": event_time(self.not_before),
            "Code": self.code.as_str(),
            "Description": description,
            "EventId": self.id,
            "NotAfter": event_time(self.not_after),
            "State": state,
        });
        if self.code.reschedulable() {
            event["NotBeforeDeadline"] =
                json!(event_time(self.not_before + time::Duration::days(7)));
        }
        event
    }
}

/// A spot interruption: what, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpotNotice {
    /// `spot/instance-action`'s `action`.
    pub action: SpotAction,
    /// When the action happens: `instance-action`'s `time`, and `spot/termination-time`.
    pub time: OffsetDateTime,
}

/// Everything the instance is currently told. The default is an on-demand instance with
/// nothing pending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interruptions {
    /// Set once the instance is a spot instance; its notice, if one was given.
    pub spot: Option<Option<SpotNotice>>,
    /// When a rebalance recommendation appears (and the time it carries).
    pub rebalance: Option<OffsetDateTime>,
    /// Events in the order they were announced.
    pub events: Vec<MaintenanceEvent>,
    /// `autoscaling/target-lifecycle-state` (one of [`LIFECYCLE_STATES`]); `None` leaves
    /// `autoscaling/` out of the tree, as on an instance outside an Auto Scaling group.
    pub lifecycle: Option<String>,
}

impl Interruptions {
    /// The answer for `path` (under a version root, e.g. `meta-data/spot/instance-action`) at
    /// `now`, when this module owns it; `static_listing` is the tree's own `meta-data/`
    /// listing, which gains `autoscaling/` and `spot/` when they exist.
    pub fn lookup(&self, path: &str, now: OffsetDateTime, static_listing: &[u8]) -> Option<Node> {
        let text = |value: String| Some(Node::Leaf(super::tree::Leaf::Text(Bytes::from(value))));
        let listing = |entries: &[&str]| Some(Node::Directory(Bytes::from(entries.join("\n"))));
        let rebalance = self.rebalance.filter(|notice| *notice <= now);
        let (scheduled, history): (Vec<&MaintenanceEvent>, Vec<&MaintenanceEvent>) = self
            .events
            .iter()
            .partition(|event| event.end_at(now).is_none());
        // Pretty, as EC2's documented answer; an empty list is `[]`.
        let events_json = |events: &[&MaintenanceEvent]| {
            let list = Value::Array(events.iter().map(|event| event.to_json(now)).collect());
            serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into())
        };
        match path {
            "meta-data" => {
                let mut entries: Vec<String> = String::from_utf8_lossy(static_listing)
                    .lines()
                    .map(str::to_owned)
                    .collect();
                entries.push("events/".into());
                if self.lifecycle.is_some() {
                    entries.push("autoscaling/".into());
                }
                if self.spot.is_some() {
                    entries.push("spot/".into());
                }
                entries.sort();
                entries.dedup();
                Some(Node::Directory(Bytes::from(entries.join("\n"))))
            }
            "meta-data/instance-life-cycle" => text(
                if self.spot.is_some() {
                    "spot"
                } else {
                    "on-demand"
                }
                .into(),
            ),
            "meta-data/spot" => match self.spot? {
                Some(notice) if notice.action == SpotAction::Terminate => {
                    listing(&["instance-action", "termination-time"])
                }
                Some(_) => listing(&["instance-action"]),
                None => listing(&[]),
            },
            "meta-data/spot/instance-action" => {
                let notice = self.spot??;
                text(
                    json!({
                        "action": notice.action.as_str(),
                        "time": iso8601_utc_seconds(notice.time),
                    })
                    .to_string(),
                )
            }
            "meta-data/spot/termination-time" => {
                let notice = self.spot??;
                (notice.action == SpotAction::Terminate)
                    .then(|| text(iso8601_utc_seconds(notice.time)))?
            }
            "meta-data/events" => {
                if rebalance.is_some() {
                    listing(&["maintenance/", "recommendations/"])
                } else {
                    listing(&["maintenance/"])
                }
            }
            "meta-data/events/maintenance" => listing(&["history", "scheduled"]),
            "meta-data/events/maintenance/scheduled" => text(events_json(&scheduled)),
            "meta-data/events/maintenance/history" => text(events_json(&history)),
            "meta-data/events/recommendations" => {
                rebalance.map(|_| ()).and_then(|()| listing(&["rebalance"]))
            }
            "meta-data/events/recommendations/rebalance" => {
                let notice = rebalance?;
                text(json!({ "noticeTime": iso8601_utc_seconds(notice) }).to_string())
            }
            "meta-data/autoscaling" => self
                .lifecycle
                .as_ref()
                .and_then(|_| listing(&["target-lifecycle-state"])),
            "meta-data/autoscaling/target-lifecycle-state" => text(self.lifecycle.clone()?),
            _ => None,
        }
    }

    /// What `imds-tun ctl status` shows: everything active at `now`, in EC2's formats.
    pub fn status(&self, now: OffsetDateTime) -> Value {
        let (scheduled, history): (Vec<&MaintenanceEvent>, Vec<&MaintenanceEvent>) = self
            .events
            .iter()
            .partition(|event| event.end_at(now).is_none());
        json!({
            "instance-life-cycle": if self.spot.is_some() { "spot" } else { "on-demand" },
            "spot": self.spot.flatten().map(|notice| json!({
                "action": notice.action.as_str(),
                "time": iso8601_utc_seconds(notice.time),
            })),
            "rebalance": self.rebalance.map(|notice| json!({
                "noticeTime": iso8601_utc_seconds(notice),
                "visible": notice <= now,
            })),
            "events": {
                "scheduled": scheduled.iter().map(|e| e.to_json(now)).collect::<Vec<_>>(),
                "history": history.iter().map(|e| e.to_json(now)).collect::<Vec<_>>(),
            },
            "target-lifecycle-state": self.lifecycle,
        })
    }
}

/// The current [`Interruptions`], shared by the metadata service (which reads one snapshot per
/// request) and whoever changes them (`imds-tun ctl`, a scenario): every change replaces the
/// whole value, so a reader sees all of one change or none of it.
#[derive(Debug, Default)]
pub struct Board {
    current: std::sync::RwLock<std::sync::Arc<Interruptions>>,
}

impl Board {
    /// A board whose first state is `initial` (`Board::default()` starts with nothing pending).
    pub fn new(initial: Interruptions) -> Board {
        Board {
            current: std::sync::RwLock::new(std::sync::Arc::new(initial)),
        }
    }

    /// The current state, whole: what one request answers from.
    pub fn snapshot(&self) -> std::sync::Arc<Interruptions> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Applies `change` to a copy and publishes it; returns what was published.
    pub fn update(&self, change: impl FnOnce(&mut Interruptions)) -> std::sync::Arc<Interruptions> {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = Interruptions::clone(&current);
        change(&mut next);
        *current = std::sync::Arc::new(next);
        current.clone()
    }
}

/// `21 Jan 2019 09:00:43 GMT`, the format of scheduled events.
fn event_time(at: OffsetDateTime) -> String {
    let format =
        format_description!("[day] [month repr:short] [year] [hour]:[minute]:[second] GMT");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

/// `instance-event-` and 17 hex digits, like EC2's event ids.
pub fn event_id(random: u128) -> String {
    format!("instance-event-{:017x}", random & ((1 << 68) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2019-01-21 08:58:00 UTC);

    fn text(node: Option<Node>) -> String {
        match node {
            Some(Node::Leaf(super::super::tree::Leaf::Text(bytes))) => {
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Some(Node::Directory(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[test]
    fn a_spot_terminate_notice_matches_ec2s_documented_example() {
        let state = Interruptions {
            spot: Some(Some(SpotNotice {
                action: SpotAction::Terminate,
                time: datetime!(2017-09-18 08:22:00 UTC),
            })),
            ..Interruptions::default()
        };
        let action: Value = serde_json::from_str(&text(state.lookup(
            "meta-data/spot/instance-action",
            NOW,
            b"",
        )))
        .expect("JSON");
        assert_eq!(
            action,
            json!({"action": "terminate", "time": "2017-09-18T08:22:00Z"})
        );
        assert_eq!(
            text(state.lookup("meta-data/spot/termination-time", NOW, b"")),
            "2017-09-18T08:22:00Z"
        );
        assert_eq!(
            text(state.lookup("meta-data/instance-life-cycle", NOW, b"")),
            "spot"
        );
        assert_eq!(
            text(state.lookup("meta-data", NOW, b"ami-id\ninstance-id")),
            "ami-id\nevents/\ninstance-id\nspot/"
        );
    }

    #[test]
    fn a_stop_notice_has_no_termination_time_and_on_demand_has_no_spot() {
        let stop = Interruptions {
            spot: Some(Some(SpotNotice {
                action: SpotAction::Stop,
                time: NOW,
            })),
            ..Interruptions::default()
        };
        assert!(
            stop.lookup("meta-data/spot/termination-time", NOW, b"")
                .is_none()
        );
        assert_eq!(
            text(stop.lookup("meta-data/spot", NOW, b"")),
            "instance-action"
        );
        let on_demand = Interruptions::default();
        assert!(on_demand.lookup("meta-data/spot", NOW, b"").is_none());
        assert!(
            on_demand
                .lookup("meta-data/spot/instance-action", NOW, b"")
                .is_none()
        );
        assert_eq!(
            text(on_demand.lookup("meta-data/instance-life-cycle", NOW, b"")),
            "on-demand"
        );
        assert_eq!(
            text(on_demand.lookup("meta-data/events/maintenance/scheduled", NOW, b"")),
            "[]"
        );
    }

    #[test]
    fn a_scheduled_event_matches_ec2s_example_and_moves_to_history_when_it_ends() {
        let state = Interruptions {
            events: vec![MaintenanceEvent {
                id: "instance-event-0d59937288b749b32".into(),
                code: EventCode::SystemReboot,
                not_before: datetime!(2019-01-21 09:00:43 UTC),
                not_after: datetime!(2019-01-21 09:17:23 UTC),
                ended: None,
            }],
            ..Interruptions::default()
        };
        let scheduled: Value = serde_json::from_str(&text(state.lookup(
            "meta-data/events/maintenance/scheduled",
            NOW,
            b"",
        )))
        .expect("JSON");
        assert_eq!(
            scheduled,
            json!([{
                "NotBefore": "21 Jan 2019 09:00:43 GMT",
                "Code": "system-reboot",
                "Description": "scheduled reboot",
                "EventId": "instance-event-0d59937288b749b32",
                "NotAfter": "21 Jan 2019 09:17:23 GMT",
                "NotBeforeDeadline": "28 Jan 2019 09:00:43 GMT",
                "State": "active"
            }])
        );
        let later = datetime!(2019-01-21 09:20:00 UTC);
        assert_eq!(
            text(state.lookup("meta-data/events/maintenance/scheduled", later, b"")),
            "[]"
        );
        let history: Value = serde_json::from_str(&text(state.lookup(
            "meta-data/events/maintenance/history",
            later,
            b"",
        )))
        .expect("JSON");
        assert_eq!(history[0]["State"], "completed");
        assert_eq!(history[0]["Description"], "[Completed] scheduled reboot");
    }

    #[test]
    fn a_rebalance_recommendation_appears_at_its_notice_time() {
        let state = Interruptions {
            rebalance: Some(datetime!(2019-01-21 09:00:00 UTC)),
            ..Interruptions::default()
        };
        assert!(
            state
                .lookup("meta-data/events/recommendations/rebalance", NOW, b"")
                .is_none()
        );
        assert_eq!(
            text(state.lookup("meta-data/events", NOW, b"")),
            "maintenance/"
        );
        let later = datetime!(2019-01-21 09:00:00 UTC);
        let notice: Value = serde_json::from_str(&text(state.lookup(
            "meta-data/events/recommendations/rebalance",
            later,
            b"",
        )))
        .expect("JSON");
        assert_eq!(notice, json!({"noticeTime": "2019-01-21T09:00:00Z"}));
        assert_eq!(
            text(state.lookup("meta-data/events", later, b"")),
            "maintenance/\nrecommendations/"
        );
    }

    #[test]
    fn the_lifecycle_state_is_bare_text_under_autoscaling() {
        let state = Interruptions {
            lifecycle: Some("Warmed:Stopped".into()),
            ..Interruptions::default()
        };
        assert_eq!(
            text(state.lookup("meta-data/autoscaling/target-lifecycle-state", NOW, b"")),
            "Warmed:Stopped"
        );
        assert_eq!(
            text(state.lookup("meta-data", NOW, b"ami-id")),
            "ami-id\nautoscaling/\nevents/"
        );
        assert!(
            Interruptions::default()
                .lookup("meta-data/autoscaling/target-lifecycle-state", NOW, b"")
                .is_none()
        );
    }
}
