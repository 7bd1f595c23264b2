//! The in-memory transport pair: delivery, chunking, short writes,
//! back-pressure, half-close and protocol switching, under the lifecycle
//! checker (endings and faults: memory_faults.rs).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use protoloop::testing::{Chunking, EndOptions, LifecycleChecker, PairOptions, pair, pair_with};
use protoloop::{Buffered, BufferedProtocol, CloseReason, Error, EventLoop, Transport};

use crate::{Peer, payload};

fn sender(data: Vec<u8>) -> Peer {
    Peer::new().on_made(move |t| {
        t.write(&data).unwrap();
        t.close();
    })
}

#[test]
fn every_chunking_delivers_the_same_bytes_in_the_promised_sizes() {
    let data = payload(100_000);
    let cases = [
        (Chunking::All, None),
        (Chunking::Max(1), Some(1)),
        (Chunking::Max(7), Some(7)),
        (Chunking::Cycle(vec![3, 1, 4096]), Some(4096)),
        (Chunking::Random { seed: 9, max: 300 }, Some(300)),
    ];
    for (how, max) in cases {
        let lp = EventLoop::new_virtual().unwrap();
        let checker = LifecycleChecker::new();
        let opts = PairOptions {
            a: EndOptions::default(),
            b: EndOptions::default().chunking(how.clone()),
        };
        let (a, b) = pair_with(
            &lp.handle(),
            checker.wrap(sender(data.clone())),
            checker.wrap(Peer::new()),
            opts,
        );
        lp.run_until_idle().unwrap();
        checker.assert_finished();
        b.protocol().with(|p| {
            assert_eq!(p.got, data, "{how:?}");
            if let Some(max) = max {
                assert!(p.sizes.iter().all(|&n| n <= max), "{how:?}");
            }
            assert!(matches!(p.reason, Some(CloseReason::PeerEof)), "{how:?}");
            assert_eq!(p.eofs, 1);
        });
        a.protocol()
            .with(|p| assert!(matches!(p.reason, Some(CloseReason::LocalClose))));
        assert_eq!(b.transport().stats().bytes_received, data.len() as u64);
        assert_eq!(a.transport().stats().bytes_sent, data.len() as u64);
    }
}

#[test]
fn cycle_chunking_cuts_exactly_as_listed() {
    let lp = EventLoop::new_virtual().unwrap();
    let opts = PairOptions {
        a: EndOptions::default(),
        b: EndOptions::default().chunking(Chunking::Cycle(vec![2, 5])),
    };
    let (_a, b) = pair_with(&lp.handle(), sender(payload(20)), Peer::new(), opts);
    lp.run_until_idle().unwrap();
    assert_eq!(b.protocol().with(|p| p.sizes.clone()), [2, 5, 2, 5, 2, 4]);
    // The same seed cuts the same way.
    let sizes = |seed| {
        let lp = EventLoop::new_virtual().unwrap();
        let opts = PairOptions {
            a: EndOptions::default(),
            b: EndOptions::default().chunking(Chunking::Random { seed, max: 10 }),
        };
        let (_a, b) = pair_with(&lp.handle(), sender(payload(500)), Peer::new(), opts);
        lp.run_until_idle().unwrap();
        b.protocol().with(|p| p.sizes.clone())
    };
    assert_eq!(sizes(1), sizes(1));
    assert_ne!(sizes(1), sizes(2));
}

#[test]
#[should_panic(expected = "chunk sizes must be at least 1")]
fn a_zero_chunk_size_is_refused() {
    let _ = EndOptions::default().chunking(Chunking::Cycle(vec![1, 0]));
}

