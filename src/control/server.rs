//! The service's side of `imds-tun ctl`: the control socket, who may use it, and the scenario
//! that plays in the background. It reads (and on `callers --reset` empties) the callers
//! report, which it does not keep.
//!
//! The socket is bound before root is given up (so `ctl` can tell it from a squatter: its
//! owner is root, see `client.rs`) and lives as long as the process. Each connection carries one
//! request line and gets one response line. Who may change anything: root, and the user the
//! service was started for (the user behind sudo, or `--user`); the kernel says who the peer is
//! (`SO_PEERCRED`, known from the moment of the connect), and it is asked at accept, before
//! anything is read: anyone else gets the refusal at once and the connection is closed, so an
//! unauthorised user never holds one of the slots. Bounds: [`MAX_CLIENTS`] admitted connections
//! at once (more are closed at once), [`REQUEST_TIMEOUT`] to send the request,
//! [`MAX_REQUEST_BYTES`] per request.
//!
//! If the name is taken (another user bound it first), the service says so once and runs
//! without a control channel: a squatter must not be able to stop the metadata service.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::UCred;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinHandle;

use super::protocol::{self, MAX_FAULTS, MAX_REQUEST_BYTES, Request, Response, Step};
use crate::callers::Callers;
use crate::clouds::ec2::interruptions::Board;
use crate::clouds::ec2::token::TokenMint;
use crate::credentials::outage::Outage;
use crate::credentials::status::CredentialsStatus;
use crate::http::faults::FaultBoard;
use crate::stack::PacketBudget;

/// Connections served at once; a flood of idle clients cannot hold more.
pub const MAX_CLIENTS: usize = 8;

/// Time a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Who may send commands besides root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    /// The uid the service was started for; `None` when only root may.
    pub user: Option<u32>,
}

impl Allowed {
    fn admits(self, uid: u32) -> bool {
        uid == 0 || self.user == Some(uid)
    }
}

/// The running control channel; dropping it stops accepting.
#[derive(Debug)]
pub struct ControlServer {
    accept: JoinHandle<()>,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The scenario playing in the background, `--scenario`'s from the start or the last `ctl
/// play`'s: one at a time, a new one replaces the old, `clear` stops it. It does not depend on
/// the control socket: a start whose socket name was taken still plays its `--scenario`.
/// Clones share the one scenario; [`Scenario::stop`] ends it.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    running: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Scenario {
    /// Plays `steps` from now, replacing what was playing.
    pub async fn play(&self, targets: Targets, steps: Vec<Step>) {
        start_scenario(&self.running, targets, steps).await;
    }

    /// Stops what is playing, if anything.
    pub fn stop(&self) {
        if let Ok(mut running) = self.running.try_lock()
            && let Some(task) = running.take()
        {
            task.abort();
        }
    }
}

/// Why there is no control channel (said once, then the service runs on without it).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another process bound `@imds-tun/control` first.
    #[error(
        "the control socket @imds-tun/control is already bound in this network namespace (another \
         process took the name); imds-tun ctl will not reach this imds-tun (the metadata service, \
         and a --scenario, run on without it)"
    )]
    NameTaken,
    /// The socket could not be created or bound otherwise (or, outside Linux, has no address).
    #[error("cannot create the control socket: {0}")]
    Bind(#[source] std::io::Error),
}

impl ControlServer {
    /// Binds the socket and serves it in a task of its own; `ctl play` and `clear` act on
    /// `scenario`. Call from inside the runtime.
    pub fn start(
        targets: Targets,
        allowed: Allowed,
        scenario: Scenario,
    ) -> Result<ControlServer, ControlError> {
        let address = crate::platform::control_address().map_err(ControlError::Bind)?;
        let listener = std::os::unix::net::UnixListener::bind_addr(&address).map_err(|error| {
            if error.kind() == std::io::ErrorKind::AddrInUse {
                ControlError::NameTaken
            } else {
                ControlError::Bind(error)
            }
        })?;
        ControlServer::serve(listener, targets, allowed, scenario)
    }

