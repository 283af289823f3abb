//! macOS: a utun device configured point-to-point, so the kernel derives the host route.
//!
//! Owns: creating the utun (the `tun` crate does the `PF_SYSTEM` control-socket dance), taking
//! its descriptor over, giving it `169.254.169.253 -> 169.254.169.254/32`, refusing when
//! something else already answers for the address, the tie-break between two imds-tun started
//! at the same moment, verifying the route afterwards, and the utun frame header on every packet.
//! The rules themselves (framing, `--tun-name`, the tie-break, reading `route get`) are pure
//! functions in `utun_rules.rs`, unit-tested on Linux; this file only makes the system calls.
//!
//! This file has never run: it is type-checked for both Apple targets in CI, and the behaviour
//! below rests on reading these sources. `scripts/macos-smoke.sh` is the test that proves it.
//! - A utun exists while its control socket is open; closing the descriptor (exit, SIGKILL)
//!   destroys the interface with its addresses and routes (XNU `net/if_utun.c`; the `tun`
//!   crate's `platform/macos/device.rs` opens it with `socket(PF_SYSTEM, SOCK_DGRAM,
//!   SYSPROTO_CONTROL)` + `connect` to `com.apple.net.utun_control`).
//! - The crate opens that socket without close-on-exec (macOS has no `SOCK_CLOEXEC`), so this
//!   file sets `FD_CLOEXEC` itself; children (the `route` command below, credential_process
//!   helpers) must not keep the utun alive.
//! - Every read and write carries a 4-byte protocol family in network byte order
//!   (XNU `utun_output`/`utun_ctl_send`; the crate's `generate_packet_information`).
//! - Units: `sc_unit = N + 1` asks for `utunN`, `0` lets the kernel pick; nothing else can be
//!   named (the crate refuses other names; `set_tun_name` is unsupported on Darwin).
//! - `SIOCAIFADDR` with address, destination and netmask at once makes `in_ifinit` add the host
//!   route to the destination (what `ifconfig utunN inet A B netmask M` does, ifconfig(8)).
//!   Setting address and destination one by one (the crate's `configure`) would not: with no
//!   destination yet, a point-to-point address gets no route. The crate's own `set_alias` also
//!   runs `route add -net` through `$PATH`, which the issue rules out, so routing is switched off
//!   in the crate and the ioctl is made here.
//! - `route -n get ADDRESS` prints `destination:`, `interface:` and `flags:` lines (route(8)).
//!
//! Simultaneous starts, without Linux's abstract-socket lock (macOS has none): each start checks
//! that the address is free, creates and configures its utun, then lists every interface whose
//! point-to-point destination is 169.254.169.254. The lowest `utunN` keeps the address; the
//! others close theirs and report `another imds-tun (interface utunN)`. A lower peer may be a
//! start that is itself about to give up (its `SIOCAIFADDR` lost the route with `EEXIST`), so a
//! start that sees one waits up to [`PEER_SETTLE`] for it to disappear before yielding: then
//! exactly one start survives. The route check that follows must name our utun in any case.
//!
//! Opening files as another user lives in `macos_open_as.rs` (a forked child that becomes the
//! user), re-exported here.

use super::claim::{self, Claim};
use super::utun_rules::{self, AF_INET_HEADER, HEADER_LEN, RouteAnswer, UnitRequest};
use super::{LOCAL_ADDRESS, METADATA_ADDRESS, PlatformError, TunRequest};
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::uio::{readv, writev};
use std::io::{self, IoSlice, IoSliceMut, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tun::AbstractDevice;

pub(crate) use super::macos_open_as::{groups_of, open_as_user};

/// How long a start that sees a lower-numbered rival waits for it to give up.
const PEER_SETTLE: Duration = Duration::from_secs(1);

/// `route` is asked by absolute path: under sudo `$PATH` is sudo's, but a launchd job or a
/// root shell may have anything first in it.
const ROUTE: &str = "/sbin/route";

/// How long `route -n get` may take before it is killed.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of `route -n get`'s output that is read; a real answer is well under 1 KiB.
const ROUTE_OUTPUT_CAP: u64 = 16 * 1024;

/// The utun control socket, registered with tokio for readiness. Owning the descriptor (not the
/// crate's `Device`) lets reads and writes add and strip the frame header without a copy.
pub struct AsyncTun {
    fd: AsyncFd<OwnedFd>,
    name: String,
}

impl std::fmt::Debug for AsyncTun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncTun")
            .field("name", &self.name)
            .finish()
    }
}

