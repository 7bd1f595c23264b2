//! The client's side of a connection: [`RpcProtocol`], a [`Framed`]
//! adapter whose handler passes replies to the client's state.

use std::fmt;
use std::marker::PhantomData;
use std::rc::{Rc, Weak};

use super::correlator::ReplyTag;
use super::shared::Shared;
use crate::codec::sender::Link;
use crate::codec::{FrameCodec, Framed, MessageCodec, MessageHandler, MessageSender};
use crate::proto::rpc::Envelope;
use crate::protocol::{CloseReason, Protocol};
use crate::transport::Transport;

/// One of two protocols, chosen at run time (plain or enveloped framing).
pub(crate) enum Either<A, B> {
    A(A),
    B(B),
}

macro_rules! either {
    ($self:expr, $p:ident => $e:expr) => {
        match $self {
            Either::A($p) => $e,
            Either::B($p) => $e,
        }
    };
}

impl<A: Protocol, B: Protocol> Protocol for Either<A, B> {
    fn connection_made(&mut self, transport: Transport) {
        either!(self, p => p.connection_made(transport))
    }
    fn data_received(&mut self, data: &[u8]) {
        either!(self, p => p.data_received(data))
    }
    fn eof_received(&mut self) -> bool {
        either!(self, p => p.eof_received())
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        either!(self, p => p.connection_lost(reason))
    }
    fn pause_writing(&mut self) {
        either!(self, p => p.pause_writing())
    }
    fn resume_writing(&mut self) {
        either!(self, p => p.resume_writing())
    }
    fn drain_requested(&mut self) -> bool {
        either!(self, p => p.drain_requested())
    }
    fn get_buffer(&mut self, size_hint: usize) -> Option<&mut [u8]> {
        either!(self, p => p.get_buffer(size_hint))
    }
    fn buffer_updated(&mut self, nbytes: usize) {
        either!(self, p => p.buffer_updated(nbytes))
    }
}

/// The protocol an [`RpcClient`](super::RpcClient) runs on its connection;
/// a connector given to
/// [`RpcClient::connect_with`](super::RpcClient::connect_with) runs it on
/// the connection it makes.
pub struct RpcProtocol<Req, Resp>(ClientSide<Req, Resp>)
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static;

type ClientSide<Req, Resp> = Either<Framed<Plain<Req, Resp>>, Framed<Enveloped<Req, Resp>>>;

impl<Req, Resp> fmt::Debug for RpcProtocol<Req, Resp>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0 {
            Either::A(_) => "plain",
            Either::B(_) => "enveloped",
        };
        f.debug_tuple("RpcProtocol").field(&kind).finish()
    }
}

impl<Req, Resp> RpcProtocol<Req, Resp>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    pub(crate) fn plain(handler: Plain<Req, Resp>, framing: FrameCodec) -> Self {
        RpcProtocol(Either::A(Framed::with_framing(handler, framing)))
    }

    pub(crate) fn enveloped(handler: Enveloped<Req, Resp>, framing: FrameCodec) -> Self {
        RpcProtocol(Either::B(Framed::with_framing(handler, framing)))
    }
}

impl<Req, Resp> Protocol for RpcProtocol<Req, Resp>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    fn connection_made(&mut self, transport: Transport) {
        self.0.connection_made(transport)
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0.data_received(data)
    }
    fn eof_received(&mut self) -> bool {
        self.0.eof_received()
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.0.connection_lost(reason)
    }
    fn pause_writing(&mut self) {
        self.0.pause_writing()
    }
    fn resume_writing(&mut self) {
        self.0.resume_writing()
    }
}

/// What a client handler keeps, whichever the wire: the client (weakly: a connection does
/// not keep a dropped client alive) and which connection this is.
pub(crate) struct Tie<Req, Resp>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    client: Weak<Shared<Req, Resp>>,
    generation: u64,
    link: Option<Rc<Link>>,
}

