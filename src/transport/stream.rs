//! The stream transport shared by TCP and Unix sockets: reading into the
//! loop's buffer, the write buffer with flow control, half-close, close,
//! abort, and delivery of the protocol callbacks in contract order.
//!
//! # Reading
//!
//! Each readiness event reads into the loop's shared 256 KiB buffer (or the
//! protocol's own, for a `BufferedProtocol`) and hands the bytes to
//! `data_received`. A short read means the socket was drained (see the
//! reactor's docs), so a request costs one `read`, not two. After 16 full
//! reads in a row the transport yields to other work and continues on the
//! next iteration.
//!
//! A short read is only trusted when it answers a readiness event that did
//! not report the peer's FIN (`read_closed`): the FIN raises no further
//! edge, so after data and FIN arrive together, or after an edge was
//! consumed while reading was paused or before the transport took over
//! the socket, the transport reads on until `WouldBlock` or EOF.
//!
//! # Callback delivery
//!
//! `data_received`, `eof_received` and `connection_made` are called from
//! the readiness handler. Everything a transport *method* causes
//! (`pause_writing`, `resume_writing`, `connection_lost`) is scheduled
//! with `call_soon`, so it is never re-entrant and always arrives in the
//! order it happened.

use std::cell::{Cell, RefCell, RefMut};
use std::io::{self, IoSlice, Read, Write};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use mio::{Interest, Token};

use super::buffer::Flow;
use super::close_deadline::{self, CloseDeadline};
use super::invoke::{self, NotCalled};
use super::stream_state::{CloseKind, StreamState};
use super::{SocketAddress, TransportImpl, TransportStats};
use crate::error::{Error, Result};
use crate::event_loop::{ExceptionKind, Handle};
use crate::protocol::{CloseReason, Protocol, TimeoutKind};
use crate::reactor::{IoHandler, Ready, interrupted, would_block, write_nonblocking};
use crate::time::TimerHandle;

/// Reads in a row before yielding to the rest of the loop.
const MAX_READS_PER_EVENT: usize = 16;
/// Size hint given to a `BufferedProtocol`'s `get_buffer`.
const BUFFER_HINT: usize = 64 * 1024;
/// At most this much unread input is discarded on a graceful close (so
/// the kernel sends FIN, not RST, and the peer gets all we wrote).
const CLOSE_DRAIN_LIMIT: usize = 1024 * 1024;

/// A connected, non-blocking stream socket.
pub(crate) trait StreamSocket: mio::event::Source + std::os::fd::AsRawFd + 'static {
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn write_some(&self, buf: &[u8]) -> io::Result<usize>;
    fn write_vectored_some(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    fn shutdown_write(&self) -> io::Result<()>;
    /// Make the coming close a reset (`SO_LINGER` 0) where that exists.
    fn prepare_abort(&self) {}
    fn peer(&self) -> Option<SocketAddress>;
    fn local(&self) -> Option<SocketAddress>;
}

impl StreamSocket for mio::net::TcpStream {
    #[inline]
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
    #[inline]
    fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    #[inline]
    fn write_vectored_some(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
    fn prepare_abort(&self) {
        let _ = socket2::SockRef::from(self).set_linger(Some(Duration::ZERO));
    }
    fn peer(&self) -> Option<SocketAddress> {
        self.peer_addr().ok().map(SocketAddress::Inet)
    }
    fn local(&self) -> Option<SocketAddress> {
        self.local_addr().ok().map(SocketAddress::Inet)
    }
}

/// What one read came to.
enum ReadOutcome {
    /// Bytes were delivered; `full`: they filled the buffer.
    Delivered {
        full: bool,
    },
    Eof,
    Failed(io::Error),
    /// A `BufferedProtocol` lent a buffer with no room.
    EmptyBuffer,
}

#[derive(Default)]
struct State {
    /// What the in-memory transport shares (its lifetime's state machine).
    core: StreamState,
    /// Boxed: most connections have no idle timeout, and each byte of
    /// `State` is paid by every idle connection.
    idle: Option<Box<Idle>>,
}

/// The idle timeout of a server connection: closed once no byte moved
/// either way for `timeout`.
struct Idle {
    timeout: Duration,
    last_activity: Instant,
    timer: Option<TimerHandle>,
}

impl State {
    /// `n` bytes came in: count them; the connection is not idle.
    #[inline]
    fn received(&mut self, n: usize, handle: &Handle) {
        self.core.stats.bytes_received += n as u64;
        self.touch(handle);
    }