    /// Serves `listener`, a control socket bound elsewhere (`imds-tun exec`'s, bound inside
    /// its namespace), as [`ControlServer::start`] serves its own.
    pub fn serve(
        listener: std::os::unix::net::UnixListener,
        targets: Targets,
        allowed: Allowed,
        scenario: Scenario,
    ) -> Result<ControlServer, ControlError> {
        listener.set_nonblocking(true).map_err(ControlError::Bind)?;
        let listener = UnixListener::from_std(listener).map_err(ControlError::Bind)?;
        let accept = tokio::spawn(accept_loop(listener, targets, allowed, scenario.running));
        Ok(ControlServer { accept })
    }
}

/// What commands change, each a handle the service shares: the interruptions, the faults and
/// the credential source's outage.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The EC2 interruptions (`spot`, `rebalance`, `event`, `lifecycle`, `clear`, scenarios).
    pub board: Arc<Board>,
    /// The HTTP faults standing (`fault`, `fault list`, `fault clear`).
    pub faults: Arc<FaultBoard>,
    /// The credential source's simulated outage (`fault --credential-source down`,
    /// `fault --expired-credentials`).
    pub outage: Outage,
    /// Who has called (`callers`, `callers --reset`); only read and emptied here.
    pub callers: Arc<Callers>,
    /// What `status` reports of the served credentials, tokens and packets; only read, but for
    /// `tokens expire`, which ends every token issued so far, and `fault --packet-budget`.
    pub serving: Serving,
    /// The GCE and Azure events (`gce-preempt`, `gce-maintenance`, `azure-event`, `clear`).
    pub clouds: super::clouds::CloudBoards,
}

/// What the local service serves, as `status` reports it beside the interruptions.
#[derive(Debug, Clone, Default)]
pub struct Serving {
    /// Each role's credentials: source, expiry, next refresh.
    pub credentials: Option<CredentialsStatus>,
    /// The IMDSv2 token mint: how many tokens it issued.
    pub tokens: Option<Arc<TokenMint>>,
    /// The TUN stack's packet budget and its drops (`fault --packet-budget`); `None` without
    /// a TUN.
    pub packets: Option<PacketBudget>,
}

