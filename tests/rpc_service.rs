//! The service helper, `Service`: reply order, backpressure, half-close
//! and panicking handlers, seen from a raw framed client on loopback.

mod rpc_support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use protoloop::codec::{Framed, MessageCodec, MessageHandler};
use protoloop::proto::adder::{AddReply, AddRequest};
use protoloop::rpc::{RpcError, RpcOptions, Service};
use protoloop::testing::{Call, RecordingTransport};
use protoloop::{CloseReason, ConnectOptions, Handle, Server, Transport};
use rpc_support::*;

/// A raw client: records every reply in arrival order.
struct Replies(Rc<RefCell<Vec<i64>>>, Rc<Cell<bool>>);

impl MessageHandler for Replies {
    type In = AddReply;
    type Out = AddRequest;
    fn message_received(&mut self, r: AddReply) {
        self.0.borrow_mut().push(r.sum);
    }
    fn connection_lost(&mut self, _: CloseReason) {
        self.1.set(true);
    }
}

/// Connect a raw framed client to `server`: its transport, the replies
/// it records in arrival order, and whether its connection is lost.
async fn raw_client(
    h: &Handle,
    server: &Server,
) -> (Transport, Rc<RefCell<Vec<i64>>>, Rc<Cell<bool>>) {
    let got = Rc::new(RefCell::new(Vec::new()));
    let lost = Rc::new(Cell::new(false));
    let (g, l) = (got.clone(), lost.clone());
    let (t, _) = h
        .create_connection(
            move || Framed::new(Replies(g, l)),
            addr(server),
            ConnectOptions::default(),
        )
        .await
        .unwrap();
    (t, got, lost)
}

fn frames(reqs: impl IntoIterator<Item = AddRequest>) -> Vec<u8> {
    let codec = MessageCodec::<(), AddRequest>::new();
    reqs.into_iter()
        .flat_map(|r| codec.encode_frame(&r).unwrap().to_vec())
        .collect()
}

#[test]
fn service_keeps_request_order_when_handlers_finish_out_of_order() {
    run(|h| async move {
        let gated = GatedAdder::new(&h, 6);
        let svc = gated.service();
        let server = serve(&h, move || svc.protocol());
        let (t, got, _lost) = raw_client(&h, &server).await;
        t.write(&frames((0..6).map(|i| add(i, 0)))).unwrap();
        until(&h, || gated.seen.get() == 6).await;
        for i in [5, 3, 4, 1] {
            gated.gates.open(i);
        }
        h.sleep(Duration::from_millis(20)).await;
        assert!(
            got.borrow().is_empty(),
            "reply 0 is not ready: nothing goes out"
        );
        gated.gates.open(0);
        until(&h, || got.borrow().len() == 2).await;
        assert_eq!(*got.borrow(), vec![0, 1]);
        gated.gates.open(2);
        until(&h, || got.borrow().len() == 6).await;
        assert_eq!(*got.borrow(), vec![0, 1, 2, 3, 4, 5]);
        t.close();
        server.close();
    });
}

#[test]
fn service_stops_reading_while_too_many_requests_wait() {
    run(|h| async move {
        let gated = GatedAdder::new(&h, 10);
        let svc = gated.service().max_pending(2);
        let server = serve(&h, move || svc.protocol());
        let (t, got, lost) = raw_client(&h, &server).await;
        // All ten frames arrive in one read; only two may be delivered.
        t.write(&frames((0..10).map(|i| add(i, 0)))).unwrap();
        until(&h, || gated.seen.get() == 2).await;
        h.sleep(Duration::from_millis(20)).await;
        assert_eq!(gated.seen.get(), 2);
        for i in 0..10 {
            gated.gates.open(i);
        }
        until(&h, || got.borrow().len() == 10).await;
        assert_eq!(*got.borrow(), (0..10).collect::<Vec<i64>>());
        t.write_eof().unwrap();
        until(&h, || lost.get()).await;
        server.close();
    });
}

#[test]
fn half_close_gets_every_reply_due_before_the_close() {
    run(|h| async move {
        let gated = GatedAdder::new(&h, 3);
        let svc = gated.service();
        let server = serve(&h, move || svc.protocol());
        let (t, got, lost) = raw_client(&h, &server).await;
        t.write(&frames((0..3).map(|i| add(i, 5)))).unwrap();
        t.write_eof().unwrap();
        until(&h, || gated.seen.get() == 3).await;
        for i in 0..3 {
            gated.gates.open(i);
        }
        until(&h, || lost.get()).await;
        assert_eq!(*got.borrow(), vec![5, 6, 7]);
        server.close();
    });
}

