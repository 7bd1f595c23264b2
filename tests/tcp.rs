//! TCP over loopback: bulk data, half-close, abort, connect errors and
//! options, close semantics, the server's lifecycle (shutdown, close and
//! abort of clients, start_serving, counts, wait_closed), adopting a
//! socket, switching protocols, buffered reads, writelines, counters
//! and IPv6.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{
    EXPECTED, Echo, Ev, Probe, Rec, Rng, capture_exceptions, quiet_expected_panics, read_to_eof,
    run, turns, wait_until,
};
use protoloop::{
    Buffered, BufferedProtocol, CloseReason, ConnectOptions, Error, EventLoop, ExceptionKind,
    Handle, Protocol, Server, ServerOptions, TimeoutKind, Transport,
};

const LIMIT: Duration = Duration::from_secs(60);

fn echo_server(h: &Handle) -> (Server, SocketAddr) {
    let s = h
        .create_server(Echo::default, "127.0.0.1:0", ServerOptions::default())
        .unwrap();
    let a = s.local_addrs()[0];
    (s, a)
}

/// A server whose protocols are [`Rec`]s built by `make`; their probes
/// are collected in accept order.
fn rec_server(
    h: &Handle,
    make: impl Fn() -> Rec + 'static,
    opts: ServerOptions,
) -> (Server, SocketAddr, Rc<RefCell<Vec<Probe>>>) {
    let probes: Rc<RefCell<Vec<Probe>>> = Rc::default();
    let p = probes.clone();
    let s = h
        .create_server(
            move || {
                let r = make();
                p.borrow_mut().push(r.probe());
                r
            },
            "127.0.0.1:0",
            opts,
        )
        .unwrap();
    let a = s.local_addrs()[0];
    (s, a, probes)
}

async fn connect(h: &Handle, addr: impl Into<protoloop::Address>, rec: Rec) -> (Transport, Probe) {
    let probe = rec.probe();
    let (t, _) = h
        .create_connection(move || rec, addr, ConnectOptions::default())
        .await
        .unwrap();
    (t, probe)
}

/// Write `data` in random-sized chunks, waiting while writing is paused.
async fn write_with_flow_control(h: &Handle, t: &Transport, p: &Probe, data: &[u8], seed: u64) {
    let mut rng = Rng::new(seed);
    let mut off = 0;
    while off < data.len() {
        let n = rng.range(1, 64 * 1024).min(data.len() - off);
        t.write(&data[off..off + n]).unwrap();
        off += n;
        if common::is_paused(p) {
            wait_until(h, "resume_writing", || !common::is_paused(p)).await;
        } else if rng.range(0, 3) == 0 {
            turns(1).await;
        }
    }
}

#[test]
fn ten_megabytes_through_the_echo_server_arrive_byte_exact() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (server, addr) = echo_server(&h);
    let data = Rc::new(Rng::new(42).bytes(10 << 20));
    let h2 = h.clone();
    let d = data.clone();
    let probe = run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0).await;
        write_with_flow_control(&h2, &t, &p, &d, 1).await;
        wait_until(&h2, "the echo", || p.data_len() >= d.len()).await;
        let stats = t.stats();
        assert_eq!(stats.bytes_sent, d.len() as u64);
        assert_eq!(stats.bytes_received, d.len() as u64);
        t.close();
        wait_until(&h2, "lost", || p.is_lost()).await;
        p
    });
    assert_eq!(probe.data_len(), data.len());
    assert!(*probe.data.borrow() == *data, "echoed bytes differ");
    probe.check_contract();
    assert!(matches!(probe.lost(), Some(CloseReason::LocalClose)));
    server.close();
}

#[test]
fn client_write_eof_while_the_server_keeps_writing() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let reply = Rc::new(Rng::new(5).bytes(1 << 20));
    let r = reply.clone();
    let (_server, addr, sprobes) = rec_server(
        &h,
        move || {
            let r = r.clone();
            // eof_received returns true: our write side stays open.
            Rec::new().0.on_eof(move |t| {
                t.write(&r).unwrap();
                t.close();
                true
            })
        },
        ServerOptions::default(),
    );
    let h2 = h.clone();
    let (client, server) = run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0).await;
        t.write(b"request").unwrap();
        t.write_eof().unwrap();
        assert!(matches!(t.write(b"x"), Err(Error::EofWritten)));
        assert!(t.is_reading(), "write_eof stopped reading");
        wait_until(&h2, "client lost", || p.is_lost()).await;
        wait_until(&h2, "server lost", || sprobes.borrow()[0].is_lost()).await;
        let s = sprobes.borrow()[0].clone();
        (p, s)
    });
    assert_eq!(*server.data.borrow(), b"request");
    assert!(*client.data.borrow() == *reply);
    client.check_contract();
    server.check_contract();
    assert!(matches!(server.lost(), Some(CloseReason::LocalClose)));
    assert!(client.got_eof());
}

