//! Azure Scheduled Events (`/metadata/scheduledevents`): the events a VM is told about, how
//! each moves from `Scheduled` to `Started` to gone, and the `DocumentIncarnation` that grows
//! with every change.
//!
//! The state is plain data ([`ScheduledEvents`]) behind a [`Board`], changed by whole-value
//! replacement (`imds-tun ctl azure-event`, a scenario, `ctl clear`, and a VM's own `POST` of
//! `StartRequests`) and read as one snapshot per request. What the document shows is a pure
//! function of a snapshot and the time: an event starts by itself once its `NotBefore` passes,
//! and is gone `DurationInSeconds` after it started, without anyone touching the state; the
//! incarnation counts those moves too ([`ScheduledEvents::incarnation`]). Not here: the HTTP
//! rules (`Metadata: true`, `api-version`, the body's bound), which are the service's.
//!
//! Formats, from Azure's "Scheduled Events for Linux VMs": `{"DocumentIncarnation": N,
//! "Events": [{"EventId", "EventType", "ResourceType": "VirtualMachine", "Resources": [VM],
//! "EventStatus": "Scheduled"|"Started", "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT" (empty
//! once started), "Description", "EventSource": "Platform", "DurationInSeconds": N}]}`;
//! `DurationInSeconds` is -1 when the impact's length is unknown. An event with -1 (a
//! preemption, a reboot: the VM would be gone or restarted) stays `Started` until `ctl clear`,
//! since no VM here goes away. Fields by `api-version`: `Description` from 2019-04-01,
//! `EventSource` from 2019-08-01, `DurationInSeconds` from 2020-07-01; `Terminate` events from
//! 2019-01-01.

use serde_json::{Value, json};
use time::macros::format_description;
use time::{Duration, OffsetDateTime};

/// The most events that may stand at once (scheduled or started); the next is refused until
/// some end or `ctl clear`. Azure announces a few at a time.
pub const MAX_EVENTS: usize = 16;

/// The kinds of event Azure announces (`EventType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EventType {
    /// `Freeze`: the VM pauses for a few seconds (memory-preserving maintenance).
    Freeze,
    /// `Reboot`: the VM restarts; memory is lost.
    Reboot,
    /// `Redeploy`: the VM moves to another host; temporary disks are lost.
    Redeploy,
    /// `Preempt`: the Spot VM is evicted.
    Preempt,
    /// `Terminate`: the VM (a scale set's instance) is deleted.
    Terminate,
}

impl EventType {
    /// The name `EventType` carries.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Freeze => "Freeze",
            EventType::Reboot => "Reboot",
            EventType::Redeploy => "Redeploy",
            EventType::Preempt => "Preempt",
            EventType::Terminate => "Terminate",
        }
    }

    /// Azure's minimum notice for the type, in seconds ("Event scheduling"): 15 minutes for a
    /// freeze or a reboot, 10 for a redeploy, 30 s for a preemption, 5 minutes (the least a
    /// scale set may configure) for a termination. `ctl azure-event`'s `--not-before` default.
    pub fn notice_seconds(self) -> u64 {
        match self {
            EventType::Freeze | EventType::Reboot => 15 * 60,
            EventType::Redeploy => 10 * 60,
            EventType::Preempt => 30,
            EventType::Terminate => 5 * 60,
        }
    }

    /// `DurationInSeconds` unless given: a freeze lasts seconds (5, as in Azure's example);
    /// the others' impact has no length Azure states (-1).
    pub fn duration_seconds(self) -> i64 {
        match self {
            EventType::Freeze => 5,
            _ => -1,
        }
    }

    fn description(self) -> &'static str {
        match self {
            EventType::Freeze => {
                "Virtual machine is being paused because of a memory-preserving Live Migration operation."
            }
            EventType::Reboot => {
                "Virtual machine is going to be restarted because of a host maintenance operation."
            }
            EventType::Redeploy => {
                "Virtual machine is going to be redeployed to another host because of a host maintenance operation."
            }
            EventType::Preempt => {
                "Virtual machine is going to be evicted because Azure needs the Spot capacity back."
            }
            EventType::Terminate => "Virtual machine is going to be deleted.",
        }
    }

    /// The oldest `api-version` that shows the type.
    fn oldest_version(self) -> &'static str {
        match self {
            EventType::Terminate => "2019-01-01",
            _ => "2017-11-01",
        }
    }
}

