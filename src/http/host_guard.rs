//! The DNS-rebinding guard: only requests addressed to the metadata service by an IP address or
//! one of its documented names are answered.
//!
//! A web page in a local browser can make its own domain resolve to 169.254.169.254 (or to a
//! loopback `--listen` address) and then read the answers as same-origin data: credentials
//! included. Such a request always carries the attacker's domain in `Host`, which no metadata
//! client ever sends. Real clients send an IP literal (`169.254.169.254`, `[fd00:ec2::254]`,
//! `127.0.0.1:8080`), or one of the names EC2 documents for the service.

use std::net::IpAddr;

/// Host names that metadata clients legitimately use besides IP literals.
pub const ALLOWED_NAMES: &[&str] = &["instance-data", "instance-data.ec2.internal", "localhost"];

/// Whether a request's `Host` header names the metadata service. A request without one
/// (HTTP/1.0) cannot be a browser's, so it passes.
pub fn host_is_allowed(host: Option<&[u8]>) -> bool {
    let Some(host) = host else {
        return true;
    };
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let name = strip_port(host.trim());
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    ALLOWED_NAMES
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(name))
}

/// `host[:port]` or `[v6][:port]` → the host part (brackets removed).
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // An unclosed bracket is malformed: return nothing that could pass.
        return rest.split_once(']').map_or("", |(inside, _)| inside);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(host: &str) -> bool {
        host_is_allowed(Some(host.as_bytes()))
    }

    #[test]
    fn ip_literals_and_documented_names_are_allowed() {
        for host in [
            "169.254.169.254",
            "169.254.169.254:80",
            "[fd00:ec2::254]",
            "[fd00:ec2::254]:80",
            "127.0.0.1:8080",
            "instance-data",
            "INSTANCE-DATA.ec2.internal.",
            "localhost:8080",
        ] {
            assert!(allowed(host), "{host}");
        }
    }

    #[test]
    fn a_rebound_domain_is_refused() {
        for host in [
            "attacker.example",
            "attacker.example:80",
            "169.254.169.254.nip.io",
            "instance-data.attacker.example",
            "",
            "[::1",
        ] {
            assert!(!allowed(host), "{host}");
        }
        assert!(!host_is_allowed(Some(b"\xff\xfe")));
    }

    #[test]
    fn a_request_without_host_is_allowed() {
        assert!(host_is_allowed(None));
    }
}