#[test]
fn server_write_eof_while_the_client_keeps_writing() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(
        &h,
        || {
            Rec::new().0.on_made(|t| {
                t.write(b"hello").unwrap();
                t.write_eof().unwrap();
            })
        },
        ServerOptions::default(),
    );
    let upload = Rc::new(Rng::new(9).bytes(1 << 20));
    let u = upload.clone();
    let h2 = h.clone();
    let (client, server) = run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0.on_eof(|_| true)).await;
        wait_until(&h2, "server's EOF", || p.got_eof()).await;
        assert_eq!(*p.data.borrow(), b"hello");
        assert!(
            !t.is_closing(),
            "eof_received returned true but the transport closed"
        );
        write_with_flow_control(&h2, &t, &p, &u, 2).await;
        t.close();
        wait_until(&h2, "client lost", || p.is_lost()).await;
        wait_until(&h2, "server lost", || sprobes.borrow()[0].is_lost()).await;
        let s = sprobes.borrow()[0].clone();
        (p, s)
    });
    assert!(*server.data.borrow() == *upload);
    client.check_contract();
    server.check_contract();
    assert!(server.got_eof());
    assert!(matches!(client.lost(), Some(CloseReason::LocalClose)));
}

#[test]
fn both_sides_write_eof_and_the_connection_closes() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(
        &h,
        || {
            Rec::new().0.on_eof(|t| {
                t.write(b"last").unwrap();
                t.write_eof().unwrap();
                true
            })
        },
        ServerOptions::default(),
    );
    let h2 = h.clone();
    let (client, server) = run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0.on_eof(|_| true)).await;
        t.write_eof().unwrap();
        wait_until(&h2, "client lost", || p.is_lost()).await;
        wait_until(&h2, "server lost", || sprobes.borrow()[0].is_lost()).await;
        let s = sprobes.borrow()[0].clone();
        (p, s)
    });
    assert_eq!(*client.data.borrow(), b"last");
    client.check_contract();
    server.check_contract();
    assert!(!client.lost().unwrap().is_error(), "{:?}", client.lost());
    assert!(!server.lost().unwrap().is_error(), "{:?}", server.lost());
}

#[test]
fn abort_gives_the_peer_a_reset() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(
        &h,
        || Rec::new().0.on_data(|t, _, _| t.abort()),
        ServerOptions::default(),
    );
    let h2 = h.clone();
    let server = run(&lp, LIMIT, async move {
        let mut peer = TcpStream::connect(addr).unwrap();
        peer.write_all(b"please abort").unwrap();
        wait_until(&h2, "server lost", || {
            sprobes.borrow().first().is_some_and(|p| p.is_lost())
        })
        .await;
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let r = peer.read(&mut [0; 16]);
        match r {
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
            Ok(n) => panic!("peer read {n} bytes instead of a reset"),
        }
        sprobes.borrow()[0].clone()
    });
    assert!(matches!(server.lost(), Some(CloseReason::LocalAbort)));
    server.check_contract();
}

#[test]
fn a_reset_from_the_peer_is_peer_reset() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(&h, || Rec::new().0, ServerOptions::default());
    let h2 = h.clone();
    let server = run(&lp, LIMIT, async move {
        let peer = TcpStream::connect(addr).unwrap();
        wait_until(&h2, "accepted", || !sprobes.borrow().is_empty()).await;
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
        wait_until(&h2, "server lost", || sprobes.borrow()[0].is_lost()).await;
        sprobes.borrow()[0].clone()
    });
    assert!(
        matches!(server.lost(), Some(CloseReason::PeerReset(_))),
        "{:?}",
        server.lost()
    );
}

