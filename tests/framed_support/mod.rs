//! The in-memory rig for the framing adapter's tests (`framed.rs`,
//! `framed_tcp.rs`): a recording transport and a recording handler.

// Each test file uses its own subset.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use prost::Message;
use protoloop::codec::{
    CodecError, FrameCodec, Framed, LengthPrefix, MessageCodec, MessageHandler, MessageSender,
};
use protoloop::proto::bank::GetBalance;
use protoloop::transport::{SocketAddress, TransportImpl, TransportStats};
use protoloop::{CloseReason, EventLoop, Protocol, Transport};

pub fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub fn framed<M: Message>(m: &M) -> Vec<u8> {
    MessageCodec::<(), M>::new()
        .encode_frame(m)
        .unwrap()
        .to_vec()
}

pub fn codecs() -> Vec<FrameCodec> {
    [
        LengthPrefix::U16Be,
        LengthPrefix::U32Be,
        LengthPrefix::Varint,
    ]
    .into_iter()
    .map(|p| FrameCodec::builder().length_prefix(p).build())
    .collect()
}

// The adapter on an in-memory transport.

/// A transport that records writes and close calls; `connection_lost` is
/// delivered by the test (as the loop would) through `lose`.
#[derive(Default)]
pub struct FakeTransport {
    pub written: RefCell<Vec<u8>>,
    pub paused: Cell<bool>,
    pub closing: Cell<bool>,
    pub aborted: Cell<bool>,
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
pub struct Log {
    pub got: RefCell<Vec<String>>,
    pub eofs: Cell<u32>,
    pub lost: RefCell<Option<CloseReason>>,
}

/// Records what it receives; pauses reading after the `pause_at`-th
/// message; echoes when `echo` is set.
pub struct Recorder {
    pub log: Rc<Log>,
    pub sender: Option<MessageSender<GetBalance>>,
    pub pause_at: Option<usize>,
    pub pause_on_connect: bool,
    pub echo: bool,
    /// Panic on receiving this id.
    pub panic_on: Option<String>,
}

impl Recorder {
    pub fn new(log: &Rc<Log>) -> Self {
        Recorder {
            log: log.clone(),
            sender: None,
            pause_at: None,
            pause_on_connect: false,
            echo: false,
            panic_on: None,
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
        if self.panic_on.as_ref() == Some(&m.customer_id) {
            panic!("handler broke on {}", m.customer_id);
        }
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

pub struct Rig {
    pub fake: Rc<FakeTransport>,
    pub proto: Rc<RefCell<Framed<Recorder>>>,
    pub log: Rc<Log>,
}

impl Rig {
    pub fn new(setup: impl FnOnce(&mut Recorder)) -> Rig {
        Rig::with_framing(FrameCodec::new(), setup)
    }

    pub fn with_framing(framing: FrameCodec, setup: impl FnOnce(&mut Recorder)) -> Rig {
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

    pub fn feed(&self, data: &[u8]) {
        self.proto.borrow_mut().data_received(data);
    }

    pub fn eof(&self) -> bool {
        self.proto.borrow_mut().eof_received()
    }

    /// What the loop does after the transport closed.
    pub fn lose(&self, reason: CloseReason) {
        self.proto.borrow_mut().connection_lost(reason);
    }

    pub fn got(&self) -> Vec<String> {
        self.log.got.borrow().clone()
    }

    pub fn sender(&self) -> MessageSender<GetBalance> {
        self.proto.borrow().handler().sender.clone().unwrap()
    }
}

pub fn gb(id: impl Into<String>) -> GetBalance {
    GetBalance {
        customer_id: id.into(),
    }
}

pub fn wire_of(ids: impl IntoIterator<Item = String>) -> Vec<u8> {
    ids.into_iter().flat_map(|id| framed(&gb(id))).collect()
}

pub fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("customer {i}")).collect()
}

/// Run `f` inside a (virtual-clock) loop, so resume can schedule.
pub fn in_loop(f: impl AsyncFnOnce(protoloop::Handle) + 'static) {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    lp.run_until_complete(async move { f(h).await }).unwrap();
}

/// Let callbacks scheduled with `call_soon` run.
pub async fn tick(h: &protoloop::Handle) {
    h.sleep(Duration::from_millis(1)).await;
}

pub fn protocol_error(reason: &Option<CloseReason>) -> CodecError {
    match reason {
        Some(CloseReason::Protocol(e)) => e
            .downcast_ref::<CodecError>()
            .expect("a CodecError")
            .clone(),
        other => panic!("expected CloseReason::Protocol, got {other:?}"),
    }
}
