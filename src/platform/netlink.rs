//! Linux netlink: the questions imds-tun asks the kernel about its own network namespace, and
//! the one change it asks for.
//!
//! - Where does the kernel route an address (`RTM_GETROUTE`, what `ip route get` asks)? Policy
//!   rules, other tables and routes are all taken into account, so the answer is the truth.
//!   And which policy rules are there (`RTM_GETRULE`, what `ip rule` lists), so `--check` can
//!   tell whether a rule would take the address ahead of the TUN's route before there is one.
//! - Who owns a local TCP socket (`SOCK_DIAG_BY_FAMILY` with an exact 4-tuple, what `ss` asks)?
//!   The answer carries the socket's state, uid, inode and cgroup.
//! - Is an address one of this namespace's own (`RTM_GETROUTE`: the kernel answers `local`)?
//! - Give the TUN its IPv6 point-to-point pair (`RTM_NEWADDR`, what `ip -6 addr add LOCAL peer
//!   PEER/128 dev DEV nodad` does): the ioctls the `tun` crate uses for IPv4 have no IPv6 peer.
//! - Route a container endpoint's address into the TUN (`RTM_NEWROUTE`, what `ip route add
//!   ADDRESS dev DEV src LOCAL` does) for `--ecs` and `--eks-pod-identity`: a device has one
//!   point-to-point peer per family, so the extra addresses are host routes of the device's own.
//! - Size the TUN's transmit queue (`RTM_NEWLINK` with `IFLA_TXQLEN`, what `ip link set DEV
//!   txqueuelen N` does): the `tun` crate has no setting for it.
//!
//! - Tell me when links, addresses, routes or policy rules change ([`Changes`], a socket
//!   subscribed to the rtnetlink groups, what `ip monitor` listens to): the trigger to ask again
//!   whether imds-tun still holds its claim.
//!
//! Messages are built and parsed here by hand: three fixed request layouts and two reply fields
//! do not justify a netlink crate. Every reply is parsed with bounds checks; a short or odd
//! reply is "unknown", never a panic. Both sockets carry a receive timeout, so a kernel that does
//! not answer cannot stall the caller.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

const NLMSG_HEADER_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const RTM_NEWLINK: u16 = 16;
/// `ifinfomsg`: family, padding, device type, index, flags, change mask.
const IFINFOMSG_LEN: usize = 16;
const IFLA_TXQLEN: u16 = 13;

const RTM_NEWADDR: u16 = 20;
const IFADDRMSG_LEN: usize = 8;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
/// Usable at once: no duplicate address detection on a link with exactly one peer.
const IFA_F_NODAD: u32 = 0x02;
/// No route to our own address's /128: the route to the peer is the only one the pair adds.
const IFA_F_NOPREFIXROUTE: u32 = 0x200;

const NLM_F_DUMP: u16 = 0x300;

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTMSG_LEN: usize = 12;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const RTM_F_LOOKUP_TABLE: u32 = 0x1000;

const RTM_NEWRULE: u16 = 32;
const RTM_GETRULE: u16 = 34;
/// `fib_rule_hdr`: family, dst_len, src_len, tos, table, two reserved bytes, action, flags.
const FIB_RULE_HDR_LEN: usize = 12;
const FRA_DST: u16 = 1;
const FRA_PRIORITY: u16 = 6;
const FRA_TABLE: u16 = 15;
/// The attributes that make a rule apply to some packets only: source, input and output
/// interface, firewall mark (and its mask), uid range, protocol, ports, l3mdev.
const FRA_SELECTORS: [u16; 11] = [2, 3, 10, 16, 17, 19, 20, 22, 23, 24, 11];
const FIB_RULE_INVERT: u32 = 0x2;
/// The main routing table, where the kernel puts the TUN's host route.
pub const MAIN_TABLE: u32 = 254;

/// The most messages a dump is read for; a host has tens of rules, not thousands.
const MAX_DUMP_MESSAGES: usize = 4096;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_REQ_V2_LEN: usize = 56;
/// `inet_diag_msg`: family, state, timer, retrans, the 48-byte socket id, then expires,
/// rqueue, wqueue, uid and inode (u32 each).
const INET_DIAG_MSG_LEN: usize = 72;
const INET_DIAG_MSG_STATE_OFFSET: usize = 1;
/// Where the socket id (ports, addresses) starts in `inet_diag_msg` and in the request.
const INET_DIAG_MSG_ID_OFFSET: usize = 4;
const INET_DIAG_REQ_ID_OFFSET: usize = 8;
/// Ports and the two 16-byte addresses of a socket id: what must match the question.
const SOCKET_ID_ENDPOINTS_LEN: usize = 36;
const INET_DIAG_MSG_UID_OFFSET: usize = 64;
const INET_DIAG_MSG_INODE_OFFSET: usize = 68;
/// The socket's cgroup v2 id (Linux 5.9 and later), an attribute after `inet_diag_msg`.
const INET_DIAG_CGROUP_ID: u16 = 21;
/// `rtmsg.rtm_type` and the value that means "an address of this host".
const RTMSG_TYPE_OFFSET: usize = 7;
const RTN_LOCAL: u8 = 2;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;

