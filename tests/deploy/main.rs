//! What users install, checked as installed: the provisioning and install scripts and the
//! systemd unit (`deploy_service`, `deploy_vagrant`), the launchd plist and the Homebrew formula
//! (`deploy_launchd`), the static binary and the .deb (`package_artifacts`), their arm64 builds
//! under qemu-user (`cross_artifacts`), the RPMs (`rpm_artifacts`), `dist/` with its checksums
//! and SBOM (`release_artifacts`) and the VM image's disk checks (`vm_image`).
//! One test crate, one module per suite: `cargo test --test deploy package_artifacts::`.

#[cfg(target_os = "linux")]
#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod cross_artifacts;
mod deploy_launchd;
mod deploy_service;
mod deploy_vagrant;
mod package_artifacts;
mod release_artifacts;
mod rpm_artifacts;
mod vm_image;