    /// `n` bytes went out: count them; the connection is not idle.
    #[inline]
    fn sent(&mut self, n: usize, handle: &Handle) {
        self.core.stats.bytes_sent += n as u64;
        self.touch(handle);
    }

    #[inline]
    fn touch(&mut self, handle: &Handle) {
        if let Some(idle) = &mut self.idle {
            idle.last_activity = handle.time();
        }
    }
}

/// The transport of one stream connection.
pub(crate) struct StreamTransport<S: StreamSocket> {
    handle: Handle,
    me: Weak<StreamTransport<S>>,
    token: Cell<Option<Token>>,
    sock: RefCell<Option<S>>,
    protocol: RefCell<Option<Rc<RefCell<dyn Protocol>>>>,
    st: RefCell<State>,
    on_lost: RefCell<Option<Box<dyn FnOnce()>>>,
}

impl<S: StreamSocket> StreamTransport<S> {
    pub(crate) fn new(
        handle: &Handle,
        sock: S,
        protocol: Rc<RefCell<dyn Protocol>>,
    ) -> Rc<StreamTransport<S>> {
        Rc::new_cyclic(|me| StreamTransport {
            handle: handle.clone(),
            me: me.clone(),
            token: Cell::new(None),
            sock: RefCell::new(Some(sock)),
            protocol: RefCell::new(Some(protocol)),
            st: RefCell::new(State::default()),
            on_lost: RefCell::new(None),
        })
    }

    fn rc(&self) -> Rc<Self> {
        self.me
            .upgrade()
            .expect("transport is alive while its methods run")
    }

    /// Register a fresh socket with the reactor.
    pub(crate) fn register(self: &Rc<Self>) -> io::Result<()> {
        let token = self.handle.inner.reactor.insert(self.clone());
        self.token.set(Some(token));
        let mut sock = self.sock.borrow_mut();
        let sock = sock.as_mut().expect("registered before close");
        if let Err(e) =
            self.handle
                .inner
                .reactor
                .register(sock, token, Interest::READABLE | Interest::WRITABLE)
        {
            self.handle.inner.reactor.forget(token);
            self.token.set(None);
            return Err(e);
        }
        Ok(())
    }

    /// Take over a token under which the socket is already registered.
    pub(crate) fn adopt_token(self: &Rc<Self>, token: Token) {
        self.handle.inner.reactor.set_handler(token, self.clone());
        self.token.set(Some(token));
    }

    /// Run `hook` once when the connection is gone (server bookkeeping).
    pub(crate) fn set_on_lost(&self, hook: Box<dyn FnOnce()>) {
        *self.on_lost.borrow_mut() = Some(hook);
    }

    /// Close the connection with `CloseReason::Timeout(Idle)` once no byte
    /// was received or sent for `timeout`. Time with reading paused by the
    /// protocol does not count: the peer is not the idle one then.
    pub(crate) fn set_idle_timeout(self: &Rc<Self>, timeout: Duration) {
        let now = self.handle.time();
        self.st.borrow_mut().idle = Some(Box::new(Idle {
            timeout,
            last_activity: now,
            timer: None,
        }));
        self.arm_idle(crate::time::after(now, timeout));
    }

    fn arm_idle(self: &Rc<Self>, at: Instant) {
        let me = Rc::downgrade(self);
        let timer = self.handle.call_at(at, move || {
            if let Some(me) = me.upgrade() {
                me.idle_check();
            }
        });
        if let Some(idle) = &mut self.st.borrow_mut().idle {
            idle.timer = Some(timer);
        }
    }

    fn idle_check(self: &Rc<Self>) {
        let now = self.handle.time();
        let mut st = self.st.borrow_mut();
        if st.core.lost {
            return;
        }
        let paused = st.core.paused;
        let Some(idle) = &mut st.idle else { return };
        idle.timer = None;
        if paused {
            idle.last_activity = now;
        }
        let due = crate::time::after(idle.last_activity, idle.timeout);
        if now < due {
            drop(st);
            return self.arm_idle(due);
        }
        // Unsent data means the peer is not reading either: reset.
        let abortive = !st.core.wbuf.is_empty();
        drop(st);
        self.finish(CloseReason::Timeout(TimeoutKind::Idle), abortive);
    }

    /// Call `connection_made`, then look for data that may have arrived
    /// before this transport took over the socket.
    pub(crate) fn start(self: &Rc<Self>, initial_read: bool) {
        let t = super::Transport::new(self.clone());
        self.call_protocol("connection_made", |p| p.connection_made(t));
        if initial_read {
            let me = self.clone();
            self.handle.call_soon(move || me.read_ready(false));
        }
    }

