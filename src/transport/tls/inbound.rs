//! What comes up from the stream transport below: ciphertext, EOF,
//! flow-control and close events, turned into the user's plaintext
//! callbacks in contract order (see `layer.rs` for the states).

use std::io;
use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;

use super::layer::{Hs, Lower, Shutdown, TlsLayer};
use crate::error::Error;
use crate::protocol::{CloseReason, Protocol};
use crate::transport::Transport;

impl TlsLayer {
    pub(super) fn on_ciphertext(self: &Rc<Self>, data: &[u8]) {
        if self.st.borrow().lost {
            return;
        }
        // What rustls answers (handshake records, tickets) and what the
        // user writes back from data_received leave together, at the end.
        let _cork = self.cork();
        // Plaintext written during the handshake is released to rustls
        // when it completes: it counts against the cork's limit.
        let early = self.session.borrow().queued_len();
        let r = {
            let mut st = self.st.borrow_mut();
            let mut sess = self.session.borrow_mut();
            sess.receive(data, &mut st.plain_in)
        };
        let released = early.saturating_sub(self.session.borrow().queued_len());
        self.flush_soon(released);
        if r.handshake_completed {
            self.handshake_completed();
        }
        if r.peer_closed {
            self.st.borrow_mut().peer_closed = true;
        }
        if let Some(e) = r.error {
            self.fail(CloseReason::Tls(e));
        }
        self.progress();
    }

    pub(super) fn handshake_completed(self: &Rc<Self>) {
        let info = self.session.borrow().info();
        self.st.borrow_mut().info = Some(info.clone());
        self.settle_handshake(Ok(info));
        // The stream read on through the handshake whatever the user
        // asked; a pause asked for meanwhile takes effect now, or the
        // peer's data would pile up in `plain_in` unread.
        self.update_reading();
        // The plaintext held during the handshake was released to rustls
        // by the read that completed it; on_ciphertext, our only caller,
        // flushed (or holds) it already.
        let connect = {
            let mut st = self.st.borrow_mut();
            let c = st.connect_on_handshake && !st.closing && !st.lost;
            if c {
                st.user_connected = true;
            }
            c
        };
        if connect && !self.call_user("connection_made", |p| p.connection_made(self.transport())) {
            return;
        }
        let (close_now, eof_now) = {
            let st = self.st.borrow();
            (st.shutdown == Shutdown::AfterHandshake, st.eof_pending)
        };
        if eof_now {
            self.write_close_notify_eof();
        }
        if close_now {
            self.send_close_and_wait();
        }
        self.check_flow();
    }

    /// A fatal error: a handshake failure ends things now; after the
    /// handshake, the plaintext decrypted before it is delivered first.
    pub(super) fn fail(self: &Rc<Self>, reason: CloseReason) {
        let hs = {
            let mut st = self.st.borrow_mut();
            if st.lost {
                return;
            }
            if st.hs == Hs::Done {
                st.failure.get_or_insert(reason.clone());
            } else {
                st.final_reason.get_or_insert(reason.clone());
            }
            st.hs
        };
        if hs == Hs::Pending {
            self.report_server_handshake_failure(&reason);
            self.settle_handshake(Err(Error::TlsHandshake(reason)));
            self.close_lower();
        }
    }

    /// Deliver what can be delivered, then act on EOF, errors and a
    /// pending shutdown.
    pub(super) fn progress(self: &Rc<Self>) {
        {
            let mut st = self.st.borrow_mut();
            if st.lost {
                return;
            }
            if st.closing {
                // Closed by the user: input is discarded; the shutdown
                // ends when the peer closes too or anything goes wrong.
                st.plain_in.clear();
                let done = st.shutdown == Shutdown::AwaitPeer
                    && (st.peer_closed || st.tcp_eof || st.failure.is_some());
                drop(st);
                if done {
                    self.close_lower();
                }
                return;
            }
        }
        if !self.deliver() {
            return;
        }
        let (eof_now, failure) = {
            let mut st = self.st.borrow_mut();
            if st.lost || st.closing || st.hs != Hs::Done {
                return;
            }
            let idle = st.plain_in.is_empty() && st.user_connected && !st.user_paused;
            let eof_now = idle && st.peer_closed && !st.eof_delivered;
            if eof_now {
                st.eof_delivered = true;
            }
            // A broken connection does not wait for resume_reading:
            // plaintext still held back by a pause is dropped with it.
            let failure = if !eof_now
                && st.failure.is_some()
                && (idle || st.user_paused || !st.user_connected)
            {
                st.failure.take()
            } else {
                None
            };
            (eof_now, failure)
        };
        if eof_now {
            let mut keep = false;
            if !self.call_user("eof_received", |p| keep = p.eof_received()) {
                return;
            }
            let eof_written = self.st.borrow().eof_written;
            if !keep {
                self.set_final(CloseReason::PeerEof);
                self.session.borrow_mut().close_notify();
                self.flush_output();
                self.close_lower();
            } else if eof_written {
                self.set_final(CloseReason::LocalClose);
                self.close_lower();
            }
            return;
        }
        if let Some(reason) = failure {
            self.set_final(reason);
            self.close_lower();
        }
    }

