//! [`Service`]: answer each request with a handler, in request order.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::protocol::Either;
use crate::codec::sender::Link;
use crate::codec::{CodecError, FrameCodec, Framed, MessageCodec, MessageHandler, MessageSender};
use crate::event_loop::{ExceptionKind, Handle, panic_message};
use crate::proto::rpc::Envelope;
use crate::protocol::{CloseReason, Protocol};
use crate::task::{CatchUnwind, JoinHandle};
use crate::transport::Transport;

/// The default number of requests a connection may have unanswered before
/// the service stops reading from it.
pub const DEFAULT_MAX_PENDING: usize = 1024;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

enum Handler<Req, Resp> {
    Sync(Rc<dyn Fn(Req) -> Resp>),
    Async(Rc<dyn Fn(Req) -> BoxFuture<Resp>>),
}

impl<Req, Resp> Clone for Handler<Req, Resp> {
    fn clone(&self) -> Self {
        match self {
            Handler::Sync(f) => Handler::Sync(f.clone()),
            Handler::Async(f) => Handler::Async(f.clone()),
        }
    }
}

/// The server side of request/reply: a handler that turns each request
/// into a reply, run on every connection of a server.
///
/// - Replies go out in request order, as a FIFO client (the ATM demo's
///   wire) needs, even when the futures of an async handler finish out of
///   order: a finished reply waits for the ones before it.
/// - With [`with_ids`](Self::with_ids), requests and replies travel in
///   [`Envelope`]s and each reply goes out as soon as it is ready.
/// - A connection with [`max_pending`](Self::max_pending) requests
///   unanswered is not read from until some are answered.
/// - When the peer closes its side, the replies still due are sent, then
///   the connection is closed. When the connection is lost, handler futures
///   still running are dropped.
/// - A reply over the frame limit closes the connection with that error;
///   a panicking handler aborts it ([`CloseReason::Panic`]).
///
/// ```
/// use protoloop::proto::adder::{AddReply, AddRequest};
/// use protoloop::rpc::Service;
/// use protoloop::{EventLoop, ServerOptions};
///
/// let adder = Service::new(|r: AddRequest| AddReply { sum: i64::from(r.a) + i64::from(r.b) });
/// let lp = EventLoop::new().unwrap();
/// let server = lp
///     .handle()
///     .create_server(move || adder.protocol(), "127.0.0.1:0", ServerOptions::default())
///     .unwrap();
/// # server.close();
/// ```
pub struct Service<Req, Resp> {
    handler: Handler<Req, Resp>,
    framing: FrameCodec,
    ids: bool,
    max_pending: usize,
}

impl<Req, Resp> Clone for Service<Req, Resp> {
    fn clone(&self) -> Self {
        Service {
            handler: self.handler.clone(),
            framing: self.framing.clone(),
            ids: self.ids,
            max_pending: self.max_pending,
        }
    }
}

impl<Req, Resp> fmt::Debug for Service<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("async", &matches!(self.handler, Handler::Async(_)))
            .field("framing", &self.framing)
            .field("ids", &self.ids)
            .field("max_pending", &self.max_pending)
            .finish()
    }
}

