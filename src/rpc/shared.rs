//! The client's state and what changes it: calls, replies, timers,
//! connection loss and reconnection. [`RpcClient`](super::RpcClient) and
//! [`Call`] are its public faces.
//!
//! The state lives in one `RefCell` that only this module borrows, and only
//! for the length of one method: users hold an `RpcClient` (a cheap
//! `Clone`) and `Call` futures, never a borrow, so no borrow can be held
//! across an `.await`. No user code runs while the state is borrowed (key
//! extractors run before; wakers are woken after).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustc_hash::FxHashMap;

use super::RpcError;
use super::call::{Call, CallTarget};
use super::correlator::{CallId, Correlation, Correlator, Delivery, ReplyTag};
use super::options::{Backoff, RpcOptions};
use super::protocol::{Enveloped, Plain, RpcProtocol};
use crate::codec::{CodecError, MessageCodec, sender::Link};
use crate::event_loop::{ExceptionKind, Handle};
use crate::proto::rpc::Envelope;
use crate::protocol::CloseReason;
use crate::task::JoinHandle;
use crate::time::TimerHandle;
use crate::transport::Transport;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;
pub(crate) type Connector<Req, Resp> =
    Rc<dyn Fn(RpcProtocol<Req, Resp>) -> BoxFuture<crate::Result<Transport>>>;

pub(crate) struct Shared<Req, Resp>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    handle: Handle,
    me: Weak<Shared<Req, Resp>>,
    pub(crate) opts: RpcOptions<Req, Resp>,
    pub(crate) connector: Connector<Req, Resp>,
    /// The codecs of requests: bare, or in envelopes.
    requests: MessageCodec<(), Req>,
    envelopes: MessageCodec<(), Envelope>,
    state: RefCell<State<Req, Resp>>,
}

