//! Giving up root once the TUN device and the listening sockets exist.
//!
//! Creating the TUN needs CAP_NET_ADMIN; serving it does not: reading and writing an open TUN
//! descriptor needs no privilege at all. So after set-up the process becomes an ordinary user:
//! the one who ran `sudo` (`SUDO_UID`/`SUDO_GID`), or the account named by `--user`. Switching
//! all three user ids away from 0 clears the effective and permitted capabilities; the bounding,
//! ambient and inheritable sets are cut and no_new_privs set before the runtime starts its
//! threads ([`prepare_to_become`]), and every thread is checked afterwards. The device
//! still disappears at exit: the kernel removes a non-persistent TUN when its descriptor closes,
//! whoever owns the process.

use nix::unistd::{Gid, Uid, User};

/// The account to serve as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The login name, or `uid N` for a sudo user without a passwd entry (for messages).
    pub name: String,
    /// The user id all three ids (real, effective, saved) are switched to.
    pub uid: Uid,
    /// The primary group, also the only supplementary group left after the switch.
    pub gid: Gid,
}

/// Why privileges could not be given up; the run must not continue as root by accident.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// `--user` names no account in the user database (the name as given).
    #[error("--user {0:?}: no such user on this system")]
    UnknownUser(String),
    /// The user database could not be asked about `--user`.
    #[error("--user {name:?}: cannot look the user up: {source}")]
    Lookup {
        /// `--user`'s value.
        name: String,
        /// The lookup's error (getpwnam_r).
        #[source]
        source: nix::Error,
    },
    /// One step of the switch of ids was refused by the kernel.
    #[error("cannot drop privileges to {name} (uid {uid}): {step} failed: {source}")]
    Switch {
        /// [`Account::name`] of the account being become.
        name: String,
        /// [`Account::uid`] of the account being become.
        uid: Uid,
        /// The call that failed: `setgroups`, `setresgid`, `setresuid` (or `setgid`, `setuid`
        /// on macOS).
        step: &'static str,
        /// The kernel's refusal.
        #[source]
        source: nix::Error,
    },
    /// `--user` was given to a process that is not root (the name as given).
    #[error("--user {0}: only root can switch users; run imds-tun with sudo, or drop --user")]
    NotRoot(String),
    /// After the switch, `setuid(0)` still succeeded: the uid it was meant to drop to.
    #[error("dropped to uid {0} but root could be regained; refusing to serve")]
    Regainable(Uid),
    /// The capability sets could not be cut, or a thread still holds one after the switch.
    #[error("{0}")]
    Capabilities(#[from] crate::platform::capabilities::CapabilityError),
}

/// Decides whom to become: `--user NAME` first, else the user behind `sudo`; `None` when the
/// process is not root or nobody is named (a root run outside sudo stays root, and says so).
pub fn account_to_become(
    requested: Option<&str>,
    sudo_uid: Option<&str>,
    sudo_gid: Option<&str>,
) -> Result<Option<Account>, PrivilegeError> {
    if let Some(name) = requested {
        let user = User::from_name(name)
            .map_err(|source| PrivilegeError::Lookup {
                name: name.to_string(),
                source,
            })?
            .ok_or_else(|| PrivilegeError::UnknownUser(name.to_string()))?;
        return Ok(Some(Account {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
        }));
    }
    Ok(sudo_user(sudo_uid, sudo_gid))
}

/// The accounts, besides uid 65534 (the kernel's overflow id, `nobody` on every distribution),
/// that many programs run as: serving as one of them lets all those processes signal imds-tun.
const SHARED_ACCOUNTS: [&str; 3] = ["nobody", "nfsnobody", "daemon"];

/// Whether `uid` (named `name`) is an account other programs share (nobody), not one of
/// imds-tun's own.
pub fn is_shared_account(uid: Uid, name: &str) -> bool {
    uid.as_raw() == 65534 || SHARED_ACCOUNTS.contains(&name)
}

/// The account a start becomes after set-up: `--user` or the user behind sudo (from this
/// process's `SUDO_UID`/`SUDO_GID`), when running as root; `None` to stay as we are (root
/// outside sudo, or already that user). `--user` for another account without root is refused.
/// The start and `--check` both decide with this.
pub fn account_to_serve_as(requested: Option<&str>) -> Result<Option<Account>, PrivilegeError> {
    let sudo_uid = std::env::var("SUDO_UID").ok();
    let sudo_gid = std::env::var("SUDO_GID").ok();
    let Some(account) = account_to_become(requested, sudo_uid.as_deref(), sudo_gid.as_deref())?
    else {
        return Ok(None);
    };
    let current = nix::unistd::geteuid();
    if current == account.uid {
        return Ok(None);
    }
    if !current.is_root() {
        return Err(PrivilegeError::NotRoot(account.name));
    }
    Ok(Some(account))
}