    fn describe(&self, what: &str) -> String {
        match self.peer_addr() {
            Some(a) => format!("{what} of the protocol of connection with {a}"),
            None => format!("{what} of a connection's protocol"),
        }
    }

    /// Call the protocol; on a panic, abort the connection with the panic
    /// as the reason. Returns `false` if the call did not complete.
    pub(crate) fn call_protocol(&self, what: &str, f: impl FnOnce(&mut dyn Protocol)) -> bool {
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

    fn can_read(&self) -> bool {
        self.st.borrow().core.can_read()
    }

    #[inline]
    fn sock_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.sock.borrow().as_ref() {
            Some(s) => loop {
                match s.read_some(buf) {
                    Err(e) if interrupted(&e) => continue,
                    other => return other,
                }
            },
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Read and deliver. `trust_short_read`: a read that does not fill the
    /// buffer means the socket is drained and a new edge will announce
    /// more (see the module docs for when that holds).
    fn read_ready(self: &Rc<Self>, trust_short_read: bool) {
        for _ in 0..MAX_READS_PER_EVENT {
            if !self.can_read() {
                return;
            }
            let Some(proto) = self.protocol.borrow().clone() else {
                return;
            };
            let Ok(mut p) = proto.try_borrow_mut() else {
                return;
            };
            // One borrow and one guard for the whole read: asking for a
            // lent buffer, reading, and delivering (a panic names the
            // callback that was running).
            let what = Cell::new("get_buffer");
            let r = self.handle.guard_with(
                ExceptionKind::ProtocolPanic,
                &|| self.describe(what.get()),
                || self.read_into(&mut *p, &what),
            );
            drop(p);
            let full = match r {
                Ok(ReadOutcome::Delivered { full }) => full,
                Ok(ReadOutcome::Eof) => return self.eof(),
                Ok(ReadOutcome::Failed(e)) => return self.read_error(e),
                Ok(ReadOutcome::EmptyBuffer) => {
                    // A read into no space returns 0, which would pass for EOF.
                    let msg = "BufferedProtocol::get_buffer returned an empty buffer";
                    self.handle.report(
                        ExceptionKind::Error,
                        format!("{}: {msg}", self.describe("get_buffer")),
                    );
                    self.finish(CloseReason::protocol(io::Error::other(msg)), true);
                    return;
                }
                Err(msg) => {
                    self.finish(CloseReason::Panic(msg), true);
                    return;
                }
            };
            if !full && trust_short_read {
                return; // drained: the next arrival raises a new edge
            }
        }
        // Yield to other connections; carry on next iteration.
        let me = self.clone();
        self.handle.call_soon(move || me.read_ready(false));
    }

    /// One read into the buffer a `BufferedProtocol` lends, or else the
    /// loop's shared one, and its delivery. Runs with the protocol
    /// borrowed; `what` follows the callback being run.
    fn read_into(&self, p: &mut dyn Protocol, what: &Cell<&'static str>) -> ReadOutcome {
        if let Some(buf) = p.get_buffer(BUFFER_HINT) {
            let cap = buf.len();
            if cap == 0 {
                return ReadOutcome::EmptyBuffer;
            }
            return match self.sock_read(buf) {
                Ok(0) => ReadOutcome::Eof,
                Ok(n) => {
                    self.st.borrow_mut().received(n, &self.handle);
                    what.set("buffer_updated");
                    p.buffer_updated(n);
                    ReadOutcome::Delivered { full: n == cap }
                }
                Err(e) => ReadOutcome::Failed(e),
            };
        }
        what.set("data_received");
        let mut guard = self.handle.read_buf();
        let buf: &mut [u8] = &mut guard;
        match self.sock_read(buf) {
            Ok(0) => ReadOutcome::Eof,
            Ok(n) => {
                self.st.borrow_mut().received(n, &self.handle);
                p.data_received(&buf[..n]);
                ReadOutcome::Delivered {
                    full: n == buf.len(),
                }
            }
            Err(e) => ReadOutcome::Failed(e),
        }
    }

    fn read_error(self: &Rc<Self>, e: io::Error) {
        if !would_block(&e) {
            self.finish(CloseReason::from_io(e), false);
        }
    }

    fn eof(self: &Rc<Self>) {
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

    fn begin_close(self: &Rc<Self>, kind: CloseKind) {
        let empty = self.st.borrow_mut().core.begin_close(kind);
        if empty {
            self.finish_graceful(kind);
        }
    }

    fn finish_graceful(self: &Rc<Self>, kind: CloseKind) {
        // Discard unread input so closing sends FIN rather than RST, which
        // could destroy data the peer has not read yet.
        if let Some(s) = self.sock.borrow().as_ref() {
            let mut scratch = [0u8; 4096];
            let mut drained = 0;
            while drained < CLOSE_DRAIN_LIMIT {
                match s.read_some(&mut scratch) {
                    Ok(0) => break,
                    Ok(n) => drained += n,
                    Err(e) if interrupted(&e) => continue,
                    Err(_) => break,
                }
            }
            let _ = s.shutdown_write();
        }
        self.finish(kind.reason(), false);
    }

    /// The connection is over: release the socket now and schedule
    /// `connection_lost(reason)`. Idempotent.
    pub(crate) fn finish(&self, reason: CloseReason, abortive: bool) {
        {
            let mut st = self.st.borrow_mut();
            if !st.core.set_lost() {
                return;
            }
            if let Some(t) = st.idle.as_mut().and_then(|i| i.timer.take()) {
                t.cancel();
            }
        }
        let sock = self.sock.borrow_mut().take();
        if let Some(mut sock) = sock {
            if abortive {
                sock.prepare_abort();
            }
            if let Some(token) = self.token.take() {
                self.handle.inner.reactor.remove(&mut sock, token);
            }
            drop(sock);
        }
        let hook = self.on_lost.borrow_mut().take();
        if let Some(hook) = hook {
            hook();
        }
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

    fn flush(self: &Rc<Self>) {
        loop {
            let res = {
                let st = self.st.borrow();
                if st.core.wbuf.is_empty() || st.core.lost {
                    break;
                }
                let sock = self.sock.borrow();
                let Some(sock) = sock.as_ref() else { break };
                let mut slices = Vec::with_capacity(16);
                st.core.wbuf.slices(&mut slices, 64);
                sock.write_vectored_some(&slices)
            };
            match res {
                Ok(n) => {
                    let flow = {
                        let mut st = self.st.borrow_mut();
                        st.sent(n, &self.handle);
                        st.core.wbuf.consume(n)
                    };
                    self.schedule_flow(flow);
                }
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => continue,
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
        let drained = self.st.borrow_mut().core.drained();
        let Some((eof_now, closing)) = drained else {
            return;
        };
        if eof_now {
            if let Some(s) = self.sock.borrow().as_ref()
                && let Err(e) = s.shutdown_write()
            {
                self.finish(CloseReason::from_io(e), false);
                return;
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

    /// Write straight to the socket if nothing is queued; returns how much
    /// the kernel took. (Always inlined: its one caller is on every
    /// request's path.)
    #[inline(always)]
    fn write_direct(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let sock = self.sock.borrow();
        let Some(sock) = sock.as_ref() else {
            return Ok(0);
        };
        write_nonblocking(
            bufs,
            |b| sock.write_some(b),
            |b| sock.write_vectored_some(b),
        )
    }

    fn write_owned(&self, data: bytes::Bytes) -> Result<()> {
        let mut st = self.st.borrow_mut();
        st.core.check_writable()?;
        if data.is_empty() {
            return Ok(());
        }
        if !st.core.wbuf.is_empty() {
            let flow = st.core.wbuf.push_bytes(data);
            drop(st);
            self.schedule_flow(flow);
            return Ok(());
        }
        drop(st);
        self.write_chunks(&[&data])
    }

    /// Write `chunks`: straight to the socket if nothing is queued, what
    /// the kernel does not take into the buffer. Always inlined, so that
    /// in `write` (one chunk, every request's reply) the slice handling
    /// folds away.
    #[inline(always)]
    fn write_chunks(&self, chunks: &[&[u8]]) -> Result<()> {
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        let mut st = self.st.borrow_mut();
        st.core.check_writable()?;
        if total == 0 {
            return Ok(());
        }
        let mut sent = 0;
        if st.core.wbuf.is_empty() {
            // The common single write must not allocate (a `vec!` here was
            // a tenth of the echo server's user time).
            let one;
            let many: Vec<IoSlice<'_>>;
            let slices: &[IoSlice<'_>] = if chunks.len() == 1 {
                one = [IoSlice::new(chunks[0])];
                &one
            } else {
                many = chunks
                    .iter()
                    .filter(|c| !c.is_empty())
                    .take(64)
                    .map(|c| IoSlice::new(c))
                    .collect();
                &many
            };
            match self.write_direct(slices) {
                Ok(n) => {
                    sent = n;
                    st.sent(n, &self.handle);
                }
                Err(e) => {
                    drop(st);
                    let err = Error::io("write", io::Error::new(e.kind(), e.to_string()));
                    self.finish(CloseReason::from_io(e), false);
                    return Err(err);
                }
            }
        }
        if sent == total {
            return Ok(());
        }
        let flow = st.core.wbuf.push_unsent(chunks, sent);
        drop(st);
        self.schedule_flow(flow);
        if sent > 0 {
            // A partial write is not `WouldBlock`: the socket is edge
            // triggered, and without writing on until it says so no
            // writable edge is promised (gVisor sends none), leaving the
            // rest in the buffer for good.
            self.rc().flush();
        }
        Ok(())
    }
}

impl<S: StreamSocket> IoHandler for StreamTransport<S> {
    fn ready(self: Rc<Self>, ready: Ready) {
        let (lost, pending) = {
            let st = self.st.borrow();
            (st.core.lost, !st.core.wbuf.is_empty())
        };
        if lost {
            return;
        }
        if pending && (ready.writable || ready.error || ready.write_closed) {
            self.flush();
        }
        if ready.readable || ready.read_closed || ready.error {
            // After the FIN no new edge comes: read until EOF is seen.
            self.read_ready(!(ready.read_closed || ready.error));
        }
    }

    fn loop_closed(&self) {
        // No callback can run any more, so no connection_lost: just close
        // the socket (the peer sees EOF or a reset) and drop the protocol,
        // which usually holds this transport's handle.
        let timer = self.st.borrow_mut().core.loop_closed();
        drop(timer);
        self.token.take();
        let sock = self.sock.borrow_mut().take();
        drop(sock);
        let hook = self.on_lost.borrow_mut().take();
        drop(hook);
        let proto = self.protocol.borrow_mut().take();
        drop(proto);
    }
}

impl<S: StreamSocket> CloseDeadline for StreamTransport<S> {
    fn close_timer(&self) -> Option<RefMut<'_, Option<TimerHandle>>> {
        RefMut::filter_map(self.st.borrow_mut(), |st| st.core.close_timer_slot()).ok()
    }
    fn close_deadline_passed(&self, reason: CloseReason) {
        self.finish(reason, true);
    }
}

impl<S: StreamSocket> TransportImpl for StreamTransport<S> {
    fn write(&self, data: &[u8]) -> Result<()> {
        self.write_chunks(&[data])
    }

    fn writelines(&self, chunks: &[&[u8]]) -> Result<()> {
        self.write_chunks(chunks)
    }

    fn write_bytes(&self, data: bytes::Bytes) -> Result<()> {
        self.write_owned(data)
    }

    fn write_eof(&self) -> Result<()> {
        let now = self.st.borrow_mut().core.request_eof()?;
        let me = self.rc();
        if now {
            // Shut the write side now, but let any resulting close happen
            // on the loop, not inside this call.
            if let Some(s) = me.sock.borrow().as_ref() {
                let _ = s.shutdown_write();
            }
            let both = me.st.borrow_mut().core.eof_sent();
            if both {
                let h = me.handle.clone();
                h.call_soon(move || me.begin_close(CloseKind::Local));
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
        let was = std::mem::replace(&mut self.st.borrow_mut().core.paused, false);
        if was && self.can_read() {
            // An edge may have come and gone while paused.
            let me = self.rc();
            self.handle.call_soon(move || me.read_ready(false));
        }
    }

    fn is_reading(&self) -> bool {
        self.can_read()
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
        self.sock.borrow().as_ref().and_then(|s| s.peer())
    }

    fn local_addr(&self) -> Option<SocketAddress> {
        self.sock.borrow().as_ref().and_then(|s| s.local())
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

    fn extra(&self, key: &str) -> Option<Box<dyn std::any::Any>> {
        match key {
            "peername" => self
                .peer_addr()
                .map(|a| Box::new(a) as Box<dyn std::any::Any>),
            "sockname" => self
                .local_addr()
                .map(|a| Box::new(a) as Box<dyn std::any::Any>),
            "fd" => self
                .sock
                .borrow()
                .as_ref()
                .map(|s| Box::new(s.as_raw_fd()) as Box<dyn std::any::Any>),
            _ => None,
        }
    }
}
