//! The write end of a pipe as a transport.

use std::cell::{RefCell, RefMut};
use std::io::{self, IoSlice, Write};
use std::os::fd::OwnedFd;
use std::rc::{Rc, Weak};
use std::time::Duration;

use mio::Interest;
use mio::unix::pipe::Sender;

use super::{PipeEnd, PipeTransport, open_end};
use crate::error::{Error, Result};
use crate::event_loop::Handle;
use crate::protocol::{CloseReason, Protocol};
use crate::reactor::{IoHandler, Ready, write_nonblocking};
use crate::time::TimerHandle;
use crate::transport::buffer::{Flow, WriteBuffer};
use crate::transport::close_deadline::{self, CloseDeadline};
use crate::transport::invoke;
use crate::transport::{SocketAddress, TransportImpl, TransportStats, closed};

#[derive(Default)]
struct State {
    wbuf: WriteBuffer,
    /// `close`/`write_eof` was called: close once the buffer is flushed.
    closing: bool,
    lost: bool,
    stats: TransportStats,
    close_timer: Option<TimerHandle>,
}

/// The transport of a pipe's write end.
pub(crate) struct WritePipe {
    end: PipeEnd<Sender>,
    me: Weak<WritePipe>,
    st: RefCell<State>,
}

impl PipeTransport for WritePipe {
    type End = Sender;

    fn end(&self) -> &PipeEnd<Sender> {
        &self.end
    }

    fn me(&self) -> &Weak<Self> {
        &self.me
    }

    fn finish(&self, reason: CloseReason) {
        {
            let mut st = self.st.borrow_mut();
            if st.lost {
                return;
            }
            st.lost = true;
            st.closing = true;
            st.wbuf.clear();
            if let Some(t) = st.close_timer.take() {
                t.cancel();
            }
        }
        self.release_and_report(reason);
    }
}

impl WritePipe {
    /// Make `fd` non-blocking and register it; the protocol is not called
    /// until [`PipeTransport::start`].
    pub(crate) fn open(
        handle: &Handle,
        fd: OwnedFd,
        protocol: Rc<RefCell<dyn Protocol>>,
    ) -> Result<Rc<WritePipe>> {
        // Writable readiness also reports the reader going away (EPOLLERR).
        open_end(handle, fd, protocol, Interest::WRITABLE, |end, me| {
            WritePipe {
                end,
                me,
                st: RefCell::new(State::default()),
            }
        })
    }

    fn schedule_flow(&self, flow: Flow) {
        invoke::schedule_flow(
            &self.end.handle,
            flow,
            || self.rc(),
            |me: &Self, what, f| !me.st.borrow().lost && me.call(what, f),
        );
    }

    /// Write without blocking; `Ok(0)` when the pipe is full.
    fn pipe_write(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let pipe = self.end.pipe.borrow();
        let Some(pipe) = pipe.as_ref() else {
            return Ok(0);
        };
        write_nonblocking(bufs, |b| (&*pipe).write(b), |b| (&*pipe).write_vectored(b))
    }

    fn flush(self: &Rc<Self>) {
        loop {
            let res = {
                let st = self.st.borrow();
                if st.wbuf.is_empty() || st.lost {
                    break;
                }
                let mut slices = Vec::with_capacity(16);
                st.wbuf.slices(&mut slices, 64);
                self.pipe_write(&slices)
            };
            match res {
                Ok(0) => return, // full: wait for the next writable edge
                Ok(n) => {
                    let flow = {
                        let mut st = self.st.borrow_mut();
                        st.stats.bytes_sent += n as u64;
                        st.wbuf.consume(n)
                    };
                    self.schedule_flow(flow);
                }
                Err(e) => {
                    self.finish(CloseReason::from_io(e));
                    return;
                }
            }
        }
        let close_now = {
            let st = self.st.borrow();
            st.closing && st.wbuf.is_empty() && !st.lost
        };
        if close_now {
            self.finish(CloseReason::LocalClose);
        }
    }

    fn write_chunks(&self, chunks: &[&[u8]]) -> Result<()> {
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        let mut st = self.st.borrow_mut();
        if st.lost || st.closing {
            return closed();
        }
        if total == 0 {
            return Ok(());
        }
        let mut sent = 0;
        if st.wbuf.is_empty() {
            let slices: Vec<IoSlice<'_>> = chunks
                .iter()
                .filter(|c| !c.is_empty())
                .take(64)
                .map(|c| IoSlice::new(c))
                .collect();
            match self.pipe_write(&slices) {
                Ok(n) => {
                    sent = n;
                    st.stats.bytes_sent += n as u64;
                }
                Err(e) => {
                    drop(st);
                    let err = Error::io("write to pipe", io::Error::new(e.kind(), e.to_string()));
                    self.finish(CloseReason::from_io(e));
                    return Err(err);
                }
            }
        }
        if sent == total {
            return Ok(());
        }
        let flow = st.wbuf.push_unsent(chunks, sent);
        drop(st);
        self.schedule_flow(flow);
        Ok(())
    }