/// How long one question may wait for the kernel; it answers in microseconds.
const REPLY_TIMEOUT: Duration = Duration::from_millis(200);

/// The rtnetlink multicast groups [`Changes`] joins: links (created, deleted, up, down), IPv4
/// addresses, routes and policy rules.
const GROUPS_V4: u32 = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV4_RULE;
/// With `--ipv6` also the IPv6 addresses, routes and rules.
const GROUPS_V6: u32 = RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE | RTMGRP_IPV6_RULE;
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
/// `RTNLGRP_IPV4_RULE` (8) as a group bit; the kernel's headers name no `RTMGRP_` for it.
const RTMGRP_IPV4_RULE: u32 = 1 << (8 - 1);
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
/// `RTNLGRP_IPV6_RULE` (19) as a group bit.
const RTMGRP_IPV6_RULE: u32 = 1 << (19 - 1);

/// A socket that hears every change of links, addresses, routes and policy rules in this
/// network namespace (IPv6 ones too when asked), what `ip monitor` listens to. It does not say
/// what changed: its reader asks the kernel again ([`route_output_interface`], the interface
/// list), so a message it cannot parse, a change of an unrelated interface, or a queue that
/// overflowed (`ENOBUFS`) all mean the same thing, "look again". Non-blocking; the caller waits
/// for it to become readable.
#[derive(Debug)]
pub struct Changes {
    fd: OwnedFd,
}

