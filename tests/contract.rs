//! The protocol callback contract over real loopback TCP: call order,
//! nothing after `connection_lost`, no re-entrant calls from transport
//! methods, `pause_reading` from `connection_made`, refused writes after
//! close, handles that outlive their connection, and panics contained
//! per connection.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, Read, Write};
use std::rc::Rc;
use std::time::Duration;

use common::net::{adopt, kinds};
use common::{
    EXPECTED, Ev, Probe, Rec, capture_exceptions, quiet_expected_panics, read_to_eof, run,
    socket_pair, turns, wait_until,
};
use protoloop::{
    CloseReason, ConnectOptions, Error, EventLoop, ExceptionKind, Protocol, ServerOptions,
    Transport,
};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn call_order_is_made_data_eof_lost_and_nothing_after() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (probe, mut peer) = adopt(&h, Rec::new().0);
    let p = probe.clone();
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        for i in 0..5u8 {
            peer.write_all(&[i; 100]).unwrap();
            wait_until(&h2, "data", || p.data_len() == 100 * (i as usize + 1)).await;
        }
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        wait_until(&h2, "connection_lost", || p.is_lost()).await;
        // The transport closed after EOF (eof_received returned false):
        // the peer reads EOF too.
        let rest = read_to_eof(&h2, &mut peer).await.unwrap();
        assert!(rest.is_empty());
        turns(10).await;
    });
    probe.check_contract();
    let k = kinds(&probe);
    assert_eq!(k.first().unwrap(), "made");
    assert_eq!(k.iter().filter(|s| *s == "data").count(), 5, "{k:?}");
    assert_eq!(&k[6..], ["eof", "lost:PeerEof"], "{k:?}");
    let want: Vec<u8> = (0..5u8).flat_map(|i| [i; 100]).collect();
    assert_eq!(*probe.data.borrow(), want);
}

#[test]
fn both_ends_of_a_loop_connection_keep_the_contract() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let server_probes: Rc<RefCell<Vec<Probe>>> = Rc::default();
    let sp = server_probes.clone();
    let server = h
        .create_server(
            move || {
                let (r, p) = Rec::new();
                sp.borrow_mut().push(p);
                r.on_data(|t, d, _| {
                    t.write(d).unwrap();
                })
            },
            "127.0.0.1:0",
            ServerOptions::default(),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    let h2 = h.clone();
    let (rec, client) = Rec::new();
    let c = client.clone();
    run(&lp, LIMIT, async move {
        let (t, _) = h2
            .create_connection(move || rec, addr, ConnectOptions::default())
            .await
            .unwrap();
        t.write(b"ping").unwrap();
        wait_until(&h2, "echo", || c.data_len() == 4).await;
        t.close();
        wait_until(&h2, "both ends lost", || {
            c.is_lost() && server_probes.borrow().iter().all(|p| p.is_lost())
        })
        .await;
        turns(10).await;
        let sp = server_probes.borrow();
        assert_eq!(sp.len(), 1);
        sp[0].check_contract();
        assert_eq!(kinds(&sp[0]), ["made", "data", "eof", "lost:PeerEof"]);
    });
    client.check_contract();
    assert_eq!(kinds(&client), ["made", "data", "lost:LocalClose"]);
}

#[test]
fn close_inside_data_received_delivers_connection_lost_later() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let writes_after = Rc::new(RefCell::new(Vec::new()));
    let w = writes_after.clone();
    let rec = Rec::new().0.on_data(move |t, _, log| {
        t.close();
        // Still inside the callback: nothing was delivered re-entrantly.
        log.borrow_mut().push(Ev::Mark("returned from close"));
        assert!(t.is_closing());
        assert!(!t.is_reading());
        w.borrow_mut().push(t.write(b"late"));
        w.borrow_mut().push(t.write_eof());
        w.borrow_mut().push(t.writelines(&[b"a", b"b"]));
        w.borrow_mut()
            .push(t.write_bytes(bytes::Bytes::from_static(b"c")));
    });
    let (probe, mut peer) = adopt(&h, rec);
    let p = probe.clone();
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        peer.write_all(b"hello").unwrap();
        wait_until(&h2, "connection_lost", || p.is_lost()).await;
        let rest = read_to_eof(&h2, &mut peer).await.unwrap();
        assert!(rest.is_empty(), "write after close reached the peer");
    });
    probe.check_contract();
    assert_eq!(
        kinds(&probe),
        [
            "made",
            "data",
            "mark:returned from close",
            "lost:LocalClose"
        ]
    );
    for r in writes_after.borrow().iter() {
        assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    }
}

