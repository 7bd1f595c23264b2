//! Where the cuts fall must not matter: the framing adapter, the RPC
//! client's protocol and the RPC service, each fed the same bytes whole,
//! one byte at a time and cut at every point (every 3-way cut for short
//! inputs), deliver the same messages, replies and close each time. The
//! ATM's customer side gets the same treatment in a unit test beside its
//! (crate-private) teller, `src/demo/teller_splits.rs`.

use std::cell::RefCell;
use std::rc::Rc;

use prost::Message;
use protoloop::codec::{FrameCodec, Framed, LengthPrefix, MessageCodec, MessageHandler};
use protoloop::proto::adder::{AddReply, AddRequest};
use protoloop::proto::bank::GetBalance;
use protoloop::proto::rpc::Envelope;
use protoloop::rpc::{RpcClient, RpcOptions, Service};
use protoloop::testing::{
    Call, RecordingTransport, SplitCheck, check_protocol_splits, check_splits,
};
use protoloop::{CloseReason, EventLoop, Protocol};

// The framing adapter.

/// Records the messages and how the connection ended.
#[derive(Default)]
struct Collect {
    got: Vec<String>,
    eof: bool,
    lost: Option<String>,
}

impl MessageHandler for Collect {
    type In = GetBalance;
    type Out = GetBalance;
    fn message_received(&mut self, m: GetBalance) {
        self.got.push(m.customer_id);
    }
    fn eof_received(&mut self) -> bool {
        self.eof = true;
        false
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.lost = Some(describe(&reason));
    }
}

/// A close reason with its error text, comparable across runs.
fn describe(reason: &CloseReason) -> String {
    match reason {
        CloseReason::Protocol(e) => format!("protocol error: {e}"),
        other => format!("{other:?}"),
    }
}

/// What a framed connection did with its input.
type Outcome = (Vec<String>, bool, Option<String>, Vec<Call>);

fn framed_outcome(p: &mut Framed<Collect>, rec: &RecordingTransport) -> Outcome {
    let h = p.handler();
    (h.got.clone(), h.eof, h.lost.clone(), rec.calls())
}

fn prefixes() -> [LengthPrefix; 3] {
    [
        LengthPrefix::U16Be,
        LengthPrefix::U32Be,
        LengthPrefix::Varint,
    ]
}

fn codec(prefix: LengthPrefix, max: usize) -> FrameCodec {
    FrameCodec::builder()
        .length_prefix(prefix)
        .max_frame_length(max)
        .build()
}

/// `ids` as GetBalance frames.
fn frames_of(framing: &FrameCodec, ids: &[&str]) -> Vec<u8> {
    let codec = MessageCodec::<(), GetBalance>::with_framing(framing.clone());
    ids.iter()
        .flat_map(|id| {
            let m = GetBalance {
                customer_id: id.to_string(),
            };
            codec.encode_frame(&m).unwrap().to_vec()
        })
        .collect()
}

/// The header `prefix` puts before a payload of `len` bytes.
fn header(prefix: LengthPrefix, len: usize) -> Vec<u8> {
    match prefix {
        LengthPrefix::U16Be => (len as u16).to_be_bytes().to_vec(),
        LengthPrefix::U32Be => (len as u32).to_be_bytes().to_vec(),
        _ => {
            let mut v = Vec::new();
            prost::encoding::encode_varint(len as u64, &mut v);
            v
        }
    }
}

#[test]
fn framed_delivers_the_same_messages_at_every_cut_for_each_length_prefix() {
    for prefix in prefixes() {
        let framing = codec(prefix, 1024);
        let ids = ["alice", "bob", "", "carol the customer"];
        let wire = frames_of(&framing, &ids);
        let make = || Framed::with_framing(Collect::default(), framing.clone());
        let out = check_protocol_splits(&wire, make, framed_outcome);
        assert_eq!(out.0, ids, "{prefix:?}");
        assert_eq!((out.1, &out.2), (false, &None), "{prefix:?}");
        assert!(out.3.is_empty(), "{prefix:?}: {:?}", out.3);

        // The same with the peer's EOF after the last frame: one
        // eof_received for the handler, then a clean close.
        let out = SplitCheck::new()
            .eof(true)
            .check_protocol(&wire, make, framed_outcome);
        assert_eq!(out.0, ids, "{prefix:?}");
        assert!(out.1, "{prefix:?}");
        assert_eq!(out.2.as_deref(), Some("PeerEof"), "{prefix:?}");
    }
}

