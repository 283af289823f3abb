//! Where the real metadata service is, for `--pass-through`: the way the kernel routes
//! 169.254.169.254 *before* imds-tun claims it (interface, next hop, source), and why a route
//! cannot be the real service (none, this host's own address, another TUN).
//!
//! The rules are plain data and functions, with each operating system's answer turned into a
//! [`Found`] by its `imp` (Linux: `RTM_GETROUTE`; macOS: `route -n get`), so Linux's unit tests
//! cover the decision for both.

use std::fmt;
use std::net::IpAddr;

/// The real metadata service's way out of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealRoute {
    /// The interface the kernel sent packets for the address out of; passed-through requests
    /// leave on sockets bound to it.
    pub interface: String,
    /// The next hop, for a route `via` one.
    pub gateway: Option<IpAddr>,
    /// The source address the kernel chose.
    pub source: Option<IpAddr>,
}

impl fmt::Display for RealRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "169.254.169.254 via interface {}", self.interface)?;
        if let Some(gateway) = self.gateway {
            write!(f, ", next hop {gateway}")?;
        }
        if let Some(source) = self.source {
            write!(f, ", source {source}")?;
        }
        Ok(())
    }
}

/// Why `--pass-through` has no real metadata service to pass to; one line naming the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--pass-through: {0}")]
pub struct NoRealRoute(pub String);

/// Whether this process, as it is now, may bind a socket to `interface` as the pass-through's
/// connections do: asked once after root is given up, so a kernel that needs a capability for
/// it (Linux before 5.7: `CAP_NET_RAW`) stops the start instead of failing every request.
/// macOS's `IP_BOUND_IF` needs no privilege.
pub fn may_bind_to(interface: &str) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socket, sockopt};
        let probe = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        setsockopt(
            &probe,
            sockopt::BindToDevice,
            &std::ffi::OsString::from(interface),
        )?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = interface;
    Ok(())
}

/// What the kernel answered, in words every system can give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No route (the system's reason, e.g. "network unreachable").
    Nothing(String),
    /// The address is this host's own (an alias on an interface, a `local` route).
    Local,
    /// A route out of `interface` (a TUN or not).
    Route {
        /// The interface's name.
        interface: String,
        /// Whether it is a TUN (or utun) device: another imds-tun's, or a VPN's.
        tun: bool,
        /// The next hop, if any.
        gateway: Option<IpAddr>,
        /// The source address, if known.
        source: Option<IpAddr>,
    },
}

/// The real service's route, or why there is none.
pub fn decide(found: Found) -> Result<RealRoute, NoRealRoute> {
    match found {
        Found::Nothing(why) => Err(NoRealRoute(format!(
            "the kernel has no route to 169.254.169.254 ({why}), so there is no real metadata \
             service to pass requests to; use it on a cloud VM whose service the kernel reaches \
             (`ip route get 169.254.169.254`), or drop --pass-through"
        ))),
        Found::Local => Err(NoRealRoute(
            "169.254.169.254 is an address of this host (an emulator's alias?), not a real \
             metadata service; remove it, or drop --pass-through"
                .into(),
        )),
        Found::Route {
            interface,
            tun: true,
            ..
        } => Err(NoRealRoute(format!(
            "the kernel routes 169.254.169.254 into the TUN device {interface} (another imds-tun, \
             or a VPN), not to a real metadata service; stop what holds it, or drop \
             --pass-through"
        ))),
        Found::Route {
            interface,
            tun: false,
            gateway,
            source,
        } => Ok(RealRoute {
            interface,
            gateway,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_out_of_a_real_interface_is_the_real_service() {
        let route = decide(Found::Route {
            interface: "eth0".into(),
            tun: false,
            gateway: Some("10.0.0.1".parse().unwrap()),
            source: Some("10.0.0.4".parse().unwrap()),
        })
        .unwrap();
        assert_eq!(
            route.to_string(),
            "169.254.169.254 via interface eth0, next hop 10.0.0.1, source 10.0.0.4"
        );
    }

    #[test]
    fn no_route_this_host_or_a_tun_is_one_line_naming_the_flag() {
        for found in [
            Found::Nothing("network unreachable".into()),
            Found::Local,
            Found::Route {
                interface: "imds0".into(),
                tun: true,
                gateway: None,
                source: None,
            },
        ] {
            let line = decide(found).unwrap_err().to_string();
            assert!(line.starts_with("--pass-through: "), "{line}");
            assert!(line.ends_with("drop --pass-through"), "{line}");
            assert!(!line.contains('\n'));
        }
    }
}
