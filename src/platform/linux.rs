//! Linux: a non-persistent TUN from `/dev/net/tun`, configured point-to-point by ioctl.
//!
//! The `tun` crate performs TUNSETIFF and the SIOCSIF* ioctls; this file decides what to ask for,
//! checks that the address is free before anything is created, verifies afterwards that the
//! kernel really routes the address into the new device, and turns errno values into sentences.
//! With `--ipv6` it adds the IPv6 pair over netlink (the ioctls have no IPv6 peer) and checks
//! and verifies `fd00:ec2::254` the same way.
//!
//! At the end: opening a file with another user's rights, by switching the effective ids of the
//! (single-threaded) process around one `open`.

use super::claim::{self, Claim};
use super::claim_lock::{ClaimLock, Holder};
use super::netlink;
use super::real_route;
use super::{
    ClaimLoss, ExtraAddress, FileUser, LOCAL_ADDRESS, LOCAL_ADDRESS_V6, METADATA_ADDRESS,
    METADATA_ADDRESS_V6, OpenAsError, PlatformError, TunRequest,
};
use nix::unistd::{Gid, ResGid, ResUid};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tun::AbstractDevice;

/// The TUN device, registered with tokio for readiness.
pub struct AsyncTun {
    fd: AsyncFd<OwnedFd>,
    name: String,
    /// The kernel's index of the device: what the claim watch follows (a name can change).
    index: u32,
    /// Whether fd00:ec2::254 is claimed too.
    ipv6: bool,
    /// The container endpoints' addresses routed into the device too.
    extra: Vec<ExtraAddress>,
    /// Held as long as the device: a rival start sees the address taken from the first moment.
    _claim: ClaimLock,
}

impl std::fmt::Debug for AsyncTun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncTun")
            .field("name", &self.name)
            .finish()
    }
}

impl AsyncTun {
    /// The interface name the kernel gave the device.
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

    /// Reads one packet if one is queued; `WouldBlock` when none is.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd
            .try_io(Interest::READABLE, |fd| Ok(nix::unistd::read(fd, buf)?))
    }

    /// Writes one packet, waiting if the device queue is full.
    pub async fn send(&self, packet: &[u8]) -> io::Result<()> {
        self.fd
            .async_io(Interest::WRITABLE, |fd| Ok(nix::unistd::write(fd, packet)?))
            .await
            .map(|_| ())
    }

    /// A watch on this device's claim; call from inside the runtime, once the claim is made.
    pub fn watch(&self) -> ClaimWatch {
        ClaimWatch::new(self.name.clone(), self.index, self.ipv6, self.extra.clone())
    }
}

/// The claim an [`AsyncTun`] holds, watched: the kernel's rtnetlink news of links, addresses,
/// routes and rules is the trigger, and every trigger asks the kernel again whether the device
/// still exists, is up, carries our address and receives the packets of the metadata address
/// and of each extra address (`--ecs`, `--eks-pod-identity`). So
/// imds-tun's own set-up (over before the watch starts), the link-local address the kernel adds
/// with `--ipv6`, and other interfaces' changes cost one look and change nothing. Without a
/// subscription (netlink refused) it looks once a second instead.
#[derive(Debug)]
pub struct ClaimWatch {
    name: String,
    index: u32,
    ipv6: bool,
    extra: Vec<ExtraAddress>,
    changes: Option<AsyncFd<netlink::Changes>>,
}

/// How often the claim is looked at when no netlink subscription could be made.
const POLL_WITHOUT_NEWS: Duration = Duration::from_secs(1);

impl ClaimWatch {
    fn new(name: String, index: u32, ipv6: bool, extra: Vec<ExtraAddress>) -> ClaimWatch {
        let changes = netlink::Changes::subscribe(ipv6)
            .and_then(|changes| {
                // SAFETY: the AsyncFd takes ownership of the socket, which owns its descriptor,
                // so the descriptor stays open for exactly as long as it is registered.
                #[allow(unsafe_code)]
                unsafe { AsyncFd::register(changes) }.map_err(|error| error.into_parts().1)
            })
            .map_err(|error| {
                tracing::warn!(
                    "cannot subscribe to the kernel's link and route changes ({error}); \
                     checking the claim on 169.254.169.254 every second instead"
                );
            })
            .ok();
        ClaimWatch {
            name,
            index,
            ipv6,
            extra,
            changes,
        }
    }

    /// Waits until the claim is lost, and says how. Cancel-safe: dropping the future loses
    /// nothing (the next call looks again first).
    pub async fn lost(&mut self) -> ClaimLoss {
        loop {
            // Looked at first, so a change between the claim and the subscription counts.
            if let Some(loss) = self.check() {
                return loss;
            }
            match &self.changes {
                Some(changes) => match changes.readable().await {
                    Ok(mut guard) => match guard.get_inner().drain() {
                        // Nothing there after all: wait for the next readiness.
                        Ok(false) => guard.clear_ready(),
                        Ok(true) => {}
                        Err(error) => {
                            tracing::warn!(
                                "the kernel's news of link and route changes failed ({error}); \
                                 checking the claim every second instead"
                            );
                            self.changes = None;
                        }
                    },
                    Err(_) => self.changes = None,
                },
                None => tokio::time::sleep(POLL_WITHOUT_NEWS).await,
            }
        }
    }