#[test]
fn connection_refused_is_a_typed_error() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    // Bound but not listening: connecting is refused.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let h2 = h.clone();
    let r = run(&lp, LIMIT, async move {
        h2.create_connection(|| Rec::new().0, addr, ConnectOptions::default())
            .await
            .map(|_| ())
    });
    let e = r.unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::ConnectionRefused), "{e}");
    match &e {
        Error::Connect { target, attempts } => {
            assert_eq!(target, &addr.to_string());
            assert_eq!(attempts.len(), 1);
            assert_eq!(attempts[0].0, addr);
        }
        other => panic!("expected Error::Connect, got {other:?}"),
    }
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    assert_eq!(h.stats().sources, 0, "failed connect left a source behind");
}

#[test]
fn every_address_is_tried_and_every_failure_reported() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let refusing: Vec<_> = (0..2)
        .map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
                .unwrap();
            s
        })
        .collect();
    let bad: Vec<SocketAddr> = refusing
        .iter()
        .map(|s| s.local_addr().unwrap().as_socket().unwrap())
        .collect();
    let (_server, good) = echo_server(&h);
    let h2 = h.clone();
    let b = bad.clone();
    run(&lp, LIMIT, async move {
        // All failing: both errors listed.
        let e = h2
            .create_connection(|| Rec::new().0, b.clone(), ConnectOptions::default())
            .await
            .map(|_| ())
            .unwrap_err();
        match &e {
            Error::Connect { attempts, .. } => {
                let tried: Vec<_> = attempts.iter().map(|(a, _)| *a).collect();
                assert_eq!(tried, b);
            }
            other => panic!("{other:?}"),
        }
        // A good address after bad ones is reached.
        let mut list = b.clone();
        list.push(good);
        let (t, p) = connect(&h2, list, Rec::new().0).await;
        assert_eq!(t.peer_addr().unwrap().as_inet(), Some(good));
        t.write(b"x").unwrap();
        wait_until(&h2, "echo", || p.data_len() == 1).await;
        t.close();
    });
    drop(refusing);
}

#[test]
fn an_unresolvable_host_is_a_resolve_error() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let h2 = h.clone();
    let (a, b) = run(&lp, LIMIT, async move {
        let a = h2
            .create_connection(
                || Rec::new().0,
                ("no-such-host.invalid", 80),
                ConnectOptions::default(),
            )
            .await
            .map(|_| ());
        let b = h2
            .create_connection(
                || Rec::new().0,
                "no-such-host.invalid:80",
                ConnectOptions::default(),
            )
            .await
            .map(|_| ());
        (a, b)
    });
    for r in [a, b] {
        match r {
            Err(Error::Resolve { target, .. }) => assert!(target.contains("no-such-host.invalid")),
            other => panic!("expected Error::Resolve, got {other:?}"),
        }
    }
}

#[test]
fn localhost_resolves_and_connects() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr) = echo_server(&h);
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let (t1, p1) = connect(&h2, ("localhost", addr.port()), Rec::new().0).await;
        let (t2, p2) = connect(&h2, format!("localhost:{}", addr.port()), Rec::new().0).await;
        for (t, p) in [(&t1, &p1), (&t2, &p2)] {
            t.write(b"hi").unwrap();
            wait_until(&h2, "echo", || p.data_len() == 2).await;
            assert_eq!(t.peer_addr().unwrap().as_inet(), Some(addr));
            t.close();
        }
    });
}

#[test]
fn connect_timeout_gives_up_on_an_unanswered_connect() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    // A listener that never accepts, with the smallest backlog: once its
    // queue is full the kernel ignores further SYNs, so connects hang.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let h2 = h.clone();
    let opts = ConnectOptions::default().timeout(Duration::from_millis(300));
    let e = run(&lp, LIMIT, async move {
        let mut kept = Vec::new();
        for _ in 0..16 {
            match h2
                .create_connection(|| Rec::new().0, addr, opts.clone())
                .await
            {
                Ok(c) => kept.push(c), // still room in the queue
                Err(e) => return e,
            }
        }
        panic!("16 connects to a full backlog all succeeded");
    });
    assert_eq!(e.io_kind(), Some(ErrorKind::TimedOut), "{e}");
    assert!(matches!(e, Error::Connect { .. }));
    drop(sock);
}

#[test]
fn connect_with_a_local_address() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr) = echo_server(&h);
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let opts = ConnectOptions::default()
            .local_addr("127.0.0.1:0".parse().unwrap())
            .nodelay(false);
        let (t, _) = h2
            .create_connection(|| Rec::new().0, addr, opts)
            .await
            .unwrap();
        let local = t.local_addr().unwrap().as_inet().unwrap();
        assert!(local.ip().is_loopback() && local.port() != 0);
        t.close();
    });
}

