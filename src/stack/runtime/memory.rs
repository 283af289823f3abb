//! [`PacketPipe`]: two packet devices joined back to back in memory, so the driver, the streams
//! and everything above them run in a test without root, a TUN or a network namespace.
//!
//! Each end is a [`PacketIo`] device: one end goes to [`super::spawn`], the other to whoever
//! plays the client (in `tests/in_process.rs`, a second smoltcp interface). What one end sends,
//! the other reads, in order, whole. It behaves like the TUN where the driver can tell:
//! - each direction holds at most `capacity` packets, and `send` waits while it is full, as a
//!   write to a full TUN queue waits;
//! - `try_recv` into a buffer shorter than the packet returns the first bytes and loses the
//!   rest, as `read(2)` on a TUN does;
//! - once an end is dropped, the other still reads what was queued, then `readable` fails (the
//!   driver stops, as it does when the TUN device is deleted) and `send` fails.
//!
//! It does not model loss, reordering or delay; tests that need those drop or hold packets in
//! the client themselves.

use super::packet_io::PacketIo;
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

/// One end of an in-memory packet link; see the module documentation.
pub struct PacketPipe {
    /// Packets this end reads.
    inbound: Arc<Queue>,
    /// Packets this end writes.
    outbound: Arc<Queue>,
}

impl std::fmt::Debug for PacketPipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketPipe")
            .field("capacity", &self.inbound.capacity)
            .field("queued_in", &self.inbound.lock().packets.len())
            .field("queued_out", &self.outbound.lock().packets.len())
            .finish()
    }
}

impl PacketPipe {
    /// Two ends joined back to back; each direction holds at most `capacity` packets (at least
    /// one: a queue that holds none would block every send forever).
    pub fn pair(capacity: usize) -> (PacketPipe, PacketPipe) {
        let capacity = capacity.max(1);
        let forth = Arc::new(Queue::new(capacity));
        let back = Arc::new(Queue::new(capacity));
        (
            PacketPipe {
                inbound: back.clone(),
                outbound: forth.clone(),
            },
            PacketPipe {
                inbound: forth,
                outbound: back,
            },
        )
    }
}

impl PacketIo for PacketPipe {
    async fn readable(&self) -> io::Result<()> {
        self.inbound
            .wait_until(|queue| {
                if !queue.packets.is_empty() {
                    Some(Ok(()))
                } else if queue.closed {
                    Some(Err(closed()))
                } else {
                    None
                }
            })
            .await
    }

    fn try_recv(&self, buffer: &mut [u8]) -> io::Result<usize> {
        let packet = {
            let mut queue = self.inbound.lock();
            match queue.packets.pop_front() {
                Some(packet) => packet,
                None if queue.closed => return Err(closed()),
                None => return Err(io::ErrorKind::WouldBlock.into()),
            }
        };
        // Room for the sender.
        self.inbound.changed.notify_waiters();
        let length = packet.len().min(buffer.len());
        buffer[..length].copy_from_slice(&packet[..length]);
        Ok(length)
    }

    async fn send(&self, packet: &[u8]) -> io::Result<()> {
        let mut packet = Some(packet.to_vec());
        let capacity = self.outbound.capacity;
        self.outbound
            .wait_until(|queue| {
                if queue.closed {
                    return Some(Err(closed()));
                }
                if queue.packets.len() >= capacity {
                    return None;
                }
                queue.packets.extend(packet.take());
                Some(Ok(()))
            })
            .await?;
        // A packet for the reader.
        self.outbound.changed.notify_waiters();
        Ok(())
    }
}

impl Drop for PacketPipe {
    fn drop(&mut self) {
        for queue in [&self.inbound, &self.outbound] {
            queue.lock().closed = true;
            queue.changed.notify_waiters();
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the other end of the packet pipe was dropped",
    )
}

/// One direction of the link.
struct Queue {
    state: Mutex<QueueState>,
    capacity: usize,
    /// Woken on every change (a packet in, a packet out, the other end gone); each waiter
    /// re-checks what it waits for.
    changed: Notify,
}

struct QueueState {
    packets: VecDeque<Vec<u8>>,
    closed: bool,
}

impl Queue {
    fn new(capacity: usize) -> Self {
        Queue {
            state: Mutex::new(QueueState {
                packets: VecDeque::with_capacity(capacity),
                closed: false,
            }),
            capacity,
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // The state is a queue and a flag, consistent after every statement: a panic elsewhere
        // while holding the lock leaves nothing half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `ready` returns `Some`, checking under the lock after every change.
    async fn wait_until<T>(&self, mut ready: impl FnMut(&mut QueueState) -> Option<T>) -> T {
        loop {
            // Registered before the check, so a change between the check and the wait is seen.
            let mut notified = std::pin::pin!(self.changed.notified());
            notified.as_mut().enable();
            let outcome = {
                let mut state = self.lock();
                ready(&mut state)
            };
            if let Some(outcome) = outcome {
                return outcome;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pipe's own contract; the driver over it is exercised by `tests/in_process.rs`.

    use super::*;
    use std::time::Duration;

    const GUARD: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn packets_arrive_whole_and_in_order_at_the_other_end() {
        let (a, b) = PacketPipe::pair(4);
        a.send(b"one").await.expect("send");
        a.send(b"two").await.expect("send");
        tokio::time::timeout(GUARD, b.readable())
            .await
            .expect("readable in time")
            .expect("readable");
        let mut buffer = [0u8; 16];
        let length = b.try_recv(&mut buffer).expect("first");
        assert_eq!(&buffer[..length], b"one");
        let length = b.try_recv(&mut buffer).expect("second");
        assert_eq!(&buffer[..length], b"two");
        let empty = b.try_recv(&mut buffer).expect_err("nothing left");
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
    }

    #[tokio::test]
    async fn a_full_direction_makes_send_wait_until_the_reader_takes_a_packet() {
        let (a, b) = PacketPipe::pair(1);
        a.send(b"first").await.expect("send");
        let mut second = std::pin::pin!(a.send(b"second"));
        assert!(
            futures_poll_once(second.as_mut()).await.is_none(),
            "waits while full"
        );
        let mut buffer = [0u8; 16];
        b.try_recv(&mut buffer).expect("take one");
        tokio::time::timeout(GUARD, second)
            .await
            .expect("room after the read")
            .expect("send");
    }

    #[tokio::test]
    async fn a_short_buffer_gets_the_start_of_the_packet_and_the_rest_is_lost() {
        let (a, b) = PacketPipe::pair(2);
        a.send(b"abcdef").await.expect("send");
        let mut buffer = [0u8; 3];
        assert_eq!(b.try_recv(&mut buffer).expect("read"), 3);
        assert_eq!(&buffer, b"abc");
        let empty = b.try_recv(&mut buffer).expect_err("the rest is gone");
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
    }

    #[tokio::test]
    async fn after_the_other_end_drops_queued_packets_are_read_then_reads_and_sends_fail() {
        let (a, b) = PacketPipe::pair(2);
        a.send(b"last words").await.expect("send");
        drop(a);
        b.readable()
            .await
            .expect("the queued packet is still readable");
        let mut buffer = [0u8; 16];
        assert_eq!(b.try_recv(&mut buffer).expect("read"), 10);
        assert!(b.readable().await.is_err(), "then readable fails");
        assert!(b.send(b"anyone?").await.is_err(), "and so does send");
    }

    /// Polls `future` once: `Some` if it finished.
    async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
