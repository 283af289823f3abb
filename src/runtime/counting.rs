//! Where the HTTP layer's seams meet the metrics: every answered request counted
//! ([`RequestCounter`], an `http::Observer`), every served connection counted while it lives
//! ([`Counted`], an `http::Connection` around the stream).
//!
//! `http` counts nothing itself and `metrics` knows no HTTP; neither imports the other, so the
//! glue lives here, in the wiring that imports both.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::{Connection, Observer, ReplyHops, Served};
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

/// A connection counted in `imds_tun_open_connections` until it is dropped (the HTTP task
/// ends with it).
pub(super) struct Counted<IO> {
    io: IO,
    _open: OpenConnection,
}

impl<IO> Counted<IO> {
    pub(super) fn new(io: IO, metrics: &Metrics) -> Counted<IO> {
        Counted {
            io,
            _open: metrics.connection_opened(),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, slices)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: Connection> Connection for Counted<IO> {
    fn reply_hops(&self) -> Option<Arc<dyn ReplyHops>> {
        self.io.reply_hops()
    }
}
