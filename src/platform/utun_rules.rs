//! The decisions the macOS utun code makes, as plain functions over bytes and text.
//!
//! `macos.rs` can only be type-checked off a Mac, so everything in it that is a rule rather than
//! a system call lives here, compiled on every platform and unit-tested on Linux:
//! - utun framing: every packet read from or written to a utun descriptor starts with a 4-byte
//!   protocol family in network byte order (XNU `net/if_utun.c`; the `tun` crate's
//!   `generate_packet_information` writes `(AF_INET as u32).to_be_bytes()` on Apple targets);
//! - what `--tun-name` means on macOS (the kernel names utun devices `utunN` itself);
//! - which of two simultaneous starts keeps the address (see [`winner_over`]);
//! - reading the answer of `route -n get 169.254.169.254` (route(8)).
//!
//! Nothing here opens a socket or runs a command.

// Only macos.rs calls these outside the tests; on Linux they exist to be tested.
#![cfg_attr(not(target_os = "macos"), allow(dead_code))]

/// The frame header for an IPv4 packet: `AF_INET` (2 on every BSD, macOS included) as a 32-bit
/// big-endian number.
pub(crate) const AF_INET_HEADER: [u8; 4] = 2u32.to_be_bytes();

/// The length of the utun frame header.
pub(crate) const HEADER_LEN: usize = AF_INET_HEADER.len();

/// Given the header and the total byte count of one utun read (header included), the length of
/// the IPv4 packet behind the header, or `None` for a frame to drop: too short to hold a header
/// and a byte of packet, or another protocol family (IPv6 router solicitations and the like;
/// the metadata address is IPv4 only).
pub(crate) fn ipv4_payload_len(header: [u8; HEADER_LEN], read: usize) -> Option<usize> {
    (header == AF_INET_HEADER && read > HEADER_LEN).then(|| read - HEADER_LEN)
}

/// What `--tun-name` asks for on macOS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnitRequest {
    /// A name with `%d` (the default `imds%d` included): the kernel picks the first free utun.
    KernelChooses,
    /// `utunN`: exactly that unit, or an error if it is taken.
    Unit(u32),
}

/// Reads `--tun-name` the way macOS can honour it: utun devices are always called `utunN`
/// (the `tun` crate refuses any other name, and `set_tun_name` is unsupported on Darwin), so
/// only `utunN` or a `%d` pattern mean something. `None` for any other name.
pub(crate) fn unit_request(name: &str) -> Option<UnitRequest> {
    if name.contains("%d") {
        return Some(UnitRequest::KernelChooses);
    }
    utun_unit(name).map(UnitRequest::Unit)
}

/// The unit number of an interface called `utunN`.
pub(crate) fn utun_unit(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("utun")?;
    // `parse` would accept "+3"; only plain digits are an interface name.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The tie-break between imds-tun processes that started at the same moment.
///
/// Every start configures its utun and then lists the interfaces whose point-to-point
/// destination is 169.254.169.254 (`peers`, ours excluded or not). The lowest unit number keeps
/// the address; an interface that is not a `utunN` at all was put there by something else and
/// always counts as holding it. Returns the name of the peer we yield to, or `None` when we
/// keep the address. All instances see the same set of names, so they agree on one keeper.
pub(crate) fn winner_over<'a>(ours: &str, peers: &[&'a str]) -> Option<&'a str> {
    let our_unit = utun_unit(ours);
    peers
        .iter()
        .copied()
        .filter(|peer| *peer != ours)
        .filter(|peer| match (utun_unit(peer), our_unit) {
            (Some(theirs), Some(mine)) => theirs < mine,
            // Not a utun, or (cannot happen for ours) we are not one: not ours to contest.
            _ => true,
        })
        .min_by_key(|peer| utun_unit(peer).unwrap_or(0))
}

/// What `route -n get` printed, as far as imds-tun cares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct RouteAnswer {
    /// The `destination:` line: the key of the route that matched (`default` for the default
    /// route, an address for a host route).
    pub destination: Option<String>,
    /// The `interface:` line: where the kernel sends the packet.
    pub interface: Option<String>,
    /// The words between `<` and `>` on the `flags:` line (`UP`, `HOST`, `WASCLONED`, ...).
    pub flags: Vec<String>,
}

impl RouteAnswer {
    /// A host route for exactly `address` that someone added (`route add -host`, a
    /// point-to-point peer), as opposed to an entry the kernel cloned for ARP on a link-local
    /// network (`WASCLONED`), which only records a neighbour and is not a claim.
    pub(crate) fn is_host_route_to(&self, address: &str) -> bool {
        let has = |flag: &str| self.flags.iter().any(|f| f == flag);
        self.destination.as_deref() == Some(address) && has("HOST") && !has("WASCLONED")
    }
}