#[test]
fn close_delivers_everything_written_before_it() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let payload = Rc::new(Rng::new(11).bytes(6 << 20));
    let pl = payload.clone();
    let (_server, addr, sprobes) = rec_server(
        &h,
        move || {
            let pl = pl.clone();
            Rec::new().0.on_made(move |t| {
                // Several writes, far more than the kernel takes at once,
                // then close at once.
                for c in pl.chunks(1 << 20) {
                    t.write(c).unwrap();
                }
                t.close();
                assert!(t.is_closing());
            })
        },
        ServerOptions::default(),
    );
    let h2 = h.clone();
    let (got, server) = run(&lp, LIMIT, async move {
        let mut peer = TcpStream::connect(addr).unwrap();
        let got = read_to_eof(&h2, &mut peer).await.unwrap();
        wait_until(&h2, "server lost", || sprobes.borrow()[0].is_lost()).await;
        let s = sprobes.borrow()[0].clone();
        (got, s)
    });
    assert_eq!(got.len(), payload.len());
    assert!(got == *payload);
    assert!(matches!(server.lost(), Some(CloseReason::LocalClose)));
    server.check_contract();
}

#[test]
fn close_with_deadline_aborts_when_the_peer_does_not_read() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(
        &h,
        || {
            Rec::new().0.on_made(|t| {
                t.write(&vec![0; 16 << 20]).unwrap();
                t.close_with_deadline(Duration::from_millis(200));
                t.close_with_deadline(Duration::from_secs(100)); // no effect
            })
        },
        ServerOptions::default(),
    );
    let h2 = h.clone();
    let server = run(&lp, LIMIT, async move {
        let mut peer = TcpStream::connect(addr).unwrap();
        wait_until(&h2, "server lost", || {
            sprobes.borrow().first().is_some_and(|p| p.is_lost())
        })
        .await;
        // The peer gets part of the data, then a reset, never a clean EOF.
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut total = 0;
        let mut buf = vec![0; 1 << 16];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => panic!("clean EOF after {total} bytes; expected a reset"),
                Ok(n) => total += n,
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
                    break;
                }
            }
        }
        assert!(total < 16 << 20);
        sprobes.borrow()[0].clone()
    });
    assert!(
        matches!(
            server.lost(),
            Some(CloseReason::Timeout(TimeoutKind::Close))
        ),
        "{:?}",
        server.lost()
    );
}

#[test]
fn close_with_deadline_closes_normally_when_flushed_in_time() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(
        &h,
        || {
            Rec::new().0.on_made(|t| {
                t.write(&[3; 100_000]).unwrap();
                t.close_with_deadline(Duration::from_secs(30));
            })
        },
        ServerOptions::default(),
    );
    let h2 = h.clone();
    let (got, server) = run(&lp, LIMIT, async move {
        let mut peer = TcpStream::connect(addr).unwrap();
        let got = read_to_eof(&h2, &mut peer).await.unwrap();
        wait_until(&h2, "lost", || sprobes.borrow()[0].is_lost()).await;
        let s = sprobes.borrow()[0].clone();
        (got, s)
    });
    assert_eq!(got, vec![3; 100_000]);
    assert!(matches!(server.lost(), Some(CloseReason::LocalClose)));
    // The deadline timer went with the connection.
    assert_eq!(h.stats().ready, 0);
}

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
fn connect_accepted_socket_runs_a_protocol_on_a_std_stream() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (ours, mut peer) = common::socket_pair();
    let peer_addr = peer.local_addr().unwrap();
    let (t, proto) = h.connect_accepted_socket(Echo::default(), ours).unwrap();
    assert_eq!(t.peer_addr().unwrap().as_inet(), Some(peer_addr));
    proto.with(|_echo| {});
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        peer.write_all(b"adopted").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        let got = read_to_eof(&h2, &mut peer).await.unwrap();
        assert_eq!(got, b"adopted");
    });
}

/// Speaks "line" until it sees "UPGRADE", then hands the connection to
/// an [`Upper`] protocol that answers in upper case.
struct Lines {
    t: Option<Transport>,
    lost: Rc<RefCell<Vec<String>>>,
}

struct Upper {
    t: Transport,
    lost: Rc<RefCell<Vec<String>>>,
}

