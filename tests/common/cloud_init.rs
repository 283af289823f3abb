//! cloud-init's own EC2 datasource, run against the imds-tun of a [`Namespace`] as it runs at
//! boot, without cloud-init installed on the host (docs/cloud-init.md).
//!
//! `scripts/test.sh` downloads Debian's `cloud-init` package with apt, unpacks it with
//! `dpkg-deb -x` into `/var/cache/imds-tun-test/cloud-init-<version>/` and points
//! `/var/cache/imds-tun-test/cloud-init` at it; it installs only the Debian `python3-*` packages
//! cloud-init imports. [`CloudInit::find`] takes that tree (or `IMDS_TUN_CLOUD_INIT`, a tree
//! unpacked elsewhere), and [`CloudInit::crawl`] runs `tests/common/cloud_init_crawl.py` with
//! Debian's `/usr/bin/python3` inside the namespace: cloud-init finds its datasource, crawls
//! `169.254.169.254` and writes `instance-data.json` into a directory of the test's, which
//! [`Crawl`] hands back with what the datasource itself read.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use super::{Namespace, TempDir, repo, skip_or_fail};

/// Where `scripts/test.sh` keeps the unpacked package: a link to `cloud-init-<version>`.
pub(crate) const CACHE_LINK: &str = "/var/cache/imds-tun-test/cloud-init";

/// The Python cloud-init runs with at boot on Debian (and the only one the apt-installed
/// `python3-*` modules are for).
pub(crate) const PYTHON: &str = "/usr/bin/python3";

/// How long one crawl may take: cloud-init itself waits at most 20 s for the service
/// (`--max-wait`), and a healthy crawl of imds-tun takes about a second.
const CRAWL_TIMEOUT: Duration = Duration::from_secs(90);

/// An unpacked cloud-init whose Python modules import.
#[derive(Debug, Clone)]
pub(crate) struct CloudInit {
    /// The unpacked package's root (holds `usr/lib/python3/dist-packages/cloudinit`).
    root: PathBuf,
    /// The Debian package version, from the directory name (`22.4.2-1+deb12u4`).
    pub version: String,
}

/// What one crawl found.
#[derive(Debug, Clone)]
pub(crate) struct Crawl {
    /// The datasource's class name (`DataSourceEc2`).
    pub datasource: String,
    /// `aws` when cloud-init identified the platform as EC2.
    pub cloud_name: String,
    /// The instance id the datasource reports (the identity document's, on AWS).
    pub instance_id: String,
    /// The region the datasource reports.
    pub region: String,
    /// The availability zone the datasource reports.
    pub availability_zone: String,
    /// The user-data the datasource read, as bytes.
    pub user_data: Vec<u8>,
    /// Whether cloud-init held an IMDSv2 token.
    pub used_imdsv2_token: bool,
    /// `instance-data.json` as cloud-init wrote it (world-readable, sensitive keys redacted).
    pub instance_data_text: String,
    /// The same, parsed.
    pub instance_data: Value,
    /// `instance-data-sensitive.json` (mode 0600), parsed.
    pub instance_data_sensitive: Value,
    /// cloud-init's own log (DEBUG), for assertion messages.
    pub log: String,
}

