//! `abort()` and pausing on a TLS transport: what the protocol sees
//! after it aborts, and how much a paused upgraded connection buffers.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use protoloop::tls::{self, TlsClient};
use protoloop::{CloseReason, ConnectOptions, EventLoop, Protocol, Transport};

use super::support::*;

/// Writes `data` and closes (a `close_notify` right behind the data).
struct SayAndClose(&'static [u8]);

impl Protocol for SayAndClose {
    fn connection_made(&mut self, t: Transport) {
        t.write(self.0).unwrap();
        t.close();
    }
    fn data_received(&mut self, _: &[u8]) {}
}

/// Aborts on its first data; records what the transport answers then
/// and every callback.
#[derive(Default)]
struct AbortOnData {
    t: Option<Transport>,
    order: Rc<RefCell<Vec<String>>>,
}

impl Protocol for AbortOnData {
    fn connection_made(&mut self, t: Transport) {
        self.order.borrow_mut().push("made".into());
        self.t = Some(t);
    }
    fn data_received(&mut self, _: &[u8]) {
        self.order.borrow_mut().push("data".into());
        let t = self.t.as_ref().unwrap();
        t.abort();
        self.order
            .borrow_mut()
            .push(format!("closing={}", t.is_closing()));
        self.order
            .borrow_mut()
            .push(format!("write_refused={}", t.write(b"late").is_err()));
    }
    fn eof_received(&mut self) -> bool {
        self.order.borrow_mut().push("eof".into());
        false
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.order.borrow_mut().push(format!("lost {reason:?}"));
    }
}

/// After `abort()` the TLS transport is closing, refuses writes (rather
/// than dropping them silently), and calls nothing but `connection_lost`,
/// as TCP does.
#[test]
fn abort_refuses_writes_and_stops_callbacks_at_once() {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (server, addr) = tls_server(&h, &pki, || SayAndClose(b"hello"));
    let order = Rc::new(RefCell::new(Vec::new()));
    let o = order.clone();
    let opts = ConnectOptions::default().tls(pki.client(), localhost());
    lp.run_until_complete(async move {
        let _conn = h
            .create_connection(move || AbortOnData { t: None, order: o }, addr, opts)
            .await
            .unwrap();
        wait_for(&h, "connection_lost", LIMIT, || {
            order.borrow().iter().any(|s| s.starts_with("lost"))
        })
        .await;
        assert_eq!(
            *order.borrow(),
            [
                "made",
                "data",
                "closing=true",
                "write_refused=true",
                "lost LocalAbort"
            ]
        );
        server.close();
    })
    .unwrap();
}

/// Writes `total` bytes in 64 KiB pieces as soon as it is connected.
struct Flood(usize);

impl Protocol for Flood {
    fn connection_made(&mut self, t: Transport) {
        let chunk = vec![0x5a; 64 * 1024];
        for _ in 0..self.0 / chunk.len() {
            t.write(&chunk).unwrap();
        }
    }
    fn data_received(&mut self, _: &[u8]) {}
}

/// Counts plaintext.
#[derive(Default)]
struct Count(usize);

impl Protocol for Count {
    fn data_received(&mut self, d: &[u8]) {
        self.0 += d.len();
    }
}

/// Reading paused on the upgraded transport before the handshake is done
/// must pause the socket once it is: otherwise everything the peer sends
/// is decrypted into memory while the protocol is paused.
#[test]
fn reading_paused_during_start_tls_handshake_pauses_the_socket_after_it() {
    const TOTAL: usize = 16 * 1024 * 1024;
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (server, addr) = tls_server(&h, &pki, || Flood(TOTAL));
    let client = TlsClient::new(pki.client(), localhost());
    lp.run_until_complete(async move {
        let (plain, proto) = h
            .create_connection(Count::default, addr, ConnectOptions::default())
            .await
            .unwrap();
        let up = tls::start_tls(&plain, client, b"").unwrap();
        let t = up.transport();
        t.pause_reading();
        up.handshake().await.unwrap();
        h.sleep(Duration::from_millis(20)).await;
        assert!(!t.is_reading());
        assert!(
            !plain.is_reading(),
            "the socket below must be paused while the protocol is"
        );
        assert_eq!(proto.with(|p| p.0), 0, "nothing delivered while paused");
        t.resume_reading();
        wait_for(&h, "all the data", LIMIT, || proto.with(|p| p.0) == TOTAL).await;
        t.close();
        server.close();
    })
    .unwrap();
}
