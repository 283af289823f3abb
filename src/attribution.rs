//! Who is asking: the process, user, container or address behind a connection. One service
//! answers three questions, at three prices:
//! - which `--caller-role` rule applies, before the answer ([`Attribution::classify`], then
//!   [`Attribution::find_cgroup`] where a `cgroup:` rule needs it): kernel questions, and only
//!   for a `cgroup:` rule a bounded walk of `/proc` or the cgroup tree;
//! - the log line every credentials read leaves (`pid 4242 (python3) uid 1000 read role
//!   credentials app`), written after the answer ([`Attribution::complete`]: a bounded `/proc`
//!   scan for the process, never delaying anybody's answer);
//! - the stack's connection limit, shared fairly among callers, gets only the key a connection
//!   is charged to, a [`Caller`] ([`Attribution::caller`]): one kernel question.
//!
//! **Local or forwarded.** A connection is local when this network namespace holds its client
//! socket: the kernel names the socket's state, owner, inode and cgroup (`NETLINK_SOCK_DIAG`,
//! Linux). That is decided by the socket, not by the source address: a local user may bind any
//! address of this host (`curl --interface 172.17.0.1`) and is still that user. A connection
//! from an address that is not this namespace's own (`RTM_GETROUTE` answers `local` for every
//! address of every interface, asked per connection so a changed address is seen as it is)
//! came from another namespace or host: only such a caller is matched by `cidr:`. What cannot
//! be told (a socket the kernel reports only as a leftover, TIME-WAIT; the container behind an
//! address of ours that no socket holds, Docker's masquerade; a cgroup a bounded scan could not
//! find) is said as such ([`Origin`], [`Cgroup`]), and a rule that could have matched it
//! refuses rather than falls through to the instance's role.
//!
//! This module knows nothing of the HTTP layer or the stack: it sits below both and imports
//! only `platform` and `log_limit`. Its `/proc` and cgroup reading is in `procfs`, the fair
//! lookup slots in [`slots`].

#[cfg(target_os = "linux")]
mod procfs;
pub mod slots;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub use slots::{LookupSlots, MAX_LOOKUPS, Slot};

/// The most time one scan of `/proc` for a local caller's process spends.
pub const SCAN_BUDGET: Duration = Duration::from_millis(50);

/// The most time one search for a caller's cgroup spends (a forwarded caller's container: a
/// scan of every process's network namespace; a local caller's: the cgroup tree under the
/// rules' prefixes, or its process); past it the answer is "undecided".
pub const CGROUP_BUDGET: Duration = Duration::from_millis(500);

/// Where a connection comes from, as far as it can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A socket of this network namespace, whose owner the kernel named.
    Local,
    /// From another network namespace or host: its source address is its own.
    Forwarded,
    /// An address of this namespace that no socket here holds: traffic translated on its way
    /// in (Docker's masquerade), so its real source is unknown.
    Translated,
    /// An address of this namespace whose socket could not be told (it was closing, TIME-WAIT
    /// or orphaned, or the kernel could not be asked): the reason.
    Unidentified(&'static str),
}

/// A caller's cgroup, as far as it was looked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Cgroup {
    /// Not looked for (no rule needs it, or not yet).
    #[default]
    NotAsked,
    /// The unified cgroup path (`0::PATH` in `/proc/PID/cgroup`), e.g. a container's.
    Found(String),
    /// Known to be under no prefix a rule names (a forwarded caller: no container of this host
    /// owns its address).
    Outside,
    /// Could not be told, and why: a rule that could have matched refuses.
    Undecided(&'static str),
}

/// What is known about a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// The source address of the connection.
    pub address: Option<IpAddr>,
    /// Whether the connection came from this namespace, and how sure that is.
    pub origin: Origin,
    /// The owner of the client socket, for a local caller.
    pub uid: Option<u32>,
    /// The client socket's inode, for a local caller: how its process is found.
    pub inode: Option<u32>,
    /// The cgroup v2 id of the client socket, where the kernel reports it.
    pub cgroup_id: Option<u64>,
    /// The process holding the client socket, if found in time.
    pub pid: Option<u32>,
    /// `/proc/PID/comm`: the command name, at most 15 bytes.
    pub command: Option<String>,
    /// `/proc/PID/exe`, where this process may read it (root, or the caller's own user).
    pub exe: Option<String>,
    /// The caller's cgroup: a local caller's own, a forwarded caller's container's.
    pub cgroup: Cgroup,
}

