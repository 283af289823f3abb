//! Linux capabilities: what is given up, and the proof that it is gone.
//!
//! Capability sets and no_new_privs belong to each thread, and threads inherit them from the
//! thread that creates them. So the sets that need no further use (bounding, ambient,
//! inheritable, no_new_privs) are cut while the process still has one thread, before the async
//! runtime starts its workers; the effective and permitted sets go later, when every thread
//! switches away from root (glibc applies `setresuid` to all threads, and the kernel clears
//! both sets when no user id is 0 any more). The check reads every thread's status.

use caps::CapSet;

/// Why the capability sets could not be cut or proven empty.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    /// Cutting a set before the threads start failed.
    #[error("cannot give up capabilities: {step} failed: {message}")]
    Restrict {
        /// What was being done (`PR_SET_NO_NEW_PRIVS`, "clearing the ambient set", ...).
        step: &'static str,
        /// The error of that call, as text.
        message: String,
    },
    /// After the switch of ids a thread still holds a capability or lacks no_new_privs.
    #[error("thread {thread} still holds privileges after the drop ({what}); refusing to serve")]
    StillPrivileged {
        /// The thread's id under `/proc/self/task`, or `?` when the threads could not be listed.
        thread: String,
        /// What it still holds (`CapBnd 0x1ffffffffff`, `NoNewPrivs not set`, ...).
        what: String,
    },
}

/// Cuts what no exec of ours may ever regain: no_new_privs, the bounding set (when we may
/// change it), the ambient and inheritable sets. Call it before any thread is started.
pub fn restrict_inheritance() -> Result<(), CapabilityError> {
    let fail = |step: &'static str| {
        move |error: &dyn std::fmt::Display| CapabilityError::Restrict {
            step,
            message: error.to_string(),
        }
    };
    nix::sys::prctl::set_no_new_privs().map_err(|e| fail("PR_SET_NO_NEW_PRIVS")(&e))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| fail("clearing the ambient set")(&e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| fail("clearing the inheritable set")(&e))?;
    // Changing the bounding set needs CAP_SETPCAP; without it (a service started with only
    // CAP_NET_ADMIN) the set was already narrowed by whoever started us.
    if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false) {
        caps::clear(None, CapSet::Bounding).map_err(|e| fail("clearing the bounding set")(&e))?;
    }
    Ok(())
}

/// Proves that every thread of this process holds no capability in any set and has
/// no_new_privs set.
pub fn verify_unprivileged() -> Result<(), CapabilityError> {
    let threads =
        std::fs::read_dir("/proc/self/task").map_err(|error| CapabilityError::StillPrivileged {
            thread: "?".to_owned(),
            what: format!("cannot list threads: {error}"),
        })?;
    for thread in threads.flatten() {
        let id = thread.file_name().to_string_lossy().into_owned();
        // A thread that exited since the listing has nothing left to check.
        let Ok(status) = std::fs::read_to_string(thread.path().join("status")) else {
            continue;
        };
        if let Some(what) = privileges_left(&status) {
            return Err(CapabilityError::StillPrivileged { thread: id, what });
        }
    }
    Ok(())
}

/// CAP_NET_ADMIN's bit in capability masks.
pub const CAP_NET_ADMIN_BIT: u32 = 12;

/// This thread's effective capability mask, as `/proc/self/status` shows it.
pub fn effective_mask() -> Option<u64> {
    effective_in(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// The `CapEff:` mask of a `/proc/<pid>/status` text.
pub fn effective_in(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// What `/proc/.../status` says is still held, `None` if nothing.
fn privileges_left(status: &str) -> Option<String> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
    };
    let mut left = Vec::new();
    for set in ["CapEff:", "CapPrm:", "CapInh:", "CapBnd:", "CapAmb:"] {
        match field(set).map(|mask| u64::from_str_radix(mask, 16)) {
            Some(Ok(0)) => {}
            Some(Ok(mask)) => left.push(format!("{} {mask:#x}", set.trim_end_matches(':'))),
            // CapAmb is missing on kernels before 4.3, which have no ambient set at all.
            None if set == "CapAmb:" => {}
            _ => left.push(format!("{} unreadable", set.trim_end_matches(':'))),
        }
    }
    if field("NoNewPrivs:") != Some("1") {
        left.push("NoNewPrivs not set".to_owned());
    }
    (!left.is_empty()).then(|| left.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DROPPED: &str = "Name:\timds-tun\nUid:\t1000\t1000\t1000\t1000\nNoNewPrivs:\t1\n\
        CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
        CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\n";

    #[test]
    fn effective_capabilities_are_read_from_proc_status() {
        let status = "Name:\timds-tun\nCapInh:\t0000000000000000\nCapEff:\t0000000000001000\n";
        assert_eq!(effective_in(status), Some(1 << CAP_NET_ADMIN_BIT));
        assert_eq!(effective_in("Name:\tx\n"), None);
    }

    #[test]
    fn a_fully_dropped_thread_holds_nothing() {
        assert_eq!(privileges_left(DROPPED), None);
    }

    #[test]
    fn a_full_bounding_set_or_missing_no_new_privs_is_reported() {
        let bounding = DROPPED.replace("CapBnd:\t0000000000000000", "CapBnd:\t000001ffffffffff");
        assert_eq!(
            privileges_left(&bounding).as_deref(),
            Some("CapBnd 0x1ffffffffff")
        );
        let without = DROPPED.replace("NoNewPrivs:\t1", "NoNewPrivs:\t0");
        assert_eq!(
            privileges_left(&without).as_deref(),
            Some("NoNewPrivs not set")
        );
    }
}
