//! Opening a file with another user's rights in a forked child: the child becomes the user for
//! good (groups, gid, uid), opens the file, and hands the descriptor back over a socket pair
//! (`SCM_RIGHTS`). The caller's own ids never change, so nothing has to be put back.
//!
//! macOS uses this (`macos_open_as.rs` says why); it is plain POSIX, so it is compiled for
//! Linux's unit tests too, which run it as root against real files.
//!
//! Received descriptors do not get close-on-exec by themselves (macOS has no
//! `MSG_CMSG_CLOEXEC`), so it is set here.

use super::{FileUser, OpenAsError};
use nix::libc;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::unistd::ForkResult;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// What the child reports: a step (0 = opened, the descriptor attached) and an errno.
const REPORT_LEN: usize = 5;

/// The steps the child takes, in order; the index is what it reports.
const STEPS: [&str; 4] = ["opened", "setgroups", "setgid", "setuid"];
const OPEN_FAILED: u8 = STEPS.len() as u8;

/// Opens `path` with `options` as `user` (all of `user.groups`, which the OS must accept), in a
/// child that became `user`. The caller must be root and must not have other threads holding
/// locks the child could need.
pub(crate) fn open_in_child(
    path: &Path,
    options: &OpenOptions,
    user: &FileUser,
) -> Result<File, OpenAsError> {
    let step = |step: &'static str| move |source| OpenAsError::Switch { step, source };
    let (parent_end, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::empty(),
    )
    .map_err(step("socketpair"))?;
    let groups: Vec<libc::gid_t> = user.groups.iter().map(|gid| gid.as_raw()).collect();
    // SAFETY: callers fork only while one thread exists (macOS checks) or on a C library whose
    // allocator is fork-safe (glibc, the tests), so the child inherits no held lock; it makes
    // system calls and one `open`, then `_exit`s.
    #[allow(unsafe_code)]
    let forked = unsafe { nix::unistd::fork() }.map_err(step("fork"))?;
    match forked {
        ForkResult::Child => {
            drop(parent_end);
            become_user_and_open(&child_end, &groups, user, path, options)
        }
        ForkResult::Parent { child } => {
            drop(child_end);
            let received = receive_file(&parent_end);
            // The child exits right after reporting; reap it whatever it said.
            let _ = nix::sys::wait::waitpid(child, None);
            received
        }
    }
}

/// In the child: become `user` irrevocably, open, report to the parent, exit.
fn become_user_and_open(
    report_to: &OwnedFd,
    groups: &[libc::gid_t],
    user: &FileUser,
    path: &Path,
    options: &OpenOptions,
) -> ! {
    // SAFETY: `groups` holds at most MAX_GROUPS ids and outlives the call.
    #[allow(unsafe_code)]
    let set_groups = unsafe { libc::setgroups(groups.len() as _, groups.as_ptr()) };
    let switched = nix::errno::Errno::result(set_groups)
        .map(drop)
        .map_err(|error| (1, error as i32))
        .and_then(|()| nix::unistd::setgid(user.gid).map_err(|error| (2, error as i32)))
        .and_then(|()| nix::unistd::setuid(user.uid).map_err(|error| (3, error as i32)));
    let (step, errno, file) = match switched {
        Err((step, errno)) => (step, errno, None),
        Ok(()) => match options.open(path) {
            Ok(file) => (0, 0, Some(file)),
            Err(error) => (OPEN_FAILED, error.raw_os_error().unwrap_or(libc::EIO), None),
        },
    };
    let mut report = [0u8; REPORT_LEN];
    report[0] = step;
    report[1..].copy_from_slice(&errno.to_le_bytes());
    let descriptors: Vec<RawFd> = file.iter().map(AsRawFd::as_raw_fd).collect();
    let attached = [ControlMessage::ScmRights(&descriptors)];
    let cmsgs: &[ControlMessage] = if descriptors.is_empty() {
        &[]
    } else {
        &attached
    };
    let sent = sendmsg::<()>(
        report_to.as_raw_fd(),
        &[IoSlice::new(&report)],
        cmsgs,
        MsgFlags::empty(),
        None,
    );
    // SAFETY: `_exit` ends the forked child without running the parent's atexit handlers or
    // flushing buffers that belong to the parent.
    #[allow(unsafe_code)]
    unsafe {
        libc::_exit(if sent.is_ok() { 0 } else { 1 })
    }
}