impl Changes {
    /// Opens the socket and joins the groups; listening needs no privilege.
    pub fn subscribe(ipv6: bool) -> io::Result<Changes> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkRoute,
        )?;
        let groups = if ipv6 {
            GROUPS_V4 | GROUPS_V6
        } else {
            GROUPS_V4
        };
        nix::sys::socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
        Ok(Changes { fd })
    }

    /// Reads the messages queued now, at most 256 datagrams (a host whose interfaces churn
    /// without pause still gets its claim looked at); true when there was at least one (or the
    /// queue overflowed and some were lost), false when there was nothing to read.
    pub fn drain(&self) -> io::Result<bool> {
        let mut buffer = vec![0u8; 8192];
        let mut any = false;
        for _ in 0..256 {
            match recv(self.fd.as_raw_fd(), &mut buffer, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Ok(any),
                Ok(_) | Err(nix::errno::Errno::ENOBUFS) => any = true,
                Err(nix::errno::Errno::EAGAIN) => return Ok(any),
                Err(nix::errno::Errno::EINTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
        Ok(any)
    }
}

impl AsRawFd for Changes {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// A `NETLINK_ROUTE` socket of this network namespace, to hand to a process outside it
/// ([`LocalAddresses::adopt`]).
pub fn route_socket() -> io::Result<OwnedFd> {
    Ok(Netlink::open(SockProtocol::NetlinkRoute)?.fd)
}

/// A `NETLINK_SOCK_DIAG` socket of this network namespace, to hand to a process outside it
/// ([`SocketOwners::adopt`]).
pub fn sock_diag_socket() -> io::Result<OwnedFd> {
    Ok(Netlink::open(SockProtocol::NetlinkSockDiag)?.fd)
}

/// A netlink socket for one protocol, with its own sequence numbers.
#[derive(Debug)]
struct Netlink {
    fd: OwnedFd,
    sequence: u32,
    /// Where replies are received: one per socket, not one per question (sock_diag is asked
    /// once per connection, and zeroing a fresh 8 KiB each time was most of its cost).
    received: Vec<u8>,
}

/// The largest reply datagram read: one socket's or one route's answer is a few hundred bytes.
const REPLY_BUFFER: usize = 8192;

impl Netlink {
    fn open(protocol: SockProtocol) -> io::Result<Netlink> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            protocol,
        )?;
        Netlink::adopt(fd)
    }

    /// A socket opened elsewhere (in another network namespace, whose kernel it then asks).
    fn adopt(fd: OwnedFd) -> io::Result<Netlink> {
        let timeout = TimeVal::new(
            REPLY_TIMEOUT.as_secs() as _,
            REPLY_TIMEOUT.subsec_micros() as _,
        );
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
        Ok(Netlink {
            fd,
            sequence: 0,
            received: vec![0; REPLY_BUFFER],
        })
    }

    /// Sends one request and returns the payload of the first reply of `expected` type, `None`
    /// when the kernel answered with an error (no route, no such socket).
    fn ask(
        &mut self,
        message_type: u16,
        payload: &[u8],
        expected: u16,
    ) -> io::Result<Option<Vec<u8>>> {
        let sequence = self.send(message_type, NLM_F_REQUEST, payload)?;
        let reply = self.reply(sequence)?;
        Ok(match reply.message_type {
            t if t == expected => Some(reply.body),
            NLMSG_ERROR | NLMSG_DONE => None,
            _ => None,
        })
    }

    /// Sends one dump request and returns every message's payload of `expected` type, until
    /// the kernel says done (at most [`MAX_DUMP_MESSAGES`]).
    fn dump(
        &mut self,
        message_type: u16,
        payload: &[u8],
        expected: u16,
    ) -> io::Result<Vec<Vec<u8>>> {
        let sequence = self.send(message_type, NLM_F_REQUEST | NLM_F_DUMP, payload)?;
        let mut buffer = vec![0u8; 32 * 1024];
        let mut bodies = Vec::new();
        loop {
            let received = recv(self.fd.as_raw_fd(), &mut buffer, MsgFlags::empty())?;
            for (header, body) in messages(&buffer[..received]) {
                if header.sequence != sequence {
                    continue;
                }
                match header.message_type {
                    NLMSG_DONE => return Ok(bodies),
                    NLMSG_ERROR => {
                        return match acknowledgement(body) {
                            Some(errno) if errno < 0 => {
                                Err(io::Error::from_raw_os_error(errno.saturating_neg()))
                            }
                            _ => Ok(bodies),
                        };
                    }
                    t if t == expected => bodies.push(body.to_vec()),
                    _ => {}
                }
                if bodies.len() > MAX_DUMP_MESSAGES {
                    return Err(io::Error::other("netlink: the kernel's list is too long"));
                }
            }
        }
    }

    /// Sends one change and waits for the kernel's acknowledgement: `Ok` when it was made, the
    /// kernel's errno otherwise (`EEXIST`, `EACCES`, ...).
    fn change(&mut self, message_type: u16, flags: u16, payload: &[u8]) -> io::Result<()> {
        let sequence = self.send(message_type, NLM_F_REQUEST | NLM_F_ACK | flags, payload)?;
        let reply = self.reply(sequence)?;
        match (reply.message_type, acknowledgement(&reply.body)) {
            (NLMSG_ERROR, Some(0)) => Ok(()),
            (NLMSG_ERROR, Some(errno)) => Err(io::Error::from_raw_os_error(errno.saturating_neg())),
            _ => Err(io::Error::other(
                "netlink: no acknowledgement from the kernel",
            )),
        }
    }

    /// Sends one message; returns its sequence number.
    fn send(&mut self, message_type: u16, flags: u16, payload: &[u8]) -> io::Result<u32> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut request = Vec::with_capacity(NLMSG_HEADER_LEN + payload.len());
        let length = u32::try_from(NLMSG_HEADER_LEN + payload.len())
            .map_err(|_| io::Error::other("netlink request too long"))?;
        request.extend_from_slice(&length.to_ne_bytes());
        request.extend_from_slice(&message_type.to_ne_bytes());
        request.extend_from_slice(&flags.to_ne_bytes());
        request.extend_from_slice(&sequence.to_ne_bytes());
        request.extend_from_slice(&0u32.to_ne_bytes());
        request.extend_from_slice(payload);
        sendto(
            self.fd.as_raw_fd(),
            &request,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        Ok(sequence)
    }

    /// The first reply to `sequence`: its type and payload.
    fn reply(&mut self, sequence: u32) -> io::Result<Reply> {
        // Replies to an earlier, timed-out question may still be queued: skip other sequences.
        loop {
            let length = recv(self.fd.as_raw_fd(), &mut self.received, MsgFlags::empty())?;
            for (header, body) in messages(&self.received[..length]) {
                if header.sequence != sequence {
                    continue;
                }
                return Ok(Reply {
                    message_type: header.message_type,
                    body: body.to_vec(),
                });
            }
        }
    }
}

struct Reply {
    message_type: u16,
    body: Vec<u8>,
}

/// The error code of an `NLMSG_ERROR` payload: 0 for an acknowledgement, a negative errno.
fn acknowledgement(body: &[u8]) -> Option<i32> {
    let field = body.get(..4)?;
    Some(i32::from_ne_bytes(field.try_into().ok()?))
}

struct Header {
    message_type: u16,
    sequence: u32,
}

/// The messages in one datagram, each with its payload; stops at the first malformed one.
fn messages(mut datagram: &[u8]) -> impl Iterator<Item = (Header, &[u8])> {
    std::iter::from_fn(move || {
        let length = usize::try_from(read_u32(datagram, 0)?).ok()?;
        if length < NLMSG_HEADER_LEN || length > datagram.len() {
            return None;
        }
        let header = Header {
            message_type: read_u16(datagram, 4)?,
            sequence: read_u32(datagram, 8)?,
        };
        let body = &datagram[NLMSG_HEADER_LEN..length];
        // Messages are 4-byte aligned.
        let next = length.next_multiple_of(4).min(datagram.len());
        datagram = &datagram[next..];
        Some((header, body))
    })
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let field = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes(field.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let field = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(field.try_into().ok()?))
}

/// The interface index the kernel would send packets for `destination` out of, or `None` when
/// it has no route (unreachable, prohibited, no table matched).
pub fn route_output_interface(destination: IpAddr) -> io::Result<Option<u32>> {
    let mut netlink = Netlink::open(SockProtocol::NetlinkRoute)?;
    let reply = netlink.ask(RTM_GETROUTE, &route_request(destination), RTM_NEWROUTE)?;
    Ok(reply.as_deref().and_then(output_interface_of))
}

/// What the kernel answered when asked where it routes an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAnswer {
    /// A route: out of this interface, found in this table.
    Route {
        /// The output interface's index (`RTA_OIF`); `None` for a route without one.
        interface: Option<u32>,
        /// The table the route was found in (`RTA_TABLE`, else `rtm_table`).
        table: u32,
    },
    /// No route: the kernel's errno (`ENETUNREACH` for no route or an `unreachable` rule,
    /// `EACCES` for `prohibit`, `EINVAL` for `blackhole`).
    Refused(i32),
}