#[test]
fn panicking_async_handler_aborts_its_connection() {
    run(|h| async move {
        h.set_exception_handler(|_| {});
        let svc = Service::new_async(|r: AddRequest| async move {
            if r.a < 0 {
                panic!("negative");
            }
            AddReply { sum: 0 }
        });
        let server = serve(&h, move || svc.protocol());
        let client = AdderClient::connect(&h, addr(&server), RpcOptions::new())
            .await
            .unwrap();
        assert!(client.call(add(1, 0)).await.is_ok());
        assert!(matches!(
            client.call(add(-1, 0)).await,
            Err(RpcError::ConnectionLost(CloseReason::PeerReset(_)))
        ));
        server.close();
    });
}

/// The peer's EOF read while the service is paused (too many requests
/// waiting) with its last request then delivered: once every reply is
/// sent the connection must still close, not stay half-open for ever.
#[test]
fn half_close_behind_a_full_pipeline_still_closes_after_the_replies() {
    run(|h| async move {
        let gated = GatedAdder::new(&h, 3);
        let svc = gated.service().max_pending(1);
        let server = serve(&h, move || svc.protocol());
        let (t, got, lost) = raw_client(&h, &server).await;
        t.write(&frames((0..3).map(|i| add(i, 1)))).unwrap();
        t.write_eof().unwrap();
        for i in 0..3 {
            until(&h, || gated.seen.get() == i + 1).await;
            gated.gates.open(i);
        }
        until(&h, || got.borrow().len() == 3).await;
        assert_eq!(*got.borrow(), vec![1, 2, 3]);
        until(&h, || lost.get()).await;
        server.close();
    });
}

#[test]
fn replies_to_one_read_leave_in_one_write() {
    use protoloop::Protocol;

    let lp = protoloop::EventLoop::new().unwrap();
    let _h = lp.handle();
    let service = Service::new(|r: AddRequest| AddReply {
        sum: i64::from(r.a) + i64::from(r.b),
    });
    let mut proto = service.protocol();
    let t = RecordingTransport::new();
    proto.connection_made(t.transport());
    let wire = frames((0..32).map(|i| AddRequest { a: i, b: 1 }));
    // Split mid-frame: each read's complete requests are answered together.
    let cut = wire.len() / 2 + 1;
    proto.data_received(&wire[..cut]);
    assert_eq!(writes(&t), 1);
    proto.data_received(&wire[cut..]);
    assert_eq!(writes(&t), 2);
    let replies = frames_of_replies(&t.written());
    assert_eq!(replies, (1..=32).collect::<Vec<i64>>());
}

fn writes(t: &RecordingTransport) -> usize {
    t.calls()
        .iter()
        .filter(|c| matches!(c, Call::Write(_)))
        .count()
}

fn frames_of_replies(mut wire: &[u8]) -> Vec<i64> {
    use prost::Message;
    let mut out = Vec::new();
    while wire.len() >= 2 {
        let len = u16::from_be_bytes([wire[0], wire[1]]) as usize;
        out.push(AddReply::decode(&wire[2..2 + len]).unwrap().sum);
        wire = &wire[2 + len..];
    }
    assert!(wire.is_empty(), "a partial reply frame");
    out
}

#[test]
fn async_replies_finished_in_one_iteration_leave_in_one_write() {
    use protoloop::Protocol;

    run(|h| async move {
        let gated = GatedAdder::new(&h, 32);
        let mut proto = gated.service().protocol();
        let t = RecordingTransport::new();
        proto.connection_made(t.transport());
        proto.data_received(&frames((0..32).map(|i| AddRequest { a: i, b: 1 })));
        // Let the handlers start and wait at their gates.
        h.sleep(Duration::from_millis(5)).await;
        assert_eq!(writes(&t), 0);
        // Every handler finishes in the same iteration: one write.
        for i in (0..32).rev() {
            gated.gates.open(i);
        }
        until(&h, || writes(&t) > 0).await;
        h.sleep(Duration::from_millis(5)).await;
        assert_eq!(writes(&t), 1);
        let replies = frames_of_replies(&t.written());
        assert_eq!(replies, (1..=32).collect::<Vec<i64>>());
    });
}