impl Serving {
    /// `status`'s `credentials` (one object per role started: `role`, `source`, `expiration`,
    /// `next_refresh`, `refreshes`, `refresh_failures`) and `imdsv2_tokens_issued`, added to
    /// the interruptions' `status`.
    fn add_to(&self, status: &mut serde_json::Value) {
        let Some(object) = status.as_object_mut() else {
            return;
        };
        let time = |at: Option<OffsetDateTime>| {
            at.and_then(|at| {
                at.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
        };
        let roles: Vec<serde_json::Value> = self
            .credentials
            .iter()
            .flat_map(CredentialsStatus::report)
            .map(|role| {
                serde_json::json!({
                    "role": role.role,
                    "source": role.source.word(),
                    "expiration": time(role.expiration),
                    "next_refresh": time(role.next_refresh),
                    "refreshes": role.refreshes_ok,
                    "refresh_failures": role.refreshes_failed,
                })
            })
            .collect();
        object.insert("credentials".into(), roles.into());
        object.insert(
            "imdsv2_tokens_issued".into(),
            self.tokens.as_ref().map_or(0, |mint| mint.issued()).into(),
        );
        if let Some(packets) = &self.packets {
            object.insert("packet_budget".into(), packets.rate().into());
            object.insert("packets_over_budget".into(), packets.dropped().into());
        }
        object.insert(
            "imdsv2_tokens_expired".into(),
            self.tokens
                .as_ref()
                .map_or(0, |mint| mint.expirations())
                .into(),
        );
    }
}

async fn accept_loop(
    listener: UnixListener,
    board: Targets,
    allowed: Allowed,
    scenario: Arc<Mutex<Option<JoinHandle<()>>>>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                crate::warn_limited!(%error, "control socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Asked before a slot is taken or a byte read: a user who may not control this
        // imds-tun cannot hold the slots root needs (issue 23: eight such connections every 5 s
        // made root's `ctl` fail 20 of 20).
        let peer = match stream.peer_cred() {
            Ok(peer) if allowed.admits(peer.uid()) => peer,
            peer => {
                refuse_at_once(&stream, peer.ok(), allowed);
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            crate::warn_limited!(
                "control socket: {MAX_CLIENTS} clients already connected; closing another"
            );
            continue;
        };
        let board = board.clone();
        let scenario = scenario.clone();
        tokio::spawn(async move {
            serve(stream, peer, &board, &scenario).await;
            drop(slot);
        });
    }
}

/// Answers a peer that may not control this imds-tun (or cannot be told) with its refusal,
/// without reading its request or waiting for it, and closes the connection. The line fits the
/// empty socket buffer of a new connection, so one non-blocking write sends it; the client reads
/// it even if its own write then meets the closed socket (`client.rs`).
fn refuse_at_once(stream: &UnixStream, peer: Option<UCred>, allowed: Allowed) {
    let response = match peer {
        Some(peer) => {
            crate::warn_limited!(
                uid = peer.uid(),
                "control socket: refused a command from a user who may not change this imds-tun"
            );
            Response::refused(format!(
                "uid {} may not control this imds-tun: only root{} may",
                peer.uid(),
                allowed
                    .user
                    .map(|uid| format!(" and uid {uid}, the user it serves as,"))
                    .unwrap_or_default()
            ))
        }
        None => Response::refused("cannot tell who is asking (no peer credentials)"),
    };
    let _ = stream.try_write(&response_line(&response));
}

/// One admitted connection: what, answer.
async fn serve(
    stream: UnixStream,
    peer: UCred,
    board: &Targets,
    scenario: &Arc<Mutex<Option<JoinHandle<()>>>>,
) {
    let (reader, mut writer) = stream.into_split();
    let response = match read_request(reader).await {
        Err(refusal) => Response::refused(refusal),
        Ok(request) => {
            let who = format!(
                "uid {}{}",
                peer.uid(),
                peer.pid()
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default()
            );
            execute(request, board, scenario, &who).await
        }
    };
    let line = response_line(&response);
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, writer.write_all(&line)).await;
}

/// A response as the one JSON line the protocol sends.
fn response_line(response: &Response) -> Vec<u8> {
    let mut line = serde_json::to_vec(response).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    line.push(b'\n');
    line
}

async fn read_request(reader: tokio::net::unix::OwnedReadHalf) -> Result<Request, String> {
    let mut line = Vec::new();
    let limited = tokio::io::AsyncReadExt::take(reader, MAX_REQUEST_BYTES as u64 + 1);
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        BufReader::new(limited).read_until(b'\n', &mut line),
    )
    .await;
    match read {
        Err(_) => return Err(format!("no request within {} s", REQUEST_TIMEOUT.as_secs())),
        Ok(Err(error)) => return Err(format!("reading the request failed: {error}")),
        Ok(Ok(_)) => {}
    }
    if line.len() > MAX_REQUEST_BYTES {
        return Err(format!(
            "the request is longer than {MAX_REQUEST_BYTES} bytes"
        ));
    }
    let request: Request = serde_json::from_slice(&line)
        .map_err(|error| format!("not a request imds-tun understands: {error}"))?;
    protocol::validate(&request)?;
    Ok(request)
}

async fn execute(
    request: Request,
    targets: &Targets,
    scenario: &Arc<Mutex<Option<JoinHandle<()>>>>,
    who: &str,
) -> Response {
    let now = OffsetDateTime::now_utc();
    match request {
        Request::Status => {
            let mut status = status(targets, now);
            targets.serving.add_to(&mut status);
            add_faults(&mut status, targets);
            Response::ok(status)
        }
        Request::Play { steps } => {
            let count = steps.len();
            start_scenario(scenario, targets.clone(), steps).await;
            tracing::info!("ctl: {who} started a scenario of {count} steps");
            Response::ok(status(targets, now))
        }
        Request::FaultList => Response::ok(fault_list(targets)),
        Request::Callers { reset } => callers_report(&targets.callers, reset, who, now),
        Request::TokensExpire => match expire_tokens(targets, who) {
            Ok(()) => {
                let mut status = status(targets, now);
                targets.serving.add_to(&mut status);
                Response::ok(status)
            }
            Err(error) => Response::refused(error),
        },
        Request::FaultClear => {
            let ended = end_faults(targets);
            tracing::info!("ctl: {who} cleared {}", ended.describe());
            Response::ok(fault_list(targets))
        }
        request @ Request::Fault { .. } => match set_fault(&request, targets, who) {
            Ok(()) => Response::ok(fault_list(targets)),
            Err(error) => Response::refused(error),
        },
        request => {
            if request == Request::Clear
                && let Some(task) = scenario.lock().await.take()
            {
                task.abort();
            }
            match change(targets, &request, now) {
                Ok(status) => {
                    tracing::info!("ctl: {who}: {}", describe(&request));
                    Response::ok(status)
                }
                Err(error) => Response::refused(error),
            }
        }
    }
}

/// What ending the faults ended: `fault clear`, and `clear` (which ends everything).
struct EndedFaults {
    faults: usize,
    outage: bool,
    expired: bool,
}

impl EndedFaults {
    /// For the log: `2 fault(s) and the credential-source outage`.
    fn describe(&self) -> String {
        format!(
            "{} fault(s){}{}",
            self.faults,
            if self.outage {
                " and the credential-source outage"
            } else {
                ""
            },
            if self.expired {
                " and the expired credentials"
            } else {
                ""
            }
        )
    }
}

/// Ends every fault: the HTTP faults, a packet-budget fault (back to the start's budget), a
/// credential-source outage and expired credentials.
fn end_faults(targets: &Targets) -> EndedFaults {
    let ended = EndedFaults {
        faults: targets.faults.clear(),
        outage: targets.outage.is_down(),
        expired: targets.outage.expired_since().is_some(),
    };
    if let Some(budget) = &targets.serving.packets {
        budget.restore();
    }
    targets.outage.end();
    targets.outage.end_expired();
    ended
}

/// Sets a fault (and its expiry, logged once), or a credential-source outage; refused when
/// [`MAX_FAULTS`] stand already.
fn set_fault(request: &Request, targets: &Targets, who: &str) -> Result<(), String> {
    let faults = &targets.faults;
    let Request::Fault {
        spec,
        r#for,
        credential_source,
        packet_budget,
        expired_credentials,
    } = request
    else {
        return Ok(());
    };
    let until = r#for.map(|seconds| tokio::time::Instant::now() + Duration::from_secs(seconds));
    let lasting = r#for.map_or("until cleared".to_owned(), |s| format!("for {s} s"));
    if let Some(spec) = spec.as_ref().filter(|spec| !spec.is_empty()) {
        if faults.list(tokio::time::Instant::now()).len() >= MAX_FAULTS {
            return Err(format!(
                "{MAX_FAULTS} faults stand already; `imds-tun ctl fault clear` removes them, or \
                 give new ones --for SECONDS"
            ));
        }
        let id = faults.add(spec.clone(), until);
        tracing::info!(
            "ctl: {who} set fault {id} {lasting}: {}",
            serde_json::to_string(spec).unwrap_or_default()
        );
        if let Some(until) = until {
            let faults = faults.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(until).await;
                for fault in faults.expire(tokio::time::Instant::now()) {
                    tracing::info!("fault {} expired", fault.id);
                }
            });
        }
    }
    if let Some(packets_per_second) = *packet_budget {
        let Some(budget) = &targets.serving.packets else {
            return Err(
                "the packet budget drops packets in the TUN's stack, and this imds-tun runs \
                 without a TUN (--no-tun)"
                    .into(),
            );
        };
        let generation = budget.set(packets_per_second);
        tracing::info!(
            "ctl: {who} set a packet budget of {packets_per_second} packets a second {lasting}"
        );
        if let Some(until) = until {
            let budget = budget.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(until).await;
                if budget.restore_if(generation) {
                    tracing::info!("the packet budget fault ended");
                }
            });
        }
    }
    if credential_source.is_some() {
        targets.outage.begin(until);
        tracing::info!("ctl: {who} took the credential source down {lasting}");
        if let Some(until) = until {
            let outage = targets.outage.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(until).await;
                if !outage.is_down() {
                    tracing::info!("the credential-source outage ended");
                }
            });
        }
    }
    if *expired_credentials {
        targets
            .outage
            .expire_credentials(OffsetDateTime::now_utc(), until);
        tracing::info!("ctl: {who} made the served credentials expired {lasting}");
        if let Some(until) = until {
            let outage = targets.outage.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(until).await;
                if outage.expired_since().is_none() {
                    tracing::info!("the expired-credentials fault ended: fresh credentials");
                }
            });
        }
    }
    Ok(())
}

