//! What this host is: its name, machine id and addresses. The configuration derives stable
//! defaults from these. Plain POSIX calls and files; where a file is Linux's own
//! (`/etc/machine-id`), its absence on another system is an ordinary "none".

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

/// This host's name, if it has a non-empty one.
pub fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
}

/// The machine id systemd (or D-Bus) keeps, if any.
pub fn machine_id() -> Option<String> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim().to_owned())
        .find(|id| !id.is_empty())
}

/// The source address the kernel would pick for a packet to the internet. `connect` on a UDP
/// socket only consults the routing table; nothing is sent.
pub fn primary_ipv4() -> Option<Ipv4Addr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    match socket.local_addr().ok()? {
        SocketAddr::V4(address) => {
            let ip = *address.ip();
            let usable = !(ip.is_unspecified() || ip.is_loopback() || ip.is_link_local());
            usable.then_some(ip)
        }
        SocketAddr::V6(_) => None,
    }
}

/// The addresses of this machine's interfaces (none if they cannot be listed).
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    interfaces
        .filter_map(|interface| {
            let address = interface.address?;
            if let Some(v4) = address.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}
