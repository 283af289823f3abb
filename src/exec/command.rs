//! CMD: started inside `exec`'s namespaces, given the terminal, sent the signals imds-tun
//! receives, waited for.
//!
//! CMD runs in a process group of its own: a signal sent to imds-tun reaches CMD once, by
//! imds-tun forwarding it, never twice (by the group and by the forward). When imds-tun has the
//! terminal, CMD's group gets it, so the terminal's Ctrl-C reaches CMD alone (imds-tun keeps
//! serving until CMD has ended); imds-tun takes it back once CMD ends. CMD dies with imds-tun
//! (the parent-death signal, set before CMD runs: it fires when the thread that forked CMD
//! ends, so CMD is always started from the main thread, which lives as long as the process).

use std::ffi::OsString;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::unistd::Pid;

use crate::platform::namespace;

/// CMD, running.
#[derive(Debug)]
pub struct Cmd {
    child: tokio::process::Child,
    pid: Pid,
    /// Whether CMD was given the terminal (imds-tun takes it back when CMD ends).
    has_terminal: bool,
}

/// CMD could not be started: the shell's status for it (127 not found, 126 not runnable) and
/// one line.
#[derive(Debug, thiserror::Error)]
#[error("cannot run {program}: {error}")]
pub struct SpawnError {
    /// CMD's name as given.
    pub program: String,
    /// Why not.
    pub error: io::Error,
}

impl SpawnError {
    /// 127 when there is no such command, 126 when it cannot be run, as a shell says.
    pub fn status(&self) -> u8 {
        if self.error.kind() == io::ErrorKind::NotFound {
            127
        } else {
            126
        }
    }
}

/// Starts `command` in the namespaces `user` (none as root) and `net`. Call from the main
/// thread (see the module's note on the parent-death signal).
pub fn spawn(command: &[OsString], user: Option<RawFd>, net: RawFd) -> Result<Cmd, SpawnError> {
    let Some((program, args)) = command.split_first() else {
        return Err(SpawnError {
            program: String::new(),
            error: io::Error::new(io::ErrorKind::InvalidInput, "no command given"),
        });
    };
    // Found here, as a shell finds it, so that "not found" is said as such (an exec that
    // walks PATH reports a directory it may not search as "permission denied").
    let resolved = resolve(program).map_err(|error| SpawnError {
        program: program.to_string_lossy().into_owned(),
        error,
    })?;
    let parent = nix::unistd::getpid();
    let take_terminal = has_terminal();
    let mut builder = std::process::Command::new(resolved);
    builder.arg0(program).args(args);
    // SAFETY: the closure runs between fork and exec and makes only system calls (no
    // allocation, no lock): setns, prctl, getppid, setpgid, sigprocmask, tcsetpgrp.
    #[allow(unsafe_code)]
    unsafe {
        builder.pre_exec(move || {
            namespace::enter(user, net)?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // imds-tun died before the line above: CMD must not run without it.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
            if take_terminal {
                // A background group may take the terminal only with SIGTTOU blocked.
                let mut ttou = SigSet::empty();
                ttou.add(Signal::SIGTTOU);
                sigprocmask(SigmaskHow::SIG_BLOCK, Some(&ttou), None)?;
                let stdin = BorrowedFd::borrow_raw(0);
                let given = nix::unistd::tcsetpgrp(stdin, nix::unistd::getpid());
                sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&ttou), None)?;
                given?;
            }
            Ok(())
        });
    }
    let mut builder = tokio::process::Command::from(builder);
    builder.kill_on_drop(true);
    let child = builder.spawn().map_err(|error| SpawnError {
        program: program.to_string_lossy().into_owned(),
        error,
    })?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map_or(Pid::from_raw(0), Pid::from_raw);
    Ok(Cmd {
        child,
        pid,
        has_terminal: take_terminal,
    })
}

/// `program`'s file: itself when it names a path, else the first executable of that name in
/// `PATH`; `NotFound` when there is none, `PermissionDenied` when it is not executable.
fn resolve(program: &std::ffi::OsStr) -> io::Result<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &std::path::Path| {
        std::fs::metadata(path).map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.as_bytes().contains(&b'/') {
        let path = std::path::PathBuf::from(program);
        return match executable(&path)? {
            true => Ok(path),
            false => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "not an executable file",
            )),
        };
    }
    let search = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&search)
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate).unwrap_or(false))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "command not found"))
}

/// Whether imds-tun's stdin is a terminal whose foreground group is imds-tun's.
fn has_terminal() -> bool {
    let stdin = io::stdin();
    nix::unistd::isatty(&stdin).unwrap_or(false)
        && nix::unistd::tcgetpgrp(&stdin).ok() == Some(nix::unistd::getpgrp())
}

impl Cmd {
    /// CMD's pid, which is also its process group's id.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Waits for CMD to end; its status as a shell gives it.
    pub async fn finished(&mut self) -> u8 {
        let status = self.child.wait().await;
        self.take_terminal_back();
        match status {
            Ok(status) => super::shell_status(status),
            Err(error) => {
                tracing::error!("cannot wait for CMD: {error}");
                1
            }
        }
    }

    /// Passes on to CMD the signal imds-tun received.
    pub fn forward(&self, name: &str, signal: Signal) {
        tracing::info!("received {name}; passing it on to CMD");
        let _ = nix::sys::signal::kill(self.pid, signal);
    }

    /// imds-tun's group gets the terminal back once CMD has ended (with SIGTTOU ignored: it
    /// is a background group now).
    fn take_terminal_back(&mut self) {
        if !std::mem::take(&mut self.has_terminal) {
            return;
        }
        use nix::sys::signal::{SigHandler, signal};
        // SAFETY: ignoring a signal installs no handler code.
        #[allow(unsafe_code)]
        let previous = unsafe { signal(Signal::SIGTTOU, SigHandler::SigIgn) };
        let _ = nix::unistd::tcsetpgrp(io::stdin(), nix::unistd::getpgrp());
        if let Ok(previous) = previous {
            // SAFETY: puts back the disposition that was there.
            #[allow(unsafe_code)]
            let _ = unsafe { signal(Signal::SIGTTOU, previous) };
        }
    }
}

impl Drop for Cmd {
    fn drop(&mut self) {
        self.take_terminal_back();
    }
}
