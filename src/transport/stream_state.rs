//! The state machine of a stream connection's lifetime, shared by the
//! socket transport (`stream.rs`) and the in-memory one
//! (`testing::memory`), which must behave the same without a kernel: the
//! write buffer, half-close in each direction, graceful close, and the
//! end of the connection.
//!
//! Plain data and decisions, no I/O: each transport asks what is due
//! (an EOF to send, a graceful finish) and does it its own way (a
//! `shutdown` on the socket, a FIN in the peer's queue).

use super::buffer::WriteBuffer;
use super::{TransportStats, closed};
use crate::error::{Error, Result};
use crate::protocol::CloseReason;
use crate::time::TimerHandle;

/// Who started a graceful close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseKind {
    /// `close`, or both sides' EOF.
    Local,
    /// The peer's EOF, with the protocol not keeping the connection open.
    PeerEof,
}

impl CloseKind {
    /// The `connection_lost` reason of a graceful close of this kind.
    pub(crate) fn reason(self) -> CloseReason {
        match self {
            CloseKind::Local => CloseReason::LocalClose,
            CloseKind::PeerEof => CloseReason::PeerEof,
        }
    }
}

/// What a stream transport knows about its connection's lifetime.
#[derive(Default)]
pub(crate) struct StreamState {
    pub(crate) wbuf: WriteBuffer,
    /// A graceful close began: it ends once the buffer is flushed.
    pub(crate) closing: Option<CloseKind>,
    /// `write_eof` was called; the EOF goes out once the buffer is flushed.
    pub(crate) eof_pending: bool,
    pub(crate) eof_written: bool,
    pub(crate) eof_received: bool,
    /// Reading paused by the protocol.
    pub(crate) paused: bool,
    /// The connection is over (`connection_lost` is scheduled).
    pub(crate) lost: bool,
    pub(crate) stats: TransportStats,
    pub(crate) close_timer: Option<TimerHandle>,
}

impl StreamState {
    /// `true` once a close began or the connection is gone.
    #[inline]
    pub(crate) fn is_closing(&self) -> bool {
        self.lost || self.closing.is_some()
    }

    /// Whether received data is delivered now.
    #[inline]
    pub(crate) fn can_read(&self) -> bool {
        !(self.is_closing() || self.paused || self.eof_received)
    }

