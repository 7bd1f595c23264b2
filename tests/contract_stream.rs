//! The stream transports keep the callback contract: echo, close, abort,
//! half-close and flow-control scenarios on loopback over TCP, Unix
//! sockets, TLS over TCP and TLS over Unix sockets, every protocol on both
//! sides wrapped in a `LifecycleChecker`.
//!
//! Each scenario is written once against [`Net`] and instantiated for
//! every transport by `contract_tests!`; the few that need a raw TCP
//! socket run over TCP only.

mod peer;
#[path = "tls/support.rs"]
mod tls_support;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use peer::{Peer, is_peer_reset, payload, wait};
use protoloop::testing::{Checked, Event, LifecycleChecker};
use protoloop::{
    Buffered, BufferedProtocol, CloseReason, ConnectOptions, EventLoop, Protocol, ProtocolHandle,
    Server, ServerOptions, UnixAddr, UnixConnectOptions, UnixServerOptions,
};

/// The transport a scenario runs over.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Tcp,
    Unix,
    TlsTcp,
    TlsUnix,
}

/// One transport kind, with the certificates TLS needs.
struct Net {
    kind: Kind,
    pki: Option<tls_support::Pki>,
}

/// Where a [`Net`]'s server listens.
#[derive(Clone)]
enum Target {
    Inet(SocketAddr),
    Unix(UnixAddr),
}

impl Net {
    fn new(kind: Kind) -> Net {
        let tls = matches!(kind, Kind::TlsTcp | Kind::TlsUnix);
        Net {
            kind,
            pki: tls.then(tls_support::pki),
        }
    }

    fn serve_with<P: Protocol>(
        &self,
        lp: &EventLoop,
        factory: impl Fn() -> P + 'static,
    ) -> (Server, Target) {
        let h = lp.handle();
        match self.kind {
            Kind::Tcp | Kind::TlsTcp => {
                let mut opts = ServerOptions::default();
                if let Some(pki) = &self.pki {
                    opts = opts.tls(pki.server());
                }
                let server = h.create_server(factory, "127.0.0.1:0", opts).unwrap();
                let addr = server.local_addrs()[0];
                (server, Target::Inet(addr))
            }
            Kind::Unix | Kind::TlsUnix => {
                static N: AtomicUsize = AtomicUsize::new(0);
                let name = UnixAddr::abstract_name(format!(
                    "protoloop-contract-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                let mut opts = UnixServerOptions::default();
                if let Some(pki) = &self.pki {
                    opts = opts.tls(pki.server());
                }
                let server = h.create_unix_server(factory, name.clone(), opts).unwrap();
                (server, Target::Unix(name))
            }
        }
    }

    fn connect_with<P: Protocol>(
        &self,
        lp: &EventLoop,
        target: &Target,
        factory: impl FnOnce() -> P + 'static,
    ) -> ProtocolHandle<P> {
        let h = lp.handle();
        let connected = match target {
            Target::Inet(addr) => {
                let mut opts = ConnectOptions::default();
                if let Some(pki) = &self.pki {
                    opts = opts.tls(pki.client(), tls_support::localhost());
                }
                lp.run_until_complete(h.create_connection(factory, *addr, opts))
            }
            Target::Unix(name) => {
                let mut opts = UnixConnectOptions::default();
                if let Some(pki) = &self.pki {
                    opts = opts.tls(pki.client(), tls_support::localhost());
                }
                lp.run_until_complete(h.create_unix_connection_with(factory, name.clone(), opts))
            }
        };
        connected.unwrap().unwrap().1
    }
}

fn serve(
    lp: &EventLoop,
    net: &Net,
    checker: &LifecycleChecker,
    make: impl Fn() -> Peer + 'static,
) -> (Server, Target) {
    let c = checker.clone();
    net.serve_with(lp, move || c.wrap(make()))
}

fn connect(
    lp: &EventLoop,
    net: &Net,
    checker: &LifecycleChecker,
    target: &Target,
    peer: Peer,
) -> ProtocolHandle<Checked<Peer>> {
    let c = checker.clone();
    net.connect_with(lp, target, move || c.wrap(peer))
}

/// How many of `checker`'s protocols got `connection_made`. A TLS server
/// makes its protocol when it accepts, but connects it only once the
/// handshake is done: wait on this, not on the server's count.
fn made(checker: &LifecycleChecker) -> usize {
    (0..checker.connection_count())
        .filter(|&id| checker.events(id).first() == Some(&Event::ConnectionMade))
        .count()
}

/// What a peer sees when its end is aborted: a reset over TCP. A Unix
/// socket has no reset: closing it with nothing unread is an EOF for the
/// peer, even with SO_LINGER 0 (and over TLS, an EOF without
/// close_notify: a truncation).
fn is_aborted_by_peer(net: &Net, r: &Option<CloseReason>) -> bool {
    match (net.kind, r) {
        (Kind::Unix, Some(CloseReason::PeerEof)) => true,
        (Kind::TlsUnix, Some(CloseReason::Io(e))) => e.kind() == std::io::ErrorKind::UnexpectedEof,
        _ => is_peer_reset(r),
    }
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

/// One `#[test]` per transport kind for each scenario.
macro_rules! contract_tests {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                use super::*;
                #[test]
                fn tcp() {
                    super::$scenario(&Net::new(Kind::Tcp));
                }
                #[test]
                fn unix() {
                    super::$scenario(&Net::new(Kind::Unix));
                }
                #[test]
                fn tls_tcp() {
                    super::$scenario(&Net::new(Kind::TlsTcp));
                }
                #[test]
                fn tls_unix() {
                    super::$scenario(&Net::new(Kind::TlsUnix));
                }
            }
        )*
    };
}

