//! The transport the user's protocol sees on a TLS connection: plaintext
//! in and out, the same contract and flow control as plain TCP.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::layer::{Hs, Shutdown, TlsLayer, close_deadline_timer};
use crate::error::{Error, Result};
use crate::protocol::{CloseReason, Protocol};
use crate::transport::{SocketAddress, TransportImpl, TransportStats, closed};

impl TransportImpl for TlsLayer {
    fn write(&self, data: &[u8]) -> Result<()> {
        {
            let st = self.st.borrow();
            if st.ending() {
                return closed();
            }
            if st.eof_pending || st.eof_written {
                return Err(Error::EofWritten);
            }
        }
        if data.is_empty() {
            return Ok(());
        }
        if self.session.borrow_mut().write(data).is_err() {
            // The session failed; connection_lost is on its way.
            return closed();
        }
        let handshaking = {
            let mut st = self.st.borrow_mut();
            st.stats.bytes_sent += data.len() as u64;
            st.hs != Hs::Done
        };
        if !handshaking {
            self.flush_soon(data.len());
        }
        self.check_flow();
        Ok(())
    }

    fn writelines(&self, chunks: &[&[u8]]) -> Result<()> {
        // rustls copies into records anyway; one flush for all of them.
        for c in chunks {
            self.write(c)?;
        }
        Ok(())
    }

    fn write_eof(&self) -> Result<()> {
        let handshaking = {
            let mut st = self.st.borrow_mut();
            if st.ending() {
                return closed();
            }
            if st.eof_pending || st.eof_written {
                return Ok(());
            }
            if st.hs != Hs::Done {
                // Sent once the writes held for the handshake are out.
                st.eof_pending = true;
                true
            } else {
                false
            }
        };
        if !handshaking {
            self.write_close_notify_eof();
        }
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn close(&self) {
        let hs = {
            let mut st = self.st.borrow_mut();
            if st.ending() {
                return;
            }
            st.closing = true;
            st.final_reason.get_or_insert(CloseReason::LocalClose);
            st.plain_in.clear();
            st.hs
        };
        self.start_shutdown_timer();
        match hs {
            Hs::Done => self.send_close_and_wait(),
            Hs::Pending if self.session.borrow().queued_len() > 0 => {
                // Writes made during the handshake go out first.
                self.set_shutdown_after_handshake();
            }
            Hs::Pending | Hs::Failed => {
                self.session.borrow_mut().close_notify();
                self.flush_output();
                if hs == Hs::Pending {
                    self.settle_handshake(Err(Error::TlsHandshake(CloseReason::LocalClose)));
                }
                self.close_lower();
            }
        }
    }

    fn close_with_deadline(&self, deadline: Duration) {
        self.close();
        let me = self.rc();
        let mut st = me.st.borrow_mut();
        if st.lost || st.close_timer.is_some() {
            return;
        }
        st.close_timer = Some(close_deadline_timer(&me, deadline));
    }

    fn abort(&self) {
        self.abort_with(CloseReason::LocalAbort);
    }

    fn is_closing(&self) -> bool {
        self.st.borrow().ending()
    }

    fn pause_reading(&self) {
        self.st.borrow_mut().user_paused = true;
        self.update_reading();
    }

    fn resume_reading(&self) {
        let was = std::mem::replace(&mut self.st.borrow_mut().user_paused, false);
        if !was {
            return;
        }
        self.update_reading();
        // Plaintext, an EOF or an error may be waiting; deliver it on the
        // loop, not inside this call.
        let me = self.rc();
        self.handle.call_soon(move || me.resume_delivery());
    }

    fn is_reading(&self) -> bool {
        let st = self.st.borrow();
        !(st.ending() || st.user_paused || st.eof_delivered)
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        let low = low.min(high);
        self.st.borrow_mut().marks.set_limits(high, low);
        if let Some(l) = self.lower() {
            l.set_write_buffer_limits(low, low);
        }
        self.check_flow();
    }

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        self.st.borrow().marks.limits()
    }

    fn get_write_buffer_size(&self) -> usize {
        let below = self.lower().map(|l| l.get_write_buffer_size()).unwrap_or(0);
        self.held_len() + below
    }

    fn peer_addr(&self) -> Option<SocketAddress> {
        self.lower().and_then(|l| l.peer_addr())
    }

    fn local_addr(&self) -> Option<SocketAddress> {
        self.lower().and_then(|l| l.local_addr())
    }

    fn stats(&self) -> TransportStats {
        self.st.borrow().stats
    }

    fn set_protocol(&self, protocol: Rc<RefCell<dyn Protocol>>) {
        if !self.st.borrow().lost {
            *self.user.borrow_mut() = Some(protocol);
        }
    }

    fn get_protocol(&self) -> Option<Rc<RefCell<dyn Protocol>>> {
        self.user.borrow().clone()
    }

    fn extra(&self, key: &str) -> Option<Box<dyn std::any::Any>> {
        match key {
            "tls" => self
                .st
                .borrow()
                .info
                .clone()
                .map(|i| Box::new(i) as Box<dyn std::any::Any>),
            _ => self.lower().and_then(|l| l.extra(key)),
        }
    }
}

impl TlsLayer {
    fn resume_delivery(self: Rc<Self>) {
        if self.shutdown_state() == Shutdown::No {
            self.progress();
        }
    }
}
