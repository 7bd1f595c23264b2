//! The framing adapter, `Framed`, on an in-memory transport: one byte at
//! a time, every split point, pause and resume, EOF, and bad input. The
//! same adapter on real sockets is in `framed_tcp.rs`.

mod framed_support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use framed_support::*;
use protoloop::codec::{
    CodecError, FrameCodec, Framed, MessageCodec, MessageHandler, MessageSender,
};
use protoloop::proto::bank::GetBalance;
use protoloop::transport::TransportImpl;
use protoloop::{CloseReason, Protocol, Transport};

#[test]
fn adapter_one_byte_at_a_time_and_every_split() {
    for framing in codecs() {
        let ids = names(5);
        let wire: Vec<u8> = ids
            .iter()
            .flat_map(|id| {
                MessageCodec::<(), GetBalance>::with_framing(framing.clone())
                    .encode_frame(&gb(id.clone()))
                    .unwrap()
                    .to_vec()
            })
            .collect();
        let rig = Rig::with_framing(framing.clone(), |_| {});
        for b in &wire {
            rig.feed(&[*b]);
        }
        assert_eq!(rig.got(), ids);
        for split in 0..=wire.len() {
            let rig = Rig::with_framing(framing.clone(), |_| {});
            rig.feed(&wire[..split]);
            rig.feed(&wire[split..]);
            assert_eq!(rig.got(), ids, "split at {split}");
            assert_eq!(rig.proto.borrow().buffered(), 0);
        }
    }
}

#[test]
fn adapter_delivers_a_thousand_frames_from_one_read() {
    let rig = Rig::new(|_| {});
    let ids = names(1000);
    rig.feed(&wire_of(ids.clone()));
    assert_eq!(rig.got(), ids);
}

#[test]
fn pause_inside_message_received_holds_buffered_frames_until_resume() {
    in_loop(async |h| {
        let rig = Rig::new(|r| r.pause_at = Some(2));
        let ids = names(5);
        rig.feed(&wire_of(ids.clone()));
        assert_eq!(rig.got(), ids[..2]);
        assert!(rig.fake.paused.get(), "the socket is paused too");
        assert!(!rig.sender().is_reading());
        tick(&h).await;
        assert_eq!(rig.got(), ids[..2], "nothing delivered while paused");
        // Resume with no new bytes arriving: the buffered frames come.
        rig.log.got.borrow_mut().clear();
        rig.proto.borrow_mut().handler_mut().pause_at = None;
        rig.sender().transport().resume_reading();
        assert!(
            rig.got().is_empty(),
            "delivery is scheduled, not re-entrant"
        );
        tick(&h).await;
        assert_eq!(rig.got(), ids[2..]);
        assert!(!rig.fake.paused.get());
    });
}

#[test]
fn pause_in_connection_made_delivers_nothing_until_resume() {
    in_loop(async |h| {
        let rig = Rig::new(|r| r.pause_on_connect = true);
        assert!(rig.fake.paused.get());
        let ids = names(3);
        // A transport would not read now, but bytes it already had may
        // still arrive: they must wait too.
        rig.feed(&wire_of(ids.clone()));
        assert!(rig.got().is_empty());
        rig.sender().resume_reading();
        tick(&h).await;
        assert_eq!(rig.got(), ids);
    });
}

#[test]
fn eof_waits_for_frames_held_by_a_pause() {
    in_loop(async |h| {
        let rig = Rig::new(|r| r.pause_at = Some(1));
        let ids = names(3);
        rig.feed(&wire_of(ids.clone()));
        assert!(rig.eof(), "keep the connection while frames wait");
        assert_eq!(rig.log.eofs.get(), 0);
        rig.sender().resume_reading();
        tick(&h).await;
        assert_eq!(rig.got(), ids);
        assert_eq!(rig.log.eofs.get(), 1);
        // The handler said `false`: the adapter closed, as the transport
        // would have, and reports the peer's EOF.
        assert!(rig.fake.closing.get());
        rig.lose(CloseReason::LocalClose);
        assert!(matches!(*rig.log.lost.borrow(), Some(CloseReason::PeerEof)));
    });
}

#[test]
fn eof_deferred_by_a_pause_on_the_last_frame_comes_after_resume() {
    in_loop(async |h| {
        // Paused from the start; the second frame pauses again.
        let rig = Rig::new(|r| {
            r.pause_on_connect = true;
            r.pause_at = Some(2);
        });
        rig.feed(&wire_of(names(2)));
        rig.sender().resume_reading();
        // The transport reads the EOF before the resume's delivery runs:
        // both frames go out from eof_received, and the last one pauses,
        // leaving no bytes buffered, only the EOF.
        assert!(rig.eof(), "keep the connection while the EOF waits");
        assert_eq!(rig.got(), names(2));
        tick(&h).await;
        assert_eq!(rig.log.eofs.get(), 0, "paused: the EOF waits");
        rig.sender().resume_reading();
        tick(&h).await;
        assert_eq!(rig.log.eofs.get(), 1, "the EOF is not lost");
        assert!(rig.fake.closing.get());
    });
}

