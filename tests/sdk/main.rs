//! The AWS SDK's own clients against imds-tun, in network namespaces as root: its IMDS client
//! (`sdk_client`), its container provider on the ECS and Pod Identity endpoints
//! (`container_credentials`), real credentials from moto's STS (`sts_e2e`) and upstream proxy mode
//! (`upstream_proxy`). Needs the `sts` feature (aws-config). One test crate, one module per
//! suite: `cargo test --test sdk sts_e2e::`.

#![cfg(target_os = "linux")]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod container_credentials;
mod sdk_client;
mod sts_e2e;
mod upstream_proxy;
