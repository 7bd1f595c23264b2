//! The request/reply client, `RpcClient`, against services and
//! misbehaving servers on loopback. The service's own tests are in
//! `rpc_service.rs`.

mod rpc_support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use protoloop::CloseReason;
use protoloop::codec::{CodecError, FrameCodec, Framed, MessageHandler, MessageSender};
use protoloop::proto::adder::{AddReply, AddRequest};
use protoloop::proto::bank::{GetBalance, Response};
use protoloop::rpc::correlator::CorrelationError;
use protoloop::rpc::{Backoff, RpcClient, RpcError, RpcOptions, Service};
use rpc_support::*;

#[test]
fn ten_thousand_pipelined_calls_answered_in_order() {
    run(|h| async move {
        let adder = adder();
        let server = serve(&h, move || adder.protocol());
        for cap in [protoloop::rpc::DEFAULT_MAX_IN_FLIGHT, 7] {
            let opts = RpcOptions::new().max_in_flight(cap);
            let client = AdderClient::connect(&h, addr(&server), opts).await.unwrap();
            let calls: Vec<_> = (0..10_000).map(|i| client.call(add(i, 1))).collect();
            assert!(client.in_flight() <= cap);
            for (i, call) in calls.into_iter().enumerate() {
                assert_eq!(call.await.unwrap().sum, i as i64 + 1);
            }
            assert_eq!(client.in_flight(), 0);
            client.close();
        }
        server.close();
    });
}

#[test]
fn deadline_expiry_and_the_late_reply_is_thrown_away() {
    run(|h| async move {
        let gated = GatedAdder::new(&h, 3);
        let svc = gated.service();
        let server = serve(&h, move || svc.protocol());
        let told = Rc::new(RefCell::new(Vec::new()));
        let t = told.clone();
        h.set_exception_handler(move |ctx| t.borrow_mut().push(ctx.message.clone()));
        let client = AdderClient::connect(&h, addr(&server), RpcOptions::new())
            .await
            .unwrap();
        let late = client.call_with_timeout(add(0, 10), Duration::from_millis(30));
        let next = client.call(add(1, 20));
        let err = late.await.unwrap_err();
        assert!(
            matches!(err, RpcError::Timeout { after } if after == Duration::from_millis(30)),
            "{err:?}"
        );
        assert_eq!(
            (client.in_flight(), client.abandoned()),
            (1, 1),
            "the timed-out call is no longer in flight, but its reply is still due"
        );
        // Now the server answers both, in order: the first reply must be
        // consumed, not handed to `next`.
        gated.gates.open(0);
        gated.gates.open(1);
        assert_eq!(next.await.unwrap().sum, 21);
        assert_eq!((client.in_flight(), client.abandoned()), (0, 0));
        assert_eq!(told.borrow().len(), 1, "{:?}", told.borrow());
        assert!(told.borrow()[0].contains("dropped a reply for call #0"));
        h.reset_exception_handler();
        // Options' default deadline applies to plain `call`.
        let client2 = AdderClient::connect(
            &h,
            addr(&server),
            RpcOptions::new().call_timeout(Duration::from_millis(20)),
        )
        .await
        .unwrap();
        assert!(matches!(
            client2.call(add(2, 0)).await,
            Err(RpcError::Timeout { .. })
        ));
        client.close();
        client2.close();
        server.close();
    });
}

/// Takes requests, never answers, and resets the connection after `n`.
struct ResetAfter(usize, Option<MessageSender<AddReply>>);

impl MessageHandler for ResetAfter {
    type In = AddRequest;
    type Out = AddReply;
    fn connection_made(&mut self, s: MessageSender<AddReply>) {
        self.1 = Some(s);
    }
    fn message_received(&mut self, _: AddRequest) {
        self.0 -= 1;
        if self.0 == 0 {
            self.1.as_ref().unwrap().abort();
        }
    }
}