/// One announced event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledEvent {
    /// `EventId`: a GUID ([`event_id`]).
    pub id: String,
    /// `EventType`.
    pub kind: EventType,
    /// `NotBefore`: it starts by itself then, unless started earlier.
    pub not_before: OffsetDateTime,
    /// `DurationInSeconds`: -1 (unknown: it stays started), or how long it stays started.
    pub duration: i64,
    /// When a `StartRequests` (or the passing of `NotBefore`, once settled) started it.
    pub started: Option<OffsetDateTime>,
}

impl ScheduledEvent {
    /// When it starts (or started).
    fn start(&self) -> OffsetDateTime {
        self.started
            .map_or(self.not_before, |started| started.min(self.not_before))
    }

    /// When it is gone, if it ever is.
    fn end(&self) -> Option<OffsetDateTime> {
        (self.duration >= 0).then(|| self.start() + Duration::seconds(self.duration))
    }

    fn started_at(&self, now: OffsetDateTime) -> bool {
        self.start() <= now
    }

    fn gone_at(&self, now: OffsetDateTime) -> bool {
        self.end().is_some_and(|end| end <= now)
    }

    /// How many moves time made on its own by `now`: to `Started` (when no request started
    /// it), and away.
    fn moves_by_time(&self, now: OffsetDateTime) -> u64 {
        u64::from(self.started.is_none() && self.started_at(now)) + u64::from(self.gone_at(now))
    }

    fn to_json(&self, now: OffsetDateTime, api_version: &str, vm_name: &str) -> Value {
        let started = self.started_at(now);
        let mut event = json!({
            "EventId": self.id,
            "EventType": self.kind.as_str(),
            "ResourceType": "VirtualMachine",
            "Resources": [vm_name],
            "EventStatus": if started { "Started" } else { "Scheduled" },
            "NotBefore": if started { String::new() } else { rfc1123(self.not_before) },
        });
        if api_version >= "2019-04-01" {
            event["Description"] = json!(self.kind.description());
        }
        if api_version >= "2019-08-01" {
            event["EventSource"] = json!("Platform");
        }
        if api_version >= "2020-07-01" {
            event["DurationInSeconds"] = json!(self.duration);
        }
        event
    }
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    /// [`MAX_EVENTS`] stand already.
    #[error(
        "{} Azure scheduled events stand already; `imds-tun ctl clear` removes them",
        MAX_EVENTS
    )]
    Full,
    /// A `StartRequests` named an event that is not (or no longer) announced.
    #[error("no scheduled event has this EventId")]
    UnknownEvent,
}

/// Every event the VM is told about, and the incarnation as of the last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledEvents {
    /// The VM name, each event's `Resources`.
    vm_name: String,
    /// The incarnation counted up to the last change; the moves time made since are added
    /// when read.
    incarnation: u64,
    /// Events in the order they were announced.
    events: Vec<ScheduledEvent>,
}

impl ScheduledEvents {
    /// No events, for the VM `vm_name`.
    pub fn new(vm_name: &str) -> ScheduledEvents {
        ScheduledEvents {
            vm_name: vm_name.to_owned(),
            incarnation: 0,
            events: Vec::new(),
        }
    }

    /// `DocumentIncarnation` at `now`: one more for every change, whether a command, a start
    /// request or time made it.
    pub fn incarnation(&self, now: OffsetDateTime) -> u64 {
        self.incarnation
            + self
                .events
                .iter()
                .map(|event| event.moves_by_time(now))
                .sum::<u64>()
    }

    /// The events visible at `now`.
    fn visible(&self, now: OffsetDateTime) -> impl Iterator<Item = &ScheduledEvent> {
        self.events.iter().filter(move |event| !event.gone_at(now))
    }

    /// Makes the moves time made by `now` part of the state: events it started are marked
    /// started, those it ended are dropped, and the incarnation keeps counting them.
    fn settle(&mut self, now: OffsetDateTime) {
        self.incarnation = self.incarnation(now);
        for event in &mut self.events {
            if event.started.is_none() && event.started_at(now) {
                event.started = Some(event.not_before);
            }
        }
        self.events.retain(|event| !event.gone_at(now));
    }

    /// Announces `event` at `now`.
    pub fn schedule(
        &mut self,
        event: ScheduledEvent,
        now: OffsetDateTime,
    ) -> Result<(), EventsError> {
        self.settle(now);
        if self.events.len() >= MAX_EVENTS {
            return Err(EventsError::Full);
        }
        self.events.push(event);
        self.incarnation += 1;
        Ok(())
    }

