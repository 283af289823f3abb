//! The state the driver task and every [`super::TcpStream`] share, and the clock they read.
//!
//! It sits below both: the driver creates it and streams hold an `Arc` of it, so neither module
//! needs the other for it (the imports form a chain `shared ← stream ← driver`, not a cycle).
//! What it owns is small on purpose: the endpoint behind one lock, and the `Notify` a stream uses
//! to ask the driver for a round (something to transmit, a window to reopen, a socket to reap).
//! Nothing that waits (a device, the kernel's answer about a caller) is ever done under the
//! lock.

use crate::stack::endpoint::Endpoint;
use smoltcp::time::Instant;
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::{Notify, futures::Notified};

/// State shared by the driver and every stream.
#[derive(Debug)]
pub(super) struct Shared {
    endpoint: Mutex<Endpoint>,
    driver: Notify,
}

impl Shared {
    pub(super) fn new(endpoint: Endpoint) -> Self {
        Shared {
            endpoint: Mutex::new(endpoint),
            driver: Notify::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Endpoint> {
        // A panic while holding the lock cannot leave smoltcp in a state worse than a reset
        // connection; keep serving the others.
        self.endpoint.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the driver for a round. `notify_one` keeps the wake-up if the driver is busy, so a
    /// request made while it is not waiting is not lost.
    pub(super) fn wake_driver(&self) {
        self.driver.notify_one();
    }

    /// What the driver waits on for [`Shared::wake_driver`].
    pub(super) fn driver_woken(&self) -> Notified<'_> {
        self.driver.notified()
    }
}

/// The stack's clock: monotonic, and tokio's, so a paused test clock drives smoltcp too.
/// (smoltcp's own `Instant::now()` reads the wall clock, which may jump.)
pub(super) fn now() -> Instant {
    Instant::from(tokio::time::Instant::now().into_std())
}