impl AsyncTun {
    /// The interface name the kernel gave the device (`utunN`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until at least one packet can be read with [`AsyncTun::try_recv`].
    pub async fn readable(&self) -> io::Result<()> {
        let mut guard = self.fd.readable().await?;
        // Keep the readiness: try_recv clears it when the queue is empty.
        guard.retain_ready();
        Ok(())
    }

    /// Reads one IPv4 packet if one is queued, without its frame header; `WouldBlock` when none
    /// is. Frames of other families (IPv6 the kernel sends on its own) are skipped.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut header = [0u8; HEADER_LEN];
            let read = self.fd.try_io(Interest::READABLE, |fd| {
                let mut parts = [IoSliceMut::new(&mut header), IoSliceMut::new(buf)];
                readv(fd, &mut parts).map_err(io::Error::from)
            })?;
            if let Some(len) = utun_rules::ipv4_payload_len(header, read) {
                return Ok(len);
            }
        }
    }

    /// A watch on this device's claim: macOS gives no news here, so it never fires (a
    /// destroyed utun shows as the device's read error).
    pub fn watch(&self) -> super::ClaimWatch {
        super::ClaimWatch::default()
    }

    /// Writes one IPv4 packet behind its frame header, waiting if the queue is full.
    pub async fn send(&self, packet: &[u8]) -> io::Result<()> {
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                let parts = [IoSlice::new(&AF_INET_HEADER), IoSlice::new(packet)];
                writev(fd, &parts).map_err(io::Error::from)
            })
            .await
            .map(|_| ())
    }
}

/// `--check`'s claim: the start's checks before it creates the utun, in its words.
pub(crate) fn check_claim(request: &TunRequest) -> Result<(), PlatformError> {
    refuse_extra(request)?;
    if request.ipv6 {
        return Err(PlatformError::Ipv6Unavailable(
            "IPv6 (fd00:ec2::254) is not supported on macOS yet".into(),
        ));
    }
    utun_rules::unit_request(&request.name)
        .ok_or_else(|| PlatformError::UtunName(request.name.clone()))?;
    match current_claim()? {
        Some(holder) => Err(PlatformError::AddressClaimed(holder)),
        None => Ok(()),
    }
}

/// The container endpoints' addresses (`--ecs`, `--eks-pod-identity`) would need routes
/// through the routing socket, which is not written yet: refused before anything is made.
fn refuse_extra(request: &TunRequest) -> Result<(), PlatformError> {
    match request.extra.first() {
        Some(extra) => Err(PlatformError::ExtraUnsupported(extra.flag())),
        None => Ok(()),
    }
}

/// `--check` of one extra address: not supported on macOS yet.
pub(crate) fn check_extra_claim(
    _request: &TunRequest,
    extra: super::ExtraAddress,
) -> Result<(), PlatformError> {
    Err(PlatformError::ExtraUnsupported(extra.flag()))
}