/// `tokens expire`: every IMDSv2 token issued so far answers 401 from now on.
fn expire_tokens(targets: &Targets, who: &str) -> Result<(), String> {
    let Some(mint) = &targets.serving.tokens else {
        return Err("no IMDSv2 tokens are issued here (imds-tun forwards with --upstream)".into());
    };
    mint.expire_all();
    tracing::info!(
        "ctl: {who} expired every IMDSv2 token issued so far ({}); new tokens work",
        mint.issued()
    );
    Ok(())
}

/// The callers report as the status; with `reset`, as it stood, the table emptied, and a
/// note saying so.
fn callers_report(callers: &Callers, reset: bool, who: &str, now: OffsetDateTime) -> Response {
    let report = if reset {
        callers.take(now)
    } else {
        callers.report()
    };
    let mut response = Response::ok(serde_json::to_value(&report).unwrap_or_default());
    if reset {
        tracing::info!(
            "ctl: {who} emptied the callers table ({} callers)",
            report.callers.len()
        );
        response.notes.push(format!(
            "emptied the callers table after reading it ({} caller(s) counted since {}); \
             counting again from now",
            report.callers.len(),
            report.since
        ));
    }
    response
}

/// `status`'s view of the faults: [`fault_list`]'s keys beside the interruptions'.
fn add_faults(status: &mut serde_json::Value, targets: &Targets) {
    if let (Some(object), serde_json::Value::Object(faults)) =
        (status.as_object_mut(), fault_list(targets))
    {
        object.extend(faults);
    }
}

