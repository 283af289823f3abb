//! What `imds-tun ctl` says to the running service and what it answers: one JSON request per
//! connection, one JSON response, each one line. And what a request does to the
//! [`Interruptions`], as a pure function of the state, the time and a random number.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

pub use crate::clouds::azure::events::EventType as AzureEventType;
pub use crate::clouds::gce::events::MaintenanceEvent as GceMaintenanceEvent;

use crate::clouds::ec2::interruptions::{
    EventCode, EventEnd, Interruptions, LIFECYCLE_STATES, MaintenanceEvent, SpotAction, SpotNotice,
    event_id,
};

/// The largest scenario file, for `--scenario` and `ctl play` alike.
pub const MAX_SCENARIO_BYTES: u64 = 1024 * 1024;
/// The most steps a scenario (`play`, `--scenario`) may have.
pub const MAX_STEPS: usize = 1000;
/// The largest request line read: a `play` of the largest scenario file, with room for the
/// defaults its steps gain on the way (`"in": 120`, ...), so `ctl play` takes every file
/// `--scenario` takes.
pub const MAX_REQUEST_BYTES: usize = MAX_SCENARIO_BYTES as usize + MAX_STEPS * 128;
/// The most faults that may stand at once; more is refused until some are cleared or expire.
pub const MAX_FAULTS: usize = 64;
/// The most scheduled events (pending and ended) the board keeps; more is refused until
/// `clear`.
pub const MAX_EVENTS: usize = 100;

/// The furthest ahead anything may be scheduled: a week, longer than any test runs.
pub const MAX_SECONDS_AHEAD: u64 = 7 * 24 * 3600;

/// The commands a scenario step may be, as its file spells them (the `ctl` subcommands that
/// change something, `fault clear` written `fault-clear`). Not `play` or `status`, nor an
/// `end-event`, which names an event id no scenario can know in advance.
pub const SCENARIO_COMMANDS: &[&str] = &[
    "spot",
    "rebalance",
    "event",
    "lifecycle",
    "clear",
    "fault",
    "fault-clear",
    "tokens-expire",
    "gce-preempt",
    "gce-maintenance",
    "azure-event",
];

/// One command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// A spot interruption notice: the action happens `in` seconds from now (EC2 gives two
    /// minutes' notice).
    Spot {
        /// `"action"`: what EC2 will do (`spot/instance-action`'s `action`).
        action: SpotAction,
        /// `"in"`: seconds until the action; default 120.
        #[serde(default = "two_minutes")]
        r#in: u64,
    },
    /// A rebalance recommendation, visible `in` seconds from now.
    Rebalance {
        /// `"in"`: seconds until it appears (its `noticeTime`); default 0, now.
        #[serde(default)]
        r#in: u64,
    },
    /// A scheduled event starting `in` seconds from now and lasting `duration` seconds.
    Event {
        /// `"code"`: the event's `Code`.
        code: EventCode,
        /// `"in"`: seconds until its `NotBefore`; default 3600.
        #[serde(default = "one_hour")]
        r#in: u64,
        /// `"duration"`: seconds from `NotBefore` to `NotAfter`, at least 1; default 900.
        #[serde(default = "fifteen_minutes")]
        duration: u64,
    },
    /// Ends a scheduled event early: it moves to the history as canceled or completed.
    EndEvent {
        /// `"id"`: the event's `EventId`.
        id: String,
        /// `"how"`: `cancel` or `complete`.
        how: EventEndRequest,
    },
    /// The Auto Scaling target lifecycle state.
    Lifecycle {
        /// `"state"`: one of [`LIFECYCLE_STATES`], served at
        /// `autoscaling/target-lifecycle-state`.
        state: String,
    },
    /// Everything back to an on-demand instance with nothing pending; stops a scenario.
    Clear,
    /// What is active, as JSON.
    Status,
    /// Replaces the running scenario with this timeline.
    Play {
        /// `"steps"`: the scenario, at most [`MAX_STEPS`]; none may be `play` or `status`.
        steps: Vec<Step>,
    },
    /// Makes matching requests slow, failing, throttled or unanswered (see `http::faults`), for
    /// `for` seconds or until cleared; `credential_source: "down"` makes refreshes fail
    /// instead, `expired_credentials: true` serves the credentials with a past `Expiration`.
    Fault {
        /// What the fault does and which requests it matches, its keys (`"status"`,
        /// `"latency_ms"`, `"path"`, ...) beside `"command"`; empty or `None` for an outage alone.
        #[serde(flatten)]
        spec: Option<crate::http::faults::FaultSpec>,
        /// `"for"`: seconds until it expires by itself; `None`: until `fault-clear`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r#for: Option<u64>,
        /// `"credential_source": "down"`: the credential source fails every refresh.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential_source: Option<SourceState>,
        /// `"packet_budget"`: packets a second the TUN's stack lets through before TCP, the
        /// rest dropped (see `stack::endpoint::budget`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        packet_budget: Option<u32>,
        /// `"expired_credentials": true`: every credentials endpoint serves its keys with an
        /// `Expiration` in the past (`credentials::outage`).
        #[serde(default, skip_serializing_if = "is_false")]
        expired_credentials: bool,
    },
    /// The faults standing, with their remaining time.
    FaultList,
    /// Removes every fault and ends a credential-source outage.
    FaultClear,
    /// Ends every IMDSv2 token issued so far: each answers 401 from now on, as an expired
    /// token does; tokens issued from now on work.
    TokensExpire,
    /// The callers report (`crate::callers::Report`) as the `status`; with `reset`, as it
    /// stood, and the table emptied.
    Callers {
        /// `"reset"`: empty the table after reading it; default false.
        #[serde(default)]
        reset: bool,
    },
    /// GCE: the instance is preempted (`instance/preempted` becomes `TRUE`).
    GcePreempt,
    /// GCE: host maintenance is coming (`instance/maintenance-event`).
    GceMaintenance {
        /// `"event"`: the value served; default `MIGRATE_ON_HOST_MAINTENANCE`; `NONE` ends it.
        #[serde(default = "migrate")]
        event: GceMaintenanceEvent,
    },
    /// Azure: a scheduled event in `/metadata/scheduledevents`.
    AzureEvent {
        /// `"type"`: its `EventType`.
        r#type: AzureEventType,
        /// `"not_before"`: seconds until its `NotBefore`; default Azure's minimum notice for
        /// the type.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        not_before: Option<u64>,
        /// `"duration"`: its `DurationInSeconds`, -1 for unknown; default 5 for `Freeze`, else
        /// -1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration: Option<i64>,
    },
}