pub(crate) fn claim_metadata_address(request: &TunRequest) -> Result<AsyncTun, PlatformError> {
    refuse_extra(request)?;
    if request.ipv6 {
        // A utun takes an IPv6 pair through SIOCAIFADDR_IN6 and the host route through the
        // routing socket; neither is written yet, and half an IPv6 claim is worse than none.
        return Err(PlatformError::Ipv6Unavailable(
            "IPv6 (fd00:ec2::254) is not supported on macOS yet".into(),
        ));
    }
    let unit = utun_rules::unit_request(&request.name)
        .ok_or_else(|| PlatformError::UtunName(request.name.clone()))?;
    if let Some(holder) = current_claim()? {
        return Err(PlatformError::AddressClaimed(holder));
    }

    let mut config = tun::Configuration::default();
    if let UnitRequest::Unit(number) = unit {
        config.tun_name(format!("utun{number}"));
    }
    // No address in the crate's configuration: it would set address and destination one ioctl
    // at a time (no host route) and, with routing on, run `route add` (see the module doc).
    config.mtu(request.mtu).up().platform_config(|platform| {
        platform.enable_routing(false);
    });
    let device = tun::create(&config).map_err(|error| creation_error(error, &request.name))?;
    let name = device.tun_name().map_err(|error| PlatformError::Io {
        context: "reading the utun device name",
        source: tun_io(error),
    })?;
    // Dropping the crate's Device also closes its spare AF_INET ioctl socket, which was opened
    // without close-on-exec too. `into_raw_fd` hands over the utun descriptor without closing it.
    let raw = device.into_raw_fd();
    // SAFETY: `raw` is an open descriptor that nothing else owns any more (the Device gave it
    // up above), so the OwnedFd is its only owner and closes it exactly once.
    #[allow(unsafe_code)]
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let io_error = |context: &'static str| {
        move |errno: nix::Error| PlatformError::Io {
            context,
            source: io::Error::from(errno),
        }
    };
    // As early as the descriptor is ours; see the module doc for why it matters.
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(io_error("making the utun descriptor close-on-exec"))?;
    let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(io_error("reading the utun flags"))?;
    fcntl(
        &fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(io_error("making the utun device non-blocking"))?;

    set_point_to_point(&name)?;
    yield_to_earlier_start(&name)?;
    verify_route(&name)?;

    // SAFETY: the AsyncFd takes ownership of the descriptor, so it stays open for exactly as
    // long as it is registered.
    #[allow(unsafe_code)]
    let fd = unsafe { AsyncFd::register(fd) }.map_err(|error| PlatformError::Io {
        context: "registering the utun device with the runtime",
        source: error.into_parts().1,
    })?;
    Ok(AsyncTun { fd, name })
}

/// `struct ifaliasreq` from <net/if.h>, declared here because libc's has private padding fields
/// and cannot be built field by field (the tun crate's `macos/sys.rs` declares it the same way).
#[repr(C)]
struct IfAliasReq {
    name: [nix::libc::c_char; nix::libc::IFNAMSIZ],
    addr: nix::libc::sockaddr,
    destination: nix::libc::sockaddr,
    mask: nix::libc::sockaddr,
}

// SIOCAIFADDR = _IOW('i', 26, struct ifaliasreq), <sys/sockio.h>; the tun crate's macos/sys.rs
// declares the same.
nix::ioctl_write_ptr!(siocaifaddr, b'i', 26, IfAliasReq);

/// Gives `device` our address with the metadata address as its peer, in one `SIOCAIFADDR`, as
/// `ifconfig utunN inet 169.254.169.253 169.254.169.254 netmask 255.255.255.255` would.
fn set_point_to_point(device: &str) -> Result<(), PlatformError> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, socket};
    let io_error = |source| PlatformError::Io {
        context: "configuring the utun address",
        source,
    };
    let socket = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::empty(),
        None,
    )
    .map_err(|errno| io_error(errno.into()))?;
    let sockaddr = |address: Ipv4Addr| -> nix::libc::sockaddr {
        let sin: nix::libc::sockaddr_in = *SockaddrIn::from(SocketAddrV4::new(address, 0)).as_ref();
        // SAFETY: sockaddr_in and sockaddr are both 16 bytes on Darwin (checked by transmute at
        // compile time), and the kernel reads the field as the sockaddr_in it is.
        #[allow(unsafe_code)]
        unsafe {
            std::mem::transmute::<nix::libc::sockaddr_in, nix::libc::sockaddr>(sin)
        }
    };
    let mut name = [0 as nix::libc::c_char; nix::libc::IFNAMSIZ];
    if device.len() >= name.len() {
        return Err(PlatformError::InvalidName(device.to_owned()));
    }
    for (slot, byte) in name.iter_mut().zip(device.bytes()) {
        *slot = byte as nix::libc::c_char;
    }
    let request = IfAliasReq {
        name,
        addr: sockaddr(LOCAL_ADDRESS),
        destination: sockaddr(METADATA_ADDRESS),
        mask: sockaddr(Ipv4Addr::BROADCAST),
    };
    // SAFETY: `request` is a complete ifaliasreq that lives across the call; the kernel only
    // reads it.
    #[allow(unsafe_code)]
    let result = unsafe { siocaifaddr(socket.as_raw_fd(), &request) };
    match result {
        Ok(_) => Ok(()),
        // The host route exists already: another claim got in between our check and now.
        Err(nix::Error::EEXIST) => Err(PlatformError::AddressClaimed(Claim::Existing {
            device: device.to_owned(),
        })),
        Err(errno) => Err(io_error(errno.into())),
    }
}