    /// A VM's `StartRequests` at `now`: each named event still scheduled starts now; an event
    /// already started stays as it is. Refused, changing nothing, if one is unknown.
    pub fn start(&mut self, ids: &[&str], now: OffsetDateTime) -> Result<(), EventsError> {
        self.settle(now);
        if !ids
            .iter()
            .all(|id| self.events.iter().any(|event| event.id == *id))
        {
            return Err(EventsError::UnknownEvent);
        }
        let mut changed = false;
        for event in &mut self.events {
            if event.started.is_none() && ids.contains(&event.id.as_str()) {
                event.started = Some(now);
                changed = true;
            }
        }
        if changed {
            self.incarnation += 1;
            self.events.retain(|event| !event.gone_at(now));
        }
        Ok(())
    }

    /// Ends every event (`ctl clear`); the incarnation grows if any was visible.
    pub fn clear(&mut self, now: OffsetDateTime) {
        self.settle(now);
        if !self.events.is_empty() {
            self.events.clear();
            self.incarnation += 1;
        }
    }

    /// The document `GET /metadata/scheduledevents?api-version=V` answers at `now`.
    pub fn document(&self, now: OffsetDateTime, api_version: &str) -> Value {
        let events: Vec<Value> = self
            .visible(now)
            .filter(|event| api_version >= event.kind.oldest_version())
            .map(|event| event.to_json(now, api_version, &self.vm_name))
            .collect();
        json!({
            "DocumentIncarnation": self.incarnation(now),
            "Events": events,
        })
    }

    /// What `imds-tun ctl status` shows under `azure`: the newest version's document.
    pub fn status(&self, now: OffsetDateTime) -> Value {
        self.document(now, "9999-12-31")
    }
}

/// The current [`ScheduledEvents`], shared by the Azure service (one snapshot per request,
/// and its `StartRequests`) and whoever changes them (`imds-tun ctl`, a scenario): every change
/// replaces the whole value, so a reader sees all of one change or none of it.
#[derive(Debug)]
pub struct Board {
    current: std::sync::RwLock<std::sync::Arc<ScheduledEvents>>,
}

impl Board {
    /// An empty board for the VM `vm_name`.
    pub fn new(vm_name: &str) -> Board {
        Board {
            current: std::sync::RwLock::new(std::sync::Arc::new(ScheduledEvents::new(vm_name))),
        }
    }

    /// The current state, whole: what one request answers from.
    pub fn snapshot(&self) -> std::sync::Arc<ScheduledEvents> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Applies `change` to a copy and publishes it if it succeeds; the state is unchanged
    /// otherwise.
    pub fn update(
        &self,
        change: impl FnOnce(&mut ScheduledEvents) -> Result<(), EventsError>,
    ) -> Result<(), EventsError> {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = ScheduledEvents::clone(&current);
        change(&mut next)?;
        *current = std::sync::Arc::new(next);
        Ok(())
    }
}

