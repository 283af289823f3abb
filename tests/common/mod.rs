//! The integration-test harness: a fresh network namespace per test, the real `imds-tun` binary
//! running inside it, and clients that reach `169.254.169.254` through the kernel and the TUN.
//!
//! Nothing here fakes our own code. A test creates a [`Namespace`] (with [`namespace!`]), spawns
//! the binary in it with [`Namespace::spawn`], waits for its start-up line and talks to it from a
//! thread that has entered the namespace ([`Namespace::run_in`]). Dropping the handles kills the
//! child (SIGKILL) and deletes the namespace, also when the test panics.
//!
//! Privileges: namespaces and TUN devices need root. Without them a test is *skipped* loudly on a
//! developer machine and *fails* when `CI=true` (see [`skip_or_fail`]), so a CI run can never
//! count a skipped test as passed.

// Each test binary compiles this module and uses a different subset of it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

pub(crate) mod cloud_init;
mod doc_shell;
pub(crate) mod http;
mod moto;
mod temp_dir;

// Like the rest of this module, each test binary uses a different subset.
#[allow(unused_imports)]
pub(crate) use doc_shell::{DocShell, fenced_blocks};
#[allow(unused_imports)]
pub(crate) use moto::Moto;
#[allow(unused_imports)]
pub(crate) use temp_dir::TempDir;

/// The binary under test, built by cargo for this test run.
pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_imds-tun");

/// The binary a test runs: `IMDS_TUN_TEST_BINARY` when set, else [`BINARY`]. Setting it runs a
/// test against another build (an older commit's, to show that the test fails there); tests
/// that call it, and every [`Namespace::spawn`], honour it.
pub(crate) fn binary() -> PathBuf {
    std::env::var_os("IMDS_TUN_TEST_BINARY")
        .filter(|path| !path.is_empty())
        .map_or_else(|| PathBuf::from(BINARY), PathBuf::from)
}

/// The text of the one line `imds-tun` logs once it serves.
pub(crate) const READY_LINE: &str = "serving EC2 instance metadata";

/// How long a start-up may take before the test fails with the captured stderr.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The metadata address, as clients dial it.
pub(crate) const METADATA: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 169, 254)),
    80,
);

/// The IPv6 metadata address (`--ipv6`), as clients dial it: `[fd00:ec2::254]:80`.
pub(crate) const METADATA_V6: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    80,
);

/// The uid/gid `nobody`, used to prove what happens without privileges.
pub(crate) const NOBODY: u32 = 65534;

/// The name of the enclosing test function, for namespace names and skip messages.
#[macro_export]
macro_rules! test_name {
    () => {{
        fn here() {}
        let path = std::any::type_name_of_val(&here);
        let path = path.strip_suffix("::here").unwrap_or(path);
        path.rsplit("::").next().unwrap_or(path)
    }};
}

/// A fresh namespace for the enclosing test, or `return` from the test after announcing a skip
/// (outside CI) when the process lacks root or namespaces. Under `CI=true` it panics instead.
#[macro_export]
macro_rules! namespace {
    () => {
        match $crate::common::Namespace::for_test($crate::test_name!()) {
            Some(namespace) => namespace,
            None => return,
        }
    };
}

/// True when the suite runs in CI, where a missing privilege is a failure, not a skip.
pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1")
}

/// The single place that decides between skipping and failing a test that cannot run here.
/// Returns normally only when the test should be skipped (not in CI).
pub(crate) fn skip_or_fail(test: &str, reason: &str) {
    if in_ci() {
        panic!("{test}: cannot run: {reason} (CI=true, so this is a failure, not a skip)");
    }
    // Written to the stderr handle directly: libtest captures `eprintln!` of passing tests, and
    // a skip must be seen.
    let _ = writeln!(std::io::stderr(), "\n    SKIPPED: {test}: {reason}\n");
}

/// True when this process runs as root (euid 0).
pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

static NAMESPACE_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A network namespace made for one test, deleted on drop.
#[derive(Debug)]
pub(crate) struct Namespace {
    name: String,
    test: String,
}