impl<Req, Resp> Service<Req, Resp>
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
{
    /// A service whose handler replies at once.
    pub fn new(handler: impl Fn(Req) -> Resp + 'static) -> Self {
        Service::with_handler(Handler::Sync(Rc::new(handler)))
    }

    /// A service whose handler returns a future of the reply; each runs
    /// as a task on the loop.
    ///
    /// ```
    /// use std::time::Duration;
    /// use protoloop::proto::adder::{AddReply, AddRequest};
    /// use protoloop::rpc::Service;
    ///
    /// let slow_adder = Service::new_async(|r: AddRequest| async move {
    ///     protoloop::sleep(Duration::from_millis(10)).await;
    ///     AddReply { sum: i64::from(r.a) + i64::from(r.b) }
    /// });
    /// # let _ = slow_adder;
    /// ```
    pub fn new_async<F, Fut>(handler: F) -> Self
    where
        F: Fn(Req) -> Fut + 'static,
        Fut: Future<Output = Resp> + 'static,
    {
        Service::with_handler(Handler::Async(Rc::new(move |req| {
            Box::pin(handler(req)) as BoxFuture<Resp>
        })))
    }

    fn with_handler(handler: Handler<Req, Resp>) -> Self {
        Service {
            handler,
            framing: FrameCodec::new(),
            ids: false,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }

    /// The framing (default: the demo's 2-byte big-endian length).
    ///
    /// ```
    /// use protoloop::codec::{FrameCodec, LengthPrefix};
    /// use protoloop::proto::adder::{AddReply, AddRequest};
    /// let svc = protoloop::rpc::Service::new(|_: AddRequest| AddReply { sum: 0 })
    ///     .framing(FrameCodec::builder().length_prefix(LengthPrefix::U32Be).build());
    /// # let _ = svc;
    /// ```
    pub fn framing(mut self, framing: FrameCodec) -> Self {
        self.framing = framing;
        self
    }

    /// Requests and replies travel in [`Envelope`]s whose id the reply
    /// copies from its request; replies go out as soon as each is ready.
    /// For clients using [`RpcOptions::with_ids`](super::RpcOptions::with_ids).
    ///
    /// ```
    /// use protoloop::proto::adder::{AddReply, AddRequest};
    /// let svc = protoloop::rpc::Service::new(|_: AddRequest| AddReply { sum: 0 }).with_ids();
    /// # let _ = svc;
    /// ```
    pub fn with_ids(mut self) -> Self {
        self.ids = true;
        self
    }

    /// Stop reading a connection while it has this many requests
    /// unanswered (at least 1; default [`DEFAULT_MAX_PENDING`]).
    ///
    /// ```
    /// use protoloop::proto::adder::{AddReply, AddRequest};
    /// let svc = protoloop::rpc::Service::new(|_: AddRequest| AddReply { sum: 0 }).max_pending(16);
    /// # let _ = svc;
    /// ```
    pub fn max_pending(mut self, max: usize) -> Self {
        self.max_pending = max.max(1);
        self
    }

    /// A protocol serving one connection; make one per connection, e.g.
    /// `create_server(move || service.protocol(), ..)`.
    pub fn protocol(&self) -> ServiceProtocol<Req, Resp> {
        let conn = Rc::new(RefCell::new(Conn {
            link: None,
            replies: MessageCodec::with_framing(self.framing.clone()),
            envelopes: MessageCodec::with_framing(self.framing.clone()),
            ids: self.ids,
            order: VecDeque::new(),
            head: 0,
            next: 0,
            pending: 0,
            tasks: HashMap::new(),
            paused_by_us: false,
            eof: false,
            lost: false,
            max_pending: self.max_pending,
        }));
        let (handler, framing) = (self.handler.clone(), self.framing.clone());
        let side = if self.ids {
            Either::B(Framed::with_framing(
                ServeEnveloped::new(handler, conn.clone()),
                framing,
            ))
        } else {
            Either::A(Framed::with_framing(
                ServePlain::new(handler, conn.clone()),
                framing,
            ))
        };
        ServiceProtocol(side, conn)
    }
}

/// The protocol a [`Service`] runs on one connection.
pub struct ServiceProtocol<Req, Resp>(ServerSide<Req, Resp>, SharedConn<Resp>)
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static;

type ServerSide<Req, Resp> =
    Either<Framed<ServePlain<Req, Resp>>, Framed<ServeEnveloped<Req, Resp>>>;

impl<Req, Resp> fmt::Debug for ServiceProtocol<Req, Resp>
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceProtocol")
    }
}

