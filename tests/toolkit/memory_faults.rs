//! The in-memory pair's endings and faults: close, abort, injected
//! errors, failing writes, panics, close deadlines, and a peer that goes
//! away under a blocked writer.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::Duration;

use protoloop::testing::{EndOptions, LifecycleChecker, PairOptions, pair, pair_with};
use protoloop::{CloseReason, Error, EventLoop, ExceptionKind, Protocol, TimeoutKind};

use crate::{Peer, is_peer_reset, payload};

fn sender(data: Vec<u8>) -> Peer {
    Peer::new().on_made(move |t| {
        t.write(&data).unwrap();
        t.close();
    })
}

#[test]
fn close_flushes_then_refuses_writes_and_is_never_synchronous() {
    let lp = EventLoop::new_virtual().unwrap();
    let checker = LifecycleChecker::new();
    let opts = PairOptions {
        a: EndOptions::default(),
        b: EndOptions::default().capacity(100),
    };
    let (a, b) = pair_with(
        &lp.handle(),
        checker.wrap(Peer::new()),
        checker.wrap(Peer::new()),
        opts,
    );
    let t = a.transport();
    t.write(&payload(5000)).unwrap();
    assert_eq!(t.get_write_buffer_size(), 4900);
    t.close();
    assert!(t.is_closing() && !t.is_reading());
    assert!(matches!(t.write(b"x"), Err(Error::Closed)));
    assert!(matches!(t.write_eof(), Err(Error::Closed)));
    assert!(
        a.protocol().with(|p| p.reason.is_none()),
        "connection_lost is not synchronous"
    );
    lp.run_until_idle().unwrap();
    checker.assert_finished();
    assert_eq!(b.protocol().with(|p| p.got.clone()), payload(5000));
    a.protocol()
        .with(|p| assert!(matches!(p.reason, Some(CloseReason::LocalClose))));
    // A handle that outlives its connection answers with errors.
    assert!(matches!(t.write(b"x"), Err(Error::Closed)));
    t.close();
    t.abort();
    t.resume_reading();
    assert!(t.is_closing());
}

#[test]
fn abort_drops_the_buffer_and_resets_the_peer_after_its_queued_data() {
    let lp = EventLoop::new_virtual().unwrap();
    let checker = LifecycleChecker::new();
    let opts = PairOptions {
        a: EndOptions::default(),
        b: EndOptions::default().capacity(10),
    };
    let (a, b) = pair_with(
        &lp.handle(),
        checker.wrap(Peer::new()),
        checker.wrap(Peer::new()),
        opts,
    );
    a.transport().write(&payload(100)).unwrap();
    a.transport().abort();
    assert_eq!(a.transport().get_write_buffer_size(), 0);
    lp.run_until_idle().unwrap();
    checker.assert_finished();
    b.protocol().with(|p| {
        assert_eq!(
            p.got,
            payload(10),
            "what reached the peer's queue is still read"
        );
        assert!(is_peer_reset(&p.reason), "{:?}", p.reason);
        assert_eq!(p.eofs, 0);
    });
    a.protocol()
        .with(|p| assert!(matches!(p.reason, Some(CloseReason::LocalAbort))));
}

#[test]
fn injected_errors_end_one_side_and_the_peer_learns_when_it_writes() {
    let lp = EventLoop::new_virtual().unwrap();
    let checker = LifecycleChecker::new();
    let (a, b) = pair(
        &lp.handle(),
        checker.wrap(Peer::new()),
        checker.wrap(Peer::new()),
    );
    a.inject_error(io::Error::other("cable cut"));
    lp.run_until_idle().unwrap();
    a.protocol().with(|p| match &p.reason {
        Some(CloseReason::Io(e)) => assert_eq!(e.to_string(), "cable cut"),
        other => panic!("expected an I/O error, got {other:?}"),
    });
    assert!(!b.is_lost(), "the peer is not told");
    // The first write is taken (the bytes vanish); the reset follows.
    b.transport().write(b"anyone?").unwrap();
    lp.run_until_idle().unwrap();
    assert!(is_peer_reset(&b.protocol().with(|p| p.reason.clone())));
    checker.assert_finished();

    let (c, d) = pair(
        &lp.handle(),
        checker.wrap(Peer::new()),
        checker.wrap(Peer::new()),
    );
    c.reset();
    d.reset();
    lp.run_until_idle().unwrap();
    checker.assert_finished();
    assert!(checker.reasons()[2..].iter().all(is_peer_reset));
}

