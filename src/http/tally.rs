//! What each answered request adds to the callers report ([`crate::callers`]), and when its
//! caller's process is looked up for it.
//!
//! The report needs to know who asked, and the data path must not slow for it. So:
//! - every connection's caller is classified once, at its first request: kernel questions only
//!   (the socket's owner, whether the address is ours), microseconds;
//! - the process behind it is looked up (a bounded `/proc` scan) for a few connections per
//!   caller per second only ([`crate::callers::sampling`]), in the fair lookup slots and never
//!   twice at once for one caller ([`crate::attribution::LookupSlots::acquire_unless_busy`]);
//!   the other connections count under their user without a pid;
//! - a sampled connection's lookup starts as its first request arrives, while the answer is
//!   being made, and that answer waits for it, at most [`crate::attribution::SCAN_BUDGET`]: a
//!   one-shot `curl` exits as soon as it has its answer, and a process that is gone cannot be
//!   named. Only sampled connections wait, once each, so a flood waits a few times a second.
//!   A lookup that runs out of time is counted when it ends.
//!
//! Counting is one short lock per request; a connection not sampled adds no task and no wait.

use std::sync::Arc;
use std::time::Instant;

use time::OffsetDateTime;

use super::{ConnectionCaller, Reply};
use crate::attribution::{CallerIdentity, Origin, SCAN_BUDGET};
use crate::callers::{Callers, Visit};

/// One request on its way to the callers report.
pub(super) struct Tally {
    callers: Arc<Callers>,
    caller: ConnectionCaller,
    /// This connection's process is being looked up for the report.
    lookup: bool,
}

impl Tally {
    /// At a request's arrival: decides once per connection whether its process is looked up
    /// for the report and, if so, starts the lookup. `None` when nothing is counted (no report,
    /// or no attribution to say who).
    pub(super) fn begin(
        callers: Option<&Arc<Callers>>,
        caller: Option<&ConnectionCaller>,
    ) -> Option<Tally> {
        let (callers, caller) = (callers?, caller?);
        let lookup = *caller.known.report_lookup.get_or_init(|| {
            let identity = caller.classified();
            let due = has_a_process_to_find(identity)
                && callers.process_lookup_due(identity.key(), Instant::now());
            if due {
                let caller = caller.clone();
                tokio::spawn(async move {
                    caller.audited().await;
                });
            }
            due
        });
        Some(Tally {
            callers: callers.clone(),
            caller: caller.clone(),
            lookup,
        })
    }

    /// Counts the request once `reply` exists, answered at `at`: with the process when it is
    /// known; a reply on a sampled connection first waits for the lookup (at most
    /// [`SCAN_BUDGET`]), and is counted when it ends if it takes longer.
    pub(super) async fn count(self, path: &str, reply: &Reply, at: OffsetDateTime) {
        let visit = Visit {
            path,
            tokenless: reply.tokenless,
            credentials_read: reply.credentials_read.is_some(),
            at,
        };
        let known = &self.caller.known;
        if let Some(done) = known.audited.get() {
            return self.callers.record(done, &visit);
        }
        if !self.lookup {
            let identity = known
                .decided
                .get()
                .unwrap_or_else(|| self.caller.classified());
            return self.callers.record(identity, &visit);
        }
        if let Ok(identity) = tokio::time::timeout(SCAN_BUDGET, self.caller.audited()).await {
            return self.callers.record(&identity, &visit);
        }
        let path = path.to_owned();
        let (tokenless, credentials_read) = (visit.tokenless, visit.credentials_read);
        tokio::spawn(async move {
            let identity = self.caller.audited().await;
            self.callers.record(
                &identity,
                &Visit {
                    path: &path,
                    tokenless,
                    credentials_read,
                    at,
                },
            );
        });
    }
}

/// Whether a lookup could add anything: a local caller's process (found by its socket's
/// inode), a forwarded caller's container.
fn has_a_process_to_find(identity: &CallerIdentity) -> bool {
    match identity.origin {
        Origin::Local => identity.inode.is_some() && identity.pid.is_none(),
        Origin::Forwarded => true,
        Origin::Translated | Origin::Unidentified(_) => false,
    }
}