impl Protocol for Lines {
    fn connection_made(&mut self, t: Transport) {
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        let t = self.t.as_ref().unwrap();
        if data == b"UPGRADE" {
            t.write(b"switching").unwrap();
            t.set_protocol(Rc::new(RefCell::new(Upper {
                t: t.clone(),
                lost: self.lost.clone(),
            })));
        } else {
            t.write(data).unwrap();
        }
    }
    fn connection_lost(&mut self, _: CloseReason) {
        self.lost.borrow_mut().push("lines".into());
    }
}

impl Protocol for Upper {
    fn data_received(&mut self, data: &[u8]) {
        self.t.write(&data.to_ascii_uppercase()).unwrap();
    }
    fn connection_lost(&mut self, _: CloseReason) {
        self.lost.borrow_mut().push("upper".into());
    }
}

#[test]
fn set_protocol_switches_protocols_mid_connection() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let lost = Rc::new(RefCell::new(Vec::new()));
    let l = lost.clone();
    let server = h
        .create_server(
            move || Lines {
                t: None,
                lost: l.clone(),
            },
            "127.0.0.1:0",
            ServerOptions::default(),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    let h2 = h.clone();
    let l = lost.clone();
    run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0).await;
        t.write(b"abc").unwrap();
        wait_until(&h2, "echo", || p.data_len() == 3).await;
        t.write(b"UPGRADE").unwrap();
        wait_until(&h2, "switch", || p.data_len() == 12).await;
        t.write(b"abc").unwrap();
        wait_until(&h2, "upper", || p.data_len() == 15).await;
        assert_eq!(*p.data.borrow(), b"abcswitchingABC");
        t.close();
        wait_until(&h2, "server lost", || !l.borrow().is_empty()).await;
    });
    // Only the current protocol hears about the end.
    assert_eq!(*lost.borrow(), ["upper"]);
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

#[test]
fn writelines_sends_every_chunk_in_order() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(&h, || Rec::new().0, ServerOptions::default());
    let mut rng = Rng::new(77);
    // More chunks than one writev takes, some empty, some large.
    let chunks: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            let n = match i % 10 {
                0 => 0,
                1 => rng.range(100_000, 300_000),
                _ => rng.range(1, 2000),
            };
            rng.bytes(n)
        })
        .collect();
    let want: Vec<u8> = chunks.concat();
    let h2 = h.clone();
    let w = want.clone();
    let got = run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0).await;
        let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        t.writelines(&refs[..150]).unwrap();
        t.writelines(&[]).unwrap();
        t.writelines(&refs[150..]).unwrap();
        t.close();
        wait_until(&h2, "server got all", || {
            sprobes.borrow().first().is_some_and(|s| s.is_lost())
        })
        .await;
        assert_eq!(t.stats().bytes_sent, w.len() as u64);
        wait_until(&h2, "client lost", || p.is_lost()).await;
        sprobes.borrow()[0].clone()
    });
    assert_eq!(got.data_len(), want.len());
    assert!(*got.data.borrow() == want);
}

#[test]
fn big_writes_are_flushed_with_no_other_traffic() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(&h, || Rec::new().0, ServerOptions::default());
    let data = Rc::new(Rng::new(8).bytes(8 << 20));
    let d = data.clone();
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let (t, _p) = connect(&h2, addr, Rec::new().0).await;
        wait_until(&h2, "accepted", || sprobes.borrow().len() == 1).await;
        // Nothing else happens on this connection: only writable edges
        // can move the rest of the buffer.
        t.write(&d[..3 << 20]).unwrap();
        t.writelines(&[&d[3 << 20..5 << 20], &d[5 << 20..]])
            .unwrap();
        let s = sprobes.borrow()[0].clone();
        wait_until(&h2, "all bytes at the server", || s.data_len() == d.len()).await;
        assert!(*s.data.borrow() == *d);
        assert_eq!(t.get_write_buffer_size(), 0);
        t.close();
    });
}