impl Default for CallerIdentity {
    fn default() -> Self {
        CallerIdentity {
            address: None,
            origin: Origin::Unidentified("not looked up"),
            uid: None,
            inode: None,
            cgroup_id: None,
            pid: None,
            command: None,
            exe: None,
            cgroup: Cgroup::NotAsked,
        }
    }
}

impl CallerIdentity {
    /// The key this caller's lookups and connections are charged to.
    pub fn key(&self) -> Caller {
        match (self.origin, self.uid, self.address) {
            (Origin::Local, Some(uid), _) => Caller::User(uid),
            (_, _, Some(address)) => Caller::Address(address),
            _ => Caller::Address(IpAddr::from([0, 0, 0, 0])),
        }
    }
}

impl fmt::Display for CallerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(pid) = self.pid {
            let command = self.command.as_deref().unwrap_or("?");
            parts.push(format!(
                "pid {pid} ({})",
                crate::log_limit::bounded(command.as_bytes())
            ));
        }
        if let Some(uid) = self.uid {
            parts.push(format!("uid {uid}"));
        }
        if parts.is_empty() {
            match self.address {
                Some(address) => parts.push(address.to_string()),
                None => parts.push("an unknown caller".into()),
            }
            // A forwarded caller found in a local network namespace: its container.
            if let Cgroup::Found(cgroup) = &self.cgroup {
                parts.push(format!(
                    "(cgroup {})",
                    crate::log_limit::bounded(cgroup.as_bytes())
                ));
            }
        }
        f.write_str(&parts.join(" "))
    }
}

/// Who a connection is charged to where one limit is shared among callers (the stack's
/// connection limit, the lookup slots): the user owning a local caller's socket, else the
/// source address. Every local process reaches the TUN from the same address, so an address
/// alone cannot tell one user's flood from another user's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A local process of this user.
    User(u32),
    /// Anything arriving from this source address whose owner is not known.
    Address(IpAddr),
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::User(uid) => write!(f, "uid {uid}"),
            Caller::Address(address) => write!(f, "{address}"),
        }
    }
}

/// The kernel sockets the questions go through, opened in the network namespace whose callers
/// are told apart (Linux; elsewhere nothing).
#[derive(Debug)]
pub struct KernelSockets(#[cfg(target_os = "linux")] Kernel);

impl KernelSockets {
    /// Opened in this process's network namespace; a socket the kernel refuses is left out,
    /// and its questions are then answered "unknown".
    pub fn here() -> KernelSockets {
        KernelSockets(
            #[cfg(target_os = "linux")]
            Kernel {
                owners: crate::platform::netlink::SocketOwners::open().ok(),
                addresses: crate::platform::netlink::LocalAddresses::open().ok(),
            },
        )
    }

    /// A `NETLINK_ROUTE` and a `NETLINK_SOCK_DIAG` socket opened in another network namespace.
    #[cfg(target_os = "linux")]
    pub fn adopt(route: std::os::fd::OwnedFd, sock_diag: std::os::fd::OwnedFd) -> KernelSockets {
        KernelSockets(Kernel {
            owners: crate::platform::netlink::SocketOwners::adopt(sock_diag).ok(),
            addresses: crate::platform::netlink::LocalAddresses::adopt(route).ok(),
        })
    }
}

/// The kernel's sockets for the questions, each asked under one lock (Linux).
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct Kernel {
    owners: Option<crate::platform::netlink::SocketOwners>,
    addresses: Option<crate::platform::netlink::LocalAddresses>,
}

/// What the kernel said about a client socket (only Linux's kernel is asked).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
enum Socket {
    /// A live socket of a process, with its owner.
    Live {
        uid: u32,
        inode: u32,
        cgroup_id: Option<u64>,
    },
    /// A socket no process holds or whose owner reads as root though it is not (TIME-WAIT,
    /// SYN-RECV, orphaned): why.
    Leftover(&'static str),
    /// No such socket in this namespace.
    None,
    /// The kernel could not be asked.
    Unknown,
}

/// Identifies callers; one per process, shared by every connection.
pub struct Attribution {
    /// One audit line per caller per interval.
    pub audit: AuditLimit,
    /// Lookups running at once, shared fairly among callers: a flood of new connections from
    /// one caller queues behind its own lookups instead of everybody's.
    pub lookups: LookupSlots,
    #[cfg(target_os = "linux")]
    kernel: Option<std::sync::Mutex<Kernel>>,
    #[cfg(target_os = "linux")]
    proc: procfs::ProcView,
    /// Source addresses that are ours without asking: our side of the TUN's links.
    local_sources: Vec<IpAddr>,
    /// The prefixes of the `cgroup:` rules: a caller's cgroup is looked for only under them.
    cgroup_prefixes: Vec<String>,
}

impl fmt::Debug for Attribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attribution")
            .field("local_sources", &self.local_sources)
            .field("cgroup_prefixes", &self.cgroup_prefixes)
            .finish_non_exhaustive()
    }
}

