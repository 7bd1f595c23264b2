//! [`RpcClient`]: the I/O shell around a [`Correlator`].
//!
//! The client's state lives in one `RefCell` that only this module
//! borrows, and only between awaits: users hold an [`RpcClient`] (a cheap
//! `Clone`) and [`Call`] futures, never a borrow, so no borrow can be held
//! across an `.await`. No user code runs while the state is borrowed (key
//! extractors run before; wakers are woken after).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::correlator::{CallId, Correlation, Correlator, Delivery, ReplyTag};
use super::options::{Backoff, RpcOptions};
use super::protocol::{Enveloped, Plain, RpcProtocol};
use super::RpcError;
use crate::codec::{CodecError, MessageCodec, sender::Link};
use crate::event_loop::Handle;
use crate::proto::rpc::Envelope;
use crate::protocol::CloseReason;
use crate::task::JoinHandle;
use crate::time::TimerHandle;
use crate::transport::Transport;
use crate::transport::tcp::{Address, ConnectOptions};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;
type Connector<Req, Resp> = Rc<dyn Fn(RpcProtocol<Req, Resp>) -> BoxFuture<crate::Result<Transport>>>;

/// A request/reply client over one connection: [`call`](Self::call)
/// sends a request and returns a future of its reply.
///
/// A cheap `Clone` (an `Rc` inside, `!Send`): share it between tasks. The
/// connection is closed when [`close`](Self::close) is called, or when the
/// last clone and the last pending [`Call`] are dropped.
///
/// # Calls
///
/// - A request is queued when `call` is called, not when its future is
///   first polled, so requests go out in the order of the `call`s:
///   pipelining is just making many calls before awaiting them.
/// - At most `max_in_flight` requests are on the wire unanswered; more
///   wait, as they do while the transport is paused for writing.
/// - Dropping a [`Call`] cancels it: if it was not sent it never is; if it
///   was, its reply is consumed and thrown away, so later replies still go
///   to the right callers.
/// - A call with a deadline fails with [`RpcError::Timeout`] when it
///   passes.
/// - When the connection is lost, every call sent and unanswered fails
///   with [`RpcError::ConnectionLost`] carrying the real [`CloseReason`];
///   calls not yet sent fail too, unless the client reconnects, in which
///   case they go out on the new connection.
///
/// ```
/// use protoloop::proto::adder::{AddReply, AddRequest};
/// use protoloop::rpc::{RpcClient, RpcOptions, Service};
/// use protoloop::{EventLoop, ServerOptions};
///
/// let lp = EventLoop::new().unwrap();
/// let h = lp.handle();
/// let adder = Service::new(|r: AddRequest| AddReply { sum: i64::from(r.a) + i64::from(r.b) });
/// let server = h
///     .create_server(move || adder.protocol(), "127.0.0.1:0", ServerOptions::default())
///     .unwrap();
/// let addr = server.local_addrs()[0];
/// let sum = lp
///     .run_until_complete(async move {
///         let client = RpcClient::connect(&h, addr, RpcOptions::new()).await?;
///         let reply: AddReply = client.call(AddRequest { a: 3, b: 4 }).await?;
///         client.close();
///         Ok::<_, protoloop::rpc::RpcError>(reply.sum)
///     })
///     .unwrap()
///     .unwrap();
/// assert_eq!(sum, 7);
/// ```
pub struct RpcClient<Req, Resp>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    shared: Rc<Shared<Req, Resp>>,
}

impl<Req, Resp> Clone for RpcClient<Req, Resp> 
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    fn clone(&self) -> Self {
        RpcClient {
            shared: self.shared.clone(),
        }
    }
}

impl<Req, Resp> fmt::Debug for RpcClient<Req, Resp> 
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.state.borrow();
        f.debug_struct("RpcClient")
            .field("correlation", &st.corr.mode())
            .field("in_flight", &st.corr.in_flight())
            .field("queued", &st.corr.queued())
            .field("closed", &st.closed)
            .finish()
    }
}

pub(crate) struct Shared<Req, Resp>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    handle: Handle,
    me: Weak<Shared<Req, Resp>>,
    pub(crate) opts: RpcOptions<Req, Resp>,
    connector: Connector<Req, Resp>,
    state: RefCell<State<Resp>>,
}

