//! What already answers for a metadata address, as the kernel reported it, and the command that
//! releases exactly that: an alias is removed with its real prefix on its own device (aws-vault
//! adds `169.254.169.254/24`, and `ip addr del 169.254.169.254/32` answers "Address not
//! found"), a host route with `ip route del` on its own device, another imds-tun by stopping it.
//!
//! Plain data and functions, with each operating system's wording ([`Os`]) chosen by a
//! parameter, so Linux's unit tests cover what macOS says too.

use std::fmt;
use std::net::IpAddr;

/// What holds a metadata address (the holder of [`super::PlatformError::AddressClaimed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Another imds-tun: the holder of the claim lock (Linux, with its pid), or a utun with the
    /// same peer that won the tie-break (macOS, with its interface).
    ImdsTun {
        /// Its process id, when the claim lock's holder could be asked.
        pid: Option<i32>,
        /// Its device, when that is all that is known.
        interface: Option<String>,
    },
    /// The address itself on an interface: a loopback alias of an emulator or a recipe.
    Address {
        /// The metadata address as it sits there.
        address: IpAddr,
        /// Its prefix length as the kernel holds it (aws-vault's alias is a /24).
        prefix: u8,
        /// The interface it is on.
        interface: String,
    },
    /// The peer of a point-to-point link: another imds-tun's TUN, or a VPN's.
    Peer {
        /// The link's own address, which names the pair to remove.
        local: Option<IpAddr>,
        /// The metadata address, as the peer.
        peer: IpAddr,
        /// The peer's prefix length.
        prefix: u8,
        /// The interface of the link.
        interface: String,
    },
    /// A host route to the address.
    Route {
        /// The metadata address, the route's destination.
        destination: IpAddr,
        /// The interface it sends packets out of; `None` for a route that sends them nowhere
        /// (`unreachable`, `prohibit`, `blackhole`).
        interface: Option<String>,
        /// The gateway, for a route `via` one.
        gateway: Option<IpAddr>,
    },
    /// The kernel refused our own device's configuration as a duplicate: something claimed the
    /// address between the check and the configuration.
    Existing {
        /// Our device, whose configuration was refused.
        device: String,
    },
}

/// Whose words the advice is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    /// `ip` (iproute2) and systemd.
    Linux,
    /// `ifconfig` and `route`.
    MacOs,
}

impl Os {
    /// The system this build runs on (any other one gets Linux's words, and `--no-tun` anyway).
    pub const CURRENT: Os = if cfg!(target_os = "macos") {
        Os::MacOs
    } else {
        Os::Linux
    };
}

fn prefix_length(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `ip` or `ip -6`, as the address needs.
fn ip(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "ip",
        IpAddr::V6(_) => "ip -6",
    }
}