/// In the parent: the child's report, and the descriptor when it opened the file.
fn receive_file(from: &OwnedFd) -> Result<File, OpenAsError> {
    let step = |step: &'static str| move |source| OpenAsError::Switch { step, source };
    let mut report = [0u8; REPORT_LEN];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let (read, descriptor) = {
        let mut parts = [IoSliceMut::new(&mut report)];
        let message = recvmsg::<()>(
            from.as_raw_fd(),
            &mut parts,
            Some(&mut space),
            MsgFlags::MSG_WAITALL,
        )
        .map_err(step("receiving the file from the child"))?;
        let mut descriptor = None;
        for control in message
            .cmsgs()
            .map_err(step("reading the child's message"))?
        {
            if let ControlMessageOwned::ScmRights(fds) = control {
                for fd in fds {
                    // SAFETY: the kernel just installed `fd` in this process for us; nothing
                    // else owns it. Extra descriptors (none are sent) are closed by the drop.
                    #[allow(unsafe_code)]
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    descriptor.get_or_insert(owned);
                }
            }
        }
        (message.bytes, descriptor)
    };
    if read != REPORT_LEN {
        return Err(OpenAsError::Switch {
            step: "the child's report",
            source: nix::Error::EIO,
        });
    }
    let errno = i32::from_le_bytes([report[1], report[2], report[3], report[4]]);
    match (report[0], descriptor) {
        (0, Some(descriptor)) => {
            nix::fcntl::fcntl(
                &descriptor,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(step("close-on-exec"))?;
            Ok(File::from(descriptor))
        }
        (0, None) => Err(OpenAsError::Switch {
            step: "receiving the descriptor",
            source: nix::Error::EIO,
        }),
        (OPEN_FAILED, _) => Err(OpenAsError::Open(io::Error::from_raw_os_error(errno))),
        (index, _) => Err(OpenAsError::Switch {
            step: STEPS
                .get(usize::from(index))
                .copied()
                .unwrap_or("the child"),
            source: nix::Error::from_raw(errno),
        }),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use nix::unistd::{Gid, Uid};
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    /// Root runs these (they switch ids in a child); elsewhere they say so, and fail under CI.
    fn root_or_skip(test: &str) -> bool {
        if Uid::effective().is_root() {
            return true;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test} needs root, and CI runs as root"
        );
        eprintln!("SKIPPED {test}: needs root");
        false
    }

    fn nobody() -> FileUser {
        FileUser {
            name: "nobody".into(),
            uid: Uid::from_raw(65534),
            gid: Gid::from_raw(65534),
            groups: vec![Gid::from_raw(65534)],
        }
    }

    fn file_with_mode(dir: &Path, name: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, name).expect("write test file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    /// A directory `nobody` may search, removed on drop.
    fn scratch() -> crate::temp_dir::TempDir {
        let dir = crate::temp_dir::TempDir::new();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        dir
    }

    #[test]
    fn the_child_opens_what_the_user_may_read_and_refuses_what_only_root_may() {
        if !root_or_skip("open_in_child") {
            return;
        }
        let dir = scratch();
        let readable = file_with_mode(dir.path(), "everyone", 0o644);
        let private = file_with_mode(dir.path(), "root-only", 0o600);
        let mut options = OpenOptions::new();
        options.read(true);

        let mut file = open_in_child(&readable, &options, &nobody()).expect("readable file");
        let mut text = String::new();
        file.read_to_string(&mut text).expect("read");
        assert_eq!(text, "everyone");
        let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFD).expect("F_GETFD");
        assert_ne!(
            flags & libc::FD_CLOEXEC,
            0,
            "received descriptor must be close-on-exec"
        );

        let refused = open_in_child(&private, &options, &nobody()).expect_err("root-only file");
        match refused {
            OpenAsError::Open(error) => {
                assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
            }
            other => panic!("expected a refused open, got {other}"),
        }
        // Root itself still reads it: the caller's ids did not change.
        assert!(Uid::effective().is_root());
        assert!(options.open(&private).is_ok());
    }

    #[test]
    fn a_missing_file_is_an_open_error_not_a_switch_error() {
        if !root_or_skip("open_in_child_missing") {
            return;
        }
        let mut options = OpenOptions::new();
        options.read(true);
        let missing = Path::new("/nonexistent/imds-tun/file");
        match open_in_child(missing, &options, &nobody()) {
            Err(OpenAsError::Open(error)) => assert_eq!(error.kind(), io::ErrorKind::NotFound),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
}
