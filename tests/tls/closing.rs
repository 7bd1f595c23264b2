//! Closing over TLS: close_notify ignored, half-close, truncation,
//! handshake timeouts and failures, pause_reading, panics, error paths.

use std::io::Write;
use std::time::Duration;

use protoloop::tls::{self, TlsClient, TlsServer};
use protoloop::{
    CloseReason, ConnectOptions, Error, EventLoop, Protocol, ServerOptions, TimeoutKind, Transport,
};

use super::support::*;

#[test]
fn a_peer_that_ignores_close_notify_is_aborted_after_the_shutdown_timeout() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let slog = Shared::default();
    let s2 = slog.clone();
    // The server's protocol keeps its side open on EOF and never closes,
    // so its TLS layer never answers our close_notify.
    let (_server, addr) = tls_server(&h, &pki, move || Peer {
        keep_open_on_eof: true,
        ..Peer::echo(&s2)
    });
    let client =
        TlsClient::new(pki.client(), localhost()).shutdown_timeout(Duration::from_millis(300));
    let clog = Shared::default();
    let c2 = clog.clone();
    lp.run_until_complete(async move {
        let (t, _p) = h
            .create_connection(
                move || Peer::new(&c2),
                addr,
                ConnectOptions::default().tls_client(client),
            )
            .await
            .unwrap();
        t.write(b"hi").unwrap();
        wait_for(&h, "echo", LIMIT, || clog.borrow().data == b"hi").await;
        t.close();
        assert!(t.is_closing());
        wait_for(&h, "shutdown timeout", LIMIT, || {
            clog.borrow().lost.is_some()
        })
        .await;
        assert!(
            matches!(
                clog.borrow().lost,
                Some(CloseReason::Timeout(TimeoutKind::Shutdown))
            ),
            "{:?}",
            clog.borrow().lost
        );
        wait_for(&h, "server lost", LIMIT, || slog.borrow().lost.is_some()).await;
        let s = slog.borrow();
        assert_eq!(s.eof, 1, "the server did get the close_notify");
        assert!(
            matches!(s.lost, Some(CloseReason::PeerReset(_))),
            "{:?}",
            s.lost
        );
    })
    .unwrap();
}

/// Answers once the client half-closed: writes a reply, then closes.
struct ReplyOnEof {
    t: Option<Transport>,
    got: Vec<u8>,
    log: Shared,
}

impl Protocol for ReplyOnEof {
    fn connection_made(&mut self, t: Transport) {
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data);
    }
    fn eof_received(&mut self) -> bool {
        let t = self.t.as_ref().unwrap();
        let mut reply = b"reply to ".to_vec();
        reply.extend_from_slice(&self.got);
        t.write(&reply).unwrap();
        t.close();
        self.log.borrow_mut().eof += 1;
        true
    }
    fn connection_lost(&mut self, r: CloseReason) {
        self.log.borrow_mut().lost = Some(r);
    }
}

#[test]
fn half_close_sends_close_notify_and_keeps_reading() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let slog = Shared::default();
    let s2 = slog.clone();
    let (_server, addr) = tls_server(&h, &pki, move || ReplyOnEof {
        t: None,
        got: Vec::new(),
        log: s2.clone(),
    });
    let opts = ConnectOptions::default().tls(pki.client(), localhost());
    let clog = Shared::default();
    let c2 = clog.clone();
    lp.run_until_complete(async move {
        let (t, _p) = h
            .create_connection(move || Peer::new(&c2), addr, opts)
            .await
            .unwrap();
        assert!(t.can_write_eof());
        t.write(b"question").unwrap();
        t.write_eof().unwrap();
        assert!(matches!(t.write(b"more"), Err(Error::EofWritten)));
        t.write_eof().unwrap(); // idempotent
        wait_for(&h, "reply and close", LIMIT, || {
            clog.borrow().lost.is_some()
        })
        .await;
        {
            let c = clog.borrow();
            assert_eq!(c.data, b"reply to question");
            assert_eq!(c.eof, 1);
            assert_eq!(c.order, vec!["made", "data", "eof", "lost"]);
            assert!(matches!(c.lost, Some(CloseReason::PeerEof)), "{:?}", c.lost);
        }
        wait_for(&h, "server lost", LIMIT, || slog.borrow().lost.is_some()).await;
        assert_eq!(slog.borrow().eof, 1);
        assert!(
            matches!(slog.borrow().lost, Some(CloseReason::LocalClose)),
            "{:?}",
            slog.borrow().lost
        );
    })
    .unwrap();
}

