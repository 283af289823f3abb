//! Who is asking: the process, user or address behind a connection. One service answers two
//! questions, at two prices:
//! - the log line every credentials read leaves (`pid 4242 (python3) uid 1000 read role
//!   credentials app`) gets the whole [`CallerIdentity`] ([`Attribution::identify`]);
//! - the stack's connection limit, shared fairly among callers, gets only the key a connection
//!   is charged to, a [`Caller`] ([`Attribution::caller`]): one kernel question, no `/proc` scan.
//!
//! A local caller (its packets come from this host: our side of a point-to-point link, IPv4 or
//! IPv6, or loopback for `--listen`) is found by its socket: the kernel names the socket's owner
//! and inode (`NETLINK_SOCK_DIAG`, Linux), and the process holding that inode is found in `/proc`,
//! best effort: at most [`SCAN_BUDGET`] of scanning, and only processes whose `/proc/PID/fd` this
//! process may read (after the privilege drop, the served user's own; as root, all). A caller
//! from elsewhere (a container on a bridge, a guest) is its source address.
//!
//! The audit line asks once per connection, when its first credentials read is answered (the
//! connection and the caller are both still there then), never per request; the stack asks only
//! when its table is full, from its runtime and outside its lock (`stack::runtime`). This module
//! knows nothing of either: it sits below both and imports only `platform` and `log_limit`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The most time one lookup spends scanning `/proc` for the socket's process.
pub const SCAN_BUDGET: Duration = Duration::from_millis(50);

/// Caller lookups that may run at once.
pub const MAX_LOOKUPS: usize = 4;

/// What is known about a caller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallerIdentity {
    /// The source address of the connection.
    pub address: Option<IpAddr>,
    /// The owner of the client socket, for a local caller.
    pub uid: Option<u32>,
    /// The process holding the client socket, if found in time.
    pub pid: Option<u32>,
    /// `/proc/PID/comm`: the command name, at most 15 bytes.
    pub command: Option<String>,
    /// The unified cgroup path (`/proc/PID/cgroup`, `0::PATH`), e.g. a container's.
    pub cgroup: Option<String>,
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
            if let Some(cgroup) = &self.cgroup {
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
/// connection limit): the user owning a local caller's socket, else the source address. Every
/// local process reaches the TUN from the same address, so an address alone cannot tell one
/// user's flood from another user's request.
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

/// Identifies callers; one per process, shared by every connection.
pub struct Attribution {
    /// One audit line per caller per interval.
    pub audit: AuditLimit,
    /// Lookups running at once (each up to [`SCAN_BUDGET`] of blocking work): a flood of new
    /// connections queues here instead of filling the blocking thread pool.
    pub lookups: tokio::sync::Semaphore,
    #[cfg(target_os = "linux")]
    owners: Option<std::sync::Mutex<crate::platform::netlink::SocketOwners>>,
    /// Source addresses that mean "a process on this host".
    local_sources: Vec<IpAddr>,
}

impl fmt::Debug for Attribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attribution")
            .field("local_sources", &self.local_sources)
            .finish_non_exhaustive()
    }
}

impl Attribution {
    /// Opens what the lookups need now, while this process may still open anything;
    /// `local_sources` are the addresses local processes connect from (loopback always counts).
    pub fn open(local_sources: Vec<IpAddr>) -> Attribution {
        Attribution {
            audit: AuditLimit::default(),
            lookups: tokio::sync::Semaphore::new(MAX_LOOKUPS),
            #[cfg(target_os = "linux")]
            owners: crate::platform::netlink::SocketOwners::open()
                .ok()
                .map(std::sync::Mutex::new),
            local_sources,
        }
    }

    /// Knows callers by their source address only and never asks the kernel (tests, fuzzing).
    pub fn addresses_only() -> Attribution {
        Attribution {
            audit: AuditLimit::default(),
            lookups: tokio::sync::Semaphore::new(MAX_LOOKUPS),
            #[cfg(target_os = "linux")]
            owners: None,
            local_sources: Vec::new(),
        }
    }

    /// Whether local callers can be told apart by the owner of their socket (false where the
    /// kernel cannot be asked: no `NETLINK_SOCK_DIAG`, or not Linux).
    #[cfg(target_os = "linux")]
    pub fn knows_socket_owners(&self) -> bool {
        self.owners.is_some()
    }

