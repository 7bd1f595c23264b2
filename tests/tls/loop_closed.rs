//! TLS connections whose loop is closed (or dropped) under them: the user's
//! protocol, which keeps its TLS transport, is dropped, and the socket is
//! closed, whatever state the connection was in.
//!
//! Each test runs a TLS server and a TLS client on the loop, each talking
//! to a peer outside it (a thread with a blocking socket), so that the
//! peer can tell whether the loop's socket was closed: it reads until EOF
//! or a reset, and gives up (failing the test) if neither comes.

use std::cell::RefCell;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protoloop::{ConnectOptions, EventLoop, Protocol, Server, Transport};

use super::support::*;

/// How long an outside peer waits for the loop's socket to close.
const PEER_WAIT: Duration = Duration::from_secs(10);

/// What the loop's protocols of one side (server or client) left behind.
#[derive(Default)]
struct Seen {
    /// The transports handed to `connection_made`, for the test to act on.
    transports: Vec<Transport>,
    /// One per protocol made: each lives exactly as long as its protocol.
    protocols: Vec<Weak<()>>,
}

type Registry = Rc<RefCell<Seen>>;

/// A protocol that keeps its transport, as most do: with the TLS layer
/// holding the protocol, a cycle that only the loop can break.
struct Keeper {
    t: Option<Transport>,
    seen: Registry,
    _alive: Rc<()>,
}

impl Keeper {
    fn new(seen: &Registry) -> Keeper {
        let alive = Rc::new(());
        seen.borrow_mut().protocols.push(Rc::downgrade(&alive));
        Keeper {
            t: None,
            seen: seen.clone(),
            _alive: alive,
        }
    }
}

impl Protocol for Keeper {
    fn connection_made(&mut self, t: Transport) {
        self.seen.borrow_mut().transports.push(t.clone());
        self.t = Some(t);
    }
    fn data_received(&mut self, _: &[u8]) {}
}

/// A peer outside the loop, on a thread.
struct Outside {
    /// A raw peer got bytes; a TLS peer got the loop's `close_notify`.
    heard: Arc<AtomicBool>,
    /// `Ok` once the connection was closed under it (EOF or reset).
    done: JoinHandle<Result<(), String>>,
}

impl Outside {
    fn heard(&self) -> bool {
        self.heard.load(Ordering::SeqCst)
    }

    /// Wait for the peer's verdict: `None` if the connection was closed.
    fn open(self, who: &str) -> Option<String> {
        let verdict = self.done.join().expect("the outside peer panicked");
        verdict
            .err()
            .map(|e| format!("the loop's socket to the outside {who} stayed open: {e}"))
    }
}

/// Run `peer` on a thread, with a flag for [`Outside::heard`].
fn outside(peer: impl FnOnce(&AtomicBool) -> Result<(), String> + Send + 'static) -> Outside {
    let heard = Arc::new(AtomicBool::new(false));
    let h2 = heard.clone();
    let done = std::thread::spawn(move || peer(&h2));
    Outside { heard, done }
}

/// A client outside the loop: with `tls`, it completes a handshake (so
/// the loop's side is established) and reports the loop's
/// `close_notify`; without, it sends nothing (so the loop's side stays
/// mid-handshake). Then it waits for the connection to close.
fn outside_client(addr: SocketAddr, tls: Option<&Pki>) -> Outside {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(PEER_WAIT)).unwrap();
    let config = tls.map(Pki::client);
    outside(move |heard| match config {
        Some(config) => {
            let conn = rustls::ClientConnection::new(config, localhost()).unwrap();
            run_tls(conn.into(), &mut sock, heard)
        }
        None => watch_raw(&mut sock, heard),
    })
}

/// [`outside_client`]'s server twin; without `tls` it reads the
/// ClientHello and never answers. Gives the address to connect to.
fn outside_server(tls: Option<&Pki>) -> (SocketAddr, Outside) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = tls.map(Pki::server);
    let peer = outside(move |heard| {
        let mut sock = accept(&listener)?;
        sock.set_read_timeout(Some(PEER_WAIT)).unwrap();
        match config {
            Some(config) => {
                let conn = rustls::ServerConnection::new(config).unwrap();
                run_tls(conn.into(), &mut sock, heard)
            }
            None => watch_raw(&mut sock, heard),
        }
    });
    (addr, peer)
}