impl Namespace {
    /// Creates `imdstun-<pid>-<n>` with `lo` up. `None` (after a loud skip notice) when the
    /// process cannot; panics under `CI=true`.
    pub(crate) fn for_test(test: &str) -> Option<Namespace> {
        if !is_root() {
            skip_or_fail(test, "the test process is not root");
            return None;
        }
        let name = format!(
            "imdstun-{}-{}",
            std::process::id(),
            NAMESPACE_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let created = match Command::new("ip").args(["netns", "add", &name]).output() {
            Ok(output) => output,
            Err(error) => {
                skip_or_fail(
                    test,
                    &format!("cannot run `ip` (install iproute2): {error}"),
                );
                return None;
            }
        };
        if !created.status.success() {
            skip_or_fail(
                test,
                &format!(
                    "`ip netns add {name}` failed: {}",
                    String::from_utf8_lossy(&created.stderr).trim()
                ),
            );
            return None;
        }
        // From here on Drop removes the namespace, whatever happens next.
        let namespace = Namespace {
            name,
            test: test.to_string(),
        };
        namespace.ip(&["link", "set", "lo", "up"]);
        Some(namespace)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file `ip netns` made.
    pub(crate) fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs a command inside the namespace and returns what it did (never panics on failure).
    pub(crate) fn exec(&self, command: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(command)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("cannot run {command:?} in {}: {error}", self.name))
    }

    /// Runs `ip ARGS` inside the namespace and panics with its stderr if it fails.
    pub(crate) fn ip(&self, args: &[&str]) -> String {
        let output = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("ip is installed");
        assert!(
            output.status.success(),
            "`ip -n {} {}` failed: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `ip -j ARGS` inside the namespace and parses the JSON it prints.
    pub(crate) fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let text = self.ip(&full);
        if text.trim().is_empty() {
            return serde_json::Value::Array(Vec::new());
        }
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("ip -j output {text:?}: {error}"))
    }

    /// Names of the TUN devices in the namespace (`ip -d -j link`, `linkinfo.info_kind == "tun"`).
    pub(crate) fn tun_links(&self) -> Vec<String> {
        let links = self.ip_json(&["-d", "link", "show"]);
        links
            .as_array()
            .expect("ip -j link prints an array")
            .iter()
            .filter(|link| link["linkinfo"]["info_kind"] == "tun")
            .map(|link| link["ifname"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Names of every link in the namespace.
    pub(crate) fn links(&self) -> Vec<String> {
        let links = self.ip_json(&["link", "show"]);
        links
            .as_array()
            .expect("ip -j link prints an array")
            .iter()
            .map(|link| link["ifname"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Every route the namespace has to 169.254.169.254, in every table.
    pub(crate) fn routes_to_metadata(&self) -> Vec<serde_json::Value> {
        let routes = self.ip_json(&["route", "show", "table", "all"]);
        routes
            .as_array()
            .expect("ip -j route prints an array")
            .iter()
            .filter(|route| {
                route["dst"]
                    .as_str()
                    .is_some_and(|dst| dst.starts_with("169.254.169.254"))
            })
            .cloned()
            .collect()
    }

    /// Every IPv6 address and route (any table) that names `fd00:ec2::253` or `fd00:ec2::254`,
    /// the pair `--ipv6` claims, one line each as `ip` prints them.
    pub(crate) fn ipv6_claims(&self) -> Vec<String> {
        let addresses = self.ip(&["-6", "addr", "show"]);
        let routes = self.ip(&["-6", "route", "show", "table", "all"]);
        addresses
            .lines()
            .chain(routes.lines())
            .filter(|line| line.contains("fd00:ec2::25"))
            .map(|line| line.trim().to_owned())
            .collect()
    }

    /// Polls until no TUN link and no route to the metadata address are left, or panics after
    /// `timeout` with what is still there.
    pub(crate) fn wait_until_clean(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let tuns = self.tun_links();
            let routes = self.routes_to_metadata();
            let route_get = self.exec(&["ip", "-j", "route", "get", "169.254.169.254"]);
            let route_via_tun = route_get.status.success() && {
                let text = String::from_utf8_lossy(&route_get.stdout);
                tuns.iter().any(|tun| text.contains(tun.as_str())) || text.contains("imds")
            };
            if tuns.is_empty() && routes.is_empty() && !route_via_tun {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "after {timeout:?} the namespace still has TUN links {tuns:?}, routes {routes:?}, \
                     `ip route get`: {}",
                    String::from_utf8_lossy(&route_get.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Spawns `imds-tun ARGS` inside the namespace as root.
    pub(crate) fn spawn(&self, args: &[&str]) -> ImdsTun {
        self.spawn_with(args, &Spawn::default())
    }

    /// Spawns `imds-tun ARGS` inside the namespace with extra options.
    pub(crate) fn spawn_with(&self, args: &[&str], options: &Spawn) -> ImdsTun {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]);
        if options.as_nobody {
            command.args(nobody_prefix());
        }
        command.arg(options.binary()).args(args);
        ImdsTun::spawn(command, options, &self.test)
    }

    /// Joins this namespace (the "host") to `guest` with a veth pair, as VirtualBox NAT
    /// does: `vhost` with `host_ip/24` here, `vguest` with `guest_ip/24` there, both up.
    pub(crate) fn link_guest(&self, guest: &Namespace, host_ip: &str, guest_ip: &str) {
        self.ip(&[
            "link",
            "add",
            "vhost",
            "type",
            "veth",
            "peer",
            "name",
            "vguest",
            "netns",
            guest.name(),
        ]);
        self.ip(&["addr", "add", &format!("{host_ip}/24"), "dev", "vhost"]);
        self.ip(&["link", "set", "vhost", "up"]);
        guest.ip(&["addr", "add", &format!("{guest_ip}/24"), "dev", "vguest"]);
        guest.ip(&["link", "set", "vguest", "up"]);
    }

    /// Runs `future()` on a fresh current-thread tokio runtime, on a std thread that first
    /// entered this namespace with `setns(CLONE_NEWNET)`. Sockets opened there (and by threads
    /// that thread starts, such as tokio's blocking pool) live in the namespace. A panic inside
    /// is re-raised here.
    pub(crate) fn run_in<F, Fut, T>(&self, future: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = self.path();
        let thread = std::thread::Builder::new()
            .name(format!("netns-{}", self.name))
            .spawn(move || {
                let file = File::open(&path)
                    .unwrap_or_else(|error| panic!("open {}: {error}", path.display()));
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|errno| panic!("setns({}): {errno}", path.display()));
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime builds");
                runtime.block_on(future())
            })
            .expect("spawning the namespace thread");
        match thread.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let deleted = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match deleted {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "warning: `ip netns del {}` failed: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => eprintln!("warning: cannot run `ip netns del {}`: {error}", self.name),
        }
    }
}

/// The command prefix that drops to `nobody` with no supplementary groups and no capabilities.
pub(crate) fn nobody_prefix() -> Vec<String> {
    vec![
        "setpriv".into(),
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".into(),
    ]
}

/// Options for spawning the binary.
#[derive(Debug, Default, Clone)]
pub(crate) struct Spawn {
    /// Extra environment for the child.
    pub env: Vec<(String, String)>,
    /// Run as uid/gid 65534 through `setpriv`.
    pub as_nobody: bool,
    /// Run this binary instead of [`BINARY`] (the packaged static one, tests/deploy/package_artifacts.rs).
    pub binary: Option<PathBuf>,
}

impl Spawn {
    pub(crate) fn nobody() -> Spawn {
        Spawn {
            as_nobody: true,
            ..Spawn::default()
        }
    }

    /// The binary to run: [`Spawn::binary`] if set, else [`binary()`].
    pub(crate) fn binary(&self) -> PathBuf {
        self.binary.clone().unwrap_or_else(binary)
    }
}

/// A shell command line for `sh -c` inside `ip netns exec` that runs `rest` as `uid` (and gid)
/// holding only CAP_NET_ADMIN, as the systemd unit does, with a private /dev/net/tun of mode 0666
/// (Debian's default; some hosts have 0600). The device node lives on a tmpfs mounted over
/// `scratch`, inside the private mount namespace `ip netns exec` gives the command, so nothing of
/// it outlives the command; `scratch` itself is the caller's [`TempDir`], removed when the test
/// ends. `uid` need not exist in /etc/passwd: systemd's `DynamicUser=yes` uids never do.
pub(crate) fn with_only_net_admin(scratch: &TempDir, uid: u32, rest: &str) -> String {
    let dir = scratch.path().display();
    format!(
        "mount -t tmpfs tmpfs '{dir}' && mknod '{dir}/tun' c 10 200 && \
         chmod 0666 '{dir}/tun' && mount --bind '{dir}/tun' /dev/net/tun && \
         exec setpriv --reuid={uid} --regid={uid} --clear-groups --inh-caps=+net_admin \
         --ambient-caps=+net_admin {rest}"
    )
}

/// What the reader thread collected from the child's stderr.
#[derive(Debug, Default)]
struct Captured {
    lines: VecDeque<String>,
    closed: bool,
}

/// A running `imds-tun` child; SIGKILLed and reaped on drop if still running.
#[derive(Debug)]
pub(crate) struct ImdsTun {
    child: Child,
    test: String,
    stderr: Arc<(Mutex<Captured>, Condvar)>,
    exit: Option<ExitStatus>,
}

impl ImdsTun {
    /// Spawns `command` with stderr captured line by line. Without a namespace this runs in the
    /// test process's own one; the TUN tests never do that.
    pub(crate) fn spawn(mut command: Command, options: &Spawn, test: &str) -> ImdsTun {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .current_dir("/")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        // The child must not find the developer's own AWS identity (their keys, profile, or,
        // under sudo, their ~/.aws): tests that want credentials pass them explicitly.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("AWS_") || key.starts_with("SUDO_") {
                command.env_remove(key.as_ref());
            }
        }
        command
            .env("AWS_CONFIG_FILE", "/nonexistent/imds-tun-test/config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/imds-tun-test/credentials",
            );
        for (key, value) in &options.env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("spawning {command:?}: {error}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let captured = Arc::new((Mutex::new(Captured::default()), Condvar::new()));
        let sink = captured.clone();
        std::thread::Builder::new()
            .name(format!("stderr-{}", child.id()))
            .spawn(move || {
                let reader = BufReader::new(stderr);
                for line in reader.lines() {
                    let Ok(line) = line else { break };
                    let (lock, ready) = &*sink;
                    lock.lock()
                        .expect("stderr lock")
                        .lines
                        .push_back(strip_ansi(&line));
                    ready.notify_all();
                }
                let (lock, ready) = &*sink;
                lock.lock().expect("stderr lock").closed = true;
                ready.notify_all();
            })
            .expect("spawning the stderr reader");
        ImdsTun {
            child,
            test: test.to_string(),
            stderr: captured,
            exit: None,
        }
    }

    pub(crate) fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"))
    }

    /// Everything the child wrote to stderr so far, one line per line.
    pub(crate) fn stderr(&self) -> String {
        let (lock, _) = &*self.stderr;
        let captured = lock.lock().expect("stderr lock");
        captured
            .lines
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until a stderr line satisfies `matches` and returns it; panics with the captured
    /// stderr if the child closes stderr (exits) first or `timeout` passes.
    pub(crate) fn wait_for_line(
        &self,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let (lock, ready) = &*self.stderr;
        let mut captured = lock.lock().expect("stderr lock");
        loop {
            if let Some(line) = captured.lines.iter().find(|line| matches(line)) {
                return line.clone();
            }
            let now = Instant::now();
            if captured.closed || now >= deadline {
                let why = if captured.closed {
                    "imds-tun closed stderr (exited) before printing it".to_string()
                } else {
                    format!("timed out after {timeout:?}")
                };
                let text = captured
                    .lines
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!(
                    "{}: waiting for a stderr line: {why}; stderr was:\n{text}",
                    self.test
                );
            }
            captured = ready
                .wait_timeout(captured, deadline - now)
                .expect("stderr lock")
                .0;
        }
    }

    /// Waits for the start-up line and returns it.
    pub(crate) fn wait_ready(&self) -> String {
        self.wait_for_line(READY_TIMEOUT, |line| line.contains(READY_LINE))
    }

    /// The TUN device name the start-up line announces (`... via TUN device imds0 ...`).
    pub(crate) fn tun_name(&self) -> String {
        let line = self.wait_ready();
        let rest = line
            .split("TUN device ")
            .nth(1)
            .unwrap_or_else(|| panic!("start-up line names no TUN device: {line}"));
        rest.split_whitespace()
            .next()
            .expect("a device name follows")
            .to_string()
    }

    /// The kernel listener addresses the start-up line announces (`listening on A, B`), with
    /// the real port when `--listen ...:0` was given.
    pub(crate) fn listen_addresses(&self) -> Vec<SocketAddr> {
        let line = self.wait_ready();
        let rest = line
            .split("listening on ")
            .nth(1)
            .unwrap_or_else(|| panic!("start-up line names no listener: {line}"));
        rest.split(',')
            .map(|part| {
                let part = part.trim().trim_end_matches(|c: char| !c.is_ascii_digit());
                part.parse()
                    .unwrap_or_else(|error| panic!("listener {part:?} in {line:?}: {error}"))
            })
            .collect()
    }

    /// Sends `signal` to the child.
    pub(crate) fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(self.pid(), signal)
            .unwrap_or_else(|errno| panic!("kill({}, {signal}): {errno}", self.pid()));
    }

    /// True while the child has not exited.
    pub(crate) fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("waitpid on the child");
        }
        self.exit
    }

    /// Waits up to `timeout` for the child to exit; panics with its stderr otherwise. Also
    /// waits briefly for the stderr reader to see the end, so [`ImdsTun::stderr`] is complete.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.try_exit() {
                break status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: imds-tun (pid {}) still running after {timeout:?}; stderr:\n{}",
                    self.test,
                    self.pid(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let (lock, ready) = &*self.stderr;
        let captured = lock.lock().expect("stderr lock");
        let _ = ready
            .wait_timeout_while(captured, Duration::from_secs(2), |captured| {
                !captured.closed
            })
            .expect("stderr lock");
        status
    }
}

impl Drop for ImdsTun {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = nix::sys::signal::kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Removes terminal colour sequences (`ESC [ ... letter`) in case a subscriber adds them.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Starts `imds-tun ARGS` in `namespace`, waits for it to serve and returns the handle.
pub(crate) fn start(namespace: &Namespace, args: &[&str]) -> ImdsTun {
    let child = namespace.spawn(args);
    child.wait_ready();
    child
}

/// Asserts that the process exited with `code`, showing stderr otherwise.
pub(crate) fn assert_exit_code(child: &ImdsTun, status: ExitStatus, code: i32) {
    assert_eq!(
        status.code(),
        Some(code),
        "expected exit code {code}, got {status}; stderr:\n{}",
        child.stderr()
    );
}

/// Makes aws-config in this test process see only what the test gives it.
///
/// The SDK reads its IMDS settings from the process environment and from `~/.aws/config`:
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT`/`_MODE` would send it elsewhere than `169.254.169.254`,
/// `AWS_EC2_METADATA_DISABLED` would turn it off, and a developer's profile could do either. So
/// those variables are removed and the config/credentials files point at paths that do not exist.
///
/// Environment writes are process-global and not thread-safe against C code reading the
/// environment, so this runs exactly once (`Once`), and every SDK test calls it as its first
/// statement, before it starts any thread or child: concurrent callers block in `call_once`
/// until the write is done, and std's own environment reads (e.g. `Command::spawn`) take the
/// same lock as `set_var`.
pub(crate) fn isolate_sdk_from_host_config() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let missing = std::env::temp_dir().join(format!("imdstun-no-aws-{}", std::process::id()));
        // SAFETY: see above; runs once, before the calling test starts threads, and no other test
        // in an SDK test binary touches the environment before calling this.
        unsafe {
            for variable in [
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
                "AWS_EC2_METADATA_DISABLED",
                "AWS_EC2_METADATA_V1_DISABLED",
                "AWS_PROFILE",
            ] {
                std::env::remove_var(variable);
            }
            std::env::set_var("AWS_CONFIG_FILE", missing.join("config"));
            std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", missing.join("credentials"));
        }
    });
}

/// The repository: the directory of `Cargo.toml`.
pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A command's exit status and both its outputs, for an assertion message.
pub(crate) fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `path` if it exists, else a skip (a failure under CI) naming what installs it.
pub(crate) fn installed(test: &str, path: PathBuf) -> Option<PathBuf> {
    if path.exists() {
        Some(path)
    } else {
        skip_or_fail(
            test,
            &format!("{} is missing; scripts/test.sh installs it", path.display()),
        );
        None
    }
}