/// Where the kernel routes `destination` and from which table, as `ip route get` shows it.
pub fn route_lookup(destination: IpAddr) -> io::Result<RouteAnswer> {
    let mut netlink = Netlink::open(SockProtocol::NetlinkRoute)?;
    let sequence = netlink.send(RTM_GETROUTE, NLM_F_REQUEST, &route_request(destination))?;
    let reply = netlink.reply(sequence)?;
    match reply.message_type {
        RTM_NEWROUTE => Ok(route_answer(&reply.body)),
        NLMSG_ERROR => Ok(RouteAnswer::Refused(
            acknowledgement(&reply.body).unwrap_or(0).saturating_neg(),
        )),
        _ => Err(io::Error::other("netlink: an answer that is not a route")),
    }
}

fn route_answer(route: &[u8]) -> RouteAnswer {
    let table = route_attribute(route, RTA_TABLE)
        .or_else(|| route.get(4).map(|table| u32::from(*table)))
        .unwrap_or(0);
    RouteAnswer::Route {
        interface: route_attribute(route, RTA_OIF),
        table,
    }
}

/// The way the kernel would send packets to an address: what `ip route get` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePath {
    /// The output interface's index (`RTA_OIF`).
    pub interface: Option<u32>,
    /// The next hop, for a route `via` one (`RTA_GATEWAY`).
    pub gateway: Option<IpAddr>,
    /// The source address the kernel would choose (`RTA_PREFSRC`).
    pub source: Option<IpAddr>,
    /// A `local` route: the address is this host's own.
    pub local: bool,
}

/// Where the kernel routes `destination` now (interface, next hop, source), or its errno when
/// it has no route (`ENETUNREACH`, `EACCES` for `prohibit`, `EINVAL` for `blackhole`).
pub fn route_path(destination: IpAddr) -> io::Result<Result<RoutePath, i32>> {
    let mut netlink = Netlink::open(SockProtocol::NetlinkRoute)?;
    let sequence = netlink.send(RTM_GETROUTE, NLM_F_REQUEST, &route_request(destination))?;
    let reply = netlink.reply(sequence)?;
    match reply.message_type {
        RTM_NEWROUTE => Ok(Ok(route_path_of(&reply.body))),
        NLMSG_ERROR => Ok(Err(acknowledgement(&reply.body)
            .unwrap_or(0)
            .saturating_neg())),
        _ => Err(io::Error::other("netlink: an answer that is not a route")),
    }
}