impl Claim {
    /// What to do about it, in the words of `os`, as a clause that "and retry" can follow:
    /// "remove it with `sudo ip addr del 169.254.169.254/24 dev lo`".
    pub fn advice_for(&self, os: Os) -> String {
        match (self, os) {
            (Claim::ImdsTun { pid: Some(pid), .. }, Os::Linux) => format!(
                "stop it first (`sudo kill {pid}`; for the service, `sudo systemctl stop imds-tun`)"
            ),
            (Claim::ImdsTun { .. }, _) => "stop the other imds-tun first".to_owned(),
            (
                Claim::Address {
                    address,
                    prefix,
                    interface,
                },
                Os::Linux,
            ) => format!(
                "remove it with `sudo {} addr del {address}/{prefix} dev {interface}` (or stop \
                 the metadata emulator that added it, such as aws-vault --ec2-server)",
                ip(*address)
            ),
            (
                Claim::Address {
                    address, interface, ..
                },
                Os::MacOs,
            ) => {
                let family = if address.is_ipv6() { "inet6 " } else { "" };
                format!(
                    "remove it with `sudo ifconfig {interface} {family}-alias {address}` (or stop \
                     the metadata emulator that added it)"
                )
            }
            (
                Claim::Peer {
                    local: Some(local),
                    peer,
                    prefix,
                    interface,
                },
                Os::Linux,
            ) => format!(
                "stop the process that owns interface {interface}, or remove the pair with \
                 `sudo {} addr del {local} peer {peer}/{prefix} dev {interface}`",
                ip(*peer)
            ),
            (Claim::Peer { interface, .. }, _) => {
                format!("stop the process that owns interface {interface}")
            }
            (
                Claim::Route {
                    destination,
                    interface,
                    gateway,
                },
                Os::Linux,
            ) => {
                let mut command = format!(
                    "sudo {} route del {destination}/{}",
                    ip(*destination),
                    prefix_length(*destination)
                );
                if let Some(gateway) = gateway {
                    command.push_str(&format!(" via {gateway}"));
                }
                if let Some(interface) = interface {
                    command.push_str(&format!(" dev {interface}"));
                }
                format!("remove it with `{command}`")
            }
            (Claim::Route { destination, .. }, Os::MacOs) => {
                let family = if destination.is_ipv6() { "-inet6 " } else { "" };
                format!("remove it with `sudo route -n delete {family}-host {destination}`")
            }
            (Claim::Existing { .. }, Os::Linux) => {
                "find it with `ip addr` and `ip route get 169.254.169.254`, remove it".to_owned()
            }
            (Claim::Existing { .. }, Os::MacOs) => {
                "find it with `ifconfig` and `route -n get 169.254.169.254`, remove it".to_owned()
            }
        }
    }

    /// [`Claim::advice_for`] this system.
    pub fn advice(&self) -> String {
        self.advice_for(Os::CURRENT)
    }
}

/// Who holds it, for "169.254.169.254 is already claimed by ...".
impl fmt::Display for Claim {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Claim::ImdsTun { pid: Some(pid), .. } => write!(
                formatter,
                "another imds-tun (pid {pid}) in this network namespace"
            ),
            Claim::ImdsTun {
                interface: Some(interface),
                ..
            } => write!(formatter, "another imds-tun (interface {interface})"),
            Claim::ImdsTun { .. } => formatter.write_str("another imds-tun"),
            Claim::Address {
                address,
                prefix,
                interface,
            } => write!(
                formatter,
                "an address ({address}/{prefix}) on interface {interface}"
            ),
            Claim::Peer { interface, .. } => write!(
                formatter,
                "the point-to-point peer of interface {interface} (another imds-tun?)"
            ),
            Claim::Route {
                interface: Some(interface),
                gateway: Some(gateway),
                ..
            } => write!(
                formatter,
                "a host route via {gateway} on interface {interface}"
            ),
            Claim::Route {
                interface: Some(interface),
                ..
            } => write!(formatter, "a host route via interface {interface}"),
            Claim::Route {
                interface: None, ..
            } => formatter.write_str("a host route that sends it nowhere (unreachable)"),
            Claim::Existing { device } => write!(
                formatter,
                "an existing route or address (the kernel answered EEXIST while configuring \
                 {device})"
            ),
        }
    }
}