#[test]
fn a_failed_write_is_returned_and_ends_the_connection() {
    let lp = EventLoop::new_virtual().unwrap();
    let checker = LifecycleChecker::new();
    let (a, _b) = pair(
        &lp.handle(),
        checker.wrap(Peer::new()),
        checker.wrap(Peer::new()),
    );
    a.fail_next_write(io::Error::from(io::ErrorKind::BrokenPipe));
    let err = a.transport().write(b"x").unwrap_err();
    assert_eq!(err.io_kind(), Some(io::ErrorKind::BrokenPipe));
    lp.run_until_idle().unwrap();
    assert!(is_peer_reset(&a.protocol().with(|p| p.reason.clone())));
    // A failure during a later flush ends it too.
    let opts = EndOptions::default().max_write(Some(1));
    let (c, _d) = pair_with(
        &lp.handle(),
        checker.wrap(Peer::new()),
        checker.wrap(Peer::new()),
        opts,
    );
    c.transport().write(b"abc").unwrap();
    c.fail_next_write(io::Error::other("disk on fire"));
    lp.run_until_idle().unwrap();
    assert!(matches!(
        c.protocol().with(|p| p.reason.clone()),
        Some(CloseReason::Io(_))
    ));
}

#[test]
fn a_panicking_callback_aborts_only_its_connection() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    let reported = Rc::new(RefCell::new(Vec::new()));
    let r = reported.clone();
    h.set_exception_handler(move |ctx| r.borrow_mut().push(ctx.kind));
    let checker = LifecycleChecker::new();
    let bomb = Peer::new().on_data(|_, d| {
        if d.contains(&b'!') {
            panic!("boom at !");
        }
    });
    let (a, b) = pair(&h, checker.wrap(Peer::new()), checker.wrap(bomb));
    let (c, d) = pair(&h, checker.wrap(Peer::new()), checker.wrap(Peer::new()));
    a.transport().write(b"ok!").unwrap();
    c.transport().write(b"fine").unwrap();
    lp.run_until_idle().unwrap();
    match b.protocol().with(|p| p.reason.clone()) {
        Some(CloseReason::Panic(m)) => assert!(m.contains("boom at !")),
        other => panic!("expected a panic reason, got {other:?}"),
    }
    assert!(is_peer_reset(&a.protocol().with(|p| p.reason.clone())));
    assert_eq!(*reported.borrow(), [ExceptionKind::ProtocolPanic]);
    assert_eq!(d.protocol().with(|p| p.got.clone()), b"fine");
    assert!(!c.is_lost() && !d.is_lost());
    c.transport().close();
    lp.run_until_idle().unwrap();
    checker.assert_finished();
}

#[test]
fn close_with_deadline_aborts_a_stuck_flush_in_virtual_time() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    let checker = LifecycleChecker::new();
    let opts = EndOptions::default().capacity(10);
    let (a, b) = pair_with(
        &h,
        checker.wrap(Peer::new()),
        checker.wrap(Peer::new().on_made(|t| t.pause_reading())),
        opts,
    );
    a.transport().write(&payload(50)).unwrap();
    let start = h.time();
    a.transport().close_with_deadline(Duration::from_secs(30));
    lp.advance(Duration::from_secs(29)).unwrap();
    assert!(!a.is_lost());
    lp.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(h.time() - start, Duration::from_secs(30));
    assert!(matches!(
        a.protocol().with(|p| p.reason.clone()),
        Some(CloseReason::Timeout(TimeoutKind::Close))
    ));
    // The reader learns of the reset once it reads again.
    b.transport().resume_reading();
    lp.run_until_idle().unwrap();
    b.protocol().with(|p| {
        assert_eq!(p.got, payload(10));
        assert!(is_peer_reset(&p.reason));
    });
    checker.assert_finished();
}

/// Lends an empty buffer: a protocol bug the transport must not take for
/// EOF.
struct EmptyLender;
impl Protocol for EmptyLender {
    fn data_received(&mut self, _: &[u8]) {}
    fn get_buffer(&mut self, _hint: usize) -> Option<&mut [u8]> {
        Some(&mut [])
    }
}