/// The interface, next hop and source of an `RTM_NEWROUTE` payload.
fn route_path_of(route: &[u8]) -> RoutePath {
    const RTA_GATEWAY: u16 = 5;
    const RTA_PREFSRC: u16 = 7;
    let found = route.get(RTMSG_LEN..).map(attributes).unwrap_or_default();
    let address = |wanted: u16| {
        found
            .iter()
            .find(|(kind, _)| *kind == wanted)
            .and_then(|(_, value)| match value.len() {
                4 => <[u8; 4]>::try_from(*value).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(*value).ok().map(IpAddr::from),
                _ => None,
            })
    };
    RoutePath {
        interface: route_attribute(route, RTA_OIF),
        gateway: address(RTA_GATEWAY),
        source: address(RTA_PREFSRC),
        local: is_local_route(route),
    }
}

/// What a policy rule does with the packets it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    /// `lookup TABLE`: the route comes from that table if it has one, else the next rule.
    Lookup(u32),
    /// `blackhole`, `unreachable` or `prohibit`: the packet goes nowhere (the name).
    Refuse(&'static str),
    /// Anything else (`goto`, `nop`): decides nothing by itself.
    Other,
}

/// One policy rule, as much of it as deciding where a metadata address goes needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its priority (`pref`); lower runs first.
    pub priority: u32,
    /// What it does.
    pub action: RuleAction,
    /// `to PREFIX`, when it has one: the destination address and prefix length.
    pub to: Option<(IpAddr, u8)>,
    /// It matches some packets only (`from`, `iif`, `oif`, `fwmark`, `uidrange`, ports, `not`,
    /// a TOS): whether it applies to a client cannot be told in general.
    pub selective: bool,
}

/// The policy rules of `family`'s address (`ip rule` or `ip -6 rule`), in the kernel's order.
pub fn rules(family_of: IpAddr) -> io::Result<Vec<Rule>> {
    let (family, _) = family_and_octets(family_of);
    let mut netlink = Netlink::open(SockProtocol::NetlinkRoute)?;
    let mut request = vec![0u8; FIB_RULE_HDR_LEN];
    request[0] = family;
    let bodies = netlink.dump(RTM_GETRULE, &request, RTM_NEWRULE)?;
    Ok(bodies.iter().filter_map(|body| rule_of(body)).collect())
}

fn rule_of(body: &[u8]) -> Option<Rule> {
    let header = body.get(..FIB_RULE_HDR_LEN)?;
    let (family, dst_len, src_len, tos, table, action) = (
        header[0], header[1], header[2], header[3], header[4], header[7],
    );
    let flags = read_u32(header, 8)?;
    let attributes = attributes(body.get(FIB_RULE_HDR_LEN..)?);
    let find = |kind: u16| {
        attributes
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, value)| *value)
    };
    let table = find(FRA_TABLE)
        .and_then(|value| read_u32(value, 0))
        .unwrap_or(u32::from(table));
    let to = find(FRA_DST).and_then(|value| match (family, value.len()) {
        (AF_INET, 4) => {
            let octets: [u8; 4] = value.try_into().ok()?;
            Some((IpAddr::from(octets), dst_len))
        }
        (AF_INET6, 16) => {
            let octets: [u8; 16] = value.try_into().ok()?;
            Some((IpAddr::from(octets), dst_len))
        }
        _ => None,
    });
    let selective = src_len != 0
        || tos != 0
        || flags & FIB_RULE_INVERT != 0
        || attributes
            .iter()
            .any(|(kind, _)| FRA_SELECTORS.contains(kind));
    Some(Rule {
        priority: find(FRA_PRIORITY)
            .and_then(|value| read_u32(value, 0))
            .unwrap_or(0),
        action: match action {
            1 => RuleAction::Lookup(table),
            6 => RuleAction::Refuse("blackhole"),
            7 => RuleAction::Refuse("unreachable"),
            8 => RuleAction::Refuse("prohibit"),
            _ => RuleAction::Other,
        },
        to,
        selective,
    })
}

/// A message's route attributes (type, value), stopping at the first malformed one.
fn attributes(mut bytes: &[u8]) -> Vec<(u16, &[u8])> {
    let mut found = Vec::new();
    while bytes.len() >= 4 {
        let (Some(length), Some(kind)) = (read_u16(bytes, 0), read_u16(bytes, 2)) else {
            break;
        };
        let length = usize::from(length);
        if length < 4 || length > bytes.len() {
            break;
        }
        // The kernel may set NLA_F_NESTED and NLA_F_NET_BYTEORDER in the top bits.
        found.push((kind & 0x3fff, &bytes[4..length]));
        let next = length.next_multiple_of(4).min(bytes.len());
        bytes = &bytes[next..];
    }
    found
}

/// Asks whether addresses are this network namespace's own; keeps one netlink socket open, so
/// the question costs no descriptor (it is asked per connection).
#[derive(Debug)]
pub struct LocalAddresses {
    netlink: Netlink,
}

