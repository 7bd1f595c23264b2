//! The TLS layer: asyncio's `SSLProtocol`. A [`TlsLayer`] sits as the
//! protocol of a stream transport (through the thin [`Lower`] adapter)
//! and is itself the transport of the user's protocol (`api.rs`).
//!
//! ```text
//!   user Protocol  <- plaintext callbacks --  TlsLayer  -- Transport (api.rs) --> user writes
//!                                              |   ^
//!                      ciphertext writes/close v   | Lower: Protocol callbacks
//!                                         StreamTransport (TCP, Unix)
//! ```
//!
//! # States
//!
//! The handshake is `Pending`, then `Done` or `Failed`. A `close()`
//! moves the shutdown through `AfterHandshake` (writes still held for the
//! handshake), `AwaitPeer` (our `close_notify` sent, waiting for the
//! peer's or its EOF) and `Lower` (the stream transport was told to close;
//! its `connection_lost` ends everything).
//!
//! # Ownership
//!
//! The stream below owns the layer, through [`Lower`], its protocol; the
//! layer keeps the stream's [`Transport`] and the user's protocol, which usually
//! keeps the layer's [`Transport`]; the layer's timers hold it weakly.
//! The stream drops [`Lower`] after its `connection_lost`, or when the
//! loop closes, with or without that call having run: dropping [`Lower`]
//! ends the layer (`on_lower_dropped`), which breaks the cycles.
//!
//! # Borrows
//!
//! The user's protocol is only ever called with no borrow of the layer's
//! cells held, so it may call any transport method from any callback.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::BytesMut;

use super::session::Session;
use super::{TlsInfo, TlsTimeouts};
use crate::error::{Error, Result};
use crate::event_loop::{ExceptionKind, Handle};
use crate::protocol::{CloseReason, Protocol, TimeoutKind};
use crate::task::SettableFuture;
use crate::time::TimerHandle;
use crate::transport::buffer::{Flow, WaterMarks};
use crate::transport::invoke::{self, NotCalled};
use crate::transport::{Transport, TransportStats};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hs {
    Pending,
    Done,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shutdown {
    No,
    AfterHandshake,
    AwaitPeer,
    Lower,
}

pub(super) struct State {
    pub(super) hs: Hs,
    pub(super) hs_result: Option<Result<TlsInfo>>,
    pub(super) hs_waiters: Vec<SettableFuture<()>>,
    /// Call the user's `connection_made` when the handshake completes
    /// (false for `start_tls` keeping an already-connected protocol).
    pub(super) connect_on_handshake: bool,
    pub(super) user_connected: bool,
    /// Decrypted, not yet delivered.
    pub(super) plain_in: BytesMut,
    /// The peer's `close_notify` arrived.
    pub(super) peer_closed: bool,
    pub(super) eof_delivered: bool,
    /// The stream below hit EOF.
    pub(super) tcp_eof: bool,
    /// A fatal error to report once the plaintext before it is delivered.
    pub(super) failure: Option<CloseReason>,
    pub(super) user_paused: bool,
    /// `start_tls` is swapping protocols: reading stays paused.
    pub(super) swapping: bool,
    pub(super) closing: bool,
    pub(super) shutdown: Shutdown,
    pub(super) eof_pending: bool,
    pub(super) eof_written: bool,
    /// What `connection_lost` will say, when we decided it.
    pub(super) final_reason: Option<CloseReason>,
    /// The user's water marks, over the plaintext held for the
    /// handshake plus the ciphertext below.
    pub(super) marks: WaterMarks,
    pub(super) stats: TransportStats,
    pub(super) info: Option<TlsInfo>,
    pub(super) hs_timer: Option<TimerHandle>,
    pub(super) shutdown_timer: Option<TimerHandle>,
    pub(super) close_timer: Option<TimerHandle>,
    pub(super) lost: bool,
}

impl State {
    /// The connection is going down: closed or aborted by the user, or
    /// the stream below told to close (after an error or the end of both
    /// directions). Writes are refused from then on, as they could no
    /// longer reach the peer.
    pub(super) fn ending(&self) -> bool {
        self.lost || self.closing || self.hs == Hs::Failed || self.shutdown == Shutdown::Lower
    }
}

/// One TLS connection: see the module docs.
pub(crate) struct TlsLayer {
    pub(super) handle: Handle,
    me: Weak<TlsLayer>,
    pub(super) session: RefCell<Session>,
    pub(super) st: RefCell<State>,
    pub(super) lower: RefCell<Option<Transport>>,
    pub(super) user: RefCell<Option<Rc<RefCell<dyn Protocol>>>>,
    timeouts: TlsTimeouts,
    /// Ciphertext from below is being handled (`on_ciphertext`): the
    /// records made meanwhile (session tickets, the user's replies from
    /// `data_received`) wait for its end and leave in one write.
    pub(super) corked: Cell<bool>,
    /// A flush was put off by the cork.
    pub(super) flush_held: Cell<bool>,
    /// Plaintext bytes in the records the cork holds: counted as buffered
    /// for flow control, and capped at [`CORK_LIMIT`].
    pub(super) held: Cell<usize>,
}

/// The most plaintext the cork holds back: a reply or two. Bigger writes
/// go out at once, as without the cork, so a protocol writing until its
/// buffer fills sees the kernel push back as before.
const CORK_LIMIT: usize = 16 * 1024;

/// See [`TlsLayer::cork`]. Unwinding (a panic that escaped a guard) uncorks
/// too, so later writes are never held for ever.
pub(super) struct Cork<'a>(&'a TlsLayer);

