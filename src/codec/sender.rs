//! [`MessageSender`], the handle a [`MessageHandler`](super::MessageHandler)
//! writes through, and the transport wrapper that lets the framing adapter
//! see `pause_reading` / `resume_reading`.
//!
//! The adapter must stop delivering already-buffered frames the moment a
//! handler pauses reading, and start again on resume even if no new byte
//! ever arrives (the transport only calls `data_received` for new bytes).
//! So the handler's [`Transport`] is a thin wrapper around the real one:
//! pausing sets a flag the adapter checks between frames, and resuming
//! schedules a call on the loop that hands the adapter an empty
//! `data_received`, which delivers what is buffered.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::{CodecError, FrameCodec, MessageCodec};
use crate::event_loop::{ExceptionKind, Handle, panic_message};
use crate::protocol::Protocol;
use crate::transport::{SocketAddress, Transport, TransportImpl, TransportStats};

type DynError = Arc<dyn std::error::Error + Send + Sync>;

/// What the framing adapter, its sender and its transport wrapper share.
pub(crate) struct Link {
    pub(crate) real: Transport,
    /// Reading paused through the wrapper: stop delivering frames.
    pub(crate) paused: Cell<bool>,
    /// `connection_lost` was delivered.
    pub(crate) lost: Cell<bool>,
    /// The adapter's buffer holds bytes that may make whole frames.
    pub(crate) backlog: Cell<bool>,
    poke_scheduled: Cell<bool>,
    /// The protocol object the transport calls: the adapter, or whatever
    /// protocol embeds it and forwards `data_received`.
    protocol: Option<Weak<RefCell<dyn Protocol>>>,
    /// Why the adapter closed the connection; replaces the transport's
    /// `LocalClose` in `connection_lost`.
    pub(crate) error: RefCell<Option<DynError>>,
    /// A handler panicked during delivery on resume (outside the
    /// transport's own guard).
    pub(crate) panic: RefCell<Option<Arc<str>>>,
    /// Writes go to `held` instead of the transport (see [`Link::cork`]).
    corked: Cell<bool>,
    /// What was written while corked, back to back; keeps its capacity.
    held: RefCell<BytesMut>,
}

impl Link {
    pub(crate) fn new(real: Transport) -> Rc<Link> {
        let protocol = real.get_protocol().map(|p| Rc::downgrade(&p));
        Rc::new(Link {
            real,
            paused: Cell::new(false),
            lost: Cell::new(false),
            backlog: Cell::new(false),
            poke_scheduled: Cell::new(false),
            protocol,
            error: RefCell::new(None),
            panic: RefCell::new(None),
            corked: Cell::new(false),
            held: RefCell::new(BytesMut::new()),
        })
    }

    /// Hold writes made through [`Link::write_with`] until
    /// [`Link::uncork`], which sends them with one write: the replies to
    /// the requests of one read leave together (at pipeline depth 32 a
    /// write per reply cost the RPC service 12x the CPU per request).
    pub(crate) fn cork(&self) {
        self.corked.set(true);
    }

    /// Stop holding writes and send what was held.
    pub(crate) fn uncork(&self) {
        self.corked.set(false);
        self.flush_held();
    }

    /// Whether writes are being held.
    pub(crate) fn is_corked(&self) -> bool {
        self.corked.get()
    }

    /// Bytes held by the cork, not yet handed to the transport.
    pub(crate) fn held_len(&self) -> usize {
        self.held.borrow().len()
    }

    /// Hold `data` with the writes already held. Returns `true` if this
    /// started the holding (the link was not corked): the caller must then
    /// see to the [`uncork`](Link::uncork), for example at the end of the
    /// loop iteration as the RPC client does.
    pub(crate) fn hold(&self, data: &[u8]) -> bool {
        self.hold_with(|held| held.extend_from_slice(data)).1
    }

    /// Like [`hold`](Link::hold), appending with `fill`.
    pub(crate) fn hold_with<R>(&self, fill: impl FnOnce(&mut BytesMut) -> R) -> (R, bool) {
        let r = fill(&mut self.held.borrow_mut());
        (r, !self.corked.replace(true))
    }

    /// Append to the held writes with `fill` if corked (no allocation of
    /// its own); otherwise `None`, and the caller writes to the transport.
    pub(crate) fn write_with<R>(&self, fill: impl FnOnce(&mut BytesMut) -> R) -> Option<R> {
        if self.corked.get() {
            Some(fill(&mut self.held.borrow_mut()))
        } else {
            None
        }
    }

