//! The TCP `Server` over loopback: graceful shutdown with idle, busy
//! and stubborn clients, closing and aborting clients, starting to serve
//! later, connection counts and wait_closed, several addresses,
//! SO_REUSEPORT, a panicking protocol factory, and many clients at once.

mod common;

use std::cell::Cell;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::net::{connect, echo_server, rec_server, write_with_flow_control};
use common::{
    EXPECTED, Echo, Ev, Rec, Rng, capture_exceptions, quiet_expected_panics, run, wait_until,
};
use protoloop::{CloseReason, ConnectOptions, Error, EventLoop, ExceptionKind, ServerOptions};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn shutdown_with_idle_and_busy_clients_finishes_within_the_grace_period() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let grace = Duration::from_secs(2);
    let accepted = Rc::new(Cell::new(0usize));
    let a = accepted.clone();
    let hh = h.clone();
    // Connection 0 and 1: idle. 2: busy, asks for time, finishes its
    // reply 200 ms later and closes. 3: stubborn, asks for time and
    // never closes: aborted when the grace period ends.
    let (server, addr, sprobes) = rec_server(
        &h,
        move || {
            let i = a.get();
            a.set(i + 1);
            let hh = hh.clone();
            Rec::new().0.on_drain(move |t| match i {
                2 => {
                    let t = t.clone();
                    hh.call_later(Duration::from_millis(200), move || {
                        t.write(b"final reply").unwrap();
                        t.close();
                    });
                    true
                }
                3 => true,
                _ => false,
            })
        },
        ServerOptions::default(),
    );
    let h2 = h.clone();
    let (clients, servers, took) = run(&lp, LIMIT, async move {
        let mut clients = Vec::new();
        for i in 0..4 {
            let (_, p) = connect(&h2, addr, Rec::new().0).await;
            wait_until(&h2, "accepted", || sprobes.borrow().len() == i + 1).await;
            clients.push(p);
        }
        assert_eq!(server.connection_count(), 4);
        let start = Instant::now();
        server.shutdown(grace).await;
        let took = start.elapsed();
        assert!(!server.is_serving());
        assert_eq!(server.connection_count(), 0);
        // No longer accepting.
        let r = h2
            .create_connection(|| Rec::new().0, addr, ConnectOptions::default())
            .await;
        assert!(r.is_err(), "connected after shutdown");
        wait_until(&h2, "clients lost", || clients.iter().all(|p| p.is_lost())).await;
        let servers = sprobes.borrow().clone();
        (clients, servers, took)
    });
    assert!(
        took >= grace,
        "the stubborn connection was not given the grace period"
    );
    assert!(
        took < grace + Duration::from_secs(5),
        "shutdown took {took:?}"
    );
    for s in &servers {
        s.check_contract();
        assert_eq!(s.count(|e| matches!(e, Ev::Drain)), 1);
    }
    for i in [0, 1, 2] {
        assert!(
            matches!(servers[i].lost(), Some(CloseReason::LocalClose)),
            "{i}: {:?}",
            servers[i].lost()
        );
        assert!(matches!(clients[i].lost(), Some(CloseReason::PeerEof)));
    }
    assert_eq!(*clients[2].data.borrow(), b"final reply");
    assert!(matches!(servers[3].lost(), Some(CloseReason::LocalAbort)));
    assert!(
        matches!(clients[3].lost(), Some(CloseReason::PeerReset(_))),
        "{:?}",
        clients[3].lost()
    );
}

#[test]
fn shutdown_with_only_idle_clients_does_not_wait_for_the_grace_period() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (server, addr, sprobes) = rec_server(&h, || Rec::new().0, ServerOptions::default());
    let h2 = h.clone();
    let grace = Duration::from_secs(30);
    let took = run(&lp, LIMIT, async move {
        let mut clients = Vec::new();
        for _ in 0..5 {
            clients.push(connect(&h2, addr, Rec::new().0).await);
        }
        wait_until(&h2, "accepted", || server.connection_count() == 5).await;
        let start = Instant::now();
        server.shutdown(grace).await;
        let took = start.elapsed();
        wait_until(&h2, "clients lost", || {
            clients.iter().all(|(_, p)| p.is_lost())
        })
        .await;
        for p in sprobes.borrow().iter() {
            assert!(matches!(p.lost(), Some(CloseReason::LocalClose)));
        }
        took
    });
    assert!(took < grace, "idle clients held shutdown for {took:?}");
}