impl Attribution {
    /// Opens what the lookups need now, while this process may still open anything;
    /// `local_sources` are the addresses local processes connect from through the TUN
    /// (loopback and every address of this namespace count too); `cgroup_prefixes` those of
    /// the `cgroup:` rules.
    pub fn open(local_sources: Vec<IpAddr>, cgroup_prefixes: Vec<String>) -> Attribution {
        Attribution::open_in(KernelSockets::here(), local_sources, cgroup_prefixes)
    }

    /// As [`Attribution::open`], asking the kernel through `kernel`: the sockets of the network
    /// namespace whose callers are served (`imds-tun exec`'s, opened inside it).
    pub fn open_in(
        kernel: KernelSockets,
        local_sources: Vec<IpAddr>,
        cgroup_prefixes: Vec<String>,
    ) -> Attribution {
        #[cfg(target_os = "linux")]
        let kernel = kernel.0;
        #[cfg(not(target_os = "linux"))]
        let _ = kernel;
        Attribution {
            audit: AuditLimit::default(),
            lookups: LookupSlots::default(),
            #[cfg(target_os = "linux")]
            kernel: Some(std::sync::Mutex::new(kernel)),
            #[cfg(target_os = "linux")]
            proc: procfs::ProcView::read(),
            local_sources,
            cgroup_prefixes,
        }
    }

    /// Knows callers by their source address only and never asks the kernel (tests, fuzzing).
    pub fn addresses_only() -> Attribution {
        Attribution {
            audit: AuditLimit::default(),
            lookups: LookupSlots::default(),
            #[cfg(target_os = "linux")]
            kernel: None,
            #[cfg(target_os = "linux")]
            proc: procfs::ProcView::default(),
            local_sources: Vec::new(),
            cgroup_prefixes: Vec::new(),
        }
    }

    /// Whether local callers can be told apart by the owner of their socket (false where the
    /// kernel cannot be asked: no `NETLINK_SOCK_DIAG`, or not Linux).
    #[cfg(target_os = "linux")]
    pub fn knows_socket_owners(&self) -> bool {
        self.kernel.as_ref().is_some_and(|kernel| {
            kernel
                .lock()
                .is_ok_and(|kernel| kernel.owners.is_some() && kernel.addresses.is_some())
        })
    }

    /// Whether local callers can be told apart by the owner of their socket: not here.
    #[cfg(not(target_os = "linux"))]
    pub fn knows_socket_owners(&self) -> bool {
        false
    }

    /// Why a `cgroup:` rule may not see every caller here (`/proc` mounted with `hidepid`:
    /// once this process is not root), for a warning at start.
    pub fn cgroup_blind_spot(&self) -> Option<&'static str> {
        #[cfg(target_os = "linux")]
        {
            self.proc.hides_processes().then_some(
                "/proc is mounted with hidepid, so without root other users' processes cannot be seen",
            )
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }

    /// Whether a `cgroup:` rule needs callers' cgroups.
    pub fn wants_cgroups(&self) -> bool {
        !self.cgroup_prefixes.is_empty()
    }

