//! What `--check` asks the operating system before a start: can this process create the TUN
//! device? (How to release the metadata address from whatever holds it is `super::claim`'s.) Each
//! answer comes in the platform's own words (Linux: `/dev/net/tun` and CAP_NET_ADMIN; macOS:
//! the utun kernel control and root), so the doctor reads the same on every system.
//!
//! Every probe only looks: opening `/dev/net/tun` or the utun control socket creates no
//! device (Linux's `TUNSETIFF` and macOS's `connect` would, and neither is called here).

/// One probe's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// A start can create the device here (the doctor's `ok`).
    Ready,
    /// A start would fail here; the probe's advice says what to change (the doctor's `fail`).
    NotReady,
    /// The probe could not tell; a start will find out.
    Unknown,
}

/// One line of the doctor's report about the TUN side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// What was probed, the report's label: `tun device` (`utun control` on macOS) or
    /// `privileges`.
    pub check: &'static str,
    /// Whether a start would get past this point.
    pub readiness: Readiness,
    /// What was found, in a sentence ("/dev/net/tun is missing", "root with CAP_NET_ADMIN in
    /// the effective set").
    pub finding: String,
    /// What to do about it; empty when nothing.
    pub advice: String,
}

impl Probe {
    fn new(
        check: &'static str,
        readiness: Readiness,
        finding: impl Into<String>,
        advice: impl Into<String>,
    ) -> Self {
        Probe {
            check,
            readiness,
            finding: finding.into(),
            advice: advice.into(),
        }
    }
}

/// The probes of the TUN side, in the order the doctor prints them: the device, then the
/// privileges that creating one needs.
pub fn tun_probes() -> Vec<Probe> {
    let euid = nix::unistd::geteuid().as_raw();
    vec![os::device_probe(), os::privilege_probe(euid)]
}

fn who(euid: u32) -> String {
    if euid == 0 {
        "root".to_owned()
    } else {
        format!("uid {euid}")
    }
}

#[cfg(target_os = "linux")]
mod os {
    use super::{Probe, Readiness, who};
    use crate::platform::capabilities::{CAP_NET_ADMIN_BIT, effective_mask};

    const DEVICE: &str = "tun device";
    const PRIVILEGES: &str = "privileges";

    /// `/dev/net/tun` exists and opens read-write.
    pub(super) fn device_probe() -> Probe {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
        {
            Ok(_) => Probe::new(
                DEVICE,
                Readiness::Ready,
                "/dev/net/tun is present and opens read-write",
                "",
            ),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Probe::new(
                DEVICE,
                Readiness::NotReady,
                "/dev/net/tun is missing",
                "load the driver with `sudo modprobe tun`; in a container pass the device \
                 (`docker run --device /dev/net/tun --cap-add NET_ADMIN ...`)",
            ),
            Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => Probe::new(
                DEVICE,
                Readiness::NotReady,
                "/dev/net/tun exists but this user cannot open it",
                "run as root, or make it mode 0666 as Debian and Ubuntu ship it \
                 (`sudo chmod 0666 /dev/net/tun`)",
            ),
            Err(error) => Probe::new(
                DEVICE,
                Readiness::NotReady,
                format!("/dev/net/tun cannot be opened: {error}"),
                "check that the TUN driver works (`sudo modprobe tun`)",
            ),
        }
    }

    /// Root with CAP_NET_ADMIN, or any user holding CAP_NET_ADMIN in its effective set.
    pub(super) fn privilege_probe(euid: u32) -> Probe {
        privileges_from(euid, effective_mask())
    }

