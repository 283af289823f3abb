//! `imds-tun exec -- CMD` (issue 29): one command in a user and network namespace of its own
//! with its own metadata service, run by an unprivileged user (uid 65534 through `setpriv`) in
//! the test's namespace, or by root. What `docs/exec.md` promises, each through the kernel:
//! boto3's IMDS provider reads the mock key; CMD's exit status (and 128+N for a signal) is
//! imds-tun's, and SIGINT/SIGTERM/SIGHUP reach CMD while the service still answers; 16 execs at
//! once each see only their own instance id, never the test namespace's own imds-tun; moto's
//! STS, on the test namespace's loopback, gives CMD real keys; pasta (`--network pasta`, the
//! default when found) gives CMD the network, `--network none` and a PATH without pasta do not;
//! `ctl spot` from CMD changes its own instance only; after CMD exits, and after a SIGKILL of
//! imds-tun, no process, namespace, pasta or TUN is left; each refusal (user namespaces off by
//! each of three sysctls, a 0600 `/dev/net/tun`, flags exec cannot honour, from the command line
//! or a config file) is one line, exit 2, quoted word for word by the troubleshooting guide; as
//! root no user namespace and no pasta; `--ipv6`, `--ecs`, `--config`, `RUST_LOG` and a pipe
//! into CMD work as for any command; and `docs/exec.md`, the README's command and
//! `docs/guides/exec-in-your-test-suite.md` run as written.
//!
//! `/dev/net/tun` must be 0666 for the unprivileged runs, as Debian ships it: [`tun_for_everyone`]
//! makes it so for as long as a test needs it and puts back a mode it changed. The 0600 refusal
//! and the sysctls are simulated for one process only: a private mount namespace (`unshare -m`)
//! with a 0600 node bound over the device, a chroot whose `/proc/sys/kernel` is a tmpfs holding
//! the sysctl's file (a chroot makes the kernel refuse a user namespace with EPERM, as the
//! Debian sysctl does), a user namespace whose root sets its own `user.max_user_namespaces`, or
//! a seccomp filter that refuses `TUNSETIFF` with EPERM once the user namespace exists (Ubuntu's
//! AppArmor restriction fails at such a later step).
#![cfg(target_os = "linux")]

use std::fs::Permissions;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use base64::Engine as _;
use nix::sys::signal::Signal;

use crate::common::{self, ImdsTun, Namespace, Spawn, TempDir, nobody_prefix, text};

/// The pasta warning of the contract, word for word.
const NO_PASTA: &str = "imds-tun: pasta not found (Debian/Ubuntu package passt): CMD gets loopback and the metadata service only; install passt, or pass --network none";

/// How long one `imds-tun exec` may take before the test fails (CMDs here take seconds).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

const INSTANCE_ID: &str = "http://169.254.169.254/latest/meta-data/instance-id";
const CREDENTIALS: &str = "http://169.254.169.254/latest/meta-data/iam/security-credentials/";
const SPOT: &str = "http://169.254.169.254/latest/meta-data/spot/instance-action";

/// The test namespace's own imds-tun (run as root, as on a host), never what an exec sees.
const HOST_ID: &str = "i-0b0b0000000000b0b";

/// Who runs `imds-tun exec`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Nobody,
    Root,
}

// ---- /dev/net/tun 0666 for the unprivileged runs ---------------------------------------------

const TUN: &str = "/dev/net/tun";

/// How many tests hold the device open to everyone, and the mode to put back after the last.
static TUN_MODE: Mutex<(usize, Option<u32>)> = Mutex::new((0, None));

/// Held while a test needs `/dev/net/tun` mode 0666; the last one dropped puts back a mode
/// that was changed. Tests run in parallel: the device is never made anything but 0666.
struct TunForEveryone;

/// `/dev/net/tun` as Debian ships it (0666) while the guard lives; `None` after a skip notice
/// (a failure under CI) when there is no such device.
fn tun_for_everyone(test: &str) -> Option<TunForEveryone> {
    let mut state = TUN_MODE.lock().unwrap_or_else(PoisonError::into_inner);
    let device = std::fs::metadata(TUN)
        .ok()
        .filter(|meta| meta.file_type().is_char_device());
    let Some(device) = device else {
        drop(state);
        common::skip_or_fail(
            test,
            "/dev/net/tun is not a character device; scripts/test.sh creates it",
        );
        return None;
    };
    if state.0 == 0 {
        let mode = device.permissions().mode() & 0o7777;
        if mode != 0o666 {
            std::fs::set_permissions(TUN, Permissions::from_mode(0o666)).expect("chmod 0666");
            state.1 = Some(mode);
        }
    }
    state.0 += 1;
    Some(TunForEveryone)
}

impl Drop for TunForEveryone {
    fn drop(&mut self) {
        let mut state = TUN_MODE.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 -= 1;
        if state.0 == 0
            && let Some(mode) = state.1.take()
        {
            let _ = std::fs::set_permissions(TUN, Permissions::from_mode(mode));
        }
    }
}

// ---- running `imds-tun exec` -------------------------------------------------------------------

/// The environment every exec starts from: Debian's tools (pasta among them), no AWS config.
const BASE_ENV: &[&str] = &[
    "PATH=/usr/bin:/bin",
    "HOME=/nonexistent",
    "AWS_CONFIG_FILE=/nonexistent/config",
    "AWS_SHARED_CREDENTIALS_FILE=/nonexistent/credentials",
];

/// The words after `ip netns exec NAME`: `[setpriv to nobody] env -i BASE ENV imds-tun exec
/// SETTINGS -- CMD`.
fn exec_words(who: Who, env: &[String], settings: &[&str], cmd: &[&str]) -> Vec<String> {
    let mut words = Vec::new();
    if who == Who::Nobody {
        words.extend(nobody_prefix());
    }
    words.extend(["/usr/bin/env".to_owned(), "-i".to_owned()]);
    words.extend(BASE_ENV.iter().map(|word| (*word).to_owned()));
    words.extend(env.iter().cloned());
    words.push(common::binary().to_str().expect("UTF-8 path").to_owned());
    words.push("exec".to_owned());
    words.extend(settings.iter().map(|word| (*word).to_owned()));
    words.push("--".to_owned());
    words.extend(cmd.iter().map(|word| (*word).to_owned()));
    words
}

/// `ip netns exec NAME WORDS`, stdin closed, cwd `/`.
fn in_namespace(namespace: &Namespace, words: &[String]) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", namespace.name()])
        .args(words)
        .stdin(Stdio::null())
        .current_dir("/");
    command
}

/// `imds-tun exec SETTINGS -- CMD` in the namespace as `who`, run to its end.
fn exec(
    namespace: &Namespace,
    who: Who,
    env: &[String],
    settings: &[&str],
    cmd: &[&str],
) -> Output {
    run(in_namespace(
        namespace,
        &exec_words(who, env, settings, cmd),
    ))
}

/// Runs `command` to its end within [`RUN_TIMEOUT`] and returns what it did. Its outputs must
/// close soon after it exits: a pipe still held then is a process the exec left behind.
fn run(mut command: Command) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("spawning {command:?}: {error}"));
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = sender.send(bytes);
        });
        receiver
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let partial = stderr
                .recv_timeout(Duration::from_secs(2))
                .unwrap_or_default();
            panic!(
                "{command:?} still ran after {RUN_TIMEOUT:?}; stderr:\n{}",
                String::from_utf8_lossy(&partial)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let collect = |receiver: mpsc::Receiver<Vec<u8>>, which: &str| {
        receiver
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| {
                panic!("{command:?} exited ({status}) but its {which} is still held open 5 s later: something it started outlives it")
            })
    };
    Output {
        stdout: collect(stdout, "stdout"),
        stderr: collect(stderr, "stderr"),
        status,
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that `output` ended with exit status `code`.
fn assert_code(output: &Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "{}", text(output));
}

/// A refusal: exit 2 and exactly one line on stderr that starts `imds-tun: `; the line.
fn refusal(output: &Output) -> String {
    assert_code(output, 2);
    let all = stderr(output);
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {}", text(output));
    assert!(lines[0].starts_with("imds-tun: "), "{}", text(output));
    lines[0].to_owned()
}

