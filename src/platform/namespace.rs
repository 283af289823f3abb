//! A network namespace of imds-tun's own, for `imds-tun exec` (Linux): made by a short-lived
//! child, which hands back over a socket pair (SCM_RIGHTS) everything imds-tun needs of it,
//! so that imds-tun itself stays in the caller's network namespace (STS, `--token-command`
//! and `--upstream` use the caller's network, unchanged).
//!
//! Why a child: `unshare` moves the caller, and a process cannot come back to the network
//! namespace it left without CAP_SYS_ADMIN there. Descriptors, though, keep the namespace they
//! were opened in: the TUN device, the control socket and the netlink sockets made inside keep
//! working inside once imds-tun holds them outside.
//!
//! Without root the child first enters a new user namespace mapping only the caller's own uid
//! and gid to themselves (a map a process may write for itself, so `newuidmap` is never needed),
//! which gives it the capabilities to configure its network namespace; CMD, which later joins
//! both, runs with the caller's ids and no capability. As root only the network namespace is new.
//!
//! When the kernel refuses, the error names why ([`NamespaceError`]): user namespaces turned off
//! (`user.max_user_namespaces`, Debian's `kernel.unprivileged_userns_clone`, Ubuntu's AppArmor
//! restriction), a sandbox, or `/dev/net/tun` not open to the user.
//!
//! Call [`create`] before any other thread exists: the child is a `fork` of this process.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::sched::CloneFlags;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use serde::{Deserialize, Serialize};

use super::imp::{self, CreatedDevice};
use super::{PlatformError, TunRequest, netlink};

/// How long the child may take to build the namespace before imds-tun gives up on it.
const SET_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest report the child sends (a device name and index, or one error line).
const REPORT_BYTES: usize = 4096;

/// Where the kernel's switches for user namespaces are (`/proc/sys`).
const SYSCTL_ROOT: &str = "/proc/sys";

/// The namespace made for `imds-tun exec`, as descriptors held outside it.
#[derive(Debug)]
pub struct Namespace {
    /// The TUN device claiming the metadata address(es) inside.
    pub device: CreatedDevice,
    /// The control socket, bound inside (its abstract name is the namespace's own), so
    /// `imds-tun ctl` run by CMD reaches this instance and no other.
    pub control: UnixListener,
    /// `NETLINK_ROUTE` and `NETLINK_SOCK_DIAG` sockets of the namespace, for telling callers
    /// apart (`crate::attribution`).
    pub route: OwnedFd,
    /// See [`Namespace::route`].
    pub sock_diag: OwnedFd,
    /// A second `NETLINK_ROUTE` socket of the namespace: how imds-tun sees pasta's network
    /// appear inside.
    pub watch_route: OwnedFd,
    /// The user namespace (`None` as root, where none is made).
    pub user: Option<OwnedFd>,
    /// The network namespace itself, which CMD and pasta join.
    pub net: OwnedFd,
}

/// Why no namespace could be made: one line for a person.
#[derive(Debug, thiserror::Error)]
#[error("{line}")]
pub struct NamespaceError {
    /// What went wrong and what to do.
    pub line: String,
    /// Whether the user has to change something on the machine or in the settings (exit 2)
    /// rather than a failure to retry (exit 1).
    pub refused: bool,
}

impl NamespaceError {
    fn refused(line: String) -> NamespaceError {
        NamespaceError {
            line,
            refused: true,
        }
    }

    fn failed(line: String) -> NamespaceError {
        NamespaceError {
            line,
            refused: false,
        }
    }
}

/// What the child reports besides the descriptors.
#[derive(Debug, Serialize, Deserialize)]
enum Report {
    Ready { name: String, index: u32 },
    Failed { line: String, refused: bool },
}

