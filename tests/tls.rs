//! TLS over loopback TCP: echo, verification failures, bad clients,
//! mutual TLS, start_tls, close_notify handling, timeouts. Interop with
//! the openssl programs is in `tls/interop.rs`, closing in `tls/closing.rs`.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use protoloop::tls::{self, TlsClient, TlsServer};
use protoloop::{
    CloseReason, ConnectOptions, Error, EventLoop, Protocol, ServerOptions, Transport,
};
use rustls::{AlertDescription, CertificateError};

// The crate root of a test target looks for modules beside it, so the
// files under tests/tls/ are named explicitly (cargo does not build them
// as targets of their own).
#[path = "tls/closing.rs"]
mod closing;
#[path = "tls/interop.rs"]
mod interop;
#[path = "tls/support.rs"]
mod support;
use support::*;

fn tls_server_opts(pki: &Pki) -> ServerOptions {
    ServerOptions::default().tls(pki.server())
}

#[test]
fn ten_megabytes_echo_byte_exact() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let slog = Shared::default();
    let s2 = slog.clone();
    let server = h
        .create_server(
            move || Peer::echo(&s2),
            "127.0.0.1:0",
            tls_server_opts(&pki),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    let clog = Shared::default();
    let c2 = clog.clone();
    let opts = ConnectOptions::default().tls(pki.client(), localhost());
    let data: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let expected = data.clone();
    lp.run_until_complete(async move {
        let (t, _p) = h
            .create_connection(move || Peer::new(&c2), addr, opts)
            .await
            .unwrap();
        assert_eq!(
            clog.borrow().made,
            1,
            "connection_made before create_connection returns"
        );
        // In 1 MiB writes, the way a program obeying pause_writing would
        // not; the transport buffers what it must.
        for chunk in data.chunks(1024 * 1024) {
            t.write(chunk).unwrap();
        }
        assert!(t.get_write_buffer_size() > 0);
        wait_for(&h, "10 MB echoed", Duration::from_secs(60), || {
            clog.borrow().data.len() >= expected.len()
        })
        .await;
        assert!(clog.borrow().data == expected, "echo differs");
        let stats = t.stats();
        assert_eq!(stats.bytes_sent, expected.len() as u64);
        assert_eq!(stats.bytes_received, expected.len() as u64);
        t.close();
        assert!(t.write(b"late").is_err(), "write after close is refused");
        wait_for(&h, "client connection_lost", LIMIT, || {
            clog.borrow().lost.is_some()
        })
        .await;
        wait_for(&h, "server connection_lost", LIMIT, || {
            slog.borrow().lost.is_some()
        })
        .await;
        let c = clog.borrow();
        assert!(
            matches!(c.lost, Some(CloseReason::LocalClose)),
            "{:?}",
            c.lost
        );
        assert!(
            c.pauses >= 1 && c.pauses == c.resumes,
            "{} {}",
            c.pauses,
            c.resumes
        );
        assert_eq!(c.order.first(), Some(&"made"));
        assert_eq!(c.order.last(), Some(&"lost"));
        let s = slog.borrow();
        // The server saw our close_notify as a clean EOF.
        assert_eq!(s.eof, 1);
        assert!(matches!(s.lost, Some(CloseReason::PeerEof)), "{:?}", s.lost);
        assert_eq!(s.order, vec!["made", "data", "eof", "lost"]);
    })
    .unwrap();
}