    fn flush_held(&self) {
        let mut held = self.held.borrow_mut();
        if !held.is_empty() {
            // A refused write means the connection is closing; whoever
            // closed it reports why.
            let _ = self.real.write(&held);
            held.clear();
        }
    }

    /// Send what is held, then close: nothing written before the close is
    /// lost to the cork.
    pub(crate) fn close(&self) {
        self.uncork();
        self.real.close();
    }

    /// Close the connection, reporting `error` as the reason. The first
    /// error wins.
    pub(crate) fn fail(&self, error: DynError) {
        self.error.borrow_mut().get_or_insert(error);
        self.close();
    }

    /// Abort the connection because a handler panicked outside the
    /// transport's own guard; `connection_lost` reports the panic.
    pub(crate) fn abort_with_panic(&self, message: Arc<str>) {
        self.panic.borrow_mut().get_or_insert(message);
        self.corked.set(false);
        self.held.borrow_mut().clear();
        self.real.abort();
    }

    pub(crate) fn pause(&self) {
        self.paused.set(true);
        self.real.pause_reading();
    }

    pub(crate) fn resume(self: &Rc<Self>) {
        self.paused.set(false);
        self.real.resume_reading();
        if self.backlog.get() {
            self.schedule_poke();
        }
    }

    fn schedule_poke(self: &Rc<Self>) {
        if self.poke_scheduled.get() {
            return;
        }
        // Without a running loop there is nobody to schedule on; the
        // buffered frames go out with the next bytes that arrive.
        let Some(handle) = Handle::try_current() else {
            return;
        };
        self.poke_scheduled.set(true);
        let me = self.clone();
        handle.call_soon(move || me.poke());
    }

    /// Deliver buffered frames after a resume (see the module docs).
    fn poke(self: &Rc<Self>) {
        self.poke_scheduled.set(false);
        if self.paused.get() || self.lost.get() || self.real.is_closing() {
            return;
        }
        let Some(proto) = self.protocol.as_ref().and_then(Weak::upgrade) else {
            return;
        };
        // Only while that protocol is still the transport's.
        match self.real.get_protocol() {
            Some(current) if Rc::ptr_eq(&current, &proto) => {}
            _ => return,
        }
        let Ok(mut p) = proto.try_borrow_mut() else {
            // Code outside the callbacks holds the protocol (a borrow kept
            // across an `.await`); try again on the next iteration.
            self.schedule_poke();
            return;
        };
        let r = panic::catch_unwind(AssertUnwindSafe(|| p.data_received(&[])));
        drop(p);
        if let Err(payload) = r {
            let msg: Arc<str> = panic_message(&*payload).into();
            if let Some(h) = Handle::try_current() {
                h.report(
                    ExceptionKind::ProtocolPanic,
                    format!("a message handler panicked delivering buffered frames: {msg}"),
                );
            }
            self.abort_with_panic(msg);
        }
    }
}

/// The transport a message handler sees: the real one, except that
/// pausing and resuming reading go through the framing adapter too.
struct FramedTransport {
    link: Rc<Link>,
}

impl TransportImpl for FramedTransport {
    fn write(&self, data: &[u8]) -> crate::Result<()> {
        self.link.real.write(data)
    }
    fn write_bytes(&self, data: bytes::Bytes) -> crate::Result<()> {
        self.link.real.write_bytes(data)
    }
    fn writelines(&self, chunks: &[&[u8]]) -> crate::Result<()> {
        self.link.real.writelines(chunks)
    }
    fn write_eof(&self) -> crate::Result<()> {
        self.link.real.write_eof()
    }
    fn can_write_eof(&self) -> bool {
        self.link.real.can_write_eof()
    }
    fn close(&self) {
        self.link.real.close()
    }
    fn close_with_deadline(&self, deadline: Duration) {
        self.link.real.close_with_deadline(deadline)
    }
    fn abort(&self) {
        self.link.real.abort()
    }
    fn is_closing(&self) -> bool {
        self.link.real.is_closing()
    }
    fn pause_reading(&self) {
        self.link.pause()
    }
    fn resume_reading(&self) {
        self.link.resume()
    }
    fn is_reading(&self) -> bool {
        !self.link.paused.get() && self.link.real.is_reading()
    }
    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.link.real.set_write_buffer_limits(high, low)
    }
    fn get_write_buffer_limits(&self) -> (usize, usize) {
        self.link.real.get_write_buffer_limits()
    }
    fn get_write_buffer_size(&self) -> usize {
        self.link.real.get_write_buffer_size()
    }
    fn peer_addr(&self) -> Option<SocketAddress> {
        self.link.real.peer_addr()
    }
    fn local_addr(&self) -> Option<SocketAddress> {
        self.link.real.local_addr()
    }
    fn stats(&self) -> TransportStats {
        self.link.real.stats()
    }
    fn set_protocol(&self, protocol: Rc<RefCell<dyn Protocol>>) {
        self.link.real.set_protocol_dyn(protocol)
    }
    fn get_protocol(&self) -> Option<Rc<RefCell<dyn Protocol>>> {
        self.link.real.get_protocol()
    }
    fn extra(&self, key: &str) -> Option<Box<dyn std::any::Any>> {
        self.link.real.extra(key)
    }
}

