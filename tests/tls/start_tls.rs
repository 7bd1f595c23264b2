//! STARTTLS: upgrading a plaintext connection without losing a byte.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use protoloop::tls::{self, TlsClient, TlsServer};
use protoloop::{CloseReason, ConnectOptions, EventLoop, Protocol, ServerOptions, Transport};

use super::support::*;

/// A line protocol that answers "HELLO" with "HI", and on "STARTTLS"
/// answers "GO" and upgrades, handing TLS whatever followed the command
/// in the same read. After the upgrade it echoes with a prefix.
struct StartTlsServer {
    t: Option<Transport>,
    tls: TlsServer,
    upgraded: bool,
    pipelined: Rc<RefCell<Vec<usize>>>,
    log: Shared,
}

impl Protocol for StartTlsServer {
    fn connection_made(&mut self, t: Transport) {
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        let t = self.t.clone().unwrap();
        if self.upgraded {
            self.log.borrow_mut().data.extend_from_slice(data);
            let mut reply = b"tls:".to_vec();
            reply.extend_from_slice(data);
            t.write(&reply).unwrap();
            return;
        }
        if let Some(rest) = data.strip_prefix(b"HELLO\n") {
            t.write(b"HI\n").unwrap();
            assert!(rest.is_empty());
        } else if let Some(rest) = data.strip_prefix(b"STARTTLS\n") {
            t.write(b"GO\n").unwrap();
            self.pipelined.borrow_mut().push(rest.len());
            let up = tls::start_tls(&t, self.tls.clone(), rest).unwrap();
            self.t = Some(up.transport());
            self.upgraded = true;
        } else {
            panic!("unexpected plaintext {data:?}");
        }
    }
    fn eof_received(&mut self) -> bool {
        self.log.borrow_mut().eof += 1;
        false
    }
    fn connection_lost(&mut self, r: CloseReason) {
        self.log.borrow_mut().lost = Some(r);
    }
}

fn start_tls_server(
    h: &protoloop::Handle,
    pki: &Pki,
) -> (protoloop::Server, Rc<RefCell<Vec<usize>>>, Shared) {
    let tls = TlsServer::new(pki.server());
    let pipelined = Rc::new(RefCell::new(Vec::new()));
    let log = Shared::default();
    let (p2, l2) = (pipelined.clone(), log.clone());
    let server = h
        .create_server(
            move || StartTlsServer {
                t: None,
                tls: tls.clone(),
                upgraded: false,
                pipelined: p2.clone(),
                log: l2.clone(),
            },
            "127.0.0.1:0",
            ServerOptions::default(),
        )
        .unwrap();
    (server, pipelined, log)
}

#[test]
fn start_tls_with_the_client_hello_pipelined_behind_the_command() {
    use std::io::{Read, Write};
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (server, pipelined, slog) = start_tls_server(&h, &pki);
    let addr = server.local_addrs()[0];
    let client_cfg = pki.client();
    // The client is a blocking rustls client on its own thread, so that
    // "STARTTLS\n" and the ClientHello leave in one write() and reach
    // the server in one read.
    let peer = std::thread::spawn(move || -> Vec<u8> {
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        sock.write_all(b"HELLO\n").unwrap();
        let mut hi = [0u8; 3];
        sock.read_exact(&mut hi).unwrap();
        assert_eq!(&hi, b"HI\n");
        let mut conn = rustls::ClientConnection::new(client_cfg, localhost()).unwrap();
        let mut first = b"STARTTLS\n".to_vec();
        conn.write_tls(&mut first).unwrap();
        sock.write_all(&first).unwrap();
        let mut go = [0u8; 3];
        sock.read_exact(&mut go).unwrap();
        assert_eq!(&go, b"GO\n");
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        tls.write_all(b"after upgrade").unwrap();
        let mut got = vec![0u8; b"tls:after upgrade".len()];
        tls.read_exact(&mut got).unwrap();
        conn.send_close_notify();
        conn.write_tls(&mut sock).unwrap();
        got
    });
    lp.run_until_complete(async move {
        wait_for(&h, "peer thread", LIMIT, || peer.is_finished()).await;
        assert_eq!(peer.join().unwrap(), b"tls:after upgrade");
        {
            let p = pipelined.borrow();
            assert_eq!(p.len(), 1);
            assert!(
                p[0] > 0,
                "the ClientHello came in the same read as STARTTLS"
            );
        }
        wait_for(&h, "server saw close_notify", LIMIT, || {
            slog.borrow().lost.is_some()
        })
        .await;
        let s = slog.borrow();
        assert_eq!(s.data, b"after upgrade");
        assert_eq!(s.eof, 1);
        assert!(matches!(s.lost, Some(CloseReason::PeerEof)), "{:?}", s.lost);
    })
    .unwrap();
}

/// The client half of the STARTTLS exchange: waits for "GO", then
/// upgrades from inside data_received and writes at once (held until the
/// handshake completes).
struct StartTlsClient {
    t: Option<Transport>,
    tls: Option<TlsClient>,
    upgrade: Rc<RefCell<Option<tls::TlsUpgrade>>>,
    held: Rc<RefCell<Option<usize>>>,
    log: Shared,
}

impl Protocol for StartTlsClient {
    fn connection_made(&mut self, t: Transport) {
        t.write(b"HELLO\n").unwrap();
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.log.borrow_mut().data.extend_from_slice(data);
        let t = self.t.clone().unwrap();
        if data == b"HI\n" {
            t.write(b"STARTTLS\n").unwrap();
        } else if let Some(rest) = data.strip_prefix(b"GO\n") {
            let up = tls::start_tls(&t, self.tls.take().unwrap(), rest).unwrap();
            let tt = up.transport();
            tt.write(b"one ").unwrap();
            tt.write(b"two").unwrap();
            *self.held.borrow_mut() = Some(tt.get_write_buffer_size());
            self.t = Some(tt);
            *self.upgrade.borrow_mut() = Some(up);
        }
    }
    fn connection_lost(&mut self, r: CloseReason) {
        self.log.borrow_mut().lost = Some(r);
    }
}