impl Drop for Cork<'_> {
    fn drop(&mut self) {
        self.0.corked.set(false);
        if self.0.flush_held.take() {
            self.0.flush_output();
            self.0.check_flow();
        }
    }
}

/// The protocol the stream transport below sees: forwards to the layer
/// (see `inbound.rs`). Dropped, it ends the layer if it is not over yet
/// (see the module docs).
pub(crate) struct Lower(pub(super) Rc<TlsLayer>);

impl TlsLayer {
    /// A layer over no transport yet; [`attach`](Self::attach) gives it one.
    pub(crate) fn new(
        handle: &Handle,
        session: Session,
        user: Rc<RefCell<dyn Protocol>>,
        connect_on_handshake: bool,
        timeouts: TlsTimeouts,
    ) -> Rc<TlsLayer> {
        Rc::new_cyclic(|me| TlsLayer {
            handle: handle.clone(),
            me: me.clone(),
            session: RefCell::new(session),
            st: RefCell::new(State {
                hs: Hs::Pending,
                hs_result: None,
                hs_waiters: Vec::new(),
                connect_on_handshake,
                user_connected: !connect_on_handshake,
                plain_in: BytesMut::new(),
                peer_closed: false,
                eof_delivered: false,
                tcp_eof: false,
                failure: None,
                user_paused: false,
                swapping: false,
                closing: false,
                shutdown: Shutdown::No,
                eof_pending: false,
                eof_written: false,
                final_reason: None,
                marks: WaterMarks::default(),
                stats: TransportStats::default(),
                info: None,
                hs_timer: None,
                shutdown_timer: None,
                close_timer: None,
                lost: false,
            }),
            lower: RefCell::new(None),
            user: RefCell::new(Some(user)),
            timeouts,
            corked: Cell::new(false),
            flush_held: Cell::new(false),
            held: Cell::new(0),
        })
    }

    pub(super) fn rc(&self) -> Rc<TlsLayer> {
        self.me
            .upgrade()
            .expect("layer is alive while its methods run")
    }

    /// The protocol to install on the stream transport below.
    pub(crate) fn lower_protocol(self: &Rc<Self>) -> Rc<RefCell<dyn Protocol>> {
        Rc::new(RefCell::new(Lower(self.clone())))
    }

    pub(super) fn lower(&self) -> Option<Transport> {
        self.lower.borrow().clone()
    }

    /// The TLS transport handle the user gets.
    pub(super) fn transport(&self) -> Transport {
        Transport::new(self.rc())
    }