    pub(super) fn set_final(&self, reason: CloseReason) {
        self.st.borrow_mut().final_reason.get_or_insert(reason);
    }

    /// Hand the decrypted plaintext to the user while allowed. `false` if
    /// the user's callback panicked.
    pub(super) fn deliver(&self) -> bool {
        loop {
            let chunk = {
                let mut st = self.st.borrow_mut();
                if st.lost
                    || st.closing
                    || st.user_paused
                    || !st.user_connected
                    || st.hs != Hs::Done
                    || st.plain_in.is_empty()
                {
                    return true;
                }
                let c = st.plain_in.split().freeze();
                st.stats.bytes_received += c.len() as u64;
                c
            };
            if !self.call_user("data_received", |p| p.data_received(&chunk)) {
                return false;
            }
        }
    }

    pub(super) fn on_lower_eof(self: &Rc<Self>) {
        let hs = {
            let mut st = self.st.borrow_mut();
            st.tcp_eof = true;
            if st.hs == Hs::Done && !st.peer_closed && !st.closing {
                st.failure
                    .get_or_insert(CloseReason::Io(Arc::new(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection without a TLS close_notify \
                     (the data may be truncated)",
                    ))));
            }
            st.hs
        };
        if hs == Hs::Pending {
            self.fail(CloseReason::Io(Arc::new(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection during the TLS handshake",
            ))));
        }
        self.progress();
    }

    pub(super) fn on_lower_lost(&self, reason: CloseReason) {
        let Some((decided, connected)) = self.set_lost() else {
            return;
        };
        let reason = decided.unwrap_or(reason);
        self.settle_handshake(Err(Error::TlsHandshake(reason.clone())));
        if connected {
            self.call_user("connection_lost", |p| p.connection_lost(reason));
        }
        self.release();
    }

    /// The stream below dropped its protocol ([`Lower`]): after its
    /// `connection_lost`, when [`on_lower_lost`](Self::on_lower_lost) has
    /// done all this already, or without it because the loop closed (the
    /// stream's `loop_closed`, or its `connection_lost` dropped unrun with
    /// the loop's queue). The stream has closed its socket then, and no
    /// callback can run any more, so no `connection_lost` either: end
    /// silently, releasing what holds the user's protocol and this layer in
    /// a cycle (the protocol usually keeps this layer's transport).
    pub(super) fn on_lower_dropped(&self) {
        if self.set_lost().is_none() {
            return;
        }
        // A task awaiting the handshake is woken: on a closed loop that
        // drops it, and with it what it held of this layer.
        self.settle_handshake(Err(Error::LoopClosed));
        self.release();
    }

    /// Mark the connection lost and cancel its timers. `None` if it
    /// already was; else what `connection_lost` was decided to say, if
    /// anything, and whether the user's protocol is connected.
    fn set_lost(&self) -> Option<(Option<CloseReason>, bool)> {
        let (timers, out) = {
            let mut st = self.st.borrow_mut();
            if st.lost {
                return None;
            }
            st.lost = true;
            st.plain_in = BytesMut::new();
            let timers = [
                st.hs_timer.take(),
                st.shutdown_timer.take(),
                st.close_timer.take(),
            ];
            (timers, (st.final_reason.take(), st.user_connected))
        };
        for t in timers.into_iter().flatten() {
            t.cancel();
        }
        Some(out)
    }

    /// Break the cycles user protocol -> transport -> layer -> user, and
    /// layer -> stream below -> [`Lower`] -> layer.
    fn release(&self) {
        let user = self.user.borrow_mut().take();
        let lower = self.lower.borrow_mut().take();
        drop((user, lower));
    }

    pub(super) fn on_drain_requested(&self) -> bool {
        if !self.st.borrow().user_connected {
            return false; // mid-handshake: let the server close the stream
        }
        let mut keep = false;
        if self.call_user("drain_requested", |p| keep = p.drain_requested()) && !keep {
            crate::transport::TransportImpl::close(self);
        }
        true
    }
}

impl Drop for Lower {
    fn drop(&mut self) {
        self.0.on_lower_dropped();
    }
}

impl Protocol for Lower {
    fn connection_made(&mut self, transport: Transport) {
        self.0.attach(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.0.on_ciphertext(data);
    }

    fn eof_received(&mut self) -> bool {
        self.0.on_lower_eof();
        // The layer decides when the stream closes (it may still have a
        // close_notify or, after a half-close, plaintext to send).
        true
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        self.0.on_lower_lost(reason);
    }

    fn pause_writing(&mut self) {
        self.0.check_flow();
    }

    fn resume_writing(&mut self) {
        self.0.check_flow();
    }

    fn drain_requested(&mut self) -> bool {
        self.0.on_drain_requested()
    }
}
