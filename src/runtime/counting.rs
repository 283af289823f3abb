//! Where the HTTP layer's seams meet the metrics: every answered request counted
//! ([`RequestCounter`], an `http::Observer`), every served connection counted while it lives
//! ([`counted_until`], which the connection's task holds until it ends).
//!
//! `http` counts nothing itself and `metrics` knows no HTTP; neither imports the other, so the
//! glue lives here, in the wiring that imports both.

use std::future::Future;

use crate::http::{Observer, Served};
use crate::metrics::{Metrics, OpenConnection};

/// Counts each answered request: by the claiming service and status, and the tokenless ones.
#[derive(Debug)]
pub(super) struct RequestCounter(pub(super) Metrics);

impl Observer for RequestCounter {
    fn served(&self, served: &Served<'_>) {
        self.0
            .request(served.service, served.status.as_u16(), served.tokenless);
    }
}

/// `until` (when a connection must end early; `pending` for never), holding the connection's
/// place in `imds_tun_open_connections`: `Server::serve_until` keeps this future in the
/// connection's task and drops it with the connection, so the gauge counts exactly the
/// connections being served, with no wrapper around the stream.
pub(super) async fn counted_until(open: OpenConnection, until: impl Future<Output = ()>) {
    let _open = open;
    until.await;
}
