//! When a connection's packets may leave with the normal IP hop limit again after a limited
//! reply (`--hop-limit`, EC2's `HttpPutResponseHopLimit`).
//!
//! smoltcp's `tcp::Socket::set_hop_limit` applies to every packet the socket builds from then
//! on, retransmissions of older bytes included. So lifting the limit the moment a token reply has
//! been *written* would let a retransmission of that reply escape with the normal hop limit (64)
//! and reach the very client the limit is meant to stop: the first copy dies at the router, the
//! client never acknowledges it, and the second copy gets through. The limit is therefore lifted
//! only once every byte written before the release was asked for has been *acknowledged*.
//!
//! The HTTP layer asks for the release when the next request arrives, and hyper may still hold
//! part of the previous reply in its own buffer at that moment (it reads a pipelined request
//! before its last flush completed). That is exactly when its last write found the send buffer
//! full, so such a release is ignored: the limit stays, and a later request releases it.
//!
//! Plain data, no socket: the endpoint keeps one per connection (`table.rs`) and applies what it
//! decides to the smoltcp socket.

/// Per-connection bookkeeping of the hop limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ReplyHops {
    state: State,
    /// Bytes the stream has queued on the socket, ever.
    written: u64,
    /// The stream's last write could not queue everything it was offered: its writer (hyper)
    /// still holds bytes of the current reply.
    writer_holds_more: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    /// The socket's default hop limit.
    #[default]
    Normal,
    /// Every packet leaves with the limit.
    Limited,
    /// Back to normal once the first `after` bytes written are acknowledged.
    Releasing { after: u64 },
}

impl ReplyHops {
    /// A limited reply begins: from now on every packet, retransmissions included, is limited.
    pub(super) fn limit(&mut self) {
        self.state = State::Limited;
    }

    /// The stream queued `queued` bytes; `holds_more` when it was offered more than fitted.
    pub(super) fn wrote(&mut self, queued: usize, holds_more: bool) {
        self.written = self.written.saturating_add(queued as u64);
        self.writer_holds_more = holds_more;
    }

    /// The replies from now on need no limit. Returns true when the caller must check
    /// [`ReplyHops::acknowledged`] from now on (a release is pending).
    pub(super) fn release(&mut self) -> bool {
        if self.state == State::Normal || self.writer_holds_more {
            // Nothing to lift, or part of the limited reply is not even written yet.
            return false;
        }
        self.state = State::Releasing {
            after: self.written,
        };
        true
    }

    /// Whether the limit can be lifted now, given the bytes still in the socket's send queue
    /// (written but not acknowledged). When true the state is back to normal.
    pub(super) fn acknowledged(&mut self, send_queue: usize) -> bool {
        let State::Releasing { after } = self.state else {
            return false;
        };
        let acknowledged = self.written.saturating_sub(send_queue as u64);
        if acknowledged < after {
            return false;
        }
        self.state = State::Normal;
        true
    }

    /// True while a release waits for acknowledgements.
    pub(super) fn releasing(&self) -> bool {
        matches!(self.state, State::Releasing { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_lifted_only_once_everything_written_before_the_release_is_acknowledged() {
        let mut hops = ReplyHops::default();
        hops.limit();
        hops.wrote(300, false);
        assert!(hops.release());
        assert!(!hops.acknowledged(300), "nothing acknowledged yet");
        // The next reply is queued behind the unacknowledged one.
        hops.wrote(200, false);
        assert!(
            !hops.acknowledged(300),
            "100 of the limited 300 bytes still out"
        );
        assert!(hops.acknowledged(200), "the limited bytes are acknowledged");
        assert!(!hops.releasing());
    }

    #[test]
    fn a_release_while_the_writer_still_holds_part_of_the_reply_is_ignored() {
        let mut hops = ReplyHops::default();
        hops.limit();
        hops.wrote(4096, true);
        assert!(
            !hops.release(),
            "hyper still holds the end of the limited reply"
        );
        assert!(!hops.acknowledged(0));
        hops.wrote(120, false);
        assert!(hops.release(), "a later request releases it");
        assert!(hops.acknowledged(0));
    }

    #[test]
    fn a_new_limited_reply_cancels_a_pending_release() {
        let mut hops = ReplyHops::default();
        hops.limit();
        hops.wrote(100, false);
        assert!(hops.release());
        hops.limit();
        assert!(!hops.acknowledged(0), "limited again: no lifting");
        assert!(!hops.releasing());
    }

    #[test]
    fn releasing_a_connection_that_was_never_limited_does_nothing() {
        let mut hops = ReplyHops::default();
        hops.wrote(10, false);
        assert!(!hops.release());
        assert!(!hops.acknowledged(0));
    }
}