/// The tie-break of the module doc: yields to a lower-numbered utun with our peer address,
/// after giving it [`PEER_SETTLE`] to disappear.
fn yield_to_earlier_start(ours: &str) -> Result<(), PlatformError> {
    let deadline = Instant::now() + PEER_SETTLE;
    loop {
        let peers = point_to_point_peers()?;
        let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
        match utun_rules::winner_over(ours, &peers) {
            None => return Ok(()),
            Some(winner) if Instant::now() >= deadline => {
                return Err(PlatformError::AddressClaimed(Claim::ImdsTun {
                    pid: None,
                    interface: Some(winner.to_owned()),
                }));
            }
            // Blocking sleep: this runs once at start-up, before anything is served.
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The interfaces whose point-to-point destination is the metadata address.
fn point_to_point_peers() -> Result<Vec<String>, PlatformError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|errno| PlatformError::Io {
        context: "listing network interfaces",
        source: io::Error::from(errno),
    })?;
    let mut peers: Vec<String> = addrs
        .filter(|ifaddr| is_metadata(ifaddr.destination.as_ref()))
        .map(|ifaddr| ifaddr.interface_name)
        .collect();
    peers.sort();
    peers.dedup();
    Ok(peers)
}

fn is_metadata(address: Option<&nix::sys::socket::SockaddrStorage>) -> bool {
    address
        .and_then(|a| a.as_sockaddr_in())
        .is_some_and(|sin| sin.ip() == METADATA_ADDRESS)
}

/// Who, if anyone, already answers for the metadata address on this host: an interface address
/// (`ifconfig lo0 alias 169.254.169.254`), the peer of a point-to-point link (another
/// imds-tun, a VPN), or a host route someone added (`route add -host 169.254.169.254 ...`).
pub(crate) fn current_claim() -> Result<Option<Claim>, PlatformError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|errno| PlatformError::Io {
        context: "listing network interfaces",
        source: io::Error::from(errno),
    })?;
    let metadata = IpAddr::V4(METADATA_ADDRESS);
    for ifaddr in addrs {
        let prefix = ifaddr
            .netmask
            .as_ref()
            .and_then(|mask| mask.as_sockaddr_in())
            .map_or(32, |mask| claim::prefix_of(IpAddr::V4(mask.ip())));
        if is_metadata(ifaddr.address.as_ref()) {
            return Ok(Some(Claim::Address {
                address: metadata,
                prefix,
                interface: ifaddr.interface_name,
            }));
        }
        if is_metadata(ifaddr.destination.as_ref()) {
            return Ok(Some(Claim::Peer {
                local: ifaddr
                    .address
                    .as_ref()
                    .and_then(|a| a.as_sockaddr_in())
                    .map(|sin| IpAddr::V4(sin.ip())),
                peer: metadata,
                prefix,
                interface: ifaddr.interface_name,
            }));
        }
    }
    let text = METADATA_ADDRESS.to_string();
    Ok(route_get()?
        .filter(|answer| answer.is_host_route_to(&text))
        .map(|answer| Claim::Route {
            destination: metadata,
            interface: answer.interface,
            gateway: None,
        }))
}