fn migrate() -> GceMaintenanceEvent {
    GceMaintenanceEvent::MigrateOnHostMaintenance
}

/// `--credential-source down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    /// `"down"`: every refresh fails as if STS were unreachable.
    Down,
}

/// How `end-event` ends an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventEndRequest {
    /// `"cancel"`: to the history as canceled.
    Cancel,
    /// `"complete"`: to the history as completed.
    Complete,
}

/// One step of a scenario: a command, `at` seconds after the scenario starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Seconds after the start, as a number or `"+30s"`, `"+2m"`, `"+1h"`.
    #[serde(deserialize_with = "offset")]
    pub at: u64,
    /// The command, its keys beside `"at"`.
    #[serde(flatten)]
    pub request: Request,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// `"ok"`: whether the request was carried out (`ctl` then exits 0).
    pub ok: bool,
    /// `"error"`: why not, one line for a person; absent when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What is active after the request (every successful request returns it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
    /// `"notes"`: what the person should know beside the status, one line each (`callers
    /// --reset` emptied the table); `ctl` prints them on stderr.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Response {
    /// Done; `status` is what is active now.
    pub fn ok(status: Value) -> Response {
        Response {
            ok: true,
            error: None,
            status: Some(status),
            notes: Vec::new(),
        }
    }

    /// Not done, and why.
    pub fn refused(error: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(error.into()),
            status: None,
            notes: Vec::new(),
        }
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn two_minutes() -> u64 {
    120
}
fn one_hour() -> u64 {
    3600
}
fn fifteen_minutes() -> u64 {
    900
}

/// `30`, `"30"`, `"+30s"`, `"+2m"`, `"+1h"`.
fn offset<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Offset {
        Seconds(u64),
        Text(String),
    }
    match Offset::deserialize(deserializer)? {
        Offset::Seconds(seconds) => Ok(seconds),
        Offset::Text(text) => parse_offset(&text).ok_or_else(|| {
            // The text is not repeated: it comes from a file, which may be anything.
            serde::de::Error::custom(AT_EXPECTED)
        }),
    }
}

/// What a step's `at` may be.
pub const AT_EXPECTED: &str = "expected seconds, or \"+30s\", \"+2m\", \"+1h\"";

/// `+30s` → 30; the `+` and the unit are optional (seconds).
pub fn parse_offset(text: &str) -> Option<u64> {
    let text = text.trim().trim_start_matches('+');
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((index, _)) => text.split_at(index),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(scale)
}