    /// The caller behind the connection from `client` to our `server` endpoint, as
    /// [`Attribution::classify`], [`Attribution::find_cgroup`] and [`Attribution::complete`]
    /// find it one after the other.
    pub fn identify(&self, client: SocketAddr, server: Option<SocketAddr>) -> CallerIdentity {
        let mut identity = self.classify(client, server);
        self.find_cgroup(&mut identity);
        self.complete(&mut identity);
        identity
    }

    /// Where the connection from `client` to our `server` endpoint comes from and, for a local
    /// caller, its owner: kernel questions only (microseconds, blocking).
    pub fn classify(&self, client: SocketAddr, server: Option<SocketAddr>) -> CallerIdentity {
        let mut identity = CallerIdentity {
            address: Some(client.ip()),
            ..CallerIdentity::default()
        };
        let socket = match server {
            Some(server) => self.socket(client, server, false),
            None => Socket::Unknown,
        };
        identity.origin = match socket {
            Socket::Live {
                uid,
                inode,
                cgroup_id,
            } => {
                identity.uid = Some(uid);
                identity.inode = Some(inode);
                identity.cgroup_id = cgroup_id;
                Origin::Local
            }
            Socket::Leftover(why) => Origin::Unidentified(why),
            Socket::None => match self.is_ours(client.ip()) {
                Some(true) => Origin::Translated,
                Some(false) => Origin::Forwarded,
                None => {
                    Origin::Unidentified("the kernel could not say whether the address is ours")
                }
            },
            Socket::Unknown => match self.is_ours(client.ip()) {
                Some(false) => Origin::Forwarded,
                _ => Origin::Unidentified("the kernel could not be asked who owns the socket"),
            },
        };
        identity
    }

    /// Looks for the caller's cgroup where a `cgroup:` rule needs it (bounded, blocking):
    /// a local caller's from its socket, a forwarded caller's container's.
    pub fn find_cgroup(&self, identity: &mut CallerIdentity) {
        if identity.cgroup != Cgroup::NotAsked || self.cgroup_prefixes.is_empty() {
            return;
        }
        identity.cgroup = self.cgroup_of(identity);
    }