/// The faults standing, with their remaining seconds, the outage and the expired credentials
/// (the `Expiration` served, or `null`).
fn fault_list(targets: &Targets) -> serde_json::Value {
    let now = tokio::time::Instant::now();
    serde_json::json!({
        "faults": targets.faults.list(now).iter().map(|fault| {
            let mut entry = serde_json::to_value(&fault.spec).unwrap_or_default();
            entry["id"] = fault.id.into();
            entry["remaining_seconds"] = fault
                .until
                .map(|until| until.saturating_duration_since(now).as_secs_f64().ceil() as u64)
                .into();
            entry
        }).collect::<Vec<_>>(),
        "credential_source": if targets.outage.is_down() { "down" } else { "up" },
        "packet_budget": targets.serving.packets.as_ref().and_then(PacketBudget::rate),
        "packets_over_budget": targets.serving.packets.as_ref().map(PacketBudget::dropped),
        "expired_credentials": targets.outage.expired_since().and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339).ok()
        }),
    })
}

/// Applies one request to the board it changes (EC2's, GCE's or Azure's; `clear` all of
/// them); the new status, or why nothing changed.
fn change(
    targets: &Targets,
    request: &Request,
    now: OffsetDateTime,
) -> Result<serde_json::Value, String> {
    let random = random_u128();
    if let Some(outcome) = targets.clouds.apply(request, now, random) {
        return outcome.map(|()| status(targets, now));
    }
    let mut outcome = Ok(());
    targets.board.update(|state| {
        let mut next = state.clone();
        outcome = protocol::apply(request, &mut next, now, random);
        if outcome.is_ok() {
            *state = next;
        }
    });
    if outcome.is_ok() && *request == Request::Clear {
        targets.clouds.clear(now);
        end_faults(targets);
    }
    outcome.map(|()| status(targets, now))
}

