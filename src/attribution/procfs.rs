//! What `/proc` and the cgroup hierarchy say about a caller (Linux): the process holding a
//! socket, the cgroup a socket was made in, and the container (the network namespace, and the
//! cgroup of the processes in it) that owns a forwarded caller's address.
//!
//! Everything here is bounded (a deadline per question, a size cap per file) and says
//! [`Cgroup::Undecided`] when it cannot finish, never "no match": a `cgroup:` rule must not
//! be skipped because a scan ran out of time or could not see. Each question is asked as the
//! process is at that moment (after the privilege drop, with the served user's rights), so
//! nothing here is cached across questions but what cannot change: a cgroup's id names one
//! directory for the life of the system.

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{Cgroup, unified_cgroup};

/// Directories one cgroup walk may visit before it gives up.
const MAX_CGROUP_DIRECTORIES: usize = 20_000;

/// Facts about this process's view of the system, read once at start (before the drop).
#[derive(Debug, Default)]
pub(super) struct ProcView {
    /// `/proc` is mounted with `hidepid=1` or `2` (or `invisible`/`noaccess`): after the drop
    /// other users' processes cannot be seen, so no scan can say "none".
    hidepid: bool,
    /// This process's `/proc/self/uid_map`: a process whose map differs lives in another user
    /// namespace (an unprivileged `unshare -Ur`, a rootless container).
    uid_map: String,
    /// Where the cgroup v2 hierarchy is mounted, if it is.
    cgroup2: Option<PathBuf>,
    /// Cgroup ids already found, with their paths (ids are never reused while the system runs).
    cgroup_paths: std::sync::Mutex<HashMap<u64, String>>,
}

impl ProcView {
    /// Reads the mount table and this process's user namespace map.
    pub(super) fn read() -> ProcView {
        let mounts =
            read_capped(Path::new("/proc/self/mountinfo"), 1024 * 1024).unwrap_or_default();
        ProcView {
            hidepid: proc_hides_processes(&mounts),
            uid_map: read_small("/proc/self/uid_map").unwrap_or_default(),
            cgroup2: cgroup2_mount(&mounts),
            cgroup_paths: std::sync::Mutex::default(),
        }
    }

    /// Whether `/proc` hides other users' processes from anyone but root.
    pub(super) fn hides_processes(&self) -> bool {
        self.hidepid
    }

    /// Whether other users' processes are hidden from this process now (`hidepid` and not
    /// root: root may read every process whatever the mount says).
    fn blind(&self) -> bool {
        self.hidepid && !nix::unistd::geteuid().is_root()
    }