    /// Adds what only the log line and the callers report need (bounded, blocking): a local
    /// caller's process (its command, executable and cgroup), a forwarded caller's container.
    pub fn complete(&self, identity: &mut CallerIdentity) {
        #[cfg(target_os = "linux")]
        {
            if identity.origin == Origin::Forwarded
                && identity.cgroup == Cgroup::NotAsked
                && let Some(address) = identity.address
            {
                identity.cgroup = self
                    .proc
                    .container_of(address, Instant::now() + CGROUP_BUDGET);
            }
            if let (Origin::Local, Some(inode), None) =
                (identity.origin, identity.inode, identity.pid)
                && let Some(pid) = procfs::process_holding(inode, Instant::now() + SCAN_BUDGET)
            {
                identity.pid = Some(pid);
                identity.command = procfs::read_small(&format!("/proc/{pid}/comm"))
                    .map(|comm| comm.trim().to_owned());
                identity.exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                    .ok()
                    .map(|exe| exe.to_string_lossy().into_owned());
                if identity.cgroup == Cgroup::NotAsked
                    && let Some(path) = procfs::read_small(&format!("/proc/{pid}/cgroup"))
                        .and_then(|text| unified_cgroup(&text))
                {
                    identity.cgroup = Cgroup::Found(path);
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = identity;
    }

    #[cfg(target_os = "linux")]
    fn cgroup_of(&self, identity: &CallerIdentity) -> Cgroup {
        match identity.origin {
            Origin::Forwarded => match identity.address {
                Some(address) => self
                    .proc
                    .container_of(address, Instant::now() + CGROUP_BUDGET),
                None => Cgroup::Undecided("the caller has no address"),
            },
            Origin::Local => {
                let deadline = Instant::now() + CGROUP_BUDGET;
                // The socket's own cgroup, unless it is the v2 root (a hybrid host keeps
                // processes in v1 hierarchies): then the process's, from /proc.
                let by_socket = identity
                    .cgroup_id
                    .map(|id| self.proc.cgroup_by_id(id, &self.cgroup_prefixes, deadline));
                match by_socket {
                    Some(Cgroup::Found(path)) if path == "/" => self.cgroup_of_process(identity),
                    Some(found) => found,
                    None => self.cgroup_of_process(identity),
                }
            }
            Origin::Translated => Cgroup::Undecided(
                "its address was translated (masqueraded) on the way in, so its container is unknown",
            ),
            Origin::Unidentified(why) => Cgroup::Undecided(why),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn cgroup_of(&self, _identity: &CallerIdentity) -> Cgroup {
        Cgroup::Undecided("cgroups are Linux's")
    }

    /// A local caller's cgroup from the process holding its socket.
    #[cfg(target_os = "linux")]
    fn cgroup_of_process(&self, identity: &CallerIdentity) -> Cgroup {
        let Some(inode) = identity.inode else {
            return Cgroup::Undecided("the caller's socket has no inode");
        };
        let Some(pid) = procfs::process_holding(inode, Instant::now() + CGROUP_BUDGET) else {
            return Cgroup::Undecided(
                self.proc
                    .blind_reason()
                    .unwrap_or("the process holding the caller's socket was not found in time"),
            );
        };
        match procfs::read_small(&format!("/proc/{pid}/cgroup"))
            .and_then(|text| unified_cgroup(&text))
        {
            Some(path) => Cgroup::Found(path),
            None => Cgroup::Undecided("the caller's process cgroup cannot be read"),
        }
    }

    /// Who the connection from `client` to our `server` endpoint is charged to: the owner of a
    /// client socket this namespace holds (one `sock_diag` question, blocking for
    /// microseconds; a handshake under way counts), else the source address.
    pub fn caller(&self, client: SocketAddr, server: SocketAddr) -> Caller {
        match self.socket(client, server, true) {
            Socket::Live { uid, .. } => Caller::User(uid),
            _ => Caller::Address(client.ip()),
        }
    }

    /// Whether `address` is one of this namespace's own; `None` when the kernel cannot say.
    fn is_ours(&self, address: IpAddr) -> Option<bool> {
        if address.is_loopback() || self.local_sources.contains(&address) {
            return Some(true);
        }
        #[cfg(target_os = "linux")]
        {
            // Without a kernel to ask (addresses only), every other address is someone else's.
            let Some(kernel) = self.kernel.as_ref() else {
                return Some(false);
            };
            let mut kernel = kernel.lock().ok()?;
            kernel.addresses.as_mut()?.contains(address).ok()
        }
        #[cfg(not(target_os = "linux"))]
        {
            Some(false)
        }
    }

    /// The client socket of the connection from `client` to `server`, asked of the kernel
    /// (Linux). `handshake`: a socket still in SYN-SENT counts (the stack asks about SYNs).
    #[cfg(target_os = "linux")]
    fn socket(&self, client: SocketAddr, server: SocketAddr, handshake: bool) -> Socket {
        use crate::platform::netlink::tcp_state;
        let Some(kernel) = &self.kernel else {
            return Socket::Unknown;
        };
        let answer = kernel.lock().ok().and_then(|mut kernel| {
            kernel
                .owners
                .as_mut()
                .map(|owners| owners.owner_of(client, server))
        });
        let owner = match answer {
            Some(Ok(Some(owner))) => owner,
            Some(Ok(None)) => return Socket::None,
            Some(Err(_)) | None => return Socket::Unknown,
        };
        let live = matches!(
            owner.state,
            tcp_state::ESTABLISHED
                | tcp_state::FIN_WAIT1
                | tcp_state::FIN_WAIT2
                | tcp_state::CLOSE_WAIT
                | tcp_state::LAST_ACK
                | tcp_state::CLOSING
        ) || (handshake && owner.state == tcp_state::SYN_SENT);
        if !live {
            return Socket::Leftover("its socket is closed or not yet open (TIME-WAIT, SYN-RECV)");
        }
        if owner.inode == 0 {
            return Socket::Leftover("its socket is no longer held by any process");
        }
        Socket::Live {
            uid: owner.uid,
            inode: owner.inode,
            cgroup_id: owner.cgroup_id,
        }
    }

    /// Elsewhere the kernel is not asked.
    #[cfg(not(target_os = "linux"))]
    fn socket(&self, _client: SocketAddr, _server: SocketAddr, _handshake: bool) -> Socket {
        Socket::Unknown
    }
}

/// The audit lines' rate limit: one line per caller per [`AuditLimit::INTERVAL`], so one
/// caller's repeated reads cannot push another caller's read out of the log, as a single
/// limit for all would. At most [`AuditLimit::CALLERS`] callers are remembered (the oldest
/// goes first), so a flood of addresses costs bounded memory.
#[derive(Debug, Default)]
pub struct AuditLimit {
    last: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
}

impl AuditLimit {
    /// The least time between two audit lines for one caller.
    pub const INTERVAL: Duration = Duration::from_secs(5);
    /// How many callers' last lines are remembered before the oldest is forgotten.
    pub const CALLERS: usize = 256;

    /// Whether `caller` (its log text) may have a line now.
    pub fn admit(&self, caller: &str, now: Instant) -> bool {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(previous) = last.get(caller)
            && now.duration_since(*previous) < Self::INTERVAL
        {
            return false;
        }
        if last.len() >= Self::CALLERS
            && !last.contains_key(caller)
            && let Some(oldest) = last
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(key, _)| key.clone())
        {
            last.remove(&oldest);
        }
        last.insert(caller.to_owned(), now);
        true
    }
}

/// A process's cgroup path from `/proc/PID/cgroup`: the unified (v2) one
/// (`0::/system.slice/docker-….scope`), or on a hybrid host whose v2 path is the root, the
/// first v1 hierarchy that places it somewhere else (`4:memory:/docker/…`).
pub fn unified_cgroup(text: &str) -> Option<String> {
    let unified = text.lines().find_map(|line| line.strip_prefix("0::"));
    if let Some(path) = unified.filter(|path| *path != "/") {
        return Some(path.to_owned());
    }
    text.lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .find(|path| *path != "/")
        .or(unified)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_reads_as_its_process_and_user_or_its_address() {
        let local = CallerIdentity {
            address: Some("169.254.169.253".parse().expect("ip")),
            uid: Some(1000),
            pid: Some(4242),
            command: Some("python3".into()),
            ..CallerIdentity::default()
        };
        assert_eq!(local.to_string(), "pid 4242 (python3) uid 1000");
        let forwarded = CallerIdentity {
            address: Some("172.17.0.2".parse().expect("ip")),
            ..CallerIdentity::default()
        };
        assert_eq!(forwarded.to_string(), "172.17.0.2");
        let hostile = CallerIdentity {
            pid: Some(1),
            command: Some("a\nforged line".into()),
            ..CallerIdentity::default()
        };
        assert!(!hostile.to_string().contains('\n'), "{hostile}");
    }

    #[test]
    fn each_caller_has_its_own_audit_line_limit() {
        let limit = AuditLimit::default();
        let start = Instant::now();
        assert!(limit.admit("uid 1000", start));
        assert!(!limit.admit("uid 1000", start + Duration::from_secs(1)));
        assert!(
            limit.admit("uid 1001", start + Duration::from_secs(1)),
            "another caller still logs"
        );
        assert!(limit.admit("uid 1000", start + Duration::from_secs(6)));
        for n in 0..AuditLimit::CALLERS + 10 {
            limit.admit(&format!("10.0.0.{n}"), start + Duration::from_secs(7));
        }
        assert!(limit.last.lock().expect("lock").len() <= AuditLimit::CALLERS);
    }

    #[test]
    fn a_forwarded_caller_reads_as_its_address_and_container() {
        let container = CallerIdentity {
            address: Some("172.17.0.2".parse().expect("ip")),
            cgroup: Cgroup::Found("/docker/abc".into()),
            ..CallerIdentity::default()
        };
        assert_eq!(container.to_string(), "172.17.0.2 (cgroup /docker/abc)");
    }

    #[test]
    fn the_unified_cgroup_line_is_found() {
        assert_eq!(
            unified_cgroup("0::/system.slice/docker-abc.scope\n").as_deref(),
            Some("/system.slice/docker-abc.scope")
        );
        assert_eq!(unified_cgroup("1:name=systemd:/x\n").as_deref(), Some("/x"));
        assert_eq!(
            unified_cgroup("4:memory:/docker/abc\n0::/\n").as_deref(),
            Some("/docker/abc"),
            "a hybrid host's v1 path when v2 is the root"
        );
        assert_eq!(unified_cgroup("0::/\n1:cpu:/\n").as_deref(), Some("/"));
    }

    #[test]
    fn a_caller_is_charged_by_address_unless_it_is_local_and_its_socket_owner_is_known() {
        let server: SocketAddr = "169.254.169.254:80".parse().expect("address");
        let forwarded: SocketAddr = "172.17.0.2:40000".parse().expect("address");
        let attribution =
            Attribution::open(vec!["169.254.169.253".parse().expect("ip")], Vec::new());
        assert_eq!(
            attribution.caller(forwarded, server),
            Caller::Address(forwarded.ip()),
            "not local: no kernel question"
        );
        // Local, but no such socket exists (it closed): the shared local address.
        let gone: SocketAddr = "169.254.169.253:1".parse().expect("address");
        assert_eq!(attribution.caller(gone, server), Caller::Address(gone.ip()));
        assert_eq!(
            Attribution::addresses_only().caller(gone, server),
            Caller::Address(gone.ip())
        );
        assert_eq!(Caller::User(1000).to_string(), "uid 1000");
        assert_eq!(Caller::Address(forwarded.ip()).to_string(), "172.17.0.2");
    }

    /// Item 20 of issue 23: a client that closes first leaves its socket in TIME-WAIT, which
    /// the kernel reports as uid 0 with inode 0: that is nobody, not root.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_socket_in_time_wait_is_unidentified_not_root_and_the_origin_follows_the_socket() {
        use std::io::Read;
        let attribution = Attribution::open(Vec::new(), Vec::new());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = listener.local_addr().expect("address");
        let client = std::net::TcpStream::connect(server).expect("connect");
        let (mut accepted, _) = listener.accept().expect("accept");
        let client_end = client.local_addr().expect("local");
        let live = attribution.classify(client_end, Some(server));
        assert_eq!(live.origin, Origin::Local);
        assert_eq!(live.uid, Some(nix::unistd::geteuid().as_raw()));
        // The client closes first, then the server: the client's end waits in TIME-WAIT.
        drop(client);
        let mut rest = Vec::new();
        accepted.read_to_end(&mut rest).expect("read to the end");
        drop(accepted);
        std::thread::sleep(Duration::from_millis(50));
        let closed = attribution.classify(client_end, Some(server));
        assert!(
            matches!(closed.origin, Origin::Unidentified(_)),
            "{closed:?}"
        );
        assert_eq!(closed.uid, None);
        assert_eq!(
            attribution.caller(client_end, server),
            Caller::Address(client_end.ip())
        );
        // No socket: an address of ours was translated on the way in; another is forwarded.
        let gone: SocketAddr = "127.0.0.1:1".parse().expect("address");
        assert_eq!(
            attribution.classify(gone, Some(server)).origin,
            Origin::Translated
        );
        let elsewhere: SocketAddr = "192.0.2.9:40000".parse().expect("address");
        assert_eq!(
            attribution.classify(elsewhere, Some(server)).origin,
            Origin::Forwarded
        );
    }

    /// Both families, as the stack asks at its connection limit: the owner of a loopback client
    /// socket (loopback always counts as local) is this process's user.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_local_callers_socket_owner_is_its_caller_over_ipv4_and_ipv6() {
        let attribution = Attribution::open(Vec::new(), Vec::new());
        let me = Caller::User(nix::unistd::geteuid().as_raw());
        for listen in ["127.0.0.1:0", "[::1]:0"] {
            // A kernel without IPv6 has no ::1.
            let Ok(listener) = std::net::TcpListener::bind(listen) else {
                continue;
            };
            let server = listener.local_addr().expect("address");
            let client = std::net::TcpStream::connect(server).expect("connect");
            let client = client.local_addr().expect("local");
            assert_eq!(attribution.caller(client, server), me, "{listen}");
            assert_eq!(
                Attribution::addresses_only().caller(client, server),
                Caller::Address(client.ip())
            );
        }
    }
}