contract_tests!(
    echo_a_megabyte_then_close,
    a_server_that_writes_and_closes_at_once,
    abort_resets_the_peer,
    half_close_then_answer,
    a_paused_server_pauses_the_client_writer_and_both_resume,
    a_buffered_protocol_is_read_into_its_own_buffer,
    close_clients_and_abort_clients_finish_every_connection,
    graceful_shutdown_asks_each_protocol_to_drain,
);

fn echo_a_megabyte_then_close(net: &Net) {
    let lp = EventLoop::new().unwrap();
    let (cs, ss) = (LifecycleChecker::new(), LifecycleChecker::new());
    let (server, addr) = serve(&lp, net, &ss, || {
        Peer::new().on_data(|t, d| t.write(d).unwrap())
    });
    let data = payload(1024 * 1024);
    let d = data.clone();
    let client = connect(
        &lp,
        net,
        &cs,
        &addr,
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

fn a_server_that_writes_and_closes_at_once(net: &Net) {
    let lp = EventLoop::new().unwrap();
    let (cs, ss) = (LifecycleChecker::new(), LifecycleChecker::new());
    let (server, addr) = serve(&lp, net, &ss, || {
        Peer::new().on_made(|t| {
            t.write(b"hello and goodbye").unwrap();
            t.close();
        })
    });
    let client = connect(&lp, net, &cs, &addr, Peer::new());
    finish(&lp, &[&cs, &ss]);
    client.with(|p| {
        assert_eq!(p.got, b"hello and goodbye");
        assert_eq!(p.eofs, 1);
    });
    assert!(matches!(cs.reasons()[0], Some(CloseReason::PeerEof)));
    assert!(matches!(ss.reasons()[0], Some(CloseReason::LocalClose)));
    server.close();
}

fn abort_resets_the_peer(net: &Net) {
    let lp = EventLoop::new().unwrap();
    let (cs, ss) = (LifecycleChecker::new(), LifecycleChecker::new());
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    let (server, addr) = serve(&lp, net, &ss, move || {
        let g = g.clone();
        Peer::new().on_data(move |_, d| g.borrow_mut().extend_from_slice(d))
    });
    let client = connect(
        &lp,
        net,
        &cs,
        &addr,
        Peer::new().on_made(|t| t.write(b"partial fr").unwrap()),
    );
    wait(&lp, "the partial frame", || got.borrow().len() == 10);
    client.with(|p| p.t.as_ref().unwrap().abort());
    finish(&lp, &[&cs, &ss]);
    assert!(matches!(cs.reasons()[0], Some(CloseReason::LocalAbort)));
    let reason = &ss.reasons()[0];
    assert!(is_aborted_by_peer(net, reason), "{reason:?}");
    if net.kind != Kind::Unix {
        assert!(!ss.events(0).contains(&Event::EofReceived));
    }
    server.close();
}

fn half_close_then_answer(net: &Net) {
    let lp = EventLoop::new().unwrap();
    let (cs, ss) = (LifecycleChecker::new(), LifecycleChecker::new());
    let (server, addr) = serve(&lp, net, &ss, || {
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
        net,
        &cs,
        &addr,
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
    let net = &Net::new(Kind::Tcp);
    let (server, target) = serve(&lp, net, &ss, move || {
        let g = g.clone();
        Peer::new().on_data(move |_, d| g.borrow_mut().extend_from_slice(d))
    });
    let Target::Inet(addr) = target else {
        unreachable!("a TCP server")
    };
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

fn a_paused_server_pauses_the_client_writer_and_both_resume(net: &Net) {
    let lp = EventLoop::new().unwrap();
    let (cs, ss) = (LifecycleChecker::new(), LifecycleChecker::new());
    let received = Rc::new(Cell::new(0usize));
    let server_t = Rc::new(RefCell::new(None));
    let (r, st) = (received.clone(), server_t.clone());
    let (server, addr) = serve(&lp, net, &ss, move || {
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
    let client = connect(&lp, net, &cs, &addr, Peer::new().on_made(pump.clone()));
    wait(&lp, "pause_writing", || client.with(|p| p.pauses) == 1);
    wait(&lp, "the server's connection_made", || {
        server_t.borrow().is_some()
    });
    assert_eq!(received.get(), 0);
    server_t.borrow().as_ref().unwrap().resume_reading();
    wait(&lp, "the server to read it all", || {
        received.get() == total.get()
    });
    // The last bytes may reach the server before the client's transport
    // hears that its buffer drained.
    wait(&lp, "resume_writing", || client.with(|p| p.resumes) == 1);
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

fn a_buffered_protocol_is_read_into_its_own_buffer(net: &Net) {
    let lp = EventLoop::new().unwrap();
    let (cs, ss) = (LifecycleChecker::new(), LifecycleChecker::new());
    let total = Rc::new(Cell::new(0));
    let t = total.clone();
    let c = ss.clone();
    let (server, addr) = net.serve_with(&lp, move || {
        c.wrap(Buffered(Lender {
            buf: vec![0; 1000],
            total: t.clone(),
        }))
    });
    let client = connect(
        &lp,
        net,
        &cs,
        &addr,
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
    // TCP only: the TLS transports read into their own buffer first, so
    // a protocol's lent buffer is filled from decrypted data.
    let net = &Net::new(Kind::Tcp);
    let (server, addr) = net.serve_with(&lp, move || c.wrap(EmptyLender));
    let _client = connect(
        &lp,
        net,
        &cs,
        &addr,
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

fn close_clients_and_abort_clients_finish_every_connection(net: &Net) {
    let lp = EventLoop::new().unwrap();
    let (cs, ss) = (LifecycleChecker::new(), LifecycleChecker::new());
    let (server, addr) = serve(&lp, net, &ss, Peer::new);
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(connect(&lp, net, &cs, &addr, Peer::new()));
    }
    wait(&lp, "five accepted connections", || made(&ss) == 5);
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
    let (server2, addr2) = serve(&lp, net, &ss2, Peer::new);
    for _ in 0..5 {
        clients.push(connect(&lp, net, &cs2, &addr2, Peer::new()));
    }
    wait(&lp, "five more", || made(&ss2) == 5);
    server2.abort_clients();
    finish(&lp, &[&cs2, &ss2]);
    assert!(
        ss2.reasons()
            .iter()
            .all(|r| matches!(r, Some(CloseReason::LocalAbort)))
    );
    for r in cs2.reasons() {
        assert!(is_aborted_by_peer(net, &r), "{r:?}");
    }
    server.close();
    server2.close();
}

fn graceful_shutdown_asks_each_protocol_to_drain(net: &Net) {
    let lp = EventLoop::new().unwrap();
    let (cs, ss) = (LifecycleChecker::new(), LifecycleChecker::new());
    let (server, addr) = serve(&lp, net, &ss, Peer::new);
    let _a = connect(&lp, net, &cs, &addr, Peer::new());
    let _b = connect(&lp, net, &cs, &addr, Peer::new());
    wait(&lp, "two connections", || made(&ss) == 2);
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