    /// Whether the claim still holds now; `None` when it does (or the kernel could not be
    /// asked: only a definite answer ends a run).
    pub fn check(&self) -> Option<ClaimLoss> {
        let device = match interface_name_of(self.index) {
            Some(name) => name,
            None => {
                return Some(ClaimLoss::DeviceDeleted {
                    device: self.name.clone(),
                });
            }
        };
        let addresses = nix::ifaddrs::getifaddrs().ok()?;
        let mine: Vec<_> = addresses
            .filter(|entry| entry.interface_name == device)
            .collect();
        if !mine
            .iter()
            .any(|entry| entry.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
        {
            return Some(ClaimLoss::LinkDown { device });
        }
        let has_v4 = mine.iter().any(|entry| {
            let local = entry.address.as_ref().and_then(|a| a.as_sockaddr_in());
            let peer = entry.destination.as_ref().and_then(|a| a.as_sockaddr_in());
            local.is_some_and(|a| a.ip() == LOCAL_ADDRESS)
                && peer.is_some_and(|a| a.ip() == METADATA_ADDRESS)
        });
        if !has_v4 {
            return Some(ClaimLoss::AddressRemoved {
                device,
                local: LOCAL_ADDRESS.into(),
                peer: METADATA_ADDRESS.into(),
            });
        }
        // getifaddrs reports no IPv6 peer, so the IPv6 pair is known by its local address.
        let has_v6 = !self.ipv6
            || mine.iter().any(|entry| {
                entry
                    .address
                    .as_ref()
                    .and_then(|a| a.as_sockaddr_in6())
                    .is_some_and(|a| a.ip() == LOCAL_ADDRESS_V6)
            });
        if !has_v6 {
            return Some(ClaimLoss::AddressRemoved {
                device,
                local: LOCAL_ADDRESS_V6.into(),
                peer: METADATA_ADDRESS_V6.into(),
            });
        }
        let mut claimed = vec![IpAddr::V4(METADATA_ADDRESS)];
        if self.ipv6 {
            claimed.push(IpAddr::V6(METADATA_ADDRESS_V6));
        }
        claimed.extend(self.extra.iter().map(|extra| extra.address()));
        for address in claimed {
            let Ok(taken) = netlink::route_output_interface(address) else {
                continue;
            };
            if taken != Some(self.index) {
                return Some(ClaimLoss::RouteTaken {
                    device,
                    address,
                    route: route_description(taken),
                });
            }
        }
        None
    }
}

/// The current name of interface `index`; `None` when no interface has that index.
fn interface_name_of(index: u32) -> Option<String> {
    let interfaces = nix::net::if_::if_nameindex().ok()?;
    interfaces
        .iter()
        .find(|interface| interface.index() == index)
        .map(|interface| interface.name().to_string_lossy().into_owned())
}

/// "out of interface eth0", or "nowhere (no route)".
fn route_description(taken: Option<u32>) -> String {
    match taken {
        Some(index) => format!("out of interface {}", interface_name(index)),
        None => "nowhere (no route)".to_owned(),
    }
}

pub(crate) fn claim_metadata_address(request: &TunRequest) -> Result<AsyncTun, PlatformError> {
    validate_name(&request.name)?;
    // The lock first: between checking that the address is free and configuring our device,
    // a rival start must not be able to do the same.
    let claim = match ClaimLock::acquire().map_err(|source| PlatformError::Io {
        context: "taking the claim lock (@imds-tun/169.254.169.254)",
        source,
    })? {
        Ok(claim) => claim,
        Err(Holder::Privileged { pid }) => {
            return Err(PlatformError::AddressClaimed(Claim::ImdsTun {
                pid: Some(pid),
                interface: None,
            }));
        }
        Err(Holder::Squatter { .. }) => ClaimLock::unheld(),
    };
    let device = create_device(request)?;
    register(device, claim)
}

/// A TUN device configured and verified, not yet registered with the runtime: what
/// `imds-tun exec`'s namespace child makes and hands over by its descriptor.
#[derive(Debug)]
pub struct CreatedDevice {
    /// The device's descriptor, non-blocking.
    pub fd: OwnedFd,
    /// The interface name the kernel gave it.
    pub name: String,
    /// The kernel's index of the device.
    pub index: u32,
    /// Whether fd00:ec2::254 is claimed too.
    pub ipv6: bool,
    /// The container endpoints' addresses routed into it too.
    pub extra: Vec<ExtraAddress>,
}

/// Creates the device and claims the addresses `request` names through it, in this network
/// namespace, without the claim lock (the caller holds it, or the namespace is private);
/// checks first that nothing holds them, and verifies afterwards that the kernel routes them
/// into the device. If a step fails after the device exists, dropping it removes it again.
pub(crate) fn create_device(request: &TunRequest) -> Result<CreatedDevice, PlatformError> {
    validate_name(&request.name)?;
    free_to_claim(request)?;

    let mut config = tun::Configuration::default();
    config
        .tun_name(&request.name)
        .address(LOCAL_ADDRESS)
        .destination(METADATA_ADDRESS)
        .netmask(Ipv4Addr::BROADCAST)
        .mtu(request.mtu)
        .up();
    let device = tun::create(&config).map_err(|error| creation_error(error, &request.name))?;
    let name = device.tun_name().map_err(|error| PlatformError::Io {
        context: "reading the TUN device name",
        source: tun_io(error),
    })?;
    verify_route(&name, IpAddr::V4(METADATA_ADDRESS))?;
    size_transmit_queue(&name, request.queue_packets)?;
    if request.ipv6 {
        claim_ipv6(&name)?;
        verify_route(&name, IpAddr::V6(METADATA_ADDRESS_V6))?;
    } else {
        silence_ipv6(&name);
    }
    for &extra in &request.extra {
        route_extra(&name, extra)?;
    }
    device.set_nonblock().map_err(|source| PlatformError::Io {
        context: "making the TUN device non-blocking",
        source,
    })?;
    let index = tun_index(&name)?;
    // SAFETY: `into_raw_fd` gives up the device's ownership of its descriptor, which is open;
    // the OwnedFd is now its only owner.
    #[allow(unsafe_code)]
    let fd = unsafe { OwnedFd::from_raw_fd(device.into_raw_fd()) };
    Ok(CreatedDevice {
        fd,
        name,
        index,
        ipv6: request.ipv6,
        extra: request.extra.clone(),
    })
}

/// Registers a created device with the runtime; `claim` is held as long as the device.
pub(crate) fn register(device: CreatedDevice, claim: ClaimLock) -> Result<AsyncTun, PlatformError> {
    // SAFETY: the AsyncFd takes ownership of the descriptor, so it stays open for exactly as
    // long as it is registered.
    #[allow(unsafe_code)]
    let fd = unsafe { AsyncFd::register(device.fd) }.map_err(|error| PlatformError::Io {
        context: "registering the TUN device with the runtime",
        source: error.into_parts().1,
    })?;
    Ok(AsyncTun {
        fd,
        index: device.index,
        name: device.name,
        ipv6: device.ipv6,
        extra: device.extra,
        _claim: claim,
    })
}

/// Registers a device another process created and claimed (`imds-tun exec`'s namespace
/// child); the namespace is private, so no claim lock is held.
pub(crate) fn adopt(device: CreatedDevice) -> Result<AsyncTun, PlatformError> {
    register(device, ClaimLock::unheld())
}

/// What a start checks before it creates anything (the claim lock aside): nothing answers for
/// the addresses yet, IPv6 is on where it is asked for, and a fixed `--tun-name` is free.
fn free_to_claim(request: &TunRequest) -> Result<(), PlatformError> {
    if let Some(holder) = current_claim()?
        && !is_real_service_route(&holder, request)
    {
        return Err(PlatformError::AddressClaimed(holder));
    }
    if request.ipv6 {
        ipv6_available()?;
        if let Some(holder) = current_claim_v6()? {
            return Err(PlatformError::Ipv6AddressClaimed(holder));
        }
    }
    for &extra in &request.extra {
        if let Some(claim) = claim_of(extra.address())? {
            return Err(PlatformError::ExtraAddressClaimed { extra, claim });
        }
    }
    refuse_existing_name(&request.name)
}

/// A host route out of the interface `--pass-through` found the real service behind: its way
/// to the service, kept (the device's route outranks it, which [`verify_route`] proves).
fn is_real_service_route(holder: &Claim, request: &TunRequest) -> bool {
    matches!(
        (holder, request.real_route.as_deref()),
        (Claim::Route { interface: Some(interface), .. }, Some(real)) if interface == real
    )
}

/// `--check`'s claim: the start's own checks, in its order and words, creating nothing: the
/// name, the claim lock's holder (another imds-tun, by pid), [`free_to_claim`]; then, where the
/// start would create the device and ask `RTM_GETROUTE`, the route and the policy rules now:
/// a rule ahead of the main table that routes the address elsewhere, or refuses it, would take
/// it from the device's route as surely ([`diversion`]).
pub(crate) fn check_claim(request: &TunRequest) -> Result<(), PlatformError> {
    validate_name(&request.name)?;
    let lock_error = |source| PlatformError::Io {
        context: "asking who holds the claim lock (@imds-tun/169.254.169.254)",
        source,
    };
    if let Some(Holder::Privileged { pid }) = super::claim_lock::holder().map_err(lock_error)? {
        return Err(PlatformError::AddressClaimed(Claim::ImdsTun {
            pid: Some(pid),
            interface: None,
        }));
    }
    free_to_claim(request)?;
    let mut addresses = vec![IpAddr::V4(METADATA_ADDRESS)];
    if request.ipv6 {
        addresses.push(IpAddr::V6(METADATA_ADDRESS_V6));
    }
    for address in addresses {
        if let Some(route) = diversion_now(address)? {
            let device = format!("the TUN device a start would create ({})", request.name);
            return Err(match address {
                IpAddr::V4(_) => PlatformError::RouteNotTaken { device, route },
                IpAddr::V6(_) => PlatformError::Ipv6RouteNotTaken { device, route },
            });
        }
    }
    for &extra in &request.extra {
        check_extra_claim(request, extra)?;
    }
    Ok(())
}

/// `--check`'s claim of one extra address (`--ecs`, `--eks-pod-identity`), as a start decides
/// it: nothing holds it yet, and no policy rule would take it past the device's route.
pub(crate) fn check_extra_claim(
    request: &TunRequest,
    extra: ExtraAddress,
) -> Result<(), PlatformError> {
    // Another imds-tun's route to it is that imds-tun's claim, named by its pid.
    let lock_error = |source| PlatformError::Io {
        context: "asking who holds the claim lock (@imds-tun/169.254.169.254)",
        source,
    };
    if let Some(Holder::Privileged { pid }) = super::claim_lock::holder().map_err(lock_error)? {
        return Err(PlatformError::ExtraAddressClaimed {
            extra,
            claim: Claim::ImdsTun {
                pid: Some(pid),
                interface: None,
            },
        });
    }
    if let Some(claim) = claim_of(extra.address())? {
        return Err(PlatformError::ExtraAddressClaimed { extra, claim });
    }
    if let Some(route) = diversion_now(extra.address())? {
        return Err(PlatformError::ExtraRouteNotTaken {
            extra,
            device: format!("the TUN device a start would create ({})", request.name),
            route,
        });
    }
    Ok(())
}

/// [`diversion`] of `address` with the kernel's answer and rules of now.
fn diversion_now(address: IpAddr) -> Result<Option<String>, PlatformError> {
    let io_error = |source| PlatformError::Io {
        context: route_context(address),
        source,
    };
    let answer = netlink::route_lookup(address).map_err(io_error)?;
    let rules = netlink::rules(address).map_err(io_error)?;
    Ok(diversion(answer, &rules, address))
}

/// Where `address` would go instead of into a new device with a host route in the main table,
/// given the kernel's answer for it now and the policy rules; `None` when the device's route
/// would win. The device's route is found through the main table's rule; a rule with a lower
/// priority that the kernel's answer came through (its table), or that refuses the address
/// outright (`blackhole`, `unreachable`, `prohibit`), wins over it. A rule that applies to some
/// packets only (a source, a mark, a uid range) and refuses them is not counted: whether a
/// client's packets match it cannot be told here.
fn diversion(
    answer: netlink::RouteAnswer,
    rules: &[netlink::Rule],
    address: IpAddr,
) -> Option<String> {
    use netlink::{MAIN_TABLE, RouteAnswer, RuleAction};
    let covers = |rule: &netlink::Rule| match rule.to {
        None => true,
        Some((network, length)) => {
            ipnet::IpNet::new(network, length).is_ok_and(|network| network.contains(&address))
        }
    };
    let Some(main) = rules
        .iter()
        .filter(|rule| {
            rule.action == RuleAction::Lookup(MAIN_TABLE) && !rule.selective && covers(rule)
        })
        .map(|rule| rule.priority)
        .min()
    else {
        return Some(
            "nowhere a device's route is looked for (no policy rule looks up the main table)"
                .into(),
        );
    };
    match answer {
        // The local table holds addresses (which the claim checks refuse first); an answer
        // from the main table loses to the device's /32 host route there.
        RouteAnswer::Route { table, .. } if table == MAIN_TABLE || table == LOCAL_TABLE => None,
        RouteAnswer::Route { interface, table } => rules
            .iter()
            .find(|rule| rule.priority < main && rule.action == RuleAction::Lookup(table))
            .map(|rule| {
                format!(
                    "{} (policy rule {}: lookup table {table})",
                    route_description(interface),
                    rule.priority
                )
            }),
        RouteAnswer::Refused(_) => rules
            .iter()
            .filter(|rule| rule.priority < main && !rule.selective && covers(rule))
            .find_map(|rule| match rule.action {
                RuleAction::Refuse(how) => {
                    Some(format!("nowhere (policy rule {}: {how})", rule.priority))
                }
                _ => None,
            }),
    }
}

/// The kernel's local table: the host's own addresses.
const LOCAL_TABLE: u32 = 255;

/// The kernel's index of the TUN device, which netlink requests name it by.
fn tun_index(device: &str) -> Result<u32, PlatformError> {
    nix::net::if_::if_nametoindex(device).map_err(|errno| PlatformError::Io {
        context: "finding the TUN device's index",
        source: errno.into(),
    })
}

/// The kernel's default of 500 packets is less than a few hundred clients have in flight at once.
fn size_transmit_queue(device: &str, packets: u32) -> Result<(), PlatformError> {
    let index = tun_index(device)?;
    netlink::set_transmit_queue_length(index, packets).map_err(|source| PlatformError::Io {
        context: "sizing the TUN device's queue",
        source,
    })
}

/// A fixed `--tun-name` that already names an interface is refused: `TUNSETIFF` on a persistent
/// TUN of that name attaches to it without a word, and imds-tun would then configure a device
/// that outlives it. (A name with `%d` is always a new device: the kernel picks a free number.)
/// What this cannot see: a device made under the same name between this check and the
/// creation a moment later, by something other than imds-tun (two imds-tun hold the claim lock).
fn refuse_existing_name(name: &str) -> Result<(), PlatformError> {
    if name.contains('%') {
        return Ok(());
    }
    match nix::net::if_::if_nametoindex(name) {
        Ok(_) => Err(PlatformError::NameExists(name.to_string())),
        Err(_) => Ok(()),
    }
}

fn validate_name(name: &str) -> Result<(), PlatformError> {
    let valid = !name.is_empty()
        && name.len() <= 15
        && !name.contains('/')
        && !name.chars().any(char::is_whitespace)
        && name != "."
        && name != "..";
    if valid {
        Ok(())
    } else {
        Err(PlatformError::InvalidName(name.to_string()))
    }
}

/// Who, if anyone, already answers for the metadata address on this host, as the kernel
/// reports it (with the prefix, device and gateway that releasing it needs).
///
/// An interface address (a `lo` alias) or the peer of a point-to-point link (another imds-tun)
/// would win over our route; so would a `/32` host route in the main table.
pub(crate) fn current_claim() -> Result<Option<Claim>, PlatformError> {
    claim_of(IpAddr::V4(METADATA_ADDRESS))
}

/// Where the kernel routes the metadata address now: [`netlink::route_path`], named and
/// judged by [`real_route::decide`]. A TUN is told by `/sys/class/net/NAME/tun_flags`, which
/// only TUN and TAP devices have.
pub(crate) fn real_metadata_route() -> Result<real_route::RealRoute, real_route::NoRealRoute> {
    use real_route::{Found, NoRealRoute};
    let asked = netlink::route_path(IpAddr::V4(METADATA_ADDRESS)).map_err(|error| {
        NoRealRoute(format!(
            "cannot ask the kernel for its route to 169.254.169.254: {error}"
        ))
    })?;
    let found = match asked {
        Err(errno) => Found::Nothing(nix::errno::Errno::from_raw(errno).desc().to_lowercase()),
        Ok(path) if path.local => Found::Local,
        Ok(path) => {
            let Some(index) = path.interface else {
                return real_route::decide(Found::Nothing("a route out of no interface".into()));
            };
            let interface = nix::net::if_::if_indextoname(index)
                .map_err(|errno| {
                    NoRealRoute(format!(
                        "cannot name interface {index}, the way to 169.254.169.254: {errno}"
                    ))
                })?
                .to_string_lossy()
                .into_owned();
            if interface == "lo" {
                Found::Local
            } else {
                Found::Route {
                    tun: Path::new("/sys/class/net")
                        .join(&interface)
                        .join("tun_flags")
                        .exists(),
                    interface,
                    gateway: path.gateway,
                    source: path.source,
                }
            }
        }
    };
    real_route::decide(found)
}

/// Who, if anyone, already answers for `fd00:ec2::254`: an interface address, a point-to-point
/// peer, or a `/128` route in any table.
fn current_claim_v6() -> Result<Option<Claim>, PlatformError> {
    claim_of(IpAddr::V6(METADATA_ADDRESS_V6))
}

/// Who, if anyone, already answers for `address`: an interface address, a point-to-point peer,
/// or a host route (IPv4: `/32` in the main table; IPv6: `/128` in any table).
fn claim_of(address: IpAddr) -> Result<Option<Claim>, PlatformError> {
    if let Some(claim) = interface_claim(address)? {
        return Ok(Some(claim));
    }
    Ok(match address {
        IpAddr::V4(v4) => {
            let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
            host_route_in(&table, v4)
        }
        IpAddr::V6(v6) => {
            let table = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
            ipv6_host_route_in(&table, v6)
        }
    })
}

/// Routes an extra address (`--ecs`, `--eks-pod-identity`) into the device: a host route in
/// the main table with our side of the pair as its source, made with `NLM_F_EXCL` so a route
/// that appeared since [`free_to_claim`] is refused rather than replaced; then the kernel is
/// asked, as for the metadata address, whether it really sends the address into the device.
/// The route belongs to the device: the kernel deletes it with the device.
fn route_extra(device: &str, extra: ExtraAddress) -> Result<(), PlatformError> {
    let index = tun_index(device)?;
    netlink::add_host_route(index, extra.address(), extra.source()).map_err(
        |source| match source.raw_os_error() {
            Some(errno) if errno == nix::libc::EEXIST => PlatformError::ExtraAddressClaimed {
                extra,
                claim: claim_of(extra.address()).ok().flatten().unwrap_or_else(|| {
                    Claim::Existing {
                        device: device.to_owned(),
                    }
                }),
            },
            _ => PlatformError::Io {
                context: "routing a container endpoint's address into the TUN device",
                source,
            },
        },
    )?;
    match verify_route(device, extra.address()) {
        Err(PlatformError::RouteNotTaken { device, route })
        | Err(PlatformError::Ipv6RouteNotTaken { device, route }) => {
            Err(PlatformError::ExtraRouteNotTaken {
                extra,
                device,
                route,
            })
        }
        other => other,
    }
}

/// What was being asked when a route question failed.
fn route_context(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(METADATA_ADDRESS) => "checking the route to 169.254.169.254",
        IpAddr::V6(METADATA_ADDRESS_V6) => "checking the route to fd00:ec2::254",
        _ => "checking the route to a container endpoint's address",
    }
}

