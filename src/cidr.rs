//! Address blocks (`10.0.0.0/8`, `fd00::/8`) and the `--allow-from` rule, shared by every path a
//! client arrives by: the TUN stack and the kernel `--listen` sockets. A leaf module: it knows
//! nothing of where the blocks come from.

use std::net::IpAddr;

/// The `--allow-from` rule, in one place for every path a client arrives by (the TUN stack and
/// the `--listen` sockets): an empty list admits everyone who can reach the address, else the
/// client must be inside one of the blocks.
pub fn allow_from_admits(allow_from: &[Cidr], address: IpAddr) -> bool {
    allow_from.is_empty() || allow_from.iter().any(|cidr| cidr.contains(address))
}

/// An address block such as `10.0.0.0/8` or `fd00::/8`; a bare address is a /32 (/128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| "expected an address block such as 10.0.2.0/24 or fd00::/8".to_string())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("the prefix length must be 0-{max}"))?,
        };
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        // An IPv4 client may appear as ::ffff:a.b.c.d on a dual-stack socket.
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}
