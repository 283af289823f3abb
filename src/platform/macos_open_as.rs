//! macOS: opening a file with another user's rights, decided by the kernel for that user.
//!
//! Why not a permission-bit check after opening as root: it misses ACLs (common on macOS home
//! directories), directories on the way, and races a rename between the check and the open.
//! Why not switch the effective ids around the `open` as linux.rs does: BSD has no
//! `setresuid`, and the group list cannot always be put back (below), and a half-restored
//! process must abort. So a forked child becomes the user for good and opens the file
//! (`open_in_child.rs`, unit-tested on Linux); the parent's ids never change.
//!
//! What BSD offers, and the rules that follow (setuid(2), setgroups(2), getgrouplist(3),
//! proc_pidinfo in `<libproc.h>`; this file has never run, `scripts/macos-smoke.sh` runs it):
//! - `setgroups` takes at most `NGROUPS` (16) groups, and a list set that way replaces the
//!   directory service's dynamic membership. A user in more groups keeps the first 16 that
//!   `getgrouplist` reports (their primary group first): a file readable only through a later
//!   group is refused, never one the user could not read. Root's own list under launchd may
//!   be longer than 16, which is why the parent never tries to restore it.
//! - `fork` in a process with threads may leave the child's allocator locked, so, as on Linux,
//!   this runs only while one thread exists (`proc_pidinfo(PROC_PIDTASKINFO)` counts them).

use super::open_in_child::open_in_child;
use super::{FileUser, OpenAsError};
use nix::libc;
use nix::unistd::Gid;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// The most supplementary groups macOS's `setgroups` accepts (`NGROUPS` in `<sys/param.h>`).
const MAX_GROUPS: usize = 16;

/// Opens `path` as `user` would, in a child that became `user`; only while one thread exists.
pub(crate) fn open_as_user(
    path: &Path,
    options: &OpenOptions,
    user: &FileUser,
) -> Result<File, OpenAsError> {
    match thread_count() {
        Ok(1) => {}
        Ok(threads) => return Err(OpenAsError::Threads(threads)),
        Err(error) => return Err(OpenAsError::CountThreads(error)),
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(OpenAsError::NotRoot);
    }
    let mut user = user.clone();
    user.groups.truncate(MAX_GROUPS);
    open_in_child(path, options, &user)
}

/// The groups `name` gets at login, `gid` first, at most [`MAX_GROUPS`].
pub(crate) fn groups_of(name: &str, gid: Gid) -> io::Result<Vec<Gid>> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // Ask with room to spare; getgrouplist fills what fits and returns -1 when more exist, which
    // only means the tail is dropped (see the module doc).
    let mut found = [0 as libc::c_int; 64];
    let mut count = found.len() as libc::c_int;
    // SAFETY: `name` is NUL-terminated and lives across the call; `found` has room for `count`
    // entries, and the function writes at most that many.
    #[allow(unsafe_code)]
    unsafe {
        libc::getgrouplist(
            name.as_ptr(),
            gid.as_raw() as libc::c_int,
            found.as_mut_ptr(),
            &mut count,
        );
    }
    let count = usize::try_from(count).unwrap_or(0).min(found.len());
    let mut groups = vec![gid];
    for &group in &found[..count] {
        let group = Gid::from_raw(group as libc::gid_t);
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    groups.truncate(MAX_GROUPS);
    Ok(groups)
}

/// How many threads this process has, as the kernel counts them.
fn thread_count() -> io::Result<usize> {
    // SAFETY: an all-zero `proc_taskinfo` is a valid value of this plain C struct.
    #[allow(unsafe_code)]
    let mut info: libc::proc_taskinfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::proc_taskinfo>() as libc::c_int;
    // SAFETY: `info` is a writable buffer of exactly `size` bytes for the duration of the call.
    #[allow(unsafe_code)]
    let written = unsafe {
        libc::proc_pidinfo(
            libc::getpid(),
            libc::PROC_PIDTASKINFO,
            0,
            (&raw mut info).cast(),
            size,
        )
    };
    if written != size {
        return Err(io::Error::last_os_error());
    }
    usize::try_from(info.pti_threadnum).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}