struct State<Resp> {
    corr: Correlator<String>,
    slots: HashMap<CallId, Slot<Resp>>,
    conn: Conn,
    /// Which connection the protocol callbacks are for; callbacks of an
    /// older one are ignored.
    generation: u64,
    timer: Option<(Instant, TimerHandle)>,
    closed: bool,
    reconnect: Option<JoinHandle<()>>,
}

enum Conn {
    /// Connecting or reconnecting: calls queue.
    Connecting,
    Up(Rc<Link>),
    /// For good: calls fail with this at once.
    Failed(RpcError),
}

struct Slot<Resp> {
    /// The framed request, until it is sent.
    frame: Option<Bytes>,
    timeout: Option<Duration>,
    result: Option<Result<Resp, RpcError>>,
    waker: Option<Waker>,
}

/// A request before it has an id: a whole frame, or (with ids) the body
/// its envelope will carry.
enum Encoded {
    Frame(Bytes),
    Body(Bytes),
}

impl<Req, Resp> RpcClient<Req, Resp>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    /// Connect to `addr` over TCP. With [`RpcOptions::reconnect`], later
    /// connections go to the same address; the first must succeed.
    pub fn connect(
        handle: &Handle,
        addr: impl Into<Address>,
        options: RpcOptions<Req, Resp>,
    ) -> impl Future<Output = Result<Self, RpcError>> + 'static {
        let addr = addr.into();
        let h = handle.clone();
        Self::connect_with(handle, options, move |protocol| {
            let h = h.clone();
            let addr = addr.clone();
            async move {
                h.create_connection(move || protocol, addr, ConnectOptions::default())
                    .await
                    .map(|(t, _)| t)
            }
        })
    }

    /// Connect with `connector`, which must run the protocol it is given on
    /// a new connection of any kind (TCP with options, Unix, TLS ...) and
    /// resolve once it is up. It is called again for each reconnection.
    ///
    /// ```
    /// use protoloop::proto::adder::{AddReply, AddRequest};
    /// use protoloop::rpc::{RpcClient, RpcOptions, Service};
    /// use protoloop::{ConnectOptions, EventLoop, ServerOptions};
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let h = lp.handle();
    /// let adder = Service::new(|r: AddRequest| AddReply { sum: i64::from(r.a) + i64::from(r.b) });
    /// let server = h.create_server(move || adder.protocol(), "127.0.0.1:0", ServerOptions::default()).unwrap();
    /// let addr = server.local_addrs()[0];
    /// let h2 = h.clone();
    /// let connect = RpcClient::<AddRequest, AddReply>::connect_with(&h, RpcOptions::new(), move |p| {
    ///     let h = h2.clone();
    ///     async move {
    ///         let opts = ConnectOptions::default().nodelay(true);
    ///         Ok(h.create_connection(move || p, addr, opts).await?.0)
    ///     }
    /// });
    /// let client = lp.run_until_complete(connect).unwrap().unwrap();
    /// client.close();
    /// ```
    pub fn connect_with<C, F>(
        handle: &Handle,
        options: RpcOptions<Req, Resp>,
        connector: C,
    ) -> impl Future<Output = Result<Self, RpcError>> + 'static
    where
        C: Fn(RpcProtocol<Req, Resp>) -> F + 'static,
        F: Future<Output = crate::Result<Transport>> + 'static,
    {
        let connector: Connector<Req, Resp> = Rc::new(move |p| Box::pin(connector(p)));
        let shared = Shared::new(handle, options, connector);
        async move {
            let attempt = (shared.connector)(shared.protocol(0));
            match attempt.await {
                Ok(_) => Ok(RpcClient { shared }),
                Err(e) => {
                    let err = RpcError::Connect(e);
                    shared.give_up(err.clone());
                    Err(err)
                }
            }
        }
    }

    /// Send `request`; the future resolves to its reply. Uses the
    /// options' call timeout, if any.
    pub fn call(&self, request: Req) -> Call<Resp> {
        self.shared.call(request, self.shared.opts.call_timeout)
    }

    /// Like [`call`](Self::call), failing with [`RpcError::Timeout`] if no
    /// reply comes within `timeout`.
    pub fn call_with_timeout(&self, request: Req, timeout: Duration) -> Call<Resp> {
        self.shared.call(request, Some(timeout))
    }
}