#[test]
fn connection_loss_fails_every_pending_call_with_its_reason() {
    run(|h| async move {
        let server = serve(&h, || Framed::new(ResetAfter(5, None)));
        let opts = RpcOptions::new().max_in_flight(5);
        let client = AdderClient::connect(&h, addr(&server), opts).await.unwrap();
        // 5 in flight, 3 waiting for room.
        let calls: Vec<_> = (0..8).map(|i| client.call(add(i, 0))).collect();
        assert_eq!(client.queued(), 3);
        for call in calls {
            let err = call.await.unwrap_err();
            assert!(
                matches!(err, RpcError::ConnectionLost(CloseReason::PeerReset(_))),
                "{err:?}"
            );
        }
        assert!(!client.is_connected());
        // Later calls fail at once with the same reason.
        assert!(matches!(
            client.call(add(0, 0)).await,
            Err(RpcError::ConnectionLost(CloseReason::PeerReset(_)))
        ));
        server.close();
    });
}

/// Answers every request with bytes that are not an `AddReply`.
struct Garbage(Option<MessageSender<AddReply>>);

impl MessageHandler for Garbage {
    type In = AddRequest;
    type Out = AddReply;
    fn connection_made(&mut self, s: MessageSender<AddReply>) {
        self.0 = Some(s);
    }
    fn message_received(&mut self, _: AddRequest) {
        let _ = self
            .0
            .as_ref()
            .unwrap()
            .transport()
            .write(&[0, 2, 0x0a, 0xff]);
    }
}

#[test]
fn undecodable_reply_fails_pending_calls_with_the_codec_error() {
    run(|h| async move {
        let server = serve(&h, || Framed::new(Garbage(None)));
        let client = AdderClient::connect(&h, addr(&server), RpcOptions::new())
            .await
            .unwrap();
        let a = client.call(add(1, 1));
        let b = client.call(add(2, 2));
        for call in [a, b] {
            match call.await {
                Err(RpcError::ConnectionLost(CloseReason::Protocol(e))) => {
                    let e = e.downcast_ref::<CodecError>().expect("a codec error");
                    assert!(matches!(e, CodecError::Decode { length: 2, .. }), "{e:?}");
                }
                other => panic!("expected a protocol error, got {other:?}"),
            }
        }
        server.close();
    });
}

/// Replies twice to each request.
struct Twice(Option<MessageSender<AddReply>>);

impl MessageHandler for Twice {
    type In = AddRequest;
    type Out = AddReply;
    fn connection_made(&mut self, s: MessageSender<AddReply>) {
        self.0 = Some(s);
    }
    fn message_received(&mut self, _: AddRequest) {
        let s = self.0.as_ref().unwrap();
        s.send(&AddReply { sum: 1 }).unwrap();
        s.send(&AddReply { sum: 2 }).unwrap();
    }
}

#[test]
fn unexpected_reply_closes_with_a_correlation_error() {
    run(|h| async move {
        let server = serve(&h, || Framed::new(Twice(None)));
        let client = AdderClient::connect(&h, addr(&server), RpcOptions::new())
            .await
            .unwrap();
        assert_eq!(client.call(add(0, 0)).await.unwrap().sum, 1);
        until(&h, || !client.is_connected()).await;
        match client.call(add(0, 0)).await {
            Err(RpcError::ConnectionLost(CloseReason::Protocol(e))) => assert_eq!(
                e.downcast_ref::<CorrelationError>(),
                Some(&CorrelationError::NoCallInFlight)
            ),
            other => panic!("expected a correlation error, got {other:?}"),
        }
        server.close();
    });
}

