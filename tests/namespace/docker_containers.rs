//! Real Docker (Debian's `docker.io`): a container on the default bridge reads instance metadata
//! and role credentials through imds-tun's TUN, and the hop limit decides whether it gets an
//! IMDSv2 token: with `--hop-limit 1` its PUT times out, with the default 2 it gets one. And
//! what Docker's own masquerade means for telling containers apart: a `cidr:172.17.0.0/16`
//! caller role sees them only once the metadata address is exempted from it.
//!
//! Nothing touches the machine's own Docker, if it has one. The test starts a private `dockerd`
//! inside the test's network namespace, with its sockets, state and images in a temporary
//! directory, an empty `/run` of its own (so it starts its own containerd instead of using the
//! host's, and leaves nothing in the host's `/run`) and a private mount namespace (so its
//! overlay mounts end with it). `docker0`, the containers' veth pairs and the iptables rules
//! Docker adds all live in that namespace and vanish with it. imds-tun runs in the same
//! namespace, as it would run on the Docker host.
//!
//! The image is built locally, never pulled: `tests/docker/curl-rootfs.sh` packs this host's
//! curl and the libraries it links into a tar (cached outside the clone, keyed by its inputs),
//! and `docker import` makes it an image.
//!
//! Docker missing or unable to start is a skip, and under `CI=true` a failure
//! (`common::skip_or_fail`); `scripts/test.sh` installs `docker.io`.
#![cfg(target_os = "linux")]

use crate::common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Namespace, TempDir, repo};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const INSTANCE_ID: &str = "i-0d0c0e0d0c0e0d0c0";

/// How long a container's curl waits for a token that may never come.
const PUT_PATIENCE_SECONDS: &str = "3";

/// curl's exit code for "operation timed out".
const CURL_TIMED_OUT: i32 = 28;

/// A private dockerd in a test's network namespace; stopped (SIGTERM, then SIGKILL) and its
/// directory removed on drop.
pub(crate) struct Dockerd {
    child: Child,
    /// Sockets, state, images and the CLI's config; removed after the daemon has stopped.
    dir: TempDir,
}