/// docs/guides/troubleshooting.md quotes `line` (what imds-tun printed, without its
/// `imds-tun: `) word for word, in bold, so a reader searching for it finds its cause and fix.
fn assert_troubleshooting_quotes(line: &str) {
    let guide = std::fs::read_to_string(common::repo().join("docs/guides/troubleshooting.md"))
        .expect("the troubleshooting guide");
    let message = line.strip_prefix("imds-tun: ").unwrap_or(line);
    assert!(
        guide.contains(&format!("**`{message}`**")),
        "docs/guides/troubleshooting.md does not quote {message:?}"
    );
}

/// exec's default log filter is `warn`: nothing at INFO (not even the start-up line) on
/// stderr; the warnings imds-tun gives anyway (fake credentials) may be there.
fn assert_quiet(output: &Output) {
    let said = stderr(output);
    assert!(
        !said.contains(" INFO ") && !said.contains(common::READY_LINE),
        "exec logs at warn by default: {}",
        text(output)
    );
}

/// Nothing on stderr but imds-tun's warning that it serves fake credentials (no network
/// line, nothing of pasta's, nothing at INFO).
fn assert_says_nothing_but_fake_credentials(output: &Output) {
    for line in stderr(output).lines() {
        assert!(
            line.contains(" WARN ") && line.contains("serving FAKE credentials"),
            "only the fake-credentials warning: {line:?} in {}",
            text(output)
        );
    }
}

/// A directory uid 65534 may write (CMDs meet there), removed on drop.
fn shared_dir() -> TempDir {
    let dir = TempDir::new();
    std::fs::set_permissions(dir.path(), Permissions::from_mode(0o777)).expect("chmod 0777");
    dir
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Polls until `path` exists, or panics after `timeout` with `why()`.
fn wait_for_file(path: &Path, timeout: Duration, why: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {timeout:?}: {}",
            path.display(),
            why()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Debian's `/usr/bin/python3` with boto3 (`python3-boto3`, which scripts/test.sh installs:
/// the suite's `.venv` Python may live under `/root`, which uid 65534 cannot enter).
fn debian_boto3(test: &str) -> bool {
    let found = Command::new("/usr/bin/python3")
        .args(["-c", "import boto3"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        common::skip_or_fail(
            test,
            "/usr/bin/python3 cannot import boto3; scripts/test.sh installs python3-boto3",
        );
    }
    found
}

/// `/usr/bin/pasta`, or `false` after a skip notice (a failure under CI).
fn pasta_installed(test: &str) -> bool {
    common::installed(test, "/usr/bin/pasta".into()).is_some()
}

/// The `ns/net` link text (`net:[INODE]`) of the namespace file `path`.
fn ns_link(kind: &str, path: &Path) -> String {
    let inode = std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("stat {}: {error}", path.display()))
        .ino();
    format!("{kind}:[{inode}]")
}

/// What /proc says of one live process.
#[derive(Debug)]
struct Process {
    pid: u32,
    comm: String,
    net: String,
    user: String,
    cmdline: String,
}

/// Every process whose namespaces can be read (zombies and processes gone meanwhile are not).
fn processes() -> Vec<Process> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let link = |name: &str| {
            std::fs::read_link(dir.join("ns").join(name))
                .ok()
                .map(|target| target.to_string_lossy().into_owned())
        };
        let (Some(net), Some(user)) = (link("net"), link("user")) else {
            continue;
        };
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        found.push(Process {
            pid,
            comm: comm.trim().to_owned(),
            net,
            user,
            cmdline: String::from_utf8_lossy(&cmdline).replace('\0', " "),
        });
    }
    found
}

/// Polls until no process matches `left`, or panics after `timeout` naming them.
fn wait_until_none(timeout: Duration, what: &str, left: impl Fn(&Process) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let remaining: Vec<Process> = processes().into_iter().filter(|p| left(p)).collect();
        if remaining.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {timeout:?} these are still there ({what}): {remaining:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_pasta(process: &Process) -> bool {
    process.comm.starts_with("pasta") || process.comm.starts_with("passt")
}

/// The veth pair pasta needs in the test namespace: an interface with two addresses
/// (10.88.0.1, copied into CMD's namespace by pasta, and 10.88.0.2) and a default route.
fn give_pasta_an_uplink(namespace: &Namespace) {
    namespace.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    namespace.ip(&["link", "set", "d1", "up"]);
    namespace.ip(&["addr", "add", "10.88.0.1/24", "dev", "d0"]);
    namespace.ip(&["addr", "add", "10.88.0.2/24", "dev", "d0"]);
    namespace.ip(&["link", "set", "d0", "up"]);
    namespace.ip(&["route", "add", "default", "via", "10.88.0.254"]);
}

// ---- 1. boto3 as uid 65534, exit statuses --------------------------------------------------

/// boto3's IMDS provider, then the credentials document straight from the service.
const BOTO3: &str = "import boto3\n\
credentials = boto3.Session(region_name='us-east-1').get_credentials()\n\
assert credentials is not None, 'boto3 found no credentials'\n\
frozen = credentials.get_frozen_credentials()\n\
print(credentials.method)\n\
print(frozen.access_key)\n\
print(frozen.token)\n";

#[test]
fn boto3_in_cmd_as_nobody_reads_the_mock_key_of_its_own_instance() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    if !debian_boto3(test) {
        return;
    }
    let script = format!(
        "id -u; id -g; grep CapEff /proc/self/status; readlink /proc/self/ns/user; \
         /usr/bin/python3 -c \"$1\" && curl -sS --max-time 5 {CREDENTIALS}imds-tun"
    );
    let output = exec(
        &namespace,
        Who::Nobody,
        &[],
        &["--mock-credentials", "--network", "none"],
        &["sh", "-c", &script, "sh", BOTO3],
    );
    assert_code(&output, 0);
    assert_quiet(&output);
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() > 8, "{}", text(&output));
    assert_eq!(lines[0], "65534", "CMD runs as the caller's uid");
    assert_eq!(lines[1], "65534", "and gid");
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["CapEff:", "0000000000000000"],
        "CMD has no capabilities"
    );
    let own_user = std::fs::read_link("/proc/self/ns/user").expect("own user namespace");
    assert_ne!(Path::new(lines[3]), own_user, "a user namespace of its own");
    assert_eq!(lines[4], "iam-role", "boto3's IMDS provider answered");
    let key = lines[5];
    assert!(
        key.len() == 20
            && key.starts_with("ASIA")
            && key[4..]
                .chars()
                .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)),
        "the mock key's shape (ASIA + 16 base32): {key}"
    );
    let token = base64::engine::general_purpose::STANDARD
        .decode(lines[6])
        .expect("the session token is base64");
    assert!(
        token.starts_with(imds_tun::credentials::fake::TOKEN_MARKER.as_bytes()),
        "the mock session token: {}",
        String::from_utf8_lossy(&token)
    );
    let document: serde_json::Value =
        serde_json::from_str(&lines[7..].join("\n")).expect("credentials JSON");
    assert_eq!(
        document["AccessKeyId"], key,
        "boto3's key is the one served"
    );
    assert_eq!(document["Token"], lines[6]);
}

#[test]
fn cmd_s_exit_status_is_imds_tun_s() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    let dir = TempDir::new();
    let not_executable = dir.file("not-executable", b"echo ran\n");
    std::fs::set_permissions(&not_executable, Permissions::from_mode(0o644)).expect("chmod");
    let cases: &[(&[&str], i32)] = &[
        (&["sh", "-c", "exit 7"], 7),
        (&["sh", "-c", "exit 0"], 0),
        (&["sh", "-c", "kill -KILL $$"], 128 + 9),
        (&["sh", "-c", "kill -TERM $$"], 128 + 15),
        (&["/nonexistent/imds-tun-test-cmd"], 127),
        (&[not_executable.as_str()], 126),
    ];
    for (cmd, code) in cases {
        let output = exec(
            &namespace,
            Who::Nobody,
            &[],
            &["--mock-credentials", "--network", "none"],
            cmd,
        );
        assert_eq!(
            output.status.code(),
            Some(*code),
            "{cmd:?}: {}",
            text(&output)
        );
    }
}

