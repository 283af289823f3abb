//! The container image (`packaging/docker/Dockerfile`): the static binary from
//! `scripts/package.sh` and the CA certificates, `FROM scratch`, built offline by a private
//! dockerd (`docker_containers::Dockerd`, which also removes everything it made). The build,
//! run and stop blocks of docs/guides/docker-desktop.md run as written: on the host's network
//! with NET_ADMIN and /dev/net/tun, the image serves the host (the test's namespace) and a
//! container on the default bridge, through its TUN.
//!
//! Without the static binary (package.sh not run) or Docker this skips, and fails under `CI=true`.
#![cfg(target_os = "linux")]

use crate::common;
use crate::docker_containers::Dockerd;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{METADATA, TempDir, http, repo, text};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The OCI labels the image carries, and the values that do not depend on the checkout.
const LABELS: [(&str, Option<&str>); 3] = [
    ("org.opencontainers.image.version", Some(VERSION)),
    (
        "org.opencontainers.image.licenses",
        Some("MIT OR Apache-2.0"),
    ),
    ("org.opencontainers.image.source", None),
];

/// The CA bundle the guide copies into the image: Debian's ca-certificates.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn static_binary() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .unwrap_or(tmp)
        .join("x86_64-unknown-linux-musl/release/imds-tun")
}

fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn the_scratch_image_serves_the_host_and_a_bridged_container_with_fake_credentials() {
    let test = test_name!();
    let Some(binary) = common::installed(test, static_binary()) else {
        return;
    };
    let Some(ca_bundle) = common::installed(test, PathBuf::from(CA_BUNDLE)) else {
        return;
    };
    let host = namespace!();
    let Some(dockerd) = Dockerd::start(&host, test) else {
        return;
    };

    // The guide's build block, as written: only `target/` and `packaging/` point at this
    // build's directories, and the private daemon's variables aim `docker` at it.
    let guide = std::fs::read_to_string(repo().join("docs/guides/docker-desktop.md"))
        .expect("docs/guides/docker-desktop.md");
    let tag = format!("imds-tun:{VERSION}");
    assert!(
        guide.contains(&tag),
        "the guide names the crate's version: {tag}"
    );
    let scratch = TempDir::new();
    let target = binary
        .ancestors()
        .nth(3)
        .expect("<target>/<triple>/release/imds-tun")
        .to_path_buf();
    let run_block = |heading: &str, until: &str| -> String {
        let blocks = common::fenced_blocks(&guide, heading, until);
        assert_eq!(blocks.len(), 1, "one block under {heading}");
        let script = blocks[0]
            .replace("target/", &format!("{}/", target.display()))
            .replace("packaging/", &format!("{}/packaging/", repo().display()));
        let output = Command::new("ip")
            .args(["netns", "exec", host.name(), "sh", "-e", "-c", &script])
            .current_dir(scratch.path())
            .envs(dockerd.environment())
            .output()
            .expect("running the guide's block");
        assert!(
            output.status.success(),
            "{heading}:\n{script}\n{}",
            text(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let started = Instant::now();
    run_block("## Build", "## Run");
    eprintln!("the guide's build took {:?}", started.elapsed());

    // Labels, and a filesystem of the binary and the bundle only (two layers, and no more
    // bytes than the two files).
    let labels: serde_json::Value = serde_json::from_str(&stdout_of(&dockerd.docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &tag,
    ])))
    .expect("the labels are JSON");
    for (label, value) in LABELS {
        let found = labels[label].as_str().unwrap_or_default();
        assert!(!found.is_empty(), "{label} is missing: {labels}");
        if let Some(value) = value {
            assert_eq!(found, value, "{label}");
        }
    }
    let layers = stdout_of(&dockerd.docker(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}} {{.Size}}",
        &tag,
    ]));
    let files =
        std::fs::metadata(&binary).unwrap().len() + std::fs::metadata(&ca_bundle).unwrap().len();
    let (count, size) = layers.split_once(' ').expect("two numbers");
    assert_eq!(count, "2", "one layer per COPY: {layers}");
    assert_eq!(
        size.parse::<u64>().ok(),
        Some(files),
        "the image is the two files: {layers}"
    );

    // The guide's run block: the container serves the host, whose curl gets the credentials.
    let served = run_block("## Run", "## Stop");
    // `docker run --detach` prints the container's id first, then curl the document.
    let (id, json) = served.split_once('\n').unwrap_or_default();
    assert!(
        id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{served}"
    );
    let document: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|error| panic!("the credentials are JSON ({error}): {served}"));
    assert_eq!(document["Code"], "Success", "{document}");
    let key = document["AccessKeyId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!key.is_empty(), "{document}");
    // And the test's own client in the host namespace, through the kernel.
    let credentials = host.run_in(|| {
        http::get(
            METADATA,
            "/latest/meta-data/iam/security-credentials/imds-tun",
        )
    });
    assert!(credentials.text().contains(&key), "{credentials:?}");

    // A container on the default bridge reaches it through the host's route to the TUN.
    let curl = dockerd.image();
    let bridged = dockerd.curl(
        &curl,
        &[
            "-m",
            "5",
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/imds-tun",
        ],
    );
    assert!(bridged.status.success(), "{}", text(&bridged));
    assert!(
        stdout_of(&bridged).contains(&key),
        "the bridged container gets the same credentials: {}",
        text(&bridged)
    );

    run_block("## Stop", "\n# ");
    // --rm removes the container once it has stopped, shortly after `docker stop` returns.
    let stopped = Instant::now();
    loop {
        let left = dockerd.docker(&["ps", "--all", "--quiet"]);
        assert!(left.status.success(), "{left:?}");
        if stdout_of(&left).is_empty() {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "the container is still there 10 s after docker stop: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let removed = dockerd.docker(&["image", "rm", &tag]);
    assert!(
        removed.status.success(),
        "docker image rm: {}",
        text(&removed)
    );
    host.wait_until_clean(Duration::from_secs(5));
}
