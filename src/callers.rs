//! The callers report: who has called since start (or since the last `ctl callers --reset`),
//! how often, how often without a session token (IMDSv1), and whether they read credentials.
//! It answers "who still calls without a token?" before an account requires IMDSv2.
//!
//! One entry per caller, keyed by what is known of it when its request is counted:
//! - a local caller whose process was found: its uid, pid and command (`exe` and `cgroup` are
//!   kept beside them when they could be read);
//! - a local caller whose process was not looked up or not found: its uid alone, without a
//!   pid. Finding a process is a bounded `/proc` scan, so it is done for a few connections per
//!   caller per second only ([`sampling`]); every other connection of that user counts here.
//!   The entry says so by having no pid: it is that user, some process;
//! - anyone else (forwarded from a container or another host, translated, or a socket the
//!   kernel could not name): its source address, and a forwarded caller's container's cgroup
//!   when it was found.
//!
//! Bounded: at most [`MAX_CALLERS`] entries; a new caller beyond it first drops the entry idle
//! the longest, and the report counts the drops. Each entry keeps at most
//! [`MAX_TOKENLESS_PATHS`] distinct tokenless paths, each cut as a log line cuts client text
//! ([`crate::log_limit::bounded`]).
//!
//! What it does not do: know HTTP or any cloud (the HTTP layer tells it what each request was),
//! look anything up itself (it is handed a [`CallerIdentity`]), or read a clock (each request's
//! time is handed in). The report's shape, the table `ctl callers` prints and the lines logged
//! at exit are [`report`]'s.

pub mod report;
pub mod sampling;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use time::OffsetDateTime;

use crate::attribution::{Caller, CallerIdentity, Cgroup, Origin};
pub use report::{CallerEntry, Report};
use sampling::Sampling;

/// The most callers the table keeps; beyond it the one idle the longest is dropped (and
/// counted). 1024 entries of at most [`MAX_TOKENLESS_PATHS`] short paths stay under 2 MiB.
pub const MAX_CALLERS: usize = 1024;

/// The most distinct tokenless paths kept per caller.
pub const MAX_TOKENLESS_PATHS: usize = 10;

/// The longest `exe` or `cgroup` kept, in characters (a path a process chose).
pub const MAX_KEPT_PATH_CHARS: usize = 256;

/// One answered request, as the callers report counts it.
#[derive(Debug, Clone, Copy)]
pub struct Visit<'a> {
    /// The request's path, as the client sent it (client-chosen: cut before it is kept).
    pub path: &'a str,
    /// Asked without the session token its protocol offers (IMDSv1), served or refused.
    pub tokenless: bool,
    /// The answer handed out a credential.
    pub credentials_read: bool,
    /// When it was answered.
    pub at: OffsetDateTime,
}

/// What a caller is told apart by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// A local process that was found.
    Process {
        uid: u32,
        pid: u32,
        command: Option<String>,
    },
    /// A local user whose process was not looked up, or not found.
    User(u32),
    /// Anyone known by source address only.
    Address(IpAddr),
}

impl Key {
    fn of(identity: &CallerIdentity) -> Key {
        match (identity.origin, identity.uid, identity.pid) {
            (Origin::Local, Some(uid), Some(pid)) => Key::Process {
                uid,
                pid,
                // At most 15 bytes (the kernel's), but any bytes a process chose.
                command: identity
                    .command
                    .as_deref()
                    .map(|command| shown(command, command.len()).into_owned()),
            },
            (Origin::Local, Some(uid), None) => Key::User(uid),
            _ => Key::Address(match identity.key() {
                Caller::Address(address) => address,
                // A local caller always has a uid here; the key is never a user's.
                Caller::User(_) => IpAddr::from([0, 0, 0, 0]),
            }),
        }
    }
}

/// What is counted for one caller.
#[derive(Debug, Clone)]
struct Entry {
    origin: Origin,
    exe: Option<String>,
    cgroup: Option<String>,
    requests: u64,
    tokenless: u64,
    credentials_reads: u64,
    first_seen: OffsetDateTime,
    last_seen: OffsetDateTime,
    tokenless_paths: Vec<String>,
    last_tokenless_path: Option<String>,
}

/// The table behind the lock.
#[derive(Debug)]
struct Table {
    entries: HashMap<Key, Entry>,
    dropped: u64,
    since: OffsetDateTime,
    /// Whether `since` is a `--reset`'s time rather than the start's.
    reset: bool,
}

/// The callers seen, shared by every connection; one per process.
#[derive(Debug)]
pub struct Callers {
    limit: usize,
    table: Mutex<Table>,
    sampling: Sampling,
}

impl Callers {
    /// An empty table of at most [`MAX_CALLERS`] callers, counting from `now`.
    pub fn new(now: OffsetDateTime) -> Callers {
        Callers::with_limit(MAX_CALLERS, now)
    }