/// Makes the namespace (a user namespace too unless root) with `request`'s TUN device in it.
/// Call before any thread exists.
pub fn create(request: &TunRequest) -> Result<Namespace, NamespaceError> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|error| NamespaceError::failed(format!("cannot make a socket pair: {error}")))?;
    let parent = nix::unistd::getpid();
    // SAFETY: the caller guarantees that no other thread exists, so the child may run any code.
    #[allow(unsafe_code)]
    let forked = unsafe { nix::unistd::fork() }
        .map_err(|error| NamespaceError::failed(format!("cannot start a process: {error}")))?;
    match forked {
        nix::unistd::ForkResult::Child => {
            drop(ours);
            // Not to outlive imds-tun if it is killed meanwhile.
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            if nix::unistd::getppid() != parent {
                exit_child(1);
            }
            let (report, fds) = match inside(request) {
                Ok((report, fds)) => (report, fds),
                Err(error) => (
                    Report::Failed {
                        line: error.line,
                        refused: error.refused,
                    },
                    Vec::new(),
                ),
            };
            let sent = send_report(&theirs, &report, &fds);
            exit_child(if sent.is_ok() { 0 } else { 1 });
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(theirs);
            let received = receive_report(&ours, request);
            if received.is_err() {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            }
            // Reaped now, so no zombie is left for the runtime's child handling to find.
            let _ = nix::sys::wait::waitpid(child, None);
            received
        }
    }
}

/// Ends the child without running anything of the parent's (no destructor, no buffered
/// output written twice).
fn exit_child(status: i32) -> ! {
    // SAFETY: `_exit` ends the process at once; nothing of Rust's is left to run or to unwind.
    #[allow(unsafe_code)]
    unsafe {
        libc::_exit(status)
    }
}

/// The child's work: the namespaces, `lo` up, the device, the sockets, the namespace handles.
fn inside(request: &TunRequest) -> Result<(Report, Vec<OwnedFd>), NamespaceError> {
    let root = nix::unistd::geteuid().is_root();
    if root {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|errno| {
            NamespaceError::failed(format!(
                "cannot create a network namespace: {}",
                io::Error::from(errno)
            ))
        })?;
    } else {
        let uid = nix::unistd::geteuid();
        let gid = nix::unistd::getegid();
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET)
            .map_err(|errno| user_namespace_refused(errno, Path::new(SYSCTL_ROOT)))?;
        map_own_ids(uid.as_raw(), gid.as_raw())
            .map_err(|error| set_up_refused("mapping your user and group ids", error))?;
    }
    loopback_up().map_err(|error| set_up_refused("bringing up the loopback interface", error))?;
    // Opened first on its own, so that a device closed to this user is said as such.
    File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(tun_refused)?;
    let device = imp::create_device(request).map_err(|error| match error {
        // Inside a user namespace of its own the child holds every capability, so the kernel's
        // EPERM is a restriction on such namespaces (AppArmor's), not a missing sudo.
        PlatformError::NotPermitted if !root => set_up_refused(
            "creating the TUN device",
            io::Error::from_raw_os_error(libc::EPERM),
        ),
        PlatformError::Io { source, .. } if source.raw_os_error() == Some(libc::EPERM) && !root => {
            set_up_refused("creating the TUN device", source)
        }
        other => NamespaceError::failed(other.to_string()),
    })?;
    let control = bind_control()?;
    let io_failure =
        |what: &str, error: io::Error| NamespaceError::failed(format!("{what}: {error}"));
    let route = netlink::route_socket().map_err(|e| io_failure("opening a netlink socket", e))?;
    let sock_diag =
        netlink::sock_diag_socket().map_err(|e| io_failure("opening a netlink socket", e))?;
    let watch_route =
        netlink::route_socket().map_err(|e| io_failure("opening a netlink socket", e))?;
    let net = namespace_handle("net")?;
    let mut fds = vec![device.fd, control, route, sock_diag, watch_route, net];
    if !root {
        fds.push(namespace_handle("user")?);
    }
    Ok((
        Report::Ready {
            name: device.name,
            index: device.index,
        },
        fds,
    ))
}

