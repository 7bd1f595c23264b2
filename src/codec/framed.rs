//! [`Framed`]: the framing adapter, a [`Protocol`] that turns bytes into
//! whole messages for a [`MessageHandler`].

use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use super::sender::Link;
use super::{CodecError, FrameCodec, MessageCodec, MessageSender};
use crate::protocol::{CloseReason, Protocol};
use crate::transport::Transport;

/// What a framed connection calls: [`Protocol`] with whole messages in
/// place of bytes (Twisted's `IntNStringReceiver.stringReceived`). Only
/// `message_received` must be written.
///
/// ```
/// use protoloop::codec::{MessageHandler, MessageSender};
/// use protoloop::proto::adder::{AddReply, AddRequest};
///
/// /// Answers each request with the sum.
/// struct Adder(Option<MessageSender<AddReply>>);
///
/// impl MessageHandler for Adder {
///     type In = AddRequest;
///     type Out = AddReply;
///     fn connection_made(&mut self, sender: MessageSender<AddReply>) {
///         self.0 = Some(sender);
///     }
///     fn message_received(&mut self, req: AddRequest) {
///         let sum = i64::from(req.a) + i64::from(req.b);
///         let _ = self.0.as_ref().unwrap().send(&AddReply { sum });
///     }
/// }
/// ```
pub trait MessageHandler: 'static {
    /// The messages received. `'static` so that the codec can find the
    /// required fields of the crate's generated messages by type
    /// ([`RequiredFields::of`](super::RequiredFields::of)).
    type In: prost::Message + Default + 'static;
    /// The messages sent.
    type Out: prost::Message;

    /// The connection is up; keep `sender` to send, pause and close.
    fn connection_made(&mut self, sender: MessageSender<Self::Out>) {
        let _ = sender;
    }

    /// A whole message arrived.
    fn message_received(&mut self, message: Self::In);

    /// The peer closed its side, after its last whole message was
    /// delivered. As [`Protocol::eof_received`]: `true` keeps our side open.
    fn eof_received(&mut self) -> bool {
        false
    }

    /// The connection is gone; called exactly once, last. Bad input shows
    /// here as [`CloseReason::Protocol`] holding a [`CodecError`].
    fn connection_lost(&mut self, reason: CloseReason) {
        let _ = reason;
    }

    /// See [`Protocol::pause_writing`].
    fn pause_writing(&mut self) {}

    /// See [`Protocol::resume_writing`].
    fn resume_writing(&mut self) {}

    /// See [`Protocol::drain_requested`].
    fn drain_requested(&mut self) -> bool {
        false
    }
}

/// Where the end of the peer's stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eof {
    /// Not seen.
    Open,
    /// Seen while reading was paused with frames still buffered: it is
    /// passed on once they are delivered.
    Deferred,
    /// Passed on (or found to cut a frame short).
    Handled,
}

/// The framing adapter: a [`Protocol`] that splits the byte stream into
/// frames, decodes each as a `H::In` and hands it to
/// [`MessageHandler::message_received`].
///
/// # Delivery
///
/// - Every whole frame of a read is delivered, in order; a frame spread
///   over many reads is joined first.
/// - While reading is paused (through the [`MessageSender`]), nothing is
///   delivered, not even frames already buffered; on resume they are
///   delivered first, whether or not new bytes arrive. A handler that
///   closes the connection gets no further messages.
/// - The end of the stream reaches `eof_received` only after the last
///   whole frame was delivered.
///
/// # Bad input
///
/// The connection is closed, after flushing what was sent, and the
/// handler's `connection_lost` gets [`CloseReason::Protocol`] with a
/// [`CodecError`]: `FrameTooLarge` (naming the length and the limit) when
/// a length prefix is over the limit, `Decode` when a frame is not a valid
/// message, `MissingRequired` when it lacks a proto2 `required` field,
/// `PartialFrame` when the stream ends inside a frame. Frames
/// before the bad one are delivered first.
///
/// ```
/// use protoloop::codec::{Framed, MessageHandler};
/// use protoloop::proto::bank::GetBalance;
/// use protoloop::{EventLoop, ServerOptions};
///
/// struct Printer;
/// impl MessageHandler for Printer {
///     type In = GetBalance;
///     type Out = GetBalance;
///     fn message_received(&mut self, m: GetBalance) {
///         println!("balance asked for {}", m.customer_id);
///     }
/// }
///
/// let lp = EventLoop::new().unwrap();
/// let server = lp
///     .handle()
///     .create_server(|| Framed::new(Printer), "127.0.0.1:0", ServerOptions::default())
///     .unwrap();
/// # server.close();
/// ```
pub struct Framed<H: MessageHandler> {
    handler: H,
    codec: MessageCodec<H::In, H::Out>,
    buf: BytesMut,
    link: Option<Rc<Link>>,
    eof: Eof,
    /// The input broke the framing; ignore whatever else arrives.
    failed: bool,
    /// We closed after a deferred EOF: report `PeerEof`, not `LocalClose`.
    closed_on_eof: bool,
}

