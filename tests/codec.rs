//! The framing layer: byte-exact demo encodings, the frame codec fed one
//! byte at a time and split at every point, and the `Framed` adapter on an
//! in-memory transport and on real loopback sockets.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use prost::Message;
use protoloop::codec::{
    CodecError, FrameCodec, Framed, LengthPrefix, MessageCodec, MessageHandler, MessageSender,
};
use protoloop::proto::bank::{GetBalance, Response};
use protoloop::proto::customer::{Reply, Request, RequestType};
use protoloop::transport::{SocketAddress, TransportImpl, TransportStats};
use protoloop::{
    CloseReason, ConnectOptions, EventLoop, Protocol, ServerOptions, Transport,
};
use tokio_util::codec::{Decoder, Encoder};

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn framed<M: Message>(m: &M) -> Vec<u8> {
    MessageCodec::<(), M>::new().encode_frame(m).unwrap().to_vec()
}

fn jane() -> String {
    "Jane Doe".to_string()
}

/// Encode to the demo's exact bytes, and decode them back.
fn check_vector<M: Message + Default + PartialEq + std::fmt::Debug>(m: M, hex: &str) {
    let wire = unhex(hex);
    assert_eq!(framed(&m), wire, "{m:?}");
    let mut codec = MessageCodec::<M>::new();
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(m));
    assert!(buf.is_empty());
}

#[test]
fn demo_messages_byte_exact() {
    let withdraw = Request {
        customer_id: jane(),
        request_type: RequestType::Withdraw as i32,
        amount: 100.0,
    };
    check_vector(withdraw, "0011 0a084a616e6520446f65 1002 1d0000c842");
    check_vector(
        GetBalance {
            customer_id: jane(),
        },
        "000a 0a084a616e6520446f65",
    );
    check_vector(
        Response {
            customer_id: jane(),
            balance: 100.0,
        },
        "000f 0a084a616e6520446f65 150000c842",
    );
    check_vector(
        Reply {
            success: true,
            balance: 0.0,
        },
        "0007 0801 1500000000",
    );
    check_vector(
        Reply {
            success: true,
            balance: 400.0,
        },
        "0007 0801 150000c843",
    );
    check_vector(
        Reply {
            success: false,
            balance: 0.0,
        },
        "0007 0800 1500000000",
    );
}

#[test]
fn required_defaults_stay_on_the_wire() {
    // proto2 `required`: an empty id and a zero balance are still encoded.
    let r = Response {
        customer_id: String::new(),
        balance: 0.0,
    };
    assert_eq!(framed(&r), unhex("0007 0a00 1500000000"));
    let deposit = Request {
        customer_id: String::new(),
        request_type: RequestType::Deposit as i32,
        amount: 0.0,
    };
    assert_eq!(framed(&deposit), unhex("0009 0a00 1001 1d00000000"));
}

fn codecs() -> Vec<FrameCodec> {
    [LengthPrefix::U16Be, LengthPrefix::U32Be, LengthPrefix::Varint]
        .into_iter()
        .map(|p| FrameCodec::builder().length_prefix(p).build())
        .collect()
}

/// Payloads of assorted sizes, including empty and ones needing a 2-byte
/// varint prefix.
fn payloads() -> Vec<Vec<u8>> {
    vec![
        vec![],
        b"a".to_vec(),
        (0..127u8).collect(),
        (0..=255u8).cycle().take(128).collect(),
        (0..=255u8).cycle().take(300).collect(),
        b"tail".to_vec(),
    ]
}

fn encode_all(codec: &mut FrameCodec, payloads: &[Vec<u8>]) -> BytesMut {
    let mut wire = BytesMut::new();
    for p in payloads {
        codec.encode(&p[..], &mut wire).unwrap();
    }
    wire
}

#[test]
fn frame_codec_one_byte_at_a_time() {
    for mut codec in codecs() {
        let payloads = payloads();
        let wire = encode_all(&mut codec, &payloads);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.extend_from_slice(&[*b]);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                got.push(f.to_vec());
            }
        }
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
        assert_eq!(got, payloads, "{:?}", codec.length_prefix());
    }
}

#[test]
fn frame_codec_split_at_every_point() {
    for mut codec in codecs() {
        let payloads = payloads();
        let wire = encode_all(&mut codec, &payloads);
        for split in 0..=wire.len() {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                buf.extend_from_slice(part);
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    got.push(f.to_vec());
                }
            }
            assert_eq!(got, payloads, "{:?} split {split}", codec.length_prefix());
        }
    }
}

#[test]
fn thousand_frames_in_one_buffer() {
    for mut codec in codecs() {
        let payloads: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut wire = encode_all(&mut codec, &payloads);
        let mut got = Vec::new();
        while let Some(f) = codec.decode(&mut wire).unwrap() {
            got.push(f.to_vec());
        }
        assert_eq!(got, payloads);
    }
}

