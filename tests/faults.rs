//! Faults over real TCP sockets on loopback: resets mid-stream, a peer
//! that stops reading, a storm of abrupt connections, writes after close,
//! panicking callbacks, and the server idle timeout (in virtual time).
//! Every server protocol runs under a `LifecycleChecker`.

mod peer;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use peer::{Peer, is_peer_reset, payload, wait};
use protoloop::testing::{Event, LifecycleChecker};
use protoloop::{
    CloseReason, ConnectOptions, Error, EventLoop, ExceptionKind, ProtocolHandle, Server,
    ServerOptions, TimeoutKind, Transport,
};

fn serve_with(
    lp: &EventLoop,
    checker: &LifecycleChecker,
    opts: ServerOptions,
    make: impl Fn() -> Peer + 'static,
) -> (Server, SocketAddr) {
    let c = checker.clone();
    let server = lp
        .handle()
        .create_server(move || c.wrap(make()), "127.0.0.1:0", opts)
        .unwrap();
    let addr = server.local_addrs()[0];
    (server, addr)
}

fn serve(
    lp: &EventLoop,
    checker: &LifecycleChecker,
    make: impl Fn() -> Peer + 'static,
) -> (Server, SocketAddr) {
    serve_with(lp, checker, ServerOptions::default(), make)
}

fn echo() -> Peer {
    Peer::new().on_data(|t, d| {
        let _ = t.write(d);
    })
}

fn connect(lp: &EventLoop, addr: SocketAddr, peer: Peer) -> ProtocolHandle<Peer> {
    let (_t, p) = lp
        .run_until_complete(lp.handle().create_connection(
            move || peer,
            addr,
            ConnectOptions::default(),
        ))
        .unwrap()
        .unwrap();
    p
}

/// A protoloop client gets its message echoed back.
fn assert_echoes(lp: &EventLoop, addr: SocketAddr, msg: &'static [u8]) {
    let c = connect(
        lp,
        addr,
        Peer::new().on_made(move |t| t.write(msg).unwrap()),
    );
    wait(lp, "the echo", || c.with(|p| p.got.len()) >= msg.len());
    assert_eq!(c.with(|p| p.got.clone()), msg);
    c.with(|p| p.t.as_ref().unwrap().close());
    wait(lp, "the client to close", || c.with(|p| p.reason.is_some()));
}