/// An interface holding `address` as its own (with the prefix it holds it with) or as its
/// point-to-point peer.
fn interface_claim(address: IpAddr) -> Result<Option<Claim>, PlatformError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|errno| PlatformError::Io {
        context: "listing network interfaces",
        source: io::Error::from(errno),
    })?;
    let ip = |storage: Option<&nix::sys::socket::SockaddrStorage>| -> Option<IpAddr> {
        let storage = storage?;
        storage
            .as_sockaddr_in()
            .map(|sin| IpAddr::V4(sin.ip()))
            .or_else(|| storage.as_sockaddr_in6().map(|sin6| IpAddr::V6(sin6.ip())))
    };
    for ifaddr in addrs {
        let prefix =
            ip(ifaddr.netmask.as_ref()).map_or_else(|| claim::prefix_of(address), claim::prefix_of);
        if ip(ifaddr.address.as_ref()) == Some(address) {
            return Ok(Some(Claim::Address {
                address,
                prefix,
                interface: ifaddr.interface_name,
            }));
        }
        if ip(ifaddr.destination.as_ref()) == Some(address) {
            return Ok(Some(Claim::Peer {
                local: ip(ifaddr.address.as_ref()),
                peer: address,
                prefix,
                interface: ifaddr.interface_name,
            }));
        }
    }
    Ok(None)
}