#[test]
fn close_clients_and_abort_clients() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (server, addr, sprobes) = rec_server(&h, || Rec::new().0, ServerOptions::default());
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let mut first = Vec::new();
        for _ in 0..3 {
            first.push(connect(&h2, addr, Rec::new().0).await.1);
        }
        wait_until(&h2, "3 accepted", || server.connection_count() == 3).await;
        server.close_clients();
        wait_until(&h2, "clients closed", || first.iter().all(|p| p.is_lost())).await;
        for p in &first {
            assert!(
                matches!(p.lost(), Some(CloseReason::PeerEof)),
                "{:?}",
                p.lost()
            );
        }
        assert_eq!(server.connection_count(), 0);
        // Still listening.
        assert!(server.is_serving());
        let mut second = Vec::new();
        for _ in 0..2 {
            second.push(connect(&h2, addr, Rec::new().0).await.1);
        }
        wait_until(&h2, "2 accepted", || server.connection_count() == 2).await;
        server.abort_clients();
        assert_eq!(server.connection_count(), 0);
        wait_until(&h2, "clients reset", || second.iter().all(|p| p.is_lost())).await;
        for p in &second {
            assert!(
                matches!(p.lost(), Some(CloseReason::PeerReset(_))),
                "{:?}",
                p.lost()
            );
        }
        let s = sprobes.borrow().clone();
        assert_eq!(s.len(), 5);
        for p in &s[..3] {
            assert!(matches!(p.lost(), Some(CloseReason::LocalClose)));
        }
        wait_until(&h2, "server side lost", || {
            s[3..].iter().all(|p| p.is_lost())
        })
        .await;
        for p in &s[3..] {
            assert!(matches!(p.lost(), Some(CloseReason::LocalAbort)));
        }
        server.close();
    });
}

#[test]
fn start_serving_later() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (server, addr, sprobes) = rec_server(
        &h,
        || Rec::new().0,
        ServerOptions::default().start_serving(false),
    );
    assert!(!server.is_serving());
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        // The kernel completes the handshake (backlog), but nobody accepts.
        let (t, p) = connect(&h2, addr, Rec::new().0).await;
        t.write(b"early").unwrap();
        for _ in 0..20 {
            h2.sleep(Duration::from_millis(5)).await;
        }
        assert!(sprobes.borrow().is_empty());
        assert_eq!(server.connection_count(), 0);
        server.start_serving().unwrap();
        server.start_serving().unwrap(); // idempotent
        assert!(server.is_serving());
        wait_until(&h2, "accepted", || sprobes.borrow().len() == 1).await;
        wait_until(&h2, "early data", || sprobes.borrow()[0].data_len() == 5).await;
        assert_eq!(server.connection_count(), 1);
        server.close();
        assert!(matches!(server.start_serving(), Err(Error::Closed)));
        t.close();
        wait_until(&h2, "lost", || p.is_lost()).await;
    });
}

#[test]
fn connection_count_and_wait_closed() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (server, addr, _sprobes) = rec_server(&h, || Rec::new().0, ServerOptions::default());
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        assert_eq!(server.connection_count(), 0);
        let mut conns = Vec::new();
        for i in 1..=3 {
            conns.push(connect(&h2, addr, Rec::new().0).await);
            wait_until(&h2, "count", || server.connection_count() == i).await;
        }
        conns[0].0.close();
        wait_until(&h2, "count 2", || server.connection_count() == 2).await;
        server.close();
        server.close(); // idempotent
        assert!(!server.is_serving());
        // wait_closed waits for the remaining connections.
        let done = Rc::new(Cell::new(false));
        let d = done.clone();
        let waiter = h2.spawn({
            let s = server.clone();
            async move {
                s.wait_closed().await;
                d.set(true);
            }
        });
        for _ in 0..20 {
            h2.sleep(Duration::from_millis(5)).await;
        }
        assert!(!done.get(), "wait_closed resolved with connections open");
        conns[1].0.close();
        conns[2].0.close();
        waiter.await.unwrap();
        assert_eq!(server.connection_count(), 0);
        // Already closed: resolves at once.
        server.wait_closed().await;
    });
}

