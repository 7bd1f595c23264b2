//! The request/reply client against a model, driven deterministically: an
//! [`RpcClient`] over the in-memory pair, on a virtual clock, talking to a
//! scripted server, through a sequence of operations (calls, replies in
//! and out of order, duplicates, replies for unknown ids or keys, garbage,
//! timeouts, cancelled calls, connection loss).
//!
//! After each operation the client must agree with the model: every call
//! resolved so far resolved with the reply or error the model predicts,
//! the server received exactly the requests the model says were sent (in
//! order, never more unanswered than the cap), and the in-flight, queued
//! and abandoned counts match. At the end every call has resolved exactly
//! once (or was cancelled) and nothing is left in flight.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prost::Message;
use tokio_util::codec::Decoder;

use crate::codec::{FrameCodec, MessageCodec};
use crate::proto::adder::{AddReply, AddRequest};
use crate::proto::rpc::Envelope;
use crate::rpc::{Call, Correlation, RpcClient, RpcError, RpcOptions};
use crate::testing::{Chunking, EndOptions, MemoryEnd, PairOptions, pair_with};
use crate::{CloseReason, EventLoop, Protocol, Transport};

/// One scripted step.
#[derive(Debug, Clone)]
pub enum RpcOp {
    /// The client calls, with this request key (by-key mode) and an
    /// optional timeout in milliseconds.
    Call {
        /// The request's key, `0..4` used.
        key: u8,
        /// Timeout in ms (0 is taken as 1: a deadline in the past races
        /// the reply delivery of the same loop turn).
        timeout_ms: Option<u8>,
    },
    /// Drop the future of one of the calls still pending (picked by index).
    Cancel(u8),
    /// The server answers one of the requests it holds (picked by index):
    /// in order or not.
    Reply(u8),
    /// The server sends its last reply again.
    Duplicate,
    /// The server sends a reply for a call that may not exist: this id
    /// (by id), this key (by key; keys 4 and 5 are never used by calls), or
    /// an extra reply (in order).
    Forged {
        /// The envelope id.
        id: u16,
        /// The reply's key.
        key: u8,
    },
    /// The server sends a frame that is not a reply: undecodable bytes, or
    /// (`true`) an empty message missing its required fields.
    Garbage(bool),
    /// Run the loop until nothing is left to do (time stands still).
    Run,
    /// Run, then move the virtual clock this many milliseconds.
    Advance(u8),
    /// The server closes its side (the client sees EOF).
    ServerClose,
    /// The server aborts (the client sees a reset).
    ServerAbort,
    /// The client closes.
    ClientClose,
}

/// A scripted session.
#[derive(Debug, Clone)]
pub struct RpcCase {
    /// 0: in order, 1: by key, else by id.
    pub mode: u8,
    /// `max_in_flight` (0 is taken as 1).
    pub cap: u8,
    /// Seed of the client end's random chunking.
    pub chunk_seed: u64,
    /// Largest chunk the client end reads at once (0: no limit).
    pub max_chunk: u8,
    /// The steps.
    pub ops: Vec<RpcOp>,
}

/// How a call ended, as the model predicts it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Res {
    Ok(i64),
    Timeout,
    Lost(&'static str),
    Closed,
}

fn reason_name(r: &CloseReason) -> &'static str {
    match r {
        CloseReason::LocalClose => "LocalClose",
        CloseReason::LocalAbort => "LocalAbort",
        CloseReason::PeerEof => "PeerEof",
        CloseReason::PeerReset(_) => "PeerReset",
        CloseReason::Protocol(_) => "Protocol",
        other => panic!("unexpected close reason {other:?}"),
    }
}

fn res_of(r: Result<AddReply, RpcError>) -> Res {
    match r {
        Ok(reply) => Res::Ok(reply.sum),
        Err(RpcError::Timeout { .. }) => Res::Timeout,
        Err(RpcError::ConnectionLost(reason)) => Res::Lost(reason_name(&reason)),
        Err(RpcError::Closed) => Res::Closed,
        Err(other) => panic!("unexpected call error {other:?}"),
    }
}