impl LocalAddresses {
    /// Opens the `NETLINK_ROUTE` socket every later question goes through.
    pub fn open() -> io::Result<LocalAddresses> {
        Ok(LocalAddresses {
            netlink: Netlink::open(SockProtocol::NetlinkRoute)?,
        })
    }

    /// Asks through `fd`, a `NETLINK_ROUTE` socket opened in another network namespace
    /// (`imds-tun exec`'s), about that namespace's addresses.
    pub fn adopt(fd: OwnedFd) -> io::Result<LocalAddresses> {
        Ok(LocalAddresses {
            netlink: Netlink::adopt(fd)?,
        })
    }

    /// The interface the kernel routes `destination` out of, `None` without a route: asked of
    /// the namespace this socket was opened in.
    pub fn output_interface(&mut self, destination: IpAddr) -> io::Result<Option<u32>> {
        let reply = self
            .netlink
            .ask(RTM_GETROUTE, &route_request(destination), RTM_NEWROUTE)?;
        Ok(reply.as_deref().and_then(output_interface_of))
    }

    /// Whether the kernel delivers packets for `address` to this host (`ip route get` says
    /// `local`): an address on any interface of this namespace, loopback's block, an AnyIP
    /// route. Asked now, so an address added or removed a moment ago is answered as it is.
    pub fn contains(&mut self, address: IpAddr) -> io::Result<bool> {
        let reply = self
            .netlink
            .ask(RTM_GETROUTE, &route_request(address), RTM_NEWROUTE)?;
        Ok(reply.as_deref().is_some_and(is_local_route))
    }
}

/// Whether an `RTM_NEWROUTE` payload is a `local` route.
fn is_local_route(route: &[u8]) -> bool {
    route.len() >= RTMSG_LEN && route.get(RTMSG_TYPE_OFFSET) == Some(&RTN_LOCAL)
}

fn route_request(destination: IpAddr) -> Vec<u8> {
    let (family, octets) = family_and_octets(destination);
    let mut payload = vec![0u8; RTMSG_LEN];
    payload[0] = family;
    payload[1] = (octets.len() * 8) as u8; // rtm_dst_len: a host lookup
    // rtm_flags: RTM_F_LOOKUP_TABLE, so the answer names the table the route came from (as
    // `ip route get` shows it) instead of always "main".
    payload[8..12].copy_from_slice(&RTM_F_LOOKUP_TABLE.to_ne_bytes());
    attribute(&mut payload, RTA_DST, &octets);
    payload
}

fn family_and_octets(address: IpAddr) -> (u8, Vec<u8>) {
    match address {
        IpAddr::V4(v4) => (AF_INET, v4.octets().to_vec()),
        IpAddr::V6(v6) => (AF_INET6, v6.octets().to_vec()),
    }
}

/// Appends one route attribute (length, type, value, padding to 4 bytes).
fn attribute(payload: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let length = 4 + value.len();
    payload.extend_from_slice(&(length as u16).to_ne_bytes());
    payload.extend_from_slice(&kind.to_ne_bytes());
    payload.extend_from_slice(value);
    payload.resize(payload.len() + (length.next_multiple_of(4) - length), 0);
}

/// Gives interface `index` the IPv6 address `local` with `peer` as its point-to-point peer
/// (prefix /128), usable at once (no duplicate address detection). The kernel adds the route to
/// `peer` through the interface by itself (and no route to `local`'s own prefix), and removes
/// them with the interface.
pub fn add_ipv6_peer_address(index: u32, local: Ipv6Addr, peer: Ipv6Addr) -> io::Result<()> {
    let mut netlink = Netlink::open(SockProtocol::NetlinkRoute)?;
    netlink.change(
        RTM_NEWADDR,
        NLM_F_CREATE | NLM_F_EXCL,
        &peer_address_request(index, local, peer),
    )
}

fn peer_address_request(index: u32, local: Ipv6Addr, peer: Ipv6Addr) -> Vec<u8> {
    // ifaddrmsg: family, prefix length, flags (NODAD fits the old u8 too), scope (universe),
    // interface index; IFA_FLAGS carries the flags beyond 8 bits.
    let mut payload = Vec::with_capacity(IFADDRMSG_LEN + 2 * 20 + 8);
    payload.extend_from_slice(&[AF_INET6, 128, IFA_F_NODAD as u8, 0]);
    payload.extend_from_slice(&index.to_ne_bytes());
    attribute(&mut payload, IFA_LOCAL, &local.octets());
    attribute(&mut payload, IFA_ADDRESS, &peer.octets());
    let flags = IFA_F_NODAD | IFA_F_NOPREFIXROUTE;
    attribute(&mut payload, IFA_FLAGS, &flags.to_ne_bytes());
    payload
}