#[test]
fn short_writes_buffer_the_rest_and_pause_then_resume_the_writer() {
    let lp = EventLoop::new_virtual().unwrap();
    let checker = LifecycleChecker::new();
    let data = payload(200 * 1024);
    let d = data.clone();
    let seen_buffered = Rc::new(Cell::new(0));
    let sb = seen_buffered.clone();
    let writer = Peer::new().on_made(move |t| {
        t.write(&d).unwrap();
        sb.set(t.get_write_buffer_size());
    });
    let opts = PairOptions {
        a: EndOptions::default().max_write(Some(1000)),
        b: EndOptions::default(),
    };
    let (a, b) = pair_with(
        &lp.handle(),
        checker.wrap(writer),
        checker.wrap(Peer::new()),
        opts,
    );
    assert_eq!(
        seen_buffered.get(),
        data.len() - 1000,
        "the kernel took 1000"
    );
    lp.run_until_idle().unwrap();
    a.protocol()
        .with(|p| assert_eq!((p.pauses, p.resumes), (1, 1)));
    assert_eq!(a.transport().get_write_buffer_size(), 0);
    assert_eq!(b.protocol().with(|p| p.got.clone()), data);
    a.transport().close();
    lp.run_until_idle().unwrap();
    checker.assert_finished();
}

#[test]
fn a_paused_reader_backs_up_the_writer_within_the_water_marks() {
    let lp = EventLoop::new_virtual().unwrap();
    let checker = LifecycleChecker::new();
    let total = 1024 * 1024;
    let written = Rc::new(Cell::new(0usize));
    let max_buffered = Rc::new(Cell::new(0usize));
    // Writes 8 KiB at a time for as long as it is not paused.
    let pump = {
        let (written, max_buffered) = (written.clone(), max_buffered.clone());
        move |t: &Transport| {
            while written.get() < total {
                t.write(&[7u8; 8192]).unwrap();
                written.set(written.get() + 8192);
                max_buffered.set(max_buffered.get().max(t.get_write_buffer_size()));
                if t.get_write_buffer_size() > t.get_write_buffer_limits().0 {
                    return; // pause_writing is on its way
                }
            }
            t.close();
        }
    };
    let writer = Peer::new().on_made(pump.clone()).on_resume(pump);
    let reader = Peer::new().on_made(|t| t.pause_reading());
    let opts = EndOptions::default().capacity(32 * 1024);
    let (a, b) = pair_with(
        &lp.handle(),
        checker.wrap(writer),
        checker.wrap(reader),
        opts,
    );
    lp.run_until_idle().unwrap();
    // Nothing was read: the reader holds its capacity, the writer holds at
    // most the high mark plus one write, and it is paused.
    assert_eq!(b.unread(), 32 * 1024);
    assert_eq!(b.protocol().with(|p| p.got.len()), 0);
    let (high, _) = a.transport().get_write_buffer_limits();
    assert!(max_buffered.get() <= high + 8192, "{}", max_buffered.get());
    a.protocol()
        .with(|p| assert_eq!((p.pauses, p.resumes), (1, 0)));
    assert!(written.get() < total);
    b.transport().resume_reading();
    lp.run_until_idle().unwrap();
    checker.assert_finished();
    assert_eq!(b.protocol().with(|p| p.got.len()), total);
    a.protocol().with(|p| {
        assert!(
            p.pauses >= 1 && p.pauses == p.resumes,
            "{} {}",
            p.pauses,
            p.resumes
        );
    });
    assert!(max_buffered.get() <= high + 8192);
}

#[test]
fn raising_the_capacity_lets_a_blocked_writer_go_on() {
    let lp = EventLoop::new_virtual().unwrap();
    let opts = EndOptions::default().capacity(10);
    let (a, b) = pair_with(
        &lp.handle(),
        Peer::new(),
        Peer::new().on_made(|t| t.pause_reading()),
        opts,
    );
    a.transport().write(&payload(100)).unwrap();
    lp.run_until_idle().unwrap();
    assert_eq!(
        (b.unread(), a.transport().get_write_buffer_size()),
        (10, 90)
    );
    b.set_capacity(1000);
    lp.run_until_idle().unwrap();
    assert_eq!(
        (b.unread(), a.transport().get_write_buffer_size()),
        (100, 0)
    );
    b.set_chunking(Chunking::Max(30));
    b.transport().resume_reading();
    lp.run_until_idle().unwrap();
    b.protocol().with(|p| {
        assert_eq!(p.got, payload(100));
        assert_eq!(p.sizes, [30, 30, 30, 10]);
    });
}