impl<H: MessageHandler> Framed<H> {
    /// Frame `handler`'s messages with the demo's framing (a 2-byte
    /// big-endian length).
    pub fn new(handler: H) -> Self {
        Framed::with_framing(handler, FrameCodec::new())
    }

    /// Frame `handler`'s messages with `framing`.
    ///
    /// ```
    /// use protoloop::codec::{FrameCodec, Framed, LengthPrefix, MessageHandler};
    /// # struct Sink;
    /// # impl MessageHandler for Sink {
    /// #     type In = protoloop::proto::bank::GetBalance;
    /// #     type Out = protoloop::proto::bank::Response;
    /// #     fn message_received(&mut self, _: Self::In) {}
    /// # }
    /// let framing = FrameCodec::builder().length_prefix(LengthPrefix::Varint).build();
    /// let protocol = Framed::with_framing(Sink, framing);
    /// # let _ = protocol;
    /// ```
    pub fn with_framing(handler: H, framing: FrameCodec) -> Self {
        Framed::with_codec(handler, MessageCodec::with_framing(framing))
    }

    /// Frame `handler`'s messages with `codec`: its framing, and the
    /// required fields it checks ([`MessageCodec::required`]).
    ///
    /// ```
    /// use protoloop::codec::{Framed, MessageCodec, MessageHandler, RequiredFields};
    /// # #[derive(Clone, PartialEq, prost::Message)]
    /// # struct Ping { #[prost(int32, required, tag = "1")] seq: i32 }
    /// # struct Sink;
    /// # impl MessageHandler for Sink {
    /// #     type In = Ping;
    /// #     type Out = Ping;
    /// #     fn message_received(&mut self, _: Self::In) {}
    /// # }
    /// // `Ping` comes from another crate's schema: `required int32 seq = 1;`
    /// let codec = MessageCodec::new().required(Some(RequiredFields::new("demo.Ping", &[(1, "seq")])));
    /// let protocol = Framed::with_codec(Sink, codec);
    /// # let _ = protocol;
    /// ```
    pub fn with_codec(handler: H, codec: MessageCodec<H::In, H::Out>) -> Self {
        Framed {
            handler,
            codec,
            buf: BytesMut::new(),
            link: None,
            eof: Eof::Open,
            failed: false,
            closed_on_eof: false,
        }
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Bytes received but not yet delivered as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn fail(&mut self, error: CodecError) {
        self.failed = true;
        self.buf.clear();
        if let Some(link) = &self.link {
            link.backlog.set(false);
            link.fail(Arc::new(error));
        }
    }

    /// Deliver whole frames until the buffer runs dry, reading is paused or
    /// the connection is closing.
    fn deliver_frames(&mut self, link: &Link) {
        loop {
            if self.failed || link.paused.get() || link.real.is_closing() {
                break;
            }
            match self.codec.decode(&mut self.buf) {
                Ok(Some(message)) => self.handler.message_received(message),
                Ok(None) => break,
                Err(e) => return self.fail(e),
            }
        }
        self.update_backlog(link);
    }

    /// Tell the sender whether a resume has anything to hand over: bytes
    /// that may hold frames, or an EOF that waited behind the pause (which
    /// no new bytes will ever bring back).
    /// With nothing buffered, decode the whole frames of `data` where they
    /// lie, and return the rest (a partial frame, or what a pause left) for
    /// the buffer. Copying each read into the buffer and splitting frames
    /// off it cost the RPC service a fifth of its user time at pipeline
    /// depth 32 (a `memcpy`, and an allocation and atomic reference counts
    /// per frame).
    fn deliver_in_place<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let Some(link) = &self.link else {
            return data; // not connected yet: keep the bytes
        };
        let mut rest = data;
        let mut error = None;
        while !rest.is_empty() && !link.paused.get() && !link.real.is_closing() {
            match self.codec.decode_from_slice(rest) {
                Ok(Some((message, used))) => {
                    rest = &rest[used..];
                    self.handler.message_received(message);
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = error {
            self.fail(e);
            return &[];
        }
        rest
    }

    fn update_backlog(&self, link: &Link) {
        let pending = !self.buf.is_empty() || self.eof == Eof::Deferred;
        link.backlog.set(!self.failed && pending);
    }

    /// Deliver, then pass on an EOF that waited for the frames before it.
    fn deliver(&mut self) {
        let Some(link) = self.link.clone() else {
            return; // not connected yet: keep the bytes
        };
        self.deliver_frames(&link);
        if self.eof == Eof::Deferred && !self.failed && !link.paused.get() {
            if link.real.is_closing() {
                self.eof = Eof::Handled;
            } else if !self.pass_eof() {
                // The transport already heard our `true`; close for the
                // handler, and report it as the peer's EOF it was.
                self.closed_on_eof = true;
                link.real.close();
            }
        }
        self.update_backlog(&link);
    }

    /// Everything whole was delivered: hand the end of the stream to the
    /// handler, or fail if it cut a frame short. Returns the handler's
    /// `eof_received` (`true` when we are closing on an error, so that the
    /// transport leaves that to us).
    fn pass_eof(&mut self) -> bool {
        self.eof = Eof::Handled;
        match self.codec.decode_eof(&mut self.buf) {
            Ok(None) => self.handler.eof_received(),
            // `deliver` took every whole frame, so only an error is left.
            Ok(Some(_)) => unreachable!("whole frames are delivered before the EOF"),
            Err(e) => {
                self.fail(e);
                true
            }
        }
    }
}

impl<H: MessageHandler> Protocol for Framed<H> {
    fn connection_made(&mut self, transport: Transport) {
        let link = Link::new(transport);
        self.link = Some(link.clone());
        let sender = MessageSender::new(link, self.codec.framing().clone());
        self.handler.connection_made(sender);
    }

    fn data_received(&mut self, data: &[u8]) {
        // An empty call is the sender's nudge after `resume_reading`: just
        // deliver what is buffered.
        if self.failed {
            return;
        }
        let rest = if self.buf.is_empty() {
            self.deliver_in_place(data)
        } else {
            data
        };
        self.buf.extend_from_slice(rest);
        self.deliver();
    }

    fn eof_received(&mut self) -> bool {
        let Some(link) = self.link.clone() else {
            return false;
        };
        if self.failed || self.eof != Eof::Open {
            return true;
        }
        self.deliver_frames(&link);
        if self.failed || link.real.is_closing() {
            self.eof = Eof::Handled;
            return true;
        }
        if link.paused.get() {
            // Frames wait behind the pause: keep the connection until they
            // are delivered, then pass the EOF on (see `deliver`).
            self.eof = Eof::Deferred;
            self.update_backlog(&link);
            return true;
        }
        self.pass_eof()
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        let mut reason = reason;
        if let Some(link) = &self.link {
            link.lost.set(true);
            link.backlog.set(false);
            if let Some(msg) = link.panic.borrow_mut().take() {
                reason = CloseReason::Panic(msg);
            } else if let Some(e) = link.error.borrow_mut().take() {
                reason = CloseReason::Protocol(e);
            }
        }
        if self.closed_on_eof && matches!(reason, CloseReason::LocalClose) {
            reason = CloseReason::PeerEof;
        }
        self.handler.connection_lost(reason);
    }

    fn pause_writing(&mut self) {
        self.handler.pause_writing()
    }

    fn resume_writing(&mut self) {
        self.handler.resume_writing()
    }

    fn drain_requested(&mut self) -> bool {
        self.handler.drain_requested()
    }
}
