//! The read side of an in-memory end: the receive queue, FIN and reset
//! arrival, and delivery to the protocol in chunks.

use std::io;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Buf;

use super::{CHUNKS_PER_TURN, MemoryTransport};
use crate::event_loop::ExceptionKind;
use crate::protocol::CloseReason;

impl MemoryTransport {
    pub(super) fn schedule_deliver(&self) {
        {
            let mut st = self.st.borrow_mut();
            if st.deliver_scheduled || st.core.lost {
                return;
            }
            st.deliver_scheduled = true;
        }
        let me = self.rc();
        self.handle.call_soon(move || me.deliver());
    }

    /// A reset arrives (behind the data already queued).
    pub(super) fn receive_reset(&self) {
        let flush = {
            let mut st = self.st.borrow_mut();
            if st.core.lost {
                return;
            }
            st.rx_reset = true;
            !st.core.wbuf.is_empty()
        };
        self.schedule_deliver();
        if flush {
            // A pending write notices the reset even while reading is
            // paused, as on a socket.
            self.schedule_flush();
        }
    }

    /// A FIN arrives (behind the data already queued).
    pub(super) fn receive_eof(&self) {
        {
            let mut st = self.st.borrow_mut();
            if st.core.lost {
                return;
            }
            st.rx_eof = true;
        }
        self.schedule_deliver();
    }

    pub(super) fn deliver(self: &Rc<Self>) {
        self.st.borrow_mut().deliver_scheduled = false;
        enum Step {
            Data(usize),
            Reset,
            Eof,
        }
        for _ in 0..CHUNKS_PER_TURN {
            let step = {
                let mut st = self.st.borrow_mut();
                if !st.core.can_read() {
                    return; // resume_reading schedules us again
                }
                if !st.rx.is_empty() {
                    let avail = st.rx.len();
                    Step::Data(st.chunker.next(avail))
                } else if st.rx_reset {
                    Step::Reset
                } else if st.rx_eof {
                    Step::Eof
                } else {
                    return;
                }
            };
            match step {
                Step::Data(k) => {
                    if !self.deliver_chunk(k) {
                        return;
                    }
                }
                Step::Reset => {
                    let e = io::Error::from(io::ErrorKind::ConnectionReset);
                    self.finish(CloseReason::PeerReset(Arc::new(e)), false);
                    return;
                }
                Step::Eof => return self.eof(),
            }
        }
        self.schedule_deliver();
    }

    /// Hand up to `k` queued bytes to the protocol (through its own buffer
    /// if it lends one). Returns `false` if the connection went away.
    pub(super) fn deliver_chunk(self: &Rc<Self>, k: usize) -> bool {
        let Some(proto) = self.protocol.borrow().clone() else {
            return false;
        };
        // Copy out first: no borrow of our state is held in user code.
        let chunk = bytes::Bytes::copy_from_slice(&self.st.borrow().rx[..k]);
        let lent = {
            let Ok(mut p) = proto.try_borrow_mut() else {
                return false;
            };
            let r = self.handle.guard_with(
                ExceptionKind::ProtocolPanic,
                &|| self.describe("get_buffer"),
                || {
                    p.get_buffer(k).map(|buf| {
                        let n = buf.len().min(k);
                        buf[..n].copy_from_slice(&chunk[..n]);
                        n
                    })
                },
            );
            drop(p);
            match r {
                Ok(v) => v,
                Err(msg) => {
                    self.finish(CloseReason::Panic(msg), true);
                    return false;
                }
            }
        };
        let n = lent.unwrap_or(k);
        if n == 0 {
            // As the socket transport does: a protocol error, not EOF.
            let msg = "BufferedProtocol::get_buffer returned an empty buffer";
            self.handle.report(
                ExceptionKind::Error,
                format!("{}: {msg}", self.describe("get_buffer")),
            );
            self.finish(CloseReason::protocol(io::Error::other(msg)), true);
            return false;
        }
        {
            let mut st = self.st.borrow_mut();
            st.rx.advance(n);
            st.core.stats.bytes_received += n as u64;
        }
        // Room in our queue: the peer may flush more.
        if let Some(p) = self.peer() {
            p.schedule_flush();
        }
        match lent {
            Some(n) => self.call_protocol("buffer_updated", |p| p.buffer_updated(n)),
            None => self.call_protocol("data_received", |p| p.data_received(&chunk)),
        }
    }

    pub(super) fn eof(self: &Rc<Self>) {
        self.st.borrow_mut().core.eof_received = true;
        let mut keep_open = false;
        if !self.call_protocol("eof_received", |p| keep_open = p.eof_received()) {
            return;
        }
        let close = self.st.borrow().core.close_after_eof(keep_open);
        if let Some(kind) = close {
            self.begin_close(kind);
        }
    }
}