#[test]
fn start_tls_on_both_ends_holds_writes_made_during_the_handshake() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (server, pipelined, slog) = start_tls_server(&h, &pki);
    let addr = server.local_addrs()[0];
    let client = TlsClient::new(pki.client(), localhost());
    let upgrade = Rc::new(RefCell::new(None));
    let held = Rc::new(RefCell::new(None));
    let clog = Shared::default();
    let (u2, h2, c2) = (upgrade.clone(), held.clone(), clog.clone());
    lp.run_until_complete(async move {
        let (_plain, _p) = h
            .create_connection(
                move || StartTlsClient {
                    t: None,
                    tls: Some(client),
                    upgrade: u2,
                    held: h2,
                    log: c2,
                },
                addr,
                ConnectOptions::default(),
            )
            .await
            .unwrap();
        wait_for(&h, "upgrade", LIMIT, || upgrade.borrow().is_some()).await;
        assert_eq!(
            *held.borrow(),
            Some(7),
            "held until the handshake completes"
        );
        let handshake = upgrade.borrow().as_ref().unwrap().handshake();
        let info = handshake.await.unwrap();
        assert_eq!(info.peer_certificates[0], pki.server_cert);
        let t = upgrade.borrow().as_ref().unwrap().transport();
        assert!(t.tls_info().is_some());
        wait_for(&h, "tls echo", LIMIT, || {
            clog.borrow().data.ends_with(b"two")
        })
        .await;
        // The server may read "one " and "two" together or apart.
        let data = clog.borrow().data.clone();
        assert!(
            data == b"HI\nGO\ntls:one tls:two" || data == b"HI\nGO\ntls:one two",
            "{:?}",
            String::from_utf8_lossy(&data)
        );
        assert_eq!(slog.borrow().data, b"one two");
        assert_eq!(*pipelined.borrow(), vec![0]);
        t.close();
        wait_for(&h, "client closed", LIMIT, || clog.borrow().lost.is_some()).await;
        assert!(
            matches!(clog.borrow().lost, Some(CloseReason::LocalClose)),
            "{:?}",
            clog.borrow().lost
        );
        wait_for(&h, "server closed", LIMIT, || slog.borrow().lost.is_some()).await;
        assert!(matches!(slog.borrow().lost, Some(CloseReason::PeerEof)));
    })
    .unwrap();
}

/// Hands the connection to a fresh protocol on "STARTTLS\n", with no
/// reply: the client may start its handshake right behind the command.
struct Switch {
    t: Option<Transport>,
    tls: TlsServer,
    next: Option<Peer>,
    upgrades: Rc<RefCell<usize>>,
}

impl Protocol for Switch {
    fn connection_made(&mut self, t: Transport) {
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        let rest = data
            .strip_prefix(b"STARTTLS\n")
            .expect("the command comes first");
        let next = Rc::new(RefCell::new(self.next.take().unwrap()));
        tls::start_tls_with_protocol(self.t.as_ref().unwrap(), self.tls.clone(), rest, next)
            .unwrap();
        *self.upgrades.borrow_mut() += 1;
    }
}

#[test]
fn start_tls_with_a_new_protocol_and_flow_control_across_the_handshake() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let slog = Shared::default();
    let upgrades = Rc::new(RefCell::new(0));
    let (s2, u2) = (slog.clone(), upgrades.clone());
    let tls_server = TlsServer::new(pki.server());
    let server = h
        .create_server(
            move || Switch {
                t: None,
                tls: tls_server.clone(),
                next: Some(Peer::new(&s2)),
                upgrades: u2.clone(),
            },
            "127.0.0.1:0",
            ServerOptions::default(),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    let client = TlsClient::new(pki.client(), localhost());
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    lp.run_until_complete(async move {
        let clog = Shared::default();
        let c2 = clog.clone();
        let (plain, _) = h
            .create_connection(move || Peer::new(&c2), addr, ConnectOptions::default())
            .await
            .unwrap();
        plain.write(b"STARTTLS\n").unwrap();
        let up = tls::start_tls(&plain, client, b"").unwrap();
        let t = up.transport();
        // Far above the high-water mark, all held for the handshake: the
        // protocol is told to pause, and to resume once it drained.
        t.write(&data).unwrap();
        assert_eq!(t.get_write_buffer_size(), data.len());
        up.handshake().await.unwrap();
        wait_for(&h, "all data at the server", LIMIT, || {
            slog.borrow().data.len() >= data.len()
        })
        .await;
        assert!(slog.borrow().data == data, "data differs");
        wait_for(&h, "resume_writing", LIMIT, || {
            let c = clog.borrow();
            c.pauses >= 1 && c.pauses == c.resumes
        })
        .await;
        assert_eq!(*upgrades.borrow(), 1);
        {
            let s = slog.borrow();
            assert_eq!(s.made, 1, "the new protocol got connection_made");
            assert!(s.info.is_some(), "after the handshake");
        }
        // The client's protocol was kept: it never got a second
        // connection_made.
        assert_eq!(clog.borrow().made, 1);
        t.close();
        wait_for(&h, "both closed", LIMIT, || {
            clog.borrow().lost.is_some() && slog.borrow().lost.is_some()
        })
        .await;
        assert!(matches!(clog.borrow().lost, Some(CloseReason::LocalClose)));
        assert!(matches!(slog.borrow().lost, Some(CloseReason::PeerEof)));
    })
    .unwrap();
}