/// The one-line maps of a user namespace its creator may write for itself: its own uid and
/// gid, to themselves (`setgroups` denied first, as the kernel requires for the gid map).
fn map_own_ids(uid: u32, gid: u32) -> io::Result<()> {
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    Ok(())
}

/// A new network namespace has `lo` down: CMD's own loopback traffic needs it up.
fn loopback_up() -> io::Result<()> {
    let socket = nix::sys::socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    #[allow(unsafe_code)]
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: both ioctls read and write the ifreq passed, which lives across the calls; the
    // flags member is the one SIOCGIFFLAGS fills in.
    #[allow(unsafe_code)]
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut request) < 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS as _, &request) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The control socket, bound in this namespace under the name `imds-tun ctl` looks for.
fn bind_control() -> Result<OwnedFd, NamespaceError> {
    let address = super::control_address()
        .map_err(|error| NamespaceError::failed(format!("the control socket: {error}")))?;
    let listener = UnixListener::bind_addr(&address)
        .map_err(|error| NamespaceError::failed(format!("binding the control socket: {error}")))?;
    Ok(listener.into())
}

/// This process's handle on its namespace of `kind` ("net", "user").
fn namespace_handle(kind: &str) -> Result<OwnedFd, NamespaceError> {
    File::open(format!("/proc/self/ns/{kind}"))
        .map(OwnedFd::from)
        .map_err(|error| NamespaceError::failed(format!("opening /proc/self/ns/{kind}: {error}")))
}

/// The kernel's refusal of `unshare(CLONE_NEWUSER)`, named by the switch that causes it, read
/// under `sysctl_root`.
fn user_namespace_refused(errno: Errno, sysctl_root: &Path) -> NamespaceError {
    let read = |name: &str| {
        std::fs::read_to_string(sysctl_root.join(name))
            .ok()
            .map(|value| value.trim().to_owned())
    };
    let as_root = "or run imds-tun exec as root";
    let line = match errno {
        Errno::ENOSPC | Errno::EUSERS => match read("user/max_user_namespaces").as_deref() {
            Some("0") => format!(
                "cannot create a user namespace: user namespaces are turned off here \
                 (user.max_user_namespaces = 0); an administrator can turn them on \
                 (sysctl -w user.max_user_namespaces=10000), {as_root}"
            ),
            Some(limit) => format!(
                "cannot create a user namespace: the limit of user namespaces is reached \
                 (user.max_user_namespaces = {limit}); end some, or {as_root}"
            ),
            None => format!(
                "cannot create a user namespace: the limit of user namespaces is reached; \
                 end some, or {as_root}"
            ),
        },
        Errno::EPERM => {
            if read("kernel/unprivileged_userns_clone").as_deref() == Some("0") {
                format!(
                    "cannot create a user namespace: unprivileged user namespaces are turned off \
                     here (kernel.unprivileged_userns_clone = 0); an administrator can turn them \
                     on (sysctl -w kernel.unprivileged_userns_clone=1), {as_root}"
                )
            } else if let Some(line) = apparmor_restriction(sysctl_root) {
                line
            } else {
                format!(
                    "cannot create a user namespace: the kernel refused a new user namespace \
                     (Operation not permitted: a container, a chroot or a seccomp filter \
                     forbids it); run imds-tun exec outside that sandbox, {as_root}"
                )
            }
        }
        Errno::EINVAL => format!(
            "cannot create a user namespace: this kernel has none (built without \
             CONFIG_USER_NS); {as_root}"
        ),
        other => format!(
            "cannot create a user namespace: {}; {as_root}",
            io::Error::from(other)
        ),
    };
    NamespaceError::refused(line)
}

/// Ubuntu lets an unprivileged process create a user namespace but, under AppArmor's
/// restriction, gives it no capability there: the first step that needs one fails with EPERM.
fn apparmor_restriction(sysctl_root: &Path) -> Option<String> {
    let value =
        std::fs::read_to_string(sysctl_root.join("kernel/apparmor_restrict_unprivileged_userns"))
            .ok()?;
    (value.trim() == "1").then(|| {
        "cannot set up a user namespace: AppArmor gives unprivileged user namespaces no \
         capabilities here (kernel.apparmor_restrict_unprivileged_userns = 1); an administrator \
         can allow imds-tun with an AppArmor profile (docs/exec.md) or turn the restriction off \
         (sysctl -w kernel.apparmor_restrict_unprivileged_userns=0), or run imds-tun exec as root"
            .to_owned()
    })
}