#[test]
fn tcp_eof_without_close_notify_is_reported_as_truncation_after_the_data() {
    let pki = pki();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = pki.server();
    // A blocking rustls server that sends data and then just closes the
    // socket, with no close_notify.
    let peer = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut conn = rustls::ServerConnection::new(cfg).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).unwrap();
        }
        conn.writer().write_all(b"partial").unwrap();
        while conn.wants_write() {
            conn.write_tls(&mut sock).unwrap();
        }
        sock.shutdown(std::net::Shutdown::Write).unwrap();
        // Keep the socket until the client is done, so it sees EOF, not
        // a reset.
        let mut buf = [0u8; 1024];
        while matches!(std::io::Read::read(&mut sock, &mut buf), Ok(n) if n > 0) {}
    });
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let opts = ConnectOptions::default().tls(pki.client(), localhost());
    let clog = Shared::default();
    let c2 = clog.clone();
    lp.run_until_complete(async move {
        let (_t, _p) = h
            .create_connection(move || Peer::new(&c2), addr, opts)
            .await
            .unwrap();
        let c3 = clog.clone();
        h.call_later(Duration::from_secs(3), move || {
            let c = c3.borrow();
            eprintln!(
                "DEBUG data={:?} eof={} lost={:?} order={:?}",
                c.data, c.eof, c.lost, c.order
            );
        });
        wait_for(&h, "truncation", LIMIT, || clog.borrow().lost.is_some()).await;
        {
            let c = clog.borrow();
            assert_eq!(c.data, b"partial");
            assert_eq!(c.eof, 0, "a truncated stream is not a clean EOF");
            match &c.lost {
                Some(CloseReason::Io(e)) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof)
                }
                other => panic!("{other:?}"),
            }
        }
        wait_for(&h, "peer thread", LIMIT, || peer.is_finished()).await;
    })
    .unwrap();
}

/// Does nothing at all: a server that never answers a ClientHello, or a
/// client that never sends one.
struct Silent;
impl Protocol for Silent {
    fn data_received(&mut self, _: &[u8]) {}
}

/// Closes as soon as anything arrives.
struct Hangup(Option<Transport>);
impl Protocol for Hangup {
    fn connection_made(&mut self, t: Transport) {
        self.0 = Some(t);
    }
    fn data_received(&mut self, _: &[u8]) {
        self.0.as_ref().unwrap().close();
    }
}

#[test]
fn client_handshake_timeout_and_peer_hangup_fail_create_connection() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let silent = h
        .create_server(|| Silent, "127.0.0.1:0", ServerOptions::default())
        .unwrap();
    let hangup = h
        .create_server(|| Hangup(None), "127.0.0.1:0", ServerOptions::default())
        .unwrap();
    let (a1, a2) = (silent.local_addrs()[0], hangup.local_addrs()[0]);
    let client =
        TlsClient::new(pki.client(), localhost()).handshake_timeout(Duration::from_millis(200));
    lp.run_until_complete(async move {
        let e = h
            .create_connection(
                || Silent,
                a1,
                ConnectOptions::default().tls_client(client.clone()),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::TlsHandshake(CloseReason::Timeout(TimeoutKind::Handshake))
            ),
            "{e:?}"
        );
        let e = h
            .create_connection(|| Silent, a2, ConnectOptions::default().tls_client(client))
            .await
            .unwrap_err();
        match e {
            Error::TlsHandshake(CloseReason::Io(io)) => {
                assert_eq!(io.kind(), std::io::ErrorKind::UnexpectedEof)
            }
            other => panic!("{other:?}"),
        }
    })
    .unwrap();
}

#[test]
fn server_handshake_timeout_drops_a_silent_client() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let reports = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let r2 = reports.clone();
    h.set_exception_handler(move |ctx| r2.borrow_mut().push(ctx.message.clone()));
    let slog = Shared::default();
    let s2 = slog.clone();
    let server = h
        .create_server(
            move || Peer::new(&s2),
            "127.0.0.1:0",
            ServerOptions::default().tls_server(
                TlsServer::new(pki.server()).handshake_timeout(Duration::from_millis(200)),
            ),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    lp.run_until_complete(async move {
        let log = Shared::default();
        let l2 = log.clone();
        let (_t, _p) = h
            .create_connection(
                move || Raw {
                    send: Vec::new(),
                    log: l2,
                },
                addr,
                ConnectOptions::default(),
            )
            .await
            .unwrap();
        wait_for(&h, "dropped", LIMIT, || log.borrow().lost.is_some()).await;
        assert!(
            matches!(log.borrow().lost, Some(CloseReason::PeerReset(_))),
            "{:?}",
            log.borrow().lost
        );
        assert_eq!(slog.borrow().made, 0);
        wait_for(&h, "server forgot it", LIMIT, || {
            server.connection_count() == 0
        })
        .await;
        let r = reports.borrow();
        assert!(
            r.len() == 1
                && r[0].contains("TLS handshake with 127.0.0.1:")
                && r[0].contains("timed out"),
            "{r:?}"
        );
    })
    .unwrap();
}