#[test]
fn framed_closes_on_an_oversize_length_after_the_frames_before_it_at_every_cut() {
    for prefix in prefixes() {
        let framing = codec(prefix, 16);
        let mut wire = frames_of(&framing, &["ann", "ben"]);
        // A 17-byte frame where 16 is the limit, then a good frame that
        // must never be delivered.
        wire.extend(header(prefix, 17));
        wire.extend([b'x'; 17]);
        wire.extend(frames_of(&framing, &["late"]));
        let out = check_protocol_splits(
            &wire,
            || Framed::with_framing(Collect::default(), framing.clone()),
            framed_outcome,
        );
        assert_eq!(out.0, ["ann", "ben"], "{prefix:?}");
        let lost = out.2.expect("the connection is lost");
        assert!(lost.starts_with("protocol error"), "{prefix:?}: {lost}");
        assert!(lost.contains("17"), "{prefix:?}: {lost}");
        assert_eq!(out.3, [Call::Close], "{prefix:?}");
    }
}

#[test]
fn framed_closes_on_a_malformed_message_part_way_at_every_cut() {
    for prefix in prefixes() {
        let framing = codec(prefix, 1024);
        let mut wire = frames_of(&framing, &["first"]);
        // A whole frame whose payload is not a GetBalance (field 1 says
        // 100 bytes of string follow, and 2 do).
        wire.extend(header(prefix, 4));
        wire.extend([0x0a, 100, b'h', b'i']);
        wire.extend(frames_of(&framing, &["never"]));
        let out = check_protocol_splits(
            &wire,
            || Framed::with_framing(Collect::default(), framing.clone()),
            framed_outcome,
        );
        assert_eq!(out.0, ["first"], "{prefix:?}");
        let lost = out.2.expect("the connection is lost");
        assert!(lost.starts_with("protocol error"), "{prefix:?}: {lost}");
        assert_eq!(out.3, [Call::Close], "{prefix:?}");
    }
}

#[test]
fn framed_reports_a_partial_frame_at_eof_at_every_cut() {
    let framing = FrameCodec::new();
    let mut wire = frames_of(&framing, &["whole"]);
    let next = frames_of(&framing, &["cut short"]);
    wire.extend(&next[..next.len() - 3]);
    let out = SplitCheck::new().eof(true).check_protocol(
        &wire,
        || Framed::with_framing(Collect::default(), framing.clone()),
        framed_outcome,
    );
    assert_eq!(out.0, ["whole"]);
    assert!(
        !out.1,
        "a cut frame is an error, not an EOF for the handler"
    );
    let lost = out.2.expect("the connection is lost");
    assert!(lost.starts_with("protocol error"), "{lost}");
}

// The RPC client's protocol.

fn add(a: i32, b: i32) -> AddRequest {
    AddRequest { a, b }
}

fn reply_frames(sums: &[i64]) -> Vec<u8> {
    let codec = MessageCodec::<(), AddReply>::new();
    sums.iter()
        .flat_map(|&sum| codec.encode_frame(&AddReply { sum }).unwrap().to_vec())
        .collect()
}

fn envelope_frames(replies: &[(u64, i64)]) -> Vec<u8> {
    let codec = MessageCodec::<(), Envelope>::new();
    replies
        .iter()
        .flat_map(|&(id, sum)| {
            let body = AddReply { sum }.encode_to_vec().into();
            codec.encode_frame(&Envelope { id, body }).unwrap().to_vec()
        })
        .collect()
}

/// A call's sum or error text; `None` while unresolved.
type Resolved = Option<Result<i64, String>>;

/// What became of each call, and of the connection.
#[derive(Debug, PartialEq)]
struct Calls {
    results: Vec<Resolved>,
    requests: Vec<u8>,
    calls: Vec<Call>,
}

