//! The TUN device and the point-to-point address that routes `169.254.169.254` into it.
//!
//! This is the only layer that knows about the operating system. It hands the rest of the
//! program an [`AsyncTun`]: a non-blocking file descriptor that reads and writes whole IP
//! packets. Nothing here survives the process: the device is created non-persistent, so when the
//! last descriptor closes (exit, crash, SIGKILL) the kernel removes the device, its address and
//! the host route that came with the address.
//!
//! Why a point-to-point pair and not a route: giving the TUN the local address
//! `169.254.169.253` with peer `169.254.169.254/32` makes the kernel install
//! `169.254.169.254 dev <tun> proto kernel scope link src 169.254.169.253` by itself. The client's
//! packets then carry a real source address (without one, a namespace with only `lo` sends SYNs
//! from 0.0.0.0, which no TCP stack accepts), and no route is ever written that could outlive us.
//!
//! With `--ipv6` the same device also claims the Nitro IPv6 endpoint `fd00:ec2::254` the same
//! way (Linux): local `fd00:ec2::253`, peer `fd00:ec2::254/128`, so the kernel's route to that
//! one /128 belongs to the device and goes with it.
//!
//! With `--ecs` and `--eks-pod-identity` the device also receives the container endpoints'
//! addresses ([`ExtraAddress`]): a device has one pair per family, so each is a host route of
//! the device's own with our side of the pair as its source, checked, verified and watched as
//! the metadata address is, and deleted by the kernel with the device.
//!
//! It also owns the other things that differ per OS:
//! - opening a file with another user's rights ([`open_as_user`]), which `config::named_file`
//!   uses for files named under `sudo`;
//! - giving up root ([`privileges`]) and the capability sets ([`capabilities`]);
//! - the claim lock that makes two simultaneous starts safe (`claim_lock.rs`, Linux), and what
//!   holds an address when it is taken, with the command that releases it ([`claim`]);
//! - the kernel's answers about routes and socket owners, and its news of changed links,
//!   addresses and routes ([`netlink`], Linux), which [`ClaimWatch`] turns into "the claim is
//!   lost";
//! - what this host is: name, machine id, addresses ([`host`]);
//! - what `--check` asks before a start: can a TUN be created here ([`readiness`]);
//! - the open-file limit and TCP keep-alive on accepted sockets ([`resources`]).
//!
//! One private `imp` module per OS sits behind this small interface.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use nix::unistd::{Gid, Uid};

pub use claim::Claim;

#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod imp;

#[cfg(target_os = "linux")]
pub mod capabilities;
pub mod claim;
#[cfg(target_os = "linux")]
mod claim_lock;
pub mod host;
#[cfg(target_os = "linux")]
pub mod namespace;
#[cfg(target_os = "linux")]
pub mod netlink;
pub mod privileges;
pub mod readiness;
pub mod real_route;
pub mod resources;
// Compiled everywhere so that Linux's `cargo test` covers what macOS decides.
mod utun_rules;

#[cfg(target_os = "macos")]
#[path = "macos.rs"]
mod imp;

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
#[path = "unsupported.rs"]
mod imp;

#[cfg(target_os = "macos")]
mod macos_open_as;
#[cfg(any(target_os = "macos", test))]
mod open_in_child;

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod file_bits;

/// Without Linux capability sets there is nothing to cut beyond the user ids.
#[cfg(not(target_os = "linux"))]
pub mod capabilities {
    /// Never made here: there are no sets to fail at.
    #[derive(Debug, thiserror::Error)]
    #[error("capabilities: {0}")]
    pub struct CapabilityError(String);

    /// Nothing to cut: always succeeds.
    pub fn restrict_inheritance() -> Result<(), CapabilityError> {
        Ok(())
    }

    /// Nothing to check beyond the user ids (which `privileges` proves itself): always
    /// succeeds.
    pub fn verify_unprivileged() -> Result<(), CapabilityError> {
        Ok(())
    }

    /// No effective set to read: always `None`.
    pub fn effective_mask() -> Option<u64> {
        None
    }

    /// Linux's bit number; without capability sets nothing ever holds it.
    pub const CAP_NET_ADMIN_BIT: u32 = 12;
}

/// A change to this process's environment: set to the value, or remove with `None`.
pub type EnvChange = (String, Option<String>);

