//! The guard: what must end with `exec`'s imds-tun even when it is SIGKILLed. A process
//! forked before any thread exists, which does what it is asked and, when imds-tun's end of
//! their socket pair closes (at imds-tun's exit, however it ends), kills it all:
//! - pasta, attached to the namespace. pasta must run in the caller's network namespace (its
//!   sockets there are CMD's way out), so it cannot be CMD's or the namespace child's; it
//!   does not end by itself (it holds the namespace alive) and it clears the parent-death
//!   signal while it sets itself up;
//! - CMD's process group: the parent-death signal reaches CMD only, not what CMD started.
//!
//! pasta joins the namespaces of a pid (it closes every descriptor it inherits), so the guard,
//! given imds-tun's handles on them, forks an anchor that enters them and waits. pasta is ready
//! once the namespace has a route out: asked of the namespace's kernel through a netlink
//! socket opened inside.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, recv, send, sendmsg, socketpair,
};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::platform::namespace;
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
    /// Start pasta (the namespace handles come with the message).
    Start { program: String, args: Vec<String> },
    /// CMD's process group, to kill if imds-tun dies.
    Group { pgid: i32 },
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

    /// Tells the guard CMD's process group: if imds-tun dies, the guard kills it.
    pub fn watch_group(&self, pgid: i32) -> io::Result<()> {
        self.send(&ToGuard::Group { pgid }, &[])
    }

    /// Sends `message` with the descriptors `fds`.
    fn send(&self, message: &ToGuard, fds: &[RawFd]) -> io::Result<()> {
        let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
        let rights = [ControlMessage::ScmRights(fds)];
        let control: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[io::IoSlice::new(&bytes)],
            control,
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

/// "exited (exit status: 1) …: what it said", pasta's syslog complaints left out.
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

/// The guard's life: start pasta when asked (and report its early end), note CMD's process
/// group when told, and end both when imds-tun's end of the socket closes.
fn guard(socket: &OwnedFd) {
    let mut buffer = vec![0u8; MESSAGE_BYTES];
    let mut pasta: Option<Pasta> = None;
    let mut group: Option<Pid> = None;
    loop {
        let mut fds = vec![PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
        if let Some(pipe) = pasta.as_ref().and_then(|pasta| pasta.stderr.as_ref()) {
            fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
        }
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let from_imds_tun = fds[0].any().unwrap_or(true);
        let pasta_said = fds.get(1).and_then(PollFd::any).unwrap_or(false);
        if from_imds_tun {
            let message = match namespace::receive_with_fds(socket, &mut buffer) {
                Ok((0, _, _)) | Err(_) => None,
                Ok((length, namespaces, _)) => serde_json::from_slice::<ToGuard>(&buffer[..length])
                    .ok()
                    .map(|message| (message, namespaces)),
            };
            match message {
                Some((ToGuard::Start { program, args }, namespaces)) if pasta.is_none() => {
                    let (started, reply_message) = Pasta::start(&program, args, &namespaces);
                    pasta = started;
                    reply(socket, &reply_message);
                }
                Some((ToGuard::Group { pgid }, _)) => group = Some(Pid::from_raw(pgid)),
                Some(_) => {}
                None => {
                    // imds-tun ended (or let go of the guard): what it started goes too.
                    if let Some(group) = group {
                        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                    }
                    if let Some(pasta) = pasta.take() {
                        pasta.end();
                    }
                    return;
                }
            }
        }
        if pasta_said
            && let Some(running) = pasta.as_mut()
            && let Some(status) = running.read_stderr()
        {
            reply(
                socket,
                &FromGuard::Exited {
                    status,
                    stderr: String::from_utf8_lossy(&running.tail).into_owned(),
                },
            );
            if let Some(pasta) = pasta.take() {
                pasta.end();
            }
        }
    }
}

/// pasta running, with its anchor and the end of what it said.
struct Pasta {
    child: std::process::Child,
    anchor: Pid,
    stderr: Option<std::process::ChildStderr>,
    tail: Vec<u8>,
}

impl Pasta {
    /// Starts `program` with `args` on the anchor's pid; the guard's reply either way.
    fn start(
        program: &str,
        mut args: Vec<String>,
        namespaces: &[OwnedFd],
    ) -> (Option<Pasta>, FromGuard) {
        let cannot = |error: String| (None, FromGuard::CannotStart { error });
        // pasta joins a process's namespaces by its pid (it closes inherited descriptors, and
        // a process inside a user namespace may not open another's /proc/<pid>/fd): the
        // anchor, a child that only sits in them.
        let Some(anchor) = anchor(namespaces) else {
            return cannot("cannot enter CMD's namespace to attach it".to_owned());
        };
        args.push(anchor.to_string());
        let spawned = Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Ok(mut child) => {
                let pid = i32::try_from(child.id()).unwrap_or(0);
                let stderr = child.stderr.take();
                (
                    Some(Pasta {
                        child,
                        anchor,
                        stderr,
                        tail: Vec::new(),
                    }),
                    FromGuard::Started { pid },
                )
            }
            Err(error) => {
                end_anchor(anchor);
                cannot(error.to_string())
            }
        }
    }

    /// Reads what pasta said; its exit status once it has ended.
    fn read_stderr(&mut self) -> Option<String> {
        let pipe = self.stderr.as_mut()?;
        let mut chunk = [0u8; 512];
        match pipe.read(&mut chunk) {
            Ok(0) | Err(_) => {
                // pasta closed its stderr: it ended, or is about to (a process closes its
                // files a moment before it can be reaped).
                self.stderr = None;
                reaped_within(&mut self.child, Duration::from_millis(200))
            }
            Ok(read) => {
                self.tail.extend_from_slice(&chunk[..read]);
                if self.tail.len() > STDERR_TAIL {
                    self.tail.drain(..self.tail.len() - STDERR_TAIL);
                }
                None
            }
        }
    }

    fn end(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        end_anchor(self.anchor);
    }
}

fn end_anchor(anchor: Pid) {
    let _ = nix::sys::signal::kill(anchor, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(anchor, None);
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