impl<Req, Resp> Protocol for ServiceProtocol<Req, Resp>
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
{
    fn connection_made(&mut self, transport: Transport) {
        self.0.connection_made(transport)
    }
    fn data_received(&mut self, data: &[u8]) {
        // Replies to the requests of one read leave in one write.
        let link = self.1.borrow().link.clone();
        if let Some(link) = &link {
            link.cork();
        }
        self.0.data_received(data);
        if let Some(link) = &link {
            link.uncork();
        }
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
    fn drain_requested(&mut self) -> bool {
        self.0.drain_requested()
    }
}

/// One connection's replies in progress.
struct Conn<Resp> {
    link: Option<Rc<Link>>,
    replies: MessageCodec<(), Resp>,
    envelopes: MessageCodec<(), Envelope>,
    ids: bool,
    /// FIFO: the framed replies from request number `head` on, `None`
    /// until ready.
    order: VecDeque<Option<Bytes>>,
    head: u64,
    /// The next request's number.
    next: u64,
    /// Requests whose reply is not yet sent.
    pending: usize,
    tasks: HashMap<u64, JoinHandle<()>>,
    paused_by_us: bool,
    eof: bool,
    lost: bool,
    max_pending: usize,
}

type SharedConn<Resp> = Rc<RefCell<Conn<Resp>>>;

impl<Resp: prost::Message + 'static> Conn<Resp> {
    fn encode(&self, id: Option<u64>, reply: &Resp) -> Result<Bytes, CodecError> {
        match id {
            Some(id) => self.envelopes.encode_frame(&Envelope {
                id,
                body: reply.encode_to_vec().into(),
            }),
            None => self.replies.encode_frame(reply),
        }
    }

    fn write(&self, frame: Bytes) {
        let Some(link) = &self.link else { return };
        if link
            .write_with(|held| held.extend_from_slice(&frame))
            .is_some()
        {
            return;
        }
        // An async handler's reply, outside `data_received`: held until
        // the end of the loop iteration, so that the replies the tasks of
        // one iteration finish leave in one write, not a write each.
        match Handle::try_current() {
            Some(h) => {
                if link.hold(&frame) {
                    let link = link.clone();
                    h.at_iteration_end(Box::new(move || link.uncork()));
                }
            }
            // A refused write means the connection is closing; its loss
            // is reported to the client by the connection itself.
            None => drop(link.real.write_bytes(frame)),
        }
    }

    /// Frame `reply` straight into the link's held writes: the common
    /// case, a synchronous handler answering inside `data_received`.
    fn encode_held(&self, link: &Link, id: Option<u64>, reply: &Resp) -> Result<(), CodecError> {
        let held = link.write_with(|held| match id {
            Some(id) => {
                let env = Envelope {
                    id,
                    body: reply.encode_to_vec().into(),
                };
                self.envelopes.encode_into(&env, held)
            }
            None => self.replies.encode_into(reply, held),
        });
        held.expect("only called while corked")
    }

    /// Request number `seq` (with envelope id `id`) has its reply.
    fn reply(conn: &SharedConn<Resp>, seq: u64, id: Option<u64>, reply: Resp) {
        let mut c = conn.borrow_mut();
        if c.lost {
            return;
        }
        if !c.tasks.is_empty() {
            // Hashing `seq` for nothing cost a twentieth of the service's
            // user time with a synchronous handler, whose replies have no
            // task.
            c.tasks.remove(&seq);
        }
        let c = &mut *c;
        // Next in line while corked (a synchronous handler answering inside
        // `data_received`): framed straight into the held writes, with no
        // allocation or queueing of its own.
        let held = match &c.link {
            Some(link) if link.is_corked() && (c.ids || seq == c.head) => Some(link),
            _ => None,
        };
        let encoded = match held {
            Some(link) => c.encode_held(link, id, &reply).map(|()| None),
            None => c.encode(id, &reply).map(Some),
        };
        let frame = match encoded {
            Ok(f) => f,
            Err(e) => {
                // The client would wait for ever for this reply.
                if let Some(link) = &c.link {
                    link.fail(Arc::new(e));
                }
                return;
            }
        };
        if c.ids {
            if let Some(frame) = frame {
                c.write(frame);
            }
            c.pending -= 1;
        } else {
            match frame {
                // Already in the held writes: retire its place at the front.
                None => {
                    c.order.pop_front();
                    c.head += 1;
                    c.pending -= 1;
                }
                Some(frame) => {
                    let index = (seq - c.head) as usize;
                    c.order[index] = Some(frame);
                }
            }
            while let Some(Some(_)) = c.order.front() {
                let frame = c.order.pop_front().flatten().expect("checked");
                c.write(frame);
                c.head += 1;
                c.pending -= 1;
            }
        }
        if c.paused_by_us && c.pending < c.max_pending {
            c.paused_by_us = false;
            if let Some(link) = &c.link {
                link.resume();
            }
        }
        if c.eof
            && c.pending == 0
            && let Some(link) = &c.link
        {
            link.close();
        }
    }

    fn panicked(conn: &SharedConn<Resp>, message: String) {
        if let Some(h) = Handle::try_current() {
            h.report(
                ExceptionKind::TaskPanic,
                format!("a request handler panicked: {message}"),
            );
        }
        let c = conn.borrow();
        if let Some(link) = &c.link {
            link.abort_with_panic(message.into());
        }
    }
}

/// The handler of a service's connection: the user's handler and the
/// connection's state. `W` says how requests and replies travel
/// ([`PlainRequests`] or [`EnvelopedRequests`]); everything else is the
/// same for both, as with the client's `ClientHandler`.
pub(crate) struct Serve<Req, Resp, W> {
    handler: Handler<Req, Resp>,
    conn: SharedConn<Resp>,
    wire: PhantomData<W>,
}