/// Sends messages on a framed connection, and pauses, resumes or closes
/// it. A cheap `Clone` (an `Rc` inside, `!Send`); it may be kept and used
/// outside callbacks, for example from a task. Once the connection is gone
/// every call answers with an error or does nothing; none panics.
///
/// Pause and resume reading here (or on [`transport`](Self::transport),
/// which is the same): the framing adapter then stops delivering frames at
/// once, even those already buffered, and delivers them again on resume.
/// Pausing through the transport `create_connection` returned stops the
/// socket, but not frames already buffered.
pub struct MessageSender<M> {
    link: Rc<Link>,
    transport: Transport,
    codec: MessageCodec<(), M>,
}

impl<M> Clone for MessageSender<M> {
    fn clone(&self) -> Self {
        MessageSender {
            link: self.link.clone(),
            transport: self.transport.clone(),
            codec: self.codec.clone(),
        }
    }
}

impl<M> fmt::Debug for MessageSender<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageSender")
            .field("message", &std::any::type_name::<M>())
            .field("transport", &self.transport)
            .finish()
    }
}

impl<M> MessageSender<M> {
    pub(crate) fn new(link: Rc<Link>, framing: FrameCodec) -> Self {
        let transport = Transport::new(Rc::new(FramedTransport { link: link.clone() }));
        MessageSender {
            link,
            transport,
            codec: MessageCodec::with_framing(framing),
        }
    }

    /// What the adapter shares with this sender.
    pub(crate) fn link(&self) -> &Rc<Link> {
        &self.link
    }

    /// The connection's transport, with reading paused and resumed through
    /// the framing adapter.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The framing in use.
    pub fn framing(&self) -> &FrameCodec {
        self.codec.framing()
    }

    /// Stop delivering messages (buffered ones included) until
    /// [`resume_reading`](Self::resume_reading). Idempotent.
    pub fn pause_reading(&self) {
        self.link.pause()
    }

    /// Deliver again, starting with the frames that were buffered when
    /// reading was paused. Idempotent.
    pub fn resume_reading(&self) {
        self.link.resume()
    }

    /// `false` while paused or closing.
    pub fn is_reading(&self) -> bool {
        self.transport.is_reading()
    }

    /// Flush what was sent, then close.
    pub fn close(&self) {
        self.link.real.close()
    }

    /// Drop what is unsent and reset the connection.
    pub fn abort(&self) {
        self.link.real.abort()
    }

    /// Flush what was sent, then close; the handler's `connection_lost`
    /// gets [`CloseReason::Protocol`](crate::CloseReason::Protocol) with
    /// `error`, which is what a peer breaking the application protocol
    /// deserves.
    pub fn close_with_error<E: std::error::Error + Send + Sync + 'static>(&self, error: E) {
        self.link.fail(Arc::new(error))
    }

    /// `true` once closing or closed.
    pub fn is_closing(&self) -> bool {
        self.link.real.is_closing()
    }
}

impl<M: prost::Message> MessageSender<M> {
    /// Send `message` as one frame. A message over the frame limit fails
    /// with [`CodecError::FrameTooLarge`] and nothing is written; on a
    /// closing connection it fails with [`CodecError::Transport`].
    pub fn send(&self, message: &M) -> Result<(), CodecError> {
        let frame = self.codec.encode_frame(message)?;
        self.link.real.write_bytes(frame)?;
        Ok(())
    }
}