/// Why the environment was not changed.
#[derive(Debug, thiserror::Error)]
#[error(
    "internal error: the environment may only be changed while the process has one thread \
     ({threads} run)"
)]
pub struct ThreadsRunning {
    threads: usize,
}

/// Applies `changes` to the process environment. The C library's `getenv` does not lock
/// against `setenv`, so this is only sound while no other thread runs: imds-tun calls it from
/// `main`, before the async runtime starts, and it refuses (on Linux, where the threads can be
/// counted) when other threads exist.
#[allow(unsafe_code)]
pub fn change_environment_before_threads(changes: &[EnvChange]) -> Result<(), ThreadsRunning> {
    #[cfg(target_os = "linux")]
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        let threads = tasks.count();
        if threads != 1 {
            return Err(ThreadsRunning { threads });
        }
    }
    for (key, value) in changes {
        // SAFETY: single-threaded (checked above where the OS lets us), so no other thread
        // can be reading the environment while it changes.
        unsafe {
            match value {
                Some(value) => std::env::set_var(key, value),
                None => std::env::remove_var(key),
            }
        }
    }
    Ok(())
}

/// The metadata service address every cloud SDK dials.
pub const METADATA_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// Our side of the point-to-point link: the source address clients' packets carry.
pub const LOCAL_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 253);

/// The metadata service's IPv6 address on Nitro instances, which the SDKs dial in IPv6 mode
/// (`AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6`): `fd00:ec2::254`.
pub const METADATA_ADDRESS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Our side of the IPv6 point-to-point pair, as [`LOCAL_ADDRESS`] is for IPv4: `fd00:ec2::253`.
pub const LOCAL_ADDRESS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x253);

/// The ECS container endpoint (`--ecs`): credentials at `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`
/// and task metadata v4, `169.254.170.2`.
pub const ECS_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);

/// The EKS Pod Identity agent's address (`--eks-pod-identity`): `169.254.170.23`.
pub const EKS_POD_IDENTITY_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 23);

/// The EKS Pod Identity agent's IPv6 address (`--eks-pod-identity --ipv6`): `fd00:ec2::23`.
pub const EKS_POD_IDENTITY_ADDRESS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23);

/// An address claimed on the same TUN beside the metadata address, for a container credential
/// endpoint. Unlike the metadata address it is no point-to-point peer (a device has one pair per
/// family): a host route into the device, written with our side of the pair as its source so
/// clients' packets carry the same source address (and attribution works the same). The route
/// belongs to the device and goes with it, SIGKILL included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtraAddress {
    /// [`ECS_ADDRESS`] (`--ecs`).
    Ecs,
    /// [`EKS_POD_IDENTITY_ADDRESS`] (`--eks-pod-identity`).
    EksPodIdentity,
    /// [`EKS_POD_IDENTITY_ADDRESS_V6`] (`--eks-pod-identity` with `--ipv6`).
    EksPodIdentityV6,
}

impl ExtraAddress {
    /// The address claimed.
    pub fn address(self) -> IpAddr {
        match self {
            ExtraAddress::Ecs => ECS_ADDRESS.into(),
            ExtraAddress::EksPodIdentity => EKS_POD_IDENTITY_ADDRESS.into(),
            ExtraAddress::EksPodIdentityV6 => EKS_POD_IDENTITY_ADDRESS_V6.into(),
        }
    }

    /// The source address of its route: our side of the pair of its family.
    pub fn source(self) -> IpAddr {
        match self.address() {
            IpAddr::V4(_) => LOCAL_ADDRESS.into(),
            IpAddr::V6(_) => LOCAL_ADDRESS_V6.into(),
        }
    }

    /// `ip` or `ip -6`, as its family needs, for messages.
    pub fn ip_command(self) -> &'static str {
        if self.address().is_ipv6() {
            "ip -6"
        } else {
            "ip"
        }
    }

    /// The flag that asks for it, for messages ("or run without --ecs").
    pub fn flag(self) -> &'static str {
        match self {
            ExtraAddress::Ecs => "--ecs",
            ExtraAddress::EksPodIdentity | ExtraAddress::EksPodIdentityV6 => "--eks-pod-identity",
        }
    }

    /// The extra addresses `--ecs`, `--eks-pod-identity` and `--ipv6` ask for, in claim order.
    pub fn requested(ecs: bool, eks_pod_identity: bool, ipv6: bool) -> Vec<ExtraAddress> {
        let mut extra = Vec::new();
        if ecs {
            extra.push(ExtraAddress::Ecs);
        }
        if eks_pod_identity {
            extra.push(ExtraAddress::EksPodIdentity);
            if ipv6 {
                extra.push(ExtraAddress::EksPodIdentityV6);
            }
        }
        extra
    }
}