/// What is active at `now`: the EC2 interruptions, and the GCE and Azure events.
fn status(targets: &Targets, now: OffsetDateTime) -> serde_json::Value {
    let mut status = targets.board.snapshot().status(now);
    targets.clouds.add_to(&mut status, now);
    status
}

/// Replaces the running scenario with `steps`, each applied at its offset from now.
async fn start_scenario(
    scenario: &Arc<Mutex<Option<JoinHandle<()>>>>,
    targets: Targets,
    mut steps: Vec<Step>,
) {
    steps.sort_by_key(|step| step.at);
    let started = tokio::time::Instant::now();
    let task = tokio::spawn(async move {
        for step in steps {
            tokio::time::sleep_until(started + Duration::from_secs(step.at)).await;
            if matches!(step.request, Request::Fault { .. }) {
                if let Err(error) = set_fault(&step.request, &targets, "scenario") {
                    tracing::warn!("scenario at +{}s: {error}", step.at);
                }
                continue;
            }
            if step.request == Request::TokensExpire {
                if let Err(error) = expire_tokens(&targets, "scenario") {
                    tracing::warn!("scenario at +{}s: {error}", step.at);
                }
                continue;
            }
            if step.request == Request::FaultClear {
                let ended = end_faults(&targets);
                tracing::info!("scenario at +{}s: cleared {}", step.at, ended.describe());
                continue;
            }
            match change(&targets, &step.request, OffsetDateTime::now_utc()) {
                Ok(_) => tracing::info!("scenario at +{}s: {}", step.at, describe(&step.request)),
                Err(error) => tracing::warn!("scenario at +{}s: {error}", step.at),
            }
        }
    });
    if let Some(previous) = scenario.lock().await.replace(task) {
        previous.abort();
    }
}

/// One line for the log: what changed.
fn describe(request: &Request) -> String {
    match request {
        Request::Spot { action, r#in } => {
            format!("spot interruption notice: {} in {in} s", action.as_str(), in = r#in)
        }
        Request::Rebalance { r#in } => format!("rebalance recommendation in {} s", r#in),
        Request::Event {
            code,
            r#in,
            duration,
        } => format!(
            "scheduled event {} in {} s for {duration} s",
            code.as_str(),
            r#in
        ),
        Request::EndEvent { id, how } => format!("ended event {id} ({how:?})"),
        Request::Lifecycle { state } => format!("target lifecycle state {state}"),
        Request::Clear => {
            "cleared: an on-demand instance with nothing pending, and no fault".into()
        }
        Request::Status => "status".into(),
        Request::Play { steps } => format!("scenario of {} steps", steps.len()),
        Request::Fault { .. } => "fault".into(),
        Request::FaultList => "fault list".into(),
        Request::FaultClear => "fault clear".into(),
        Request::Callers { .. } => "callers".into(),
        Request::TokensExpire => "expired every IMDSv2 token".into(),
        Request::GcePreempt => "GCE: the instance is preempted".into(),
        Request::GceMaintenance { event } => {
            format!("GCE: maintenance-event {}", event.as_str())
        }
        Request::AzureEvent {
            r#type,
            not_before,
            duration,
        } => format!(
            "Azure: scheduled event {} in {} s for {} s",
            r#type.as_str(),
            not_before.unwrap_or_else(|| r#type.notice_seconds()),
            duration.unwrap_or_else(|| r#type.duration_seconds())
        ),
    }
}

fn random_u128() -> u128 {
    let mut bytes = [0u8; 16];
    // Event ids only need to differ; the time is a fallback if the system has no randomness.
    if getrandom::fill(&mut bytes).is_err() {
        return OffsetDateTime::now_utc()
            .unix_timestamp_nanos()
            .unsigned_abs();
    }
    u128::from_le_bytes(bytes)
}