    /// An empty table of at most `limit` callers (at least one), counting from `now`.
    pub fn with_limit(limit: usize, now: OffsetDateTime) -> Callers {
        Callers {
            limit: limit.max(1),
            table: Mutex::new(Table {
                entries: HashMap::new(),
                dropped: 0,
                since: now,
                reset: false,
            }),
            sampling: Sampling::default(),
        }
    }

    /// Whether the process behind a new connection of `caller` may be looked up now for the
    /// report ([`sampling`]); connections it is not looked up for count under their user.
    pub fn process_lookup_due(&self, caller: Caller, now: std::time::Instant) -> bool {
        self.sampling.due(caller, now)
    }

    /// Counts `visit` for the caller `identity` names.
    pub fn record(&self, identity: &CallerIdentity, visit: &Visit<'_>) {
        let key = Key::of(identity);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if !table.entries.contains_key(&key) && table.entries.len() >= self.limit {
            table.drop_idlest();
        }
        let entry = table.entries.entry(key).or_insert_with(|| Entry {
            origin: identity.origin,
            exe: None,
            cgroup: None,
            requests: 0,
            tokenless: 0,
            credentials_reads: 0,
            first_seen: visit.at,
            last_seen: visit.at,
            tokenless_paths: Vec::new(),
            last_tokenless_path: None,
        });
        if entry.exe.is_none()
            && let Some(exe) = &identity.exe
        {
            entry.exe = Some(shown(exe, MAX_KEPT_PATH_CHARS).into_owned());
        }
        if entry.cgroup.is_none()
            && let Cgroup::Found(path) = &identity.cgroup
        {
            entry.cgroup = Some(shown(path, MAX_KEPT_PATH_CHARS).into_owned());
        }
        entry.requests = entry.requests.saturating_add(1);
        entry.last_seen = entry.last_seen.max(visit.at);
        if visit.credentials_read {
            entry.credentials_reads = entry.credentials_reads.saturating_add(1);
        }
        if visit.tokenless {
            entry.tokenless = entry.tokenless.saturating_add(1);
            entry.note_tokenless_path(visit.path);
        }
    }

    /// The report as it stands.
    pub fn report(&self) -> Report {
        let mut report = {
            let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            Report::of(&table, self.limit)
        };
        report.name_users();
        report
    }

    /// The report as it stood, and an empty table counting again from `now`
    /// (`ctl callers --reset`): nothing counted between the read and the reset is lost.
    pub fn take(&self, now: OffsetDateTime) -> Report {
        let mut report = {
            let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            let report = Report::of(&table, self.limit);
            *table = Table {
                entries: HashMap::new(),
                dropped: 0,
                since: now,
                reset: true,
            };
            report
        };
        report.name_users();
        report
    }

    /// Whether the table was emptied by `ctl callers --reset` since the start.
    pub fn was_reset(&self) -> bool {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reset
    }
}

impl Table {
    /// Drops the entry idle the longest (the oldest `last_seen`) and counts it.
    fn drop_idlest(&mut self) {
        let idlest = self
            .entries
            .iter()
            .min_by_key(|(_, entry)| entry.last_seen)
            .map(|(key, _)| key.clone());
        if let Some(key) = idlest {
            self.entries.remove(&key);
            self.dropped = self.dropped.saturating_add(1);
        }
    }
}

impl Entry {
    /// Keeps `path` as the last tokenless path and, while there is room, among the distinct
    /// ones. Allocates only for a path not already kept.
    fn note_tokenless_path(&mut self, path: &str) {
        let shown = shown(path, crate::log_limit::MAX_LOGGED_CHARS);
        if self.last_tokenless_path.as_deref() != Some(shown.as_ref()) {
            self.last_tokenless_path = Some(shown.clone().into_owned());
        }
        if self.tokenless_paths.len() < MAX_TOKENLESS_PATHS
            && !self.tokenless_paths.iter().any(|kept| *kept == shown)
        {
            self.tokenless_paths.push(shown.into_owned());
        }
    }
}

/// Client-chosen `text` as the report keeps it: at most `max` characters, control characters
/// and quotes escaped as in a log line ([`crate::log_limit::bounded`]), a cut marked with
/// `...`; borrowed when it needs neither (the usual metadata path).
fn shown(text: &str, max: usize) -> Cow<'_, str> {
    let plain = text.len() <= max
        && text
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && !matches!(byte, b'"' | b'\'' | b'\\'));
    if plain {
        return Cow::Borrowed(text);
    }
    let mut kept = String::new();
    let mut characters = text.chars();
    for character in characters.by_ref().take(max) {
        kept.extend(character.escape_debug());
    }
    if characters.next().is_some() {
        kept.push_str("...");
    }
    Cow::Owned(kept)
}

#[cfg(test)]
mod tests;