/// IPv6's smallest link MTU (RFC 8200): below it the kernel turns IPv6 off on a device.
pub const IPV6_MIN_MTU: u16 = 1280;

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct TunRequest {
    /// Interface name; `%d` lets the kernel choose a free number.
    pub name: String,
    /// The device's MTU in bytes (`--mtu`, 576 to 65535; at least 1280 with `--ipv6`).
    pub mtu: u16,
    /// Also claim [`METADATA_ADDRESS_V6`] (`--ipv6`).
    pub ipv6: bool,
    /// The container endpoints' addresses claimed too (`--ecs`, `--eks-pod-identity`), each
    /// checked, routed, verified and watched as the metadata address is. An IPv6 one only
    /// with `ipv6`.
    pub extra: Vec<ExtraAddress>,
    /// How many packets on their way to imds-tun the kernel may queue on the device before it
    /// drops them (Linux's `txqueuelen`); see [`transmit_queue_packets`].
    pub queue_packets: u32,
    /// The interface of the real metadata service's route (`--pass-through`): a host route to
    /// the address out of it is that service's way, which the device's own route outranks,
    /// not a claim to refuse (Azure's DHCP gives VMs one). `None` without `--pass-through`.
    pub real_route: Option<String>,
}

/// The TUN's queue for `max_connections` clients: four packets each (a SYN or the ACK that
/// completes it, a request, a FIN, a retransmission), at least the kernel's default of 500 and
/// at most 16384.
///
/// Every client's packets wait in this one queue while the stack is busy, where a kernel socket
/// would have its own receive buffer; a queue smaller than what the admitted clients have in
/// flight drops packets, and each drop costs its client a retransmission timeout (200 ms or
/// more; a SYN 1 s). Queued packets are charged to their senders' socket buffers, so the upper
/// bound only caps what a flood can hold in the kernel.
pub fn transmit_queue_packets(max_connections: usize) -> u32 {
    let wanted = max_connections.saturating_mul(4).clamp(500, 16384);
    u32::try_from(wanted).unwrap_or(16384)
}

/// A TUN device carrying the metadata address, ready for non-blocking packet I/O.
pub use imp::AsyncTun;
#[cfg(target_os = "linux")]
pub use imp::CreatedDevice;

/// Registers a TUN device `imds-tun exec`'s namespace child created and claimed
/// ([`namespace::create`]) with the runtime.
#[cfg(target_os = "linux")]
pub fn adopt_device(device: CreatedDevice) -> Result<AsyncTun, PlatformError> {
    imp::adopt(device)
}

/// Watches the kernel for the loss of the claim an [`AsyncTun`] holds ([`AsyncTun::watch`]):
/// `lost().await` ends with a [`ClaimLoss`] once the device, its address, its link or the
/// kernel's route to the metadata address is gone. Linux listens to rtnetlink; elsewhere it
/// never fires (the device's read error is the only sign there).
#[cfg(target_os = "linux")]
pub use imp::ClaimWatch;
#[cfg(not(target_os = "linux"))]
pub use no_watch::ClaimWatch;

/// Outside Linux: no news of the claim, so a watch that never fires.
#[cfg(not(target_os = "linux"))]
mod no_watch {
    use super::ClaimLoss;

    /// A claim watch that never fires.
    #[derive(Debug, Default)]
    pub struct ClaimWatch(());

    impl ClaimWatch {
        /// Never ends.
        pub async fn lost(&mut self) -> ClaimLoss {
            std::future::pending().await
        }

        /// Nothing is known: always `None`.
        pub fn check(&self) -> Option<ClaimLoss> {
            None
        }
    }
}

