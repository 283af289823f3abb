//! The TUN stack's streams as connections the HTTP server can serve: where `http`'s two traits
//! meet the stack's types.
//!
//! `http` defines what it asks of a connection ([`Connection`], [`ReplyHops`]: lower the IP hop
//! limit for a token reply, lift it again) and never sees smoltcp; the stack hands out streams
//! with a hop-limit handle and never sees HTTP. Neither imports the other, so the impls live
//! here, in the wiring that imports both.

use crate::http::{Connection, ReplyHops};
use crate::stack::{HopLimit, TcpStream};
use std::sync::Arc;

impl ReplyHops for HopLimit {
    fn limit(&self, hops: u8) {
        HopLimit::limit(self, hops);
    }

    fn release(&self) {
        HopLimit::release(self);
    }
}

impl Connection for TcpStream {
    fn reply_hops(&self) -> Option<Arc<dyn ReplyHops>> {
        Some(Arc::new(self.hop_limit()))
    }
}
