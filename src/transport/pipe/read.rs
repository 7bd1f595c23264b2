//! The read end of a pipe as a transport.

use std::cell::RefCell;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::rc::{Rc, Weak};
use std::time::Duration;

use mio::Interest;
use mio::unix::pipe::Receiver;

use super::{PipeEnd, PipeTransport, open_end};
use crate::error::{Error, Result};
use crate::event_loop::Handle;
use crate::protocol::{CloseReason, Protocol};
use crate::reactor::{IoHandler, Ready, interrupted, would_block};
use crate::transport::buffer::{DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER};
use crate::transport::{SocketAddress, TransportImpl, TransportStats};

/// Reads in a row before yielding to the rest of the loop.
const MAX_READS_PER_EVENT: usize = 16;

#[derive(Default)]
struct State {
    paused: bool,
    /// An event said the write end is closed: read to EOF.
    writer_gone: bool,
    eof: bool,
    lost: bool,
    stats: TransportStats,
}

/// The transport of a pipe's read end.
pub(crate) struct ReadPipe {
    end: PipeEnd<Receiver>,
    me: Weak<ReadPipe>,
    st: RefCell<State>,
}

impl PipeTransport for ReadPipe {
    type End = Receiver;

    fn end(&self) -> &PipeEnd<Receiver> {
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
        }
        self.release_and_report(reason);
    }
}

impl ReadPipe {
    /// Make `fd` non-blocking and register it; the protocol is not called
    /// until [`PipeTransport::start`].
    pub(crate) fn open(
        handle: &Handle,
        fd: OwnedFd,
        protocol: Rc<RefCell<dyn Protocol>>,
    ) -> Result<Rc<ReadPipe>> {
        open_end(handle, fd, protocol, Interest::READABLE, |end, me| {
            ReadPipe {
                end,
                me,
                st: RefCell::new(State::default()),
            }
        })
    }

    fn can_read(&self) -> bool {
        let st = self.st.borrow();
        !(st.lost || st.paused || st.eof)
    }

    fn pipe_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.end.pipe.borrow().as_ref() {
            Some(mut p) => loop {
                match p.read(buf) {
                    Err(e) if interrupted(&e) => continue,
                    other => return other,
                }
            },
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Read what is there: until a short read, or, once the writer is
    /// known to be gone, until EOF (no new edge would announce the EOF: it
    /// came with the data's).
    fn read_ready(self: &Rc<Self>) {
        for _ in 0..MAX_READS_PER_EVENT {
            if !self.can_read() {
                return;
            }
            let mut buf = self.end.handle.read_buf();
            let res = self.pipe_read(&mut buf);
            let full = match res {
                Ok(0) => {
                    drop(buf);
                    return self.eof();
                }
                Ok(n) => {
                    self.st.borrow_mut().stats.bytes_received += n as u64;
                    let ok = self.call("data_received", |p| p.data_received(&buf[..n]));
                    if !ok {
                        return;
                    }
                    n == buf.len()
                }
                Err(e) => {
                    drop(buf);
                    if !would_block(&e) {
                        self.finish(CloseReason::from_io(e));
                    }
                    return;
                }
            };
            if !full && !self.st.borrow().writer_gone {
                return; // drained: the next write raises a new edge
            }
        }
        let me = self.clone();
        self.end.handle.call_soon(move || me.read_ready());
    }

    fn eof(self: &Rc<Self>) {
        self.st.borrow_mut().eof = true;
        // Nothing to keep open on a read pipe: close whatever it answers.
        // (After a panic the transport is already finished; this is a no-op.)
        self.call("eof_received", |p| {
            p.eof_received();
        });
        self.finish(CloseReason::PeerEof);
    }
}

impl IoHandler for ReadPipe {
    fn ready(self: Rc<Self>, ready: Ready) {
        if ready.readable || ready.read_closed || ready.error {
            if ready.read_closed || ready.error {
                self.st.borrow_mut().writer_gone = true;
            }
            self.read_ready();
        }
    }

    fn loop_closed(&self) {
        // No callback can run any more, so no connection_lost.
        self.st.borrow_mut().lost = true;
        self.end.loop_closed();
    }
}

impl TransportImpl for ReadPipe {
    fn write(&self, _data: &[u8]) -> Result<()> {
        Err(Error::Unsupported("write on the read end of a pipe"))
    }

    fn write_eof(&self) -> Result<()> {
        Err(Error::EofNotSupported)
    }

    fn can_write_eof(&self) -> bool {
        false
    }

    fn close(&self) {
        self.finish(CloseReason::LocalClose);
    }

    fn close_with_deadline(&self, _deadline: Duration) {
        // Nothing to flush: closing is immediate.
        self.finish(CloseReason::LocalClose);
    }

    fn abort(&self) {
        self.finish(CloseReason::LocalAbort);
    }

    fn is_closing(&self) -> bool {
        self.st.borrow().lost
    }

    fn pause_reading(&self) {
        self.st.borrow_mut().paused = true;
    }

    fn resume_reading(&self) {
        let was = std::mem::replace(&mut self.st.borrow_mut().paused, false);
        if was && self.can_read() {
            // An edge may have come and gone while paused.
            let me = self.rc();
            self.end.handle.call_soon(move || me.read_ready());
        }
    }

    fn is_reading(&self) -> bool {
        self.can_read()
    }

    fn set_write_buffer_limits(&self, _high: usize, _low: usize) {}

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        (DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER)
    }

    fn get_write_buffer_size(&self) -> usize {
        0
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