/// How the claim on the metadata address was lost while serving; each says what happened and
/// the command that usually does it, for the one line the process exits with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimLoss {
    /// The TUN device no longer exists.
    #[error("the TUN device {device} was deleted (`ip link del {device}` or the like)")]
    DeviceDeleted {
        /// The device's name.
        device: String,
    },
    /// The TUN device is down: the kernel routes nothing into it.
    #[error("the TUN device {device} was set down (`ip link set {device} down` or the like)")]
    LinkDown {
        /// The device's name.
        device: String,
    },
    /// Our point-to-point address is gone from the device, and the route with it.
    #[error(
        "the address {local} peer {peer} was removed from the TUN device {device} (`ip addr flush \
         dev {device}` or the like)"
    )]
    AddressRemoved {
        /// The device's name.
        device: String,
        /// Our side of the pair (169.254.169.253 or fd00:ec2::253).
        local: IpAddr,
        /// The metadata address, the pair's peer.
        peer: IpAddr,
    },
    /// The kernel now sends packets for the metadata address somewhere else: the route was
    /// deleted, or a policy rule or another route took precedence.
    #[error(
        "the kernel's route to {address} no longer goes into the TUN device {device}, it goes \
         {route} (a deleted route, or a new `ip rule`; see `ip route get {address}`)"
    )]
    RouteTaken {
        /// The device's name.
        device: String,
        /// The metadata address (169.254.169.254 or fd00:ec2::254).
        address: IpAddr,
        /// Where it goes now ("out of interface eth0", "nowhere (no route)").
        route: String,
    },
}

