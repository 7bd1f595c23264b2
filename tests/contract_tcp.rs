//! The TCP transport keeps the callback contract: echo, close, abort,
//! half-close and flow-control scenarios on loopback, every protocol on
//! both sides wrapped in a `LifecycleChecker`.

mod peer;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use peer::{Peer, is_peer_reset, payload, wait};
use protoloop::testing::{Checked, Event, LifecycleChecker};
use protoloop::{
    Buffered, BufferedProtocol, CloseReason, ConnectOptions, EventLoop, ProtocolHandle, Server,
    ServerOptions,
};

fn serve(
    lp: &EventLoop,
    checker: &LifecycleChecker,
    make: impl Fn() -> Peer + 'static,
) -> (Server, SocketAddr) {
    let c = checker.clone();
    let server = lp
        .handle()
        .create_server(
            move || c.wrap(make()),
            "127.0.0.1:0",
            ServerOptions::default(),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    (server, addr)
}

fn connect(
    lp: &EventLoop,
    checker: &LifecycleChecker,
    addr: SocketAddr,
    peer: Peer,
) -> ProtocolHandle<Checked<Peer>> {
    let c = checker.clone();
    let (_t, p) = lp
        .run_until_complete(lp.handle().create_connection(
            move || c.wrap(peer),
            addr,
            ConnectOptions::default(),
        ))
        .unwrap()
        .unwrap();
    p
}

/// Both checkers finished cleanly, after waiting for every connection to
/// be lost.
#[track_caller]
fn finish(lp: &EventLoop, checkers: &[&LifecycleChecker]) {
    let all_lost = || checkers.iter().all(|c| c.all_lost());
    if lp.run_until(Duration::from_secs(20), all_lost).is_err() {
        let mut state = String::new();
        for (n, c) in checkers.iter().enumerate() {
            for id in 0..c.connection_count() {
                state.push_str(&format!("\n  checker {n} #{id}: {:?}", c.events(id)));
            }
        }
        panic!("timed out waiting for every connection to be lost:{state}");
    }
    for c in checkers {
        c.assert_finished();
    }
}

#[test]
fn echo_a_megabyte_then_close() {
    let lp = EventLoop::new().unwrap();
    let (cs, ss) = (LifecycleChecker::new(), LifecycleChecker::new());
    let (server, addr) = serve(&lp, &ss, || Peer::new().on_data(|t, d| t.write(d).unwrap()));
    let data = payload(1024 * 1024);
    let d = data.clone();
    let client = connect(
        &lp,
        &cs,
        addr,
        Peer::new().on_made(move |t| t.write(&d).unwrap()),
    );
    wait(&lp, "the echo", || {
        client.with(|p| p.got.len()) >= data.len()
    });
    assert_eq!(client.with(|p| p.got.clone()), data);
    client.with(|p| p.t.as_ref().unwrap().close());
    finish(&lp, &[&cs, &ss]);
    assert!(matches!(cs.reasons()[0], Some(CloseReason::LocalClose)));
    assert!(matches!(ss.reasons()[0], Some(CloseReason::PeerEof)));
    assert_eq!(ss.connection_count(), 1);
    server.close();
}

#[test]
fn a_server_that_writes_and_closes_at_once() {
    let lp = EventLoop::new().unwrap();
    let (cs, ss) = (LifecycleChecker::new(), LifecycleChecker::new());
    let (server, addr) = serve(&lp, &ss, || {
        Peer::new().on_made(|t| {
            t.write(b"hello and goodbye").unwrap();
            t.close();
        })
    });
    let client = connect(&lp, &cs, addr, Peer::new());
    finish(&lp, &[&cs, &ss]);
    client.with(|p| {
        assert_eq!(p.got, b"hello and goodbye");
        assert_eq!(p.eofs, 1);
    });
    assert!(matches!(cs.reasons()[0], Some(CloseReason::PeerEof)));
    assert!(matches!(ss.reasons()[0], Some(CloseReason::LocalClose)));
    server.close();
}

#[test]
fn abort_resets_the_peer() {
    let lp = EventLoop::new().unwrap();
    let (cs, ss) = (LifecycleChecker::new(), LifecycleChecker::new());
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    let (server, addr) = serve(&lp, &ss, move || {
        let g = g.clone();
        Peer::new().on_data(move |_, d| g.borrow_mut().extend_from_slice(d))
    });
    let client = connect(
        &lp,
        &cs,
        addr,
        Peer::new().on_made(|t| t.write(b"partial fr").unwrap()),
    );
    wait(&lp, "the partial frame", || got.borrow().len() == 10);
    client.with(|p| p.t.as_ref().unwrap().abort());
    finish(&lp, &[&cs, &ss]);
    assert!(matches!(cs.reasons()[0], Some(CloseReason::LocalAbort)));
    assert!(is_peer_reset(&ss.reasons()[0]), "{:?}", ss.reasons()[0]);
    assert!(!ss.events(0).contains(&Event::EofReceived));
    server.close();
}

#[test]
fn half_close_then_answer() {
    let lp = EventLoop::new().unwrap();
    let (cs, ss) = (LifecycleChecker::new(), LifecycleChecker::new());
    let (server, addr) = serve(&lp, &ss, || {
        let question = Rc::new(RefCell::new(Vec::new()));
        let q = question.clone();
        Peer::new()
            .keep_open()
            .on_data(move |_, d| q.borrow_mut().extend_from_slice(d))
            .on_eof(move |t| {
                let mut answer = b"you said: ".to_vec();
                answer.extend_from_slice(&question.borrow());
                t.write(&answer).unwrap();
                t.close();
            })
    });
    let client = connect(
        &lp,
        &cs,
        addr,
        Peer::new().on_made(|t| {
            t.write(b"why?").unwrap();
            t.write_eof().unwrap();
        }),
    );
    finish(&lp, &[&cs, &ss]);
    client.with(|p| assert_eq!(p.got, b"you said: why?"));
    assert!(matches!(ss.reasons()[0], Some(CloseReason::LocalClose)));
    assert!(matches!(cs.reasons()[0], Some(CloseReason::PeerEof)));
    server.close();
}

#[test]
fn data_and_eof_arriving_together_are_both_delivered() {
    // The client's bytes and FIN are both queued before the server's first
    // read, so one edge announces both; a short read must not be taken for
    // "drained" then, or the EOF is never seen.
    let lp = EventLoop::new().unwrap();
    let ss = LifecycleChecker::new();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    let (server, addr) = serve(&lp, &ss, move || {
        let g = g.clone();
        Peer::new().on_data(move |_, d| g.borrow_mut().extend_from_slice(d))
    });
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"abc").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        clients.push(c);
    }
    wait(&lp, "20 connections", || ss.connection_count() == 20);
    finish(&lp, &[&ss]);
    assert_eq!(ss.connection_count(), 20);
    assert!(
        ss.reasons()
            .iter()
            .all(|r| matches!(r, Some(CloseReason::PeerEof)))
    );
    assert_eq!(got.borrow().len(), 60);
    // Each client sees our EOF in turn.
    for mut c in clients {
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
    server.close();
}