/// Finds a `/128` route to `address` (`fd00:ec2::254`, ...) in the text of `/proc/net/ipv6_route`
/// (destination as 32 hex digits, prefix length in hex, source and its length, next hop, metric,
/// use and reference counts, flags, device name last).
fn ipv6_host_route_in(table: &str, address: Ipv6Addr) -> Option<Claim> {
    // include/uapi/linux/route.h and ipv6_route.h.
    const RTF_GATEWAY: u32 = 0x0002;
    const RTF_REJECT: u32 = 0x0200;
    let destination: String = address
        .octets()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [
                dest,
                prefix,
                _src,
                _src_prefix,
                next_hop,
                _metric,
                _refcnt,
                _use,
                flags,
                device,
            ] if dest.eq_ignore_ascii_case(&destination) && prefix.eq_ignore_ascii_case("80") => {
                let flags = u32::from_str_radix(flags, 16).unwrap_or(0);
                let gateway = u128::from_str_radix(next_hop, 16)
                    .ok()
                    .filter(|_| flags & RTF_GATEWAY != 0)
                    .map(|hop| IpAddr::V6(Ipv6Addr::from(hop)));
                Some(Claim::Route {
                    destination: IpAddr::V6(address),
                    // A reject route shows the loopback device, which it does not use.
                    interface: (flags & RTF_REJECT == 0).then(|| (*device).to_string()),
                    gateway,
                })
            }
            _ => None,
        }
    })
}