/// Why the TUN side could not be set up; every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// Creating the device was refused (EPERM, or EACCES without CAP_NET_ADMIN): not root.
    #[cfg_attr(
        not(target_os = "macos"),
        error(
            "creating a TUN device needs root (CAP_NET_ADMIN): run `sudo imds-tun`, or serve on a \
             kernel socket without a TUN: `imds-tun --no-tun --listen 127.0.0.1:8080`"
        )
    )]
    #[cfg_attr(
        target_os = "macos",
        error(
            "creating a utun device needs root: run `sudo imds-tun`, or serve on a kernel socket \
             without a TUN: `imds-tun --no-tun --listen 127.0.0.1:8080`"
        )
    )]
    NotPermitted,
    /// CAP_NET_ADMIN is held but `/dev/net/tun`'s mode refuses this user.
    #[error(
        "/dev/net/tun exists but this user cannot open it (uid {uid}): make it readable and \
         writable for everyone as Debian ships it (`sudo chmod 0666 /dev/net/tun`), or run \
         `sudo imds-tun`"
    )]
    TunDeviceDenied {
        /// The effective user id that was refused.
        uid: u32,
    },
    /// No `/dev/net/tun` (ENOENT, ENODEV): the driver is not loaded or not passed in.
    #[error(
        "/dev/net/tun is missing: load the TUN driver with `sudo modprobe tun`; inside a container \
         pass the device (`docker run --device /dev/net/tun --cap-add NET_ADMIN ...`)"
    )]
    NoTunDevice,
    /// Something already answers for 169.254.169.254: who (another imds-tun with its pid, an
    /// address on an interface, a route), and the command that releases exactly that.
    #[error("169.254.169.254 is already claimed by {0}; {advice} and retry", advice = .0.advice())]
    AddressClaimed(Claim),
    /// With `--ipv6`: something already answers for fd00:ec2::254; who, and how to release it.
    #[error(
        "fd00:ec2::254 is already claimed by {0}; {advice} and retry, or run without --ipv6",
        advice = .0.advice()
    )]
    Ipv6AddressClaimed(Claim),
    /// With `--ipv6`: the device has fd00:ec2::254 as its peer, but the kernel sends packets
    /// for it elsewhere.
    #[error(
        "the kernel routes fd00:ec2::254 {route}, not into {device}: a policy-routing rule or \
         another route takes precedence; check `ip -6 rule` and `ip -6 route get fd00:ec2::254`"
    )]
    Ipv6RouteNotTaken {
        /// Our TUN device's name.
        device: String,
        /// Where the kernel routes it instead ("out of interface eth0", "nowhere (no route)").
        route: String,
    },
    /// `--ecs` or `--eks-pod-identity`: something already answers for the extra address; who,
    /// and how to release it.
    #[error(
        "{address} is already claimed by {claim}; {advice} and retry, or run without {flag}",
        address = .extra.address(),
        advice = .claim.advice(),
        flag = .extra.flag()
    )]
    ExtraAddressClaimed {
        /// The address asked for.
        extra: ExtraAddress,
        /// What holds it.
        claim: Claim,
    },
    /// `--ecs` or `--eks-pod-identity`: the device's route to the extra address is there, but
    /// the kernel sends packets for it elsewhere.
    #[error(
        "the kernel routes {address} {route}, not into {device}: a policy-routing rule or another \
         route takes precedence; check `{ip} rule` and `{ip} route get {address}`",
        address = .extra.address(),
        ip = .extra.ip_command()
    )]
    ExtraRouteNotTaken {
        /// The address asked for.
        extra: ExtraAddress,
        /// Our TUN device's name.
        device: String,
        /// Where the kernel routes it instead.
        route: String,
    },
    /// `--ecs` or `--eks-pod-identity` where the container endpoints cannot be claimed yet
    /// (macOS, other systems); the flag.
    #[error("{0} cannot be served on this operating system yet; run without {0}")]
    ExtraUnsupported(&'static str),
    /// `--ipv6` on a host or namespace without IPv6, or on macOS; why.
    #[error("--ipv6 cannot be served here: {0}; run without --ipv6")]
    Ipv6Unavailable(String),
    /// `--tun-name` names a device another process holds open (EBUSY); the name.
    #[error("TUN device name {0:?} is already in use by another process: pick another --tun-name")]
    NameInUse(String),
    /// `--tun-name` names an interface that exists already (a persistent TUN made with `ip
    /// tuntap add`, or any other device): imds-tun would attach to it and change it, and could
    /// not leave it as it was; the name.
    #[error(
        "--tun-name {0:?}: an interface of that name already exists (a persistent TUN from `ip \
         tuntap add`, or another device); imds-tun makes a device of its own that goes with it \
         and will not take one over: pick another --tun-name, or remove it with `ip link del {0}`"
    )]
    NameExists(String),
    /// `--tun-name` is not a valid interface name; the name as given.
    #[error("invalid --tun-name {0:?}: use at most 15 characters, no '/' or whitespace")]
    InvalidName(String),
    /// macOS names utun devices itself (`utunN`); other names cannot be honoured there.
    #[error(
        "--tun-name {0:?} cannot be used on macOS, which names TUN devices utunN itself: pass \
         `--tun-name utunN` for one unit, or a name with %d (the default imds%d) for any free one"
    )]
    UtunName(String),
    /// The device has 169.254.169.254 as its peer, but the kernel sends packets for it
    /// elsewhere (a policy rule or a more specific route).
    #[cfg_attr(
        not(target_os = "macos"),
        error(
            "the kernel routes 169.254.169.254 {route}, not into {device}: a policy-routing rule \
             or another route takes precedence; check `ip rule` and `ip route get 169.254.169.254`"
        )
    )]
    #[cfg_attr(
        target_os = "macos",
        error(
            "the kernel routes 169.254.169.254 {route}, not into {device}: another route takes \
             precedence; check `route -n get 169.254.169.254` and `netstat -rn -f inet`"
        )
    )]
    RouteNotTaken {
        /// Our TUN device's name.
        device: String,
        /// Where the kernel routes it instead ("out of interface eth0", "nowhere (no route)").
        route: String,
    },
    /// An operating system other than Linux and macOS: no TUN support yet.
    #[error(
        "imds-tun cannot create a TUN device on this operating system yet; use --no-tun --listen"
    )]
    Unsupported,
    /// Any other failed system call while claiming or checking.
    #[error("{context}: {source}")]
    Io {
        /// What was being done ("taking the claim lock ...", "turning IPv6 on for the TUN
        /// device", ...).
        context: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// Creates the TUN device and claims [`METADATA_ADDRESS`] through it (and, with
/// [`TunRequest::ipv6`], [`METADATA_ADDRESS_V6`]), or explains why not.
///
/// Checks first that nothing else holds an address, so a refusal creates nothing. If a step
/// fails after the device exists, dropping the half-made device removes it again.
pub fn claim_metadata_address(request: &TunRequest) -> Result<AsyncTun, PlatformError> {
    imp::claim_metadata_address(request)
}

/// What a start would decide about `request` before and while claiming, asked without creating
/// anything (`--check`): the same checks and messages as [`claim_metadata_address`], plus (on
/// Linux) another imds-tun named by pid and a policy rule that would route the address past a
/// new device.
pub fn check_claim(request: &TunRequest) -> Result<(), PlatformError> {
    imp::check_claim(request)
}

/// What a start would decide about one extra address of `request` (`--ecs`,
/// `--eks-pod-identity`), asked without creating anything: nothing holds it, and (Linux) no
/// policy rule would route it past a new device; in a start's words. `--check` reports each.
pub fn check_extra_claim(request: &TunRequest, extra: ExtraAddress) -> Result<(), PlatformError> {
    imp::check_extra_claim(request, extra)
}

/// The pid of the process holding the claim lock as a claimant may (root, or holding
/// CAP_NET_ADMIN, as the packaged service's dynamic user does): the imds-tun that owns the
/// claim on [`METADATA_ADDRESS`] in this network namespace. `None` when nobody does (or only a
/// squatter), and outside Linux.
pub fn claim_holder() -> io::Result<Option<i32>> {
    #[cfg(target_os = "linux")]
    {
        Ok(match claim_lock::holder()? {
            Some(claim_lock::Holder::Privileged { pid }) => Some(pid),
            _ => None,
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(None)
    }
}

/// Who, if anyone, already answers for [`METADATA_ADDRESS`] on this host (an address on `lo`,
/// a host route, ...), as the kernel reports it: the check [`claim_metadata_address`] makes
/// first, creating nothing.
pub fn current_claim() -> Result<Option<Claim>, PlatformError> {
    imp::current_claim()
}

/// Where the kernel routes [`METADATA_ADDRESS`] now, as the real metadata service's way out
/// (`--pass-through`): asked before the claim, since afterwards the answer is imds-tun's TUN.
pub fn real_metadata_route() -> Result<real_route::RealRoute, real_route::NoRealRoute> {
    imp::real_metadata_route()
}

/// The control socket's address (`imds-tun ctl`): on Linux the abstract name
/// `@imds-tun/control`, which belongs to the network namespace, needs no file and vanishes with
/// the process, as the claim lock's does.
#[cfg(target_os = "linux")]
pub fn control_address() -> io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(b"imds-tun/control")
}

/// Elsewhere there are no abstract sockets, and a socket file could be left behind: no control
/// channel yet.
#[cfg(not(target_os = "linux"))]
pub fn control_address() -> io::Result<std::os::unix::net::SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "imds-tun ctl needs Linux's abstract sockets; not available on this system yet",
    ))
}