    /// Whether local callers can be told apart by the owner of their socket: not here.
    #[cfg(not(target_os = "linux"))]
    pub fn knows_socket_owners(&self) -> bool {
        false
    }

    /// The caller behind the connection from `client` to our `server` endpoint.
    pub fn identify(&self, client: SocketAddr, server: Option<SocketAddr>) -> CallerIdentity {
        let identity = CallerIdentity {
            address: Some(client.ip()),
            ..CallerIdentity::default()
        };
        if !self.is_local(client.ip()) {
            return forwarded_details(identity, client.ip());
        }
        self.local_details(identity, client, server)
    }

    /// Who the connection from `client` to our `server` endpoint is charged to: the owner of a
    /// local caller's socket (one `sock_diag` question, blocking for microseconds), else the
    /// source address (no question at all). Either family: with `--ipv6` local processes also
    /// connect from `fd00:ec2::253`.
    pub fn caller(&self, client: SocketAddr, server: SocketAddr) -> Caller {
        let by_address = Caller::Address(client.ip());
        if !self.is_local(client.ip()) {
            return by_address;
        }
        // Closed already, or not ours to see: charged to the shared local address.
        self.owner_uid(client, server)
            .map_or(by_address, Caller::User)
    }

    fn is_local(&self, address: IpAddr) -> bool {
        address.is_loopback() || self.local_sources.contains(&address)
    }

    /// The uid owning the client socket, asked of the kernel (Linux).
    #[cfg(target_os = "linux")]
    fn owner_uid(&self, client: SocketAddr, server: SocketAddr) -> Option<u32> {
        self.socket_owner(client, server).map(|owner| owner.uid)
    }

    /// Elsewhere the kernel is not asked.
    #[cfg(not(target_os = "linux"))]
    fn owner_uid(&self, _client: SocketAddr, _server: SocketAddr) -> Option<u32> {
        None
    }

    /// The owner of the client socket, asked of the kernel (Linux).
    #[cfg(target_os = "linux")]
    fn socket_owner(
        &self,
        client: SocketAddr,
        server: SocketAddr,
    ) -> Option<crate::platform::netlink::SocketOwner> {
        self.owners
            .as_ref()?
            .lock()
            .ok()
            .and_then(|mut owners| owners.owner_of(client, server).ok().flatten())
    }

    /// The owner and process of a local caller's socket (Linux: netlink and `/proc`).
    #[cfg(target_os = "linux")]
    fn local_details(
        &self,
        mut identity: CallerIdentity,
        client: SocketAddr,
        server: Option<SocketAddr>,
    ) -> CallerIdentity {
        let Some(server) = server else {
            return identity;
        };
        if let Some(owner) = self.socket_owner(client, server) {
            identity.uid = Some(owner.uid);
            if let Some(pid) = process_holding(owner.inode, Instant::now() + SCAN_BUDGET) {
                identity.pid = Some(pid);
                identity.command =
                    read_small(&format!("/proc/{pid}/comm")).map(|comm| comm.trim().to_owned());
                identity.cgroup = read_small(&format!("/proc/{pid}/cgroup"))
                    .and_then(|text| unified_cgroup(&text));
            }
        }
        identity
    }

    /// Elsewhere only the address is known.
    #[cfg(not(target_os = "linux"))]
    fn local_details(
        &self,
        identity: CallerIdentity,
        _client: SocketAddr,
        _server: Option<SocketAddr>,
    ) -> CallerIdentity {
        identity
    }
}