/// Routes `destination` (a host: /32 or /128) into interface `index` with `source` as the
/// preferred source address, in the main table, scope link, `proto static`: what `ip route add
/// DESTINATION dev DEVICE src SOURCE` writes. Refused with `EEXIST` when the main table already
/// holds a route to it (`NLM_F_EXCL`: never replaced). The kernel deletes the route with the
/// interface.
pub fn add_host_route(index: u32, destination: IpAddr, source: IpAddr) -> io::Result<()> {
    let mut netlink = Netlink::open(SockProtocol::NetlinkRoute)?;
    netlink.change(
        RTM_NEWROUTE,
        NLM_F_CREATE | NLM_F_EXCL,
        &host_route_request(index, destination, source),
    )
}

fn host_route_request(index: u32, destination: IpAddr, source: IpAddr) -> Vec<u8> {
    // include/uapi/linux/rtnetlink.h.
    const RTPROT_STATIC: u8 = 4;
    const RT_SCOPE_LINK: u8 = 253;
    const RTN_UNICAST: u8 = 1;
    const RTA_PREFSRC: u16 = 7;
    let (family, octets) = family_and_octets(destination);
    let (_, source) = family_and_octets(source);
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let mut payload = vec![0u8; RTMSG_LEN];
    payload[0] = family;
    payload[1] = (octets.len() * 8) as u8;
    payload[4] = MAIN_TABLE as u8;
    payload[5] = RTPROT_STATIC;
    payload[6] = RT_SCOPE_LINK;
    payload[7] = RTN_UNICAST;
    attribute(&mut payload, RTA_DST, &octets);
    attribute(&mut payload, RTA_OIF, &index.to_ne_bytes());
    attribute(&mut payload, RTA_PREFSRC, &source);
    payload
}

/// Sets how many packets the kernel may queue for interface `index` before it drops them (for a
/// TUN: packets on their way to the process reading it).
pub fn set_transmit_queue_length(index: u32, packets: u32) -> io::Result<()> {
    let mut netlink = Netlink::open(SockProtocol::NetlinkRoute)?;
    netlink.change(RTM_NEWLINK, 0, &transmit_queue_request(index, packets))
}

fn transmit_queue_request(index: u32, packets: u32) -> Vec<u8> {
    let mut payload = vec![0u8; IFINFOMSG_LEN];
    payload[4..8].copy_from_slice(&index.to_ne_bytes());
    attribute(&mut payload, IFLA_TXQLEN, &packets.to_ne_bytes());
    payload
}

/// `RTA_OIF` of an `RTM_NEWROUTE` payload.
fn output_interface_of(route: &[u8]) -> Option<u32> {
    route_attribute(route, RTA_OIF)
}

/// A u32 attribute of an `RTM_NEWROUTE` payload.
fn route_attribute(route: &[u8], wanted: u16) -> Option<u32> {
    attributes(route.get(RTMSG_LEN..)?)
        .into_iter()
        .find(|(kind, _)| *kind == wanted)
        .and_then(|(_, value)| read_u32(value, 0))
}

/// Who owns a TCP socket in this network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOwner {
    /// The TCP state (`idiag_state`: 1 established, 2 SYN-SENT, 6 TIME-WAIT, ...): a socket
    /// in TIME-WAIT or SYN-RECV is the kernel's leftover, whose uid and inode read as 0.
    pub state: u8,
    /// The user id the socket belongs to (sock_diag's `idiag_uid`): who made the request.
    pub uid: u32,
    /// The socket's inode (`idiag_inode`), which `/proc/<pid>/fd` links name as
    /// `socket:[inode]`: how the process behind it is found; 0 once no process holds it.
    pub inode: u32,
    /// The cgroup v2 id of the socket (`INET_DIAG_CGROUP_ID`: the inode of its cgroup's
    /// directory), where the kernel reports it.
    pub cgroup_id: Option<u64>,
}

/// TCP states (`include/net/tcp_states.h`).
pub mod tcp_state {
    /// A connected socket.
    pub const ESTABLISHED: u8 = 1;
    /// A client whose handshake is under way.
    pub const SYN_SENT: u8 = 2;
    /// Closed by its process, FIN sent.
    pub const FIN_WAIT1: u8 = 4;
    /// Closed by its process, FIN acknowledged.
    pub const FIN_WAIT2: u8 = 5;
    /// The peer closed first; the process has not.
    pub const CLOSE_WAIT: u8 = 8;
    /// The peer closed first, then the process.
    pub const LAST_ACK: u8 = 9;
    /// Both closed at once.
    pub const CLOSING: u8 = 11;
}