    fn write_owned(&self, data: bytes::Bytes) -> Result<()> {
        let mut st = self.st.borrow_mut();
        if st.lost || st.closing {
            return closed();
        }
        if !st.wbuf.is_empty() && !data.is_empty() {
            let flow = st.wbuf.push_bytes(data);
            drop(st);
            self.schedule_flow(flow);
            return Ok(());
        }
        drop(st);
        self.write_chunks(&[&data])
    }

    /// Start a graceful close: flush, then close the descriptor.
    fn begin_close(&self) {
        let empty = {
            let mut st = self.st.borrow_mut();
            if st.lost || st.closing {
                return;
            }
            st.closing = true;
            st.wbuf.is_empty()
        };
        if empty {
            self.finish(CloseReason::LocalClose);
        }
    }

    /// The reader went away.
    fn reader_gone(&self) {
        let pending = !self.st.borrow().wbuf.is_empty();
        let reason = if pending {
            CloseReason::from_io(io::ErrorKind::BrokenPipe.into())
        } else {
            CloseReason::PeerEof
        };
        self.finish(reason);
    }
}

impl IoHandler for WritePipe {
    fn ready(self: Rc<Self>, ready: Ready) {
        if self.st.borrow().lost {
            return;
        }
        if ready.error || ready.write_closed {
            // A pipe's write end reports only this: no reader is left.
            // Try to flush first so a real EPIPE names the loss.
            self.flush();
            self.reader_gone();
        } else if ready.writable {
            self.flush();
        }
    }

    fn loop_closed(&self) {
        // No callback can run any more, so no connection_lost, and nothing
        // will flush: drop the buffer, and the close deadline's timer,
        // which holds this transport.
        let timer = {
            let mut st = self.st.borrow_mut();
            st.lost = true;
            st.closing = true;
            st.wbuf.clear();
            st.close_timer.take()
        };
        drop(timer);
        self.end.loop_closed();
    }
}

impl CloseDeadline for WritePipe {
    fn close_timer(&self) -> Option<RefMut<'_, Option<TimerHandle>>> {
        RefMut::filter_map(self.st.borrow_mut(), |st| {
            (!st.lost).then_some(&mut st.close_timer)
        })
        .ok()
    }
    /// Closing the descriptor: a pipe has no reset to make it abortive
    /// (the stream transports reset the connection here).
    fn close_deadline_passed(&self, reason: CloseReason) {
        self.finish(reason);
    }
}

impl TransportImpl for WritePipe {
    fn write(&self, data: &[u8]) -> Result<()> {
        self.write_chunks(&[data])
    }

    fn writelines(&self, chunks: &[&[u8]]) -> Result<()> {
        self.write_chunks(chunks)
    }

    fn write_bytes(&self, data: bytes::Bytes) -> Result<()> {
        self.write_owned(data)
    }

    /// For a pipe, the end of writing is the end of the transport: the
    /// same as `close`.
    fn write_eof(&self) -> Result<()> {
        if self.is_closing() {
            return closed();
        }
        self.begin_close();
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn close(&self) {
        self.begin_close();
    }

    fn close_with_deadline(&self, deadline: Duration) {
        close_deadline::close_with_deadline(&self.end.handle, self.rc(), deadline);
    }

    fn abort(&self) {
        self.finish(CloseReason::LocalAbort);
    }

    fn is_closing(&self) -> bool {
        let st = self.st.borrow();
        st.lost || st.closing
    }

    fn pause_reading(&self) {}

    fn resume_reading(&self) {}

    fn is_reading(&self) -> bool {
        false
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        let flow = self.st.borrow_mut().wbuf.set_limits(high, low);
        self.schedule_flow(flow);
    }

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        self.st.borrow().wbuf.limits()
    }

    fn get_write_buffer_size(&self) -> usize {
        self.st.borrow().wbuf.len()
    }

    fn peer_addr(&self) -> Option<SocketAddress> {
        None
    }

    fn local_addr(&self) -> Option<SocketAddress> {
        None
    }

    fn stats(&self) -> TransportStats {
        self.st.borrow().stats
    }

    fn set_protocol(&self, protocol: Rc<RefCell<dyn Protocol>>) {
        let lost = self.st.borrow().lost;
        self.end.set_protocol(lost, protocol);
    }

    fn get_protocol(&self) -> Option<Rc<RefCell<dyn Protocol>>> {
        self.end.protocol.get()
    }

    fn extra(&self, key: &str) -> Option<Box<dyn std::any::Any>> {
        let lost = self.st.borrow().lost;
        self.end.extra(lost, key)
    }
}