#[test]
fn a_server_keeps_serving_after_its_handle_is_dropped() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (server, addr) = echo_server(&h);
    drop(server);
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0).await;
        t.write(b"still serving").unwrap();
        wait_until(&h2, "echo", || p.data_len() == 13).await;
        t.close();
    });
}

#[test]
fn a_panicking_protocol_factory_drops_only_that_connection() {
    quiet_expected_panics();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let seen = capture_exceptions(&h);
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let server = h
        .create_server(
            move || {
                c.set(c.get() + 1);
                if c.get() == 1 {
                    panic!("{EXPECTED}: factory");
                }
                Echo::default()
            },
            "127.0.0.1:0",
            ServerOptions::default(),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let (_t1, p1) = connect(&h2, addr, Rec::new().0).await;
        wait_until(&h2, "first dropped", || p1.is_lost()).await;
        let (t2, p2) = connect(&h2, addr, Rec::new().0).await;
        t2.write(b"ok").unwrap();
        wait_until(&h2, "echo", || p2.data_len() == 2).await;
        t2.close();
    });
    assert!(common::reported(&seen, ExceptionKind::ProtocolPanic));
    assert_eq!(calls.get(), 2);
}

#[test]
fn listening_on_an_address_in_use_is_an_error() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let r = h.create_server(
        Echo::default,
        addr,
        ServerOptions::default().reuse_address(false),
    );
    let e = r.unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::AddrInUse), "{e}");
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    assert_eq!(h.stats().sources, 0);
}

#[test]
fn a_server_on_several_addresses_accepts_on_each() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let addrs: Vec<SocketAddr> = vec![
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    ];
    let server = h
        .create_server(Echo::default, &addrs[..], ServerOptions::default())
        .unwrap();
    let local = server.local_addrs();
    assert_eq!(local.len(), 2);
    assert_ne!(local[0], local[1]);
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        for a in local {
            let (t, p) = connect(&h2, a, Rec::new().0).await;
            t.write(b"x").unwrap();
            wait_until(&h2, "echo", || p.data_len() == 1).await;
            t.close();
        }
        server.close();
    });
}

#[test]
fn reuse_port_lets_two_servers_share_a_port() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let opts = ServerOptions::default().reuse_port(true).backlog(16);
    let a = h
        .create_server(Echo::default, "127.0.0.1:0", opts.clone())
        .unwrap();
    let addr = a.local_addrs()[0];
    let b = h.create_server(Echo::default, addr, opts).unwrap();
    assert_eq!(b.local_addrs()[0], addr);
    // Without SO_REUSEPORT the port is taken.
    let e = h
        .create_server(Echo::default, addr, ServerOptions::default())
        .unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::AddrInUse), "{e}");
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0).await;
        t.write(b"x").unwrap();
        wait_until(&h2, "echo", || p.data_len() == 1).await;
        assert_eq!(a.connection_count() + b.connection_count(), 1);
        t.close();
        a.close();
        b.close();
    });
}

#[test]
fn a_hundred_concurrent_clients_each_get_their_own_bytes_back() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (server, addr) = echo_server(&h);
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let mut tasks = Vec::new();
        for i in 0..100u64 {
            let h3 = h2.clone();
            tasks.push(h2.spawn(async move {
                let data = Rng::new(1000 + i).bytes(64 * 1024 + i as usize * 17);
                let (t, p) = connect(&h3, addr, Rec::new().0).await;
                write_with_flow_control(&h3, &t, &p, &data, i).await;
                wait_until(&h3, "echo", || p.data_len() >= data.len()).await;
                assert!(*p.data.borrow() == data, "client {i} got other bytes");
                t.close();
                wait_until(&h3, "lost", || p.is_lost()).await;
                p.check_contract();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        wait_until(&h2, "server side closed", || server.connection_count() == 0).await;
    });
}