    /// Take over `lower`: start the handshake clock and send what the
    /// session has to say first (a client's ClientHello).
    pub(crate) fn attach(self: &Rc<Self>, lower: Transport) {
        {
            let st = self.st.borrow();
            // Both marks at our low mark: the stream below then reports
            // every crossing of it, so a pause that began with plaintext
            // held for the handshake still gets its resume, wherever the
            // ciphertext backlog lands between the marks.
            let (_, low) = st.marks.limits();
            lower.set_write_buffer_limits(low, low);
        }
        *self.lower.borrow_mut() = Some(lower);
        let weak = self.me.clone();
        let timer = self.handle.call_later(self.timeouts.handshake, move || {
            if let Some(me) = weak.upgrade() {
                me.handshake_timed_out();
            }
        });
        self.st.borrow_mut().hs_timer = Some(timer);
        self.flush_output();
        self.update_reading();
    }

    /// `start_tls`: keep the stream paused until [`end_swap`](Self::end_swap).
    pub(super) fn begin_swap(&self) {
        self.st.borrow_mut().swapping = true;
    }

    /// `start_tls`, on the loop after the swap: feed the bytes the old
    /// protocol had received but not consumed, then read again.
    pub(super) fn end_swap(self: &Rc<Self>, already_received: &[u8]) {
        self.st.borrow_mut().swapping = false;
        if !already_received.is_empty() {
            self.on_ciphertext(already_received);
        }
        self.update_reading();
    }

    /// Resolves when the handshake is over; the result is read with
    /// [`handshake_result`](Self::handshake_result).
    pub(super) fn handshake_waiter(&self) -> SettableFuture<()> {
        let f = self.handle.create_future();
        let mut st = self.st.borrow_mut();
        if st.hs_result.is_some() {
            let _ = f.set_result(());
        } else {
            st.hs_waiters.push(f.clone());
        }
        f
    }

    pub(super) fn handshake_result(&self) -> Option<Result<TlsInfo>> {
        self.st.borrow().hs_result.clone()
    }

    pub(super) fn settle_handshake(&self, result: Result<TlsInfo>) {
        let waiters = {
            let mut st = self.st.borrow_mut();
            if st.hs_result.is_some() {
                return;
            }
            st.hs = if result.is_ok() { Hs::Done } else { Hs::Failed };
            st.hs_result = Some(result);
            if let Some(t) = st.hs_timer.take() {
                t.cancel();
            }
            std::mem::take(&mut st.hs_waiters)
        };
        for w in waiters {
            let _ = w.set_result(());
        }
    }

    fn describe(&self, what: &str) -> String {
        match self.lower().and_then(|l| l.peer_addr()) {
            Some(a) => format!("{what} of the protocol of TLS connection with {a}"),
            None => format!("{what} of a TLS connection's protocol"),
        }
    }

    /// Call the user's protocol with no borrow of ours held. A panic
    /// aborts the connection with the panic as the reason; `false` then.
    pub(super) fn call_user(&self, what: &str, f: impl FnOnce(&mut dyn Protocol)) -> bool {
        let Some(proto) = self.user.borrow().clone() else {
            return false;
        };
        match invoke::call_protocol(&self.handle, &proto, &|| self.describe(what), f) {
            Ok(()) => true,
            Err(NotCalled::Borrowed) => false,
            Err(NotCalled::Panicked(msg)) => {
                self.abort_with(CloseReason::Panic(msg));
                false
            }
        }
    }

    /// Reset the connection; `connection_lost(reason)` follows.
    pub(super) fn abort_with(&self, reason: CloseReason) {
        {
            let mut st = self.st.borrow_mut();
            if st.lost {
                return;
            }
            st.final_reason = Some(reason.clone());
            // As on TCP: closing from now on (writes refused), and
            // nothing but `connection_lost` reaches the protocol.
            st.closing = true;
            st.plain_in.clear();
        }
        if self.st.borrow().hs == Hs::Pending {
            if matches!(reason, CloseReason::Timeout(_)) {
                self.report_server_handshake_failure(&reason);
            }
            self.settle_handshake(Err(Error::TlsHandshake(reason)));
        }
        if let Some(l) = self.lower() {
            l.abort();
        }
    }

