//! The callers report as others see it: the JSON `ctl callers --json` prints (its shape is a
//! contract: [`Report`], documented in docs/metadata.md), the table `ctl callers` prints, and
//! the lines logged at exit.
//!
//! Ordered for the question it answers: callers with tokenless (IMDSv1) requests first, most
//! tokenless first, then by requests, then the most recently seen. User names are looked up
//! when a report is made, not per request (`/etc/passwd` or NSS, once per uid per report).

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Entry, Key, Table};
use crate::attribution::Origin;

/// The most tokenless callers named at exit, one line each.
pub const EXIT_LINES: usize = 20;

/// The callers report (`ctl callers --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `"since"`: when counting began (the start, or the last `--reset`), RFC 3339.
    pub since: String,
    /// `"dropped"`: callers dropped to keep the table within `limit` since then.
    pub dropped: u64,
    /// `"limit"`: the most callers kept.
    pub limit: usize,
    /// `"callers"`: tokenless callers first (most tokenless first), then by requests.
    pub callers: Vec<CallerEntry>,
}

/// One caller of the report; a key it does not know is `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerEntry {
    /// `"origin"`: `local` (a process of this host's network namespace), `forwarded` (another
    /// namespace or host), `translated` (masqueraded on its way in) or `unidentified`.
    pub origin: String,
    /// `"uid"`: the owner of a local caller's socket.
    pub uid: Option<u32>,
    /// `"user"`: that uid's name, where the password database has one.
    pub user: Option<String>,
    /// `"pid"`: the process, when it was looked up and found; `null` counts the user's other
    /// connections.
    pub pid: Option<u32>,
    /// `"command"`: `/proc/PID/comm`.
    pub command: Option<String>,
    /// `"exe"`: `/proc/PID/exe`, when it could be read.
    pub exe: Option<String>,
    /// `"cgroup"`: the caller's cgroup (a forwarded caller's container's), when known.
    pub cgroup: Option<String>,
    /// `"address"`: the source address of a caller that is not local.
    pub address: Option<String>,
    /// `"requests"`: requests answered.
    pub requests: u64,
    /// `"tokenless"`: of those, asked without a session token (IMDSv1), served or refused.
    pub tokenless: u64,
    /// `"credentials_reads"`: of those, answers that handed out a credential.
    pub credentials_reads: u64,
    /// `"first_seen"`: RFC 3339.
    pub first_seen: String,
    /// `"last_seen"`: RFC 3339.
    pub last_seen: String,
    /// `"tokenless_paths"`: up to 10 distinct paths asked without a token, in order first seen.
    pub tokenless_paths: Vec<String>,
    /// `"last_tokenless_path"`: the latest of them.
    pub last_tokenless_path: Option<String>,
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .unwrap_or_default()
}

impl Report {
    /// The report of `table`, ordered (users not named yet: [`Report::name_users`]).
    pub(super) fn of(table: &Table, limit: usize) -> Report {
        let mut entries: Vec<(&Key, &Entry)> = table.entries.iter().collect();
        entries.sort_by(|(_, a), (_, b)| {
            b.tokenless
                .cmp(&a.tokenless)
                .then(b.requests.cmp(&a.requests))
                .then(b.last_seen.cmp(&a.last_seen))
        });
        Report {
            since: rfc3339(table.since),
            dropped: table.dropped,
            limit,
            callers: entries
                .into_iter()
                .map(|(key, entry)| CallerEntry::of(key, entry))
                .collect(),
        }
    }

    /// Fills in each uid's name from the password database.
    pub(super) fn name_users(&mut self) {
        let mut names: HashMap<u32, Option<String>> = HashMap::new();
        for caller in &mut self.callers {
            if let Some(uid) = caller.uid {
                caller.user = names.entry(uid).or_insert_with(|| user_name(uid)).clone();
            }
        }
    }

    /// The callers with tokenless requests.
    pub fn tokenless_callers(&self) -> impl Iterator<Item = &CallerEntry> {
        self.callers.iter().filter(|caller| caller.tokenless > 0)
    }

    /// What `ctl callers` prints: a heading line, then one line per caller (tokenless first)
    /// and, under a tokenless caller, the paths it asked.
    pub fn table(&self) -> String {
        let mut text = String::new();
        let tokenless = self.tokenless_callers().count();
        let _ = writeln!(
            text,
            "{} caller(s) since {}, {tokenless} of them tokenless (IMDSv1); {} dropped (at most {} kept)",
            self.callers.len(),
            self.since,
            self.dropped,
            self.limit
        );
        if self.callers.is_empty() {
            return text;
        }
        let _ = writeln!(
            text,
            "{:>9}  {:>8}  {:>11}  {:<20}  CALLER",
            "TOKENLESS", "REQUESTS", "CREDENTIALS", "LAST SEEN"
        );
        for caller in &self.callers {
            let _ = writeln!(
                text,
                "{:>9}  {:>8}  {:>11}  {:<20}  {}",
                caller.tokenless,
                caller.requests,
                caller.credentials_reads,
                caller.last_seen,
                match &caller.exe {
                    Some(exe) => format!("{} {exe}", caller.describe()),
                    None => caller.describe(),
                }
            );
            if caller.tokenless > 0 {
                let _ = writeln!(
                    text,
                    "{:56}tokenless: {}",
                    "",
                    caller.tokenless_paths.join(" ")
                );
            }
        }
        text
    }
}

