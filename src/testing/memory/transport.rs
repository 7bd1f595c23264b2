//! One end of an in-memory stream connection: the same state machine as
//! the socket transport (write buffer with water marks, half-close,
//! graceful close, abort, callback order), with the "kernel" replaced by
//! the peer end's receive queue.
//!
//! Bytes written go straight into the peer's receive queue while it has
//! room (its capacity) and at most `max_write` per kernel write; the rest
//! waits in this end's write buffer and is flushed on a later iteration,
//! when the peer has taken data out of its queue. A FIN or a reset joins
//! the peer's queue behind the data already there.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};

use super::{Chunker, EndOptions};
use crate::error::{Error, Result};
use crate::event_loop::{ExceptionKind, Handle};
use crate::protocol::{CloseReason, Protocol, TimeoutKind};
use crate::time::TimerHandle;
use crate::transport::buffer::{Flow, WriteBuffer};
use crate::transport::{SocketAddress, Transport, TransportImpl, TransportStats};

/// Chunks handed to the protocol per turn before yielding to the loop
/// (the socket transport reads 16 times per readiness event).
const CHUNKS_PER_TURN: usize = 16;
/// A kernel write without a `max_write` limit copies at most this much.
const KERNEL_WRITE: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseKind {
    Local,
    PeerEof,
}

struct State {
    wbuf: WriteBuffer,
    /// Arrived from the peer, not yet handed to the protocol.
    rx: BytesMut,
    /// The peer's FIN waits behind `rx`.
    rx_eof: bool,
    /// A reset waits behind `rx`; writes fail from now on.
    rx_reset: bool,
    closing: Option<CloseKind>,
    eof_pending: bool,
    eof_written: bool,
    eof_received: bool,
    paused: bool,
    lost: bool,
    deliver_scheduled: bool,
    flush_scheduled: bool,
    stats: TransportStats,
    close_timer: Option<TimerHandle>,
    chunker: Chunker,
    max_write: Option<usize>,
    capacity: usize,
    fail_next_write: Option<io::Error>,
}

pub(crate) struct MemoryTransport {
    handle: Handle,
    me: Weak<MemoryTransport>,
    peer: RefCell<Weak<MemoryTransport>>,
    protocol: RefCell<Option<Rc<RefCell<dyn Protocol>>>>,
    st: RefCell<State>,
    /// The side's name for messages ("a" or "b").
    name: &'static str,
    started: Cell<bool>,
}

impl MemoryTransport {
    pub(crate) fn new(
        handle: &Handle,
        protocol: Rc<RefCell<dyn Protocol>>,
        opts: &EndOptions,
        name: &'static str,
    ) -> Rc<MemoryTransport> {
        Rc::new_cyclic(|me| MemoryTransport {
            handle: handle.clone(),
            me: me.clone(),
            peer: RefCell::new(Weak::new()),
            protocol: RefCell::new(Some(protocol)),
            st: RefCell::new(State {
                wbuf: WriteBuffer::default(),
                rx: BytesMut::new(),
                rx_eof: false,
                rx_reset: false,
                closing: None,
                eof_pending: false,
                eof_written: false,
                eof_received: false,
                paused: false,
                lost: false,
                deliver_scheduled: false,
                flush_scheduled: false,
                stats: TransportStats::default(),
                close_timer: None,
                chunker: Chunker::new(opts.chunking.clone()),
                max_write: opts.max_write,
                capacity: opts.capacity,
                fail_next_write: None,
            }),
            name,
            started: Cell::new(false),
        })
    }

    pub(crate) fn link(a: &Rc<MemoryTransport>, b: &Rc<MemoryTransport>) {
        *a.peer.borrow_mut() = Rc::downgrade(b);
        *b.peer.borrow_mut() = Rc::downgrade(a);
    }

    fn rc(&self) -> Rc<MemoryTransport> {
        self.me
            .upgrade()
            .expect("transport is alive while its methods run")
    }

    fn peer(&self) -> Option<Rc<MemoryTransport>> {
        self.peer.borrow().upgrade()
    }