/// A step inside the new user namespace failed: AppArmor's restriction when it is on and the
/// kernel said EPERM, else the step and the error.
fn set_up_refused(step: &str, error: io::Error) -> NamespaceError {
    if error.raw_os_error() == Some(libc::EPERM)
        && let Some(line) = apparmor_restriction(Path::new(SYSCTL_ROOT))
    {
        return NamespaceError::refused(line);
    }
    NamespaceError::failed(format!("cannot set up the namespace: {step}: {error}"))
}

/// `/dev/net/tun` could not be opened inside.
fn tun_refused(error: io::Error) -> NamespaceError {
    let line = match error.kind() {
        io::ErrorKind::NotFound => "cannot open /dev/net/tun: there is none; load the tun module \
                                    as root (modprobe tun), or run imds-tun exec as root"
            .to_owned(),
        io::ErrorKind::PermissionDenied => format!(
            "cannot open /dev/net/tun ({error}): imds-tun exec needs it readable and writable by \
             everyone (mode 0666), as Debian, Ubuntu and Fedora ship it; as root: chmod 0666 \
             /dev/net/tun, or run imds-tun exec as root"
        ),
        _ => format!("cannot open /dev/net/tun: {error}"),
    };
    NamespaceError::refused(line)
}

fn send_report(socket: &OwnedFd, report: &Report, fds: &[OwnedFd]) -> io::Result<()> {
    let bytes = serde_json::to_vec(report).map_err(io::Error::other)?;
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let control = [ControlMessage::ScmRights(&raw)];
    let control: &[ControlMessage] = if raw.is_empty() { &[] } else { &control };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[io::IoSlice::new(&bytes)],
        control,
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

fn receive_report(socket: &OwnedFd, request: &TunRequest) -> Result<Namespace, NamespaceError> {
    let failed = |error: io::Error| {
        NamespaceError::failed(format!(
            "the namespace could not be set up: no answer from the process making it ({error})"
        ))
    };
    let timeout = nix::sys::time::TimeVal::new(SET_UP_TIMEOUT.as_secs() as _, 0);
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
        .map_err(|errno| failed(errno.into()))?;
    let mut buffer = vec![0u8; REPORT_BYTES];
    let (length, fds, truncated) =
        receive_with_fds(socket, &mut buffer).map_err(|errno| failed(errno.into()))?;
    if length == 0 {
        return Err(failed(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "it ended without one",
        )));
    }
    if truncated {
        return Err(failed(io::Error::other("its answer was cut short")));
    }
    let report: Report = serde_json::from_slice(&buffer[..length])
        .map_err(|error| failed(io::Error::other(error)))?;
    match report {
        Report::Failed { line, refused } => Err(NamespaceError { line, refused }),
        Report::Ready { name, index } => {
            let mut fds = fds.into_iter();
            let mut next = || {
                fds.next()
                    .ok_or_else(|| failed(io::Error::other("a descriptor is missing")))
            };
            let device = CreatedDevice {
                fd: next()?,
                name,
                index,
                ipv6: request.ipv6,
                extra: request.extra.clone(),
            };
            let control = UnixListener::from(next()?);
            let route = next()?;
            let sock_diag = next()?;
            let watch_route = next()?;
            let net = next()?;
            let user = if nix::unistd::geteuid().is_root() {
                None
            } else {
                Some(next()?)
            };
            Ok(Namespace {
                device,
                control,
                route,
                sock_diag,
                watch_route,
                user,
                net,
            })
        }
    }
}