#[test]
fn tls_info_reports_version_suite_alpn_sni_and_certificates() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let mut scfg = tls::server_config_with_client_auth(
        vec![pki.server_cert.clone()],
        pki.server_key.clone_key(),
        [pki.ca.clone()],
        true,
    )
    .unwrap();
    scfg.alpn_protocols = vec![b"echo/1".to_vec()];
    let slog = Shared::default();
    let s2 = slog.clone();
    let server = h
        .create_server(
            move || Peer::echo(&s2),
            "127.0.0.1:0",
            ServerOptions::default().tls(Arc::new(scfg)),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    let mut ccfg = tls::client_config_with_certificate(
        [pki.ca.clone()],
        vec![pki.client_cert.clone()],
        pki.client_key.clone_key(),
    )
    .unwrap();
    ccfg.alpn_protocols = vec![b"h2".to_vec(), b"echo/1".to_vec()];
    let opts = ConnectOptions::default().tls(Arc::new(ccfg), localhost());
    let clog = Shared::default();
    let c2 = clog.clone();
    lp.run_until_complete(async move {
        let (t, _p) = h
            .create_connection(move || Peer::new(&c2), addr, opts)
            .await
            .unwrap();
        t.write(b"x").unwrap();
        wait_for(&h, "echo", LIMIT, || clog.borrow().data == b"x").await;
        let ci = clog.borrow().info.clone().expect("info in connection_made");
        assert_eq!(ci.protocol_version, rustls::ProtocolVersion::TLSv1_3);
        assert_eq!(ci.alpn_protocol.as_deref(), Some(&b"echo/1"[..]));
        assert_eq!(ci.peer_certificates[0], pki.server_cert);
        assert!(!ci.is_server);
        let si = slog.borrow().info.clone().unwrap();
        assert_eq!(si.cipher_suite, ci.cipher_suite);
        assert_eq!(si.server_name.as_deref(), Some("localhost"));
        assert_eq!(si.peer_certificates, vec![pki.client_cert.clone()]);
        assert!(si.is_server);
        // The untyped form, asyncio's get_extra_info.
        let boxed = t.extra("tls").unwrap();
        assert!(boxed.downcast_ref::<tls::TlsInfo>().is_some());
        assert!(t.extra("peername").is_some(), "other keys reach the socket");
        t.close();
        wait_for(&h, "closed", LIMIT, || clog.borrow().lost.is_some()).await;
    })
    .unwrap();
}

/// Connect with the client configuration `client` makes for the server's
/// PKI; the handshake must fail with the error `check`
/// accepts, the server's protocol must never run, and the server must
/// go on serving a good client afterwards.
fn handshake_fails(
    client: impl FnOnce(&Pki) -> Arc<rustls::ClientConfig>,
    name: &'static str,
    check: fn(&Error) -> bool,
) {
    let pki = pki();
    let client = client(&pki);
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let slog = Shared::default();
    let s2 = slog.clone();
    let server = h
        .create_server(
            move || Peer::echo(&s2),
            "127.0.0.1:0",
            tls_server_opts(&pki),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    let clog = Shared::default();
    let c2 = clog.clone();
    let bad = ConnectOptions::default().tls(
        client,
        rustls::pki_types::ServerName::try_from(name).unwrap(),
    );
    let good = ConnectOptions::default().tls(pki.client(), localhost());
    lp.run_until_complete(async move {
        let err = h
            .create_connection(move || Peer::new(&c2), addr, bad)
            .await
            .unwrap_err();
        assert!(check(&err), "unexpected error: {err:?}");
        assert_eq!(clog.borrow().made, 0);
        assert!(
            clog.borrow().lost.is_none(),
            "no callback without connection_made"
        );
        let (t, _p) = h
            .create_connection(|| Peer::new(&Shared::default()), addr, good)
            .await
            .unwrap();
        t.write(b"ping").unwrap();
        wait_for(&h, "good client served", LIMIT, || {
            slog.borrow().data == b"ping"
        })
        .await;
        let s = slog.borrow();
        assert_eq!(s.made, 1, "only the good client reached the protocol");
        t.close();
    })
    .unwrap();
}

#[test]
fn wrong_host_name_fails_with_a_typed_error_and_no_data() {
    handshake_fails(Pki::client, "wrong.example", |e| {
        matches!(
            e,
            Error::TlsHandshake(CloseReason::Tls(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )))
        )
    });
}

#[test]
fn untrusted_certificate_fails_with_a_typed_error_and_no_data() {
    // Trusts a CA that did not issue the server's certificate.
    handshake_fails(
        |_| pki().client(),
        "localhost",
        |e| {
            matches!(
                e,
                Error::TlsHandshake(CloseReason::Tls(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer
                )))
            )
        },
    );
}