#[test]
fn oversize_frames_are_refused_both_ways() {
    for prefix in [LengthPrefix::U16Be, LengthPrefix::U32Be, LengthPrefix::Varint] {
        let mut codec = FrameCodec::builder()
            .length_prefix(prefix)
            .max_frame_length(10)
            .build();
        let mut wire = BytesMut::new();
        let err = codec.encode(&[0u8; 11][..], &mut wire).unwrap_err();
        assert!(matches!(err, CodecError::FrameTooLarge { length: 11, max: 10 }));
        assert!(wire.is_empty(), "nothing written for {prefix:?}");

        // A good frame, then an oversize length: the good one comes out
        // first, then the error names the length and the limit.
        let mut big = FrameCodec::builder().length_prefix(prefix).build();
        let mut incoming = BytesMut::new();
        big.encode(&b"ok"[..], &mut incoming).unwrap();
        big.encode(&[1u8; 1000][..], &mut incoming).unwrap();
        assert_eq!(&codec.decode(&mut incoming).unwrap().unwrap()[..], b"ok");
        let err = codec.decode(&mut incoming).unwrap_err();
        assert!(
            matches!(err, CodecError::FrameTooLarge { length: 1000, max: 10 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("1000") && err.to_string().contains("10"));
    }
}

#[test]
fn undecodable_and_partial_input_is_an_error() {
    let mut codec = MessageCodec::<GetBalance>::new();
    // Field 1 says 8 bytes of string but the frame holds 2.
    let mut buf = BytesMut::from(&unhex("0004 0a08 4a61")[..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(err, CodecError::Decode { length: 4, .. }), "{err:?}");
    assert!(err.to_string().contains("GetBalance"), "{err}");

    let mut buf = BytesMut::from(&unhex("000a 0a084a61")[..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        CodecError::PartialFrame {
            buffered: 6,
            expected: Some(12)
        }
    ));
}

// ---------------------------------------------------------------------
// The adapter on an in-memory transport.

/// A transport that records writes and close calls; `connection_lost` is
/// delivered by the test (as the loop would) through `lose`.
#[derive(Default)]
struct FakeTransport {
    written: RefCell<Vec<u8>>,
    paused: Cell<bool>,
    closing: Cell<bool>,
    aborted: Cell<bool>,
    protocol: RefCell<Option<Rc<RefCell<dyn Protocol>>>>,
}

impl TransportImpl for FakeTransport {
    fn write(&self, data: &[u8]) -> protoloop::Result<()> {
        if self.closing.get() {
            return Err(protoloop::Error::Closed);
        }
        self.written.borrow_mut().extend_from_slice(data);
        Ok(())
    }
    fn write_eof(&self) -> protoloop::Result<()> {
        Ok(())
    }
    fn can_write_eof(&self) -> bool {
        true
    }
    fn close(&self) {
        self.closing.set(true);
    }
    fn close_with_deadline(&self, _: Duration) {
        self.closing.set(true);
    }
    fn abort(&self) {
        self.closing.set(true);
        self.aborted.set(true);
    }
    fn is_closing(&self) -> bool {
        self.closing.get()
    }
    fn pause_reading(&self) {
        self.paused.set(true);
    }
    fn resume_reading(&self) {
        self.paused.set(false);
    }
    fn is_reading(&self) -> bool {
        !self.paused.get() && !self.closing.get()
    }
    fn set_write_buffer_limits(&self, _: usize, _: usize) {}
    fn get_write_buffer_limits(&self) -> (usize, usize) {
        (65536, 16384)
    }
    fn get_write_buffer_size(&self) -> usize {
        0
    }
    fn peer_addr(&self) -> Option<SocketAddress> {
        None
    }
    fn local_addr(&self) -> Option<SocketAddress> {
        None
    }
    fn stats(&self) -> TransportStats {
        TransportStats::default()
    }
    fn set_protocol(&self, p: Rc<RefCell<dyn Protocol>>) {
        *self.protocol.borrow_mut() = Some(p);
    }
    fn get_protocol(&self) -> Option<Rc<RefCell<dyn Protocol>>> {
        self.protocol.borrow().clone()
    }
}

#[derive(Default)]
struct Log {
    got: RefCell<Vec<String>>,
    eofs: Cell<u32>,
    lost: RefCell<Option<CloseReason>>,
}

/// Records what it receives; pauses reading after the `pause_at`-th
/// message; echoes when `echo` is set.
struct Recorder {
    log: Rc<Log>,
    sender: Option<MessageSender<GetBalance>>,
    pause_at: Option<usize>,
    pause_on_connect: bool,
    echo: bool,
}

impl Recorder {
    fn new(log: &Rc<Log>) -> Self {
        Recorder {
            log: log.clone(),
            sender: None,
            pause_at: None,
            pause_on_connect: false,
            echo: false,
        }
    }
}

impl MessageHandler for Recorder {
    type In = GetBalance;
    type Out = GetBalance;
    fn connection_made(&mut self, sender: MessageSender<GetBalance>) {
        if self.pause_on_connect {
            sender.pause_reading();
        }
        self.sender = Some(sender);
    }
    fn message_received(&mut self, m: GetBalance) {
        if self.echo {
            self.sender.as_ref().unwrap().send(&m).unwrap();
        }
        self.log.got.borrow_mut().push(m.customer_id);
        if Some(self.log.got.borrow().len()) == self.pause_at {
            self.sender.as_ref().unwrap().pause_reading();
        }
    }
    fn eof_received(&mut self) -> bool {
        self.log.eofs.set(self.log.eofs.get() + 1);
        false
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        *self.log.lost.borrow_mut() = Some(reason);
    }
}

struct Rig {
    fake: Rc<FakeTransport>,
    proto: Rc<RefCell<Framed<Recorder>>>,
    log: Rc<Log>,
}

impl Rig {
    fn new(setup: impl FnOnce(&mut Recorder)) -> Rig {
        Rig::with_framing(FrameCodec::new(), setup)
    }

    fn with_framing(framing: FrameCodec, setup: impl FnOnce(&mut Recorder)) -> Rig {
        let log = Rc::new(Log::default());
        let mut rec = Recorder::new(&log);
        setup(&mut rec);
        let proto = Rc::new(RefCell::new(Framed::with_framing(rec, framing)));
        let fake = Rc::new(FakeTransport::default());
        fake.set_protocol(proto.clone());
        proto
            .borrow_mut()
            .connection_made(Transport::new(fake.clone()));
        Rig { fake, proto, log }
    }

    fn feed(&self, data: &[u8]) {
        self.proto.borrow_mut().data_received(data);
    }

    fn eof(&self) -> bool {
        self.proto.borrow_mut().eof_received()
    }

    /// What the loop does after the transport closed.
    fn lose(&self, reason: CloseReason) {
        self.proto.borrow_mut().connection_lost(reason);
    }

    fn got(&self) -> Vec<String> {
        self.log.got.borrow().clone()
    }

    fn sender(&self) -> MessageSender<GetBalance> {
        self.proto.borrow().handler().sender.clone().unwrap()
    }
}

fn gb(id: impl Into<String>) -> GetBalance {
    GetBalance {
        customer_id: id.into(),
    }
}

fn wire_of(ids: impl IntoIterator<Item = String>) -> Vec<u8> {
    ids.into_iter().flat_map(|id| framed(&gb(id))).collect()
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("customer {i}")).collect()
}

/// Run `f` inside a (virtual-clock) loop, so resume can schedule.
fn in_loop(f: impl AsyncFnOnce(protoloop::Handle) + 'static) {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    lp.run_until_complete(async move { f(h).await }).unwrap();
}

/// Let callbacks scheduled with `call_soon` run.
async fn tick(h: &protoloop::Handle) {
    h.sleep(Duration::from_millis(1)).await;
}

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
        assert!(rig.got().is_empty(), "delivery is scheduled, not re-entrant");
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
        assert!(matches!(
            *rig.log.lost.borrow(),
            Some(CloseReason::PeerEof)
        ));
    });
}

