//! The addressing checks every request passes before any backend sees it: exactly one `Host`
//! on HTTP/1.1, and only the metadata service's own names (the DNS-rebinding guard).
//!
//! A web page in a local browser can make its own domain resolve to 169.254.169.254 (or to a
//! loopback `--listen` address) and then read the answers as same-origin data: credentials
//! included. Such a request always carries the attacker's domain in `Host`, which no metadata
//! client ever sends. Real clients send an IP literal (`169.254.169.254`, `[fd00:ec2::254]`,
//! `127.0.0.1:8080`), or one of the names EC2 documents for the service.
//!
//! The checks live here once and [`crate::http::Server`] applies them to every request, for
//! the local service and before forwarding to an upstream alike: a forwarder that skipped them
//! would hand the upstream's credentials to the rebinding page.

use std::net::IpAddr;

use crate::log_limit::bounded;
use http::header::{self, HeaderValue};
use http::{Request, StatusCode, Version};

/// Host names that metadata clients legitimately use besides IP literals.
/// `metadata.google.internal` and `metadata` are the names GCE's clients use.
pub const ALLOWED_NAMES: &[&str] = &[
    "instance-data",
    "instance-data.ec2.internal",
    "localhost",
    "metadata.google.internal",
    "metadata",
];

/// Why a request's addressing is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An HTTP/1.1 request without `Host` (RFC 9112 section 3.2 requires a 400).
    MissingHost,
    /// More than one `Host`: which one a cache, a proxy or this guard would believe differs.
    DuplicateHost,
    /// A `Host` or absolute-form authority that does not name the metadata service.
    ForeignHost,
}

impl Refusal {
    /// The status it is answered with: 400 for a missing or repeated `Host`, 403 for a
    /// foreign one.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::MissingHost | Refusal::DuplicateHost => StatusCode::BAD_REQUEST,
            Refusal::ForeignHost => StatusCode::FORBIDDEN,
        }
    }
}

/// Checks how `request` names its target; `Err` says why it must not be answered.
pub fn check<B>(request: &Request<B>) -> Result<(), Refusal> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::DuplicateHost);
    }
    // HTTP/1.0 predates Host; such a client cannot be a browser's page, so it is served.
    if host.is_none() && request.version() >= Version::HTTP_11 {
        return Err(Refusal::MissingHost);
    }
    let host = host.map(HeaderValue::as_bytes);
    // An absolute-form target (`GET http://name/...`) names the host too; both must pass.
    let authority = request.uri().authority().map(|a| a.as_str().as_bytes());
    if !host_is_allowed(host) || authority.is_some_and(|a| !host_is_allowed(Some(a))) {
        crate::info_limited!(
            host = %bounded(host.unwrap_or_default()),
            authority = %bounded(authority.unwrap_or_default()),
            "refused a request for a foreign Host (DNS rebinding guard)"
        );
        return Err(Refusal::ForeignHost);
    }
    Ok(())
}

/// Whether a `Host` header (or absolute-form authority) names the metadata service. A request
/// without one passes here; [`check`] refuses it on HTTP/1.1.
pub fn host_is_allowed(host: Option<&[u8]>) -> bool {
    let Some(host) = host else {
        return true;
    };
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let name = strip_port(host.trim());
    // What nearly every client sends; spares parsing an address per request.
    if name == "169.254.169.254" {
        return true;
    }
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

    fn request(version: Version, target: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::get(target).version(version);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn http_1_1_without_host_is_a_bad_request_and_http_1_0_is_served() {
        let path = "/latest/meta-data/instance-id";
        assert_eq!(
            check(&request(Version::HTTP_11, path, &[])),
            Err(Refusal::MissingHost)
        );
        assert_eq!(Refusal::MissingHost.status(), StatusCode::BAD_REQUEST);
        assert_eq!(check(&request(Version::HTTP_10, path, &[])), Ok(()));
        assert_eq!(
            check(&request(Version::HTTP_11, path, &["169.254.169.254"])),
            Ok(())
        );
    }

    #[test]
    fn two_hosts_a_foreign_host_or_a_foreign_absolute_authority_are_refused() {
        let path = "/latest/meta-data/instance-id";
        let duplicate = request(
            Version::HTTP_11,
            path,
            &["169.254.169.254", "169.254.169.254"],
        );
        assert_eq!(check(&duplicate), Err(Refusal::DuplicateHost));
        let foreign = request(Version::HTTP_11, path, &["attacker.example"]);
        assert_eq!(check(&foreign), Err(Refusal::ForeignHost));
        assert_eq!(Refusal::ForeignHost.status(), StatusCode::FORBIDDEN);
        let absolute = request(
            Version::HTTP_11,
            "http://attacker.example/latest/meta-data/",
            &["169.254.169.254"],
        );
        assert_eq!(check(&absolute), Err(Refusal::ForeignHost));
        let ours = request(
            Version::HTTP_11,
            "http://169.254.169.254/latest/meta-data/",
            &["169.254.169.254"],
        );
        assert_eq!(check(&ours), Ok(()));
    }
}
