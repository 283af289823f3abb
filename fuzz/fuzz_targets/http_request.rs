//! Arbitrary bytes as a client's side of a connection to the HTTP server: hyper's parser, the
//! Host guard and the metadata services behind it (EC2, GCE, Azure) must answer or close, never
//! panic or hang.
//!
//! Time is paused (tokio's virtual clock), so a GCE `wait_for_change` holds for its virtual
//! timeout, at most `clouds::gce::MAX_WAIT`, and the exchange's own limit is virtual time beyond that.

#![no_main]

use clap::Parser as _;
use imds_tun::cli::Cli;
use imds_tun::clouds::{self, azure::Azure, ec2::Ec2, gce::Gce};
use imds_tun::http::{Server, Services};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime")
});

static SERVICES: LazyLock<Services> = LazyLock::new(|| {
    let cli = Cli::try_parse_from(["imds-tun", "--gcp-project", "fuzz-project"]).expect("flags");
    let settings = cli.into_settings().expect("default settings");
    let local = settings.local().expect("the defaults serve locally");
    let credentials = Arc::new(imds_tun::credentials::fake::FakeCredentials::from_settings(
        &local.credentials,
    ));
    let gce = local.gce.clone().expect("GCE is on");
    clouds::local(
        Arc::new(Ec2::new(&local.instance, local.token_policy, credentials)),
        Some(Gce::new(gce, 0).expect("committed key")),
        Some(Azure::new(
            local.azure.instance.clone(),
            local.azure.tokens.clone(),
        )),
        // The container endpoints claim by the address a request was sent to, and this target
        // serves without one (`Server::serve`): none of them would ever be asked.
        clouds::ContainerEndpoints::default(),
        // --pass-through forwards to a real service over the network, which a fuzz target
        // has none of; its rules are plain functions with unit tests of hostile paths.
        None,
    )
});

fuzz_target!(|data: &[u8]| {
    RUNTIME.block_on(async {
        let server = Server::new(SERVICES.clone());
        let (mut client, connection) = tokio::io::duplex(64 * 1024);
        server.serve(connection, "127.0.0.1:40000".parse().expect("address"));
        let exchange = async {
            // The server may close early (a 400): a failed write is an answer too.
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let mut response = Vec::new();
            let _ = client.read_to_end(&mut response).await;
            response
        };
        let limit = clouds::gce::MAX_WAIT + Duration::from_secs(60);
        let response = tokio::time::timeout(limit, exchange)
            .await
            .expect("the server answered or closed in time");
        if !response.is_empty() {
            assert!(response.starts_with(b"HTTP/1."), "a response, not garbage");
        }
    });
});
