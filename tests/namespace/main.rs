//! The namespace suites: each test runs the real `imds-tun` binary in a network namespace of
//! its own, as root, and talks to it through the kernel (`tests/common/`, docs/testing.md). One
//! test crate, one module per suite, so the library and the harness are linked once: run one
//! suite with `cargo test --test namespace tun_lifecycle::`.

#![cfg(target_os = "linux")]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;
mod hostile_support;

mod attribution;
mod azure_clients;
mod callers;
mod callers_report;
mod check_matches_start;
mod ci_action;
mod claim_watch;
mod cloud_events;
mod cloud_init;
mod container_clients;
mod container_endpoints;
mod control_lifecycle;
mod deploy_containers;
mod docker_containers;
mod docker_image;
mod exec;
mod faults;
mod file_access;
mod gce_clients;
mod hardening;
mod hostile_connections;
mod hostile_http;
mod hostile_packets;
mod hostile_resources;
mod imds_http;
mod interruptions;
mod ipv6_endpoint;
mod messages;
mod metrics;
mod packet_budget;
mod pass_through;
mod process_edges;
mod record;
mod replay;
mod slow_answers;
mod tokens;
mod tun_lifecycle;
mod tun_transport;