/// Asks the kernel where it routes the metadata address; only an answer naming our utun proves
/// the claim.
fn verify_route(device: &str) -> Result<(), PlatformError> {
    let answer = route_get()?;
    let taken = answer.as_ref().and_then(|a| a.interface.as_deref());
    if taken == Some(device) {
        return Ok(());
    }
    Err(PlatformError::RouteNotTaken {
        device: device.to_owned(),
        route: match taken {
            Some(other) => format!("out of interface {other}"),
            None => "nowhere (no route)".to_owned(),
        },
    })
}

/// Where the kernel routes the metadata address now (`route -n get`), judged by
/// [`super::real_route::decide`]: `lo0` is this host's own address, a `utun` another imds-tun
/// or a VPN. route(8) prints the next hop on a `gateway:` line, which is not read: the
/// interface is what connections are bound to (`IP_BOUND_IF`).
pub(crate) fn real_metadata_route()
-> Result<super::real_route::RealRoute, super::real_route::NoRealRoute> {
    use super::real_route::{Found, NoRealRoute, decide};
    let answer = route_get().map_err(|error| NoRealRoute(error.to_string()))?;
    let found = match answer.and_then(|answer| answer.interface) {
        None => Found::Nothing("`route -n get 169.254.169.254` found none".into()),
        Some(interface) if interface.starts_with("lo") => Found::Local,
        Some(interface) => Found::Route {
            tun: interface.starts_with("utun"),
            interface,
            gateway: None,
            source: None,
        },
    };
    decide(found)
}

/// Runs `route -n get 169.254.169.254`: `None` when the kernel has no route at all (route exits
/// non-zero with "not in table").
///
/// Why the command and not a `PF_ROUTE` socket: an `RTM_GET` needs a hand-packed `rt_msghdr`
/// with sockaddrs rounded to Darwin's alignment, parsed back the same way; that packing could
/// not be tested without a Mac, while route(8)'s text is documented, stable and its parser is
/// unit-tested (`utun_rules::parse_route_get`). The cost is one short-lived child at start-up.
fn route_get() -> Result<Option<RouteAnswer>, PlatformError> {
    let io_error = |source| PlatformError::Io {
        context: "asking `/sbin/route -n get 169.254.169.254` for the route",
        source,
    };
    let mut child = Command::new(ROUTE)
        .args(["-n", "get", &METADATA_ADDRESS.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io_error)?;
    // The answer fits in the pipe buffer many times over, so route exits before it is read.
    let deadline = Instant::now() + ROUTE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io_error)? {
            break status;
        }
        if Instant::now() >= deadline {
            // Best effort: the process may have exited just now.
            let _ = child.kill();
            let _ = child.wait();
            return Err(io_error(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", ROUTE_TIMEOUT.as_secs()),
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if !status.success() {
        return Ok(None);
    }
    let mut output = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        stdout
            .take(ROUTE_OUTPUT_CAP)
            .read_to_end(&mut output)
            .map_err(io_error)?;
    }
    Ok(Some(utun_rules::parse_route_get(&String::from_utf8_lossy(
        &output,
    ))))
}

fn tun_io(error: tun::Error) -> io::Error {
    match error {
        tun::Error::Io(source) => source,
        other => io::Error::other(other.to_string()),
    }
}

fn creation_error(error: tun::Error, name: &str) -> PlatformError {
    match error {
        tun::Error::NameTooLong | tun::Error::InvalidName => {
            PlatformError::UtunName(name.to_string())
        }
        other => {
            let source = tun_io(other);
            match source.raw_os_error() {
                // Connecting to the utun control needs root.
                Some(errno) if errno == nix::libc::EPERM || errno == nix::libc::EACCES => {
                    PlatformError::NotPermitted
                }
                // The requested unit exists already.
                Some(errno) if errno == nix::libc::EBUSY => {
                    PlatformError::NameInUse(name.to_string())
                }
                _ => PlatformError::Io {
                    context: "creating the utun device",
                    source,
                },
            }
        }
    }
}