/// Refuses `--ipv6` where the kernel or the administrator turned IPv6 off, before anything is
/// created.
fn ipv6_available() -> Result<(), PlatformError> {
    let Ok(all) = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6") else {
        return Err(PlatformError::Ipv6Unavailable(
            "this kernel runs without IPv6 (booted with ipv6.disable=1, or built without it)"
                .into(),
        ));
    };
    if all.trim() == "1" {
        return Err(PlatformError::Ipv6Unavailable(
            "IPv6 is disabled in this network namespace (net.ipv6.conf.all.disable_ipv6 = 1)"
                .into(),
        ));
    }
    Ok(())
}

/// Turns IPv6 on for the device (a namespace may default new devices to off) and gives it the
/// pair `fd00:ec2::253` peer `fd00:ec2::254/128`, without duplicate address detection so the
/// address works at once. The kernel routes the peer into the device by itself; the sysctls,
/// the address and the route all vanish with the device.
fn claim_ipv6(device: &str) -> Result<(), PlatformError> {
    let knob = |name: &str| format!("/proc/sys/net/ipv6/conf/{device}/{name}");
    std::fs::write(knob("disable_ipv6"), "0").map_err(|source| PlatformError::Io {
        context: "turning IPv6 on for the TUN device",
        source,
    })?;
    // No router solicitations into the TUN: nothing there routes. Harmless if it fails: the
    // stack drops them.
    if let Err(error) = std::fs::write(knob("accept_ra"), "0") {
        tracing::debug!(%error, "could not turn router advertisements off on the TUN");
    }
    let index = tun_index(device)?;
    netlink::add_ipv6_peer_address(index, LOCAL_ADDRESS_V6, METADATA_ADDRESS_V6).map_err(|source| {
        match source.raw_os_error() {
            Some(errno) if errno == nix::libc::EEXIST => {
                PlatformError::Ipv6AddressClaimed(Claim::Existing {
                    device: device.to_owned(),
                })
            }
            _ => PlatformError::Io {
                context: "adding fd00:ec2::253 peer fd00:ec2::254/128 to the TUN device",
                source,
            },
        }
    })
}