/// A reply's sum says which request it answers and carries its key: the
/// sum of request `(a, b)` is `8a + b`.
fn sum_for(a: i32, key: i32) -> i64 {
    8 * i64::from(a) + i64::from(key)
}

/// Sums of forged replies: beyond any call's.
const FORGED: i32 = 1 << 28;

// ---- the model ------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Queued,
    Sent,
    /// Sent, given up on, reply still due (in order and by key).
    Abandoned,
    /// Out of the correlator.
    Gone,
}

#[derive(Debug)]
struct MCall {
    key: u8,
    id: Option<u64>,
    deadline: Option<Instant>,
    stage: Stage,
    /// `None` while pending; cancelled calls never get one.
    result: Option<Res>,
    cancelled: bool,
}

/// What the server put on the wire, as the model sees it.
#[derive(Debug, Clone)]
enum MReply {
    Reply { id: Option<u64>, key: u8, sum: i64 },
    Garbage,
}

#[derive(Debug)]
struct Model {
    mode: Correlation,
    cap: usize,
    calls: Vec<MCall>,
    /// Call indices in the order they were sent.
    sent: Vec<usize>,
    next_id: u64,
    /// `None` while up; else what new calls fail with.
    down: Option<Res>,
    now: Instant,
    transit: Vec<MReply>,
    dropped: usize,
}

impl Model {
    fn live_sent(&self) -> usize {
        self.calls.iter().filter(|c| c.stage == Stage::Sent).count()
    }

    fn count(&self, stage: Stage) -> usize {
        self.calls.iter().filter(|c| c.stage == stage).count()
    }

    fn pump(&mut self) {
        if self.down.is_some() {
            return;
        }
        while self.live_sent() < self.cap {
            let Some(i) = self.calls.iter().position(|c| c.stage == Stage::Queued) else {
                return;
            };
            self.calls[i].stage = Stage::Sent;
            self.sent.push(i);
        }
    }

    fn call(&mut self, key: u8, timeout: Option<Duration>) {
        let mut c = MCall {
            key,
            id: None,
            deadline: timeout.map(|t| self.now + t),
            stage: Stage::Gone,
            result: None,
            cancelled: false,
        };
        match &self.down {
            Some(r) => c.result = Some(r.clone()),
            None => {
                c.id = Some(self.next_id);
                self.next_id += 1;
                c.stage = Stage::Queued;
            }
        }
        self.calls.push(c);
        self.pump();
    }

    fn give_up(&mut self, i: usize) {
        let by_id = self.mode == Correlation::ById;
        let c = &mut self.calls[i];
        c.stage = match c.stage {
            Stage::Sent if !by_id => Stage::Abandoned,
            Stage::Queued | Stage::Sent => Stage::Gone,
            other => other,
        };
    }

    fn cancel(&mut self, i: usize) {
        self.give_up(i);
        self.calls[i].cancelled = true;
        self.pump();
    }

    fn lose(&mut self, pending: Res, later: Res) {
        for c in &mut self.calls {
            if matches!(c.stage, Stage::Queued | Stage::Sent) {
                c.result = Some(pending.clone());
            }
            c.stage = Stage::Gone;
        }
        self.transit.clear();
        self.down = Some(later);
    }

    /// The client reads what is in transit.
    fn run(&mut self) {
        let transit = std::mem::take(&mut self.transit);
        for r in transit {
            if self.down.is_some() {
                break;
            }
            let MReply::Reply { id, key, sum } = r else {
                let lost = Res::Lost("Protocol");
                self.lose(lost.clone(), lost);
                break;
            };
            let due = |c: &MCall| matches!(c.stage, Stage::Sent | Stage::Abandoned);
            let target = match self.mode {
                Correlation::Fifo => self.sent.iter().copied().find(|&i| due(&self.calls[i])),
                Correlation::ByKey => self
                    .sent
                    .iter()
                    .copied()
                    .find(|&i| due(&self.calls[i]) && self.calls[i].key == key),
                _ => {
                    let id = id.expect("replies by id carry one");
                    match self.calls.iter().position(|c| c.id == Some(id)) {
                        Some(i) if self.calls[i].stage == Stage::Sent => Some(i),
                        Some(i) if self.calls[i].stage != Stage::Queued => {
                            self.dropped += 1;
                            continue;
                        }
                        _ => None,
                    }
                }
            };
            match target {
                None => {
                    let lost = Res::Lost("Protocol");
                    self.lose(lost.clone(), lost);
                    break;
                }
                Some(i) => {
                    let c = &mut self.calls[i];
                    if c.stage == Stage::Abandoned {
                        self.dropped += 1;
                    } else {
                        c.result = Some(Res::Ok(sum));
                    }
                    c.stage = Stage::Gone;
                    self.pump();
                }
            }
        }
    }

