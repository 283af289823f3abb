//! pasta attached to `exec`'s namespace, and the guard that ends it with imds-tun.
//!
//! pasta must run in the caller's network namespace (its sockets there are CMD's way out), so
//! it cannot be CMD's or the namespace child's. Nor does it end by itself: it holds the
//! namespace alive, and it clears the parent-death signal while it sets itself up. So a guard
//! process, forked before any thread exists, starts it and kills it when imds-tun's end of
//! their socket pair closes: at imds-tun's exit, however it ends, SIGKILL included.
//!
//! pasta joins the namespaces of a pid (it closes every descriptor it inherits), so the guard,
//! given imds-tun's handles on them, forks an anchor that enters them and waits. pasta is ready
//! once the namespace has a route out: asked of the namespace's kernel through a netlink
//! socket opened inside.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recv,
    recvmsg, send, sendmsg, socketpair,
};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::platform::netlink::LocalAddresses;

/// How long pasta may take to give the namespace a route out.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of pasta's stderr kept to explain its failure.
const STDERR_TAIL: usize = 2048;

/// The largest message between imds-tun and the guard.
const MESSAGE_BYTES: usize = 8192;

/// An address no namespace holds (TEST-NET-1): a route to it is a route out.
const OUTSIDE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// imds-tun's end of the guard: dropping it (or imds-tun's death) ends pasta.
#[derive(Debug)]
pub struct Guard {
    socket: OwnedFd,
    pid: Pid,
}

impl Drop for Guard {
    /// Ends pasta and waits for the guard to have done so: when imds-tun has exited, nothing
    /// of it runs on.
    fn drop(&mut self) {
        let _ =
            nix::sys::socket::shutdown(self.socket.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum ToGuard {
    Start { program: String, args: Vec<String> },
}

#[derive(Debug, Serialize, Deserialize)]
enum FromGuard {
    Started { pid: i32 },
    CannotStart { error: String },
    Exited { status: String, stderr: String },
}

/// pasta could not give CMD the network: one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PastaError(String);

impl Guard {
    /// Forks the guard. Call before any thread exists.
    pub fn fork() -> io::Result<Guard> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        // SAFETY: the caller guarantees that no other thread exists, so the child may run any
        // code.
        #[allow(unsafe_code)]
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => {
                drop(ours);
                guard(&theirs);
                // SAFETY: ends the child at once; nothing of the parent's is left to run.
                #[allow(unsafe_code)]
                unsafe {
                    libc::_exit(0)
                }
            }
            nix::unistd::ForkResult::Parent { child } => Ok(Guard {
                socket: ours,
                pid: child,
            }),
        }
    }

    /// Starts pasta at `program` on the namespaces `user` (none as root) and `net`, which this
    /// process holds, and waits until the namespace has a route out (`routes`, a netlink
    /// socket of the namespace). The device `tun_index` is not a way out.
    pub fn attach(
        &self,
        program: &Path,
        user: Option<&OwnedFd>,
        net: &OwnedFd,
        routes: &mut LocalAddresses,
        tun_index: u32,
    ) -> Result<(), PastaError> {
        let args: Vec<String> = [
            "--config-net",
            "--foreground",
            "--quiet",
            // Nothing from outside reaches into CMD's namespace, and no port of the host's
            // loopback is bound inside it (CMD may bind them itself); the host's loopback is
            // at the gateway's address.
            "--tcp-ports",
            "none",
            "--udp-ports",
            "none",
            "--tcp-ns",
            "none",
            "--udp-ns",
            "none",
        ]
        .map(str::to_owned)
        .to_vec();
        let request = ToGuard::Start {
            program: program.to_string_lossy().into_owned(),
            args,
        };
        let failed = |error: String| PastaError(format!("pasta: {error}; or pass --network none"));
        let mut namespaces = vec![net.as_raw_fd()];
        namespaces.extend(user.map(AsRawFd::as_raw_fd));
        self.send(&request, &namespaces)
            .map_err(|e| failed(e.to_string()))?;
        match self
            .receive(Some(READY_TIMEOUT))
            .map_err(|e| failed(e.to_string()))?
        {
            Some(FromGuard::Started { pid }) => tracing::debug!(pid, "pasta started"),
            Some(FromGuard::CannotStart { error }) => {
                return Err(failed(format!(
                    "cannot start {}: {error}",
                    program.display()
                )));
            }
            Some(FromGuard::Exited { status, stderr }) => {
                return Err(failed(exited(&status, &stderr)));
            }
            None => return Err(failed("no answer from its guard".to_owned())),
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(interface)) = routes.output_interface(OUTSIDE)
                && interface != tun_index
            {
                return Ok(());
            }
            if let Ok(Some(FromGuard::Exited { status, stderr })) =
                self.receive(Some(Duration::from_millis(20)))
            {
                return Err(failed(exited(&status, &stderr)));
            }
            if Instant::now() >= deadline {
                return Err(failed(format!(
                    "gave CMD's namespace no route out within {}s",
                    READY_TIMEOUT.as_secs()
                )));
            }
        }
    }

    /// Sends `message` with the descriptors `fds`.
    fn send(&self, message: &ToGuard, fds: &[RawFd]) -> io::Result<()> {
        let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
        sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[io::IoSlice::new(&bytes)],
            &[ControlMessage::ScmRights(fds)],
            MsgFlags::empty(),
            None,
        )?;
        Ok(())
    }

    /// The guard's next message, waiting at most `timeout`; `None` when it has none.
    fn receive(&self, timeout: Option<Duration>) -> io::Result<Option<FromGuard>> {
        let wait = timeout.map_or(PollTimeout::NONE, |timeout| {
            PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX)
        });
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, wait)? == 0 {
            return Ok(None);
        }
        let mut buffer = vec![0u8; MESSAGE_BYTES];
        let length = recv(self.socket.as_raw_fd(), &mut buffer, MsgFlags::MSG_DONTWAIT)?;
        if length == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "its guard ended",
            ));
        }
        serde_json::from_slice(&buffer[..length])
            .map(Some)
            .map_err(io::Error::other)
    }
}