impl Dockerd {
    /// Starts dockerd in `namespace` and waits until it answers; `None` after a skip notice
    /// when Docker is missing or does not come up (a panic under `CI=true`).
    pub(crate) fn start(namespace: &Namespace, test: &str) -> Option<Dockerd> {
        if Command::new("dockerd").arg("--version").output().is_err() {
            common::skip_or_fail(
                test,
                "dockerd is not installed (Debian: apt-get install docker.io; scripts/test.sh does)",
            );
            return None;
        }
        let dir = TempDir::new();
        let root = dir.path().display().to_string();
        // unshare: a private mount namespace; nsenter: the test's network namespace (unlike
        // `ip netns exec` it keeps /sys as it is, where the cgroup hierarchies dockerd needs are
        // mounted); the tmpfs over /run hides any system containerd and keeps dockerd's own
        // files out of the host's /run. Each program execs the next: the child is dockerd.
        let script = format!(
            "mount -t tmpfs tmpfs /run && exec dockerd --host unix://{root}/docker.sock \
             --data-root {root}/data --exec-root {root}/exec --pidfile {root}/docker.pid \
             --log-level warn"
        );
        let log = std::fs::File::create(dir.path().join("dockerd.log")).expect("dockerd.log");
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "nsenter"])
            .arg(format!("--net={}", namespace.path().display()))
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning unshare (util-linux)");
        let mut dockerd = Dockerd { child, dir };
        let started = Instant::now();
        loop {
            if dockerd.docker(&["version"]).status.success() {
                eprintln!("dockerd answered after {:?}", started.elapsed());
                return Some(dockerd);
            }
            let exited = dockerd.child.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > Duration::from_secs(60) {
                let log = std::fs::read_to_string(dockerd.dir.path().join("dockerd.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                common::skip_or_fail(
                    test,
                    &format!(
                        "dockerd did not start ({}); its last lines:\n{}",
                        exited.map_or("no answer within 60 s".to_owned(), |status| status
                            .to_string()),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    ),
                );
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs the docker CLI against this daemon only (its socket; a config directory of its own,
    /// so the user's ~/.docker is neither read nor written).
    pub(crate) fn docker(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .expect("running the docker CLI")
    }

    /// The docker CLI aimed at this daemon, for a caller that sets more (an environment
    /// variable, the working directory).
    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new("docker");
        command.envs(self.environment()).stdin(Stdio::null());
        command
    }

    /// The variables that aim any docker CLI (a document's commands too) at this daemon.
    pub(crate) fn environment(&self) -> [(&'static str, String); 2] {
        [
            (
                "DOCKER_HOST",
                format!("unix://{}/docker.sock", self.dir.path().display()),
            ),
            (
                "DOCKER_CONFIG",
                self.dir.path().join("cli").display().to_string(),
            ),
        ]
    }

    /// The test image, imported from the cached rootfs tar unless this daemon has it.
    pub(crate) fn image(&self) -> String {
        let script = repo().join("tests/docker/curl-rootfs.sh");
        let built = Command::new("sh")
            .arg(&script)
            .output()
            .expect("running tests/docker/curl-rootfs.sh");
        assert!(
            built.status.success(),
            "curl-rootfs.sh: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        let tarball = PathBuf::from(String::from_utf8_lossy(&built.stdout).trim());
        let key = tarball
            .file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.strip_prefix("curl-rootfs-"))
            .expect("the tarball is named by its key")
            .to_owned();
        let image = format!("imds-tun-test/curl:{key}");
        if !self.docker(&["image", "inspect", &image]).status.success() {
            let started = Instant::now();
            let imported = self.docker(&["import", &tarball.display().to_string(), &image]);
            assert!(imported.status.success(), "docker import: {imported:?}");
            eprintln!("docker import took {:?}", started.elapsed());
        }
        image
    }

    /// `curl ARGS` in a new container on the default bridge, removed when it exits. Never a
    /// pull: without the image docker would otherwise ask a registry for it.
    pub(crate) fn curl(&self, image: &str, args: &[&str]) -> Output {
        let mut full = vec![
            "run",
            "--rm",
            "--pull",
            "never",
            "--network",
            "bridge",
            image,
            "curl",
            "-sS",
        ];
        full.extend_from_slice(args);
        self.docker(&full)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        // SIGTERM lets dockerd stop its containers and containerd and unmount their layers.
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("warning: dockerd did not stop within 30 s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a command printed on stdout (docker's and nft's answers are compared as text).
fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every rule of the namespace's packet filter (nftables), for comparing before and after.
fn firewall(namespace: &Namespace) -> String {
    let output = namespace.exec(&["nft", "list", "ruleset"]);
    // Counters change with traffic (`counter packets 4 bytes 240`); the rules must not.
    stdout_of(&output)
        .lines()
        .map(|line| {
            let mut words = line.split_whitespace();
            let mut kept = Vec::new();
            while let Some(word) = words.next() {
                if word == "packets" || word == "bytes" {
                    words.next();
                } else {
                    kept.push(word);
                }
            }
            kept.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_docker_container_gets_metadata_and_credentials_and_the_hop_limit_decides_its_token() {
    let host = namespace!();
    let started = Instant::now();
    let Some(dockerd) = Dockerd::start(&host, test_name!()) else {
        return;
    };
    let image = dockerd.image();
    eprintln!("Docker ready after {:?}", started.elapsed());
    let rules_before = firewall(&host);
    assert!(
        rules_before.contains("masquerade"),
        "Docker's own NAT rules are in the namespace: {rules_before}"
    );

    let metadata = "http://169.254.169.254/latest/meta-data";
    {
        let child = common::start(&host, &["--instance-id", INSTANCE_ID, "--hop-limit", "1"]);
        assert_eq!(
            firewall(&host),
            rules_before,
            "imds-tun adds no rule; the NAT is Docker's"
        );
        let instance_id = dockerd.curl(&image, &["-m", "5", &format!("{metadata}/instance-id")]);
        assert!(instance_id.status.success(), "{instance_id:?}");
        assert_eq!(stdout_of(&instance_id), INSTANCE_ID);
        let roles = dockerd.curl(
            &image,
            &["-m", "5", &format!("{metadata}/iam/security-credentials/")],
        );
        let role = stdout_of(&roles)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(!role.is_empty(), "{roles:?}");
        let credentials = dockerd.curl(
            &image,
            &[
                "-m",
                "5",
                &format!("{metadata}/iam/security-credentials/{role}"),
            ],
        );
        assert!(
            stdout_of(&credentials).contains("\"AccessKeyId\""),
            "the container reads the role's credentials (IMDSv1): {credentials:?}"
        );

        let put = dockerd.curl(
            &image,
            &[
                "-m",
                PUT_PATIENCE_SECONDS,
                "-X",
                "PUT",
                "-H",
                "X-aws-ec2-metadata-token-ttl-seconds: 60",
                "http://169.254.169.254/latest/api/token",
            ],
        );
        assert_eq!(
            put.status.code(),
            Some(CURL_TIMED_OUT),
            "with --hop-limit 1 the token reply dies at docker0 and the PUT times out, as on \
             EC2: {put:?}; imds-tun: {}",
            child.stderr()
        );
    }

    let _child = common::start(&host, &["--instance-id", INSTANCE_ID]);
    let put = dockerd.curl(
        &image,
        &[
            "-m",
            PUT_PATIENCE_SECONDS,
            "-X",
            "PUT",
            "-H",
            "X-aws-ec2-metadata-token-ttl-seconds: 60",
            "http://169.254.169.254/latest/api/token",
        ],
    );
    assert!(
        put.status.success(),
        "with the default hop limit (2) the container gets a token: {put:?}"
    );
    let token = stdout_of(&put);
    let v2 = dockerd.curl(
        &image,
        &[
            "-m",
            "5",
            "-H",
            &format!("X-aws-ec2-metadata-token: {token}"),
            &format!("{metadata}/instance-id"),
        ],
    );
    assert_eq!(stdout_of(&v2), INSTANCE_ID, "{v2:?}");

    let left = dockerd.docker(&["ps", "--all", "--quiet"]);
    assert!(
        left.status.success() && stdout_of(&left).trim().is_empty(),
        "every container was removed: {left:?}"
    );
    eprintln!("the Docker test took {:?}", started.elapsed());
}

#[test]
fn a_cidr_caller_role_sees_docker_containers_only_once_docker_stops_masquerading_them() {
    let host = namespace!();
    let Some(dockerd) = Dockerd::start(&host, test_name!()) else {
        return;
    };
    let image = dockerd.image();
    let _child = common::start(
        &host,
        &[
            "--mock-credentials",
            "--caller-role",
            "cidr:172.17.0.0/16=arn:aws:iam::123456789012:role/container-role",
        ],
    );
    let roles = || {
        let output = dockerd.curl(
            &image,
            &[
                "-m",
                "5",
                "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            ],
        );
        assert!(output.status.success(), "{output:?}");
        stdout_of(&output).trim().to_owned()
    };
    // Docker's MASQUERADE rewrites the container's 172.17.0.x to the TUN's own address on the
    // way out, so imds-tun cannot see the container network (docs/guides/containers.md).
    assert_eq!(roles(), "imds-tun", "masqueraded: the instance's role");
    let exempt = host.exec(&[
        "iptables",
        "-t",
        "nat",
        "-I",
        "POSTROUTING",
        "-s",
        "172.17.0.0/16",
        "-d",
        "169.254.169.254",
        "-j",
        "RETURN",
    ]);
    assert!(exempt.status.success(), "{exempt:?}");
    assert_eq!(
        roles(),
        "container-role",
        "with the guide's RETURN rule the container's own address arrives"
    );
}