    /// Time moves to `to`: deadlines fire in order, each freeing places.
    fn advance(&mut self, to: Instant) {
        loop {
            let next = self
                .calls
                .iter()
                .filter(|c| matches!(c.stage, Stage::Queued | Stage::Sent))
                .filter_map(|c| c.deadline)
                .filter(|&d| d <= to)
                .min();
            let Some(t) = next else { break };
            for i in 0..self.calls.len() {
                let c = &self.calls[i];
                if matches!(c.stage, Stage::Queued | Stage::Sent)
                    && c.deadline.is_some_and(|d| d <= t)
                {
                    self.give_up(i);
                    self.calls[i].result = Some(Res::Timeout);
                }
            }
            self.pump();
        }
        self.now = to;
    }
}

// ---- the real thing ------------------------------------------------------

/// The scripted server's end: it only records what it receives.
struct Peer(Rc<RefCell<Vec<u8>>>);

impl Protocol for Peer {
    fn connection_made(&mut self, _: Transport) {}
    fn data_received(&mut self, data: &[u8]) {
        self.0.borrow_mut().extend_from_slice(data);
    }
}

/// The server's view: requests received and not answered yet.
struct Server {
    end: MemoryEnd<Peer>,
    inbox: Rc<RefCell<Vec<u8>>>,
    /// `(envelope id, request)`, oldest first.
    pending: Vec<(Option<u64>, AddRequest)>,
    /// Every request received, as call indices (`a`).
    received: Vec<usize>,
    last: Option<(Bytes, MReply)>,
    up: bool,
}

fn mode_of(n: u8) -> Correlation {
    match n % 3 {
        0 => Correlation::Fifo,
        1 => Correlation::ByKey,
        _ => Correlation::ById,
    }
}