/// Finds a `/32` route to `address` (`169.254.169.254`, ...) in the text of `/proc/net/route`
/// (device, destination, gateway, flags, ..., mask): its device, `*` for one that sends packets
/// nowhere, and its gateway.
fn host_route_in(table: &str, address: Ipv4Addr) -> Option<Claim> {
    // The file prints addresses as the hex of their in-memory (network order) bytes read as a
    // little-endian u32, so 169.254.169.254 reads FEA9FEA9 on every host.
    const RTF_GATEWAY: u32 = 0x0002;
    let destination = format!("{:08X}", u32::from_le_bytes(address.octets()));
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [
                device,
                dest,
                gateway,
                flags,
                _refcnt,
                _use,
                _metric,
                mask,
                ..,
            ] if dest.eq_ignore_ascii_case(&destination)
                && mask.eq_ignore_ascii_case("FFFFFFFF") =>
            {
                let flags = u32::from_str_radix(flags, 16).unwrap_or(0);
                let gateway = u32::from_str_radix(gateway, 16)
                    .ok()
                    .filter(|_| flags & RTF_GATEWAY != 0)
                    .map(|hex| IpAddr::V4(Ipv4Addr::from(hex.to_le_bytes())));
                Some(Claim::Route {
                    destination: IpAddr::V4(address),
                    interface: (*device != "*").then(|| (*device).to_string()),
                    gateway,
                })
            }
            _ => None,
        }
    })
}