/// The user who ran `sudo`, from `SUDO_UID`/`SUDO_GID`; `None` when they are absent, not
/// numbers, or name root. The same answer decides whom the process becomes and whose rights
/// open the files named on the command line (`config::named_file`).
pub fn sudo_user(sudo_uid: Option<&str>, sudo_gid: Option<&str>) -> Option<Account> {
    let (Some(uid), Some(gid)) = (
        sudo_uid.and_then(|v| v.parse::<u32>().ok()),
        sudo_gid.and_then(|v| v.parse::<u32>().ok()),
    ) else {
        return None;
    };
    if uid == 0 {
        return None;
    }
    let uid = Uid::from_raw(uid);
    let name = User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |user| user.name);
    Some(Account {
        name,
        uid,
        gid: Gid::from_raw(gid),
    })
}

/// Becomes `account` for good: supplementary groups, group, then user (in that order, since
/// only root may change groups), and proves root cannot be regained.
pub fn become_account(account: &Account) -> Result<(), PrivilegeError> {
    let switch = |step: &'static str, result: nix::Result<()>| {
        result.map_err(|source| PrivilegeError::Switch {
            name: account.name.clone(),
            uid: account.uid,
            step,
            source,
        })
    };
    switch_ids(account, switch)?;
    if !account.uid.is_root() && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::Regainable(account.uid));
    }
    if !account.uid.is_root() {
        crate::platform::capabilities::verify_unprivileged()?;
    }
    Ok(())
}

/// Linux: every id set explicitly (real, effective, saved).
#[cfg(target_os = "linux")]
fn switch_ids(
    account: &Account,
    switch: impl Fn(&'static str, nix::Result<()>) -> Result<(), PrivilegeError>,
) -> Result<(), PrivilegeError> {
    switch("setgroups", nix::unistd::setgroups(&[account.gid]))?;
    switch(
        "setresgid",
        nix::unistd::setresgid(account.gid, account.gid, account.gid),
    )?;
    switch(
        "setresuid",
        nix::unistd::setresuid(account.uid, account.uid, account.uid),
    )
}

/// BSD (macOS): no `setres*id`; called by root, `setgid` and `setuid` set the real, effective
/// and saved ids together (setuid(2)), and `setgroups` is only in libc.
#[cfg(not(target_os = "linux"))]
fn switch_ids(
    account: &Account,
    switch: impl Fn(&'static str, nix::Result<()>) -> Result<(), PrivilegeError>,
) -> Result<(), PrivilegeError> {
    let group = account.gid.as_raw();
    // SAFETY: one group id, read from a live local for the duration of the call.
    #[allow(unsafe_code)]
    let groups = nix::errno::Errno::result(unsafe { nix::libc::setgroups(1, &group) });
    switch("setgroups", groups.map(drop))?;
    switch("setgid", nix::unistd::setgid(account.gid))?;
    switch("setuid", nix::unistd::setuid(account.uid))
}

/// Before any thread exists: cuts the capability sets that no thread will need again, so the
/// later switch of user ids leaves nothing behind (see [`crate::platform::capabilities`]).
pub fn prepare_to_become(account: &Account) -> Result<(), PrivilegeError> {
    if !account.uid.is_root() {
        crate::platform::capabilities::restrict_inheritance()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudo_user_is_chosen_when_no_user_is_named() {
        let account = account_to_become(None, Some("1000"), Some("1001"))
            .expect("lookup")
            .expect("an account");
        assert_eq!(account.uid, Uid::from_raw(1000));
        assert_eq!(account.gid, Gid::from_raw(1001));
    }

    #[test]
    fn root_outside_sudo_and_sudo_from_root_stay_as_they_are() {
        assert_eq!(account_to_become(None, None, None).expect("lookup"), None);
        assert_eq!(
            account_to_become(None, Some("0"), Some("0")).expect("lookup"),
            None
        );
        assert_eq!(
            account_to_become(None, Some("not-a-number"), Some("0")).expect("lookup"),
            None
        );
    }

    #[test]
    fn a_named_user_wins_over_sudo() {
        let account = account_to_become(Some("root"), Some("1000"), Some("1000"))
            .expect("lookup")
            .expect("an account");
        assert_eq!(account.name, "root");
        assert!(account.uid.is_root());
    }

    #[test]
    fn an_unknown_user_is_an_error_naming_it() {
        let error =
            account_to_become(Some("no-such-user-imds"), None, None).expect_err("unknown user");
        assert!(error.to_string().contains("no-such-user-imds"), "{error}");
    }
}