#[test]
fn garbage_instead_of_a_client_hello_closes_only_that_connection() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let slog = Shared::default();
    let s2 = slog.clone();
    let server = h
        .create_server(
            move || Peer::echo(&s2),
            "127.0.0.1:0",
            tls_server_opts(&pki),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    let glog = Shared::default();
    let g2 = glog.clone();
    let good = ConnectOptions::default().tls(pki.client(), localhost());
    lp.run_until_complete(async move {
        // A good client first, kept open across the bad one.
        let clog = Shared::default();
        let c2 = clog.clone();
        let (t, _p) = h
            .create_connection(move || Peer::new(&c2), addr, good.clone())
            .await
            .unwrap();
        let (_raw, _) = h
            .create_connection(
                move || Raw {
                    send: b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
                    log: g2,
                },
                addr,
                ConnectOptions::default(),
            )
            .await
            .unwrap();
        wait_for(&h, "garbage client dropped", LIMIT, || {
            glog.borrow().lost.is_some()
        })
        .await;
        // It got a TLS alert record (content type 21) and then the close.
        {
            let g = glog.borrow();
            assert_eq!(g.data.first(), Some(&21), "{:?}", g.data);
            assert!(matches!(g.lost, Some(CloseReason::PeerEof)), "{:?}", g.lost);
        }
        t.write(b"still here").unwrap();
        wait_for(&h, "first client still served", LIMIT, || {
            clog.borrow().data == b"still here"
        })
        .await;
        let (t2, _p) = h
            .create_connection(|| Peer::new(&Shared::default()), addr, good)
            .await
            .unwrap();
        t2.write(b"!").unwrap();
        wait_for(&h, "new client served", LIMIT, || {
            slog.borrow().data == b"still here!"
        })
        .await;
        assert_eq!(
            slog.borrow().made,
            2,
            "the garbage never reached a protocol"
        );
        assert_eq!(server.connection_count(), 2);
        t.close();
        t2.close();
    })
    .unwrap();
}

#[test]
fn mutual_tls_required_accepts_a_client_certificate_and_refuses_none() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let scfg = tls::server_config_with_client_auth(
        vec![pki.server_cert.clone()],
        pki.server_key.clone_key(),
        [pki.ca.clone()],
        true,
    )
    .unwrap();
    let slog = Shared::default();
    let s2 = slog.clone();
    let server = h
        .create_server(
            move || Peer::echo(&s2),
            "127.0.0.1:0",
            ServerOptions::default().tls(Arc::new(scfg)),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    let with_cert = tls::client_config_with_certificate(
        [pki.ca.clone()],
        vec![pki.client_cert.clone()],
        pki.client_key.clone_key(),
    )
    .unwrap();
    let with = ConnectOptions::default().tls(Arc::new(with_cert), localhost());
    let without = ConnectOptions::default().tls(pki.client(), localhost());
    lp.run_until_complete(async move {
        // Missing: under TLS 1.3 the client's handshake may complete
        // before the server refuses, so either form of failure is right,
        // but no application data may flow either way.
        let clog = Shared::default();
        let c2 = clog.clone();
        match h
            .create_connection(move || Peer::new(&c2), addr, without)
            .await
        {
            Err(e) => assert!(
                matches!(
                    e,
                    Error::TlsHandshake(CloseReason::Tls(rustls::Error::AlertReceived(
                        AlertDescription::CertificateRequired
                    )))
                ),
                "{e:?}"
            ),
            Ok((t, _)) => {
                let _ = t.write(b"should not be echoed");
                wait_for(&h, "refused client's connection_lost", LIMIT, || {
                    clog.borrow().lost.is_some()
                })
                .await;
                let c = clog.borrow();
                assert!(
                    matches!(
                        c.lost,
                        Some(CloseReason::Tls(rustls::Error::AlertReceived(
                            AlertDescription::CertificateRequired
                        )))
                    ),
                    "{:?}",
                    c.lost
                );
                assert!(c.data.is_empty());
            }
        }
        assert_eq!(
            slog.borrow().made,
            0,
            "refused client never reached the protocol"
        );
        // Present.
        let clog = Shared::default();
        let c2 = clog.clone();
        let (t, _) = h
            .create_connection(move || Peer::new(&c2), addr, with)
            .await
            .unwrap();
        t.write(b"authenticated").unwrap();
        wait_for(&h, "echo", LIMIT, || clog.borrow().data == b"authenticated").await;
        assert_eq!(
            slog.borrow().info.as_ref().unwrap().peer_certificates,
            vec![pki.client_cert.clone()]
        );
        t.close();
        wait_for(&h, "closed", LIMIT, || clog.borrow().lost.is_some()).await;
    })
    .unwrap();
}

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