impl CloudInit {
    /// The unpacked cloud-init `scripts/test.sh` left (or `IMDS_TUN_CLOUD_INIT`), checked by
    /// importing its EC2 datasource. `None` after a skip notice when it is missing or does not
    /// import; a failure under `CI=true`.
    pub(crate) fn find(test: &str) -> Option<CloudInit> {
        let root = std::env::var_os("IMDS_TUN_CLOUD_INIT")
            .filter(|path| !path.is_empty())
            .map_or_else(|| PathBuf::from(CACHE_LINK), PathBuf::from);
        let root = match std::fs::canonicalize(&root) {
            Ok(root) => root,
            Err(error) => {
                skip_or_fail(
                    test,
                    &format!(
                        "no unpacked cloud-init at {} ({error}); scripts/test.sh fetches it as root",
                        root.display()
                    ),
                );
                return None;
            }
        };
        let version = root
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix("cloud-init-"))
            .unwrap_or("unknown")
            .to_owned();
        let cloud_init = CloudInit { root, version };
        if !cloud_init.python_path().join("cloudinit").is_dir() {
            skip_or_fail(
                test,
                &format!(
                    "{} holds no unpacked cloud-init (no usr/lib/python3/dist-packages/cloudinit); \
                     scripts/test.sh fetches it as root",
                    cloud_init.root.display()
                ),
            );
            return None;
        }
        let imported = Command::new(PYTHON)
            .args(["-s", "-c", "import cloudinit.sources.DataSourceEc2"])
            .env("PYTHONPATH", cloud_init.python_path())
            .stdin(Stdio::null())
            .output();
        match imported {
            Ok(output) if output.status.success() => Some(cloud_init),
            Ok(output) => {
                skip_or_fail(
                    test,
                    &format!(
                        "cloud-init in {} does not import with {PYTHON} (scripts/test.sh installs \
                         its python3-* dependencies): {}",
                        cloud_init.root.display(),
                        // The exception, not the whole traceback.
                        String::from_utf8_lossy(&output.stderr)
                            .lines()
                            .last()
                            .unwrap_or_default()
                    ),
                );
                None
            }
            Err(error) => {
                skip_or_fail(test, &format!("cannot run {PYTHON}: {error}"));
                None
            }
        }
    }

    /// The directory `PYTHONPATH` names: the package's `dist-packages`.
    pub(crate) fn python_path(&self) -> PathBuf {
        self.root.join("usr/lib/python3/dist-packages")
    }

    /// Runs cloud-init's EC2 datasource inside `namespace` against `http://169.254.169.254`,
    /// as on a Nitro instance (`--platform ec2`), with its files in a new directory under
    /// `dir` (`cloud-init-1`, `cloud-init-2`, … one per crawl). Panics with
    /// cloud-init's log when it finds no datasource or takes longer than 90 s.
    pub(crate) fn crawl(&self, namespace: &Namespace, dir: &TempDir) -> Crawl {
        self.crawl_with(namespace, dir, &[])
    }

    /// [`CloudInit::crawl`] with more arguments for the driver (`--url URL`, `--platform
    /// detect`, `--max-wait SECONDS`).
    pub(crate) fn crawl_with(&self, namespace: &Namespace, dir: &TempDir, extra: &[&str]) -> Crawl {
        // A directory of its own per crawl, so a test can crawl twice (a service, then its
        // replay) and compare.
        let work = (1..)
            .map(|n| dir.path().join(format!("cloud-init-{n}")))
            .find(|path| !path.exists())
            .expect("a free directory name");
        std::fs::create_dir_all(&work)
            .unwrap_or_else(|error| panic!("creating {}: {error}", work.display()));
        let driver = repo().join("tests/common/cloud_init_crawl.py");
        let log_path = work.join("cloud-init.log");
        let log_file = std::fs::File::create(&log_path)
            .unwrap_or_else(|error| panic!("creating {}: {error}", log_path.display()));
        let mut child = Command::new("ip")
            .args(["netns", "exec", namespace.name(), PYTHON, "-s"])
            .arg(&driver)
            .arg("--dir")
            .arg(&work)
            .args(extra)
            .env("PYTHONPATH", self.python_path())
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .current_dir("/")
            .spawn()
            .unwrap_or_else(|error| panic!("running {}: {error}", driver.display()));
        let deadline = Instant::now() + CRAWL_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("waitpid on the crawl") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "cloud-init's crawl took longer than {CRAWL_TIMEOUT:?}; its log:\n{}",
                    read_text(&log_path)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stdout = String::new();
        if let Some(mut pipe) = child.stdout.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stdout).expect("reading the crawl");
        }
        let log = read_text(&log_path);
        assert!(
            status.success(),
            "cloud-init found no datasource ({status}); its log:\n{log}"
        );
        let view: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|error| panic!("the driver printed {stdout:?}: {error}"));
        let field = |name: &str| view[name].as_str().unwrap_or_default().to_owned();
        let instance_data_text = read_text(Path::new(&field("instance_data")));
        let parse = |text: &str, what: &str| -> Value {
            serde_json::from_str(text).unwrap_or_else(|error| panic!("{what}: {error}: {text}"))
        };
        Crawl {
            datasource: field("datasource"),
            cloud_name: field("cloud_name"),
            instance_id: field("instance_id"),
            region: field("region"),
            availability_zone: field("availability_zone"),
            user_data: base64::engine::general_purpose::STANDARD
                .decode(field("user_data_base64"))
                .expect("the driver prints user-data as base64"),
            used_imdsv2_token: view["used_imdsv2_token"] == true,
            instance_data: parse(&instance_data_text, "instance-data.json"),
            instance_data_sensitive: parse(
                &read_text(Path::new(&field("instance_data_sensitive"))),
                "instance-data-sensitive.json",
            ),
            instance_data_text,
            log,
        }
    }
}

fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}