/// One message on `socket` into `buffer`, the descriptors that came with it (at most 8,
/// close-on-exec), and whether the message or its descriptors were cut short.
pub fn receive_with_fds(
    socket: &OwnedFd,
    buffer: &mut [u8],
) -> nix::Result<(usize, Vec<OwnedFd>, bool)> {
    let mut space = nix::cmsg_space!([RawFd; 8]);
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
            // SAFETY: the kernel just installed these descriptors in this process for us;
            // nothing else owns them.
            #[allow(unsafe_code)]
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let truncated = message
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    Ok((message.bytes, fds, truncated))
}

/// Joins the namespaces of `user` (when given) and `net`: for a child about to run CMD or
/// pasta. Only system calls, so it may run between `fork` and `exec` of a threaded process.
pub fn enter(user: Option<RawFd>, net: RawFd) -> io::Result<()> {
    // SAFETY: the descriptors are open in this process for as long as the call.
    #[allow(unsafe_code)]
    let (user, net) = unsafe {
        (
            user.map(|fd| std::os::fd::BorrowedFd::borrow_raw(fd)),
            std::os::fd::BorrowedFd::borrow_raw(net),
        )
    };
    if let Some(user) = user {
        nix::sched::setns(user, CloneFlags::CLONE_NEWUSER)?;
    }
    nix::sched::setns(net, CloneFlags::CLONE_NEWNET)?;
    Ok(())
}

/// Writes `line` to stderr without allocating: for a child between `fork` and `exec`.
pub fn say_in_child(line: &[u8]) {
    let _ = io::stderr().write_all(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory standing in for /proc/sys with `files`; removed on drop.
    struct Sysctls(std::path::PathBuf);

    impl Sysctls {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Sysctls {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn sysctls(files: &[(&str, &str)]) -> Sysctls {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = Sysctls(
            std::env::temp_dir().join(format!("imds-tun-sysctl-{}-{n}", std::process::id())),
        );
        for (name, value) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, value).expect("write");
        }
        dir
    }

    #[test]
    fn each_refusal_names_its_switch_and_what_to_do() {
        let off = sysctls(&[("user/max_user_namespaces", "0\n")]);
        let line = user_namespace_refused(Errno::ENOSPC, off.path()).line;
        assert!(line.contains("user.max_user_namespaces = 0"), "{line}");
        assert!(
            line.contains("sysctl -w user.max_user_namespaces="),
            "{line}"
        );

        let full = sysctls(&[("user/max_user_namespaces", "12\n")]);
        let line = user_namespace_refused(Errno::ENOSPC, full.path()).line;
        assert!(
            line.contains("limit of user namespaces is reached"),
            "{line}"
        );
        assert!(line.contains("= 12"), "{line}");

        let debian = sysctls(&[("kernel/unprivileged_userns_clone", "0\n")]);
        let line = user_namespace_refused(Errno::EPERM, debian.path()).line;
        assert!(
            line.contains("kernel.unprivileged_userns_clone = 0"),
            "{line}"
        );

        let ubuntu = sysctls(&[("kernel/apparmor_restrict_unprivileged_userns", "1\n")]);
        let line = user_namespace_refused(Errno::EPERM, ubuntu.path()).line;
        assert!(
            line.contains("kernel.apparmor_restrict_unprivileged_userns = 1"),
            "{line}"
        );

        let neither = sysctls(&[("kernel/unprivileged_userns_clone", "1\n")]);
        let error = user_namespace_refused(Errno::EPERM, neither.path());
        assert!(error.refused);
        assert!(
            error
                .line
                .contains("the kernel refused a new user namespace"),
            "{}",
            error.line
        );
        for error in [
            user_namespace_refused(Errno::ENOSPC, off.path()),
            user_namespace_refused(Errno::EPERM, neither.path()),
            tun_refused(io::Error::from_raw_os_error(libc::EACCES)),
        ] {
            assert!(
                error.refused && !error.line.contains('\n'),
                "{}",
                error.line
            );
            assert!(error.line.contains("as root"), "{}", error.line);
        }
    }
}