    pub(super) fn privileges_from(euid: u32, effective: Option<u64>) -> Probe {
        let who = who(euid);
        match effective {
            Some(caps) if caps & (1 << CAP_NET_ADMIN_BIT) != 0 => Probe::new(
                PRIVILEGES,
                Readiness::Ready,
                format!("{who} with CAP_NET_ADMIN in the effective set"),
                "",
            ),
            Some(_) => Probe::new(
                PRIVILEGES,
                Readiness::NotReady,
                format!("{who} without CAP_NET_ADMIN, which creating a TUN device needs"),
                "run `sudo imds-tun`, or grant only that capability (systemd: \
                 AmbientCapabilities=CAP_NET_ADMIN, see packaging/imds-tun.service), or serve \
                 without a TUN: `imds-tun --no-tun --listen 127.0.0.1:8080`",
            ),
            None => Probe::new(
                PRIVILEGES,
                Readiness::Unknown,
                format!("{who}; cannot read CapEff from /proc/self/status"),
                "make sure the process has CAP_NET_ADMIN",
            ),
        }
    }
}

#[cfg(target_os = "macos")]
mod os {
    use super::{Probe, Readiness, who};
    use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, SysControlAddr};
    use std::os::fd::AsRawFd;

    const DEVICE: &str = "utun control";
    const PRIVILEGES: &str = "privileges";

    /// The kernel control that creates utun devices (XNU `net/if_utun.c`, `UTUN_CONTROL_NAME`).
    const UTUN_CONTROL: &str = "com.apple.net.utun_control";

    /// The utun kernel control is registered: a control socket opens and the control's id
    /// resolves (`CTLIOCGINFO`). Neither needs root; `connect`, which would create a utun, is
    /// not called.
    pub(super) fn device_probe() -> Probe {
        let resolved = nix::sys::socket::socket(
            AddressFamily::System,
            SockType::Datagram,
            SockFlag::empty(),
            SockProtocol::KextControl,
        )
        .and_then(|socket| SysControlAddr::from_name(socket.as_raw_fd(), UTUN_CONTROL, 0));
        match resolved {
            Ok(_) => Probe::new(
                DEVICE,
                Readiness::Ready,
                format!("the {UTUN_CONTROL} kernel control is available"),
                "",
            ),
            Err(error) => Probe::new(
                DEVICE,
                Readiness::NotReady,
                format!("the {UTUN_CONTROL} kernel control cannot be resolved: {error}"),
                "utun is part of every macOS since 10.7; run `sudo imds-tun` on the Mac itself, \
                 not in a sandbox or container",
            ),
        }
    }

    /// Connecting the utun control needs root (the control is registered privileged).
    pub(super) fn privilege_probe(euid: u32) -> Probe {
        if euid == 0 {
            Probe::new(PRIVILEGES, Readiness::Ready, "root", "")
        } else {
            Probe::new(
                PRIVILEGES,
                Readiness::NotReady,
                format!("{}, but creating a utun device needs root", who(euid)),
                "run `sudo imds-tun`, or serve without a TUN: \
                 `imds-tun --no-tun --listen 127.0.0.1:8080`",
            )
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod os {
    use super::{Probe, Readiness};

    pub(super) fn device_probe() -> Probe {
        Probe::new(
            "tun device",
            Readiness::NotReady,
            "imds-tun cannot create a TUN device on this operating system yet",
            "serve without a TUN: `imds-tun --no-tun --listen 127.0.0.1:8080`",
        )
    }

    pub(super) fn privilege_probe(_euid: u32) -> Probe {
        Probe::new("privileges", Readiness::Unknown, "not checked", "")
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn without_cap_net_admin_privileges_are_not_ready_and_say_what_to_do() {
        let probe = os::privileges_from(1000, Some(0));
        assert_eq!(probe.readiness, Readiness::NotReady);
        assert!(probe.finding.starts_with("uid 1000 without CAP_NET_ADMIN"));
        assert!(probe.advice.contains("sudo imds-tun"));
        let probe = os::privileges_from(0, Some(1 << 12));
        assert_eq!(probe.readiness, Readiness::Ready);
        assert_eq!(
            probe.finding,
            "root with CAP_NET_ADMIN in the effective set"
        );
        let probe = os::privileges_from(0, None);
        assert_eq!(probe.readiness, Readiness::Unknown);
    }
}