#[test]
fn partial_frame_behind_a_pause_is_reported_after_resume() {
    in_loop(async |h| {
        let rig = Rig::new(|r| r.pause_at = Some(1));
        let mut wire = wire_of(names(2));
        wire.extend_from_slice(&unhex("0005 0a03")); // 4 of 7 bytes
        rig.feed(&wire);
        assert!(rig.eof());
        rig.sender().resume_reading();
        tick(&h).await;
        assert_eq!(rig.got(), names(2), "whole frames first");
        assert_eq!(rig.log.eofs.get(), 0, "not a clean EOF");
        assert!(rig.fake.closing.get());
        rig.lose(CloseReason::LocalClose);
        let err = protocol_error(&rig.log.lost.borrow());
        assert!(matches!(
            err,
            CodecError::PartialFrame {
                buffered: 4,
                expected: Some(7)
            }
        ));
    });
}

#[test]
fn handler_panic_while_delivering_after_resume_aborts_with_the_panic() {
    in_loop(async |h| {
        h.set_exception_handler(|_| {});
        let rig = Rig::new(|r| {
            r.pause_at = Some(1);
            r.panic_on = Some("customer 2".into());
        });
        rig.feed(&wire_of(names(4)));
        rig.sender().resume_reading();
        tick(&h).await;
        assert_eq!(rig.got(), names(2));
        assert!(rig.fake.aborted.get());
        rig.lose(CloseReason::LocalAbort);
        match &*rig.log.lost.borrow() {
            Some(CloseReason::Panic(msg)) => assert!(msg.contains("customer 2"), "{msg}"),
            other => panic!("expected CloseReason::Panic, got {other:?}"),
        }
    });
}

#[test]
fn eof_after_whole_frames_goes_to_the_handler() {
    let rig = Rig::new(|_| {});
    rig.feed(&wire_of(names(2)));
    assert!(!rig.eof());
    assert_eq!(rig.log.eofs.get(), 1);
}

#[test]
fn partial_frame_at_eof_closes_with_an_error() {
    let rig = Rig::new(|_| {});
    let mut wire = wire_of(names(2));
    wire.extend_from_slice(&unhex("000a 0a08")); // 4 of 12 bytes
    rig.feed(&wire);
    assert_eq!(rig.got(), names(2));
    rig.eof();
    assert_eq!(rig.log.eofs.get(), 0, "not a clean EOF");
    assert!(rig.fake.closing.get());
    rig.lose(CloseReason::LocalClose);
    let err = protocol_error(&rig.log.lost.borrow());
    assert!(matches!(
        err,
        CodecError::PartialFrame {
            buffered: 4,
            expected: Some(12)
        }
    ));
}

#[test]
fn oversize_length_closes_after_earlier_frames() {
    let rig = Rig::with_framing(FrameCodec::builder().max_frame_length(100).build(), |_| {});
    let mut wire = wire_of(names(3));
    wire.extend_from_slice(&[0x01, 0x00]); // a 256-byte frame announced
    wire.extend_from_slice(&wire_of(names(1))); // never delivered
    rig.feed(&wire);
    assert_eq!(rig.got(), names(3));
    assert!(rig.fake.closing.get());
    assert!(!rig.fake.aborted.get(), "closed, flushing what was written");
    rig.feed(&wire_of(names(1)));
    assert_eq!(rig.got().len(), 3, "nothing after the bad frame");
    rig.lose(CloseReason::LocalClose);
    let err = protocol_error(&rig.log.lost.borrow());
    assert!(matches!(
        err,
        CodecError::FrameTooLarge {
            length: 256,
            max: 100
        }
    ));
    let text = CloseReason::protocol(err).to_string();
    assert!(text.contains("256") && text.contains("100"), "{text}");
}

#[test]
fn undecodable_frame_closes_with_a_decode_error() {
    let rig = Rig::new(|_| {});
    let mut wire = wire_of(names(1));
    wire.extend_from_slice(&unhex("0002 0aff")); // truncated length-delimited field
    rig.feed(&wire);
    assert_eq!(rig.got(), names(1));
    rig.lose(CloseReason::LocalClose);
    let err = protocol_error(&rig.log.lost.borrow());
    assert!(
        matches!(err, CodecError::Decode { length: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn oversize_send_fails_and_writes_nothing() {
    let rig = Rig::with_framing(FrameCodec::builder().max_frame_length(16).build(), |_| {});
    let s = rig.sender();
    s.send(&gb("short")).unwrap();
    let before = rig.fake.written.borrow().len();
    let err = s.send(&gb("a customer id far too long")).unwrap_err();
    assert!(matches!(
        err,
        CodecError::FrameTooLarge {
            length: 28,
            max: 16
        }
    ));
    assert_eq!(rig.fake.written.borrow().len(), before);
    s.close();
    assert!(matches!(
        s.send(&gb("x")),
        Err(CodecError::Transport(protoloop::Error::Closed))
    ));
}

#[test]
fn close_from_message_received_stops_delivery() {
    struct Closer(Rc<Cell<u32>>, Option<MessageSender<GetBalance>>);
    impl MessageHandler for Closer {
        type In = GetBalance;
        type Out = GetBalance;
        fn connection_made(&mut self, s: MessageSender<GetBalance>) {
            self.1 = Some(s);
        }
        fn message_received(&mut self, _: GetBalance) {
            self.0.set(self.0.get() + 1);
            self.1.as_ref().unwrap().close();
        }
    }
    let n = Rc::new(Cell::new(0));
    let proto = Rc::new(RefCell::new(Framed::new(Closer(n.clone(), None))));
    let fake = Rc::new(FakeTransport::default());
    fake.set_protocol(proto.clone());
    proto
        .borrow_mut()
        .connection_made(Transport::new(fake.clone()));
    proto.borrow_mut().data_received(&wire_of(names(4)));
    assert_eq!(n.get(), 1);
}
