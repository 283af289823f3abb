//! Arbitrary bytes as a client's side of a connection to the HTTP server: hyper's parser, the
//! Host guard and the metadata service behind it must answer or close, never panic or hang.

#![no_main]

use imds_tun::cli::Cli;
use imds_tun::http::Server;
use imds_tun::imds::Imds;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
});

static IMDS: LazyLock<Arc<Imds>> = LazyLock::new(|| {
    let settings = Cli::default().into_settings().expect("default settings");
    let local = settings.local().expect("the defaults serve locally");
    let credentials = Arc::new(imds_tun::credentials::fake::FakeCredentials::from_settings(
        &local.credentials,
    ));
    Arc::new(Imds::new(&local.instance, local.token_policy, credentials))
});

fuzz_target!(|data: &[u8]| {
    RUNTIME.block_on(async {
        let server = Server::new(IMDS.clone());
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
        let response = tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .expect("the server answered or closed within 5 s");
        if !response.is_empty() {
            assert!(response.starts_with(b"HTTP/1."), "a response, not garbage");
        }
    });
});