impl<Req, Resp> Tie<Req, Resp>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    fn new(client: Weak<Shared<Req, Resp>>, generation: u64) -> Self {
        Tie {
            client,
            generation,
            link: None,
        }
    }

    /// The client, or `None` (and the connection closed) if it is gone.
    fn client(&self) -> Option<Rc<Shared<Req, Resp>>> {
        let c = self.client.upgrade();
        if c.is_none()
            && let Some(link) = &self.link
        {
            link.real.close();
        }
        c
    }

    fn connection_made(&mut self, link: Rc<Link>) {
        self.link = Some(link.clone());
        match self.client() {
            Some(c) => c.on_connected(self.generation, link),
            None => link.real.close(),
        }
    }

    fn reply(&self, tag: ReplyTag<String>, reply: Resp) {
        if let Some(c) = self.client() {
            c.on_reply(self.generation, tag, reply);
        }
    }

    fn connection_lost(&self, reason: CloseReason) {
        if let Some(c) = self.client.upgrade() {
            c.on_lost(self.generation, reason);
        }
    }

    fn write_paused(&self, paused: bool) {
        if let Some(c) = self.client.upgrade() {
            c.on_write_paused(self.generation, paused);
        }
    }
}

/// The handler of a client's connection: passes each reply to the
/// client's state. `W` says how replies travel ([`PlainReplies`] or
/// [`EnvelopedReplies`]); everything else is the same for both.
pub(crate) struct ClientHandler<Req, Resp, W>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    tie: Tie<Req, Resp>,
    wire: PhantomData<W>,
}

/// The handler for replies that are bare `Resp` messages.
pub(crate) type Plain<Req, Resp> = ClientHandler<Req, Resp, PlainReplies>;
/// The handler for replies in an [`Envelope`].
pub(crate) type Enveloped<Req, Resp> = ClientHandler<Req, Resp, EnvelopedReplies>;

impl<Req, Resp, W> ClientHandler<Req, Resp, W>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    pub(crate) fn new(client: Weak<Shared<Req, Resp>>, generation: u64) -> Self {
        ClientHandler {
            tie: Tie::new(client, generation),
            wire: PhantomData,
        }
    }
}

/// How replies travel on the wire: what is framed each way, and how a
/// received message becomes a reply for the client.
pub(crate) trait ReplyWire<Req, Resp>: 'static
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    /// The messages received.
    type In: prost::Message + Default + 'static;
    /// The messages sent.
    type Out: prost::Message;
    /// Pass one received message on to the client.
    fn message_received(tie: &Tie<Req, Resp>, message: Self::In);
}

/// Replies are bare `Resp` messages (FIFO or by key).
pub(crate) enum PlainReplies {}

impl<Req, Resp> ReplyWire<Req, Resp> for PlainReplies
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    type In = Resp;
    type Out = Req;

    fn message_received(tie: &Tie<Req, Resp>, reply: Resp) {
        let Some(c) = tie.client() else { return };
        // The key extractor is user code: run it with nothing borrowed.
        let tag = match &c.opts.keys {
            Some((_, reply_key)) => ReplyTag::Key(reply_key(&reply)),
            None => ReplyTag::Next,
        };
        drop(c);
        tie.reply(tag, reply);
    }
}

/// Replies come in an [`Envelope`] carrying the request's id.
pub(crate) enum EnvelopedReplies {}

impl<Req, Resp> ReplyWire<Req, Resp> for EnvelopedReplies
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    type In = Envelope;
    type Out = Envelope;

    fn message_received(tie: &Tie<Req, Resp>, envelope: Envelope) {
        match MessageCodec::<Resp>::decode_payload(envelope.body) {
            Ok(reply) => tie.reply(ReplyTag::Id(envelope.id), reply),
            Err(e) => {
                if let Some(link) = &tie.link {
                    link.fail(std::sync::Arc::new(e));
                }
            }
        }
    }
}

impl<Req, Resp, W> MessageHandler for ClientHandler<Req, Resp, W>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
    W: ReplyWire<Req, Resp>,
{
    type In = W::In;
    type Out = W::Out;

    fn connection_made(&mut self, sender: MessageSender<W::Out>) {
        self.tie.connection_made(sender.link().clone());
    }

    fn message_received(&mut self, message: W::In) {
        W::message_received(&self.tie, message);
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        self.tie.connection_lost(reason);
    }

    fn pause_writing(&mut self) {
        self.tie.write_paused(true);
    }

    fn resume_writing(&mut self) {
        self.tie.write_paused(false);
    }
}