#[test]
fn abort_inside_data_received_delivers_connection_lost_later() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let rec = Rec::new().0.on_data(|t, _, log| {
        t.write(&[7; 1000]).unwrap();
        t.abort();
        log.borrow_mut().push(Ev::Mark("returned from abort"));
        assert!(matches!(t.write(b"x"), Err(Error::Closed)));
        t.abort(); // idempotent
        t.close(); // harmless
    });
    let (probe, mut peer) = adopt(&h, rec);
    let p = probe.clone();
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        peer.write_all(b"hello").unwrap();
        wait_until(&h2, "connection_lost", || p.is_lost()).await;
        turns(5).await;
    });
    probe.check_contract();
    assert_eq!(
        kinds(&probe),
        [
            "made",
            "data",
            "mark:returned from abort",
            "lost:LocalAbort"
        ]
    );
}

#[test]
fn pause_reading_inside_connection_made_is_honoured() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let rec = Rec::new().0.on_made(|t| {
        t.pause_reading();
        t.pause_reading(); // idempotent
        assert!(!t.is_reading());
    });
    let (probe, mut peer) = adopt(&h, rec);
    let p = probe.clone();
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        peer.write_all(b"while paused").unwrap();
        // Give the loop plenty of chances to (wrongly) deliver it.
        for _ in 0..20 {
            h2.sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(p.data_len(), 0, "data_received while paused");
        let t = p.transport();
        assert!(!t.is_reading());
        // No new bytes arrive after this: the buffered ones must still
        // be delivered on resume.
        t.resume_reading();
        t.resume_reading();
        assert!(t.is_reading());
        wait_until(&h2, "data after resume", || p.data_len() == 12).await;
        assert_eq!(*p.data.borrow(), b"while paused");
        t.close();
        wait_until(&h2, "lost", || p.is_lost()).await;
    });
    probe.check_contract();
    assert_eq!(kinds(&probe), ["made", "data", "lost:LocalClose"]);
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

#[test]
fn pause_reading_inside_data_received_stops_further_delivery() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let rec = Rec::new().0.on_data(|t, _, _| t.pause_reading());
    let (probe, mut peer) = adopt(&h, rec);
    let p = probe.clone();
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        peer.write_all(b"one").unwrap();
        wait_until(&h2, "first data", || p.data_len() == 3).await;
        peer.write_all(b"two").unwrap();
        for _ in 0..20 {
            h2.sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(p.data_len(), 3, "data_received after pause_reading");
        p.transport().resume_reading();
        wait_until(&h2, "second data", || p.data_len() == 6).await;
        p.transport().close();
        wait_until(&h2, "lost", || p.is_lost()).await;
    });
    probe.check_contract();
}

#[test]
fn write_after_close_and_after_write_eof_are_refused() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (probe, mut peer) = adopt(&h, Rec::new().0);
    let (probe2, _peer2) = adopt(&h, Rec::new().0);
    let p = probe.clone();
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let t = p.transport();
        t.write(b"before").unwrap();
        assert!(t.can_write_eof());
        t.write_eof().unwrap();
        t.write_eof().unwrap(); // idempotent
        assert!(matches!(t.write(b"x"), Err(Error::EofWritten)));
        assert!(matches!(t.writelines(&[b"x"]), Err(Error::EofWritten)));
        assert!(!t.is_closing(), "write_eof alone does not close");
        let got = read_to_eof(&h2, &mut peer).await.unwrap();
        assert_eq!(got, b"before");

        let t2 = probe2.transport();
        t2.close();
        assert!(t2.is_closing());
        assert!(matches!(t2.write(b"x"), Err(Error::Closed)));
        assert!(matches!(t2.write_eof(), Err(Error::Closed)));
        assert!(matches!(t2.writelines(&[b"x", b"y"]), Err(Error::Closed)));
        wait_until(&h2, "lost", || probe2.is_lost()).await;
        t.close();
        wait_until(&h2, "lost", || p.is_lost()).await;
    });
}