    /// Call `connection_made` (once).
    pub(crate) fn start(self: &Rc<Self>) {
        if self.started.replace(true) {
            return;
        }
        let t = Transport::new(self.clone());
        self.call_protocol("connection_made", |p| p.connection_made(t));
    }

    // ----- knobs for `MemoryEnd` -----

    pub(crate) fn set_options(&self, f: impl FnOnce(&mut Chunker, &mut Option<usize>, &mut usize)) {
        let grew = {
            let mut st = self.st.borrow_mut();
            let st = &mut *st;
            let before = st.capacity;
            f(&mut st.chunker, &mut st.max_write, &mut st.capacity);
            st.capacity > before
        };
        if grew {
            // Room appeared in our queue: the peer may flush again.
            if let Some(p) = self.peer() {
                p.schedule_flush();
            }
        }
        self.schedule_flush();
    }

    pub(crate) fn fail_next_write(&self, err: io::Error) {
        self.st.borrow_mut().fail_next_write = Some(err);
    }

    pub(crate) fn inject_error(&self, err: io::Error) {
        self.finish(CloseReason::from_io(err), false);
    }

    pub(crate) fn unread(&self) -> usize {
        self.st.borrow().rx.len()
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.st.borrow().lost
    }

    // ----- protocol calls -----

    fn describe(&self, what: &str) -> String {
        format!("{what} of the protocol on in-memory end {}", self.name)
    }

    /// Call the protocol; a panic aborts this end with the panic as the
    /// reason. Returns `false` if the call did not complete.
    fn call_protocol(&self, what: &str, f: impl FnOnce(&mut dyn Protocol)) -> bool {
        let Some(proto) = self.protocol.borrow().clone() else {
            return false;
        };
        let Ok(mut p) = proto.try_borrow_mut() else {
            self.handle.report(
                ExceptionKind::Error,
                format!(
                    "{} skipped: the protocol is already borrowed",
                    self.describe(what)
                ),
            );
            return false;
        };
        let r = self.handle.guard_with(
            ExceptionKind::ProtocolPanic,
            &|| self.describe(what),
            || f(&mut *p),
        );
        drop(p);
        match r {
            Ok(()) => true,
            Err(msg) => {
                self.finish(CloseReason::Panic(msg), true);
                false
            }
        }
    }

    fn schedule_flow(&self, flow: Flow) {
        if flow == Flow::Same {
            return;
        }
        let me = self.rc();
        self.handle.call_soon(move || {
            if me.st.borrow().lost {
                return;
            }
            match flow {
                Flow::Pause => me.call_protocol("pause_writing", |p| p.pause_writing()),
                Flow::Resume => me.call_protocol("resume_writing", |p| p.resume_writing()),
                Flow::Same => true,
            };
        });
    }

    // ----- the read side -----

    fn can_read(st: &State) -> bool {
        !(st.lost || st.closing.is_some() || st.paused || st.eof_received)
    }

    fn schedule_deliver(&self) {
        {
            let mut st = self.st.borrow_mut();
            if st.deliver_scheduled || st.lost {
                return;
            }
            st.deliver_scheduled = true;
        }
        let me = self.rc();
        self.handle.call_soon(move || me.deliver());
    }

    /// A reset arrives (behind the data already queued).
    fn receive_reset(&self) {
        let flush = {
            let mut st = self.st.borrow_mut();
            if st.lost {
                return;
            }
            st.rx_reset = true;
            !st.wbuf.is_empty()
        };
        self.schedule_deliver();
        if flush {
            // A pending write notices the reset even while reading is
            // paused, as on a socket.
            self.schedule_flush();
        }
    }

    /// A FIN arrives (behind the data already queued).
    fn receive_eof(&self) {
        {
            let mut st = self.st.borrow_mut();
            if st.lost {
                return;
            }
            st.rx_eof = true;
        }
        self.schedule_deliver();
    }