/// The name a scenario file gives a request (`"command"`), as [`SCENARIO_COMMANDS`] lists them.
pub fn command_name(request: &Request) -> &'static str {
    match request {
        Request::Spot { .. } => "spot",
        Request::Rebalance { .. } => "rebalance",
        Request::Event { .. } => "event",
        Request::EndEvent { .. } => "end-event",
        Request::Lifecycle { .. } => "lifecycle",
        Request::Clear => "clear",
        Request::Status => "status",
        Request::Play { .. } => "play",
        Request::Fault { .. } => "fault",
        Request::FaultList => "fault-list",
        Request::FaultClear => "fault-clear",
        Request::Callers { .. } => "callers",
        Request::TokensExpire => "tokens-expire",
        Request::GcePreempt => "gce-preempt",
        Request::GceMaintenance { .. } => "gce-maintenance",
        Request::AzureEvent { .. } => "azure-event",
    }
}

/// Checks what a request asks before anything changes: times within a week, a known lifecycle
/// state, a scenario within its bounds. A refusal names the setting, never its value: a
/// scenario comes from a file, and a file may hold anything.
pub fn validate(request: &Request) -> Result<(), String> {
    let ahead = |seconds: u64, what: &str| {
        if seconds > MAX_SECONDS_AHEAD {
            Err(format!(
                "{what} is more than a week ({MAX_SECONDS_AHEAD} s) ahead"
            ))
        } else {
            Ok(())
        }
    };
    match request {
        Request::Spot { r#in, .. } | Request::Rebalance { r#in } => ahead(*r#in, "--in"),
        Request::Event { r#in, duration, .. } => {
            ahead(*r#in, "--in")?;
            ahead(*duration, "--duration")?;
            if *duration == 0 {
                return Err("--duration must be at least 1 s".into());
            }
            Ok(())
        }
        Request::Fault {
            spec,
            r#for,
            credential_source,
            packet_budget,
            expired_credentials,
        } => {
            if let Some(seconds) = r#for {
                ahead(*seconds, "--for")?;
                if *seconds == 0 {
                    return Err("--for must be at least 1 s".into());
                }
            }
            let largest = crate::stack::endpoint::budget::MAX_PACKETS_PER_SECOND;
            if let Some(budget) = packet_budget
                && !(1..=largest).contains(budget)
            {
                return Err(format!(
                    "--packet-budget must be 1-{largest} packets a second"
                ));
            }
            match (
                spec.as_ref().filter(|spec| !spec.is_empty()),
                credential_source,
            ) {
                (None, None) if !expired_credentials && packet_budget.is_none() => Err(
                    "a fault needs --status, --latency, --drop, --reset, --throttle, \
                     --credential-source down, --expired-credentials or --packet-budget"
                        .into(),
                ),
                (Some(spec), _) => spec.check(),
                (None, _) => Ok(()),
            }
        }
        Request::AzureEvent {
            not_before,
            duration,
            ..
        } => {
            ahead(not_before.unwrap_or(0), "--not-before")?;
            match duration {
                Some(seconds) if *seconds < -1 => {
                    Err("--duration is -1 (unknown) or a number of seconds".into())
                }
                Some(seconds) => ahead(seconds.unsigned_abs(), "--duration"),
                None => Ok(()),
            }
        }
        Request::Lifecycle { state } if !LIFECYCLE_STATES.contains(&state.as_str()) => {
            Err(format!(
                "unknown lifecycle state; use one of {}",
                LIFECYCLE_STATES.join(", ")
            ))
        }
        Request::Play { steps } => {
            if steps.len() > MAX_STEPS {
                return Err(format!(
                    "{} steps; a scenario may have at most {MAX_STEPS}",
                    steps.len()
                ));
            }
            for (index, step) in steps.iter().enumerate() {
                let number = index + 1;
                let checked = ahead(step.at, "`at`").and_then(|()| {
                    if SCENARIO_COMMANDS.contains(&command_name(&step.request)) {
                        validate(&step.request)
                    } else {
                        Err(format!(
                            "`command`: a scenario step is one of {}",
                            SCENARIO_COMMANDS.join(", ")
                        ))
                    }
                });
                checked.map_err(|error| format!("step {number}: {error}"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Applies a state-changing request to the EC2 interruptions at `now` (`random` makes event
/// ids). `Status` and `Play` change nothing here, nor do the GCE and Azure requests, whose
/// boards `super::clouds` changes; an `end-event` for an unknown id is an error.
pub fn apply(
    request: &Request,
    state: &mut Interruptions,
    now: OffsetDateTime,
    random: u128,
) -> Result<(), String> {
    let after =
        |seconds: u64| now + Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 2));
    match request {
        Request::Spot { action, r#in } => {
            state.spot = Some(Some(SpotNotice {
                action: *action,
                time: after(*r#in),
            }));
        }
        Request::Rebalance { r#in } => state.rebalance = Some(after(*r#in)),
        Request::Event {
            code,
            r#in,
            duration,
        } => {
            if state.events.len() >= MAX_EVENTS {
                return Err(format!(
                    "{MAX_EVENTS} scheduled events are on the board already (pending and \
                     ended); `imds-tun ctl clear` removes them"
                ));
            }
            let not_before = after(*r#in);
            state.events.push(MaintenanceEvent {
                id: event_id(random),
                code: *code,
                not_before,
                not_after: not_before + Duration::seconds(i64::try_from(*duration).unwrap_or(0)),
                ended: None,
            });
        }
        Request::EndEvent { id, how } => {
            let event = state
                .events
                .iter_mut()
                .find(|event| event.id == *id)
                .ok_or_else(|| format!("no event {id:?}; `imds-tun ctl status` lists them"))?;
            event.ended = Some(match how {
                EventEndRequest::Cancel => EventEnd::Canceled,
                EventEndRequest::Complete => EventEnd::Completed,
            });
        }
        Request::Lifecycle { state: lifecycle } => state.lifecycle = Some(lifecycle.clone()),
        Request::Clear => *state = Interruptions::default(),
        Request::Status
        | Request::Play { .. }
        | Request::Fault { .. }
        | Request::FaultList
        | Request::FaultClear
        | Request::Callers { .. }
        | Request::TokensExpire => {}
        Request::GcePreempt | Request::GceMaintenance { .. } | Request::AzureEvent { .. } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-01 12:00:00 UTC);

    #[test]
    fn requests_read_as_the_client_writes_them() {
        let request: Request =
            serde_json::from_str(r#"{"command":"spot","action":"terminate"}"#).expect("spot");
        assert_eq!(
            request,
            Request::Spot {
                action: SpotAction::Terminate,
                r#in: 120
            }
        );
        let play: Request = serde_json::from_str(
            r#"{"command":"play","steps":[{"at":"+30s","command":"spot","action":"stop","in":60},
                {"at":60,"command":"lifecycle","state":"Terminated"}]}"#,
        )
        .expect("play");
        let Request::Play { steps } = &play else {
            panic!("a play request");
        };
        assert_eq!(steps[0].at, 30);
        assert_eq!(
            steps[1].request,
            Request::Lifecycle {
                state: "Terminated".into()
            }
        );
        assert!(
            serde_json::from_str::<Request>(r#"{"command":"spot","action":"explode"}"#).is_err()
        );
        assert!(serde_json::from_str::<Request>(r#"{"command":"rebalance","extra":1}"#).is_err());
    }

    #[test]
    fn a_scenario_step_can_be_a_fault() {
        let step: Step = serde_json::from_str(
            r#"{"at": "+10s", "command": "fault", "status": 500, "path": "/latest/meta-data/iam/", "for": 30}"#,
        )
        .expect("a fault step");
        assert_eq!(step.at, 10);
        let Request::Fault { spec, r#for, .. } = &step.request else {
            panic!("a fault: {step:?}");
        };
        assert_eq!(spec.as_ref().and_then(|spec| spec.status), Some(500));
        assert_eq!(*r#for, Some(30));
        assert!(validate(&step.request).is_ok());
        let outage: Request =
            serde_json::from_str(r#"{"command": "fault", "credential_source": "down"}"#)
                .expect("an outage");
        assert!(validate(&outage).is_ok(), "{outage:?}");
        let nothing: Request = serde_json::from_str(r#"{"command": "fault"}"#).expect("parses");
        assert!(validate(&nothing).is_err());
    }

    #[test]
    fn scenario_steps_take_the_other_clouds_events() {
        let steps: Vec<Step> = serde_json::from_str(
            r#"[
                {"at": "+0s", "command": "gce-maintenance", "event": "MIGRATE_ON_HOST_MAINTENANCE"},
                {"at": "+10s", "command": "gce-preempt"},
                {"at": "+10s", "command": "azure-event", "type": "Preempt", "not_before": 30}
            ]"#,
        )
        .expect("the steps docs/metadata.md shows");
        assert_eq!(
            steps[2].request,
            Request::AzureEvent {
                r#type: AzureEventType::Preempt,
                not_before: Some(30),
                duration: None
            }
        );
        assert!(validate(&Request::Play { steps }).is_ok());
        let maintenance: Request =
            serde_json::from_str(r#"{"command": "gce-maintenance"}"#).expect("defaults");
        assert_eq!(
            maintenance,
            Request::GceMaintenance {
                event: GceMaintenanceEvent::MigrateOnHostMaintenance
            }
        );
        let azure = |not_before: Option<u64>, duration: Option<i64>| Request::AzureEvent {
            r#type: AzureEventType::Freeze,
            not_before,
            duration,
        };
        assert!(validate(&azure(None, Some(-1))).is_ok());
        assert!(validate(&azure(None, Some(-2))).is_err());
        assert!(validate(&azure(Some(MAX_SECONDS_AHEAD + 1), None)).is_err());
        assert!(
            serde_json::from_str::<Request>(r#"{"command": "azure-event", "type": "Explode"}"#)
                .is_err()
        );
    }

    #[test]
    fn a_scenario_step_can_throttle_or_expire_the_credentials() {
        let throttle: Step = serde_json::from_str(
            r#"{"at": "+5s", "command": "fault", "throttle": 10, "per_caller": true, "path": "/latest/", "for": 30}"#,
        )
        .expect("a throttle step");
        let Request::Fault { spec, .. } = &throttle.request else {
            panic!("a fault: {throttle:?}");
        };
        let spec = spec.as_ref().expect("a spec");
        assert_eq!((spec.throttle, spec.per_caller), (Some(10), true));
        assert!(validate(&throttle.request).is_ok());
        let expired: Step = serde_json::from_str(
            r#"{"at": "+1m", "command": "fault", "expired_credentials": true, "for": 60}"#,
        )
        .expect("an expired-credentials step");
        let Request::Fault {
            expired_credentials,
            r#for,
            ..
        } = &expired.request
        else {
            panic!("a fault: {expired:?}");
        };
        assert!(*expired_credentials);
        assert_eq!(*r#for, Some(60));
        assert!(validate(&expired.request).is_ok());
        let alone: Request =
            serde_json::from_str(r#"{"command": "fault", "per_caller": true}"#).expect("parses");
        assert!(validate(&alone).is_err(), "--per-caller needs --throttle");
    }

    #[test]
    fn offsets_take_units_and_refuse_nonsense() {
        assert_eq!(parse_offset("+30s"), Some(30));
        assert_eq!(parse_offset("2m"), Some(120));
        assert_eq!(parse_offset("+1h"), Some(3600));
        assert_eq!(parse_offset("45"), Some(45));
        assert_eq!(parse_offset("+1d"), None);
        assert_eq!(parse_offset("soon"), None);
    }

    #[test]
    fn validation_bounds_times_states_and_scenarios() {
        assert!(
            validate(&Request::Lifecycle {
                state: "InService".into()
            })
            .is_ok()
        );
        assert!(
            validate(&Request::Lifecycle {
                state: "Sleeping".into()
            })
            .is_err()
        );
        assert!(
            validate(&Request::Rebalance {
                r#in: MAX_SECONDS_AHEAD + 1
            })
            .is_err()
        );
        let nested = Request::Play {
            steps: vec![Step {
                at: 0,
                request: Request::Play { steps: vec![] },
            }],
        };
        assert!(validate(&nested).is_err());
        let too_long = Request::Play {
            steps: vec![
                Step {
                    at: 1,
                    request: Request::Clear
                };
                MAX_STEPS + 1
            ],
        };
        assert!(validate(&too_long).is_err());
    }

    #[test]
    fn apply_changes_the_state_as_the_command_says() {
        let mut state = Interruptions::default();
        apply(
            &Request::Spot {
                action: SpotAction::Hibernate,
                r#in: 120,
            },
            &mut state,
            NOW,
            1,
        )
        .expect("spot");
        assert_eq!(
            state.spot,
            Some(Some(SpotNotice {
                action: SpotAction::Hibernate,
                time: datetime!(2026-12-01 12:02:00 UTC)
            }))
        );
        apply(
            &Request::Event {
                code: EventCode::InstanceStop,
                r#in: 60,
                duration: 600,
            },
            &mut state,
            NOW,
            0xabc,
        )
        .expect("event");
        let id = state.events[0].id.clone();
        assert_eq!(id, "instance-event-00000000000000abc");
        apply(
            &Request::EndEvent {
                id: id.clone(),
                how: EventEndRequest::Cancel,
            },
            &mut state,
            NOW,
            0,
        )
        .expect("cancel");
        assert_eq!(state.events[0].ended, Some(EventEnd::Canceled));
        assert!(
            apply(
                &Request::EndEvent {
                    id: "instance-event-nope".into(),
                    how: EventEndRequest::Complete
                },
                &mut state,
                NOW,
                0
            )
            .is_err()
        );
        apply(&Request::Clear, &mut state, NOW, 0).expect("clear");
        assert_eq!(state, Interruptions::default());
    }
}