#[test]
fn the_default_timeouts_are_60_s_for_handshakes_and_30_s_for_shutdowns() {
    assert_eq!(tls::DEFAULT_HANDSHAKE_TIMEOUT, Duration::from_secs(60));
    assert_eq!(tls::DEFAULT_SHUTDOWN_TIMEOUT, Duration::from_secs(30));
    // And they are what a server and a client use when not told: a
    // virtual clock that jumps only after 100 ms of real idleness lets
    // the loopback bytes through and the timeouts fire at their time.
    let pki = pki();
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    h.set_exception_handler(|_| {});
    h.set_auto_advance_after(Duration::from_millis(100));
    let slog = Shared::default();
    let s2 = slog.clone();
    let (server, addr) = tls_server(&h, &pki, move || Peer {
        keep_open_on_eof: true,
        ..Peer::echo(&s2)
    });
    let client = pki.client();
    lp.run_until_complete(async move {
        // A silent client: the server drops it after 60 s.
        let start = h.time();
        let log = Shared::default();
        let l2 = log.clone();
        let (_raw, _p) = h
            .create_connection(
                move || Raw {
                    send: Vec::new(),
                    log: l2,
                },
                addr,
                ConnectOptions::default(),
            )
            .await
            .unwrap();
        h.sleep(Duration::from_millis(59_500)).await;
        assert!(log.borrow().lost.is_none(), "dropped early");
        while log.borrow().lost.is_none() {
            h.sleep(Duration::from_millis(250)).await;
            assert!(h.time() - start <= Duration::from_secs(62), "never dropped");
        }
        let took = h.time() - start;
        assert!(
            took >= Duration::from_secs(60) && took <= Duration::from_secs(61),
            "{took:?}"
        );
        // A peer that ignores our close_notify: aborted after 30 s.
        let clog = Shared::default();
        let c2 = clog.clone();
        let (t, _p) = h
            .create_connection(
                move || Peer::new(&c2),
                addr,
                ConnectOptions::default().tls(client, localhost()),
            )
            .await
            .unwrap();
        t.write(b"hi").unwrap();
        wait_for(&h, "echo", LIMIT, || clog.borrow().data == b"hi").await;
        let closed_at = h.time();
        t.close();
        h.sleep(Duration::from_millis(29_500)).await;
        assert!(clog.borrow().lost.is_none(), "aborted early");
        while clog.borrow().lost.is_none() {
            h.sleep(Duration::from_millis(250)).await;
            assert!(
                h.time() - closed_at <= Duration::from_secs(32),
                "never aborted"
            );
        }
        let took = h.time() - closed_at;
        assert!(
            took >= Duration::from_secs(30) && took <= Duration::from_secs(31),
            "{took:?}"
        );
        assert!(
            matches!(
                clog.borrow().lost,
                Some(CloseReason::Timeout(TimeoutKind::Shutdown))
            ),
            "{:?}",
            clog.borrow().lost
        );
        server.close();
    })
    .unwrap();
}

/// Writes `n` bytes on connection_made, then closes.
struct Sender(usize);
impl Protocol for Sender {
    fn connection_made(&mut self, t: Transport) {
        let data: Vec<u8> = (0..self.0).map(|i| i as u8).collect();
        t.write(&data).unwrap();
        t.close();
    }
    fn data_received(&mut self, _: &[u8]) {}
}

#[test]
fn pause_reading_holds_decrypted_data_and_eof_until_resumed() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr) = tls_server(&h, &pki, || Sender(300_000));
    let opts = ConnectOptions::default().tls(pki.client(), localhost());
    let clog = Shared::default();
    let c2 = clog.clone();
    lp.run_until_complete(async move {
        let (t, _p) = h
            .create_connection(
                move || Peer {
                    pause_on_made: true,
                    ..Peer::new(&c2)
                },
                addr,
                opts,
            )
            .await
            .unwrap();
        assert!(!t.is_reading());
        h.sleep(Duration::from_millis(200)).await;
        assert!(clog.borrow().data.is_empty(), "nothing while paused");
        assert!(clog.borrow().lost.is_none());
        t.resume_reading();
        wait_for(&h, "all data and the close", LIMIT, || {
            clog.borrow().lost.is_some()
        })
        .await;
        let c = clog.borrow();
        let want: Vec<u8> = (0..300_000usize).map(|i| i as u8).collect();
        assert!(c.data == want, "got {} bytes", c.data.len());
        assert_eq!(c.eof, 1);
        assert!(matches!(c.lost, Some(CloseReason::PeerEof)), "{:?}", c.lost);
    })
    .unwrap();
}