/// Looks up the owners of local TCP sockets by their endpoints; keeps one netlink socket open.
#[derive(Debug)]
pub struct SocketOwners {
    netlink: Netlink,
}

impl SocketOwners {
    /// Opens the `NETLINK_SOCK_DIAG` socket that every later lookup goes through.
    pub fn open() -> io::Result<SocketOwners> {
        Ok(SocketOwners {
            netlink: Netlink::open(SockProtocol::NetlinkSockDiag)?,
        })
    }

    /// Looks up through `fd`, a `NETLINK_SOCK_DIAG` socket opened in another network namespace
    /// (`imds-tun exec`'s), that namespace's sockets.
    pub fn adopt(fd: OwnedFd) -> io::Result<SocketOwners> {
        Ok(SocketOwners {
            netlink: Netlink::adopt(fd)?,
        })
    }

    /// The owner of the TCP socket whose local end is `local` and remote end `remote`; `None`
    /// when no such socket exists here (it closed, or it lives in another namespace).
    pub fn owner(
        &mut self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> io::Result<Option<SocketOwner>> {
        self.owner_of(local.into(), remote.into())
    }

    /// [`SocketOwners::owner`] for either family (`--ipv6` clients connect from
    /// `fd00:ec2::253`); `None` also when the two ends are of different families.
    pub fn owner_of(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> io::Result<Option<SocketOwner>> {
        let Some(request) = sock_diag_request(local, remote) else {
            return Ok(None);
        };
        let reply = self
            .netlink
            .ask(SOCK_DIAG_BY_FAMILY, &request, SOCK_DIAG_BY_FAMILY)?;
        // The kernel falls back to a listener on the asked port: that is no answer about
        // this connection.
        Ok(reply
            .as_deref()
            .filter(|message| same_endpoints(&request, message))
            .and_then(owner_of))
    }
}

/// Whether a reply's socket id names the ports and addresses the request asked about.
fn same_endpoints(request: &[u8], message: &[u8]) -> bool {
    let asked =
        request.get(INET_DIAG_REQ_ID_OFFSET..INET_DIAG_REQ_ID_OFFSET + SOCKET_ID_ENDPOINTS_LEN);
    let answered =
        message.get(INET_DIAG_MSG_ID_OFFSET..INET_DIAG_MSG_ID_OFFSET + SOCKET_ID_ENDPOINTS_LEN);
    asked.is_some() && asked == answered
}

fn sock_diag_request(local: SocketAddr, remote: SocketAddr) -> Option<Vec<u8>> {
    let family = match (local, remote) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => AF_INET,
        (SocketAddr::V6(_), SocketAddr::V6(_)) => AF_INET6,
        _ => return None,
    };
    let mut payload = Vec::with_capacity(INET_DIAG_REQ_V2_LEN);
    payload.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    payload.extend_from_slice(&u32::MAX.to_ne_bytes()); // every TCP state
    // inet_diag_sockid: ports and addresses in network order, addresses in 16 bytes (an IPv4
    // one padded with zeros).
    payload.extend_from_slice(&local.port().to_be_bytes());
    payload.extend_from_slice(&remote.port().to_be_bytes());
    for address in [local.ip(), remote.ip()] {
        let (_, octets) = family_and_octets(address);
        payload.extend_from_slice(&octets);
        payload.resize(payload.len() + (16 - octets.len()), 0);
    }
    payload.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    payload.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    Some(payload)
}

fn owner_of(message: &[u8]) -> Option<SocketOwner> {
    if message.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    Some(SocketOwner {
        state: *message.get(INET_DIAG_MSG_STATE_OFFSET)?,
        uid: read_u32(message, INET_DIAG_MSG_UID_OFFSET)?,
        inode: read_u32(message, INET_DIAG_MSG_INODE_OFFSET)?,
        cgroup_id: attribute_u64(&message[INET_DIAG_MSG_LEN..], INET_DIAG_CGROUP_ID),
    })
}

/// A u64 attribute among route-style attributes (length, type, value, padded to 4 bytes).
fn attribute_u64(mut attributes: &[u8], wanted: u16) -> Option<u64> {
    while attributes.len() >= 4 {
        let length = usize::from(read_u16(attributes, 0)?);
        let kind = read_u16(attributes, 2)?;
        if length < 4 || length > attributes.len() {
            return None;
        }
        if kind == wanted {
            let field = attributes.get(4..12)?;
            return Some(u64::from_ne_bytes(field.try_into().ok()?));
        }
        let next = length.next_multiple_of(4).min(attributes.len());
        attributes = &attributes[next..];
    }
    None
}

#[cfg(test)]
mod tests;