#[test]
fn cancelled_calls_leave_later_replies_matched_correctly() {
    run(|h| async move {
        let gated = GatedAdder::new(&h, 10);
        let svc = gated.service();
        let server = serve(&h, move || svc.protocol());
        // A cap of 6: calls 6..10 wait unsent, so both kinds of
        // cancellation happen.
        let opts = RpcOptions::new().max_in_flight(6);
        let client = AdderClient::connect(&h, addr(&server), opts).await.unwrap();
        let mut calls: Vec<_> = (0..10).map(|i| Some(client.call(add(i, 100)))).collect();
        for i in [7, 8, 1, 4] {
            drop(calls[i].take()); // 7 and 8 were not sent; 1 and 4 were
        }
        // 1 and 4 gave their places to 6 and 9; their replies are still due.
        assert_eq!(client.in_flight(), 6);
        assert_eq!(client.abandoned(), 2);
        assert_eq!(client.queued(), 0);
        for i in 0..10 {
            gated.gates.open(i);
        }
        for (i, call) in calls.into_iter().enumerate() {
            if let Some(call) = call {
                assert_eq!(call.await.unwrap().sum, i as i64 + 100, "call {i}");
            }
        }
        assert_eq!(
            gated.seen.get(),
            8,
            "the unsent cancelled calls never went out"
        );
        client.close();
        server.close();
    });
}

#[test]
fn cap_limits_requests_on_the_wire() {
    run(|h| async move {
        let gated = GatedAdder::new(&h, 10);
        let svc = gated.service();
        let server = serve(&h, move || svc.protocol());
        let client = AdderClient::connect(&h, addr(&server), RpcOptions::new().max_in_flight(3))
            .await
            .unwrap();
        let calls: Vec<_> = (0..10).map(|i| client.call(add(i, 0))).collect();
        until(&h, || gated.seen.get() == 3).await;
        h.sleep(Duration::from_millis(20)).await;
        assert_eq!(gated.seen.get(), 3, "no more than the cap went out");
        for i in 0..10 {
            gated.gates.open(i);
        }
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap().sum, i as i64);
        }
        assert!(gated.most_waiting.get() <= 3);
        client.close();
        server.close();
    });
}

/// A bank that answers a batch of `n` requests in reverse order.
struct ReverseBank {
    n: usize,
    held: Vec<GetBalance>,
    sender: Option<MessageSender<Response>>,
}

impl MessageHandler for ReverseBank {
    type In = GetBalance;
    type Out = Response;
    fn connection_made(&mut self, s: MessageSender<Response>) {
        self.sender = Some(s);
    }
    fn message_received(&mut self, q: GetBalance) {
        self.held.push(q);
        if self.held.len() == self.n {
            for q in self.held.drain(..).rev() {
                let balance = q.customer_id.len() as f32;
                let r = Response {
                    customer_id: q.customer_id,
                    balance,
                };
                self.sender.as_ref().unwrap().send(&r).unwrap();
            }
        }
    }
}

#[test]
fn by_key_correlation_matches_replies_in_any_order() {
    run(|h| async move {
        let server = serve(&h, || {
            Framed::new(ReverseBank {
                n: 6,
                held: Vec::new(),
                sender: None,
            })
        });
        let opts = RpcOptions::<GetBalance, Response>::new()
            .by_key(|q| q.customer_id.clone(), |r| r.customer_id.clone());
        let bank = RpcClient::connect(&h, addr(&server), opts).await.unwrap();
        let names = ["a", "bb", "ccc", "a", "dddd", "bb"];
        let mut calls: Vec<_> = names
            .iter()
            .map(|n| {
                Some(bank.call(GetBalance {
                    customer_id: n.to_string(),
                }))
            })
            .collect();
        drop(calls[0].take()); // the first "a": its reply must not go to the second
        for (i, call) in calls.into_iter().enumerate() {
            if let Some(call) = call {
                let r = call.await.unwrap();
                assert_eq!(r.customer_id, names[i]);
                assert_eq!(r.balance, names[i].len() as f32);
            }
        }
        bank.close();
        server.close();
    });
}