/// Asks the kernel where it routes a metadata address, as `ip route get` does: policy rules
/// and every table count, so only an answer naming our device proves the claim.
fn verify_route(device: &str, address: IpAddr) -> Result<(), PlatformError> {
    let io_error = |source| PlatformError::Io {
        context: route_context(address),
        source,
    };
    let ours = nix::net::if_::if_nametoindex(device).map_err(|errno| io_error(errno.into()))?;
    // The IPv4 route exists once the address ioctl returns. The IPv6 one is added by the
    // kernel's address work a moment after the netlink acknowledgement (the same work that
    // would run duplicate address detection), so it is asked again for a short while.
    let patience = match address {
        IpAddr::V4(_) => Duration::ZERO,
        IpAddr::V6(_) => Duration::from_secs(2),
    };
    let deadline = Instant::now() + patience;
    let taken = loop {
        let taken = netlink::route_output_interface(address).map_err(io_error)?;
        if taken == Some(ours) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            break taken;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let device = device.to_string();
    let route = route_description(taken);
    Err(match address {
        IpAddr::V4(_) => PlatformError::RouteNotTaken { device, route },
        IpAddr::V6(_) => PlatformError::Ipv6RouteNotTaken { device, route },
    })
}

fn interface_name(index: u32) -> String {
    interface_name_of(index).unwrap_or_else(|| format!("#{index}"))
}

/// Turns IPv6 off on the device when only IPv4 is served: otherwise the kernel sends router
/// solicitations and MLD reports into the TUN. The setting lives and dies with the device.
fn silence_ipv6(device: &str) {
    let knob = format!("/proc/sys/net/ipv6/conf/{device}/disable_ipv6");
    if let Err(error) = std::fs::write(&knob, "1") {
        // Harmless: the stack drops IPv6 packets anyway.
        tracing::debug!(%error, knob, "could not disable IPv6 on the TUN");
    }
}

fn holds_net_admin() -> bool {
    caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_NET_ADMIN,
    )
    .unwrap_or(false)
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
            PlatformError::InvalidName(name.to_string())
        }
        other => {
            let source = tun_io(other);
            match source.raw_os_error() {
                // Opening the device node is a file permission (EACCES); creating an interface
                // through it needs CAP_NET_ADMIN (EPERM). Without the capability, that is the
                // fix to name; with it, only the node's mode stands in the way.
                Some(libc_errno) if libc_errno == nix::libc::EACCES && holds_net_admin() => {
                    PlatformError::TunDeviceDenied {
                        uid: nix::unistd::geteuid().as_raw(),
                    }
                }
                Some(libc_errno) if libc_errno == nix::libc::EACCES => PlatformError::NotPermitted,
                Some(libc_errno) if libc_errno == nix::libc::EPERM => PlatformError::NotPermitted,
                Some(libc_errno)
                    if libc_errno == nix::libc::ENOENT || libc_errno == nix::libc::ENODEV =>
                {
                    PlatformError::NoTunDevice
                }
                Some(libc_errno) if libc_errno == nix::libc::EBUSY => {
                    PlatformError::NameInUse(name.to_string())
                }
                Some(libc_errno) if libc_errno == nix::libc::EEXIST => {
                    PlatformError::AddressClaimed(Claim::Existing {
                        device: name.to_owned(),
                    })
                }
                _ => PlatformError::Io {
                    context: "creating the TUN device",
                    source,
                },
            }
        }
    }
}

