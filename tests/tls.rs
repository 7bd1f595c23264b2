//! TLS over loopback TCP: echo, verification failures, bad clients,
//! mutual TLS, start_tls, close_notify handling, timeouts. Interop with
//! the openssl programs is in `tls/interop.rs`, closing in `tls/closing.rs`, STARTTLS in
//! `tls/start_tls.rs`, `close_clients` and TLS over Unix sockets in `tls/serving.rs`,
//! connections whose loop is closed under them in `tls/loop_closed.rs`.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use protoloop::tls;
use protoloop::{CloseReason, ConnectOptions, Error, EventLoop, ExceptionKind, ServerOptions};
use rustls::{AlertDescription, CertificateError};

// The crate root of a test target looks for modules beside it, so the
// files under tests/tls/ are named explicitly (cargo does not build them
// as targets of their own).
#[path = "tls/abort.rs"]
mod abort;
#[path = "tls/closing.rs"]
mod closing;
#[path = "tls/cork.rs"]
mod cork;
#[path = "tls/interop.rs"]
mod interop;
#[path = "tls/loop_closed.rs"]
mod loop_closed;
#[path = "tls/serving.rs"]
mod serving;
#[path = "tls/start_tls.rs"]
mod start_tls;
#[path = "tls/support.rs"]
mod support;
use support::*;

#[test]
fn ten_megabytes_echo_byte_exact() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (slog, echo) = echo_peers();
    let (_server, addr) = tls_server(&h, &pki, echo);
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
    let (slog, echo) = echo_peers();
    let (_server, addr) = tls_server(&h, &pki, echo);
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
    let reports = Rc::new(RefCell::new(Vec::<(ExceptionKind, String)>::new()));
    let r2 = reports.clone();
    h.set_exception_handler(move |ctx| r2.borrow_mut().push((ctx.kind, ctx.message.clone())));
    let (slog, echo) = echo_peers();
    let (server, addr) = tls_server(&h, &pki, echo);
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
        // The operator hears of the failed handshake, with the reason.
        {
            let r = reports.borrow();
            assert_eq!(r.len(), 1, "{r:?}");
            assert_eq!(r[0].0, ExceptionKind::Error);
            assert!(
                r[0].1.contains("TLS handshake with 127.0.0.1:") && r[0].1.contains("failed"),
                "{r:?}"
            );
        }
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

#[test]
fn a_corrupt_record_after_the_handshake_ends_in_connection_lost_with_the_tls_error() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (slog, echo) = echo_peers();
    let (server, addr) = tls_server(&h, &pki, echo);
    let config = pki.client();
    // A plain rustls client on a thread: handshake, one good record, then
    // an application-data record whose authentication tag is garbage.
    let client = std::thread::spawn(move || {
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(LIMIT)).unwrap();
        let mut conn = rustls::ClientConnection::new(config, localhost()).unwrap();
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        tls.write_all(b"hello").unwrap();
        let mut echo = [0u8; 5];
        tls.read_exact(&mut echo).unwrap();
        assert_eq!(&echo, b"hello");
        let mut bad = vec![23u8, 3, 3, 0, 40];
        bad.extend((0..40u8).map(|i| i.wrapping_mul(37)));
        sock.write_all(&bad).unwrap();
        // The server answers with an alert (encrypted, under TLS 1.3)
        // and closes.
        let mut rest = Vec::new();
        let _ = sock.read_to_end(&mut rest);
        let _ = conn.read_tls(&mut &rest[..]);
        conn.process_new_packets().map(|_| ())
    });
    lp.run_until(LIMIT, || slog.borrow().lost.is_some())
        .unwrap();
    let rest = client.join().unwrap();
    let l = slog.borrow();
    assert_eq!(l.data, b"hello", "the good record was delivered first");
    assert_eq!(l.order, ["made", "data", "lost"]);
    assert!(
        matches!(l.lost, Some(CloseReason::Tls(rustls::Error::DecryptError))),
        "{:?}",
        l.lost
    );
    assert!(
        matches!(
            rest,
            Err(rustls::Error::AlertReceived(AlertDescription::BadRecordMac))
        ),
        "the peer was told why: {rest:?}"
    );
    server.close();
}
