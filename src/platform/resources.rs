//! What the process may hold, and how a kernel socket finds out its peer is gone: the
//! open-file limit and TCP keep-alive, in each OS's words.
//!
//! Descriptors: imds-tun serves every local user, and each connection to a `--listen` socket
//! is a descriptor. systemd and most shells start a process with a soft limit of 1024 (the hard
//! limit is far higher), which a local user could exhaust; then everything else that opens a
//! descriptor fails at once (a token command, the control socket, `/proc`). So
//! [`raise_descriptor_limit`] raises the soft limit to the hard one at start, bounded, and the
//! runtime keeps the `--listen` connection limit below what the limit leaves
//! ([`descriptor_limit`]).
//!
//! Keep-alive: a client that leaves sends a FIN or a RST, which `crate::http` notices while an
//! answer is pending; one whose host or network namespace vanished sends nothing, and its
//! connection would wait for the answer (up to minutes). Probing an accepted connection
//! ([`probe_quiet_peer`]) turns such a silence into an error on the socket within seconds.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

/// The most descriptors asked for: far more than the connection limits need, few enough that a
/// helper which walks its whole descriptor table (some close every descriptor up to the limit
/// before `exec`) stays quick. macOS refuses more than `OPEN_MAX` (10240) for a process.
#[cfg(not(target_os = "macos"))]
pub const MAX_DESCRIPTORS: u64 = 65_536;
/// The most descriptors asked for (macOS refuses more than `OPEN_MAX` for a process).
#[cfg(target_os = "macos")]
pub const MAX_DESCRIPTORS: u64 = 10_240;

/// The open-file limit before and after [`raise_descriptor_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorLimit {
    /// The soft limit the process was started with.
    pub was: u64,
    /// The soft limit now.
    pub now: u64,
}

/// Raises the soft open-file limit to the hard limit, at most [`MAX_DESCRIPTORS`] (never
/// lowers it). `Err` if the limit cannot be read or raised (a seccomp filter such as the unit's
/// `SystemCallFilter=~@resources`); the process then runs with what it has.
pub fn raise_descriptor_limit() -> io::Result<DescriptorLimit> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    let wanted = hard.min(MAX_DESCRIPTORS);
    if wanted <= soft {
        return Ok(DescriptorLimit {
            was: soft,
            now: soft,
        });
    }
    setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).map_err(io::Error::from)?;
    Ok(DescriptorLimit {
        was: soft,
        now: wanted,
    })
}

/// The soft open-file limit now, `None` if it cannot be read or is unlimited.
pub fn descriptor_limit() -> Option<u64> {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
        .filter(|soft| *soft != RLIM_INFINITY)
}

/// After `quiet` without a packet from the peer, probe it every `interval`, and give the
/// connection up (the socket reports `ETIMEDOUT`) after `probes` unanswered probes.
pub fn probe_quiet_peer(
    socket: &impl AsFd,
    quiet: Duration,
    interval: Duration,
    probes: u32,
) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    let seconds = |duration: Duration| u32::try_from(duration.as_secs().max(1)).unwrap_or(u32::MAX);
    setsockopt(socket, sockopt::KeepAlive, &true)?;
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    setsockopt(socket, sockopt::TcpKeepIdle, &seconds(quiet))?;
    #[cfg(target_os = "macos")]
    setsockopt(socket, sockopt::TcpKeepAlive, &seconds(quiet))?;
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "macos"
    )))]
    let _ = quiet;
    setsockopt(socket, sockopt::TcpKeepInterval, &seconds(interval))?;
    setsockopt(socket, sockopt::TcpKeepCount, &probes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one_within_the_bound() {
        let limit = raise_descriptor_limit().expect("getrlimit and setrlimit work here");
        assert!(limit.now >= limit.was);
        assert!(limit.now <= MAX_DESCRIPTORS.max(limit.was));
        assert_eq!(descriptor_limit(), Some(limit.now));
        // Idempotent: a second call finds nothing to raise.
        let again = raise_descriptor_limit().expect("second call");
        assert_eq!(again.was, again.now);
    }

    #[test]
    fn keep_alive_probes_can_be_set_on_an_accepted_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let _client =
            std::net::TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        probe_quiet_peer(&accepted, Duration::from_secs(2), Duration::from_secs(1), 2)
            .expect("setsockopt");
        assert!(
            nix::sys::socket::getsockopt(&accepted, nix::sys::socket::sockopt::KeepAlive)
                .expect("getsockopt")
        );
    }
}