/// SIGINT, SIGTERM and SIGHUP to imds-tun reach CMD, and imds-tun still serves while CMD's
/// trap runs: the trap reads the instance id before it exits 42, and 42 is imds-tun's status.
#[test]
fn sigint_sigterm_and_sighup_are_forwarded_and_the_service_answers_until_cmd_exits() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    let dir = shared_dir();
    let here = path_str(dir.path());
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let name = signal.as_str().trim_start_matches("SIG");
        let (ready, got) = (format!("{here}/{name}.ready"), format!("{here}/{name}.got"));
        let script = format!(
            "trap 'echo {name} $(curl -sS --max-time 5 {INSTANCE_ID}) > {got}; exit 42' {name}; \
             touch {ready}; i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; exit 3"
        );
        let words = exec_words(
            Who::Nobody,
            &[],
            &[
                "--mock-credentials",
                "--network",
                "none",
                "--instance-id",
                "i-0516a1000000000aa",
            ],
            &["sh", "-c", &script],
        );
        let mut child = ImdsTun::spawn(in_namespace(&namespace, &words), &Spawn::default(), test);
        wait_for_file(Path::new(&ready), Duration::from_secs(60), || {
            format!("CMD started; imds-tun's stderr:\n{}", child.stderr())
        });
        child.signal(signal);
        let status = child.wait_exit(Duration::from_secs(20));
        common::assert_exit_code(&child, status, 42);
        assert_eq!(
            std::fs::read_to_string(&got).unwrap_or_default(),
            format!("{name} i-0516a1000000000aa\n"),
            "{signal}: CMD's trap ran and read the metadata service; imds-tun: {}",
            child.stderr()
        );
    }
}

/// CMD is an ordinary command in a pipeline: it reads what is piped into imds-tun exec and
/// writes to its stdout.
#[test]
fn cmd_reads_the_pipe_into_exec_and_writes_to_its_stdout() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    let mut words: Vec<String> = ["sh", "-c", "printf from-the-pipe | \"$@\"", "sh"]
        .map(str::to_owned)
        .to_vec();
    words.extend(exec_words(
        Who::Nobody,
        &[],
        &["--network", "none"],
        &["tr", "a-z", "A-Z"],
    ));
    let output = run(in_namespace(&namespace, &words));
    assert_code(&output, 0);
    assert_eq!(stdout(&output), "FROM-THE-PIPE", "{}", text(&output));
}

/// `RUST_LOG` overrides exec's default `warn`: with `info`, the start-up line is there.
#[test]
fn rust_log_overrides_exec_s_default_log_filter() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    let output = exec(
        &namespace,
        Who::Nobody,
        &["RUST_LOG=info".to_owned()],
        &["--mock-credentials", "--network", "none"],
        &["true"],
    );
    assert_code(&output, 0);
    assert!(
        stderr(&output).contains(common::READY_LINE),
        "{}",
        text(&output)
    );
}

/// `--ipv6` in exec: CMD reaches fd00:ec2::254 as well as 169.254.169.254; the test namespace
/// gets no IPv6 claim.
#[test]
fn with_ipv6_cmd_reaches_the_ipv6_endpoint_too() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    let script = format!(
        "curl -sS -g --max-time 5 http://[fd00:ec2::254]/latest/meta-data/instance-id; echo; \
         curl -sS --max-time 5 {INSTANCE_ID}"
    );
    let output = exec(
        &namespace,
        Who::Nobody,
        &[],
        &[
            "--ipv6",
            "--network",
            "none",
            "--instance-id",
            "i-0000000000000f6f6",
        ],
        &["sh", "-c", &script],
    );
    assert_code(&output, 0);
    assert_eq!(
        stdout(&output),
        "i-0000000000000f6f6\ni-0000000000000f6f6",
        "{}",
        text(&output)
    );
    assert!(
        namespace.ipv6_claims().is_empty(),
        "{:?}",
        namespace.ipv6_claims()
    );
}

/// `--ecs` in exec: the ECS endpoint (169.254.170.2) answers in CMD's namespace, at the URI
/// `imds-tun env --ecs` gives, with the same mock key as the EC2 path; the caller's namespace
/// has no route to it.
#[test]
fn with_ecs_cmd_reads_the_container_endpoint_too() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    let binary = common::binary();
    let script = format!(
        "eval \"$({} env --ecs imds-tun)\"; \
         curl -sS --max-time 5 \"http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI\"; \
         echo; curl -sS --max-time 5 {CREDENTIALS}imds-tun",
        path_str(&binary)
    );
    let output = exec(
        &namespace,
        Who::Nobody,
        &[],
        &["--mock-credentials", "--ecs", "--network", "none"],
        &["sh", "-c", &script],
    );
    assert_code(&output, 0);
    let out = stdout(&output);
    let (ecs, ec2) = out
        .split_once("}\n")
        .unwrap_or_else(|| panic!("two documents: {}", text(&output)));
    let ecs: serde_json::Value =
        serde_json::from_str(&format!("{ecs}}}")).expect("the ECS document");
    let ec2: serde_json::Value = serde_json::from_str(ec2).expect("the EC2 document");
    assert!(
        ecs["AccessKeyId"]
            .as_str()
            .is_some_and(|key| key.starts_with("ASIA")),
        "{ecs}"
    );
    assert_eq!(ecs["AccessKeyId"], ec2["AccessKeyId"], "one role, one key");
    let route = namespace.exec(&["ip", "route", "get", "169.254.170.2"]);
    assert!(
        !route.status.success() || !stdout(&route).contains("imds"),
        "the caller's namespace does not route to it: {}",
        text(&route)
    );
}

// ---- 2. 16 execs at once ---------------------------------------------------------------------

/// 16 execs as uid 65534, each with its own `--instance-id`, all alive at once (each CMD reads
/// its id, waits until all 16 have, and reads again): each sees only its own, never the test
/// namespace's imds-tun, which still serves its own id to root afterwards.
#[test]
fn sixteen_parallel_execs_each_see_only_their_own_instance() {
    const EXECS: usize = 16;
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    let host = common::start(&namespace, &["--instance-id", HOST_ID]);
    let dir = shared_dir();
    let here = path_str(dir.path()).to_owned();
    let python_read = format!(
        "/usr/bin/python3 -c \"import urllib.request; \
         print(urllib.request.urlopen('{INSTANCE_ID}', timeout=5).read().decode())\""
    );
    let curl_read = format!("curl -sS --max-time 5 {INSTANCE_ID}");
    let runs: Vec<_> = (0..EXECS)
        .map(|n| {
            let id = format!("i-0e{n:015x}");
            let read = if n % 2 == 0 { &curl_read } else { &python_read };
            let script = format!(
                "first=$({read}); touch {here}/{n}; i=0; \
                 while [ \"$(ls {here} | wc -l)\" -lt {EXECS} ] && [ $i -lt 900 ]; do \
                 sleep 0.1; i=$((i+1)); done; \
                 second=$({read}); echo \"$first $second $(ls {here} | wc -l)\""
            );
            let words = exec_words(
                Who::Nobody,
                &[],
                &["--network", "none", "--instance-id", &id],
                &["sh", "-c", &script],
            );
            let command = in_namespace(&namespace, &words);
            (id, std::thread::spawn(move || run(command)))
        })
        .collect();
    for (id, thread) in runs {
        let output = thread.join().expect("the run's thread");
        assert_code(&output, 0);
        assert_eq!(
            stdout(&output).trim(),
            format!("{id} {id} {EXECS}"),
            "{}",
            text(&output)
        );
    }
    let root = namespace.exec(&["curl", "-sS", "--max-time", "5", INSTANCE_ID]);
    assert_eq!(stdout(&root), HOST_ID, "{}", text(&root));
    drop(host);
}

// ---- 3. moto's STS, called from outside CMD's namespace --------------------------------------

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/app";
const SESSION: &str = "exec-e2e";
const SOURCE_KEY: &str = "AKIAI44QH8DHBEXAMPLE";
const SOURCE_SECRET: &str = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY";