/// "exited with status 1: <what it said>", pasta's syslog complaints left out.
fn exited(status: &str, stderr: &str) -> String {
    let said: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("Failed to send"))
        .collect();
    if said.is_empty() {
        format!("exited ({status}) before CMD's namespace had a route out")
    } else {
        format!(
            "exited ({status}) before CMD's namespace had a route out: {}",
            said.join("; ")
        )
    }
}

/// The guard's life: start pasta when asked, report its end, and kill it when imds-tun's end
/// of the socket closes.
fn guard(socket: &OwnedFd) {
    let mut buffer = vec![0u8; MESSAGE_BYTES];
    let Ok((length, namespaces)) = receive_with_fds(socket, &mut buffer) else {
        return;
    };
    let Ok(ToGuard::Start { program, mut args }) = serde_json::from_slice(&buffer[..length]) else {
        return;
    };
    // pasta joins a process's namespaces by its pid (it closes inherited descriptors, and a
    // process inside a user namespace may not open another's /proc/<pid>/fd): the anchor, a
    // child that only sits in them.
    let Some(anchor) = anchor(&namespaces) else {
        reply(
            socket,
            &FromGuard::CannotStart {
                error: "cannot enter CMD's namespace to attach it".to_owned(),
            },
        );
        return;
    };
    drop(namespaces);
    args.push(anchor.to_string());
    let spawned = Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let end_anchor = || {
        let _ = nix::sys::signal::kill(anchor, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(anchor, None);
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            reply(
                socket,
                &FromGuard::CannotStart {
                    error: error.to_string(),
                },
            );
            end_anchor();
            let _ = recv(socket.as_raw_fd(), &mut buffer, MsgFlags::empty());
            return;
        }
    };
    let pid = i32::try_from(child.id()).unwrap_or(0);
    reply(socket, &FromGuard::Started { pid });
    let mut stderr = child.stderr.take();
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let mut fds = vec![PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
        if let Some(pipe) = &stderr {
            fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
        }
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let imds_tun_gone = fds[0].any().unwrap_or(true);
        let said = fds.get(1).and_then(PollFd::any).unwrap_or(false);
        if imds_tun_gone {
            // Any message or the end of imds-tun: pasta goes, and the anchor.
            let _ = child.kill();
            let _ = child.wait();
            end_anchor();
            return;
        }
        if said && let Some(pipe) = stderr.as_mut() {
            let mut chunk = [0u8; 512];
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    // pasta closed its stderr: it ended, or is about to (a process closes its
                    // files a moment before it can be reaped).
                    stderr = None;
                    if let Some(status) = reaped_within(&mut child, Duration::from_millis(200)) {
                        reply(
                            socket,
                            &FromGuard::Exited {
                                status,
                                stderr: String::from_utf8_lossy(&tail).into_owned(),
                            },
                        );
                        let _ = recv(socket.as_raw_fd(), &mut buffer, MsgFlags::empty());
                        end_anchor();
                        return;
                    }
                }
                Ok(read) => {
                    tail.extend_from_slice(&chunk[..read]);
                    if tail.len() > STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
            }
        }
    }
}

/// Forks a child that enters `namespaces` (the network namespace, then the user namespace if
/// given) and waits to be killed; its pid.
fn anchor(namespaces: &[OwnedFd]) -> Option<Pid> {
    let (net, user) = (namespaces.first()?, namespaces.get(1));
    // SAFETY: the guard is single-threaded, so the child may run any code.
    #[allow(unsafe_code)]
    match unsafe { nix::unistd::fork() }.ok()? {
        nix::unistd::ForkResult::Child => {
            let entered =
                crate::platform::namespace::enter(user.map(AsRawFd::as_raw_fd), net.as_raw_fd());
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            if entered.is_ok() {
                loop {
                    nix::unistd::pause();
                }
            }
            // SAFETY: ends the child at once; nothing of the guard's is left to run.
            #[allow(unsafe_code)]
            unsafe {
                libc::_exit(1)
            }
        }
        nix::unistd::ForkResult::Parent { child } => {
            // Entered once pasta can see it inside: wait until its namespace is no longer ours.
            let deadline = Instant::now() + Duration::from_secs(2);
            let ours = std::fs::read_link("/proc/self/ns/net").ok()?;
            while Instant::now() < deadline {
                match std::fs::read_link(format!("/proc/{child}/ns/net")) {
                    Ok(theirs) if theirs != ours => return Some(child),
                    _ => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
            None
        }
    }
}

/// One message and the descriptors that came with it.
fn receive_with_fds(socket: &OwnedFd, buffer: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut slices = [io::IoSliceMut::new(buffer)];
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut slices,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for control in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = control {
            // SAFETY: the kernel just installed these descriptors in this process; nothing
            // else owns them.
            #[allow(unsafe_code)]
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((message.bytes, fds))
}

/// `child`'s exit status if it ends within `wait`.
fn reaped_within(child: &mut std::process::Child, wait: Duration) -> Option<String> {
    let deadline = Instant::now() + wait;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status.to_string()),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => return None,
        }
    }
}

fn reply(socket: &OwnedFd, message: &FromGuard) {
    if let Ok(bytes) = serde_json::to_vec(message) {
        let _ = send(socket.as_raw_fd(), &bytes, MsgFlags::empty());
    }
}