#[test]
fn an_empty_lent_buffer_aborts_the_connection() {
    let lp = EventLoop::new_virtual().unwrap();
    lp.handle().set_exception_handler(|_| {});
    let checker = LifecycleChecker::new();
    let (a, b) = pair(
        &lp.handle(),
        checker.wrap(sender(b"x".to_vec())),
        checker.wrap(EmptyLender),
    );
    lp.run_until_idle().unwrap();
    checker.assert_finished();
    match &checker.reasons()[1] {
        Some(CloseReason::Protocol(e)) => assert!(e.to_string().contains("empty buffer")),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(a.is_lost() && b.is_lost());
}

#[test]
fn a_writer_stuck_behind_a_peer_that_closes_unread_is_not_stuck() {
    // B holds 10 unread bytes and closes; A still has 90 buffered. It must
    // not wait forever for room that never comes: as on TCP, the bytes go
    // to a closed socket and are lost, A's close on B's EOF completes
    // (PeerEof), and the reset that follows finds A gone.
    let lp = EventLoop::new_virtual().unwrap();
    let checker = LifecycleChecker::new();
    let opts = PairOptions {
        a: EndOptions::default(),
        b: EndOptions::default().capacity(10),
    };
    let (a, b) = pair_with(
        &lp.handle(),
        checker.wrap(Peer::new()),
        checker.wrap(Peer::new().on_made(|t| t.pause_reading())),
        opts,
    );
    a.transport().write(&payload(100)).unwrap();
    lp.run_until_idle().unwrap();
    assert_eq!(a.transport().get_write_buffer_size(), 90);
    b.transport().close();
    lp.run_until_idle().unwrap();
    checker.assert_finished();
    assert!(matches!(
        a.protocol().with(|p| p.reason.clone()),
        Some(CloseReason::PeerEof)
    ));
    // An end that keeps its side open after the EOF sees the reset on its
    // next write (reading has ended, so only a write can notice).
    let (e, f) = pair_with(
        &lp.handle(),
        checker.wrap(Peer::new().keep_open()),
        checker.wrap(Peer::new().on_made(|t| t.pause_reading())),
        EndOptions::default().capacity(10),
    );
    e.transport().write(&payload(100)).unwrap();
    lp.run_until_idle().unwrap();
    f.transport().close();
    lp.run_until_idle().unwrap();
    assert!(!e.is_lost());
    let err = e.transport().write(b"more").unwrap_err();
    assert_eq!(err.io_kind(), Some(io::ErrorKind::ConnectionReset));
    lp.run_until_idle().unwrap();
    checker.assert_finished();
    assert!(is_peer_reset(&e.protocol().with(|p| p.reason.clone())));
    // And when the peer's socket fails, the pending write finds the reset.
    let (c, d) = pair_with(
        &lp.handle(),
        checker.wrap(Peer::new()),
        checker.wrap(Peer::new().on_made(|t| t.pause_reading())),
        EndOptions::default().capacity(10),
    );
    c.transport().write(&payload(100)).unwrap();
    lp.run_until_idle().unwrap();
    d.inject_error(io::Error::other("gone"));
    lp.run_until_idle().unwrap();
    checker.assert_finished();
    assert!(is_peer_reset(&c.protocol().with(|p| p.reason.clone())));
}

/// Keeps nothing: not its transport.
struct Forgetful;
impl Protocol for Forgetful {
    fn data_received(&mut self, _: &[u8]) {}
}

/// A pair still open when its loop is closed: end `a` has a close
/// deadline armed (its timer holds `a`'s transport) and a protocol that
/// keeps nothing; end `b`'s protocol keeps its transport. Both are cycles
/// only the loop can break, and closing it releases both ends, as it does
/// a socket, without `connection_lost` (no callback runs on a closed
/// loop).
#[test]
fn closing_the_loop_releases_both_ends_of_an_open_pair() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    let lost = Rc::new(Cell::new(false));
    let l = lost.clone();
    let (a, b) = pair_with(
        &h,
        Forgetful,
        Peer::new()
            .on_made(|t| t.pause_reading())
            .on_lost(move || l.set(true)),
        EndOptions::default().capacity(10),
    );
    a.transport().write(&payload(50)).unwrap();
    a.transport().close_with_deadline(Duration::from_secs(30));
    lp.run_until_idle().unwrap();
    assert!(!a.is_lost(), "the close waits for the paused reader");
    assert_eq!(h.stats().timers, 1, "the deadline is armed");
    let (ta, pa) = (
        Rc::downgrade(a.transport().inner()),
        Rc::downgrade(a.protocol().rc()),
    );
    let (tb, pb) = (
        Rc::downgrade(b.transport().inner()),
        Rc::downgrade(b.protocol().rc()),
    );
    lp.close().unwrap();
    drop((a, b));
    assert_eq!(h.stats().timers, 0, "a timer outlived the close");
    assert!(ta.upgrade().is_none(), "a's transport outlived its loop");
    assert!(pa.upgrade().is_none(), "a's protocol outlived its loop");
    assert!(tb.upgrade().is_none(), "b's transport outlived its loop");
    assert!(pb.upgrade().is_none(), "b's protocol outlived its loop");
    assert!(!lost.get(), "connection_lost on a closed loop");
}

/// Ends closed just before their loop: `connection_lost` was scheduled,
/// then dropped unrun with the loop. The protocols, which keep their
/// transports, are dropped all the same.
#[test]
fn ends_closed_just_before_their_loop_still_drop_their_protocols() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    let lost = Rc::new(Cell::new(0));
    let peer = || {
        let l = lost.clone();
        Peer::new().on_lost(move || l.set(l.get() + 1))
    };
    let (a, b) = pair(&h, peer(), peer());
    assert_eq!(h.stats().sources, 2, "open ends hear of the loop's close");
    a.transport().abort();
    b.transport().close();
    assert_eq!(h.stats().sources, 0, "ends whose connection is over do not");
    let protocols = [a.protocol().rc(), b.protocol().rc()].map(Rc::downgrade);
    drop(lp);
    drop((a, b));
    assert!(
        protocols.iter().all(|p| p.upgrade().is_none()),
        "a protocol outlived its loop"
    );
    assert_eq!(lost.get(), 0, "connection_lost on a closed loop");
}