/// The prefix length of a netmask (`255.255.255.0` → 24), counting its leading ones.
pub(crate) fn prefix_of(mask: IpAddr) -> u8 {
    let ones = match mask {
        IpAddr::V4(mask) => u32::from(mask).leading_ones(),
        IpAddr::V6(mask) => u128::from(mask).leading_ones(),
    };
    u8::try_from(ones).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const METADATA: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254));

    #[test]
    fn a_claimed_container_endpoint_names_its_holder_the_release_and_the_flag() {
        use super::super::{ExtraAddress, PlatformError};
        let ecs = IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2));
        let error = PlatformError::ExtraAddressClaimed {
            extra: ExtraAddress::Ecs,
            claim: Claim::Address {
                address: ecs,
                prefix: 32,
                interface: "lo".into(),
            },
        };
        let message = error.to_string();
        assert!(
            message.starts_with(
                "169.254.170.2 is already claimed by an address (169.254.170.2/32) on interface lo; "
            ),
            "{message}"
        );
        assert!(
            message.contains(
                &Claim::Address {
                    address: ecs,
                    prefix: 32,
                    interface: "lo".into(),
                }
                .advice()
            )
        );
        assert!(
            message.ends_with(" and retry, or run without --ecs"),
            "{message}"
        );
        assert!(!message.contains('\n'));

        let error = PlatformError::ExtraRouteNotTaken {
            extra: ExtraAddress::EksPodIdentityV6,
            device: "imds0".into(),
            route: "nowhere (no route)".into(),
        };
        assert_eq!(
            error.to_string(),
            "the kernel routes fd00:ec2::23 nowhere (no route), not into imds0: a policy-routing \
             rule or another route takes precedence; check `ip -6 rule` and `ip -6 route get \
             fd00:ec2::23`"
        );
    }

    #[test]
    fn each_claim_is_released_by_the_command_that_fits_it() {
        let cases = [
            (
                Claim::Address {
                    address: METADATA,
                    prefix: 24,
                    interface: "lo".into(),
                },
                "an address (169.254.169.254/24) on interface lo",
                "`sudo ip addr del 169.254.169.254/24 dev lo`",
                "`sudo ifconfig lo -alias 169.254.169.254`",
            ),
            (
                Claim::Route {
                    destination: METADATA,
                    interface: Some("eth0".into()),
                    gateway: None,
                },
                "a host route via interface eth0",
                "`sudo ip route del 169.254.169.254/32 dev eth0`",
                "`sudo route -n delete -host 169.254.169.254`",
            ),
            (
                Claim::Route {
                    destination: METADATA,
                    interface: Some("eth0".into()),
                    gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
                },
                "a host route via 10.0.0.1 on interface eth0",
                "`sudo ip route del 169.254.169.254/32 via 10.0.0.1 dev eth0`",
                "`sudo route -n delete -host 169.254.169.254`",
            ),
            (
                Claim::Route {
                    destination: METADATA,
                    interface: None,
                    gateway: None,
                },
                "a host route that sends it nowhere (unreachable)",
                "`sudo ip route del 169.254.169.254/32`",
                "`sudo route -n delete -host 169.254.169.254`",
            ),
            (
                Claim::Peer {
                    local: Some(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 253))),
                    peer: METADATA,
                    prefix: 32,
                    interface: "imds0".into(),
                },
                "the point-to-point peer of interface imds0 (another imds-tun?)",
                "`sudo ip addr del 169.254.169.253 peer 169.254.169.254/32 dev imds0`",
                "stop the process that owns interface imds0",
            ),
            (
                Claim::ImdsTun {
                    pid: Some(4242),
                    interface: None,
                },
                "another imds-tun (pid 4242) in this network namespace",
                "`sudo kill 4242`",
                "stop the other imds-tun first",
            ),
            (
                Claim::Address {
                    address: IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
                    prefix: 64,
                    interface: "lo".into(),
                },
                "an address (fd00:ec2::254/64) on interface lo",
                "`sudo ip -6 addr del fd00:ec2::254/64 dev lo`",
                "`sudo ifconfig lo inet6 -alias fd00:ec2::254`",
            ),
        ];
        for (claim, holder, linux, macos) in cases {
            assert_eq!(claim.to_string(), holder);
            let advice = claim.advice_for(Os::Linux);
            assert!(advice.contains(linux), "{advice}");
            let advice = claim.advice_for(Os::MacOs);
            assert!(advice.contains(macos), "{advice}");
        }
    }

    #[test]
    fn a_netmask_is_its_prefix_length() {
        assert_eq!(prefix_of(IpAddr::V4(Ipv4Addr::new(255, 255, 255, 0))), 24);
        assert_eq!(prefix_of(IpAddr::V4(Ipv4Addr::BROADCAST)), 32);
        assert_eq!(prefix_of(IpAddr::V6(Ipv6Addr::from(u128::MAX << 64))), 64);
    }
}