/// Run a scripted session and hold the client to the model.
pub fn check_rpc(case: &RpcCase) {
    let mode = mode_of(case.mode);
    let cap = usize::from(case.cap.max(1));
    let lp = EventLoop::new_virtual().expect("virtual loop");
    let h = lp.handle();
    let told = Rc::new(Cell::new(0usize));
    let t = told.clone();
    h.set_exception_handler(move |ctx| {
        assert!(
            ctx.message.contains("dropped a reply"),
            "unexpected report: {}",
            ctx.message
        );
        t.set(t.get() + 1);
    });

    let mut opts = RpcOptions::<AddRequest, AddReply>::new().max_in_flight(cap);
    match mode {
        Correlation::ByKey => {
            opts = opts.by_key(|q| q.b.to_string(), |r| r.sum.rem_euclid(8).to_string())
        }
        Correlation::ById => opts = opts.with_ids(),
        _ => {}
    }
    let chunking = match case.max_chunk {
        0 => Chunking::All,
        n => Chunking::Random {
            seed: case.chunk_seed,
            max: usize::from(n),
        },
    };
    let inbox = Rc::new(RefCell::new(Vec::new()));
    let server_end = Rc::new(RefCell::new(None));
    let (hc, se, ib) = (h.clone(), server_end.clone(), inbox.clone());
    let connect = RpcClient::connect_with(&h, opts, move |protocol| {
        let pair_opts = PairOptions {
            a: EndOptions::default().chunking(chunking.clone()),
            b: EndOptions::default(),
        };
        let (client, server) = pair_with(&hc, protocol, Peer(ib.clone()), pair_opts);
        *se.borrow_mut() = Some(server);
        let t = client.transport().clone();
        async move { Ok(t) }
    });
    let client = lp
        .run_until_complete(connect)
        .expect("loop")
        .expect("in-memory connect");
    let mut server = Server {
        end: server_end.borrow_mut().take().expect("connected"),
        inbox,
        pending: Vec::new(),
        received: Vec::new(),
        last: None,
        up: true,
    };
    let mut model = Model {
        mode,
        cap,
        calls: Vec::new(),
        sent: Vec::new(),
        next_id: 0,
        down: None,
        now: h.time(),
        transit: Vec::new(),
        dropped: 0,
    };
    let mut futures: Vec<Option<Call<AddReply>>> = Vec::new();
    let mut results: Vec<Option<Res>> = Vec::new();

    let run = |model: &mut Model, server: &mut Server| {
        lp.run_until_idle().expect("loop");
        model.run();
        server.read(mode);
    };

    for op in case.ops.iter().take(200) {
        match op {
            RpcOp::Call { key, timeout_ms } => {
                let key = key % 4;
                let a = i32::try_from(futures.len()).expect("few calls");
                let req = AddRequest {
                    a,
                    b: i32::from(key),
                };
                let timeout = timeout_ms.map(|ms| Duration::from_millis(u64::from(ms.max(1))));
                futures.push(Some(match timeout {
                    Some(t) => client.call_with_timeout(req, t),
                    None => client.call(req),
                }));
                results.push(None);
                model.call(key, timeout);
            }
            RpcOp::Cancel(pick) => {
                let pending: Vec<usize> = (0..futures.len())
                    .filter(|&i| futures[i].is_some())
                    .collect();
                if !pending.is_empty() {
                    let i = pending[usize::from(*pick) % pending.len()];
                    futures[i] = None;
                    model.cancel(i);
                }
            }
            RpcOp::Reply(pick) => {
                if server.up && !server.pending.is_empty() {
                    let i = usize::from(*pick) % server.pending.len();
                    let (id, req) = server.pending.remove(i);
                    server.send(mode, &mut model, id, req.b, sum_for(req.a, req.b));
                }
            }
            RpcOp::Duplicate => {
                if server.up
                    && let Some((frame, reply)) = server.last.clone()
                {
                    let _ = server.end.transport().write_bytes(frame);
                    model.transit.push(reply);
                }
            }
            RpcOp::Forged { id, key } => {
                if server.up {
                    let key = i32::from(key % 6);
                    server.send(
                        mode,
                        &mut model,
                        Some(u64::from(*id)),
                        key,
                        sum_for(FORGED, key),
                    );
                }
            }
            RpcOp::Garbage(empty) => {
                if server.up {
                    let frame: &[u8] = if *empty { b"\x00\x00" } else { b"\x00\x01\xff" };
                    let _ = server.end.transport().write(frame);
                    model.transit.push(MReply::Garbage);
                }
            }
            RpcOp::Run => run(&mut model, &mut server),
            RpcOp::Advance(ms) => {
                run(&mut model, &mut server);
                let by = Duration::from_millis(u64::from(*ms));
                lp.advance(by).expect("loop");
                model.advance(model.now + by);
                server.read(mode);
            }
            RpcOp::ServerClose | RpcOp::ServerAbort => {
                run(&mut model, &mut server);
                if server.up {
                    let (reason, t) = (
                        if matches!(op, RpcOp::ServerClose) {
                            "PeerEof"
                        } else {
                            "PeerReset"
                        },
                        server.end.transport(),
                    );
                    if matches!(op, RpcOp::ServerClose) {
                        t.close();
                    } else {
                        t.abort();
                    }
                    server.up = false;
                    if model.down.is_none() {
                        model.lose(Res::Lost(reason), Res::Lost(reason));
                    }
                }
                run(&mut model, &mut server);
            }
            RpcOp::ClientClose => {
                run(&mut model, &mut server);
                client.close();
                server.up = false;
                if model.down.is_none() {
                    model.lose(Res::Lost("LocalClose"), Res::Closed);
                } else {
                    model.down = Some(Res::Closed);
                }
                run(&mut model, &mut server);
            }
        }
        poll_all(&mut futures, &mut results);
        // Requests reach the server as the loop runs.
        let settled = matches!(
            op,
            RpcOp::Run
                | RpcOp::Advance(_)
                | RpcOp::ServerClose
                | RpcOp::ServerAbort
                | RpcOp::ClientClose
        );
        agree(&model, &client, &server, &results, told.get(), settled);
    }
    // The end: everything left resolves when the connection goes.
    run(&mut model, &mut server);
    client.close();
    if model.down.is_none() {
        model.lose(Res::Lost("LocalClose"), Res::Closed);
    }
    lp.run_until_idle().expect("loop");
    server.read(mode);
    poll_all(&mut futures, &mut results);
    agree(&model, &client, &server, &results, told.get(), true);
    assert!(futures.iter().all(Option::is_none), "a call never resolved");
    assert_eq!(
        (client.in_flight(), client.queued(), client.abandoned()),
        (0, 0, 0),
        "calls left behind"
    );
}