struct State<Req, Resp> {
    corr: Correlator<String>,
    /// By our own sequential ids, so FxHash (see the correlator).
    slots: FxHashMap<CallId, Slot<Req, Resp>>,
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

struct Slot<Req, Resp> {
    /// The request, until it is sent.
    outgoing: Option<Outgoing<Req>>,
    timeout: Option<Duration>,
    result: Option<Result<Resp, RpcError>>,
    waker: Option<Waker>,
}

/// A request waiting to be sent.
enum Outgoing<Req> {
    /// Without ids: the message itself, framed straight into the held
    /// writes when it is sent (no buffer of its own). Its size was checked
    /// when it was called.
    Message(Req),
    /// With ids: the enveloped frame.
    Frame(Bytes),
}

/// Store the outcome of call `id`; returns the waker to wake once the
/// state is released.
fn complete<Req, Resp>(
    st: &mut State<Req, Resp>,
    id: CallId,
    result: Result<Resp, RpcError>,
) -> Option<Waker> {
    let slot = st.slots.get_mut(&id)?;
    slot.outgoing = None;
    slot.result = Some(result);
    slot.waker.take()
}

fn wake(wakers: impl IntoIterator<Item = Waker>) {
    for w in wakers {
        w.wake();
    }
}

impl<Req, Resp> Shared<Req, Resp>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    /// `(in flight, queued, abandoned)`.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let st = self.state.borrow();
        (st.corr.in_flight(), st.corr.queued(), st.corr.abandoned())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.borrow().closed
    }

    /// The transport of the connection that is up, if any.
    pub(crate) fn transport(&self) -> Option<Transport> {
        match &self.state.borrow().conn {
            Conn::Up(link) => Some(link.real.clone()),
            _ => None,
        }
    }

    pub(crate) fn close(&self) {
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
                // `connection_lost` fails what is pending, with the reason;
                // what was sent and is still held goes out first.
                Conn::Up(link) => link.close(),
                Conn::Connecting => {
                    for id in st.corr.connection_lost(false) {
                        wakers.extend(complete(&mut st, id, Err(RpcError::Closed)));
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
    pub(crate) fn give_up(&self, err: RpcError) {
        let mut wakers = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            st.reconnect = None;
            for id in st.corr.connection_lost(false) {
                wakers.extend(complete(&mut st, id, Err(err.clone())));
            }
            st.conn = Conn::Failed(err);
        }
        wake(wakers);
    }

    /// Put queued requests on the wire while the cap, the transport's
    /// write buffer and the connection allow.
    ///
    /// A request counts as sent at once, but its bytes wait in the link
    /// until the end of the loop iteration (see `flush_at_iteration_end`).
    fn pump(&self, st: &mut State<Req, Resp>) {
        let Conn::Up(link) = &st.conn else { return };
        let link = link.clone();
        if link.real.is_closing() {
            return; // `connection_lost` fails the calls
        }
        let (high, _) = link.real.get_write_buffer_limits();
        let queued = link.real.get_write_buffer_size();
        // Past the high-water mark `pause_writing` is on its way; stop
        // now rather than queue more behind it.
        while queued + link.held_len() <= high {
            let Some(id) = st.corr.next_to_send() else {
                break;
            };
            let outgoing = st
                .slots
                .get_mut(&id)
                .and_then(|s| s.outgoing.take())
                .expect("a queued call keeps its request");
            let started = match outgoing {
                Outgoing::Message(request) => {
                    let (r, started) =
                        link.hold_with(|held| self.requests.encode_into(&request, held));
                    r.expect("the request's size was checked when it was called");
                    started
                }
                Outgoing::Frame(frame) => link.hold(&frame),
            };
            if started {
                self.flush_at_iteration_end(link.clone());
            }
        }
    }

    /// Send what `link` holds at the end of this loop iteration, in one
    /// write: the calls that the tasks woken by one read make then leave
    /// together (a write per call cost the client 12x tokio's CPU per
    /// request at pipeline depth 32). Then pump again: the transport may
    /// have taken it all without reaching its high-water mark, and then no
    /// `resume_writing` would come to send the calls still queued.
    fn flush_at_iteration_end(&self, link: Rc<Link>) {
        let me = self.me.clone();
        self.handle.at_iteration_end(Box::new(move || {
            link.uncork();
            if let Some(s) = me.upgrade() {
                let mut st = s.state.borrow_mut();
                if st.corr.queued() > 0 {
                    s.pump(&mut st);
                }
            }
        }));
    }

    /// Keep one timer, at or before the earliest deadline.
    fn rearm(&self, st: &mut State<Req, Resp>) {
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
                let after = st
                    .slots
                    .get(&id)
                    .and_then(|s| s.timeout)
                    .unwrap_or_default();
                wakers.extend(complete(&mut st, id, Err(RpcError::Timeout { after })));
            }
            // Calls that timed out in flight gave their places back.
            self.pump(&mut st);
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
        // One reply wakes at most one caller: no `Vec` per reply.
        let mut waker = None;
        let mut dropped = None;
        {
            let mut st = self.state.borrow_mut();
            if generation != st.generation {
                return;
            }
            match st.corr.on_reply(tag) {
                Ok(Delivery::Call(id)) => waker = complete(&mut st, id, Ok(reply)),
                Ok(Delivery::Abandoned(id)) => dropped = Some(id),
                Err(e) => {
                    if let Conn::Up(link) = &st.conn {
                        link.fail(Arc::new(e));
                    }
                }
            }
            self.pump(&mut st);
        }
        // Told after the state is released: the handler is user code.
        if let Some(id) = dropped {
            self.handle.report(
                ExceptionKind::Error,
                format!(
                    "rpc: dropped a reply for call {id}, which no caller waits for \
                     (it timed out, was cancelled or was answered already)"
                ),
            );
        }
        wake(waker);
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
    pub(crate) fn new(
        handle: &Handle,
        opts: RpcOptions<Req, Resp>,
        connector: Connector<Req, Resp>,
    ) -> Rc<Self> {
        let corr = Correlator::new(opts.correlation).with_max_in_flight(opts.max_in_flight);
        Rc::new_cyclic(|me| Shared {
            handle: handle.clone(),
            me: me.clone(),
            requests: MessageCodec::with_framing(opts.framing.clone()),
            envelopes: MessageCodec::with_framing(opts.framing.clone()),
            opts,
            connector,
            state: RefCell::new(State {
                corr,
                slots: FxHashMap::default(),
                conn: Conn::Connecting,
                generation: 0,
                timer: None,
                closed: false,
                reconnect: None,
            }),
        })
    }

    pub(crate) fn protocol(self: &Rc<Self>, generation: u64) -> RpcProtocol<Req, Resp> {
        let client = Rc::downgrade(self);
        let framing = self.opts.framing.clone();
        match self.opts.correlation {
            Correlation::ById => {
                RpcProtocol::enveloped(Enveloped::new(client, generation), framing)
            }
            _ => RpcProtocol::plain(Plain::new(client, generation), framing),
        }
    }

    /// Check that `request` can be sent; with ids, its body.
    fn prepare(&self, request: &Req) -> Result<Option<Bytes>, CodecError> {
        match self.opts.correlation {
            Correlation::ById => Ok(Some(request.encode_to_vec().into())),
            _ => {
                self.requests
                    .framing()
                    .check_length(request.encoded_len())?;
                Ok(None)
            }
        }
    }

    pub(crate) fn call(self: &Rc<Self>, request: Req, timeout: Option<Duration>) -> Call<Resp> {
        // User code (the key extractor) runs before the state is borrowed.
        let key = self.opts.keys.as_ref().map(|(k, _)| k(&request));
        let body = match self.prepare(&request) {
            Ok(b) => b,
            Err(e) => return Call::failed(RpcError::Codec(e)),
        };
        // Saturating: `Duration::MAX` means "never", as for `call_later`.
        let deadline = timeout.map(|t| crate::time::after(self.handle.time(), t));
        let mut st = self.state.borrow_mut();
        if st.closed {
            return Call::failed(RpcError::Closed);
        }
        if let Conn::Failed(e) = &st.conn {
            return Call::failed(e.clone());
        }
        let id = st.corr.submit(key, deadline);
        let outgoing = match body {
            None => Outgoing::Message(request),
            Some(body) => match self.envelopes.encode_frame(&Envelope { id: id.0, body }) {
                Ok(frame) => Outgoing::Frame(frame),
                Err(e) => {
                    st.corr.cancel(id);
                    return Call::failed(RpcError::Codec(e));
                }
            },
        };
        st.slots.insert(
            id,
            Slot {
                outgoing: Some(outgoing),
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
        Call::pending(self.clone(), id)
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
                wakers.extend(complete(&mut st, id, Err(err)));
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
            link.close();
        }
        if let Some((_, t)) = st.timer.take() {
            t.cancel();
        }
        if let Some(task) = st.reconnect.take() {
            task.abort();
        }
    }
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
            // A sent call gave its place under the cap back.
            self.pump(&mut st);
        }
    }
}
