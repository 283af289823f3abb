//! The one task that moves packets between the packet device and the [`Endpoint`], hands out
//! streams, and answers the endpoint's questions about callers.
//!
//! The device is any [`PacketIo`]: the TUN in production, an in-memory
//! [`super::memory::PacketPipe`] in tests. The task sleeps until one of three things happens: the
//! device has packets, a stream asked for a transmit (`Notify`), or smoltcp's next timer is due.
//! Each round it feeds every queued packet to the endpoint, polls, collects the packets to send
//! and the connections ready for a stream (those whose client has sent its first byte), and only
//! then, with the lock released, writes to the device and hands each new connection to the
//! function it was given ([`spawn`]'s `hand_off`). No lock is ever held across an `.await`.
//!
//! The hand-off is a plain call from this task, not a message to an accept loop: the server
//! spawns the connection's task from here, so tokio runs it next on this worker, without waking
//! an accept task first (one task switch fewer per connection; docs/performance.md).
//!
//! When the table is full, a new SYN may be held until the endpoint knows who is calling
//! ([`CallerQuestions`]): the task asks [`Attribution`] (one `sock_diag` question per local
//! caller, blocking, on tokio's blocking pool) with the lock released, and feeds the answers at
//! the start of the next round, before any packet read since.

use super::packet_io::PacketIo;
use super::shared::{Shared, now};
use super::stream::TcpStream;
use crate::attribution::{Attribution, Caller};
use crate::stack::endpoint::{CallerAnswers, CallerQuestions, Endpoint, Established, StackConfig};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::task::JoinHandle;

/// The stack's door: while it is held, connections are handed off; dropping it closes the
/// door. From then on new clients are refused with a RST, as a kernel socket without a listener
/// would refuse them, instead of being connected and then closed without an answer. The
/// hand-off function is dropped with it, and whatever it holds (the HTTP server) with it.
#[derive(Debug)]
pub struct Door {
    shared: Arc<Shared>,
    hand_off: HandOff,
}

impl Drop for Door {
    fn drop(&mut self) {
        let hand_off = self.hand_off.lock().take();
        drop(hand_off);
        self.shared.lock().refuse_new_connections(now());
        self.shared.wake_driver();
    }
}

/// What a connection is handed to.
type HandOffFn = Box<dyn FnMut(TcpStream) + Send>;

/// The function connections are handed to, shared by the driver and the [`Door`]; `None` once
/// the door is closed.
#[derive(Clone)]
struct HandOff(Arc<Mutex<Option<HandOffFn>>>);

impl HandOff {
    fn lock(&self) -> MutexGuard<'_, Option<HandOffFn>> {
        // Calls through it only spawn; a panic in one leaves nothing half-done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for HandOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandOff")
    }
}

/// The running driver.
#[derive(Debug)]
pub struct Driver {
    task: JoinHandle<io::Error>,
    shared: Arc<Shared>,
}

impl Driver {
    /// Resolves only if the packet device fails (for example, someone deleted the TUN, or the
    /// other end of a [`super::memory::PacketPipe`] was dropped).
    pub async fn failed(&mut self) -> io::Error {
        match (&mut self.task).await {
            Ok(error) => error,
            Err(join_error) => io::Error::other(join_error.to_string()),
        }
    }

    /// Resets the remaining connections, sends the resets, and drops the device (for the TUN,
    /// closing it removes the device and its route).
    pub async fn stop(self, flush: std::time::Duration) {
        self.shared.lock().abort_all();
        self.shared.wake_driver();
        // Give the driver a moment to put the RSTs on the wire.
        tokio::time::sleep(flush).await;
        self.task.abort();
        let _ = self.task.await;
    }

    /// Live TCP connections through the stack.
    pub fn connection_count(&self) -> usize {
        self.shared.lock().connection_count()
    }

    /// The packet budget the stack drops by, for the control channel to change.
    pub fn packet_budget(&self) -> crate::stack::PacketBudget {
        self.shared.lock().packet_budget()
    }
}

