//! Address blocks (`10.0.0.0/8`, `fd00::/8`) as users write them, and the `--allow-from` rule,
//! shared by every path a client arrives by: the TUN stack and the kernel `--listen` sockets.
//!
//! The block itself is [`ipnet::IpNet`]; this leaf adds only imds-tun's own rules around it: a
//! bare address is a host block, the parse errors say what to write, and an IPv4 client seen
//! as `::ffff:a.b.c.d` on a dual-stack socket is matched as the IPv4 address it is. It knows
//! nothing of where the blocks come from.

use std::net::IpAddr;

pub use ipnet::IpNet;

/// The `--allow-from` rule, in one place for every path a client arrives by (the TUN stack and
/// the `--listen` sockets): an empty list admits everyone who can reach the address, else the
/// client must be inside one of the blocks.
pub fn allow_from_admits(allow_from: &[IpNet], address: IpAddr) -> bool {
    allow_from.is_empty() || allow_from.iter().any(|block| contains(block, address))
}

/// An address block such as `10.0.0.0/8` or `fd00::/8`; a bare address is a /32 (/128).
pub fn parse(text: &str) -> Result<IpNet, String> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let address: IpAddr = address
        .trim()
        .parse()
        .map_err(|_| "expected an address block such as 10.0.2.0/24 or fd00::/8".to_string())?;
    let host = IpNet::from(address);
    match prefix {
        None => Ok(host),
        Some(prefix) => prefix
            .trim()
            .parse::<u8>()
            .ok()
            .and_then(|prefix| IpNet::new(address, prefix).ok())
            .ok_or_else(|| format!("the prefix length must be 0-{}", host.max_prefix_len())),
    }
}

/// Whether `address` is inside `block`, an IPv4-mapped IPv6 address counting as its IPv4 one.
pub fn contains(block: &IpNet, address: IpAddr) -> bool {
    let address = match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    };
    block.contains(&address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_to_write_and_blocks_print_as_written() {
        assert_eq!(
            parse("10.0.0/8"),
            Err("expected an address block such as 10.0.2.0/24 or fd00::/8".to_string())
        );
        assert_eq!(
            parse("10.0.0.0/33"),
            Err("the prefix length must be 0-32".to_string())
        );
        assert_eq!(
            parse("fd00::/x"),
            Err("the prefix length must be 0-128".to_string())
        );
        let written = parse(" 10.0.2.9 / 24 ").expect("spaces around the parts are fine");
        assert_eq!(written.to_string(), "10.0.2.9/24");
        assert!(contains(&written, "10.0.2.200".parse().expect("ip")));
        assert_eq!(
            parse("169.254.169.253").expect("host").to_string(),
            "169.254.169.253/32"
        );
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn blocks_contain_their_addresses_only() {
        let block = parse("10.0.2.0/24").expect("cidr");
        assert!(contains(&block, ip("10.0.2.15")));
        assert!(!contains(&block, ip("10.0.3.1")));
        assert!(contains(&block, ip("::ffff:10.0.2.7")), "v4-mapped v6");
        assert!(!contains(&block, ip("fd00::1")));
        let host = parse("169.254.169.253").expect("bare address");
        assert!(contains(&host, ip("169.254.169.253")));
        assert!(!contains(&host, ip("169.254.169.252")));
        assert!(contains(&parse("0.0.0.0/0").expect("all"), ip("192.0.2.1")));
        assert!(contains(&parse("fd00::/8").expect("v6"), ip("fd12::1")));
    }

    #[test]
    fn malformed_blocks_are_refused() {
        for text in [
            "10.0.0.0/33",
            "10.0.0/8",
            "fd00::/129",
            "x",
            "10.0.0.0/-1",
            "",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn an_allow_list_admits_only_clients_inside_one_of_its_blocks() {
        assert!(
            allow_from_admits(&[], ip("fd00::1")),
            "no list admits everyone"
        );
        let blocks = [
            parse("10.0.2.0/24").expect("cidr"),
            parse("169.254.169.253").expect("bare address"),
        ];
        assert!(allow_from_admits(&blocks, ip("10.0.2.15")));
        assert!(allow_from_admits(&blocks, ip("169.254.169.253")));
        assert!(!allow_from_admits(&blocks, ip("10.0.3.1")));
        assert!(!allow_from_admits(&blocks, ip("169.254.169.252")));
    }
}