impl<Req, Resp> RpcClient<Req, Resp> 
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    /// Close the connection after flushing what was sent, and stop
    /// reconnecting. Calls still unanswered fail with
    /// [`RpcError::ConnectionLost`] (`LocalClose`); later calls with
    /// [`RpcError::Closed`]. Idempotent.
    pub fn close(&self) {
        self.shared.close()
    }

    /// `true` after [`close`](Self::close).
    pub fn is_closed(&self) -> bool {
        self.shared.state.borrow().closed
    }

    /// `true` while a connection is up.
    pub fn is_connected(&self) -> bool {
        matches!(self.shared.state.borrow().conn, Conn::Up(_))
    }

    /// Requests sent whose replies have not come (cancelled ones
    /// included: their replies are still due).
    pub fn in_flight(&self) -> usize {
        self.shared.state.borrow().corr.in_flight()
    }

    /// Requests waiting to be sent.
    pub fn queued(&self) -> usize {
        self.shared.state.borrow().corr.queued()
    }

    /// The current connection's transport, if one is up.
    pub fn transport(&self) -> Option<Transport> {
        match &self.shared.state.borrow().conn {
            Conn::Up(link) => Some(link.real.clone()),
            _ => None,
        }
    }
}

fn complete<Resp>(
    st: &mut State<Resp>,
    id: CallId,
    result: Result<Resp, RpcError>,
    wakers: &mut Vec<Waker>,
) {
    if let Some(slot) = st.slots.get_mut(&id) {
        slot.frame = None;
        slot.result = Some(result);
        wakers.extend(slot.waker.take());
    }
}

fn wake(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

impl<Req, Resp> Shared<Req, Resp> 
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    fn close(&self) {
        let mut wakers = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            if st.closed {
                return;
            }
            st.closed = true;
            if let Some(task) = st.reconnect.take() {
                task.abort();
            }
            match &st.conn {
                // `connection_lost` fails what is pending, with the reason.
                Conn::Up(link) => link.real.close(),
                Conn::Connecting => {
                    for id in st.corr.connection_lost(false) {
                        complete(&mut st, id, Err(RpcError::Closed), &mut wakers);
                    }
                    st.conn = Conn::Failed(RpcError::Closed);
                }
                Conn::Failed(_) => {}
            }
        }
        wake(wakers);
    }

    /// Stop for good: fail everything pending, and every later call, with
    /// `err`.
    fn give_up(&self, err: RpcError) {
        let mut wakers = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            st.reconnect = None;
            for id in st.corr.connection_lost(false) {
                complete(&mut st, id, Err(err.clone()), &mut wakers);
            }
            st.conn = Conn::Failed(err);
        }
        wake(wakers);
    }

    /// Put queued requests on the wire while the cap, the transport's
    /// write buffer and the connection allow.
    fn pump(&self, st: &mut State<Resp>) {
        let Conn::Up(link) = &st.conn else { return };
        let link = link.clone();
        loop {
            if link.real.is_closing() {
                break;
            }
            // Past the high-water mark `pause_writing` is on its way; stop
            // now rather than queue more behind it.
            let (high, _) = link.real.get_write_buffer_limits();
            if link.real.get_write_buffer_size() > high {
                break;
            }
            let Some(id) = st.corr.next_to_send() else {
                break;
            };
            let frame = st
                .slots
                .get_mut(&id)
                .and_then(|s| s.frame.take())
                .expect("a queued call keeps its frame");
            if link.real.write_bytes(frame).is_err() {
                break; // closing: `connection_lost` fails the call
            }
        }
    }

    /// Keep one timer, at or before the earliest deadline.
    fn rearm(&self, st: &mut State<Resp>) {
        let next = st.corr.next_deadline();
        match (next, &st.timer) {
            (Some(n), Some((armed, _))) if *armed <= n => {}
            (None, None) => {}
            (next, _) => {
                if let Some((_, t)) = st.timer.take() {
                    t.cancel();
                }
                if let Some(n) = next {
                    let me = self.me.clone();
                    let t = self.handle.call_at(n, move || {
                        if let Some(s) = me.upgrade() {
                            s.on_timer();
                        }
                    });
                    st.timer = Some((n, t));
                }
            }
        }
    }

    fn on_timer(&self) {
        let mut wakers = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            st.timer = None;
            for id in st.corr.expire(self.handle.time()) {
                let after = st.slots.get(&id).and_then(|s| s.timeout).unwrap_or_default();
                complete(&mut st, id, Err(RpcError::Timeout { after }), &mut wakers);
            }
            self.rearm(&mut st);
        }
        wake(wakers);
    }

    pub(crate) fn on_connected(&self, generation: u64, link: Rc<Link>) {
        let mut st = self.state.borrow_mut();
        if generation != st.generation || st.closed {
            link.real.close();
            return;
        }
        st.conn = Conn::Up(link);
        st.reconnect = None;
        self.pump(&mut st);
    }

    pub(crate) fn on_reply(&self, generation: u64, tag: ReplyTag<String>, reply: Resp) {
        let mut wakers = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            if generation != st.generation {
                return;
            }
            match st.corr.on_reply(tag) {
                Ok(Delivery::Call(id)) => complete(&mut st, id, Ok(reply), &mut wakers),
                Ok(Delivery::Abandoned(_)) => {}
                Err(e) => {
                    if let Conn::Up(link) = &st.conn {
                        link.fail(Arc::new(e));
                    }
                }
            }
            self.pump(&mut st);
        }
        wake(wakers);
    }

    pub(crate) fn on_write_paused(&self, generation: u64, paused: bool) {
        let mut st = self.state.borrow_mut();
        if generation == st.generation {
            st.corr.set_write_paused(paused);
            if !paused {
                self.pump(&mut st);
            }
        }
    }
}