#[test]
fn a_paused_server_pauses_the_client_writer_and_both_resume() {
    let lp = EventLoop::new().unwrap();
    let (cs, ss) = (LifecycleChecker::new(), LifecycleChecker::new());
    let received = Rc::new(Cell::new(0usize));
    let server_t = Rc::new(RefCell::new(None));
    let (r, st) = (received.clone(), server_t.clone());
    let (server, addr) = serve(&lp, &ss, move || {
        let (r, st) = (r.clone(), st.clone());
        Peer::new()
            .on_made(move |t| {
                t.pause_reading();
                *st.borrow_mut() = Some(t.clone());
            })
            .on_data(move |_, d| r.set(r.get() + d.len()))
    });
    let total = Rc::new(Cell::new(0usize));
    let tot = total.clone();
    // Writes 64 KiB chunks until its buffer passes the high mark.
    let pump = move |t: &protoloop::Transport| {
        while t.get_write_buffer_size() <= t.get_write_buffer_limits().0 {
            t.write(&[1u8; 65536]).unwrap();
            tot.set(tot.get() + 65536);
            assert!(
                tot.get() < 256 * 1024 * 1024,
                "the kernel never pushed back"
            );
        }
    };
    let client = connect(&lp, &cs, addr, Peer::new().on_made(pump.clone()));
    wait(&lp, "pause_writing", || client.with(|p| p.pauses) == 1);
    assert_eq!(received.get(), 0);
    server_t.borrow().as_ref().unwrap().resume_reading();
    wait(&lp, "the server to read it all", || {
        received.get() == total.get()
    });
    client.with(|p| assert_eq!((p.pauses, p.resumes), (1, 1)));
    client.with(|p| p.t.as_ref().unwrap().close());
    finish(&lp, &[&cs, &ss]);
    server.close();
}

/// A buffered protocol lending a small buffer, counting what it got.
struct Lender {
    buf: Vec<u8>,
    total: Rc<Cell<usize>>,
}
impl BufferedProtocol for Lender {
    fn get_buffer(&mut self, _hint: usize) -> &mut [u8] {
        &mut self.buf
    }
    fn buffer_updated(&mut self, n: usize) {
        self.total.set(self.total.get() + n);
    }
}