/// moto runs on 127.0.0.1 of the test namespace. CMD (with `--network none`) cannot reach it,
/// yet reads keys moto issued: imds-tun called STS from the caller's network. moto then names
/// those keys' identity: the assumed role and session.
#[test]
fn real_credentials_from_moto_reach_cmd_through_sts_outside_its_namespace() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    let Some(python) = common::installed(test, common::repo().join(".venv/bin/python")) else {
        return;
    };
    let Some(moto) = common::Moto::start(&namespace, test) else {
        return;
    };
    let env = [
        format!("AWS_ENDPOINT_URL_STS={}", common::Moto::endpoint()),
        "AWS_REGION=us-east-1".to_owned(),
        format!("AWS_ACCESS_KEY_ID={SOURCE_KEY}"),
        format!("AWS_SECRET_ACCESS_KEY={SOURCE_SECRET}"),
    ];
    let script = format!(
        "curl -sS --max-time 10 {CREDENTIALS}app; echo; \
         curl -s --max-time 3 -o /dev/null -w 'moto %{{http_code}}' {}/moto-api/; echo",
        common::Moto::endpoint()
    );
    let output = exec(
        &namespace,
        Who::Nobody,
        &env,
        &[
            "--role-arn",
            ROLE_ARN,
            "--role-session-name",
            SESSION,
            "--network",
            "none",
        ],
        &["sh", "-c", &script],
    );
    assert_code(&output, 0);
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().collect();
    let (moto_line, json) = lines.split_last().expect("CMD's output");
    assert_eq!(
        *moto_line,
        "moto 000",
        "CMD itself cannot reach moto: {}",
        text(&output)
    );
    let document: serde_json::Value =
        serde_json::from_str(&json.join("\n")).expect("credentials JSON");
    assert_eq!(document["Code"], "Success", "{document}");
    let key = document["AccessKeyId"].as_str().expect("a key");
    let secret = document["SecretAccessKey"].as_str().expect("a secret");
    let token = document["Token"].as_str().expect("a token");
    assert!(key.starts_with("ASIA") && key != SOURCE_KEY, "{key}");
    assert!(moto.count("AssumeRole") >= 1, "{:?}", moto.actions());

    let who = namespace.exec(&[
        "env",
        "-i",
        "HOME=/nonexistent",
        "AWS_CONFIG_FILE=/nonexistent/config",
        "AWS_SHARED_CREDENTIALS_FILE=/nonexistent/credentials",
        python.to_str().expect("UTF-8 path"),
        "-c",
        "import boto3, sys\n\
         sts = boto3.client('sts', region_name='us-east-1', endpoint_url=sys.argv[1],\n\
             aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3],\n\
             aws_session_token=sys.argv[4])\n\
         print(sts.get_caller_identity()['Arn'])",
        &common::Moto::endpoint(),
        key,
        secret,
        token,
    ]);
    assert_eq!(
        stdout(&who).trim(),
        format!("arn:aws:sts::123456789012:assumed-role/app/{SESSION}"),
        "moto knows CMD's keys as the assumed role: {}",
        text(&who)
    );
}

/// `--gcp-access-token-command` runs in the caller's network namespace, not CMD's: the command
/// puts the inode of its own network namespace into the token it prints, and CMD, reading the
/// token from the GCE path, finds the caller's namespace there and not its own.
#[test]
fn the_token_command_runs_in_the_caller_s_namespace() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    let scripts = TempDir::new();
    let command = scripts.path().join("print-access-token");
    std::fs::write(
        &command,
        "#!/bin/sh\nprintf 'ya29.%s\\n' \"$(readlink /proc/self/ns/net | tr -dc 0-9)\"\n",
    )
    .expect("the token command");
    std::fs::set_permissions(&command, Permissions::from_mode(0o755)).expect("chmod");
    let script = "readlink /proc/self/ns/net | tr -dc 0-9; echo; \
        curl -sS --max-time 10 -H 'Metadata-Flavor: Google' \
        http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token";
    let output = exec(
        &namespace,
        Who::Nobody,
        &[],
        &[
            "--gcp-project",
            "exec-e2e",
            "--gcp-access-token-command",
            path_str(&command),
            "--mock-credentials",
            "--network",
            "none",
        ],
        &["sh", "-c", script],
    );
    assert_code(&output, 0);
    let out = stdout(&output);
    let (cmd_net, document) = out
        .split_once('\n')
        .unwrap_or_else(|| panic!("two parts: {}", text(&output)));
    let document: serde_json::Value = serde_json::from_str(document)
        .unwrap_or_else(|error| panic!("token JSON ({error}): {}", text(&output)));
    let caller = ns_link("net", &namespace.path());
    let caller: String = caller.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(
        document["access_token"],
        format!("ya29.{caller}"),
        "the command ran in the caller's namespace: {}",
        text(&output)
    );
    assert_ne!(cmd_net, caller, "CMD is elsewhere");
}

/// `--upstream` is reached over the caller's network: an imds-tun on the caller's 127.0.0.1:8080
/// (out of CMD's reach with `--network none`) answers what CMD asks.
#[test]
fn upstream_on_the_caller_s_loopback_answers_cmd() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    let upstream = common::start(
        &namespace,
        &[
            "--no-tun",
            "--listen",
            "127.0.0.1:8080",
            "--instance-id",
            "i-000000000000a11ce",
        ],
    );
    let script = format!(
        "curl -sS --max-time 10 {INSTANCE_ID}; echo; \
         curl -s -o /dev/null -w 'direct %{{http_code}}' --max-time 3 http://127.0.0.1:8080/ || :"
    );
    let output = exec(
        &namespace,
        Who::Nobody,
        &[],
        &["--upstream", "http://127.0.0.1:8080", "--network", "none"],
        &["sh", "-c", &script],
    );
    assert_code(&output, 0);
    assert_eq!(
        stdout(&output),
        "i-000000000000a11ce\ndirect 000",
        "{}",
        text(&output)
    );
    drop(upstream);
}

// ---- 4. the network: pasta, --network none, no pasta ----------------------------------------

/// Two HTTP servers in the test namespace, each serving one marker file: on 10.88.0.2:8081 and
/// on 127.0.0.1:8082. Killed on drop.
struct Servers {
    children: Vec<std::process::Child>,
    _dir: TempDir,
}

impl Servers {
    fn start(namespace: &Namespace) -> Servers {
        let dir = TempDir::new();
        dir.file("outside", b"reached-10.88.0.2");
        dir.file("loopback", b"reached-host-loopback");
        let children = [("10.88.0.2", 8081), ("127.0.0.1", 8082)]
            .iter()
            .map(|(address, port)| {
                let child = Command::new("ip")
                    .args(["netns", "exec", namespace.name(), "/usr/bin/python3"])
                    .args(["-m", "http.server", "--bind", address, &port.to_string()])
                    .arg("--directory")
                    .arg(dir.path())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("python3 -m http.server");
                let url = format!("http://{address}:{port}/outside");
                let deadline = Instant::now() + Duration::from_secs(20);
                while !namespace
                    .exec(&["curl", "-sf", "--max-time", "1", &url])
                    .status
                    .success()
                {
                    assert!(Instant::now() < deadline, "{url} never answered");
                    std::thread::sleep(Duration::from_millis(100));
                }
                child
            })
            .collect();
        Servers {
            children,
            _dir: dir,
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// CMD's script: the two servers (the second through pasta's gateway, mapped to the host's
/// loopback) and the metadata service, one line each; curl's failures as `failed`.
const REACH: &str = "curl -s --max-time 5 http://10.88.0.2:8081/outside || printf failed; echo; \
    curl -s --max-time 5 http://10.88.0.254:8082/loopback || printf failed; echo; \
    curl -sS --max-time 5 http://169.254.169.254/latest/meta-data/instance-id; echo";

#[test]
fn with_pasta_cmd_reaches_the_network_and_with_network_none_only_the_metadata_service() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    if !pasta_installed(test) {
        return;
    }
    give_pasta_an_uplink(&namespace);
    let _servers = Servers::start(&namespace);
    let id = &["--instance-id", "i-0ba5e000000000001"];

    // pasta found on PATH: the default.
    for network in [&[][..], &["--network", "pasta"][..]] {
        let settings = [id.as_slice(), network].concat();
        let output = exec(
            &namespace,
            Who::Nobody,
            &[],
            &settings,
            &["sh", "-c", REACH],
        );
        assert_code(&output, 0);
        assert_eq!(
            stdout(&output),
            "reached-10.88.0.2\nreached-host-loopback\ni-0ba5e000000000001\n",
            "{network:?}: {}",
            text(&output)
        );
        // pasta writes to stderr even with --quiet (a failed syslog write, "No external
        // routable interface for IPv6"); none of it may reach CMD's stderr.
        assert_says_nothing_but_fake_credentials(&output);
    }

    let settings = [id.as_slice(), &["--network", "none"]].concat();
    let output = exec(
        &namespace,
        Who::Nobody,
        &[],
        &settings,
        &["sh", "-c", REACH],
    );
    assert_code(&output, 0);
    assert_eq!(
        stdout(&output),
        "failed\nfailed\ni-0ba5e000000000001\n",
        "{}",
        text(&output)
    );
    assert_says_nothing_but_fake_credentials(&output);
}

#[test]
fn without_pasta_on_path_exec_warns_in_one_line_and_network_pasta_is_refused() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    // A PATH with what CMD uses and no pasta.
    let tools = TempDir::new();
    for tool in ["sh", "curl", "cat"] {
        std::os::unix::fs::symlink(Path::new("/usr/bin").join(tool), tools.path().join(tool))
            .or_else(|_| {
                std::os::unix::fs::symlink(Path::new("/bin").join(tool), tools.path().join(tool))
            })
            .expect("symlink");
    }
    std::fs::set_permissions(tools.path(), Permissions::from_mode(0o755)).expect("chmod");
    let path = format!("PATH={}", tools.path().display());
    let id = "i-0000000000000dead";

    let output = exec(
        &namespace,
        Who::Nobody,
        std::slice::from_ref(&path),
        &["--instance-id", id],
        &["sh", "-c", &format!("curl -sS --max-time 5 {INSTANCE_ID}")],
    );
    assert_code(&output, 0);
    assert_eq!(stdout(&output), id, "the metadata service still works");
    let said = stderr(&output);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&NO_PASTA),
        "the warning, first: {}",
        text(&output)
    );
    assert_eq!(
        lines.iter().filter(|line| line.contains("pasta")).count(),
        1,
        "one line: {}",
        text(&output)
    );

    let output = exec(
        &namespace,
        Who::Nobody,
        std::slice::from_ref(&path),
        &["--network", "pasta"],
        &["true"],
    );
    let line = refusal(&output);
    assert!(line.contains("pasta"), "{line}");
    assert_troubleshooting_quotes(&line);
    assert_troubleshooting_quotes(NO_PASTA);
    assert!(namespace.tun_links().is_empty());
}