/// A user whose rights a file is opened with: the ids and every group the kernel would check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileUser {
    /// For messages: the login name, or `uid N` for an id without a passwd entry.
    pub name: String,
    /// The user id the open runs with (as the effective id).
    pub uid: Uid,
    /// The primary group id the open runs with (as the effective group id).
    pub gid: Gid,
    /// The supplementary groups, `gid` included (see [`groups_of`]).
    pub groups: Vec<Gid>,
}

/// Why a file could not be opened with another user's rights.
#[derive(Debug, thiserror::Error)]
pub enum OpenAsError {
    /// The open itself failed with the user's rights (`PermissionDenied`, `NotFound`, ...).
    #[error("{0}")]
    Open(#[source] io::Error),
    /// Switching ids is process-wide, so it is only done while one thread exists.
    #[error(
        "refusing to switch user ids while {0} threads run (a bug: files must be opened before \
         the runtime starts)"
    )]
    Threads(usize),
    /// `/proc/self/task` could not be listed, so a single thread could not be proven.
    #[error("cannot tell whether other threads run ({0}); is /proc mounted?")]
    CountThreads(#[source] io::Error),
    /// The process's effective user is not root, so it cannot take another user's ids.
    #[error("only root can open a file with another user's rights")]
    NotRoot,
    /// A step of taking the user's ids failed (on macOS: of the child process that opens the
    /// file as the user and hands it back).
    #[error("{step} failed: {source}")]
    Switch {
        /// The call that failed (`setgroups`, `setresgid`, `setresuid`, `fork`, ...).
        step: &'static str,
        /// The kernel's refusal.
        #[source]
        source: nix::Error,
    },
}

/// Opens `path` with `options` as `user` would: with the user's uid, gid and supplementary
/// groups, and none of root's. The process must be root (euid 0) and single-threaded; it is
/// root again when this returns. If it cannot become root again it aborts (SIGABRT) rather
/// than go on half-switched.
pub fn open_as_user(
    path: &Path,
    options: &OpenOptions,
    user: &FileUser,
) -> Result<File, OpenAsError> {
    imp::open_as_user(path, options, user)
}

/// The groups `name` gets at login (its primary group `gid` included), from the group database.
pub fn groups_of(name: &str, gid: Gid) -> io::Result<Vec<Gid>> {
    imp::groups_of(name, gid)
}