#[test]
fn a_buffered_protocol_is_read_into_its_own_buffer() {
    let lp = EventLoop::new().unwrap();
    let (cs, ss) = (LifecycleChecker::new(), LifecycleChecker::new());
    let total = Rc::new(Cell::new(0));
    let t = total.clone();
    let c = ss.clone();
    let server = lp
        .handle()
        .create_server(
            move || {
                c.wrap(Buffered(Lender {
                    buf: vec![0; 1000],
                    total: t.clone(),
                }))
            },
            "127.0.0.1:0",
            ServerOptions::default(),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    let client = connect(
        &lp,
        &cs,
        addr,
        Peer::new().on_made(|t| {
            t.write(&payload(300_000)).unwrap();
            t.close();
        }),
    );
    finish(&lp, &[&cs, &ss]);
    assert_eq!(total.get(), 300_000);
    for e in ss.events(0) {
        if let Event::BufferUpdated(n) | Event::GetBuffer(Some(n)) = e {
            assert!(n <= 1000);
        }
    }
    drop(client);
    server.close();
}

/// Lends an empty buffer: the transport used to read 0 bytes into it and
/// take that for EOF.
struct EmptyLender;
impl protoloop::Protocol for EmptyLender {
    fn data_received(&mut self, _: &[u8]) {}
    fn get_buffer(&mut self, _hint: usize) -> Option<&mut [u8]> {
        Some(&mut [])
    }
}

#[test]
fn an_empty_lent_buffer_aborts_instead_of_faking_eof() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let reports = Rc::new(RefCell::new(Vec::new()));
    let r = reports.clone();
    h.set_exception_handler(move |ctx| r.borrow_mut().push(ctx.message.clone()));
    let (cs, ss) = (LifecycleChecker::new(), LifecycleChecker::new());
    let c = ss.clone();
    let server = h
        .create_server(
            move || c.wrap(EmptyLender),
            "127.0.0.1:0",
            ServerOptions::default(),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    let _client = connect(
        &lp,
        &cs,
        addr,
        Peer::new().on_made(|t| t.write(b"x").unwrap()),
    );
    finish(&lp, &[&cs, &ss]);
    assert!(
        !ss.events(0).contains(&Event::EofReceived),
        "{:?}",
        ss.events(0)
    );
    match &ss.reasons()[0] {
        Some(CloseReason::Protocol(e)) => assert!(e.to_string().contains("empty buffer")),
        other => panic!("expected an abort with a protocol error, got {other:?}"),
    }
    assert!(is_peer_reset(&cs.reasons()[0]), "{:?}", cs.reasons()[0]);
    assert!(reports.borrow().iter().any(|m| m.contains("empty buffer")));
    server.close();
}

#[test]
fn close_clients_and_abort_clients_finish_every_connection() {
    let lp = EventLoop::new().unwrap();
    let (cs, ss) = (LifecycleChecker::new(), LifecycleChecker::new());
    let (server, addr) = serve(&lp, &ss, Peer::new);
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(connect(&lp, &cs, addr, Peer::new()));
    }
    wait(&lp, "five accepted connections", || {
        server.connection_count() == 5
    });
    server.close_clients();
    finish(&lp, &[&cs, &ss]);
    assert!(
        ss.reasons()
            .iter()
            .all(|r| matches!(r, Some(CloseReason::LocalClose)))
    );
    assert!(
        cs.reasons()
            .iter()
            .all(|r| matches!(r, Some(CloseReason::PeerEof)))
    );

    let (cs2, ss2) = (LifecycleChecker::new(), LifecycleChecker::new());
    let (server2, addr2) = serve(&lp, &ss2, Peer::new);
    for _ in 0..5 {
        clients.push(connect(&lp, &cs2, addr2, Peer::new()));
    }
    wait(&lp, "five more", || server2.connection_count() == 5);
    server2.abort_clients();
    finish(&lp, &[&cs2, &ss2]);
    assert!(
        ss2.reasons()
            .iter()
            .all(|r| matches!(r, Some(CloseReason::LocalAbort)))
    );
    assert!(cs2.reasons().iter().all(is_peer_reset));
    server.close();
    server2.close();
}

#[test]
fn graceful_shutdown_asks_each_protocol_to_drain() {
    let lp = EventLoop::new().unwrap();
    let (cs, ss) = (LifecycleChecker::new(), LifecycleChecker::new());
    let (server, addr) = serve(&lp, &ss, Peer::new);
    let _a = connect(&lp, &cs, addr, Peer::new());
    let _b = connect(&lp, &cs, addr, Peer::new());
    wait(&lp, "two connections", || server.connection_count() == 2);
    lp.run_until_complete(server.shutdown(Duration::from_secs(5)))
        .unwrap();
    finish(&lp, &[&cs, &ss]);
    for id in 0..2 {
        assert!(ss.events(id).contains(&Event::DrainRequested));
    }
    assert!(
        ss.reasons()
            .iter()
            .all(|r| matches!(r, Some(CloseReason::LocalClose)))
    );
}