    /// No protocol and no caller hear of a server's failed handshake: the
    /// exception handler is the only place the operator can learn why
    /// clients fail (asyncio's "SSL handshake failed" goes there too).
    /// Called while the stream below is still open, for its address.
    pub(super) fn report_server_handshake_failure(&self, reason: &CloseReason) {
        if !self.session.borrow().is_server() || !self.st.borrow().connect_on_handshake {
            return; // a client's caller, or start_tls's, gets the error
        }
        let peer = self
            .lower()
            .and_then(|t| t.peer_addr())
            .map_or_else(|| "a client".to_string(), |a| a.to_string());
        self.handle.report(
            ExceptionKind::Error,
            format!("TLS handshake with {peer} failed: {reason}"),
        );
    }

    /// Send whatever ciphertext the session produced, straight from
    /// rustls's records to the stream below: gathering it in a `Vec`
    /// first cost an allocation and a copy of every record, which
    /// tokio-rustls (writing the records to the socket) does not pay.
    pub(super) fn flush_output(&self) {
        // Everything rustls holds leaves now, what the cork held first.
        self.flush_held.set(false);
        self.held.set(0);
        let mut session = self.session.borrow_mut();
        let sent = match self.lower() {
            // The stream never calls back into us from `write`, so the
            // session may stay borrowed.
            Some(l) => session.write_output(&mut Records(&l)),
            None => false,
        };
        if !sent {
            // The stream is already going down (its connection_lost is on
            // the way) or gone: drop what it would not take.
            while session.take_output().is_some() {}
        }
    }

    /// [`flush_output`](Self::flush_output), or put off to the end of the
    /// `on_ciphertext` under way while the cork holds no more than
    /// [`CORK_LIMIT`] of plaintext (`plaintext` is what this flush adds).
    /// Whatever flushes first sends everything rustls holds, in order, so
    /// only the number of writes changes.
    pub(super) fn flush_soon(&self, plaintext: usize) {
        if self.corked.get() {
            let held = self.held.get() + plaintext;
            if held <= CORK_LIMIT {
                self.held.set(held);
                self.flush_held.set(true);
                return;
            }
        }
        self.flush_output();
    }

    /// Plaintext waiting to be sent inside the layer: held for the
    /// handshake, or in records the cork holds.
    pub(super) fn held_len(&self) -> usize {
        self.session.borrow().queued_len() + self.held.get()
    }