/// The pid of a process with the socket `inode` open, if one is found before `deadline`.
#[cfg(target_os = "linux")]
fn process_holding(inode: u32, deadline: Instant) -> Option<u32> {
    let wanted = format!("socket:[{inode}]");
    let processes = std::fs::read_dir("/proc").ok()?;
    for process in processes.flatten() {
        if Instant::now() > deadline {
            return None;
        }
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        // Not ours to read (another user's process after the privilege drop): skip.
        let Ok(descriptors) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for descriptor in descriptors.flatten() {
            if std::fs::read_link(descriptor.path())
                .is_ok_and(|target| target.as_os_str() == wanted.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// A small `/proc` file's text (at most 4 KiB).
#[cfg(target_os = "linux")]
fn read_small(path: &str) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(4096)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
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

/// A forwarded caller whose address belongs to a network namespace on this host (a container,
/// a namespace-based guest): the cgroup of a process living there, found in bounded time. Each
/// process's `/proc/PID/net/` shows its own namespace and is readable by every user, so this
/// works after the privilege drop too. An address this namespace owns itself is not searched
/// for (every host process would match).
#[cfg(target_os = "linux")]
fn forwarded_details(mut identity: CallerIdentity, address: IpAddr) -> CallerIdentity {
    let deadline = Instant::now() + SCAN_BUDGET;
    let is_local_in = |pid: &str| {
        let table = match address {
            IpAddr::V4(_) => read_small_net(pid, "fib_trie"),
            IpAddr::V6(_) => read_small_net(pid, "if_inet6"),
        };
        table.is_some_and(|table| owns_address(&table, address))
    };
    if is_local_in("self") {
        return identity;
    }
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return identity;
    };
    for process in processes.flatten() {
        if Instant::now() > deadline {
            break;
        }
        let name = process.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if is_local_in(pid) {
            identity.cgroup =
                read_small(&format!("/proc/{pid}/cgroup")).and_then(|text| unified_cgroup(&text));
            break;
        }
    }
    identity
}

#[cfg(not(target_os = "linux"))]
fn forwarded_details(identity: CallerIdentity, _address: IpAddr) -> CallerIdentity {
    identity
}

/// `/proc/PID/net/NAME` (at most 256 KiB: a namespace's local routes or IPv6 addresses).
#[cfg(target_os = "linux")]
fn read_small_net(pid: &str, name: &str) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(format!("/proc/{pid}/net/{name}"))
        .ok()?
        .take(256 * 1024)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Whether a namespace's table names `address` as its own (Linux's `/proc` formats; compiled
/// everywhere so the unit tests run on every system): in `fib_trie` a `|-- A` line followed
/// by `/32 host LOCAL`; in `if_inet6` the address as 32 hex digits.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn owns_address(table: &str, address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let wanted = format!("|-- {v4}");
            let mut lines = table.lines();
            while let Some(line) = lines.next() {
                if line.trim() == wanted
                    && lines
                        .next()
                        .is_some_and(|next| next.contains("/32 host LOCAL"))
                {
                    return true;
                }
            }
            false
        }
        IpAddr::V6(v6) => {
            let hex: String = v6.octets().iter().map(|b| format!("{b:02x}")).collect();
            table.lines().any(|line| line.starts_with(&hex))
        }
    }
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
            cgroup: None,
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
    fn a_namespaces_own_addresses_are_read_from_its_tables() {
        let fib = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 172.17.0.2\n        /32 host LOCAL\n     |-- 172.17.0.0\n        /16 link UNICAST\n";
        assert!(owns_address(fib, "172.17.0.2".parse().expect("ip")));
        assert!(!owns_address(fib, "172.17.0.0".parse().expect("ip")));
        assert!(!owns_address(fib, "172.17.0.3".parse().expect("ip")));
        let inet6 = "fd000ec200000000000000000000000a 05 80 00 80 lo\n";
        assert!(owns_address(inet6, "fd00:ec2::a".parse().expect("ip")));
        assert!(!owns_address(inet6, "fd00:ec2::b".parse().expect("ip")));
    }

    #[test]
    fn a_forwarded_caller_reads_as_its_address_and_container() {
        let container = CallerIdentity {
            address: Some("172.17.0.2".parse().expect("ip")),
            cgroup: Some("/docker/abc".into()),
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
        let attribution = Attribution::open(vec!["169.254.169.253".parse().expect("ip")]);
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

    /// Both families, as the stack asks at its connection limit: the owner of a loopback client
    /// socket (loopback always counts as local) is this process's user.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_local_callers_socket_owner_is_its_caller_over_ipv4_and_ipv6() {
        let attribution = Attribution::open(Vec::new());
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

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_found_holding_its_own_socket() {
        use std::os::unix::fs::MetadataExt;
        let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let fd_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&socket));
        let inode = std::fs::metadata(&fd_path).expect("fd").ino();
        let found = process_holding(
            u32::try_from(inode).expect("inode fits"),
            Instant::now() + Duration::from_secs(5),
        );
        assert_eq!(found, Some(std::process::id()));
    }
}