    fn deliver(self: &Rc<Self>) {
        self.st.borrow_mut().deliver_scheduled = false;
        enum Step {
            Data(usize),
            Reset,
            Eof,
        }
        for _ in 0..CHUNKS_PER_TURN {
            let step = {
                let mut st = self.st.borrow_mut();
                if !Self::can_read(&st) {
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
    fn deliver_chunk(self: &Rc<Self>, k: usize) -> bool {
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
            st.stats.bytes_received += n as u64;
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

    fn eof(self: &Rc<Self>) {
        self.st.borrow_mut().eof_received = true;
        let mut keep_open = false;
        if !self.call_protocol("eof_received", |p| keep_open = p.eof_received()) {
            return;
        }
        let eof_written = self.st.borrow().eof_written;
        if !keep_open {
            self.begin_close(CloseKind::PeerEof);
        } else if eof_written {
            self.begin_close(CloseKind::Local);
        }
    }

    // ----- the write side -----

    /// The "kernel" write: move up to `data.len()` bytes into the peer's
    /// queue. `Ok(0)` means no room (would block).
    fn kernel_send(&self, data: &[u8]) -> io::Result<usize> {
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
        let peer = self.peer().filter(|p| !p.st.borrow().lost);
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
    fn peer_room(&self) -> usize {
        match self.peer() {
            Some(p) => {
                let pst = p.st.borrow();
                if pst.lost {
                    usize::MAX
                } else {
                    pst.capacity.saturating_sub(pst.rx.len())
                }
            }
            None => usize::MAX,
        }
    }

    fn schedule_flush(&self) {
        {
            let mut st = self.st.borrow_mut();
            if st.flush_scheduled || st.lost || st.wbuf.is_empty() {
                return;
            }
            st.flush_scheduled = true;
        }
        let me = self.rc();
        self.handle.call_soon(move || me.flush());
    }

    fn flush(self: &Rc<Self>) {
        self.st.borrow_mut().flush_scheduled = false;
        loop {
            let chunk = {
                let st = self.st.borrow();
                if st.lost || st.wbuf.is_empty() {
                    break;
                }
                // Copy only what the peer can take now: with a small
                // capacity a copy of the whole buffer per send would make
                // flushing quadratic.
                let want = st
                    .wbuf
                    .len()
                    .min(st.max_write.unwrap_or(KERNEL_WRITE))
                    .min(self.peer_room());
                let mut slices = Vec::new();
                st.wbuf.slices(&mut slices, 64);
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
                        st.stats.bytes_sent += n as u64;
                        st.wbuf.consume(n)
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
    fn after_drain(self: &Rc<Self>) {
        let (eof_now, closing) = {
            let mut st = self.st.borrow_mut();
            if st.lost || !st.wbuf.is_empty() {
                return;
            }
            let eof_now = st.eof_pending && !st.eof_written;
            if eof_now {
                st.eof_pending = false;
                st.eof_written = true;
            }
            (eof_now, st.closing)
        };
        if eof_now {
            if let Some(p) = self.peer() {
                p.receive_eof();
            }
            if self.st.borrow().eof_received && closing.is_none() {
                self.begin_close(CloseKind::Local);
                return;
            }
        }
        if let Some(kind) = closing {
            self.finish_graceful(kind);
        }
    }

    fn check_writable(st: &State) -> Result<()> {
        if st.lost || st.closing.is_some() {
            return Err(Error::Closed);
        }
        if st.eof_pending || st.eof_written {
            return Err(Error::EofWritten);
        }
        Ok(())
    }

    fn write_all(&self, data: &[u8]) -> Result<()> {
        let buffered = {
            let st = self.st.borrow();
            Self::check_writable(&st)?;
            !st.wbuf.is_empty()
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
            st.stats.bytes_sent += sent as u64;
            if sent == data.len() {
                return Ok(());
            }
            st.wbuf.push_slice(&data[sent..])
        };
        self.schedule_flow(flow);
        self.schedule_flush();
        Ok(())
    }

    // ----- closing -----

    fn begin_close(self: &Rc<Self>, kind: CloseKind) {
        let empty = {
            let mut st = self.st.borrow_mut();
            if st.lost || st.closing.is_some() {
                return;
            }
            st.closing = Some(kind);
            st.wbuf.is_empty()
        };
        if empty {
            self.finish_graceful(kind);
        }
    }

    fn finish_graceful(self: &Rc<Self>, kind: CloseKind) {
        // Unread input is discarded (the socket transport drains it so the
        // close sends FIN, not RST); the peer gets our FIN.
        self.st.borrow_mut().rx.clear();
        if let Some(p) = self.peer() {
            p.receive_eof();
        }
        let reason = match kind {
            CloseKind::Local => CloseReason::LocalClose,
            CloseKind::PeerEof => CloseReason::PeerEof,
        };
        self.finish(reason, false);
    }

    /// The connection is over for this end: schedule
    /// `connection_lost(reason)`; an abortive end resets its peer.
    /// Idempotent.
    fn finish(&self, reason: CloseReason, abortive: bool) {
        {
            let mut st = self.st.borrow_mut();
            if st.lost {
                return;
            }
            st.lost = true;
            st.closing.get_or_insert(CloseKind::Local);
            st.wbuf.clear();
            st.rx.clear();
            if let Some(t) = st.close_timer.take() {
                t.cancel();
            }
        }
        if let Some(p) = self.peer() {
            if abortive {
                p.receive_reset();
            }
            // Writes the peer could not get out are now written to a closed
            // socket: its flush finds the reset.
            p.schedule_flush();
        }
        let me = self.rc();
        self.handle.call_soon(move || {
            me.call_protocol("connection_lost", |p| p.connection_lost(reason));
            // Break the transport <-> protocol cycle.
            let proto = me.protocol.borrow_mut().take();
            drop(proto);
        });
    }
}

impl TransportImpl for MemoryTransport {
    fn write(&self, data: &[u8]) -> Result<()> {
        self.write_all(data)
    }

    fn writelines(&self, chunks: &[&[u8]]) -> Result<()> {
        self.write_all(&chunks.concat())
    }

    fn write_eof(&self) -> Result<()> {
        {
            let mut st = self.st.borrow_mut();
            if st.lost || st.closing.is_some() {
                return Err(Error::Closed);
            }
            if st.eof_pending || st.eof_written {
                return Ok(());
            }
            st.eof_pending = true;
        }
        if self.st.borrow().wbuf.is_empty() {
            let both = {
                let mut st = self.st.borrow_mut();
                st.eof_pending = false;
                st.eof_written = true;
                st.eof_received
            };
            if let Some(p) = self.peer() {
                p.receive_eof();
            }
            if both {
                let me = self.rc();
                self.handle
                    .call_soon(move || me.begin_close(CloseKind::Local));
            }
        }
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn close(&self) {
        self.rc().begin_close(CloseKind::Local);
    }

    fn close_with_deadline(&self, deadline: Duration) {
        let me = self.rc();
        me.begin_close(CloseKind::Local);
        let mut st = me.st.borrow_mut();
        if st.lost || st.close_timer.is_some() {
            return;
        }
        let m = me.clone();
        st.close_timer = Some(me.handle.call_later(deadline, move || {
            m.st.borrow_mut().close_timer = None;
            m.finish(CloseReason::Timeout(TimeoutKind::Close), true);
        }));
    }

    fn abort(&self) {
        self.finish(CloseReason::LocalAbort, true);
    }

    fn is_closing(&self) -> bool {
        let st = self.st.borrow();
        st.lost || st.closing.is_some()
    }

    fn pause_reading(&self) {
        self.st.borrow_mut().paused = true;
    }

    fn resume_reading(&self) {
        let pending = {
            let mut st = self.st.borrow_mut();
            let was = std::mem::replace(&mut st.paused, false);
            was && Self::can_read(&st) && (!st.rx.is_empty() || st.rx_eof || st.rx_reset)
        };
        if pending {
            self.schedule_deliver();
        }
    }

    fn is_reading(&self) -> bool {
        Self::can_read(&self.st.borrow())
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
        if !self.st.borrow().lost || self.protocol.borrow().is_some() {
            *self.protocol.borrow_mut() = Some(protocol);
        }
    }

    fn get_protocol(&self) -> Option<Rc<RefCell<dyn Protocol>>> {
        self.protocol.borrow().clone()
    }
}