/// Starts the driver for `device` with an endpoint built from `config`; `attribution` tells
/// callers apart when the connection limit is reached; the connections refused are counted in
/// `metrics`. Each connection whose client has spoken is given to `hand_off`, called from the
/// driver's task (so it must not block: spawn what serves the stream), until the [`Door`] is
/// dropped.
pub fn spawn<P, H>(
    device: P,
    mut config: StackConfig,
    attribution: Arc<Attribution>,
    metrics: crate::metrics::Metrics,
    hand_off: H,
) -> (Door, Driver)
where
    P: PacketIo + 'static,
    H: FnMut(TcpStream) + Send + 'static,
{
    let mut seed = [0u8; 8];
    // ISNs only need to be unpredictable, not secret; fall back to the clock if the RNG fails.
    if getrandom::fill(&mut seed).is_err() {
        seed = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed))
        .to_le_bytes();
    }
    config.random_seed = u64::from_le_bytes(seed);
    let mtu = config.mtu;
    let shared = Arc::new(Shared::new(
        Endpoint::new(config, now()).counting_into(metrics),
    ));
    let hand_off = HandOff(Arc::new(Mutex::new(Some(Box::new(hand_off)))));
    let task = tokio::spawn(run(
        shared.clone(),
        device,
        mtu,
        hand_off.clone(),
        attribution,
    ));
    (
        Door {
            shared: shared.clone(),
            hand_off,
        },
        Driver { task, shared },
    )
}

/// Packets read per wake-up before the stack is polled; bounds latency under a flood.
const READ_BATCH: usize = 64;

async fn run<P: PacketIo>(
    shared: Arc<Shared>,
    device: P,
    mtu: usize,
    hand_off: HandOff,
    attribution: Arc<Attribution>,
) -> io::Error {
    let mut read_buffer = vec![0u8; mtu.max(1500) + 64];
    let mut incoming: Vec<Vec<u8>> = Vec::with_capacity(READ_BATCH);
    let mut outgoing: Vec<Vec<u8>> = Vec::new();
    let mut written: Vec<Vec<u8>> = Vec::new();
    let mut answers: Option<CallerAnswers> = None;
    loop {
        let (established, delay, questions) = {
            let mut endpoint = shared.lock();
            let now = now();
            // The SYNs held for these answers arrived before anything read since.
            if let Some(answers) = answers.take() {
                endpoint.answer_callers(answers, now);
            }
            for packet in incoming.drain(..) {
                endpoint.receive(packet, now);
            }
            for buffer in written.drain(..) {
                endpoint.recycle(buffer);
            }
            let established = endpoint.poll(now);
            outgoing.extend(endpoint.transmit_queue().drain(..));
            (
                established,
                endpoint.poll_delay(now),
                endpoint.caller_questions(),
            )
        };
        hand_out(&shared, established, &hand_off);
        for packet in outgoing.drain(..) {
            if let Err(error) = device.send(&packet).await {
                // A full or vanished device loses this packet; TCP retransmits it.
                tracing::debug!(%error, "packet write failed");
            }
            written.push(packet);
        }
        if let Some(questions) = questions {
            // Held SYNs wait for these: go round again as soon as they are answered.
            answers = Some(ask(&attribution, questions).await);
            continue;
        }

        let wait = delay.map(std::time::Duration::from);
        if wait == Some(std::time::Duration::ZERO) {
            // Something is due right now: go round again, but let other tasks run first.
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            biased;
            ready = device.readable() => {
                if let Err(error) = ready {
                    return error;
                }
                if let Err(error) = read_batch(&device, &mut read_buffer, &mut incoming) {
                    return error;
                }
            }
            () = shared.driver_woken() => {}
            () = sleep_for(wait) => {}
        }
    }
}

/// Answers the endpoint's questions about callers, off the async threads: each local caller
/// costs one `sock_diag` question, and a first full table may ask about every connection.
async fn ask(attribution: &Arc<Attribution>, questions: CallerQuestions) -> CallerAnswers {
    let fallback = questions.clone();
    let attribution = attribution.clone();
    let asked = tokio::task::spawn_blocking(move || {
        questions.answer(|client, server| attribution.caller(client, server))
    })
    .await;
    // The blocking pool is gone (the runtime is shutting down): what needs no question.
    asked.unwrap_or_else(|_| fallback.answer(|client, _| Caller::Address(client.ip())))
}

fn hand_out(shared: &Arc<Shared>, established: Vec<Established>, hand_off: &HandOff) {
    if established.is_empty() {
        return;
    }
    let mut hand_off = hand_off.lock();
    for connection in established {
        let stream = TcpStream::new(shared.clone(), connection);
        match hand_off.as_mut() {
            Some(hand_off) => hand_off(stream),
            // Closed since this round's poll: the client gets a reset, not an empty answer.
            None => stream.reset(),
        }
    }
}

fn read_batch<P: PacketIo>(
    device: &P,
    buffer: &mut [u8],
    incoming: &mut Vec<Vec<u8>>,
) -> io::Result<()> {
    while incoming.len() < READ_BATCH {
        match device.try_recv(buffer) {
            Ok(0) => break,
            Ok(length) => incoming.push(buffer[..length].to_vec()),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

async fn sleep_for(wait: Option<std::time::Duration>) {
    match wait {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}
