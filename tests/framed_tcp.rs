//! The framing adapter, `Framed`, on real loopback sockets.

mod framed_support;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use framed_support::*;
use protoloop::codec::{CodecError, FrameCodec, Framed, MessageHandler, MessageSender};
use protoloop::proto::bank::GetBalance;
use protoloop::{ConnectOptions, EventLoop, ServerOptions};

#[test]
fn echo_over_loopback_in_many_reads_and_one() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let server = h
        .create_server(
            || {
                let log = Rc::new(Log::default());
                let mut r = Recorder::new(&log);
                r.echo = true;
                Framed::new(r)
            },
            "127.0.0.1:0",
            ServerOptions::default(),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    let log = Rc::new(Log::default());
    let l2 = log.clone();
    let ids = names(2000);
    let ids2 = ids.clone();
    lp.run_until_complete(async move {
        let (t, p) = h
            .create_connection(
                move || Framed::new(Recorder::new(&l2)),
                addr,
                ConnectOptions::default(),
            )
            .await
            .unwrap();
        // Half as single writes (many reads on the far side), half as one
        // write of all the frames at once.
        let sender = p.with(|f| f.handler().sender.clone().unwrap());
        for id in &ids2[..1000] {
            sender.send(&gb(id.clone())).unwrap();
        }
        t.write(&wire_of(ids2[1000..].iter().cloned())).unwrap();
        for _ in 0..1000 {
            if log.got.borrow().len() >= ids2.len() {
                break;
            }
            h.sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(*log.got.borrow(), ids2);
        t.close();
        server.close();
    })
    .unwrap();
    let _ = ids;
}

#[test]
fn peer_sending_garbage_gets_closed_with_protocol_error() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let server_log = Rc::new(Log::default());
    let sl = server_log.clone();
    let server = h
        .create_server(
            move || {
                Framed::with_framing(
                    Recorder::new(&sl),
                    FrameCodec::builder().max_frame_length(50).build(),
                )
            },
            "127.0.0.1:0",
            ServerOptions::default(),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    let sl = server_log.clone();
    lp.run_until_complete(async move {
        let (t, _p) = h
            .create_connection(
                || Framed::new(Recorder::new(&Rc::new(Log::default()))),
                addr,
                ConnectOptions::default(),
            )
            .await
            .unwrap();
        let mut wire = wire_of(names(2));
        wire.extend_from_slice(&[0xff, 0xff, 0, 0, 0]);
        t.write(&wire).unwrap();
        for _ in 0..1000 {
            if sl.lost.borrow().is_some() {
                break;
            }
            h.sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(*sl.got.borrow(), names(2));
        let err = protocol_error(&sl.lost.borrow());
        assert!(matches!(
            err,
            CodecError::FrameTooLarge {
                length: 65535,
                max: 50
            }
        ));
        t.close();
        server.close();
    })
    .unwrap();
}

/// Pauses after the first message; a task resumes it later.
#[test]
fn pause_and_resume_on_a_real_socket_with_no_new_bytes() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let log = Rc::new(Log::default());
    let senders: Rc<RefCell<Vec<MessageSender<GetBalance>>>> = Rc::default();
    let (l, ss) = (log.clone(), senders.clone());
    let server = h
        .create_server(
            move || {
                let mut r = Recorder::new(&l);
                r.pause_at = Some(1);
                Framed::new(Keep(r, ss.clone()))
            },
            "127.0.0.1:0",
            ServerOptions::default(),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    lp.run_until_complete(async move {
        let (t, _p) = h
            .create_connection(
                || Framed::new(Recorder::new(&Rc::new(Log::default()))),
                addr,
                ConnectOptions::default(),
            )
            .await
            .unwrap();
        t.write(&wire_of(names(50))).unwrap();
        for _ in 0..1000 {
            if !log.got.borrow().is_empty() {
                break;
            }
            h.sleep(Duration::from_millis(2)).await;
        }
        h.sleep(Duration::from_millis(20)).await;
        assert_eq!(log.got.borrow().len(), 1, "paused after the first");
        // Every byte has arrived already: only resume can deliver the rest.
        let s = senders.borrow()[0].clone();
        s.transport().resume_reading();
        for _ in 0..1000 {
            if log.got.borrow().len() == 50 {
                break;
            }
            h.sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(*log.got.borrow(), names(50));
        t.close();
        server.close();
    })
    .unwrap();
}

/// A recorder that also hands its sender to the test.
struct Keep(Recorder, Rc<RefCell<Vec<MessageSender<GetBalance>>>>);

impl MessageHandler for Keep {
    type In = GetBalance;
    type Out = GetBalance;
    fn connection_made(&mut self, s: MessageSender<GetBalance>) {
        self.1.borrow_mut().push(s.clone());
        self.0.connection_made(s);
    }
    fn message_received(&mut self, m: GetBalance) {
        self.0.message_received(m);
    }
}