#[test]
fn byte_counters_and_addresses_match_on_both_ends() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(
        &h,
        || {
            Rec::new().0.on_data(|t, d, _| {
                t.write(d).unwrap();
                t.write(d).unwrap();
            })
        },
        ServerOptions::default(),
    );
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0).await;
        for n in [1usize, 10, 1000, 100_000] {
            t.write(&vec![1; n]).unwrap();
        }
        let sent = 1 + 10 + 1000 + 100_000;
        wait_until(&h2, "echo", || p.data_len() == 2 * sent).await;
        let s = sprobes.borrow()[0].clone();
        let st = s.transport();
        assert_eq!(t.stats().bytes_sent, sent as u64);
        assert_eq!(t.stats().bytes_received, 2 * sent as u64);
        assert_eq!(st.stats().bytes_received, sent as u64);
        assert_eq!(st.stats().bytes_sent, 2 * sent as u64);
        let (cl, cp) = (t.local_addr().unwrap(), t.peer_addr().unwrap());
        assert_eq!(cp.as_inet(), Some(addr));
        assert_eq!(st.local_addr().unwrap().as_inet(), Some(addr));
        assert_eq!(st.peer_addr().unwrap().as_inet(), cl.as_inet());
        let peername = t.extra("peername").unwrap();
        let peername = peername.downcast_ref::<protoloop::SocketAddress>().unwrap();
        assert_eq!(peername.as_inet(), Some(addr));
        assert!(t.extra("no such key").is_none());
        t.close();
    });
}

#[test]
fn ipv6_loopback() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let server = match h.create_server(Echo::default, "[::1]:0", ServerOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping ipv6_loopback: cannot listen on [::1]: {e}");
            return;
        }
    };
    let addr = server.local_addrs()[0];
    assert!(addr.is_ipv6());
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0).await;
        t.write(b"over v6").unwrap();
        wait_until(&h2, "echo", || p.data_len() == 7).await;
        assert!(t.local_addr().unwrap().as_inet().unwrap().is_ipv6());
        t.close();
        server.close();
    });
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
fn a_cancelled_connect_leaves_nothing_registered() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    // A full backlog: connects hang until cancelled.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let mut kept = Vec::new();
        let mut cancelled = 0;
        for _ in 0..16 {
            let before = h2.stats().sources;
            let connect = h2.create_connection(|| Rec::new().0, addr, ConnectOptions::default());
            match h2.timeout(Duration::from_millis(200), connect).await {
                Ok(c) => kept.push(c.unwrap()),
                Err(_) => {
                    cancelled += 1;
                    assert_eq!(
                        h2.stats().sources,
                        before,
                        "cancelled connect left its source"
                    );
                    if cancelled == 2 {
                        return;
                    }
                }
            }
        }
        panic!("no connect hung on a full backlog");
    });
    drop(sock);
}

#[test]
fn closing_the_loop_closes_its_connections() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr) = echo_server(&h);
    let mut peer = TcpStream::connect(addr).unwrap();
    let (ours, adopted_peer) = common::socket_pair();
    // Protocols that keep their transport: a reference cycle that only
    // the loop can break.
    h.connect_accepted_socket(Echo::default(), ours).unwrap();
    let h2 = h.clone();
    let (mut peer, mut adopted_peer) = run(&lp, LIMIT, async move {
        peer.write_all(b"x").unwrap();
        let got = {
            peer.set_nonblocking(true).unwrap();
            let mut got = Vec::new();
            wait_until(&h2, "echo", || {
                common::read_available(&mut peer, &mut got).unwrap();
                !got.is_empty()
            })
            .await;
            got
        };
        assert_eq!(got, b"x");
        peer.set_nonblocking(false).unwrap();
        (peer, adopted_peer)
    });
    drop(h);
    drop(lp);
    // Both peers see the connection end (EOF or reset), not silence.
    for p in [&mut peer, &mut adopted_peer] {
        p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        match p.read(&mut [0; 8]) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("peer read {other:?} after the loop was dropped"),
        }
    }
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

#[test]
fn a_server_that_closes_in_connection_made() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(
        &h,
        || {
            Rec::new().0.on_made(|t| {
                t.write(b"go away").unwrap();
                t.close();
            })
        },
        ServerOptions::default(),
    );
    let h2 = h.clone();
    let client = run(&lp, LIMIT, async move {
        let (_t, p) = connect(&h2, addr, Rec::new().0).await;
        wait_until(&h2, "client lost", || p.is_lost()).await;
        wait_until(&h2, "server lost", || sprobes.borrow()[0].is_lost()).await;
        sprobes.borrow()[0].check_contract();
        p
    });
    client.check_contract();
    assert_eq!(*client.data.borrow(), b"go away");
    assert!(matches!(client.lost(), Some(CloseReason::PeerEof)));
}