/// Accept one connection, within [`PEER_WAIT`].
fn accept(listener: &TcpListener) -> Result<TcpStream, String> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + PEER_WAIT;
    loop {
        match listener.accept() {
            Ok((sock, _)) => {
                sock.set_nonblocking(false).unwrap();
                return Ok(sock);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
}

/// The connection was closed under us (a reset, or an EOF or broken
/// pipe met mid-handshake).
fn gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe
    )
}

/// Complete the handshake, then [`watch_tls`]. The loop's side may be
/// done (and the loop closed) before ours is: a connection closed under
/// the handshake counts as closed.
fn run_tls(
    mut conn: rustls::Connection,
    sock: &mut TcpStream,
    heard: &AtomicBool,
) -> Result<(), String> {
    while conn.is_handshaking() || conn.wants_write() {
        let step = if conn.is_handshaking() {
            conn.complete_io(sock).map(drop)
        } else {
            conn.write_tls(sock).map(drop)
        };
        match step {
            Ok(()) => {}
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(format!("handshake: {e}")),
        }
    }
    watch_tls(conn, sock, heard)
}

/// Read until EOF or a reset (`Ok`); note the first bytes in `heard`.
fn watch_raw(sock: &mut TcpStream, heard: &AtomicBool) -> Result<(), String> {
    let deadline = Instant::now() + PEER_WAIT;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match sock.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => heard.store(true, Ordering::SeqCst),
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Err("still getting data".into())
}

/// Read TLS until EOF or a reset (`Ok`), or until the peer's
/// `close_notify`, noted in `heard`: that is never answered, and the
/// socket is then read raw until the loop closes it.
fn watch_tls(
    mut conn: rustls::Connection,
    sock: &mut TcpStream,
    heard: &AtomicBool,
) -> Result<(), String> {
    let deadline = Instant::now() + PEER_WAIT;
    while Instant::now() < deadline {
        // The close_notify may have come with the handshake's last records.
        let state = conn
            .process_new_packets()
            .map_err(|e| format!("TLS: {e}"))?;
        if state.peer_has_closed() {
            heard.store(true, Ordering::SeqCst);
            return watch_raw(sock, heard);
        }
        match conn.read_tls(sock) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Err("still getting data".into())
}

/// Run `lp` until `cond` holds (panic after [`LIMIT`]), checking every
/// few milliseconds: what the outside peers do wakes no loop.
fn run_until(lp: &EventLoop, cond: impl FnMut() -> bool) {
    let h = lp.handle();
    let ticker = lp.handle().spawn(async move {
        loop {
            h.sleep(Duration::from_millis(2)).await;
        }
    });
    lp.run_until(LIMIT, cond).unwrap();
    ticker.abort();
}

/// The two ways a loop ends under its connections.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// `EventLoop::close`; the loop itself is dropped only after the checks.
    Close,
    /// The loop is just dropped.
    Drop,
}

const ENDINGS: [Ending; 2] = [Ending::Close, Ending::Drop];

/// A loop with a TLS server (its protocols recorded in the first
/// registry) and room for a client (the second).
struct Setup {
    lp: EventLoop,
    server: Server,
    addr: SocketAddr,
    served: Registry,
    clients: Registry,
    pki: Pki,
}

fn setup() -> Setup {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let served = Registry::default();
    let s2 = served.clone();
    let (server, addr) = tls_server(&lp.handle(), &pki, move || Keeper::new(&s2));
    Setup {
        lp,
        server,
        addr,
        served,
        clients: Registry::default(),
        pki,
    }
}

/// An established connection on each side: the server's with an outside
/// client, the client's with an outside server. Gives the outside peers
/// and both sides' transports (server's, client's).
fn establish(s: &Setup) -> (Outside, Outside, Transport, Transport) {
    let outside_client = outside_client(s.addr, Some(&s.pki));
    let (addr, outside_server) = outside_server(Some(&s.pki));
    let h = s.lp.handle();
    let c2 = s.clients.clone();
    let opts = ConnectOptions::default().tls(s.pki.client(), localhost());
    let (t, _p) =
        s.lp.run_until_complete(async move {
            h.create_connection(move || Keeper::new(&c2), addr, opts)
                .await
        })
        .unwrap()
        .unwrap();
    run_until(&s.lp, || s.served.borrow().transports.len() == 1);
    let served = s.served.borrow_mut().transports.pop().unwrap();
    s.clients.borrow_mut().transports.clear();
    (outside_client, outside_server, served, t)
}