impl<Req, Resp> Shared<Req, Resp>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    fn new(
        handle: &Handle,
        opts: RpcOptions<Req, Resp>,
        connector: Connector<Req, Resp>,
    ) -> Rc<Self> {
        let corr = Correlator::new(opts.correlation).with_max_in_flight(opts.max_in_flight);
        Rc::new_cyclic(|me| Shared {
            handle: handle.clone(),
            me: me.clone(),
            opts,
            connector,
            state: RefCell::new(State {
                corr,
                slots: HashMap::new(),
                conn: Conn::Connecting,
                generation: 0,
                timer: None,
                closed: false,
                reconnect: None,
            }),
        })
    }

    fn protocol(self: &Rc<Self>, generation: u64) -> RpcProtocol<Req, Resp> {
        let client = Rc::downgrade(self);
        let framing = self.opts.framing.clone();
        match self.opts.correlation {
            Correlation::ById => RpcProtocol::enveloped(Enveloped::new(client, generation), framing),
            _ => RpcProtocol::plain(Plain::new(client, generation), framing),
        }
    }

    fn encode(&self, request: &Req) -> Result<Encoded, CodecError> {
        match self.opts.correlation {
            Correlation::ById => Ok(Encoded::Body(request.encode_to_vec().into())),
            _ => MessageCodec::<(), Req>::with_framing(self.opts.framing.clone())
                .encode_frame(request)
                .map(Encoded::Frame),
        }
    }

    fn frame(&self, id: CallId, encoded: Encoded) -> Result<Bytes, CodecError> {
        match encoded {
            Encoded::Frame(f) => Ok(f),
            Encoded::Body(body) => {
                MessageCodec::<(), Envelope>::with_framing(self.opts.framing.clone())
                    .encode_frame(&Envelope { id: id.0, body })
            }
        }
    }

    fn call(self: &Rc<Self>, request: Req, timeout: Option<Duration>) -> Call<Resp> {
        // User code (the key extractor) runs before the state is borrowed.
        let key = self.opts.keys.as_ref().map(|(k, _)| k(&request));
        let encoded = match self.encode(&request) {
            Ok(e) => e,
            Err(e) => return Call::failed(RpcError::Codec(e)),
        };
        drop(request);
        let deadline = timeout.map(|t| self.handle.time() + t);
        let mut st = self.state.borrow_mut();
        if st.closed {
            return Call::failed(RpcError::Closed);
        }
        if let Conn::Failed(e) = &st.conn {
            return Call::failed(e.clone());
        }
        let id = st.corr.submit(key, deadline);
        let frame = match self.frame(id, encoded) {
            Ok(f) => f,
            Err(e) => {
                st.corr.cancel(id);
                return Call::failed(RpcError::Codec(e));
            }
        };
        st.slots.insert(
            id,
            Slot {
                frame: Some(frame),
                timeout,
                result: None,
                waker: None,
            },
        );
        self.pump(&mut st);
        if deadline.is_some() {
            self.rearm(&mut st);
        }
        drop(st);
        Call {
            target: Some(self.clone()),
            id: Some(id),
            failed: None,
        }
    }

    pub(crate) fn on_lost(&self, generation: u64, reason: CloseReason) {
        let mut wakers = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            if generation != st.generation {
                return;
            }
            let reconnect = self.opts.reconnect.filter(|_| !st.closed);
            for id in st.corr.connection_lost(reconnect.is_some()) {
                let err = RpcError::ConnectionLost(reason.clone());
                complete(&mut st, id, Err(err), &mut wakers);
            }
            match reconnect {
                Some(backoff) => {
                    st.conn = Conn::Connecting;
                    let task = Self::reconnect(self.me.clone(), backoff, reason);
                    st.reconnect = Some(self.handle.spawn(task));
                }
                None if st.closed => st.conn = Conn::Failed(RpcError::Closed),
                None => st.conn = Conn::Failed(RpcError::ConnectionLost(reason)),
            }
        }
        wake(wakers);
    }

    async fn reconnect(me: Weak<Self>, backoff: Backoff, lost: CloseReason) {
        let mut last = RpcError::ConnectionLost(lost);
        for delay in backoff.delays() {
            let Some(handle) = me.upgrade().map(|s| s.handle.clone()) else {
                return;
            };
            handle.sleep(delay).await;
            let attempt = {
                let Some(shared) = me.upgrade() else { return };
                let generation = {
                    let mut st = shared.state.borrow_mut();
                    if st.closed {
                        return;
                    }
                    st.generation += 1;
                    st.generation
                };
                (shared.connector)(shared.protocol(generation))
            };
            match attempt.await {
                Ok(_) => return,
                Err(e) => last = RpcError::Connect(e),
            }
        }
        if let Some(shared) = me.upgrade() {
            shared.give_up(last);
        }
    }
}