// ---- 5. ctl from inside ---------------------------------------------------------------------

/// `imds-tun ctl spot --action terminate` run by exec A's CMD: A's instance announces it; exec B,
/// alive at the same time, and the test namespace's imds-tun still answer 404.
#[test]
fn ctl_spot_from_cmd_changes_only_its_own_instance() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    let host = common::start(&namespace, &["--instance-id", HOST_ID]);
    let dir = shared_dir();
    let here = path_str(dir.path()).to_owned();
    let binary = common::binary();
    let binary = path_str(&binary);
    let code = format!("curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 {SPOT}");
    let a = format!(
        "{binary} ctl spot --action terminate >/dev/null; echo \"ctl $?\"; \
         curl -sS --max-time 5 {SPOT}; echo; touch {here}/a-done; i=0; \
         while [ ! -e {here}/go ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; {code}"
    );
    let b = format!(
        "i=0; while [ ! -e {here}/a-done ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; \
         {code}"
    );
    let spawn = |script: String| {
        let words = exec_words(
            Who::Nobody,
            &[],
            &["--network", "none"],
            &["sh", "-c", &script],
        );
        let command = in_namespace(&namespace, &words);
        std::thread::spawn(move || run(command))
    };
    let a = spawn(a);
    let b = spawn(b).join().expect("B's thread");
    assert_code(&b, 0);
    assert_eq!(stdout(&b), "404", "B, beside A: {}", text(&b));
    let host_code = namespace.exec(&["sh", "-c", &code]);
    assert_eq!(
        stdout(&host_code),
        "404",
        "the host's: {}",
        text(&host_code)
    );
    std::fs::write(dir.path().join("go"), b"").expect("go");
    let a = a.join().expect("A's thread");
    assert_code(&a, 0);
    let out = stdout(&a);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{}", text(&a));
    assert_eq!(lines[0], "ctl 0", "{}", text(&a));
    let action: serde_json::Value = serde_json::from_str(lines[1]).expect("instance-action JSON");
    assert_eq!(action["action"], "terminate", "{action}");
    assert_eq!(lines[2], "200", "A's notice is still there at its end");
    drop(host);
}

/// The exec's control socket lives in CMD's namespace only: `imds-tun ctl` in the caller's
/// namespace, while the exec runs, finds no imds-tun there.
#[test]
fn ctl_in_the_caller_s_namespace_does_not_reach_an_exec_s_instance() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    let dir = shared_dir();
    let here = path_str(dir.path()).to_owned();
    let script = format!(
        "touch {here}/ready; i=0; while [ ! -e {here}/go ] && [ $i -lt 300 ]; do sleep 0.1; \
         i=$((i+1)); done; curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 {SPOT}"
    );
    let words = exec_words(
        Who::Nobody,
        &[],
        &["--network", "none"],
        &["sh", "-c", &script],
    );
    let command = in_namespace(&namespace, &words);
    let exec_run = std::thread::spawn(move || run(command));
    wait_for_file(&dir.path().join("ready"), Duration::from_secs(60), || {
        "CMD started".to_owned()
    });
    let binary = common::binary();
    let outside = namespace.exec(&[path_str(&binary), "ctl", "spot", "--action", "terminate"]);
    std::fs::write(dir.path().join("go"), b"").expect("go");
    assert_eq!(outside.status.code(), Some(1), "{}", text(&outside));
    assert!(
        stderr(&outside).contains("no imds-tun is running in this network namespace"),
        "{}",
        text(&outside)
    );
    let inside = exec_run.join().expect("the exec's thread");
    assert_code(&inside, 0);
    assert_eq!(stdout(&inside), "404", "no notice reached CMD's instance");
}

// ---- 6. nothing left behind --------------------------------------------------------------------

/// What an exec's CMD reported of itself: its network and user namespaces.
struct Inside {
    net: String,
    user: String,
}

/// The CMD that reports itself into `dir` (`net`, `user`, then `ready`), then runs `then`.
fn reporting_cmd(dir: &str, then: &str) -> String {
    format!(
        "readlink /proc/self/ns/net > {dir}/net; readlink /proc/self/ns/user > {dir}/user; \
         touch {dir}/ready; {then}"
    )
}

fn inside(dir: &Path, child: &ImdsTun) -> Inside {
    wait_for_file(&dir.join("ready"), Duration::from_secs(60), || {
        format!("CMD started; imds-tun's stderr:\n{}", child.stderr())
    });
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .expect("CMD's report")
            .trim()
            .to_owned()
    };
    Inside {
        net: read("net"),
        user: read("user"),
    }
}

/// After: no process in CMD's network or user namespace (so neither exists any more: nothing
/// holds them), none in the test namespace (imds-tun, pasta, a guard), no TUN there.
fn assert_nothing_left(namespace: &Namespace, namespace_net: &str, cmd: &Inside) {
    wait_until_none(Duration::from_secs(5), "the exec's processes", |p| {
        p.net == cmd.net || p.user == cmd.user || p.net == namespace_net
    });
    let holders: Vec<String> = processes()
        .iter()
        .filter_map(|p| {
            let fds = std::fs::read_dir(format!("/proc/{}/fd", p.pid)).ok()?;
            let holds = fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|target| {
                    let target = target.to_string_lossy();
                    target == cmd.net || target == cmd.user
                })
            });
            holds.then(|| format!("{} {}", p.pid, p.cmdline))
        })
        .collect();
    assert!(
        holders.is_empty(),
        "descriptors hold the namespaces: {holders:?}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&cmd.net), "a mount holds {}", cmd.net);
    let mut links = namespace.links();
    links.sort();
    assert_eq!(
        links,
        ["d0", "d1", "lo"],
        "no TUN left in the test namespace"
    );
}

/// How the exec ends in [`leaves_nothing`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// CMD exits 0 by itself.
    CmdExits,
    /// CMD exits 0 by itself, leaving a child of its own running in the background.
    CmdExitsLeavingAChild,
    /// imds-tun is SIGKILLed while CMD sleeps, ignoring SIGTERM, SIGINT and SIGHUP.
    Sigkill,
}