#[test]
fn pause_reading_in_connection_made_holds_data_until_resumed() {
    let lp = EventLoop::new_virtual().unwrap();
    let checker = LifecycleChecker::new();
    let (_a, b) = pair(
        &lp.handle(),
        checker.wrap(sender(b"early".to_vec())),
        checker.wrap(Peer::new().on_made(|t| {
            t.pause_reading();
            t.pause_reading(); // idempotent
        })),
    );
    lp.run_until_idle().unwrap();
    assert_eq!(b.unread(), 5);
    assert!(!b.transport().is_reading());
    assert_eq!(b.protocol().with(|p| p.got.len()), 0);
    b.transport().resume_reading();
    lp.run_until_idle().unwrap();
    assert_eq!(b.protocol().with(|p| p.got.clone()), b"early");
    checker.assert_finished();
}

#[test]
fn half_close_lets_the_other_side_answer_then_both_close() {
    let lp = EventLoop::new_virtual().unwrap();
    let checker = LifecycleChecker::new();
    let log = Rc::new(RefCell::new(Vec::new()));
    let client = Peer::new().logged("client", &log).on_made(|t| {
        t.write(b"question").unwrap();
        t.write_eof().unwrap();
        assert!(matches!(t.write(b"more"), Err(Error::EofWritten)));
    });
    let server = Peer::new().logged("server", &log).keep_open().on_eof(|t| {
        t.write(b"answer").unwrap();
        t.close();
    });
    let (a, b) = pair(&lp.handle(), checker.wrap(client), checker.wrap(server));
    lp.run_until_idle().unwrap();
    checker.assert_finished();
    assert_eq!(b.protocol().with(|p| p.got.clone()), b"question");
    a.protocol().with(|p| {
        assert_eq!(p.got, b"answer");
        // The client had already sent EOF and did not keep the
        // connection open: its side closes on the server's EOF.
        assert!(matches!(p.reason, Some(CloseReason::PeerEof)));
    });
    b.protocol()
        .with(|p| assert!(matches!(p.reason, Some(CloseReason::LocalClose))));
    assert_eq!(
        *log.borrow(),
        [
            "client:made",
            "server:made",
            "server:data",
            "server:eof",
            "client:data",
            "client:eof",
            "server:lost",
            "client:lost"
        ]
    );
}

#[test]
fn eof_kept_open_after_our_own_eof_closes_locally() {
    let lp = EventLoop::new_virtual().unwrap();
    let checker = LifecycleChecker::new();
    let a_side = Peer::new().keep_open().on_made(|t| t.write_eof().unwrap());
    let b_side = Peer::new().keep_open().on_eof(|t| t.write_eof().unwrap());
    let (a, b) = pair(&lp.handle(), checker.wrap(a_side), checker.wrap(b_side));
    lp.run_until_idle().unwrap();
    checker.assert_finished();
    for r in checker.reasons() {
        assert!(matches!(r, Some(CloseReason::LocalClose)), "{r:?}");
    }
    assert!(a.is_lost() && b.is_lost());
}

#[test]
fn flow_control_callbacks_follow_limit_changes() {
    let lp = EventLoop::new_virtual().unwrap();
    let checker = LifecycleChecker::new();
    let opts = EndOptions::default().capacity(1);
    let (a, _b) = pair_with(
        &lp.handle(),
        checker.wrap(Peer::new()),
        checker.wrap(Peer::new().on_made(|t| t.pause_reading())),
        opts,
    );
    a.transport().write(&payload(1000)).unwrap();
    a.transport().set_write_buffer_limits(100, 10);
    assert_eq!(a.transport().get_write_buffer_limits(), (100, 10));
    lp.run_until_idle().unwrap();
    a.protocol()
        .with(|p| assert_eq!((p.pauses, p.resumes), (1, 0)));
    a.transport().set_write_buffer_limits(5000, 2000);
    lp.run_until_idle().unwrap();
    a.protocol()
        .with(|p| assert_eq!((p.pauses, p.resumes), (1, 1)));
    a.transport().abort();
    lp.run_until_idle().unwrap();
    checker.assert_ok();
}