impl<Req, Resp> Drop for Shared<Req, Resp> 
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    fn drop(&mut self) {
        let st = self.state.get_mut();
        if let Conn::Up(link) = &st.conn {
            link.real.close();
        }
        if let Some((_, t)) = st.timer.take() {
            t.cancel();
        }
        if let Some(task) = st.reconnect.take() {
            task.abort();
        }
    }
}

/// What a [`Call`] needs from its client, without the request type.
trait CallTarget<Resp> {
    fn poll_call(&self, id: CallId, cx: &mut Context<'_>) -> Poll<Result<Resp, RpcError>>;
    fn cancel_call(&self, id: CallId);
}

impl<Req, Resp> CallTarget<Resp> for Shared<Req, Resp> 
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    fn poll_call(&self, id: CallId, cx: &mut Context<'_>) -> Poll<Result<Resp, RpcError>> {
        let mut st = self.state.borrow_mut();
        let Some(slot) = st.slots.get_mut(&id) else {
            return Poll::Ready(Err(RpcError::Closed));
        };
        match slot.result.take() {
            Some(r) => {
                st.slots.remove(&id);
                Poll::Ready(r)
            }
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn cancel_call(&self, id: CallId) {
        let mut st = self.state.borrow_mut();
        if st.slots.remove(&id).is_some() {
            st.corr.cancel(id);
        }
    }
}

/// The future of one [`RpcClient::call`]: the reply, or why there is none.
/// Dropping it cancels the call (see [`RpcClient`]).
#[must_use = "a call is cancelled when its future is dropped"]
pub struct Call<Resp> {
    target: Option<Rc<dyn CallTarget<Resp>>>,
    id: Option<CallId>,
    failed: Option<RpcError>,
}

impl<Resp> fmt::Debug for Call<Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("id", &self.id)
            .field("done", &self.target.is_none())
            .finish()
    }
}

impl<Resp> Call<Resp> {
    fn failed(err: RpcError) -> Self {
        Call {
            target: None,
            id: None,
            failed: Some(err),
        }
    }

    /// The call's id (also its wire id with [`RpcOptions::with_ids`]);
    /// `None` if it failed before it was queued.
    pub fn id(&self) -> Option<CallId> {
        self.id
    }
}

impl<Resp> Future for Call<Resp> {
    type Output = Result<Resp, RpcError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(err) = self.failed.take() {
            return Poll::Ready(Err(err));
        }
        let (Some(target), Some(id)) = (self.target.as_ref(), self.id) else {
            return Poll::Ready(Err(RpcError::Closed)); // polled after completion
        };
        let r = target.poll_call(id, cx);
        if r.is_ready() {
            self.target = None;
        }
        r
    }
}

impl<Resp> Drop for Call<Resp> {
    fn drop(&mut self) {
        if let (Some(target), Some(id)) = (self.target.take(), self.id) {
            target.cancel_call(id);
        }
    }
}
