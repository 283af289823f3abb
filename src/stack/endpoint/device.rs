//! The smoltcp device: two in-memory packet queues between the interface and the endpoint's
//! caller.
//!
//! smoltcp never touches the TUN descriptor. The endpoint pushes each packet it is given into
//! `receive` just before smoltcp reads it, and the runtime drains `transmit` after every poll,
//! writing the packets to the TUN outside the stack's lock. Keeping I/O out of the device is what
//! lets the [`super::Endpoint`] be driven, and tested, with packets in memory; the in-memory
//! client of the tests uses the same queues for its own smoltcp interface. (The packet *device*
//! the runtime reads and writes, the TUN or a pipe, is `stack::runtime::packet_io`.)

use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::collections::VecDeque;

/// A smoltcp `phy::Device` over two packet queues.
#[derive(Debug)]
pub struct PacketQueues {
    /// Packets for smoltcp to read, in order.
    pub receive: VecDeque<Vec<u8>>,
    /// Packets smoltcp wrote, in order.
    pub transmit: VecDeque<Vec<u8>>,
    mtu: usize,
    /// Emptied transmit buffers, reused so steady traffic allocates nothing.
    spare: Vec<Vec<u8>>,
}

impl PacketQueues {
    /// Empty queues for packets of at most `mtu` bytes.
    pub fn new(mtu: usize) -> Self {
        PacketQueues {
            receive: VecDeque::new(),
            transmit: VecDeque::new(),
            mtu,
            spare: Vec::new(),
        }
    }

    /// Returns a buffer the driver has finished writing, for reuse.
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        const MAX_SPARE: usize = 64;
        if self.spare.len() < MAX_SPARE {
            buffer.clear();
            self.spare.push(buffer);
        }
    }
}

impl phy::Device for PacketQueues {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let packet = self.receive.pop_front()?;
        Some((
            RxToken(packet),
            TxToken {
                transmit: &mut self.transmit,
                spare: &mut self.spare,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        Some(TxToken {
            transmit: &mut self.transmit,
            spare: &mut self.spare,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ip;
        capabilities.max_transmission_unit = self.mtu;
        // Verify checksums both ways: a Linux TUN without offload delivers complete packets, and
        // a bad checksum from a hostile sender must be dropped, not trusted.
        capabilities.checksum = ChecksumCapabilities::default();
        capabilities
    }
}

/// One received packet, for smoltcp to read.
pub struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

/// Room for one packet smoltcp writes, queued for the runtime.
pub struct TxToken<'a> {
    transmit: &'a mut VecDeque<Vec<u8>>,
    spare: &'a mut Vec<Vec<u8>>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = self.spare.pop().unwrap_or_default();
        packet.resize(len, 0);
        let result = f(&mut packet);
        self.transmit.push_back(packet);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Device as _, TxToken as _};

    /// A reused transmit buffer must never carry the bytes of the packet it held before (another
    /// caller's reply) into the next one: smoltcp is handed zeroes, whatever the buffer held.
    #[test]
    fn a_recycled_transmit_buffer_is_handed_out_cleared() {
        let mut queues = PacketQueues::new(1500);
        queues.recycle(vec![0xAA; 1500]);
        let token = queues
            .transmit(Instant::from_millis(0))
            .expect("always room");
        token.consume(1200, |packet| {
            assert_eq!(packet.len(), 1200);
            assert!(
                packet.iter().all(|&byte| byte == 0),
                "the previous packet's bytes leaked into a reused buffer"
            );
        });
        let sent = queues.transmit.pop_front().expect("queued");
        assert_eq!(sent.len(), 1200);
    }

    #[test]
    fn at_most_sixty_four_buffers_are_kept_for_reuse() {
        let mut queues = PacketQueues::new(1500);
        for _ in 0..100 {
            queues.recycle(vec![0; 1500]);
        }
        assert_eq!(queues.spare.len(), 64);
    }
}
