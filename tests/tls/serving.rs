//! Serving TLS: `Server::close_clients` closes through the TLS layer
//! (close_notify, not a bare FIN), and TLS over Unix sockets.

use protoloop::{CloseReason, ConnectOptions, EventLoop, ServerOptions};

use super::support::*;

#[test]
fn close_clients_sends_close_notify_after_what_was_written() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let slog = Shared::default();
    let s2 = slog.clone();
    let server = h
        .create_server(
            move || Peer::echo(&s2),
            "127.0.0.1:0",
            ServerOptions::default().tls(pki.server()),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
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
