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
//!
//! # Closing the loop
//!
//! An end has no source, but while its connection is open it takes a
//! place in the reactor all the same, holding itself weakly, so that the
//! loop tells it when it closes, as it tells a socket: its protocol may
//! keep its handle, and a close deadline's timer holds it. Closing the
//! loop then drops the buffers, the timer and the protocol, without
//! `connection_lost`. Once the connection is over the end leaves the
//! reactor, and its protocol is dropped after `connection_lost`, or
//! without it if the loop is closed first.

use std::cell::{Cell, RefCell, RefMut};
use std::io;
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::BytesMut;
use mio::Token;

use super::{Chunker, EndOptions};
use crate::error::Result;
use crate::event_loop::Handle;
use crate::protocol::{CloseReason, Protocol};
use crate::reactor::{IoHandler, Ready};
use crate::time::TimerHandle;
use crate::transport::buffer::Flow;
use crate::transport::close_deadline::{self, CloseDeadline};
use crate::transport::invoke::{self, NotCalled};
use crate::transport::stream_state::{CloseKind, StreamState};
use crate::transport::{SocketAddress, Transport, TransportImpl, TransportStats};

mod read;
mod write;

/// Chunks handed to the protocol per turn before yielding to the loop
/// (the socket transport reads 16 times per readiness event).
const CHUNKS_PER_TURN: usize = 16;
/// A kernel write without a `max_write` limit copies at most this much.
const KERNEL_WRITE: usize = 256 * 1024;

struct State {
    /// The socket transport's lifetime state machine, shared.
    core: StreamState,
    /// Arrived from the peer, not yet handed to the protocol.
    rx: BytesMut,
    /// The peer's FIN waits behind `rx`.
    rx_eof: bool,
    /// A reset waits behind `rx`; writes fail from now on.
    rx_reset: bool,
    deliver_scheduled: bool,
    flush_scheduled: bool,
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
    /// This end's place in the reactor (see the module docs) while its
    /// connection is open.
    closer: Cell<Option<Token>>,
}

/// What the reactor holds for an in-memory end: told when the loop
/// closes, never of any readiness (there is no source).
struct LoopCloser(Weak<MemoryTransport>);

impl IoHandler for LoopCloser {
    fn ready(self: Rc<Self>, _ready: Ready) {}

    fn loop_closed(&self) {
        if let Some(t) = self.0.upgrade() {
            t.loop_closed();
        }
    }
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
                core: StreamState::default(),
                rx: BytesMut::new(),
                rx_eof: false,
                rx_reset: false,
                deliver_scheduled: false,
                flush_scheduled: false,
                chunker: Chunker::new(opts.chunking.clone()),
                max_write: opts.max_write,
                capacity: opts.capacity,
                fail_next_write: None,
            }),
            name,
            started: Cell::new(false),
            closer: Cell::new(
                (!handle.is_closed())
                    .then(|| handle.inner.reactor.insert(Rc::new(LoopCloser(me.clone())))),
            ),
        })
    }

    /// Leave the reactor: nothing is left for a closing loop to release.
    fn forget_closer(&self) {
        if let Some(token) = self.closer.take() {
            self.handle.inner.reactor.forget(token);
        }
    }

    /// The loop closed: no callback can run any more, so no
    /// `connection_lost`. Drop what only the loop could: the buffers, the
    /// close deadline's timer (it holds this end), and the protocol (it
    /// usually keeps this end's handle). The reactor has dropped its
    /// entries already.
    fn loop_closed(&self) {
        self.closer.take();
        let timer = {
            let mut st = self.st.borrow_mut();
            st.rx.clear();
            st.core.loop_closed()
        };
        drop(timer);
        let proto = self.protocol.borrow_mut().take();
        drop(proto);
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
        self.st.borrow().core.lost
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
        match invoke::call_protocol(&self.handle, &proto, &|| self.describe(what), f) {
            Ok(()) => true,
            Err(NotCalled::Borrowed) => false,
            Err(NotCalled::Panicked(msg)) => {
                self.finish(CloseReason::Panic(msg), true);
                false
            }
        }
    }

    fn schedule_flow(&self, flow: Flow) {
        invoke::schedule_flow(
            &self.handle,
            flow,
            || self.rc(),
            |me: &Self, what, f| !me.st.borrow().core.lost && me.call_protocol(what, f),
        );
    }

    // ----- closing -----

    fn begin_close(self: &Rc<Self>, kind: CloseKind) {
        let empty = self.st.borrow_mut().core.begin_close(kind);
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
        self.finish(kind.reason(), false);
    }

    /// The connection is over for this end: schedule
    /// `connection_lost(reason)`; an abortive end resets its peer.
    /// Idempotent.
    fn finish(&self, reason: CloseReason, abortive: bool) {
        {
            let mut st = self.st.borrow_mut();
            if !st.core.set_lost() {
                return;
            }
            st.rx.clear();
        }
        if let Some(p) = self.peer() {
            if abortive {
                p.receive_reset();
            }
            // Writes the peer could not get out are now written to a closed
            // socket: its flush finds the reset.
            p.schedule_flush();
        }
        self.forget_closer();
        invoke::schedule_lost(
            &self.handle,
            self.rc(),
            move |me| {
                me.call_protocol("connection_lost", |p| p.connection_lost(reason));
            },
            |me| {
                let proto = me.protocol.borrow_mut().take();
                drop(proto);
            },
        );
    }
}

impl CloseDeadline for MemoryTransport {
    fn close_timer(&self) -> Option<RefMut<'_, Option<TimerHandle>>> {
        RefMut::filter_map(self.st.borrow_mut(), |st| st.core.close_timer_slot()).ok()
    }
    fn close_deadline_passed(&self, reason: CloseReason) {
        self.finish(reason, true);
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
        let now = self.st.borrow_mut().core.request_eof()?;
        if now {
            let both = self.st.borrow_mut().core.eof_sent();
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
        close_deadline::close_with_deadline(&self.handle, self.rc(), deadline);
    }

    fn abort(&self) {
        self.finish(CloseReason::LocalAbort, true);
    }

    fn is_closing(&self) -> bool {
        self.st.borrow().core.is_closing()
    }

    fn pause_reading(&self) {
        self.st.borrow_mut().core.paused = true;
    }

    fn resume_reading(&self) {
        let pending = {
            let mut st = self.st.borrow_mut();
            let was = std::mem::replace(&mut st.core.paused, false);
            was && st.core.can_read() && (!st.rx.is_empty() || st.rx_eof || st.rx_reset)
        };
        if pending {
            self.schedule_deliver();
        }
    }

    fn is_reading(&self) -> bool {
        self.st.borrow().core.can_read()
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        let flow = self.st.borrow_mut().core.wbuf.set_limits(high, low);
        self.schedule_flow(flow);
    }

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        self.st.borrow().core.wbuf.limits()
    }

    fn get_write_buffer_size(&self) -> usize {
        self.st.borrow().core.wbuf.len()
    }

    fn peer_addr(&self) -> Option<SocketAddress> {
        None
    }

    fn local_addr(&self) -> Option<SocketAddress> {
        None
    }

    fn stats(&self) -> TransportStats {
        self.st.borrow().core.stats
    }

    fn set_protocol(&self, protocol: Rc<RefCell<dyn Protocol>>) {
        if !self.st.borrow().core.lost || self.protocol.borrow().is_some() {
            *self.protocol.borrow_mut() = Some(protocol);
        }
    }

    fn get_protocol(&self) -> Option<Rc<RefCell<dyn Protocol>>> {
        self.protocol.borrow().clone()
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        self.forget_closer();
    }
}
