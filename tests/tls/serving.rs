//! Serving TLS: `Server::close_clients` closes through the TLS layer
//! (close_notify, not a bare FIN), and TLS over Unix sockets.

use protoloop::{CloseReason, ConnectOptions, Error, EventLoop, UnixAddr, UnixConnectOptions};
use rustls::CertificateError;

use super::support::*;

#[test]
fn close_clients_sends_close_notify_after_what_was_written() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (slog, echo) = echo_peers();
    let (server, addr) = tls_server(&h, &pki, echo);
    let clog = Shared::default();
    let c2 = clog.clone();
    let opts = ConnectOptions::default().tls(pki.client(), localhost());
    // Big enough that the echo is still being written when the server
    // closes: close_clients must flush it before its close_notify.
    let data: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let expected = data.clone();
    lp.run_until_complete(async move {
        let (t, _p) = h
            .create_connection(move || Peer::new(&c2), addr, opts)
            .await
            .unwrap();
        t.write(&data).unwrap();
        wait_for(&h, "server got everything", LIMIT, || {
            slog.borrow().data.len() == expected.len()
        })
        .await;
        assert_eq!(server.connection_count(), 1);
        server.close_clients();
        wait_for(&h, "client connection_lost", LIMIT, || {
            clog.borrow().lost.is_some()
        })
        .await;
        wait_for(&h, "server connection_lost", LIMIT, || {
            slog.borrow().lost.is_some()
        })
        .await;
        let c = clog.borrow();
        assert!(c.data == expected, "the echo was flushed before closing");
        // A close_notify is a clean EOF; a bare FIN would be an
        // UnexpectedEof I/O error (possible truncation).
        assert_eq!(c.eof, 1, "client saw close_notify: {:?}", c.order);
        assert!(matches!(c.lost, Some(CloseReason::PeerEof)), "{:?}", c.lost);
        let s = slog.borrow();
        assert!(
            matches!(s.lost, Some(CloseReason::LocalClose)),
            "{:?}",
            s.lost
        );
        assert_eq!(server.connection_count(), 0);
    })
    .unwrap();
}

#[test]
fn tls_echo_over_a_unix_socket() {
    let pki = pki();
    let dir = scratch_dir("unix-echo");
    let path = dir.join("tls.sock");
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (slog, echo) = echo_peers();
    let server = unix_tls_server(&h, &pki, &path, echo);
    let clog = Shared::default();
    let c2 = clog.clone();
    let opts = UnixConnectOptions::default().tls(pki.client(), localhost());
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let expected = data.clone();
    let p2 = path.clone();
    lp.run_until_complete(async move {
        let (t, _p) = h
            .create_unix_connection_with(move || Peer::new(&c2), p2, opts)
            .await
            .unwrap();
        assert_eq!(clog.borrow().made, 1, "connection_made after the handshake");
        let info = t.tls_info().expect("a TLS transport");
        assert!(!info.is_server);
        assert_eq!(info.peer_certificates[0], pki.server_cert);
        t.write(&data).unwrap();
        wait_for(&h, "echo over Unix TLS", LIMIT, || {
            clog.borrow().data.len() >= expected.len()
        })
        .await;
        assert!(clog.borrow().data == expected, "echo differs");
        let si = slog.borrow().info.clone().expect("server side is TLS too");
        assert_eq!(si.server_name.as_deref(), Some("localhost"));
        t.close();
        wait_for(&h, "both sides closed", LIMIT, || {
            clog.borrow().lost.is_some() && slog.borrow().lost.is_some()
        })
        .await;
        let c = clog.borrow();
        assert!(
            matches!(c.lost, Some(CloseReason::LocalClose)),
            "{:?}",
            c.lost
        );
        // Our close_notify reached the server as a clean EOF.
        let s = slog.borrow();
        assert_eq!(s.eof, 1);
        assert!(matches!(s.lost, Some(CloseReason::PeerEof)), "{:?}", s.lost);
        server.close();
    })
    .unwrap();
    assert!(!path.exists(), "socket file removed on close");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unix_tls_handshake_failure_is_a_typed_error_and_the_server_goes_on() {
    let pki = pki();
    let name = UnixAddr::abstract_name(format!("protoloop-tls-fail-{}", std::process::id()));
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (slog, echo) = echo_peers();
    let server = unix_tls_server(&h, &pki, name.clone(), echo);
    // Trusts a CA that did not issue the server's certificate.
    let bad = UnixConnectOptions::default().tls(super::support::pki().client(), localhost());
    let good = UnixConnectOptions::default().tls(pki.client(), localhost());
    let clog = Shared::default();
    let c2 = clog.clone();
    lp.run_until_complete(async move {
        let err = h
            .create_unix_connection_with(move || Peer::new(&c2), name.clone(), bad)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::TlsHandshake(CloseReason::Tls(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer
                )))
            ),
            "{err:?}"
        );
        assert_eq!(clog.borrow().made, 0, "the protocol never ran");
        let (t, _p) = h
            .create_unix_connection_with(|| Peer::new(&Shared::default()), name, good)
            .await
            .unwrap();
        t.write(b"ping").unwrap();
        wait_for(&h, "good client served", LIMIT, || {
            slog.borrow().data == b"ping"
        })
        .await;
        assert_eq!(slog.borrow().made, 1, "only the good client got through");
        t.close();
        server.close();
    })
    .unwrap();
}

#[test]
fn plain_unix_connection_to_a_unix_tls_server_gets_an_alert_not_data() {
    let pki = pki();
    let name = UnixAddr::abstract_name(format!("protoloop-tls-plain-{}", std::process::id()));
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (slog, echo) = echo_peers();
    let server = unix_tls_server(&h, &pki, name.clone(), echo);
    let glog = Shared::default();
    let g2 = glog.clone();
    lp.run_until_complete(async move {
        let (_t, _p) = h
            .create_unix_connection(
                move || Raw {
                    send: b"not a client hello\r\n\r\n".to_vec(),
                    log: g2,
                },
                name,
            )
            .await
            .unwrap();
        wait_for(&h, "plaintext client dropped", LIMIT, || {
            glog.borrow().lost.is_some()
        })
        .await;
        // A TLS alert record (content type 21), never an echo.
        assert_eq!(glog.borrow().data.first(), Some(&21));
        assert_eq!(slog.borrow().made, 0);
        server.close();
    })
    .unwrap();
}