    /// A write is refused once closing, or after `write_eof`.
    #[inline]
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.is_closing() {
            return closed();
        }
        if self.eof_pending || self.eof_written {
            return Err(Error::EofWritten);
        }
        Ok(())
    }

    /// Begin a graceful close of `kind`, unless one began or the
    /// connection is gone. `true`: nothing is buffered, finish it now.
    pub(crate) fn begin_close(&mut self, kind: CloseKind) -> bool {
        if self.is_closing() {
            return false;
        }
        self.closing = Some(kind);
        self.wbuf.is_empty()
    }

    /// `write_eof`: refused once closing, a no-op the second time.
    /// `Ok(true)`: nothing is buffered, send the EOF now (then
    /// [`eof_sent`](Self::eof_sent)).
    pub(crate) fn request_eof(&mut self) -> Result<bool> {
        if self.is_closing() {
            return closed();
        }
        if self.eof_pending || self.eof_written {
            return Ok(false);
        }
        self.eof_pending = true;
        Ok(self.wbuf.is_empty())
    }

    /// The EOF goes out now. `true` if the peer's came already: the
    /// connection is then done both ways and closes.
    pub(crate) fn eof_sent(&mut self) -> bool {
        self.eof_pending = false;
        self.eof_written = true;
        self.eof_received
    }

    /// The write buffer drained: `None` if it did not or the connection
    /// is gone; else whether the EOF is due now (marked sent), and the
    /// graceful close waiting for the drain, if any.
    pub(crate) fn drained(&mut self) -> Option<(bool, Option<CloseKind>)> {
        if self.lost || !self.wbuf.is_empty() {
            return None;
        }
        let eof_now = self.eof_pending && !self.eof_written;
        if eof_now {
            self.eof_sent();
        }
        Some((eof_now, self.closing))
    }

    /// After `eof_received` answered `keep_open`: the close it calls for.
    /// Not keeping open closes; keeping open after our own EOF went out
    /// closes too (both directions are done).
    pub(crate) fn close_after_eof(&self, keep_open: bool) -> Option<CloseKind> {
        if !keep_open {
            Some(CloseKind::PeerEof)
        } else if self.eof_written {
            Some(CloseKind::Local)
        } else {
            None
        }
    }

    /// The slot for `close_with_deadline`'s timer while the connection
    /// is there; `None` once it is gone.
    pub(crate) fn close_timer_slot(&mut self) -> Option<&mut Option<TimerHandle>> {
        (!self.lost).then_some(&mut self.close_timer)
    }

    /// The loop closed under an open connection: it is over, with no
    /// callback to come, and nothing will flush. The close deadline's
    /// timer is handed back rather than dropped here, because dropping it
    /// drops what its callback holds, which the caller must do with no
    /// borrow of this state held.
    #[must_use = "drop the timer once the state is no longer borrowed"]
    pub(crate) fn loop_closed(&mut self) -> Option<TimerHandle> {
        self.lost = true;
        self.closing.get_or_insert(CloseKind::Local);
        self.wbuf.clear();
        self.close_timer.take()
    }

    /// The connection is over: drop the buffer and the close deadline.
    /// `false` if it already was (finishing is idempotent).
    pub(crate) fn set_lost(&mut self) -> bool {
        if self.lost {
            return false;
        }
        self.lost = true;
        self.closing.get_or_insert(CloseKind::Local);
        self.wbuf.clear();
        if let Some(t) = self.close_timer.take() {
            t.cancel();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_waits_for_the_buffer_and_begins_once() {
        let mut st = StreamState::default();
        st.wbuf.push_slice(b"pending");
        assert!(!st.begin_close(CloseKind::Local), "buffer not empty");
        assert!(!st.begin_close(CloseKind::PeerEof), "already closing");
        assert_eq!(st.closing, Some(CloseKind::Local));
        assert!(matches!(st.check_writable(), Err(Error::Closed)));
        assert_eq!(st.drained(), None, "not drained yet");
        st.wbuf.consume(7);
        assert_eq!(st.drained(), Some((false, Some(CloseKind::Local))));
    }

    #[test]
    fn eof_waits_for_the_buffer_and_then_refuses_writes() {
        let mut st = StreamState::default();
        st.wbuf.push_slice(b"x");
        assert!(!st.request_eof().unwrap(), "buffered: not now");
        assert!(!st.request_eof().unwrap(), "second call: nothing to do");
        assert!(matches!(st.check_writable(), Err(Error::EofWritten)));
        st.wbuf.consume(1);
        assert_eq!(st.drained(), Some((true, None)));
        assert!(st.eof_written && !st.eof_pending);
        assert_eq!(st.drained(), Some((false, None)), "sent once");
        assert_eq!(st.close_after_eof(true), Some(CloseKind::Local));
    }

    #[test]
    fn eof_on_an_empty_buffer_is_due_now_and_knows_the_peers() {
        let mut st = StreamState {
            eof_received: true,
            ..StreamState::default()
        };
        assert!(!st.can_read(), "nothing more to read after the peer's EOF");
        assert!(st.request_eof().unwrap());
        assert!(st.eof_sent(), "both directions done");
    }

    #[test]
    fn after_the_peers_eof_only_keep_open_without_our_eof_stays_open() {
        let st = StreamState::default();
        assert_eq!(st.close_after_eof(false), Some(CloseKind::PeerEof));
        assert_eq!(st.close_after_eof(true), None);
    }

    #[test]
    fn loop_closed_ends_the_connection_and_drops_the_buffer() {
        let mut st = StreamState::default();
        st.wbuf.push_slice(b"unsent");
        assert!(st.loop_closed().is_none(), "no deadline was armed");
        assert!(st.wbuf.is_empty() && st.is_closing() && !st.can_read());
        assert_eq!(st.closing, Some(CloseKind::Local));
        assert!(st.close_timer_slot().is_none());
        assert!(!st.set_lost(), "already over");
    }

    #[test]
    fn set_lost_is_idempotent_drops_the_buffer_and_refuses_everything() {
        let mut st = StreamState::default();
        st.wbuf.push_slice(b"lost");
        assert!(st.set_lost());
        assert!(!st.set_lost());
        assert!(st.wbuf.is_empty() && st.is_closing() && !st.can_read());
        assert_eq!(st.closing, Some(CloseKind::Local));
        assert!(!st.begin_close(CloseKind::Local));
        assert!(matches!(st.request_eof(), Err(Error::Closed)));
        assert_eq!(st.drained(), None);
        assert!(matches!(CloseKind::PeerEof.reason(), CloseReason::PeerEof));
        assert!(matches!(CloseKind::Local.reason(), CloseReason::LocalClose));
    }
}