/// Run `case` for each [`Ending`]; fail with everything that went
/// wrong in either.
fn for_each_ending(case: impl Fn(Ending) -> Vec<String>) {
    let problems: Vec<String> = ENDINGS.into_iter().flat_map(case).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// End the loop `how` and drop `held` (what the test kept: transports,
/// a task), then check that every protocol was dropped and both outside
/// peers saw their connection closed. Gives what was not.
fn end(s: Setup, how: Ending, held: impl FnOnce(), peers: [Outside; 2]) -> Vec<String> {
    let Setup {
        lp,
        server,
        served,
        clients,
        ..
    } = s;
    let lp = match how {
        Ending::Close => {
            lp.close().unwrap();
            Some(lp)
        }
        Ending::Drop => {
            drop(lp);
            None
        }
    };
    held();
    drop(server);
    let mut problems = Vec::new();
    for (side, seen) in [("server's", &served), ("client's", &clients)] {
        let seen = seen.borrow();
        assert!(seen.transports.is_empty(), "the test dropped them");
        assert_eq!(seen.protocols.len(), 1, "one {side} protocol");
        if seen.protocols[0].upgrade().is_some() {
            problems.push(format!("the {side} protocol outlived its loop ({how:?})"));
        }
    }
    let [outside_client, outside_server] = peers;
    problems.extend(outside_client.open(&format!("client ({how:?})")));
    problems.extend(outside_server.open(&format!("server ({how:?})")));
    drop(lp);
    problems
}

/// Case 1: established connections, open when the loop ends.
#[test]
fn an_open_tls_connection_is_released_with_its_loop() {
    for_each_ending(|how| {
        let s = setup();
        let (oc, os, served, client) = establish(&s);
        end(s, how, move || drop((served, client)), [oc, os])
    });
}

/// Case 2: mid-handshake, the handshake timers armed. The server's
/// connection comes from a raw client that sends nothing; the client's
/// `create_connection` is a task waiting for a raw server that never
/// answers its ClientHello.
#[test]
fn a_tls_connection_mid_handshake_is_released_with_its_loop() {
    for_each_ending(|how| {
        let s = setup();
        let oc = outside_client(s.addr, None);
        let (addr, os) = outside_server(None);
        let h = s.lp.handle();
        let c2 = s.clients.clone();
        let opts = ConnectOptions::default().tls(s.pki.client(), localhost());
        let task = s.lp.handle().spawn(async move {
            h.create_connection(move || Keeper::new(&c2), addr, opts)
                .await
                .map(|_| ())
        });
        run_until(&s.lp, || {
            s.server.connection_count() == 1 && os.heard() && s.served.borrow().protocols.len() == 1
        });
        assert!(!task.is_finished(), "the client is still handshaking");
        assert!(s.served.borrow().transports.is_empty());
        assert!(s.clients.borrow().transports.is_empty());
        end(s, how, move || drop(task), [oc, os])
    });
}

/// Case 3: after `close()`: our `close_notify` went out and the layer
/// waits, its shutdown timer armed, for the peer's, which never comes.
#[test]
fn a_tls_connection_closing_is_released_with_its_loop() {
    for_each_ending(|how| {
        let s = setup();
        let (oc, os, served, client) = establish(&s);
        served.close();
        client.close();
        run_until(&s.lp, || oc.heard() && os.heard());
        assert!(served.is_closing() && client.is_closing());
        end(s, how, move || drop((served, client)), [oc, os])
    });
}

/// Case 4: after `close_with_deadline`: as case 3, with the close
/// deadline's timer armed too.
#[test]
fn a_tls_connection_closing_with_a_deadline_is_released_with_its_loop() {
    for_each_ending(|how| {
        let s = setup();
        let (oc, os, served, client) = establish(&s);
        served.close_with_deadline(Duration::from_secs(600));
        client.close_with_deadline(Duration::from_secs(600));
        run_until(&s.lp, || oc.heard() && os.heard());
        end(s, how, move || drop((served, client)), [oc, os])
    });
}

/// Case 5: aborted just before the loop ends: the stream below is gone
/// and its `connection_lost` scheduled, then dropped unrun with the loop.
#[test]
fn a_tls_connection_aborted_just_before_its_loop_is_released() {
    for_each_ending(|how| {
        let s = setup();
        let (oc, os, served, client) = establish(&s);
        served.abort();
        client.abort();
        end(s, how, move || drop((served, client)), [oc, os])
    });
}