/// A fresh client on a recording transport makes `requests`, then is fed
/// `chunks` as its connection would deliver them (the loop runs between
/// chunks), and then the close a transport would report.
fn rpc_client_run(
    lp: &EventLoop,
    options: RpcOptions<AddRequest, AddReply>,
    requests: &[AddRequest],
    chunks: &[&[u8]],
) -> Calls {
    let h = lp.handle();
    type Conn = (Rc<RecordingTransport>, Rc<RefCell<dyn Protocol>>);
    let conn: Rc<RefCell<Option<Conn>>> = Rc::default();
    let c = conn.clone();
    let connect = RpcClient::connect_with(&h, options, move |p| {
        let rec = RecordingTransport::new();
        let proto: Rc<RefCell<dyn Protocol>> = Rc::new(RefCell::new(p));
        proto.borrow_mut().connection_made(rec.transport());
        *c.borrow_mut() = Some((rec.clone(), proto));
        std::future::ready(Ok(rec.transport()))
    });
    let client = lp.run_until_complete(connect).unwrap().unwrap();
    let (rec, proto) = conn.borrow_mut().take().expect("connected");
    let results: Rc<RefCell<Vec<Resolved>>> = Rc::new(RefCell::new(vec![None; requests.len()]));
    for (i, req) in requests.iter().enumerate() {
        let call = client.call(*req);
        let r = results.clone();
        h.spawn(async move {
            let got = call.await.map(|reply| reply.sum).map_err(|e| e.to_string());
            r.borrow_mut()[i] = Some(got);
        });
    }
    lp.run_until_idle().unwrap();
    let requests = rec.written();
    for chunk in chunks {
        if rec.is_closed() {
            break;
        }
        proto.borrow_mut().data_received(chunk);
        lp.run_until_idle().unwrap();
    }
    if rec.is_closed() {
        proto.borrow_mut().connection_lost(CloseReason::LocalClose);
    }
    lp.run_until_idle().unwrap();
    let outcome = Calls {
        results: results.borrow().clone(),
        requests,
        calls: rec
            .calls()
            .into_iter()
            .filter(|c| !matches!(c, Call::Write(_)))
            .collect(),
    };
    client.close();
    lp.run_until_idle().unwrap();
    outcome
}

#[test]
fn rpc_client_resolves_the_same_calls_at_every_cut_of_the_replies() {
    let lp = EventLoop::new_virtual().unwrap();
    let requests = [add(1, 2), add(30, 40), add(-5, 5)];
    let wire = reply_frames(&[3, 70, 0]);
    let out = check_splits(&wire, |chunks| {
        rpc_client_run(&lp, RpcOptions::new(), &requests, chunks)
    });
    assert_eq!(out.results, [Some(Ok(3)), Some(Ok(70)), Some(Ok(0))]);
    let sent = MessageCodec::<(), AddRequest>::new();
    let expected: Vec<u8> = requests
        .iter()
        .flat_map(|r| sent.encode_frame(r).unwrap().to_vec())
        .collect();
    assert_eq!(out.requests, expected);
    assert!(out.calls.is_empty(), "{:?}", out.calls);
}

#[test]
fn rpc_client_with_ids_matches_out_of_order_replies_at_every_cut() {
    let lp = EventLoop::new_virtual().unwrap();
    let requests = [add(1, 1), add(2, 2), add(3, 3)];
    // Ids are the client's; read them back from what it sent.
    let probe = rpc_client_run(&lp, RpcOptions::new().with_ids(), &requests, &[]);
    let codec = MessageCodec::<Envelope, ()>::new();
    let mut buf = bytes::BytesMut::from(&probe.requests[..]);
    let mut ids = Vec::new();
    while let Some(env) = tokio_util::codec::Decoder::decode(&mut codec.clone(), &mut buf).unwrap()
    {
        ids.push(env.id);
    }
    assert_eq!(ids.len(), 3);
    let wire = envelope_frames(&[(ids[2], 6), (ids[0], 2), (ids[1], 4)]);
    let out = check_splits(&wire, |chunks| {
        rpc_client_run(&lp, RpcOptions::new().with_ids(), &requests, chunks)
    });
    assert_eq!(out.results, [Some(Ok(2)), Some(Ok(4)), Some(Ok(6))]);
}