    /// Why a scan of `/proc` cannot be complete now, if it cannot.
    pub(super) fn blind_reason(&self) -> Option<&'static str> {
        self.blind()
            .then_some("/proc is mounted with hidepid, so other users' processes cannot be seen")
    }

    /// The path of the cgroup whose id is `id`, looked for only where a rule's `prefixes` could
    /// match: [`Cgroup::Found`], [`Cgroup::Outside`] when it is under none of them (or is the
    /// root, which no prefix but `/` matches), [`Cgroup::Undecided`] when the walk ran out.
    pub(super) fn cgroup_by_id(&self, id: u64, prefixes: &[String], deadline: Instant) -> Cgroup {
        let Some(mount) = &self.cgroup2 else {
            return Cgroup::Undecided("no cgroup v2 hierarchy is mounted");
        };
        let known = self
            .cgroup_paths
            .lock()
            .ok()
            .and_then(|paths| paths.get(&id).cloned());
        if let Some(path) = known {
            return Cgroup::Found(path);
        }
        let Ok(root) = std::fs::metadata(mount) else {
            return Cgroup::Undecided("the cgroup v2 hierarchy cannot be read");
        };
        if root.ino() == id {
            return Cgroup::Found("/".to_owned());
        }
        let mut visited = 0usize;
        for prefix in prefixes {
            let (parent, stem) = prefix.rsplit_once('/').unwrap_or(("", prefix));
            let Ok(entries) = std::fs::read_dir(mount.join(parent.trim_start_matches('/'))) else {
                continue;
            };
            let mut pending: Vec<(PathBuf, String)> = entries
                .flatten()
                .filter(|entry| entry.file_name().to_string_lossy().starts_with(stem))
                .map(|entry| {
                    let name = format!("{parent}/{}", entry.file_name().to_string_lossy());
                    (entry.path(), name)
                })
                .collect();
            while let Some((directory, name)) = pending.pop() {
                visited += 1;
                if visited > MAX_CGROUP_DIRECTORIES || Instant::now() > deadline {
                    return Cgroup::Undecided("the cgroup walk ran out of time");
                }
                let Ok(metadata) = std::fs::symlink_metadata(&directory) else {
                    continue;
                };
                if !metadata.is_dir() {
                    continue;
                }
                if metadata.ino() == id {
                    if let Ok(mut paths) = self.cgroup_paths.lock() {
                        if paths.len() >= 4096 {
                            paths.clear();
                        }
                        paths.insert(id, name.clone());
                    }
                    return Cgroup::Found(name);
                }
                if let Ok(children) = std::fs::read_dir(&directory) {
                    for child in children.flatten() {
                        if child.file_type().is_ok_and(|kind| kind.is_dir()) {
                            let child_name =
                                format!("{name}/{}", child.file_name().to_string_lossy());
                            pending.push((child.path(), child_name));
                        }
                    }
                }
            }
        }
        Cgroup::Outside
    }

    /// The container a forwarded caller's `address` lives in: the cgroup shared by every
    /// process of this host whose network namespace owns the address. Only processes in this
    /// process's user namespace count: a namespace an unprivileged user made (`unshare -Urn`)
    /// can hold any address, and is nobody's container. Found by a scan of every process within
    /// `deadline`; each network namespace's addresses are read once.
    pub(super) fn container_of(&self, address: IpAddr, deadline: Instant) -> Cgroup {
        if let Some(reason) = self.blind_reason() {
            return Cgroup::Undecided(reason);
        }
        let Ok(ours) = namespace_key("self") else {
            return Cgroup::Undecided("this process's network namespace cannot be read");
        };
        let Ok(processes) = std::fs::read_dir("/proc") else {
            return Cgroup::Undecided("/proc cannot be read");
        };
        let mut owners: HashMap<u64, bool> = HashMap::new();
        let mut found: Option<String> = None;
        for process in processes.flatten() {
            if Instant::now() > deadline {
                return Cgroup::Undecided("the process scan ran out of time");
            }
            let name = process.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            // Gone already, or a kernel thread: no namespace of its own to read.
            let Ok(key) = namespace_key(pid) else {
                continue;
            };
            if key == ours {
                continue;
            }
            if read_small(&format!("/proc/{pid}/uid_map")).as_deref() != Some(self.uid_map.as_str())
            {
                continue;
            }
            let owns = *owners.entry(key).or_insert_with(|| {
                let table = match address {
                    IpAddr::V4(_) => read_net(pid, "fib_trie"),
                    IpAddr::V6(_) => read_net(pid, "if_inet6"),
                };
                table.is_some_and(|table| owns_address(&table, address))
            });
            if !owns {
                continue;
            }
            let Some(cgroup) =
                read_small(&format!("/proc/{pid}/cgroup")).and_then(|text| unified_cgroup(&text))
            else {
                return Cgroup::Undecided("a process in the caller's namespace cannot be read");
            };
            match &found {
                None => found = Some(cgroup),
                Some(first) if *first == cgroup => {}
                Some(_) => {
                    return Cgroup::Undecided(
                        "the caller's address belongs to processes in more than one cgroup",
                    );
                }
            }
        }
        found.map_or(Cgroup::Outside, Cgroup::Found)
    }
}

