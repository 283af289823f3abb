//! A client's end of stream while its answer is on its way: the client leaving.
//!
//! An answer may take long: a GCE `wait_for_change` (up to 5 minutes), a fault's latency or
//! drop, a token command. A client that stops waiting (its process exited or was killed, which
//! sends a FIN, or its connection was reset) must not keep that answer, and its connection, for
//! the rest of the wait: a local user could otherwise pile up held requests and the descriptors
//! and memory behind them. So hyper reads while an answer is pending (its `half_close` is off),
//! and an end of stream or a reset there ends the connection and drops the answer.
//!
//! A FIN cannot say whether the client closed its socket or only its sending side: `printf
//! 'GET ...' | nc -N` sends its request and its FIN together and still reads the answer, and
//! TCP tells the two apart only when we send data (a closed socket answers it with a RST; keep-
//! alive probes are answered in both cases). So [`HeldEof`] holds an end of stream for
//! [`HALF_CLOSE_GRACE`] while an answer is pending: an answer ready by then is written to a
//! half-closed client as before, and a longer one ends, as the client's departure. A reset
//! passes at once. The answer is pending from the moment hyper hands the request over until
//! the reply is written and flushed ([`Answering::begin`], [`Pending::hold`]); after it the end
//! of stream is the client's goodbye and passes at once.
//!
//! What this does not see: a client that pipelined more bytes behind its request (hyper then
//! has data to read and does not read); such a connection ends when its answer is written, or
//! earlier at the connection limit, which evicts quiet connections first.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::Buf;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long an end of stream is held while an answer is pending: an answer ready within it
/// reaches a half-closed client; after it the client is taken as gone.
pub(crate) const HALF_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// One connection's pending answers (HTTP/1.1: at most one at a time).
#[derive(Debug, Clone, Default)]
pub(crate) struct Answering {
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Answers begun and not yet written and flushed.
    pending: AtomicUsize,
    /// Of those, the ones whose body hyper has taken in full: they end at the next flush.
    unflushed: AtomicUsize,
    /// The reader holding an end of stream, woken when no answer is pending any more.
    reader: Mutex<Option<Waker>>,
}

impl State {
    fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }

    fn end_one(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(reader) = self.reader().take()
        {
            // The end of stream it held may pass now.
            reader.wake();
        }
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Answering {
    /// `io`, with its end of stream held while an answer is pending.
    pub(crate) fn watch<IO>(&self, io: IO) -> HeldEof<IO> {
        HeldEof {
            io,
            state: self.state.clone(),
            grace: None,
        }
    }

    /// An answer is pending until the returned guard is dropped, or, once it
    /// [holds](Pending::hold) the reply's body, until that body is written and flushed.
    pub(crate) fn begin(&self) -> Pending {
        self.state.pending.fetch_add(1, Ordering::AcqRel);
        Pending {
            state: self.state.clone(),
            until_flushed: false,
        }
    }
}

/// An answer on its way; dropping it lets an end of stream through again.
#[derive(Debug)]
pub(crate) struct Pending {
    state: Arc<State>,
    until_flushed: bool,
}

impl Pending {
    /// Keeps the answer pending until `body` has been written: hyper drops a body once its
    /// last frame is in its buffer (or the connection ends), and flushes that buffer after.
    pub(crate) fn hold<B>(mut self, body: B) -> HeldBody<B> {
        self.until_flushed = true;
        HeldBody {
            body,
            _pending: self,
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.until_flushed {
            self.state.unflushed.fetch_add(1, Ordering::AcqRel);
        } else {
            self.state.end_one();
        }
    }
}

/// A reply body that keeps its answer pending until it is dropped.
#[derive(Debug)]
pub(crate) struct HeldBody<B> {
    body: B,
    _pending: Pending,
}

impl<B: Body + Unpin> Body for HeldBody<B>
where
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection whose end of stream waits while an answer is pending; see the module
/// documentation.
#[derive(Debug)]
pub(crate) struct HeldEof<IO> {
    io: IO,
    state: Arc<State>,
    /// Running from the first end of stream met while an answer is pending.
    grace: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for HeldEof<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        // A reset passes at once: the client is gone.
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if buf.filled().len() > before || buf.remaining() == 0 {
            this.grace = None;
            return Poll::Ready(Ok(()));
        }
        // End of stream. Registered before the check, so an answer finishing in between still
        // wakes this reader.
        *this.state.reader() = Some(cx.waker().clone());
        if !this.state.is_pending() {
            this.grace = None;
            return Poll::Ready(Ok(()));
        }
        let grace = this
            .grace
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(HALF_CLOSE_GRACE)));
        ready!(grace.as_mut().poll(cx));
        // The answer did not come within the grace: taken as the client leaving.
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for HeldEof<IO> {
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

    /// hyper flushes its connection only once its own buffer is written out: an answer whose
    /// body it had taken in full is written now.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = ready!(Pin::new(&mut this.io).poll_flush(cx));
        if flushed.is_ok() {
            for _ in 0..this.state.unflushed.swap(0, Ordering::AcqRel) {
                this.state.end_one();
            }
        }
        Poll::Ready(flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn an_end_of_stream_waits_for_an_answer_within_the_grace_and_passes_after_it() {
        let (mut client, server) = tokio::io::duplex(64);
        let answering = Answering::default();
        let mut held = answering.watch(server);
        client.write_all(b"GET").await.expect("write");
        client.shutdown().await.expect("half-close");
        let pending = answering.begin();
        let mut bytes = [0u8; 8];
        assert_eq!(held.read(&mut bytes).await.expect("read"), 3);
        let read = tokio::time::timeout(HALF_CLOSE_GRACE / 2, held.read(&mut bytes));
        assert!(read.await.is_err(), "held while the answer is pending");
        let body = pending.hold(http_body_util::Full::new(bytes::Bytes::from_static(b"x")));
        drop(body);
        let read = tokio::time::timeout(Duration::from_millis(1), held.read(&mut bytes));
        assert!(
            read.await.is_err(),
            "still held: the body is not flushed yet"
        );
        held.flush().await.expect("flush");
        let read = tokio::time::timeout(Duration::from_millis(1), held.read(&mut bytes));
        assert_eq!(read.await.expect("passes").expect("read"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_slower_than_the_grace_meets_the_end_of_stream() {
        let (mut client, server) = tokio::io::duplex(64);
        let answering = Answering::default();
        let mut held = answering.watch(server);
        client.shutdown().await.expect("the client leaves");
        let _pending = answering.begin();
        let started = tokio::time::Instant::now();
        assert_eq!(held.read(&mut [0; 8]).await.expect("read"), 0);
        assert_eq!(started.elapsed(), HALF_CLOSE_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_reader_is_woken_when_the_answer_is_written() {
        let (mut client, server) = tokio::io::duplex(64);
        let answering = Answering::default();
        let mut held = answering.watch(server);
        client.shutdown().await.expect("half-close");
        let pending = answering.begin();
        let reader = tokio::spawn(async move { held.read(&mut [0; 8]).await });
        tokio::task::yield_now().await;
        assert!(!reader.is_finished());
        // A refusal or an error: no body, the guard itself goes.
        drop(pending);
        let read = tokio::time::timeout(Duration::from_millis(1), reader).await;
        assert_eq!(read.expect("woken").expect("task").expect("read"), 0);
    }

    #[tokio::test]
    async fn without_a_pending_answer_an_end_of_stream_passes_at_once() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut held = Answering::default().watch(server);
        client.shutdown().await.expect("half-close");
        assert_eq!(held.read(&mut [0; 8]).await.expect("read"), 0);
    }
}