/// An exec as uid 65534 (with pasta, the default, or `--network none`) whose CMD reports its
/// namespaces and then waits; while it runs, CMD (and pasta) are where they should be; after
/// `end`, nothing is left.
fn leaves_nothing(test: &str, namespace: &Namespace, pasta: bool, end: End) {
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    if pasta && !pasta_installed(test) {
        return;
    }
    give_pasta_an_uplink(namespace);
    let namespace_net = ns_link("net", &namespace.path());
    let dir = shared_dir();
    let here = path_str(dir.path());
    let wait =
        format!("i=0; while [ ! -e {here}/go ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done");
    let then = match end {
        End::CmdExits => wait.clone(),
        End::CmdExitsLeavingAChild => format!("sleep 300 & {wait}"),
        // CMD ignores every signal it may ignore: only SIGKILL ends it.
        End::Sigkill => "trap '' TERM INT HUP; exec sleep 300".to_owned(),
    };
    let script = reporting_cmd(here, &then);
    let mut settings = vec!["--mock-credentials"];
    if !pasta {
        settings.extend(["--network", "none"]);
    }
    let words = exec_words(Who::Nobody, &[], &settings, &["sh", "-c", &script]);
    let mut child = ImdsTun::spawn(in_namespace(namespace, &words), &Spawn::default(), test);
    let cmd = inside(dir.path(), &child);

    let all = processes();
    assert_ne!(cmd.net, namespace_net);
    assert!(
        all.iter().any(|p| p.net == cmd.net && p.user == cmd.user),
        "CMD is in {} and {}: {all:#?}",
        cmd.net,
        cmd.user
    );
    assert_eq!(
        all.iter().any(|p| is_pasta(p) && p.net == namespace_net),
        pasta,
        "pasta runs in the test namespace {namespace_net} only with pasta: {all:#?}"
    );
    match end {
        End::CmdExits | End::CmdExitsLeavingAChild => {
            std::fs::write(dir.path().join("go"), b"").expect("go");
            let status = child.wait_exit(Duration::from_secs(20));
            common::assert_exit_code(&child, status, 0);
        }
        End::Sigkill => {
            child.signal(Signal::SIGKILL);
            let status = child.wait_exit(Duration::from_secs(10));
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(9),
                "{status}"
            );
        }
    }
    assert_nothing_left(namespace, &namespace_net, &cmd);
}

#[test]
fn nothing_is_left_after_cmd_exits() {
    let namespace = namespace!();
    leaves_nothing(test_name!(), &namespace, true, End::CmdExits);
}

#[test]
fn nothing_is_left_after_imds_tun_is_sigkilled() {
    let namespace = namespace!();
    leaves_nothing(test_name!(), &namespace, true, End::Sigkill);
}

#[test]
fn nothing_is_left_after_cmd_exits_leaving_a_background_child() {
    let namespace = namespace!();
    leaves_nothing(test_name!(), &namespace, true, End::CmdExitsLeavingAChild);
}

#[test]
fn nothing_is_left_after_cmd_exits_with_network_none() {
    let namespace = namespace!();
    leaves_nothing(test_name!(), &namespace, false, End::CmdExits);
}

#[test]
fn nothing_is_left_after_imds_tun_is_sigkilled_with_network_none() {
    let namespace = namespace!();
    leaves_nothing(test_name!(), &namespace, false, End::Sigkill);
}

// ---- 7. refusals --------------------------------------------------------------------------------

/// `user.max_user_namespaces = 0`, set by the root of a user namespace for itself (the test
/// maps 0 and 65534 into it), then exec as 65534 there: the kernel says ENOSPC.
#[test]
fn max_user_namespaces_0_is_refused_in_one_line() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    let exec_line = exec_words(Who::Nobody, &[], &["--network", "none"], &["true"]).join(" ");
    let script = format!(
        "i=0; while [ -z \"$(cat /proc/self/gid_map)\" ] && [ $i -lt 500 ]; do \
         sleep 0.02; i=$((i+1)); done; \
         sh -c 'echo 0 > /proc/sys/user/max_user_namespaces' || exit 99; exec {exec_line}"
    );
    let mut command = in_namespace(
        &namespace,
        &[
            "unshare".into(),
            "-U".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            script,
        ],
    );
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().expect("unshare -U");
    let pid = child.id();
    // unshare and `ip netns exec` exec, so this pid becomes the shell in the new user
    // namespace: once it is there (not before, or the write is for the initial one), map root
    // and 65534. The shell then starts a new one to write the sysctl: it was itself started
    // before the map, so it holds no capability there.
    let own = std::fs::read_link("/proc/self/ns/user").expect("own user namespace");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{pid}/ns/user")).is_ok_and(|user| user == own) {
        assert!(
            Instant::now() < deadline,
            "unshare -U made no user namespace"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for map in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{map}"), "0 0 1\n65534 65534 1\n")
            .unwrap_or_else(|error| panic!("writing /proc/{pid}/{map}: {error}"));
    }
    let output = child.wait_with_output().expect("the refusal's output");
    let line = refusal(&output);
    assert!(line.contains("user.max_user_namespaces = 0"), "{line}");
    assert_troubleshooting_quotes(&line);
    assert!(
        line.contains("sysctl") && line.contains("root"),
        "what to do: {line}"
    );
}

/// Runs exec as 65534 in a chroot of the whole tree whose `/proc/sys/kernel` is a tmpfs holding
/// `files` (name, content): the kernel refuses a chroot a user namespace (EPERM).
fn in_chroot_with_sysctls(namespace: &Namespace, files: &[(&str, &str)]) -> Output {
    let dir = TempDir::new();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    let root = path_str(&root);
    let writes: String = files
        .iter()
        .map(|(name, value)| format!("echo {value} > {root}/proc/sys/kernel/{name}; "))
        .collect();
    let exec_line = exec_words(Who::Nobody, &[], &["--network", "none"], &["true"]).join(" ");
    let script = format!(
        "set -e; mount --make-rprivate /; mount --rbind / {root}; \
         mount -t tmpfs -o size=64k sysk {root}/proc/sys/kernel; {writes}\
         exec chroot {root} {exec_line}"
    );
    run(in_namespace(
        namespace,
        &[
            "unshare".into(),
            "-m".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            script,
        ],
    ))
}

#[test]
fn unprivileged_userns_clone_0_is_refused_in_one_line() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    let output = in_chroot_with_sysctls(&namespace, &[("unprivileged_userns_clone", "0")]);
    let line = refusal(&output);
    assert!(
        line.contains("kernel.unprivileged_userns_clone = 0"),
        "{line}"
    );
    assert_troubleshooting_quotes(&line);
    assert!(
        line.contains("sysctl") && line.contains("root"),
        "what to do: {line}"
    );
}

#[test]
fn apparmor_restrict_unprivileged_userns_1_is_refused_in_one_line() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    let output = in_chroot_with_sysctls(
        &namespace,
        &[("apparmor_restrict_unprivileged_userns", "1")],
    );
    let line = refusal(&output);
    assert!(
        line.contains("kernel.apparmor_restrict_unprivileged_userns = 1"),
        "{line}"
    );
    assert_troubleshooting_quotes(&line);
    assert!(
        line.contains("sysctl") && line.contains("root"),
        "what to do: {line}"
    );
}

/// EPERM that no sysctl explains (neither file, or both set to allow): the generic line.
#[test]
fn a_refused_user_namespace_no_sysctl_explains_gives_the_generic_line() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    for files in [
        &[][..],
        &[
            ("unprivileged_userns_clone", "1"),
            ("apparmor_restrict_unprivileged_userns", "0"),
        ][..],
    ] {
        let output = in_chroot_with_sysctls(&namespace, files);
        let line = refusal(&output);
        assert!(
            line.contains("the kernel refused a new user namespace"),
            "{files:?}: {line}"
        );
        assert!(
            !line.contains("kernel.unprivileged_userns_clone")
                && !line.contains("kernel.apparmor_restrict"),
            "{files:?}: no sysctl is to blame: {line}"
        );
        assert!(line.contains("root"), "what to do: {line}");
        assert_troubleshooting_quotes(&line);
    }
}