#[test]
fn eof_after_whole_frames_goes_to_the_handler() {
    let rig = Rig::new(|_| {});
    rig.feed(&wire_of(names(2)));
    assert!(!rig.eof());
    assert_eq!(rig.log.eofs.get(), 1);
}

fn protocol_error(reason: &Option<CloseReason>) -> CodecError {
    match reason {
        Some(CloseReason::Protocol(e)) => e
            .downcast_ref::<CodecError>()
            .expect("a CodecError")
            .clone(),
        other => panic!("expected CloseReason::Protocol, got {other:?}"),
    }
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
    assert!(matches!(err, CodecError::FrameTooLarge { length: 256, max: 100 }));
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
    assert!(matches!(err, CodecError::Decode { length: 2, .. }), "{err:?}");
}

#[test]
fn oversize_send_fails_and_writes_nothing() {
    let rig = Rig::with_framing(FrameCodec::builder().max_frame_length(16).build(), |_| {});
    let s = rig.sender();
    s.send(&gb("short")).unwrap();
    let before = rig.fake.written.borrow().len();
    let err = s.send(&gb("a customer id far too long")).unwrap_err();
    assert!(matches!(err, CodecError::FrameTooLarge { length: 28, max: 16 }));
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

// ---------------------------------------------------------------------
// Real sockets.

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
        assert!(matches!(err, CodecError::FrameTooLarge { length: 65535, max: 50 }));
        t.close();
        server.close();
    })
    .unwrap();
}