/// Requests and replies are bare messages, replies in request order.
pub(crate) type ServePlain<Req, Resp> = Serve<Req, Resp, PlainRequests>;
/// Requests and replies travel in envelopes.
pub(crate) type ServeEnveloped<Req, Resp> = Serve<Req, Resp, EnvelopedRequests>;

/// How requests travel on the wire: what is framed each way, and how a
/// received message becomes a request.
pub(crate) trait RequestWire<Req, Resp>: 'static {
    /// The messages received.
    type In: prost::Message + Default + 'static;
    /// The messages sent.
    type Out: prost::Message;
    /// The request `message` carries, and the envelope id its reply
    /// copies (`None`: replies go in request order).
    fn request(message: Self::In) -> Result<(Req, Option<u64>), CodecError>;
}

/// Requests are bare `Req` messages; their replies go in request order.
pub(crate) enum PlainRequests {}

impl<Req, Resp> RequestWire<Req, Resp> for PlainRequests
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message,
{
    type In = Req;
    type Out = Resp;

    #[inline]
    fn request(req: Req) -> Result<(Req, Option<u64>), CodecError> {
        Ok((req, None))
    }
}

/// Requests and replies travel in [`Envelope`]s; a reply copies its
/// request's id and goes out as soon as it is ready.
pub(crate) enum EnvelopedRequests {}

// Any `Resp`: it travels encoded in the envelope's body.
impl<Req: prost::Message + Default + 'static, Resp> RequestWire<Req, Resp> for EnvelopedRequests {
    type In = Envelope;
    type Out = Envelope;

    #[inline]
    fn request(envelope: Envelope) -> Result<(Req, Option<u64>), CodecError> {
        let req = MessageCodec::<Req>::decode_payload(envelope.body)?;
        Ok((req, Some(envelope.id)))
    }
}

impl<Req: 'static, Resp: prost::Message + 'static, W> Serve<Req, Resp, W> {
    fn new(handler: Handler<Req, Resp>, conn: SharedConn<Resp>) -> Self {
        Serve {
            handler,
            conn,
            wire: PhantomData,
        }
    }

    fn request(&mut self, req: Req, id: Option<u64>) {
        let seq = {
            let mut c = self.conn.borrow_mut();
            let seq = c.next;
            c.next += 1;
            c.pending += 1;
            if !c.ids {
                c.order.push_back(None);
            }
            if c.pending >= c.max_pending && !c.paused_by_us {
                c.paused_by_us = true;
                if let Some(link) = &c.link {
                    link.pause();
                }
            }
            seq
        };
        // The handler is user code: nothing is borrowed while it runs.
        match &self.handler {
            Handler::Sync(f) => {
                let reply = f(req);
                Conn::reply(&self.conn, seq, id, reply);
            }
            Handler::Async(f) => {
                let fut = f(req);
                let conn = self.conn.clone();
                let task = Handle::current().spawn(async move {
                    match CatchUnwind::new(fut).await {
                        Ok(reply) => Conn::reply(&conn, seq, id, reply),
                        Err(payload) => Conn::panicked(&conn, panic_message(&*payload)),
                    }
                });
                let mut c = self.conn.borrow_mut();
                if !task.is_finished() && !c.lost {
                    c.tasks.insert(seq, task);
                }
            }
        }
    }
}

impl<Req, Resp, W> MessageHandler for Serve<Req, Resp, W>
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
    W: RequestWire<Req, Resp>,
{
    type In = W::In;
    type Out = W::Out;

    fn connection_made(&mut self, sender: MessageSender<W::Out>) {
        self.conn.borrow_mut().link = Some(sender.link().clone());
    }

    fn message_received(&mut self, message: W::In) {
        match W::request(message) {
            Ok((req, id)) => self.request(req, id),
            Err(e) => {
                if let Some(link) = &self.conn.borrow().link {
                    link.fail(Arc::new(e));
                }
            }
        }
    }

    fn eof_received(&mut self) -> bool {
        let mut c = self.conn.borrow_mut();
        c.eof = true;
        // Keep the connection open until the replies due are sent.
        c.pending > 0
    }

    fn connection_lost(&mut self, _reason: CloseReason) {
        let tasks = {
            let mut c = self.conn.borrow_mut();
            c.lost = true;
            c.order.clear();
            std::mem::take(&mut c.tasks)
        };
        // Dropping a handler future runs user code: nothing is borrowed.
        for (_, task) in tasks {
            task.abort();
        }
    }
}
