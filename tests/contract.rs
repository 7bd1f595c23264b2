#![allow(unused_imports)] // the rest of the suite follows in the next commit
//! The protocol callback contract over real loopback TCP: call order,
//! nothing after `connection_lost`, no re-entrant calls from transport
//! methods, `pause_reading` from `connection_made`, paired flow-control
//! calls at the default water marks, refused writes after close, handles
//! that outlive their connection, and panics contained per connection.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::Duration;

use common::{
    EXPECTED, Ev, Probe, Rec, capture_exceptions, quiet_expected_panics, read_available,
    read_to_eof, run, socket_pair, turns, wait_until,
};
use protoloop::{
    Buffered, BufferedProtocol, CloseReason, ConnectOptions, Error, EventLoop, ExceptionKind,
    Handle, Protocol, ServerOptions, Transport,
};

const LIMIT: Duration = Duration::from_secs(30);

/// Put `rec` on one end of a fresh loopback connection; the other end is
/// a blocking std socket the test drives by hand.
fn adopt(h: &Handle, rec: Rec) -> (Probe, TcpStream) {
    let (ours, peer) = socket_pair();
    let probe = rec.probe();
    h.connect_accepted_socket(rec, ours).unwrap();
    (probe, peer)
}

fn kinds(p: &Probe) -> Vec<String> {
    p.log
        .borrow()
        .iter()
        .map(|e| match e {
            Ev::Made => "made".to_string(),
            Ev::Data(_) => "data".to_string(),
            Ev::Eof => "eof".to_string(),
            Ev::Lost(r) => format!("lost:{r:?}"),
            Ev::PauseWriting(_) => "pause".to_string(),
            Ev::ResumeWriting(_) => "resume".to_string(),
            Ev::Drain => "drain".to_string(),
            Ev::Mark(m) => format!("mark:{m}"),
        })
        .collect()
}

#[test]
fn eof_is_not_delivered_while_reading_is_paused() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let rec = Rec::new().0.on_made(|t| t.pause_reading());
    let (probe, mut peer) = adopt(&h, rec);
    let p = probe.clone();
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        peer.write_all(b"last words").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        for _ in 0..20 {
            h2.sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(kinds(&p), ["made"]);
        p.transport().resume_reading();
        wait_until(&h2, "lost", || p.is_lost()).await;
    });
    probe.check_contract();
    assert_eq!(kinds(&probe), ["made", "data", "eof", "lost:PeerEof"]);
    assert_eq!(*probe.data.borrow(), b"last words");
}

#[test]
fn data_and_eof_arriving_in_one_event_are_both_delivered() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (probe, mut peer) = adopt(&h, Rec::new().0);
    let p = probe.clone();
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        turns(5).await;
        // The loop is not polling while this task runs: the bytes and the
        // FIN reach the socket before it looks, as one readiness event.
        peer.write_all(b"bye").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        wait_until(&h2, "lost", || p.is_lost()).await;
    });
    probe.check_contract();
    assert_eq!(kinds(&probe), ["made", "data", "eof", "lost:PeerEof"]);
}

struct Lender {
    buf: Vec<u8>,
    got: Rc<RefCell<Vec<u8>>>,
    panic_in_get_buffer: bool,
    lost: Rc<RefCell<Option<CloseReason>>>,
}

impl BufferedProtocol for Lender {
    fn get_buffer(&mut self, _hint: usize) -> &mut [u8] {
        if self.panic_in_get_buffer {
            panic!("{EXPECTED}: get_buffer");
        }
        &mut self.buf
    }
    fn buffer_updated(&mut self, n: usize) {
        self.got.borrow_mut().extend_from_slice(&self.buf[..n]);
    }
    fn connection_lost(&mut self, r: CloseReason) {
        *self.lost.borrow_mut() = Some(r);
    }
}

#[test]
fn a_small_lent_buffer_receives_everything_in_pieces() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let got = Rc::new(RefCell::new(Vec::new()));
    let lost = Rc::new(RefCell::new(None));
    let (ours, mut peer) = socket_pair();
    h.connect_accepted_socket(
        Buffered(Lender {
            buf: vec![0; 7],
            got: got.clone(),
            panic_in_get_buffer: false,
            lost: lost.clone(),
        }),
        ours,
    )
    .unwrap();
    let data = common::Rng::new(3).bytes(100_000);
    let d = data.clone();
    let h2 = h.clone();
    let (g, l) = (got.clone(), lost.clone());
    run(&lp, LIMIT, async move {
        peer.write_all(&d).unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        wait_until(&h2, "lost", || l.borrow().is_some()).await;
        assert_eq!(g.borrow().len(), d.len());
    });
    assert!(*got.borrow() == data);
    assert!(matches!(*lost.borrow(), Some(CloseReason::PeerEof)));
}
