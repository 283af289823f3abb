//! [`PacketIo`]: what the driver needs from a packet device, and its implementation for the TUN.
//!
//! The driver moves whole IP packets and nothing else, so the device it talks to is three
//! operations: wait until a packet can be read, read the queued ones without blocking (the
//! driver reads a batch per wake-up, then polls smoltcp once), and write one packet, waiting if
//! the device queue is full. [`crate::platform::AsyncTun`] is one such device; the in-memory
//! [`super::memory::PacketPipe`] is the other, so the whole data path runs in a test without
//! root, a TUN or a network namespace.
//!
//! Generic, not `dyn`: the trait has async methods, which `dyn` could only call through a boxed
//! future per packet, and a process runs exactly one driver over exactly one device type, so
//! static dispatch costs one extra monomorphised driver (the pipe's) and nothing per packet. The
//! futures are declared `Send` because the driver is a `tokio::spawn`ed task on a multi-threaded
//! runtime.
//!
//! Opening, configuring and closing a device are not part of it: that is the platform's business
//! (`platform::claim_metadata_address`), and a device is closed by dropping it.

use crate::platform::AsyncTun;
use std::future::Future;
use std::io;

/// A device that carries whole IP packets, one per read or write.
pub trait PacketIo: Send + Sync {
    /// Resolves once at least one packet can be read with [`PacketIo::try_recv`]. An error
    /// means the device is gone for good, and ends the driver.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// Reads one packet into `buffer` and returns its length, without waiting: `WouldBlock`
    /// when none is queued. Any error other than `WouldBlock` or `Interrupted` ends the driver.
    fn try_recv(&self, buffer: &mut [u8]) -> io::Result<usize>;

    /// Writes one packet, waiting while the device queue is full. An error loses this packet
    /// only (TCP retransmits it); the driver goes on.
    fn send(&self, packet: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
}

impl PacketIo for AsyncTun {
    async fn readable(&self) -> io::Result<()> {
        AsyncTun::readable(self).await
    }

    fn try_recv(&self, buffer: &mut [u8]) -> io::Result<usize> {
        AsyncTun::try_recv(self, buffer)
    }

    async fn send(&self, packet: &[u8]) -> io::Result<()> {
        AsyncTun::send(self, packet).await
    }
}