/// A BufferedProtocol that lends a small buffer.
struct Lender {
    buf: Vec<u8>,
    got: Rc<RefCell<Vec<u8>>>,
    updates: Rc<RefCell<Vec<usize>>>,
}
impl BufferedProtocol for Lender {
    fn get_buffer(&mut self, _hint: usize) -> &mut [u8] {
        &mut self.buf
    }
    fn buffer_updated(&mut self, n: usize) {
        self.got.borrow_mut().extend_from_slice(&self.buf[..n]);
        self.updates.borrow_mut().push(n);
    }
}

#[test]
fn a_buffered_protocol_is_filled_through_its_lent_buffer() {
    let lp = EventLoop::new_virtual().unwrap();
    let checker = LifecycleChecker::new();
    let got = Rc::new(RefCell::new(Vec::new()));
    let updates = Rc::new(RefCell::new(Vec::new()));
    let lender = Buffered(Lender {
        buf: vec![0; 64],
        got: got.clone(),
        updates: updates.clone(),
    });
    let (_a, _b) = pair(
        &lp.handle(),
        checker.wrap(sender(payload(1000))),
        checker.wrap(lender),
    );
    lp.run_until_idle().unwrap();
    checker.assert_finished();
    assert_eq!(*got.borrow(), payload(1000));
    assert!(updates.borrow().iter().all(|&n| n <= 64));
    assert_eq!(updates.borrow().iter().sum::<usize>(), 1000);
}

#[test]
fn set_protocol_hands_later_callbacks_to_the_new_protocol() {
    let lp = EventLoop::new_virtual().unwrap();
    let (a, b) = pair(&lp.handle(), Peer::new(), Peer::new());
    let second = Rc::new(RefCell::new(Peer::new()));
    b.transport().set_protocol(second.clone());
    a.transport().write(b"for the second").unwrap();
    lp.run_until_idle().unwrap();
    assert_eq!(second.borrow().got, b"for the second");
    assert!(b.protocol().with(|p| p.got.is_empty()));
    assert!(b.transport().get_protocol().is_some());
    assert!(b.transport().peer_addr().is_none() && b.transport().local_addr().is_none());
    a.transport().close();
    lp.run_until_idle().unwrap();
    assert!(matches!(second.borrow().reason, Some(CloseReason::PeerEof)));
    assert!(
        b.transport().get_protocol().is_none(),
        "dropped after connection_lost"
    );
}

#[test]
fn both_ends_echo_with_one_byte_chunks_and_short_writes() {
    // An echo server and a client that checks the echo, with the most
    // hostile settings on both sides.
    let lp = EventLoop::new_virtual().unwrap();
    let checker = LifecycleChecker::new();
    let data = payload(50_000);
    let d = data.clone();
    let client = Peer::new().on_made(move |t| t.write(&d).unwrap());
    let echo = Peer::new().on_data(|t, d| t.write(d).unwrap());
    let opts = EndOptions::default()
        .chunking(Chunking::Random { seed: 3, max: 17 })
        .max_write(Some(13))
        .capacity(100);
    let (a, _b) = pair_with(&lp.handle(), checker.wrap(client), checker.wrap(echo), opts);
    lp.run_until_idle().unwrap();
    assert_eq!(a.protocol().with(|p| p.got.clone()), data);
    a.transport().close();
    lp.run_until_idle().unwrap();
    checker.assert_finished();
}

#[test]
fn a_capacity_of_one_moves_a_byte_per_turn() {
    // Found by the memory_pair fuzz target: each send used to copy the
    // whole write buffer, whatever the peer could take.
    let lp = EventLoop::new_virtual().unwrap();
    let checker = LifecycleChecker::new();
    let opts = PairOptions {
        a: EndOptions::default(),
        b: EndOptions::default().capacity(1),
    };
    let (_a, b) = pair_with(
        &lp.handle(),
        checker.wrap(sender(payload(16 * 1024))),
        checker.wrap(Peer::new()),
        opts,
    );
    lp.run_until_idle().unwrap();
    checker.assert_finished();
    b.protocol().with(|p| {
        assert_eq!(p.got, payload(16 * 1024));
        assert!(p.sizes.iter().all(|&n| n == 1));
    });
}