// Opening a file with another user's rights.
//
// How: set the supplementary groups to the user's, then the effective gid, then the effective
// uid (`setresgid`/`setresuid` with the real and saved ids left at 0, so root can be taken back),
// open, and restore the effective uid, gid and groups in the reverse order. While the effective
// uid is not 0 the kernel clears the effective capabilities (CAP_DAC_OVERRIDE included), so the
// open is checked exactly as the user's own `open` would be; they come back from the permitted
// set with euid 0.
//
// Why not setfsuid/setfsgid: they leave the supplementary groups alone, and root's groups (gid 0
// at least) would still open a `root:root 0640` file; the groups must change too, and glibc's
// `setgroups` is process-wide anyway. Why only single-threaded: glibc applies every set*id call
// to all threads, so while we are switched any other thread (a tokio worker serving a request,
// a credential refresh) would run as the user. imds-tun opens every named file while resolving
// its settings, before the runtime exists; `open_as_user` checks `/proc/self/task` and refuses
// otherwise, so a later change that breaks this order fails loudly instead of racing.

pub(crate) fn open_as_user(
    path: &Path,
    options: &OpenOptions,
    user: &FileUser,
) -> Result<File, OpenAsError> {
    match std::fs::read_dir("/proc/self/task").map(Iterator::count) {
        Ok(1) => {}
        Ok(threads) => return Err(OpenAsError::Threads(threads)),
        Err(error) => return Err(OpenAsError::CountThreads(error)),
    }
    let step = |step: &'static str| move |source| OpenAsError::Switch { step, source };
    let saved = SavedIds {
        uids: nix::unistd::getresuid().map_err(step("getresuid"))?,
        gids: nix::unistd::getresgid().map_err(step("getresgid"))?,
        groups: nix::unistd::getgroups().map_err(step("getgroups"))?,
    };
    if !saved.uids.effective.is_root() {
        return Err(OpenAsError::NotRoot);
    }
    let switched = (|| {
        nix::unistd::setgroups(&user.groups).map_err(step("setgroups"))?;
        nix::unistd::setresgid(saved.gids.real, user.gid, saved.gids.saved)
            .map_err(step("setresgid"))?;
        nix::unistd::setresuid(saved.uids.real, user.uid, saved.uids.saved)
            .map_err(step("setresuid"))
    })();
    let opened = switched.and_then(|()| options.open(path).map_err(OpenAsError::Open));
    // Also after a failed switch: undoing a step that was not taken changes nothing.
    saved.restore_or_abort();
    opened
}

/// The ids and groups to return to.
struct SavedIds {
    uids: ResUid,
    gids: ResGid,
    groups: Vec<Gid>,
}

impl SavedIds {
    /// Back to root's ids and groups, or abort the process: continuing with half of the user's
    /// ids (say, root's uid with the user's groups, or the reverse) would serve and create the
    /// TUN under an identity nobody chose.
    fn restore_or_abort(&self) {
        let restored = nix::unistd::setresuid(self.uids.real, self.uids.effective, self.uids.saved)
            .map_err(|error| ("setresuid", error))
            .and_then(|()| {
                nix::unistd::setresgid(self.gids.real, self.gids.effective, self.gids.saved)
                    .map_err(|error| ("setresgid", error))
            })
            .and_then(|()| {
                nix::unistd::setgroups(&self.groups).map_err(|error| ("setgroups", error))
            })
            .and_then(|()| {
                let now = (nix::unistd::geteuid(), nix::unistd::getegid());
                if now == (self.uids.effective, self.gids.effective) {
                    Ok(())
                } else {
                    Err(("checking the ids", nix::Error::EPERM))
                }
            });
        if let Err((step, error)) = restored {
            // Not eprintln!: a failed write to stderr must not turn the abort into a panic.
            let _ = writeln!(
                io::stderr(),
                "imds-tun: cannot switch back to root after opening a file with another user's \
                 rights: {step} failed: {error}; stopping rather than run half-switched"
            );
            std::process::abort();
        }
    }
}

pub(crate) fn groups_of(name: &str, gid: Gid) -> io::Result<Vec<Gid>> {
    let name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the user name holds a NUL"))?;
    nix::unistd::getgrouplist(&name, gid).map_err(io::Error::from)
}

#[cfg(test)]
#[path = "linux/tests.rs"]
mod tests;