/// Runs `sys.argv[1:]` with a seccomp filter that makes `ioctl(TUNSETIFF)` fail with EPERM: the
/// user namespace is made, and creating the TUN inside it is refused, as when Ubuntu's AppArmor
/// gives an unprivileged user namespace no capability (python3-seccomp).
const DENY_TUNSETIFF: &str = "import errno, os, sys, seccomp\n\
rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)\n\
rules.add_rule(seccomp.ERRNO(errno.EPERM), 'ioctl', seccomp.Arg(1, seccomp.EQ, 0x400454CA))\n\
rules.load()\n\
os.execvp(sys.argv[1], sys.argv[1:])\n";

/// Ubuntu 24.04's failure mode: `unshare(CLONE_NEWUSER)` succeeds and a later step is refused
/// with EPERM. With `kernel.apparmor_restrict_unprivileged_userns` at 1 (a tmpfs over
/// `/proc/sys/kernel` in a private mount namespace, no chroot) exec names it; without the file,
/// the step and the error, exit 1.
#[test]
fn eperm_after_the_user_namespace_exists_names_apparmor_when_its_switch_is_on() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    let seccomp = Command::new("/usr/bin/python3")
        .args(["-c", "import seccomp"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !seccomp {
        common::skip_or_fail(
            test,
            "/usr/bin/python3 cannot import seccomp; scripts/test.sh installs python3-seccomp",
        );
        return;
    }
    let exec_line = exec_words(Who::Nobody, &[], &["--network", "none"], &["true"]).join(" ");
    let run_with = |sysctl: &str| {
        let script = format!(
            "set -e; mount -t tmpfs -o size=64k sysk /proc/sys/kernel; {sysctl} \
             exec /usr/bin/python3 -c \"$0\" {exec_line}"
        );
        run(in_namespace(
            &namespace,
            &[
                "unshare".into(),
                "-m".into(),
                "--".into(),
                "sh".into(),
                "-c".into(),
                script,
                DENY_TUNSETIFF.into(),
            ],
        ))
    };
    let output = run_with("echo 1 > /proc/sys/kernel/apparmor_restrict_unprivileged_userns;");
    let line = refusal(&output);
    assert!(
        line.contains("kernel.apparmor_restrict_unprivileged_userns = 1"),
        "{line}"
    );
    assert_troubleshooting_quotes(&line);

    let output = run_with("");
    assert_code(&output, 1);
    let said = stderr(&output);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {}", text(&output));
    assert!(
        lines[0].starts_with("imds-tun: ")
            && lines[0].contains("creating the TUN device")
            && lines[0].contains("Operation not permitted")
            && !lines[0].contains("apparmor"),
        "the step and the error, no AppArmor: {}",
        text(&output)
    );
}

/// A 0600 `/dev/net/tun`, bound over the device in a private mount namespace for this one run.
#[test]
fn a_0600_dev_net_tun_is_refused_in_one_line() {
    let namespace = namespace!();
    let dir = TempDir::new();
    let here = path_str(dir.path());
    let exec_line = exec_words(Who::Nobody, &[], &["--network", "none"], &["true"]).join(" ");
    let script = format!(
        "set -e; mount -t tmpfs tmpfs {here}; mknod {here}/tun c 10 200; chmod 0600 {here}/tun; \
         mount --bind {here}/tun /dev/net/tun; exec {exec_line}"
    );
    let output = run(in_namespace(
        &namespace,
        &[
            "unshare".into(),
            "-m".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            script,
        ],
    ));
    let line = refusal(&output);
    assert!(line.contains("cannot open /dev/net/tun"), "{line}");
    assert!(line.contains("0666"), "{line}");
    assert_troubleshooting_quotes(&line);
    assert!(line.contains("root"), "what to do: {line}");
}

/// `--no-tun`, `--listen` and `--user` make no sense for exec; `--` is required.
#[test]
fn exec_refuses_the_flags_it_cannot_honour() {
    let namespace = namespace!();
    for (flags, word) in [
        (&["--no-tun"][..], "--no-tun"),
        (&["--listen", "127.0.0.1:0"][..], "--listen"),
        (&["--user", "nobody"][..], "--user"),
    ] {
        let output = exec(&namespace, Who::Root, &[], flags, &["true"]);
        let line = refusal(&output);
        assert!(line.contains(word), "{flags:?}: {line}");
        if word == "--no-tun" {
            assert_troubleshooting_quotes(&line);
        }
    }
    let mut words = exec_words(Who::Root, &[], &["--network", "none"], &["true"]);
    words.retain(|word| word != "--");
    let output = run(in_namespace(&namespace, &words));
    assert_code(&output, 2);
    assert!(namespace.tun_links().is_empty());
}

/// `--config FILE` works as for `imds-tun` itself (here IMDSv2 required and an instance id from
/// the file, read as the user running exec), and what exec cannot honour is refused from the
/// file as from the flags.
#[test]
fn exec_reads_a_config_file_and_refuses_listen_from_it_too() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    let dir = shared_dir();
    let config = dir.file(
        "config.json",
        br#"{"instance_id": "i-0000000000000c0f1", "imdsv2": "required"}"#,
    );
    std::fs::set_permissions(&config, Permissions::from_mode(0o644)).expect("chmod");
    let script = format!(
        "curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 {INSTANCE_ID}; echo; \
         T=$(curl -sS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
         http://169.254.169.254/latest/api/token); \
         curl -sS --max-time 5 -H \"X-aws-ec2-metadata-token: $T\" {INSTANCE_ID}"
    );
    let output = exec(
        &namespace,
        Who::Nobody,
        &[],
        &["--config", &config, "--network", "none"],
        &["sh", "-c", &script],
    );
    assert_code(&output, 0);
    assert_eq!(
        stdout(&output),
        "401\ni-0000000000000c0f1",
        "tokenless refused, the file's id with a token: {}",
        text(&output)
    );

    let listening = dir.file("listen.json", br#"{"listen": ["127.0.0.1:8080"]}"#);
    std::fs::set_permissions(&listening, Permissions::from_mode(0o644)).expect("chmod");
    let output = exec(
        &namespace,
        Who::Nobody,
        &[],
        &["--config", &listening, "--network", "none"],
        &["true"],
    );
    let line = refusal(&output);
    assert!(line.contains("--listen"), "{line}");
}

// ---- 8. as root ------------------------------------------------------------------------------

/// Root needs no user namespace: CMD runs as root in the initial user namespace, in a network
/// namespace of its own with its own instance.
#[test]
fn as_root_exec_needs_no_user_namespace() {
    let namespace = namespace!();
    let script = format!(
        "id -u; readlink /proc/self/ns/user; readlink /proc/self/ns/net; \
         curl -sS --max-time 5 {INSTANCE_ID}; echo; curl -sS --max-time 5 {CREDENTIALS}imds-tun"
    );
    let output = exec(
        &namespace,
        Who::Root,
        &[],
        &[
            "--mock-credentials",
            "--network",
            "none",
            "--instance-id",
            "i-0f00f000000000001",
        ],
        &["sh", "-c", &script],
    );
    assert_code(&output, 0);
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() > 5, "{}", text(&output));
    assert_eq!(lines[0], "0");
    let own_user = std::fs::read_link("/proc/self/ns/user").expect("own user namespace");
    assert_eq!(Path::new(lines[1]), own_user, "no user namespace for root");
    assert_ne!(
        lines[2],
        ns_link("net", &namespace.path()),
        "a network namespace of its own"
    );
    assert_eq!(lines[3], "i-0f00f000000000001");
    let document: serde_json::Value =
        serde_json::from_str(&lines[4..].join("\n")).expect("credentials JSON");
    assert!(
        document["AccessKeyId"]
            .as_str()
            .is_some_and(|key| key.starts_with("ASIA") && key.len() == 20),
        "{document}"
    );
    assert!(
        namespace.tun_links().is_empty(),
        "the TUN is not in the caller's namespace"
    );
}

