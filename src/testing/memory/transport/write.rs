//! The write side of an in-memory end: the "kernel" write into the peer's
//! queue, flushing the write buffer, and what waits for it to drain.

use std::io;
use std::rc::Rc;

use super::{CloseKind, KERNEL_WRITE, MemoryTransport};
use crate::error::{Error, Result};
use crate::protocol::CloseReason;

impl MemoryTransport {
    /// The "kernel" write: move up to `data.len()` bytes into the peer's
    /// queue. `Ok(0)` means no room (would block).
    pub(super) fn kernel_send(&self, data: &[u8]) -> io::Result<usize> {
        let limit = {
            let mut st = self.st.borrow_mut();
            if let Some(e) = st.fail_next_write.take() {
                return Err(e);
            }
            if st.rx_reset {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            st.max_write.unwrap_or(usize::MAX).min(data.len())
        };
        let peer = self.peer().filter(|p| !p.st.borrow().core.lost);
        let Some(peer) = peer else {
            // The peer's socket is closed: the bytes vanish and a reset
            // comes back, as TCP does.
            self.receive_reset();
            return Ok(limit);
        };
        let n = {
            let mut pst = peer.st.borrow_mut();
            let room = pst.capacity.saturating_sub(pst.rx.len());
            let n = limit.min(room);
            pst.rx.extend_from_slice(&data[..n]);
            n
        };
        if n > 0 {
            peer.schedule_deliver();
        }
        Ok(n)
    }

    /// How many bytes the peer's queue takes now (all, if it is gone: the
    /// bytes vanish then).
    pub(super) fn peer_room(&self) -> usize {
        match self.peer() {
            Some(p) => {
                let pst = p.st.borrow();
                if pst.core.lost {
                    usize::MAX
                } else {
                    pst.capacity.saturating_sub(pst.rx.len())
                }
            }
            None => usize::MAX,
        }
    }

    pub(super) fn schedule_flush(&self) {
        {
            let mut st = self.st.borrow_mut();
            if st.flush_scheduled || st.core.lost || st.core.wbuf.is_empty() {
                return;
            }
            st.flush_scheduled = true;
        }
        let me = self.rc();
        self.handle.call_soon(move || me.flush());
    }

    pub(super) fn flush(self: &Rc<Self>) {
        self.st.borrow_mut().flush_scheduled = false;
        loop {
            let chunk = {
                let st = self.st.borrow();
                if st.core.lost || st.core.wbuf.is_empty() {
                    break;
                }
                // Copy only what the peer can take now: with a small
                // capacity a copy of the whole buffer per send would make
                // flushing quadratic.
                let want = st
                    .core
                    .wbuf
                    .len()
                    .min(st.max_write.unwrap_or(KERNEL_WRITE))
                    .min(self.peer_room());
                let mut slices = Vec::new();
                st.core.wbuf.slices(&mut slices, 64);
                let mut chunk = Vec::with_capacity(want);
                for s in &slices {
                    let take = (want - chunk.len()).min(s.len());
                    chunk.extend_from_slice(&s[..take]);
                    if chunk.len() == want {
                        break;
                    }
                }
                chunk
            };
            match self.kernel_send(&chunk) {
                Ok(0) => return, // the peer's delivery schedules us again
                Ok(n) => {
                    let flow = {
                        let mut st = self.st.borrow_mut();
                        st.core.stats.bytes_sent += n as u64;
                        st.core.wbuf.consume(n)
                    };
                    self.schedule_flow(flow);
                }
                Err(e) => {
                    self.finish(CloseReason::from_io(e), false);
                    return;
                }
            }
        }
        self.after_drain();
    }

    /// The write buffer is empty: do what waited for it.
    pub(super) fn after_drain(self: &Rc<Self>) {
        let drained = self.st.borrow_mut().core.drained();
        let Some((eof_now, closing)) = drained else {
            return;
        };
        if eof_now {
            if let Some(p) = self.peer() {
                p.receive_eof();
            }
            if self.st.borrow().core.eof_received && closing.is_none() {
                self.begin_close(CloseKind::Local);
                return;
            }
        }
        if let Some(kind) = closing {
            self.finish_graceful(kind);
        }
    }

    pub(super) fn write_all(&self, data: &[u8]) -> Result<()> {
        let buffered = {
            let st = self.st.borrow();
            st.core.check_writable()?;
            !st.core.wbuf.is_empty()
        };
        if data.is_empty() {
            return Ok(());
        }
        let sent = if buffered {
            0
        } else {
            match self.kernel_send(data) {
                Ok(n) => n,
                Err(e) => {
                    let err = Error::io("write", io::Error::new(e.kind(), e.to_string()));
                    self.finish(CloseReason::from_io(e), false);
                    return Err(err);
                }
            }
        };
        let flow = {
            let mut st = self.st.borrow_mut();
            st.core.stats.bytes_sent += sent as u64;
            if sent == data.len() {
                return Ok(());
            }
            st.core.wbuf.push_slice(&data[sent..])
        };
        self.schedule_flow(flow);
        self.schedule_flush();
        Ok(())
    }
}