/// Parses the stdout of `route -n get ADDRESS` (route(8)): `key: value` lines, indented so the
/// colons align, followed by a metrics table that is ignored.
pub(crate) fn parse_route_get(output: &str) -> RouteAnswer {
    let mut answer = RouteAnswer::default();
    for line in output.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "destination" => answer.destination = Some(value.to_owned()),
            "interface" => answer.interface = Some(value.to_owned()),
            "flags" => {
                answer.flags = value
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .split(',')
                    .filter(|flag| !flag.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            _ => {}
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    /// route(8) on macOS for a point-to-point peer, as imds-tun's own utun produces it.
    const OUR_ROUTE: &str = "   route to: 169.254.169.254
destination: 169.254.169.254
  interface: utun4
      flags: <UP,HOST,DONE>
 recvpipe  sendpipe  ssthresh  rtt,msec    rttvar  hopcount      mtu     expire
       0         0         0         0         0         0      1500         0
";

    /// No specific route: the default route's answer.
    const DEFAULT_ROUTE: &str = "   route to: 169.254.169.254
destination: default
       mask: default
    gateway: 192.168.1.1
  interface: en0
      flags: <UP,GATEWAY,DONE,STATIC,PRCLONING,GLOBAL>
 recvpipe  sendpipe  ssthresh  rtt,msec    rttvar  hopcount      mtu     expire
       0         0         0         0         0         0      1500         0
";

    /// An ARP entry the kernel cloned from en0's 169.254/16 link-local route.
    const CLONED_NEIGHBOUR: &str = "   route to: 169.254.169.254
destination: 169.254.169.254
  interface: en0
      flags: <UP,HOST,DONE,LLINFO,WASCLONED,IFSCOPE,IFREF>
 recvpipe  sendpipe  ssthresh  rtt,msec    rttvar  hopcount      mtu     expire
       0         0         0         0         0         0      1500      1180
";

    #[test]
    fn ipv4_frames_lose_their_four_byte_header() {
        assert_eq!(AF_INET_HEADER, [0, 0, 0, 2]);
        assert_eq!(ipv4_payload_len([0, 0, 0, 2], 64), Some(60));
    }

    #[test]
    fn ipv6_and_truncated_frames_are_dropped() {
        // AF_INET6 is 30 on macOS.
        assert_eq!(ipv4_payload_len([0, 0, 0, 30], 64), None);
        assert_eq!(ipv4_payload_len([2, 0, 0, 0], 64), None);
        assert_eq!(ipv4_payload_len(AF_INET_HEADER, 4), None);
        assert_eq!(ipv4_payload_len(AF_INET_HEADER, 0), None);
    }

    #[test]
    fn tun_name_on_macos_is_a_pattern_or_a_utun_unit() {
        assert_eq!(unit_request("imds%d"), Some(UnitRequest::KernelChooses));
        assert_eq!(unit_request("utun%d"), Some(UnitRequest::KernelChooses));
        assert_eq!(unit_request("utun7"), Some(UnitRequest::Unit(7)));
        assert_eq!(unit_request("imds0"), None);
        assert_eq!(unit_request("utun"), None);
        assert_eq!(unit_request("utun+3"), None);
        assert_eq!(unit_request("utun99999999999"), None);
    }

    #[test]
    fn alone_we_keep_the_address() {
        assert_eq!(winner_over("utun4", &[]), None);
        assert_eq!(winner_over("utun4", &["utun4"]), None);
    }

    #[test]
    fn the_lowest_utun_unit_keeps_the_address() {
        assert_eq!(winner_over("utun5", &["utun4", "utun5"]), Some("utun4"));
        assert_eq!(winner_over("utun4", &["utun4", "utun5"]), None);
        // Numeric, not lexical: utun10 is above utun9.
        assert_eq!(winner_over("utun10", &["utun9", "utun10"]), Some("utun9"));
        assert_eq!(winner_over("utun9", &["utun10", "utun9"]), None);
        assert_eq!(
            winner_over("utun7", &["utun6", "utun3", "utun7"]),
            Some("utun3")
        );
    }

    #[test]
    fn each_of_several_simultaneous_starts_agrees_on_one_keeper() {
        let peers = ["utun8", "utun3", "utun11"];
        let keepers: Vec<_> = peers
            .iter()
            .filter(|ours| winner_over(ours, &peers).is_none())
            .collect();
        assert_eq!(keepers, [&"utun3"]);
    }

    #[test]
    fn a_peer_that_is_not_a_utun_always_holds_the_address() {
        assert_eq!(winner_over("utun2", &["ppp0", "utun2"]), Some("ppp0"));
    }

    #[test]
    fn route_get_names_our_utun_for_a_point_to_point_peer() {
        let answer = parse_route_get(OUR_ROUTE);
        assert_eq!(answer.interface.as_deref(), Some("utun4"));
        assert_eq!(answer.destination.as_deref(), Some("169.254.169.254"));
        assert_eq!(answer.flags, ["UP", "HOST", "DONE"]);
        assert!(answer.is_host_route_to("169.254.169.254"));
    }

    #[test]
    fn the_default_route_is_not_a_host_route() {
        let answer = parse_route_get(DEFAULT_ROUTE);
        assert_eq!(answer.interface.as_deref(), Some("en0"));
        assert_eq!(answer.destination.as_deref(), Some("default"));
        assert!(!answer.is_host_route_to("169.254.169.254"));
    }

    #[test]
    fn a_cloned_arp_entry_is_not_a_claim() {
        let answer = parse_route_get(CLONED_NEIGHBOUR);
        assert_eq!(answer.interface.as_deref(), Some("en0"));
        assert!(!answer.is_host_route_to("169.254.169.254"));
    }

    #[test]
    fn no_route_and_garbage_parse_to_nothing() {
        assert_eq!(parse_route_get(""), RouteAnswer::default());
        assert_eq!(
            parse_route_get("route: writing to routing socket: not in table\n"),
            RouteAnswer::default()
        );
    }
}