/// The process holding the socket `inode`, newest process first (a short-lived client that
/// just connected is most likely among the last started), if found before `deadline`.
pub(super) fn process_holding(inode: u32, deadline: Instant) -> Option<u32> {
    let wanted = format!("socket:[{inode}]");
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable_by(|a, b| b.cmp(a));
    for pid in pids {
        if Instant::now() > deadline {
            return None;
        }
        // Not ours to read (another user's process after the privilege drop): skip.
        let Ok(descriptors) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
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

/// A process's network namespace, told apart without the rights `/proc/PID/ns/net` needs:
/// every namespace has its own `/proc/net/dev` entry, with its own inode number.
fn namespace_key(pid: &str) -> std::io::Result<u64> {
    std::fs::metadata(format!("/proc/{pid}/net/dev")).map(|metadata| metadata.ino())
}

/// A small `/proc` file's text (at most 4 KiB).
pub(super) fn read_small(path: &str) -> Option<String> {
    read_capped(Path::new(path), 4096)
}

/// `/proc/PID/net/NAME` (at most 256 KiB: a namespace's local routes or IPv6 addresses).
fn read_net(pid: &str, name: &str) -> Option<String> {
    read_capped(Path::new(&format!("/proc/{pid}/net/{name}")), 256 * 1024)
}

fn read_capped(path: &Path, cap: u64) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(cap)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Whether the `/proc` mount in `mountinfo` hides other users' processes (`hidepid=1`, `2`,
/// `invisible` or `noaccess`; `0` and `off` do not).
fn proc_hides_processes(mountinfo: &str) -> bool {
    mountinfo.lines().any(|line| {
        let Some((left, right)) = line.split_once(" - ") else {
            return false;
        };
        let mut right = right.split_whitespace();
        let is_proc =
            left.split_whitespace().nth(4) == Some("/proc") && right.next() == Some("proc");
        let options = right.nth(1).unwrap_or("");
        is_proc
            && options.split(',').any(|option| {
                option
                    .strip_prefix("hidepid=")
                    .is_some_and(|value| !matches!(value, "0" | "off"))
            })
    })
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on
/// a hybrid host).
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2"))
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// Whether a namespace's table names `address` as its own (Linux's `/proc` formats): in
/// `fib_trie` a `|-- A` line followed by `/32 host LOCAL`; in `if_inet6` the address as 32 hex
/// digits.
pub(super) fn owns_address(table: &str, address: IpAddr) -> bool {
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
    use std::time::Duration;

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
    fn hidepid_and_the_cgroup2_mount_are_read_from_the_mount_table() {
        let plain = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                     30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert!(!proc_hides_processes(plain));
        assert_eq!(cgroup2_mount(plain), Some(PathBuf::from("/sys/fs/cgroup")));
        for options in ["rw,hidepid=2", "rw,hidepid=invisible", "rw,hidepid=1,gid=4"] {
            let hidden = format!("22 27 0:21 / /proc rw,relatime - proc proc {options}\n");
            assert!(proc_hides_processes(&hidden), "{options}");
        }
        let elsewhere = "40 27 0:50 / /mnt/proc rw - proc proc rw,hidepid=2\n";
        assert!(!proc_hides_processes(elsewhere), "only /proc itself counts");
        assert!(!proc_hides_processes(
            "22 27 0:21 / /proc rw - proc proc rw,hidepid=0\n"
        ));
        assert_eq!(cgroup2_mount(""), None);
    }

    #[test]
    fn this_process_is_found_holding_its_own_socket() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let fd_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&socket));
        let inode = std::fs::metadata(&fd_path).expect("fd").ino();
        let found = process_holding(
            u32::try_from(inode).expect("inode fits"),
            Instant::now() + Duration::from_secs(5),
        );
        assert_eq!(found, Some(std::process::id()));
    }

    #[test]
    fn an_address_no_other_namespace_holds_is_in_no_container() {
        let view = ProcView::read();
        let nowhere: IpAddr = "192.0.2.77".parse().expect("ip");
        let answer = view.container_of(nowhere, Instant::now() + Duration::from_secs(5));
        if view.blind() {
            assert!(matches!(answer, Cgroup::Undecided(_)), "{answer:?}");
        } else {
            assert_eq!(answer, Cgroup::Outside);
        }
        assert!(
            matches!(
                view.container_of(nowhere, Instant::now() - Duration::from_secs(1)),
                Cgroup::Undecided(_)
            ),
            "out of time is undecided, never outside"
        );
    }
}