/// `Mon, 19 Sep 2016 18:29:47 GMT` (RFC 1123), as Azure writes `NotBefore`.
fn rfc1123(at: OffsetDateTime) -> String {
    let format = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

/// A version-4 GUID made of `random`, as Azure's `EventId`s are.
pub fn event_id(random: u128) -> String {
    let bits =
        (random & !(0xf_u128 << 76) & !(0x3_u128 << 62)) | (0x4_u128 << 76) | (0x2_u128 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2022-04-11 22:11:58 UTC);

    fn event(id: &str, kind: EventType, in_seconds: i64, duration: i64) -> ScheduledEvent {
        ScheduledEvent {
            id: id.into(),
            kind,
            not_before: NOW + Duration::seconds(in_seconds),
            duration,
            started: None,
        }
    }

    #[test]
    fn a_freeze_reads_as_in_azures_example() {
        let mut events = ScheduledEvents::new("FrontEnd_IN_0");
        events
            .schedule(
                event(
                    "f020ba2e-3bc0-4c40-a10b-86575a9eabd5",
                    EventType::Freeze,
                    900,
                    5,
                ),
                NOW,
            )
            .expect("room");
        assert_eq!(
            events.document(NOW, "2020-07-01"),
            json!({
                "DocumentIncarnation": 1,
                "Events": [{
                    "EventId": "f020ba2e-3bc0-4c40-a10b-86575a9eabd5",
                    "EventType": "Freeze",
                    "ResourceType": "VirtualMachine",
                    "Resources": ["FrontEnd_IN_0"],
                    "EventStatus": "Scheduled",
                    "NotBefore": "Mon, 11 Apr 2022 22:26:58 GMT",
                    "Description": "Virtual machine is being paused because of a memory-preserving Live Migration operation.",
                    "EventSource": "Platform",
                    "DurationInSeconds": 5
                }]
            })
        );
        let old = events.document(NOW, "2019-01-01");
        let fields: Vec<&String> = old["Events"][0]
            .as_object()
            .expect("an event")
            .keys()
            .collect();
        assert!(
            !fields
                .iter()
                .any(|key| ["Description", "EventSource", "DurationInSeconds"]
                    .contains(&key.as_str())),
            "older versions lack the later fields: {fields:?}"
        );
    }

    #[test]
    fn an_event_starts_at_not_before_and_is_gone_after_its_duration_each_a_new_incarnation() {
        let mut events = ScheduledEvents::new("vm");
        events
            .schedule(event("a", EventType::Freeze, 60, 5), NOW)
            .expect("room");
        assert_eq!(events.incarnation(NOW), 1);
        let started = NOW + Duration::seconds(60);
        let document = events.document(started, "2020-07-01");
        assert_eq!(document["Events"][0]["EventStatus"], "Started");
        assert_eq!(document["Events"][0]["NotBefore"], "");
        assert_eq!(document["DocumentIncarnation"], 2);
        let over = started + Duration::seconds(5);
        assert_eq!(
            events.document(over, "2020-07-01"),
            json!({"DocumentIncarnation": 3, "Events": []})
        );
        // Settling keeps the count where the reader saw it.
        events
            .schedule(event("b", EventType::Reboot, 900, -1), over)
            .expect("room");
        assert_eq!(events.incarnation(over), 4);
        assert_eq!(events.events.len(), 1, "the gone event was dropped");
    }

    #[test]
    fn start_requests_start_an_event_early_and_unknown_ids_change_nothing() {
        let mut events = ScheduledEvents::new("vm");
        events
            .schedule(event("p", EventType::Preempt, 30, -1), NOW)
            .expect("room");
        events
            .schedule(event("f", EventType::Freeze, 900, 5), NOW)
            .expect("room");
        let before = events.clone();
        assert_eq!(
            events.start(&["p", "nope"], NOW),
            Err(EventsError::UnknownEvent)
        );
        events.settle(NOW);
        assert_eq!(events, before);
        events.start(&["p"], NOW).expect("known");
        let document = events.document(NOW, "2020-07-01");
        assert_eq!(document["DocumentIncarnation"], 3);
        assert_eq!(document["Events"][0]["EventStatus"], "Started");
        assert_eq!(document["Events"][1]["EventStatus"], "Scheduled");
        events.start(&["p"], NOW).expect("again");
        assert_eq!(
            events.incarnation(NOW),
            3,
            "starting a started event is no change"
        );
        let much_later = NOW + Duration::days(2);
        assert_eq!(
            events.document(much_later, "2020-07-01")["Events"][0]["EventStatus"],
            "Started",
            "an event of unknown duration stays started"
        );
        events.start(&["f"], NOW + Duration::seconds(1)).expect("f");
        assert_eq!(
            events.document(NOW + Duration::seconds(6), "2020-07-01")["Events"]
                .as_array()
                .map(Vec::len),
            Some(1),
            "the freeze is gone 5 s after it started"
        );
        events.clear(NOW);
        assert_eq!(events.document(NOW, "2020-07-01")["Events"], json!([]));
    }

    #[test]
    fn the_board_holds_a_bounded_number_of_events() {
        let mut events = ScheduledEvents::new("vm");
        for index in 0..MAX_EVENTS {
            events
                .schedule(event(&index.to_string(), EventType::Reboot, 900, -1), NOW)
                .expect("room");
        }
        assert_eq!(
            events.schedule(event("x", EventType::Reboot, 900, -1), NOW),
            Err(EventsError::Full)
        );
    }

    #[test]
    fn terminate_events_need_their_version_and_ids_are_guids() {
        let mut events = ScheduledEvents::new("vm");
        events
            .schedule(event("t", EventType::Terminate, 300, -1), NOW)
            .expect("room");
        assert_eq!(events.document(NOW, "2017-11-01")["Events"], json!([]));
        assert_eq!(
            events.document(NOW, "2019-01-01")["Events"][0]["EventType"],
            "Terminate"
        );
        let id = event_id(u128::MAX);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4", "version 4: {id}");
        assert!(
            matches!(&id[19..20], "8" | "9" | "a" | "b"),
            "variant: {id}"
        );
        assert_ne!(event_id(1), event_id(2));
    }
}