    /// Hold the flushes asked for until the guard drops, which sends what
    /// was held (and re-checks flow control, which cannot see records still
    /// in rustls). `None` when already corked: the outer guard flushes.
    pub(super) fn cork(&self) -> Option<Cork<'_>> {
        (!self.corked.replace(true)).then_some(Cork(self))
    }

    /// Pause or resume the stream below to match what the layer needs.
    pub(super) fn update_reading(&self) {
        let want = {
            let st = self.st.borrow();
            !st.lost
                && !st.swapping
                && (st.hs == Hs::Pending || st.shutdown == Shutdown::AwaitPeer || !st.user_paused)
        };
        if let Some(l) = self.lower() {
            if want {
                l.resume_reading();
            } else {
                l.pause_reading();
            }
        }
    }

    /// Tell the user to pause or resume writing when the plaintext held
    /// (for the handshake, or by the cork) plus the ciphertext below
    /// crosses a water mark.
    /// The calls are scheduled, so they keep their order and pair up.
    pub(super) fn check_flow(&self) {
        let below = self.lower().map(|l| l.get_write_buffer_size()).unwrap_or(0);
        let total = self.held_len() + below;
        let pause = {
            let mut st = self.st.borrow_mut();
            if st.lost || !st.user_connected {
                return;
            }
            match st.marks.check(total) {
                Flow::Pause => true,
                Flow::Resume => false,
                Flow::Same => return,
            }
        };
        let me = self.rc();
        self.handle.call_soon(move || {
            if me.st.borrow().lost {
                return;
            }
            if pause {
                me.call_user("pause_writing", |p| p.pause_writing());
            } else {
                me.call_user("resume_writing", |p| p.resume_writing());
            }
        });
    }

    /// Our side is done writing: `close_notify`, then half-close below.
    pub(super) fn write_close_notify_eof(&self) {
        {
            let mut st = self.st.borrow_mut();
            st.eof_pending = false;
            st.eof_written = true;
        }
        self.session.borrow_mut().close_notify();
        self.flush_output();
        if let Some(l) = self.lower() {
            let _ = l.write_eof();
        }
        let both = {
            let st = self.st.borrow();
            st.eof_delivered
        };
        if both {
            self.set_final(CloseReason::LocalClose);
            self.close_lower();
        }
    }

    /// `close()` after the handshake: `close_notify` after everything
    /// written, then wait (reading on) for the peer's `close_notify` or EOF.
    pub(super) fn send_close_and_wait(&self) {
        self.session.borrow_mut().close_notify();
        self.flush_output();
        let done = {
            let mut st = self.st.borrow_mut();
            let done = st.peer_closed || st.tcp_eof || st.hs != Hs::Done;
            if !done {
                st.shutdown = Shutdown::AwaitPeer;
            }
            done
        };
        if done {
            self.close_lower();
        } else {
            self.update_reading();
        }
    }

    /// Start closing the stream below (it flushes first); bounded by the
    /// shutdown timeout.
    pub(super) fn close_lower(&self) {
        {
            let mut st = self.st.borrow_mut();
            if st.lost || st.shutdown == Shutdown::Lower {
                return;
            }
            st.shutdown = Shutdown::Lower;
        }
        self.start_shutdown_timer();
        // Records held by the cork go before the stream's close.
        self.flush_output();
        if let Some(l) = self.lower() {
            l.close();
        }
    }

    pub(super) fn start_shutdown_timer(&self) {
        if self.st.borrow().shutdown_timer.is_some() {
            return;
        }
        let weak = self.me.clone();
        let timer = self.handle.call_later(self.timeouts.shutdown, move || {
            if let Some(me) = weak.upgrade() {
                me.st.borrow_mut().final_reason = Some(CloseReason::Timeout(TimeoutKind::Shutdown));
                if let Some(l) = me.lower() {
                    l.abort();
                }
            }
        });
        self.st.borrow_mut().shutdown_timer = Some(timer);
    }

    pub(super) fn set_shutdown_after_handshake(&self) {
        self.st.borrow_mut().shutdown = Shutdown::AfterHandshake;
    }

    fn handshake_timed_out(&self) {
        if self.st.borrow().hs != Hs::Pending {
            return;
        }
        self.abort_with(CloseReason::Timeout(TimeoutKind::Handshake));
    }

    pub(super) fn shutdown_state(&self) -> Shutdown {
        self.st.borrow().shutdown
    }
}

/// The stream below as the `io::Write` rustls writes its records to. A
/// write always takes everything (the stream transport sends what the
/// socket takes and buffers the rest), so one `writev` carries them all.
struct Records<'a>(&'a Transport);

impl io::Write for Records<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // rustls passes at most 64 slices; no allocation for them.
        let mut chunks: [&[u8]; 64] = [&[]; 64];
        let n = bufs.len().min(chunks.len());
        for (c, b) in chunks.iter_mut().zip(bufs) {
            *c = b;
        }
        self.0.writelines(&chunks[..n]).map_err(io::Error::other)?;
        Ok(bufs[..n].iter().map(|b| b.len()).sum())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The timer of `close_with_deadline`: once `deadline` passes, abort the
/// stream below and have the layer's loss reported as the close timing
/// out. Not `transport::close_deadline`'s: the layer does not end itself
/// here (it ends when the stream below reports its loss), and the timer
/// holds it weakly, as the layer's other timers do.
pub(super) fn close_deadline_timer(layer: &Rc<TlsLayer>, deadline: Duration) -> TimerHandle {
    let weak = Rc::downgrade(layer);
    layer.handle.call_later(deadline, move || {
        if let Some(me) = weak.upgrade() {
            me.st.borrow_mut().final_reason = Some(CloseReason::Timeout(TimeoutKind::Close));
            if let Some(l) = me.lower() {
                l.abort();
            }
        }
    })
}
