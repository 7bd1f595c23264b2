//! `BufferedProtocol` over loopback TCP: reads straight into the
//! protocol's buffer, 10 MB byte-exact, a buffer smaller than the data,
//! and the errors of a protocol that panics in or returns nothing from
//! `get_buffer`.

mod common;

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

use common::net::rec_server;
use common::{
    EXPECTED, Rec, Rng, capture_exceptions, quiet_expected_panics, run, socket_pair, wait_until,
};
use protoloop::{
    Buffered, BufferedProtocol, CloseReason, ConnectOptions, EventLoop, ExceptionKind,
    ServerOptions,
};

const LIMIT: Duration = Duration::from_secs(60);

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
fn a_panic_in_get_buffer_aborts_the_connection() {
    quiet_expected_panics();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let seen = capture_exceptions(&h);
    let lost = Rc::new(RefCell::new(None));
    let (ours, mut peer) = socket_pair();
    h.connect_accepted_socket(
        Buffered(Lender {
            buf: vec![0; 16],
            got: Rc::default(),
            panic_in_get_buffer: true,
            lost: lost.clone(),
        }),
        ours,
    )
    .unwrap();
    let h2 = h.clone();
    let l = lost.clone();
    run(&lp, LIMIT, async move {
        // get_buffer may be asked for before any byte arrives, so the
        // connection can be gone before this write.
        let _ = peer.write_all(b"x");
        wait_until(&h2, "lost", || l.borrow().is_some()).await;
    });
    assert!(
        matches!(*lost.borrow(), Some(CloseReason::Panic(_))),
        "{:?}",
        lost.borrow()
    );
    assert!(common::reported(&seen, ExceptionKind::ProtocolPanic));
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

#[test]
fn an_empty_lent_buffer_is_an_error_not_eof() {
    struct Empty(Rc<RefCell<Option<CloseReason>>>);
    impl BufferedProtocol for Empty {
        fn get_buffer(&mut self, _hint: usize) -> &mut [u8] {
            &mut []
        }
        fn buffer_updated(&mut self, _n: usize) {
            unreachable!("nothing can be read into an empty buffer");
        }
        fn eof_received(&mut self) -> bool {
            panic!("eof_received without an EOF");
        }
        fn connection_lost(&mut self, r: CloseReason) {
            *self.0.borrow_mut() = Some(r);
        }
    }
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let seen = capture_exceptions(&h);
    let lost = Rc::new(RefCell::new(None));
    let (ours, mut peer) = socket_pair();
    h.connect_accepted_socket(Buffered(Empty(lost.clone())), ours)
        .unwrap();
    let h2 = h.clone();
    let l = lost.clone();
    run(&lp, LIMIT, async move {
        let _ = peer.write_all(b"x");
        wait_until(&h2, "lost", || l.borrow().is_some()).await;
    });
    match &*lost.borrow() {
        Some(CloseReason::Protocol(e)) => assert!(e.to_string().contains("empty buffer"), "{e}"),
        other => panic!("expected CloseReason::Protocol, got {other:?}"),
    }
    assert!(common::reported(&seen, ExceptionKind::Error));
}

struct Verifier {
    buf: Vec<u8>,
    expect: Rc<Vec<u8>>,
    pos: Rc<Cell<usize>>,
    ok: Rc<Cell<bool>>,
    lost: Rc<RefCell<Option<CloseReason>>>,
}

impl BufferedProtocol for Verifier {
    fn get_buffer(&mut self, hint: usize) -> &mut [u8] {
        assert!(hint > 0);
        &mut self.buf
    }
    fn buffer_updated(&mut self, n: usize) {
        let at = self.pos.get();
        if self.expect.get(at..at + n) != Some(&self.buf[..n]) {
            self.ok.set(false);
        }
        self.pos.set(at + n);
    }
    fn connection_lost(&mut self, r: CloseReason) {
        *self.lost.borrow_mut() = Some(r);
    }
}

#[test]
fn buffered_protocol_receives_ten_megabytes() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let payload = Rc::new(Rng::new(23).bytes(10 << 20));
    let pl = payload.clone();
    let (_server, addr, _sprobes) = rec_server(
        &h,
        move || {
            let pl = pl.clone();
            Rec::new().0.on_made(move |t| {
                t.write_bytes(bytes::Bytes::from((*pl).clone())).unwrap();
                t.close();
            })
        },
        ServerOptions::default(),
    );
    let pos = Rc::new(Cell::new(0));
    let ok = Rc::new(Cell::new(true));
    let lost = Rc::new(RefCell::new(None));
    let v = Verifier {
        buf: vec![0; 64 * 1024],
        expect: payload.clone(),
        pos: pos.clone(),
        ok: ok.clone(),
        lost: lost.clone(),
    };
    let h2 = h.clone();
    let l = lost.clone();
    let (t, _) = run(&lp, LIMIT, async move {
        let c = h2
            .create_connection(move || Buffered(v), addr, ConnectOptions::default())
            .await
            .unwrap();
        wait_until(&h2, "lost", || l.borrow().is_some()).await;
        c
    });
    assert_eq!(pos.get(), payload.len());
    assert!(ok.get(), "buffered bytes differ");
    assert!(matches!(*lost.borrow(), Some(CloseReason::PeerEof)));
    assert_eq!(t.stats().bytes_received, payload.len() as u64);
}