#[test]
fn a_handle_that_outlives_its_connection_errors_and_never_panics() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (probe, peer) = adopt(&h, Rec::new().0);
    let p = probe.clone();
    let h2 = h.clone();
    let kept: Rc<RefCell<Option<Transport>>> = Rc::default();
    let k = kept.clone();
    run(&lp, LIMIT, async move {
        drop(peer); // the peer goes away
        wait_until(&h2, "lost", || p.is_lost()).await;
        *k.borrow_mut() = Some(p.transport());
    });
    // Drop the protocol's own reference: the handle is all that is left.
    probe.transport.borrow_mut().take();
    let t = kept.borrow_mut().take().unwrap();
    assert!(matches!(t.write(b"x"), Err(Error::Closed)));
    assert!(matches!(
        t.write_bytes(bytes::Bytes::from_static(b"x")),
        Err(Error::Closed)
    ));
    assert!(matches!(t.writelines(&[b"x"]), Err(Error::Closed)));
    assert!(matches!(t.write_eof(), Err(Error::Closed)));
    t.close();
    t.close_with_deadline(Duration::from_millis(1));
    t.abort();
    t.pause_reading();
    t.resume_reading();
    assert!(!t.is_reading());
    assert!(t.is_closing());
    t.set_write_buffer_limits(1, 0);
    let _ = t.get_write_buffer_limits();
    assert_eq!(t.get_write_buffer_size(), 0);
    assert!(t.peer_addr().is_none());
    assert!(t.local_addr().is_none());
    let _ = t.stats();
    assert!(
        t.get_protocol().is_none(),
        "protocol kept after connection_lost"
    );
    t.set_protocol(Rc::new(RefCell::new(Rec::new().0)));
    assert!(
        t.get_protocol().is_none(),
        "set_protocol revived a dead connection"
    );
    assert!(t.extra("peername").is_none());
    let _ = format!("{t:?}");
    // Nothing more is delivered, even with the loop running again.
    let h3 = h.clone();
    run(&lp, LIMIT, async move {
        turns(10).await;
        drop(h3)
    });
    probe.check_contract();
    assert_eq!(probe.count(|e| matches!(e, Ev::Lost(_))), 1);
    // And after the loop itself is closed.
    lp.close().unwrap();
    assert!(matches!(t.write(b"x"), Err(Error::Closed)));
    t.close();
    t.abort();
}

fn panicking(where_: &'static str) -> Rec {
    let r = Rec::new().0;
    match where_ {
        "made" => r.on_made(|_| panic!("{EXPECTED}: connection_made")),
        "data" => r.on_data(|_, _, _| panic!("{EXPECTED}: data_received")),
        "eof" => r.on_eof(|_| panic!("{EXPECTED}: eof_received")),
        _ => unreachable!(),
    }
}

#[test]
fn a_panicking_callback_aborts_only_its_connection() {
    quiet_expected_panics();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let seen = capture_exceptions(&h);
    let mut victims = Vec::new();
    for w in ["made", "data", "eof"] {
        victims.push((w, adopt(&h, panicking(w))));
    }
    let (healthy, mut healthy_peer) = adopt(
        &h,
        Rec::new().0.on_data(|t, d, _| {
            t.write(d).unwrap();
        }),
    );
    let h2 = h.clone();
    let hp = healthy.clone();
    let victims = run(&lp, LIMIT, async move {
        for (_, (_, peer)) in victims.iter_mut() {
            // "made" has panicked already; this is harmless for it.
            let _ = peer.write_all(b"trigger");
            let _ = peer.shutdown(std::net::Shutdown::Write);
        }
        wait_until(&h2, "victims lost", || {
            victims.iter().all(|(_, (p, _))| p.is_lost())
        })
        .await;
        // Each victim's peer sees a reset (or, if it never wrote, at
        // least the end of the connection).
        for (w, (_, peer)) in victims.iter_mut() {
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0; 16];
            match peer.read(&mut buf) {
                Ok(0) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                other => panic!("{w}: peer read {other:?}"),
            }
        }
        // The other connection is unaffected.
        healthy_peer.write_all(b"still here").unwrap();
        wait_until(&h2, "healthy echo", || hp.data_len() == 10).await;
        let mut buf = [0; 10];
        healthy_peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"still here");
        victims
    });
    for (w, (p, _)) in &victims {
        p.check_contract();
        match p.lost().unwrap() {
            CloseReason::Panic(m) => assert!(m.contains(w), "{w}: {m}"),
            other => panic!("{w}: lost with {other:?}"),
        }
    }
    let panics = seen
        .borrow()
        .iter()
        .filter(|c| c.kind == ExceptionKind::ProtocolPanic)
        .count();
    assert_eq!(panics, 3, "{:?}", seen.borrow());
    assert!(!healthy.is_lost());
}

#[test]
fn a_panic_in_connection_lost_is_reported_and_not_repeated() {
    quiet_expected_panics();
    struct Bad(Rc<Cell<u32>>);
    impl Protocol for Bad {
        fn data_received(&mut self, _: &[u8]) {}
        fn connection_lost(&mut self, _: CloseReason) {
            self.0.set(self.0.get() + 1);
            panic!("{EXPECTED}: connection_lost");
        }
    }
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let seen = capture_exceptions(&h);
    let calls = Rc::new(Cell::new(0));
    let (ours, peer) = socket_pair();
    let (t, _) = h.connect_accepted_socket(Bad(calls.clone()), ours).unwrap();
    let h2 = h.clone();
    let c = calls.clone();
    run(&lp, LIMIT, async move {
        t.close();
        wait_until(&h2, "connection_lost", || c.get() == 1).await;
        turns(10).await;
        drop(peer);
    });
    assert_eq!(calls.get(), 1);
    assert!(common::reported(&seen, ExceptionKind::ProtocolPanic));
}