#[test]
fn ids_let_the_service_answer_out_of_order() {
    run(|h| async move {
        let gated = GatedAdder::new(&h, 8);
        let svc = gated.service().with_ids();
        let server = serve(&h, move || svc.protocol());
        let client = AdderClient::connect(&h, addr(&server), RpcOptions::new().with_ids())
            .await
            .unwrap();
        let calls: Vec<_> = (0..8).map(|i| client.call(add(i, 1000))).collect();
        until(&h, || gated.seen.get() == 8).await;
        let done = Rc::new(RefCell::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, call) in calls.into_iter().enumerate() {
            let done = done.clone();
            tasks.push(h.spawn(async move {
                let sum = call.await.unwrap().sum;
                done.borrow_mut().push(i);
                assert_eq!(sum, i as i64 + 1000);
            }));
        }
        // Answer 7 first, then 6 ...: with ids each goes straight back.
        for i in (0..8).rev() {
            gated.gates.open(i);
            until(&h, || done.borrow().contains(&i)).await;
        }
        assert_eq!(*done.borrow(), vec![7, 6, 5, 4, 3, 2, 1, 0]);
        for t in tasks {
            t.await.unwrap();
        }
        client.close();
        server.close();
    });
}

#[test]
fn oversize_request_fails_and_nothing_is_sent() {
    run(|h| async move {
        let bank = Service::new(|q: GetBalance| Response {
            customer_id: q.customer_id,
            balance: 1.0,
        });
        let server = serve(&h, move || bank.protocol());
        let opts = RpcOptions::<GetBalance, Response>::new()
            .framing(FrameCodec::builder().max_frame_length(20).build());
        let client = RpcClient::connect(&h, addr(&server), opts).await.unwrap();
        let big = GetBalance {
            customer_id: "x".repeat(100),
        };
        match client.call(big).await {
            Err(RpcError::Codec(CodecError::FrameTooLarge {
                length: 102,
                max: 20,
            })) => {}
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        assert_eq!(client.in_flight() + client.queued(), 0);
        let ok = client
            .call(GetBalance {
                customer_id: "Jane Doe".into(),
            })
            .await
            .unwrap();
        assert_eq!(ok.customer_id, "Jane Doe");
        client.close();
        server.close();
    });
}

#[test]
fn close_fails_pending_calls_and_refuses_new_ones() {
    run(|h| async move {
        let gated = GatedAdder::new(&h, 2);
        let svc = gated.service();
        let server = serve(&h, move || svc.protocol());
        let client = AdderClient::connect(&h, addr(&server), RpcOptions::new())
            .await
            .unwrap();
        let pending = client.call(add(0, 0));
        client.close();
        assert!(client.is_closed());
        assert!(matches!(
            client.call(add(1, 0)).await,
            Err(RpcError::Closed)
        ));
        assert!(matches!(
            pending.await,
            Err(RpcError::ConnectionLost(CloseReason::LocalClose))
        ));
        server.close();
    });
}

#[test]
fn dropping_the_last_client_closes_the_connection() {
    run(|h| async move {
        let adder = adder();
        let server = serve(&h, move || adder.protocol());
        let client = AdderClient::connect(&h, addr(&server), RpcOptions::new())
            .await
            .unwrap();
        assert_eq!(client.call(add(1, 2)).await.unwrap().sum, 3);
        until(&h, || server.connection_count() == 1).await;
        drop(client);
        until(&h, || server.connection_count() == 0).await;
        server.close();
    });
}

#[test]
fn reconnects_with_backoff_and_sends_what_waited() {
    run(|h| async move {
        let adder = adder();
        let server = serve(&h, move || adder.protocol());
        let opts =
            RpcOptions::new().reconnect(Backoff::default().initial(Duration::from_millis(10)));
        let client = AdderClient::connect(&h, addr(&server), opts).await.unwrap();
        assert_eq!(client.call(add(1, 1)).await.unwrap().sum, 2);
        until(&h, || server.connection_count() == 1).await;
        server.abort_clients();
        until(&h, || !client.is_connected()).await;
        // Made while reconnecting: waits, then goes out on the new
        // connection.
        let waiting = client.call(add(2, 2));
        assert_eq!(waiting.await.unwrap().sum, 4);
        assert!(client.is_connected());
        client.close();
        server.close();
    });
}

#[test]
fn reconnect_gives_up_after_its_last_attempt() {
    run(|h| async move {
        let adder = adder();
        let server = serve(&h, move || adder.protocol());
        let backoff = Backoff::default()
            .initial(Duration::from_millis(5))
            .max_attempts(2);
        let client = AdderClient::connect(&h, addr(&server), RpcOptions::new().reconnect(backoff))
            .await
            .unwrap();
        assert_eq!(client.call(add(1, 1)).await.unwrap().sum, 2);
        until(&h, || server.connection_count() == 1).await;
        server.close(); // nobody listens any more
        server.abort_clients();
        until(&h, || !client.is_connected()).await;
        let waiting = client.call(add(2, 2));
        match waiting.await {
            Err(RpcError::Connect(e)) => {
                assert_eq!(e.io_kind(), Some(std::io::ErrorKind::ConnectionRefused))
            }
            other => panic!("expected a connect error, got {other:?}"),
        }
        assert!(matches!(
            client.call(add(3, 3)).await,
            Err(RpcError::Connect(_))
        ));
    });
}

#[test]
fn first_connect_failure_is_an_error() {
    run(|h| async move {
        let server = serve(&h, || Framed::new(ResetAfter(1, None)));
        let a = addr(&server);
        server.close();
        let r = RpcClient::<AddRequest, AddReply>::connect(&h, a, RpcOptions::new()).await;
        assert!(matches!(r, Err(RpcError::Connect(_))));
    });
}

/// Pauses reading at once; resumes when the test says.
struct Stalled(
    Rc<RefCell<Option<MessageSender<AddReply>>>>,
    Rc<Cell<usize>>,
);

impl MessageHandler for Stalled {
    type In = GetBalance;
    type Out = AddReply;
    fn connection_made(&mut self, s: MessageSender<AddReply>) {
        s.pause_reading();
        *self.0.borrow_mut() = Some(s);
    }
    fn message_received(&mut self, _: GetBalance) {
        self.1.set(self.1.get() + 1);
    }
}

#[test]
fn calls_wait_while_the_transport_is_paused_for_writing() {
    run(|h| async move {
        let slot = Rc::new(RefCell::new(None));
        let seen = Rc::new(Cell::new(0));
        let (s, n) = (slot.clone(), seen.clone());
        let server = serve(&h, move || Framed::new(Stalled(s.clone(), n.clone())));
        let client =
            RpcClient::<GetBalance, Response>::connect(&h, addr(&server), RpcOptions::new())
                .await
                .unwrap();
        let t = client.transport().unwrap();
        t.set_write_buffer_limits(64 * 1024, 16 * 1024);
        let big = "x".repeat(60_000);
        let calls: Vec<_> = (0..400)
            .map(|_| {
                client.call(GetBalance {
                    customer_id: big.clone(),
                })
            })
            .collect();
        // The peer reads nothing: the kernel's buffers fill, ours reaches
        // the high-water mark, and the rest of the calls wait unsent.
        // (Requests leave at the end of each loop iteration, so filling
        // the kernel's buffers takes a few.)
        until(&h, || t.get_write_buffer_size() > 64 * 1024).await;
        assert!(client.queued() > 0, "some calls must wait");
        assert!(t.get_write_buffer_size() <= 64 * 1024 + 60_010);
        let queued = client.queued();
        h.sleep(Duration::from_millis(20)).await;
        assert_eq!(client.queued(), queued, "nothing sent while paused");
        // Let the server read: everything goes out.
        let sender = slot.borrow().clone().unwrap();
        sender.resume_reading();
        until(&h, || seen.get() == 400).await;
        assert_eq!(client.queued(), 0);
        drop(calls);
        client.close();
        server.close();
    });
}

#[test]
fn every_framing_and_correlation_works_end_to_end() {
    use protoloop::codec::LengthPrefix;
    run(|h| async move {
        for prefix in [
            LengthPrefix::U16Be,
            LengthPrefix::U32Be,
            LengthPrefix::Varint,
        ] {
            for ids in [false, true] {
                let framing = FrameCodec::builder().length_prefix(prefix).build();
                let mut svc = adder().framing(framing.clone());
                let mut opts = RpcOptions::new().framing(framing);
                if ids {
                    svc = svc.with_ids();
                    opts = opts.with_ids();
                }
                let server = serve(&h, move || svc.protocol());
                let client = AdderClient::connect(&h, addr(&server), opts).await.unwrap();
                let calls: Vec<_> = (0..100).map(|i| client.call(add(i, 4))).collect();
                for (i, call) in calls.into_iter().enumerate() {
                    assert_eq!(
                        call.await.unwrap().sum,
                        i as i64 + 4,
                        "{prefix:?} ids={ids}"
                    );
                }
                client.close();
                server.close();
            }
        }
    });
}

/// The requests in `wire`, a run of 2-byte-length frames.
fn requests_in(mut wire: &[u8]) -> Vec<AddRequest> {
    use prost::Message;
    let mut out = Vec::new();
    while wire.len() >= 2 {
        let len = u16::from_be_bytes([wire[0], wire[1]]) as usize;
        out.push(AddRequest::decode(&wire[2..2 + len]).unwrap());
        wire = &wire[2 + len..];
    }
    assert!(wire.is_empty(), "a partial request frame");
    out
}

#[test]
fn calls_made_in_one_iteration_leave_in_one_write() {
    use protoloop::Protocol;
    use protoloop::codec::MessageCodec;
    use protoloop::testing::{Call as Op, RecordingTransport};

    run(|h| async move {
        let rec = RecordingTransport::new();
        type Shared = Rc<RefCell<dyn Protocol>>;
        let proto: Rc<RefCell<Option<Shared>>> = Rc::default();
        let (r, p) = (rec.clone(), proto.clone());
        let client = AdderClient::connect_with(&h, RpcOptions::new(), move |rpc| {
            let t = r.transport();
            let rpc: Shared = Rc::new(RefCell::new(rpc));
            t.set_protocol_dyn(rpc.clone());
            rpc.borrow_mut().connection_made(t.clone());
            *p.borrow_mut() = Some(rpc);
            async move { Ok(t) }
        })
        .await
        .unwrap();
        // Each write the client made, as the requests it carried.
        let writes = || -> Vec<Vec<AddRequest>> {
            rec.calls()
                .iter()
                .filter_map(|c| match c {
                    Op::Write(bytes) => Some(requests_in(bytes)),
                    _ => None,
                })
                .collect()
        };
        // 32 tasks, each calling in a loop as an application would.
        let done = Rc::new(Cell::new(0));
        for i in 0..32 {
            let (client, done) = (client.clone(), done.clone());
            h.spawn(async move {
                for round in 0..3 {
                    let reply = client.call(add(i, round * 100)).await.unwrap();
                    assert_eq!(reply.sum, i64::from(i + round * 100));
                }
                done.set(done.get() + 1);
            });
        }
        let replies = MessageCodec::<(), AddReply>::new();
        for round in 0..3 {
            until(&h, || writes().len() == round + 1).await;
            // All 32 requests of the round went out in one write...
            let sent = writes().pop().unwrap();
            assert_eq!(sent.len(), 32, "round {round}");
            assert_eq!(client.in_flight(), 32);
            // ...and are answered in one read, which wakes all 32 tasks.
            let mut wire = Vec::new();
            for r in &sent {
                let sum = i64::from(r.a) + i64::from(r.b);
                wire.extend_from_slice(&replies.encode_frame(&AddReply { sum }).unwrap());
            }
            let rpc = proto.borrow().clone().unwrap();
            rpc.borrow_mut().data_received(&wire);
        }
        until(&h, || done.get() == 32).await;
        assert_eq!(writes().len(), 3, "one write per round, no more");
        client.close();
    });
}