fn reset_on_drop(s: &TcpStream) {
    socket2::SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

#[test]
fn a_peer_that_resets_mid_frame() {
    let lp = EventLoop::new().unwrap();
    let ss = LifecycleChecker::new();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    let (server, addr) = serve(&lp, &ss, move || {
        let g = g.clone();
        Peer::new().on_data(move |_, d| g.borrow_mut().extend_from_slice(d))
    });
    let mut client = TcpStream::connect(addr).unwrap();
    // Half of a 2-byte-length-prefixed frame that announces 100 bytes.
    client.write_all(&[0, 100, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    wait(&lp, "the first half", || got.borrow().len() == 10);
    reset_on_drop(&client);
    drop(client);
    wait(&lp, "the reset", || ss.all_lost());
    ss.assert_finished();
    assert!(is_peer_reset(&ss.reasons()[0]), "{:?}", ss.reasons()[0]);
    assert_eq!(
        got.borrow().len(),
        10,
        "what arrived before the reset was delivered"
    );
    // The server goes on.
    let es = LifecycleChecker::new();
    let (echo_server, echo_addr) = serve(&lp, &es, echo);
    assert_echoes(&lp, echo_addr, b"still here");
    server.close();
    echo_server.close();
}

#[test]
fn a_peer_that_stops_reading_pauses_the_writer_with_bounded_memory() {
    let lp = EventLoop::new().unwrap();
    let ss = LifecycleChecker::new();
    let total: usize = 16 * 1024 * 1024;
    let written = Rc::new(Cell::new(0usize));
    let max_buffered = Rc::new(Cell::new(0usize));
    let (w, mb) = (written.clone(), max_buffered.clone());
    let pump = move |t: &Transport| {
        while w.get() < total && t.get_write_buffer_size() <= t.get_write_buffer_limits().0 {
            t.write(&[9u8; 16 * 1024]).unwrap();
            w.set(w.get() + 16 * 1024);
            mb.set(mb.get().max(t.get_write_buffer_size()));
        }
        if w.get() >= total {
            t.close();
        }
    };
    let (server, addr) = serve(&lp, &ss, move || {
        Peer::new().on_made(pump.clone()).on_resume(pump.clone())
    });
    let client = TcpStream::connect(addr).unwrap();
    wait(&lp, "the server to be paused", || {
        ss.connection_count() == 1 && ss.events(0).contains(&Event::PauseWriting)
    });
    // Give the loop time to misbehave: nothing more may be written.
    let before = written.get();
    let waited = Rc::new(Cell::new(false));
    let w2 = waited.clone();
    lp.handle()
        .call_later(Duration::from_millis(200), move || w2.set(true));
    wait(&lp, "200 ms", || waited.get());
    assert_eq!(written.get(), before, "a paused writer wrote more");
    assert!(
        before < total,
        "the kernel took everything; make the test bigger"
    );
    let high = protoloop::transport::DEFAULT_HIGH_WATER;
    assert!(
        max_buffered.get() <= high + 16 * 1024,
        "buffer grew to {}",
        max_buffered.get()
    );
    // Now the client reads everything; the writer resumes and finishes.
    let reader = std::thread::spawn(move || {
        let mut client = client;
        let mut all = Vec::new();
        client.read_to_end(&mut all).unwrap();
        all.len()
    });
    wait(&lp, "the server to finish writing", || ss.all_lost());
    ss.assert_finished();
    assert!(matches!(ss.reasons()[0], Some(CloseReason::LocalClose)));
    assert_eq!(reader.join().unwrap(), total);
    let events = ss.events(0);
    let pauses = events.iter().filter(|e| **e == Event::PauseWriting).count();
    let resumes = events
        .iter()
        .filter(|e| **e == Event::ResumeWriting)
        .count();
    assert!(pauses >= 1);
    assert!(resumes == pauses || resumes + 1 == pauses);
    assert!(max_buffered.get() <= high + 16 * 1024);
    server.close();
}

#[test]
fn a_thousand_abrupt_connections_while_a_client_is_served() {
    let lp = EventLoop::new().unwrap();
    let ss = LifecycleChecker::new();
    let (server, addr) = serve(&lp, &ss, echo);
    // The well-behaved client: 200 numbered requests, one at a time, each
    // echoed before the next is sent.
    let rounds = Rc::new(Cell::new(0u32));
    let r = rounds.clone();
    let pending = Rc::new(RefCell::new(Vec::new()));
    let p = pending.clone();
    let good = connect(
        &lp,
        addr,
        Peer::new()
            .on_made(|t| t.write(&0u32.to_be_bytes()).unwrap())
            .on_data(move |t, d| {
                p.borrow_mut().extend_from_slice(d);
                while p.borrow().len() >= 4 {
                    let n = u32::from_be_bytes(
                        p.borrow_mut()
                            .drain(..4)
                            .collect::<Vec<_>>()
                            .try_into()
                            .unwrap(),
                    );
                    assert_eq!(n, r.get(), "echo out of order");
                    r.set(n + 1);
                    if n + 1 < 200 {
                        t.write(&(n + 1).to_be_bytes()).unwrap();
                    }
                }
            }),
    );
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let storm = std::thread::spawn(move || {
        for batch in 0..20 {
            let mut open = Vec::new();
            for i in 0..50 {
                let mut s = TcpStream::connect(addr).unwrap();
                if (batch + i) % 2 == 0 {
                    let _ = s.write_all(b"half a request");
                }
                reset_on_drop(&s);
                open.push(s);
            }
            drop(open);
        }
        d.store(true, Ordering::SeqCst);
    });
    wait(&lp, "the storm and the 200 rounds", || {
        done.load(Ordering::SeqCst) && rounds.get() == 200
    });
    storm.join().unwrap();
    wait(&lp, "every abrupt connection to be gone", || {
        server.connection_count() == 1 && ss.lost_count() + 1 == ss.connection_count()
    });
    assert_eq!(ss.connection_count(), 1001);
    let good_id = (0..ss.connection_count())
        .find(|&i| ss.reasons()[i].is_none())
        .unwrap();
    for (i, r) in ss.reasons().iter().enumerate() {
        if i != good_id {
            assert!(
                matches!(r, Some(CloseReason::PeerReset(_) | CloseReason::PeerEof)),
                "#{i}: {r:?}"
            );
        }
    }
    good.with(|p| p.t.as_ref().unwrap().close());
    wait(&lp, "the good client to leave", || ss.all_lost());
    ss.assert_finished();
    server.close();
}

#[test]
fn writes_after_close_abort_or_loss_are_refused() {
    let lp = EventLoop::new().unwrap();
    let ss = LifecycleChecker::new();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    let (server, addr) = serve(&lp, &ss, move || {
        let g = g.clone();
        Peer::new().on_data(move |_, d| g.borrow_mut().extend_from_slice(d))
    });
    // Close: what was written before is delivered; later writes fail.
    let c = connect(&lp, addr, Peer::new());
    let t = c.with(|p| p.t.clone().unwrap());
    t.write(&payload(100_000)).unwrap();
    t.close();
    assert!(matches!(t.write(b"late"), Err(Error::Closed)));
    assert!(matches!(t.writelines(&[b"a", b"b"]), Err(Error::Closed)));
    assert!(matches!(
        t.write_bytes(bytes::Bytes::from_static(b"c")),
        Err(Error::Closed)
    ));
    assert!(matches!(t.write_eof(), Err(Error::Closed)));
    wait(&lp, "the server to see the close", || {
        ss.all_lost() && ss.connection_count() == 1
    });
    assert_eq!(*got.borrow(), payload(100_000));
    // The handle outlives the connection and still answers.
    assert!(matches!(t.write(b"later"), Err(Error::Closed)));
    assert!(t.is_closing());
    t.close();
    t.abort();
    // Abort: refused at once.
    let c = connect(&lp, addr, Peer::new());
    let t = c.with(|p| p.t.clone().unwrap());
    t.abort();
    assert!(matches!(t.write(b"x"), Err(Error::Closed)));
    // After write_eof: EofWritten, and the connection stays readable.
    let c = connect(&lp, addr, Peer::new().keep_open());
    let t = c.with(|p| p.t.clone().unwrap());
    t.write_eof().unwrap();
    t.write_eof().unwrap(); // idempotent
    assert!(matches!(t.write(b"x"), Err(Error::EofWritten)));
    // Loss by the peer: the server resets; our next write is refused once
    // the connection is gone.
    wait(&lp, "three server connections", || {
        ss.connection_count() == 3
    });
    server.abort_clients();
    wait(&lp, "the client to see the reset", || {
        c.with(|p| p.reason.is_some())
    });
    assert!(matches!(t.write(b"x"), Err(Error::Closed)));
    wait(&lp, "all server connections gone", || ss.all_lost());
    ss.assert_finished();
    server.close();
}

#[test]
fn panicking_callbacks_abort_only_their_connection() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let reports = Rc::new(RefCell::new(Vec::new()));
    let r = reports.clone();
    h.set_exception_handler(move |ctx| r.borrow_mut().push((ctx.kind, ctx.message.clone())));
    let ss = LifecycleChecker::new();
    let accepted = Rc::new(Cell::new(0));
    let (a, c) = (accepted.clone(), ss.clone());
    // Connection 1 panics in data_received, 2 in connection_made, 3 in the
    // factory, 4 in eof_received, 5 in connection_lost; later ones echo.
    let server = h
        .create_server(
            move || {
                a.set(a.get() + 1);
                match a.get() {
                    1 => c.wrap(Peer::new().on_data(|_, d| {
                        if d.contains(&b'!') {
                            panic!("bad byte");
                        }
                    })),
                    2 => c.wrap(Peer::new().on_made(|_| panic!("no welcome"))),
                    3 => panic!("factory failed"),
                    4 => c.wrap(Peer::new().on_eof(|_| panic!("eof trouble"))),
                    5 => c.wrap(Peer::new().on_lost(|| panic!("lost and panicking"))),
                    _ => c.wrap(echo()),
                }
            },
            "127.0.0.1:0",
            ServerOptions::default(),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    let client = |n: usize, peer: Peer| {
        let c = connect(&lp, addr, peer);
        wait(&lp, "the accept", || accepted.get() == n);
        wait(&lp, "the client's end", || c.with(|p| p.reason.is_some()));
        c.with(|p| p.reason.clone().unwrap())
    };
    // Plain sockets for the two that die before a client could finish
    // connecting (a reset that beats the client's connect check fails
    // create_connection itself, as in asyncio).
    let raw = |n: usize| {
        let mut s = TcpStream::connect(addr).unwrap();
        wait(&lp, "the accept", || accepted.get() == n);
        wait(&lp, "the server's side", || ss.all_lost());
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.read(&mut [0u8; 8]).map_err(|e| e.kind())
    };
    let r1 = client(1, Peer::new().on_made(|t| t.write(b"ok!").unwrap()));
    let r2 = raw(2);
    let r3 = raw(3);
    let r4 = client(
        4,
        Peer::new().keep_open().on_made(|t| t.write_eof().unwrap()),
    );
    let r5 = client(5, Peer::new().on_made(|t| t.close()));
    assert!(is_peer_reset(&Some(r1.clone())), "{r1:?}");
    assert_eq!(r2, Err(std::io::ErrorKind::ConnectionReset));
    assert_eq!(r3, Ok(0), "the socket of a failed factory is closed");
    assert!(is_peer_reset(&Some(r4.clone())), "{r4:?}");
    assert!(matches!(r5, CloseReason::LocalClose), "{r5:?}");
    wait(&lp, "the server's side of all five", || ss.all_lost());
    assert_echoes(&lp, addr, b"the server lives");
    wait(&lp, "the echo connection to go", || ss.all_lost());
    ss.assert_finished();
    let reasons = ss.reasons();
    for (i, what) in [(0, "bad byte"), (1, "no welcome"), (2, "eof trouble")] {
        match &reasons[i] {
            Some(CloseReason::Panic(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("#{i}: {other:?}"),
        }
    }
    assert!(matches!(reasons[3], Some(CloseReason::PeerEof)));
    let reports = reports.borrow();
    for what in [
        "bad byte",
        "no welcome",
        "factory failed",
        "eof trouble",
        "lost and panicking",
    ] {
        assert!(
            reports
                .iter()
                .any(|(k, m)| *k == ExceptionKind::ProtocolPanic && m.contains(what)),
            "{what} not reported: {reports:?}"
        );
    }
    server.close();
}

#[test]
fn an_idle_timeout_closes_silent_connections_in_virtual_time() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    h.set_auto_advance(false);
    let start = h.time();
    let ss = LifecycleChecker::new();
    let got = Rc::new(Cell::new(0usize));
    let g = got.clone();
    let opts = ServerOptions::default().idle_timeout(Duration::from_secs(10));
    let (server, addr) = serve_with(&lp, &ss, opts, move || {
        let g = g.clone();
        Peer::new().on_data(move |_, d| g.set(g.get() + d.len()))
    });
    let mut silent = TcpStream::connect(addr).unwrap();
    wait(&lp, "the silent client", || ss.connection_count() == 1);
    let mut chatty = TcpStream::connect(addr).unwrap();
    wait(&lp, "the chatty client", || ss.connection_count() == 2);
    lp.advance(Duration::from_secs(6)).unwrap();
    assert_eq!(ss.lost_count(), 0);
    chatty.write_all(b"x").unwrap();
    wait(&lp, "the chatty byte", || got.get() == 1);
    assert_eq!(
        h.time() - start,
        Duration::from_secs(6),
        "no time passes while waiting for I/O"
    );
    lp.advance(Duration::from_secs(6)).unwrap();
    // The silent one went at 10 s; the chatty one was active at 6 s.
    assert!(matches!(
        ss.reasons()[0],
        Some(CloseReason::Timeout(TimeoutKind::Idle))
    ));
    assert!(ss.reasons()[1].is_none());
    let mut buf = [0u8; 16];
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        silent.read(&mut buf).unwrap(),
        0,
        "the silent client sees EOF"
    );
    lp.advance(Duration::from_secs(3)).unwrap(); // 15 s
    assert!(ss.reasons()[1].is_none());
    lp.advance(Duration::from_secs(1)).unwrap(); // 16 s = 6 + 10
    assert!(matches!(
        ss.reasons()[1],
        Some(CloseReason::Timeout(TimeoutKind::Idle))
    ));
    ss.assert_finished();
    drop(chatty.write_all(b"y"));
    server.close();
}

#[test]
fn the_idle_timeout_spares_a_protocol_that_paused_reading() {
    let lp = EventLoop::new_virtual().unwrap();
    lp.handle().set_auto_advance(false);
    let ss = LifecycleChecker::new();
    let server_t = Rc::new(RefCell::new(None));
    let st = server_t.clone();
    let opts = ServerOptions::default().idle_timeout(Duration::from_secs(10));
    let (server, addr) = serve_with(&lp, &ss, opts, move || {
        let st = st.clone();
        Peer::new().on_made(move |t| {
            t.pause_reading();
            *st.borrow_mut() = Some(t.clone());
        })
    });
    let _client = TcpStream::connect(addr).unwrap();
    wait(&lp, "the connection", || ss.connection_count() == 1);
    lp.advance(Duration::from_secs(60)).unwrap();
    assert_eq!(
        ss.lost_count(),
        0,
        "paused by the protocol: not the peer's idleness"
    );
    server_t.borrow().as_ref().unwrap().resume_reading();
    lp.advance(Duration::from_secs(10)).unwrap();
    assert!(matches!(
        ss.reasons()[0],
        Some(CloseReason::Timeout(TimeoutKind::Idle))
    ));
    ss.assert_finished();
    server.close();
}

#[test]
fn an_idle_timeout_on_the_real_clock_closes_a_client_that_sends_nothing() {
    let lp = EventLoop::new().unwrap();
    let ss = LifecycleChecker::new();
    let opts = ServerOptions::default().idle_timeout(Duration::from_millis(50));
    let (server, addr) = serve_with(&lp, &ss, opts, Peer::new);
    let client = TcpStream::connect(addr).unwrap();
    wait(&lp, "the idle close", || {
        ss.connection_count() == 1 && ss.all_lost()
    });
    ss.assert_finished();
    assert!(matches!(
        ss.reasons()[0],
        Some(CloseReason::Timeout(TimeoutKind::Idle))
    ));
    let mut client = client;
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(client.read(&mut [0u8; 8]).unwrap(), 0);
    server.close();
}