/// As root, pasta cannot attach (Debian 12's pasta becomes nobody first): with pasta on PATH
/// and no `--network`, exec says so in one line and CMD still has the metadata service;
/// `--network pasta` is refused.
#[test]
fn as_root_pasta_is_not_used_and_exec_says_so() {
    let test = test_name!();
    let namespace = namespace!();
    if !pasta_installed(test) {
        return;
    }
    give_pasta_an_uplink(&namespace);
    let output = exec(
        &namespace,
        Who::Root,
        &[],
        &["--mock-credentials", "--instance-id", "i-0f00f000000000002"],
        &["sh", "-c", &format!("curl -sS --max-time 5 {INSTANCE_ID}")],
    );
    assert_code(&output, 0);
    assert_eq!(stdout(&output), "i-0f00f000000000002", "{}", text(&output));
    let said = stderr(&output);
    assert_eq!(
        said.lines()
            .filter(|line| line.contains("pasta"))
            .collect::<Vec<_>>(),
        [imds_tun::exec::ROOT_NO_PASTA_LINE],
        "{}",
        text(&output)
    );

    let output = exec(
        &namespace,
        Who::Root,
        &[],
        &["--network", "pasta"],
        &["true"],
    );
    let line = refusal(&output);
    assert!(line.contains(imds_tun::exec::ROOT_PASTA_LINE), "{line}");
    assert_troubleshooting_quotes(&line);
    assert_troubleshooting_quotes(imds_tun::exec::ROOT_NO_PASTA_LINE);
}

// ---- the documents, run as written ----------------------------------------------------------

/// A shell for uid 65534 whose PATH starts with `imds-tun` (then Debian's tools, pasta among
/// them), with no AWS configuration.
struct NobodyShell {
    bin: TempDir,
}

impl NobodyShell {
    fn new() -> NobodyShell {
        let bin = TempDir::new();
        std::os::unix::fs::symlink(common::binary(), bin.path().join("imds-tun")).expect("symlink");
        NobodyShell { bin }
    }

    /// Runs `script` with `sh -e` in `dir` of `namespace` as uid 65534.
    fn run(&self, namespace: &Namespace, dir: &Path, script: &str) -> Output {
        let mut words = nobody_prefix();
        words.extend(
            [
                "/usr/bin/env",
                "-i",
                &format!("PATH={}:/usr/bin:/bin", self.bin.path().display()),
                "HOME=/nonexistent",
                "AWS_CONFIG_FILE=/nonexistent/config",
                "AWS_SHARED_CREDENTIALS_FILE=/nonexistent/credentials",
                "sh",
                "-e",
                "-c",
                &format!("cd '{}'\n{script}", dir.display()),
            ]
            .map(str::to_owned),
        );
        run(in_namespace(namespace, &words))
    }
}

/// The body of a block that is one command, without its newline.
fn command_line(block: &str) -> &str {
    let line = block.trim_end();
    assert!(!line.contains('\n'), "one command: {block:?}");
    line
}

/// docs/exec.md's examples, run as uid 65534 with pasta (the default) as written, and the
/// README's `imds-tun exec` command, which is the first of them.
#[test]
fn the_exec_document_s_examples_run_as_written() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    if !pasta_installed(test) {
        return;
    }
    give_pasta_an_uplink(&namespace);
    let document =
        std::fs::read_to_string(common::repo().join("docs/exec.md")).expect("docs/exec.md");
    let blocks = common::fenced_blocks(&document, "<!-- exec examples:", "\n## ");
    assert_eq!(blocks.len(), 4, "{blocks:?}");
    let shell = NobodyShell::new();
    let dir = shared_dir();

    let output = shell.run(&namespace, dir.path(), command_line(&blocks[0]));
    assert_code(&output, 0);
    assert_eq!(stdout(&output), blocks[1].trim_end(), "{}", text(&output));

    let output = shell.run(&namespace, dir.path(), command_line(&blocks[2]));
    assert_code(&output, 0);
    let (before, after) = blocks[3]
        .trim_end()
        .split_once('…')
        .expect("the time is elided");
    let out = stdout(&output);
    assert!(
        out.starts_with(before) && out.ends_with(after) && out.len() > before.len() + after.len(),
        "{}",
        text(&output)
    );

    let readme = std::fs::read_to_string(common::repo().join("README.md")).expect("README.md");
    let readme_blocks = common::fenced_blocks(&readme, "## Without root", "\n## ");
    assert_eq!(
        readme_blocks.first().map(String::as_str),
        Some(blocks[0].as_str()),
        "the README shows docs/exec.md's first example"
    );
}

/// docs/guides/exec-in-your-test-suite.md as written: the pytest fixture and the whole session
/// under `imds-tun exec` as uid 65534, the `cargo test` runner (as root: the toolchain lives in
/// root's home), and the GitHub Actions step's `run:` lines as uid 65534.
#[test]
fn the_exec_guide_runs_as_written() {
    let test = test_name!();
    let namespace = namespace!();
    let Some(_tun) = tun_for_everyone(test) else {
        return;
    };
    if !pasta_installed(test) {
        return;
    }
    let pytest = Command::new("/usr/bin/python3")
        .args(["-c", "import pytest, boto3"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !pytest {
        common::skip_or_fail(
            test,
            "/usr/bin/python3 cannot import pytest and boto3; scripts/test.sh installs python3-pytest and python3-boto3",
        );
        return;
    }
    give_pasta_an_uplink(&namespace);
    let guide =
        std::fs::read_to_string(common::repo().join("docs/guides/exec-in-your-test-suite.md"))
            .expect("the guide");
    let blocks = common::fenced_blocks(&guide, "<!-- worked example:", "\n# ");
    assert_eq!(blocks.len(), 9, "{blocks:?}");
    let shell = NobodyShell::new();
    let dir = shared_dir();
    std::fs::write(dir.path().join("conftest.py"), &blocks[0]).expect("conftest.py");
    std::fs::write(dir.path().join("test_instance.py"), &blocks[1]).expect("test_instance.py");
    std::fs::write(dir.path().join("test_boto3.py"), &blocks[3]).expect("test_boto3.py");

    let output = shell.run(&namespace, dir.path(), command_line(&blocks[2]));
    assert_code(&output, 0);
    assert!(stdout(&output).contains("2 passed"), "{}", text(&output));

    let output = shell.run(&namespace, dir.path(), command_line(&blocks[4]));
    assert_code(&output, 0);
    assert!(stdout(&output).contains("1 passed"), "{}", text(&output));

    // The GitHub Actions step: its `run: |` lines, in the same directory.
    let steps: Vec<&str> = blocks[8]
        .lines()
        .skip_while(|line| line.trim() != "run: |")
        .skip(1)
        .map(str::trim)
        .collect();
    assert_eq!(steps.len(), 2, "{steps:?}");
    let output = shell.run(&namespace, dir.path(), &steps.join("\n"));
    assert_code(&output, 0);
    let out = stdout(&output);
    assert!(
        out.contains("2 passed") && out.contains("1 passed"),
        "{}",
        text(&output)
    );

    // `cargo test` of a crate with no dependency, the runner in .cargo/config.toml.
    let krate = TempDir::new();
    std::fs::create_dir_all(krate.path().join(".cargo")).expect(".cargo");
    std::fs::create_dir_all(krate.path().join("src")).expect("src");
    std::fs::create_dir_all(krate.path().join("tests")).expect("tests");
    std::fs::write(
        krate.path().join("Cargo.toml"),
        "[package]\nname = \"runner-example\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .expect("Cargo.toml");
    std::fs::write(krate.path().join("src/lib.rs"), "").expect("lib.rs");
    std::fs::write(krate.path().join(".cargo/config.toml"), &blocks[5]).expect("config.toml");
    std::fs::write(krate.path().join("tests/metadata.rs"), &blocks[6]).expect("metadata.rs");
    let mut words = vec![
        "/usr/bin/env".to_owned(),
        "-i".to_owned(),
        format!(
            "PATH={}:{}",
            shell.bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        ),
        format!("CARGO_TARGET_DIR={}", krate.path().join("target").display()),
    ];
    for name in [
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "RUSTUP_AUTO_INSTALL",
    ] {
        if let Ok(value) = std::env::var(name) {
            words.push(format!("{name}={value}"));
        }
    }
    words.extend(["sh", "-e", "-c"].map(str::to_owned));
    words.push(format!(
        "cd '{}'\n{}",
        krate.path().display(),
        command_line(&blocks[7])
    ));
    let output = run(in_namespace(&namespace, &words));
    assert_code(&output, 0);
    assert!(
        stdout(&output).contains("test the_instance_id_is_the_runner_s ... ok"),
        "{}",
        text(&output)
    );
}