#[test]
fn rpc_client_fails_the_same_calls_on_a_malformed_reply_at_every_cut() {
    let lp = EventLoop::new_virtual().unwrap();
    let requests = [add(1, 2), add(3, 4), add(5, 6)];
    let mut wire = reply_frames(&[3]);
    // A frame that is not an AddReply (its required sum is missing).
    wire.extend([0, 0]);
    wire.extend(reply_frames(&[11]));
    let out = check_splits(&wire, |chunks| {
        rpc_client_run(&lp, RpcOptions::new(), &requests, chunks)
    });
    assert_eq!(out.results[0], Some(Ok(3)));
    for r in &out.results[1..] {
        let err = r.clone().expect("resolved").expect_err("failed");
        assert!(err.contains("connection lost"), "{err}");
    }
    assert_eq!(out.calls, [Call::Close]);
}

// The RPC service.

fn adder() -> Service<AddRequest, AddReply> {
    Service::new(|r: AddRequest| AddReply {
        sum: i64::from(r.a) + i64::from(r.b),
    })
}

fn request_frames(reqs: &[AddRequest]) -> Vec<u8> {
    let codec = MessageCodec::<(), AddRequest>::new();
    reqs.iter()
        .flat_map(|r| codec.encode_frame(r).unwrap().to_vec())
        .collect()
}

/// Runs the loop (for the replies' writes), then reports what was
/// written and every other call on the transport.
fn service_outcome<P: Protocol>(
    lp: &EventLoop,
) -> impl FnMut(&mut P, &RecordingTransport) -> (Vec<u8>, Vec<Call>) {
    move |_, rec| {
        lp.run_until_idle().unwrap();
        let calls = rec
            .calls()
            .into_iter()
            .filter(|c| !matches!(c, Call::Write(_)))
            .collect();
        (rec.written(), calls)
    }
}

#[test]
fn rpc_service_answers_the_same_at_every_cut_of_the_requests() {
    let lp = EventLoop::new_virtual().unwrap();
    let svc = adder();
    let wire = request_frames(&[add(1, 2), add(100, -1), add(0, 0), add(7, 8)]);
    let (written, calls) = check_protocol_splits(&wire, || svc.protocol(), service_outcome(&lp));
    assert_eq!(written, reply_frames(&[3, 99, 0, 15]));
    assert!(calls.is_empty(), "{calls:?}");

    // With the client's EOF after the requests: every reply is written
    // before the EOF is taken, and the service leaves the close to the
    // transport (no call of its own).
    let (written, calls) =
        SplitCheck::new()
            .eof(true)
            .check_protocol(&wire, || svc.protocol(), service_outcome(&lp));
    assert_eq!(written, reply_frames(&[3, 99, 0, 15]));
    assert!(calls.is_empty(), "{calls:?}");
}

#[test]
fn rpc_service_with_ids_answers_each_envelope_at_every_cut() {
    let lp = EventLoop::new_virtual().unwrap();
    let svc = adder().with_ids();
    let codec = MessageCodec::<(), Envelope>::new();
    let wire: Vec<u8> = [(9u64, add(1, 1)), (4, add(2, 3))]
        .iter()
        .flat_map(|(id, r)| {
            let env = Envelope {
                id: *id,
                body: r.encode_to_vec().into(),
            };
            codec.encode_frame(&env).unwrap().to_vec()
        })
        .collect();
    let (written, _) = check_protocol_splits(&wire, || svc.protocol(), service_outcome(&lp));
    assert_eq!(written, envelope_frames(&[(9, 2), (4, 5)]));
}

#[test]
fn rpc_service_answers_what_came_before_a_malformed_request_then_closes() {
    let lp = EventLoop::new_virtual().unwrap();
    let svc = adder();
    let mut wire = request_frames(&[add(2, 2)]);
    // An AddRequest without its required fields.
    wire.extend([0, 0]);
    wire.extend(request_frames(&[add(5, 5)]));
    let (written, calls) = check_protocol_splits(&wire, || svc.protocol(), service_outcome(&lp));
    assert_eq!(written, reply_frames(&[4]));
    assert_eq!(calls, [Call::Close]);
}