fn poll_all(futures: &mut [Option<Call<AddReply>>], results: &mut [Option<Res>]) {
    let mut cx = Context::from_waker(Waker::noop());
    for (f, r) in futures.iter_mut().zip(results.iter_mut()) {
        if let Some(call) = f {
            if let Poll::Ready(out) = Pin::new(call).poll(&mut cx) {
                assert!(r.is_none(), "a call resolved twice");
                *r = Some(res_of(out));
                *f = None;
            }
        }
    }
}

fn agree(
    model: &Model,
    client: &RpcClient<AddRequest, AddReply>,
    server: &Server,
    results: &[Option<Res>],
    told: usize,
    settled: bool,
) {
    for (i, (c, got)) in model.calls.iter().zip(results).enumerate() {
        if !c.cancelled {
            assert_eq!(got, &c.result, "call {i}: {model:#?}");
        }
    }
    let seen = if settled {
        model.sent.len()
    } else {
        server.received.len().min(model.sent.len())
    };
    assert_eq!(server.received, model.sent[..seen], "requests on the wire");
    assert_eq!(client.in_flight(), model.live_sent(), "in flight");
    assert!(client.in_flight() <= model.cap, "over the cap");
    assert_eq!(client.queued(), model.count(Stage::Queued), "queued");
    assert_eq!(
        client.abandoned(),
        model.count(Stage::Abandoned),
        "abandoned"
    );
    assert_eq!(told, model.dropped, "late replies dropped and reported");
}

impl Server {
    /// Take the whole requests out of the inbox.
    fn read(&mut self, mode: Correlation) {
        let mut buf = BytesMut::from(&self.inbox.borrow()[..]);
        let before = buf.len();
        let mut frames = FrameCodec::new();
        while let Some(frame) = frames.decode(&mut buf).expect("the client frames well") {
            let (id, body) = match mode {
                Correlation::ById => {
                    let env = Envelope::decode(frame.freeze()).expect("an envelope");
                    (Some(env.id), env.body)
                }
                _ => (None, frame.freeze()),
            };
            let req = AddRequest::decode(body).expect("a request");
            self.received
                .push(usize::try_from(req.a).expect("call index"));
            self.pending.push((id, req));
        }
        let used = before - buf.len();
        self.inbox.borrow_mut().drain(..used);
    }

    fn send(&mut self, mode: Correlation, model: &mut Model, id: Option<u64>, key: i32, sum: i64) {
        let reply = AddReply { sum };
        let frame = match mode {
            Correlation::ById => MessageCodec::<(), Envelope>::new()
                .encode_frame(&Envelope {
                    id: id.unwrap_or(0),
                    body: reply.encode_to_vec().into(),
                })
                .expect("small"),
            _ => MessageCodec::<(), AddReply>::new()
                .encode_frame(&reply)
                .expect("small"),
        };
        let m = MReply::Reply {
            id: id.filter(|_| mode == Correlation::ById).or(Some(0)),
            key: u8::try_from(key).expect("small key"),
            sum,
        };
        let _ = self.end.transport().write_bytes(frame.clone());
        model.transit.push(m.clone());
        self.last = Some((frame, m));
    }
}
