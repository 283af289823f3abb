//! What `scripts/release.sh` leaves in `dist/`: every artefact of amd64 and, when expected
//! (`package_artifacts::arm64_expected`), of arm64, each byte
//! for byte what package.sh built, a `SHA256SUMS` that `sha256sum -c` accepts and that names
//! exactly the files beside it, and a CycloneDX SBOM of the binary's crates.
//!
//! Reads dist/ as release.sh left it: missing, this skips (and fails under `CI=true`).
//! Reproducibility (a second build from scratch, byte-identical) is release.sh's own
//! `--check-reproducible`, which scripts/test.sh runs.
#![cfg(target_os = "linux")]

use crate::common;
use crate::package_artifacts::{VERSION, arm64_expected, succeed, target_dir};

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::repo;

fn dist(test: &str) -> Option<PathBuf> {
    let dist = repo().join("dist");
    if !dist.join("SHA256SUMS").is_file() {
        common::skip_or_fail(
            test,
            "dist/SHA256SUMS is missing: run `bash scripts/release.sh`",
        );
        return None;
    }
    Some(dist)
}

#[test]
fn dist_holds_every_artefact_with_checksums_that_verify() {
    let Some(dist) = dist(test_name!()) else {
        return;
    };
    let present: BTreeSet<String> = std::fs::read_dir(&dist)
        .expect("listing dist/")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    let arm64 = arm64_expected(test_name!());
    let mut expected: BTreeSet<String> = [
        format!("imds-tun-{VERSION}-x86_64-linux-musl"),
        format!("imds-tun_{VERSION}-1_amd64.deb"),
        format!("imds-tun-{VERSION}-1.x86_64.rpm"),
        format!("imds-tun-{VERSION}.cdx.json"),
        "SHA256SUMS".to_owned(),
    ]
    .into_iter()
    .collect();
    if arm64 {
        expected.extend([
            format!("imds-tun-{VERSION}-aarch64-linux-musl"),
            format!("imds-tun_{VERSION}-1_arm64.deb"),
            format!("imds-tun-{VERSION}-1.aarch64.rpm"),
        ]);
    }
    assert_eq!(present, expected);
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    let named: BTreeSet<String> = sums
        .lines()
        .map(|line| {
            line.split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let mut without_sums = expected.clone();
    without_sums.remove("SHA256SUMS");
    assert_eq!(named, without_sums, "{sums}");
    succeed(
        Command::new("sha256sum")
            .args(["-c", "--strict", "SHA256SUMS"])
            .current_dir(&dist),
    );
    // The released binaries are the built ones (which the package tests examine).
    let target = target_dir();
    for (machine, triple) in [
        ("x86_64", "x86_64-unknown-linux-musl"),
        ("aarch64", "aarch64-unknown-linux-musl"),
    ] {
        if machine == "aarch64" && !arm64 {
            continue;
        }
        let released =
            std::fs::read(dist.join(format!("imds-tun-{VERSION}-{machine}-linux-musl"))).unwrap();
        let built = std::fs::read(target.join(triple).join("release/imds-tun")).unwrap();
        assert!(
            released == built,
            "{machine}: dist/ holds another binary than {triple}'s"
        );
    }
}

#[test]
fn sbom_is_cyclonedx_naming_imds_tun_and_the_crates_compiled_into_it() {
    let Some(dist) = dist(test_name!()) else {
        return;
    };
    let text = std::fs::read_to_string(dist.join(format!("imds-tun-{VERSION}.cdx.json")))
        .expect("the SBOM");
    let sbom: serde_json::Value = serde_json::from_str(&text).expect("the SBOM is JSON");
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(sbom["specVersion"], "1.5");
    assert_eq!(
        sbom["metadata"]["component"]["name"], "imds-tun",
        "{}",
        sbom["metadata"]
    );
    assert_eq!(sbom["metadata"]["component"]["version"], VERSION);
    let components: BTreeSet<String> = sbom["components"]
        .as_array()
        .expect("components")
        .iter()
        .filter_map(|component| component["name"].as_str().map(str::to_owned))
        .collect();
    // The stack, the HTTP server, the TLS crypto with C in it, the SDK: what a scanner must see.
    for name in [
        "smoltcp",
        "hyper",
        "tokio",
        "aws-lc-sys",
        "aws-sdk-sts",
        "rustls",
    ] {
        assert!(components.contains(name), "{name} is not in the SBOM");
    }
    // Only what is compiled in: dev-dependencies are not.
    let lock = std::fs::read_to_string(repo().join("Cargo.lock")).unwrap();
    let locked = lock.matches("[[package]]").count();
    assert!(
        components.len() < locked,
        "{} components for {locked} locked packages",
        components.len()
    );
}