impl CallerEntry {
    fn of(key: &Key, entry: &Entry) -> CallerEntry {
        let (uid, pid, command, address) = match key {
            Key::Process { uid, pid, command } => (Some(*uid), Some(*pid), command.clone(), None),
            Key::User(uid) => (Some(*uid), None, None, None),
            Key::Address(address) => (None, None, None, Some(address.to_string())),
        };
        CallerEntry {
            origin: match entry.origin {
                Origin::Local => "local",
                Origin::Forwarded => "forwarded",
                Origin::Translated => "translated",
                Origin::Unidentified(_) => "unidentified",
            }
            .to_owned(),
            uid,
            user: None,
            pid,
            command,
            exe: entry.exe.clone(),
            cgroup: entry.cgroup.clone(),
            address,
            requests: entry.requests,
            tokenless: entry.tokenless,
            credentials_reads: entry.credentials_reads,
            first_seen: rfc3339(entry.first_seen),
            last_seen: rfc3339(entry.last_seen),
            tokenless_paths: entry.tokenless_paths.clone(),
            last_tokenless_path: entry.last_tokenless_path.clone(),
        }
    }

    /// Who this is, in words: `pid 4242 (curl) uid 65534 (nobody)`, `uid 1000 (alice), process
    /// not identified`, `172.17.0.2 (cgroup /docker/abc)`.
    pub fn describe(&self) -> String {
        let mut words = Vec::new();
        if let Some(pid) = self.pid {
            words.push(format!(
                "pid {pid} ({})",
                self.command.as_deref().unwrap_or("?")
            ));
        }
        if let Some(uid) = self.uid {
            match &self.user {
                Some(user) => words.push(format!("uid {uid} ({user})")),
                None => words.push(format!("uid {uid}")),
            }
            if self.pid.is_none() {
                return format!("{}, process not identified", words.join(" "));
            }
        }
        if let Some(address) = &self.address {
            words.push(address.clone());
            if self.origin != "forwarded" {
                words.push(format!("({})", self.origin));
            }
        }
        if let Some(cgroup) = &self.cgroup
            && self.uid.is_none()
        {
            words.push(format!("(cgroup {cgroup})"));
        }
        words.join(" ")
    }
}

/// The passwd name of `uid`, if it has one.
fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name)
}

/// Logs at info level (target `imds_tun::caller`) the tokenless callers of `report`, the
/// [`EXIT_LINES`] with the most tokenless requests, after one total line; or, when there
/// were none, that there were none (a run that ends with the answer says it either way).
/// `since_start`: the table was never reset, so it covers the whole run.
pub fn log_at_exit(report: &Report, since_start: bool) {
    let tokenless: Vec<&CallerEntry> = report.tokenless_callers().collect();
    let heading = if since_start {
        "IMDSv1 (tokenless) callers since start".to_owned()
    } else {
        format!(
            "IMDSv1 (tokenless) callers since {} (ctl callers --reset)",
            report.since
        )
    };
    if tokenless.is_empty() {
        tracing::info!(
            target: crate::logging::CALLER_TARGET,
            callers = 0u64,
            tokenless = 0u64,
            "no {heading}"
        );
        return;
    }
    let requests: u64 = tokenless.iter().map(|caller| caller.tokenless).sum();
    let more = tokenless.len().saturating_sub(EXIT_LINES);
    let dropped = if report.dropped > 0 {
        format!(
            " ({} caller(s) dropped from the full table, not counted here)",
            report.dropped
        )
    } else {
        String::new()
    };
    tracing::info!(
        target: crate::logging::CALLER_TARGET,
        callers = tokenless.len(),
        tokenless = requests,
        "{heading}: {}, {}{dropped}",
        counted(tokenless.len() as u64, "caller"),
        counted(requests, "request")
    );
    for caller in tokenless.iter().take(EXIT_LINES) {
        let last = caller
            .last_tokenless_path
            .as_deref()
            .map(|path| format!(", last {path}"))
            .unwrap_or_default();
        tracing::info!(
            target: crate::logging::CALLER_TARGET,
            uid = caller.uid,
            pid = caller.pid,
            command = caller.command.as_deref(),
            address = caller.address.as_deref(),
            tokenless = caller.tokenless,
            "{}: {}{last}",
            caller.describe(),
            counted(caller.tokenless, "tokenless request")
        );
    }
    if more > 0 {
        tracing::info!(
            target: crate::logging::CALLER_TARGET,
            "and {more} more tokenless callers (imds-tun ctl callers lists them while it runs)"
        );
    }
}

/// `1 caller`, `3 callers`: the exit lines are read by people.
fn counted(count: u64, noun: &str) -> String {
    match count {
        1 => format!("1 {noun}"),
        _ => format!("{count} {noun}s"),
    }
}