/// Panics on "boom", echoes otherwise.
struct Fragile(Option<Transport>);
impl Protocol for Fragile {
    fn connection_made(&mut self, t: Transport) {
        self.0 = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        assert!(data != b"boom", "boom");
        let _ = self.0.as_ref().unwrap().write(data);
    }
}

#[test]
fn a_panicking_protocol_aborts_only_its_connection() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    h.set_exception_handler(|_| {});
    let (_server, addr) = tls_server(&h, &pki, || Fragile(None));
    let opts = ConnectOptions::default().tls(pki.client(), localhost());
    lp.run_until_complete(async move {
        let (l1, l2) = (Shared::default(), Shared::default());
        let (a, b) = (l1.clone(), l2.clone());
        let (t1, _) = h
            .create_connection(move || Peer::new(&a), addr, opts.clone())
            .await
            .unwrap();
        let (t2, _) = h
            .create_connection(move || Peer::new(&b), addr, opts)
            .await
            .unwrap();
        t1.write(b"boom").unwrap();
        wait_for(&h, "reset", LIMIT, || l1.borrow().lost.is_some()).await;
        assert!(
            matches!(l1.borrow().lost, Some(CloseReason::PeerReset(_))),
            "{:?}",
            l1.borrow().lost
        );
        t2.write(b"fine").unwrap();
        wait_for(&h, "other echo", LIMIT, || l2.borrow().data == b"fine").await;
        t2.close();
    })
    .unwrap();
}

#[test]
fn error_paths_give_clear_errors() {
    // No roots.
    assert!(matches!(
        tls::client_config(std::iter::empty()),
        Err(Error::Tls(_))
    ));
    // A key that does not match the certificate.
    let (a, b) = (pki(), pki());
    assert!(matches!(
        tls::server_config(vec![a.server_cert.clone()], b.server_key.clone_key()),
        Err(Error::Tls(_))
    ));
    // Missing files and PEM without the wanted blocks.
    let e = tls::load_certificates("/nonexistent/protoloop/cert.pem").unwrap_err();
    assert_eq!(e.io_kind(), Some(std::io::ErrorKind::NotFound));
    let dir = scratch_dir("errors");
    let key_only = dir.join("key.pem");
    std::fs::write(&key_only, &a.server_key_pem).unwrap();
    let e = tls::load_certificates(&key_only).unwrap_err();
    assert_eq!(e.io_kind(), Some(std::io::ErrorKind::InvalidData), "{e}");
    assert!(tls::private_key_from_pem(a.ca_pem.as_bytes()).is_err());
    assert!(tls::load_private_key(&key_only).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();

    // start_tls outside a running loop, and on a closed transport.
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let server = h
        .create_server(|| Silent, "127.0.0.1:0", ServerOptions::default())
        .unwrap();
    let addr = server.local_addrs()[0];
    let client = TlsClient::new(a.client(), localhost());
    let t = lp
        .run_until_complete(h.create_connection(|| Silent, addr, ConnectOptions::default()))
        .unwrap()
        .unwrap();
    let t = t.0;
    assert!(matches!(
        tls::start_tls(&t, client.clone(), b""),
        Err(Error::LoopClosed)
    ));
    lp.run_until_complete(async move {
        t.close();
        assert!(matches!(
            tls::start_tls(&t, client, b""),
            Err(Error::Closed)
        ));
    })
    .unwrap();
}

#[test]
fn close_with_deadline_resets_a_peer_that_never_answers() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr) = tls_server(&h, &pki, || Peer {
        keep_open_on_eof: true,
        ..Peer::new(&Shared::default())
    });
    let opts = ConnectOptions::default().tls(pki.client(), localhost());
    let clog = Shared::default();
    let c2 = clog.clone();
    lp.run_until_complete(async move {
        let (t, _p) = h
            .create_connection(move || Peer::new(&c2), addr, opts)
            .await
            .unwrap();
        // The shutdown timeout is the default 30 s; the deadline is shorter.
        t.close_with_deadline(Duration::from_millis(200));
        wait_for(&h, "deadline", LIMIT, || clog.borrow().lost.is_some()).await;
        assert!(
            matches!(
                clog.borrow().lost,
                Some(CloseReason::Timeout(TimeoutKind::Close))
            ),
            "{:?}",
            clog.borrow().lost
        );
    })
    .unwrap();
}
