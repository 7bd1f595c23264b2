//! The layer's output cork, seen from the transport below: what rustls
//! answers to one read (the session tickets after the client's
//! `Finished`) and what the protocol writes back from `data_received`
//! leave in one write; a big write leaves at once; and flow control counts
//! what the cork holds. The server's layer runs over a `RecordingTransport`
//! and the client is a rustls connection in memory, so every write the
//! layer makes below is seen exactly.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Duration;

use protoloop::testing::{Call, RecordingTransport};
use protoloop::tls::{self, TlsServer};
use protoloop::{EventLoop, Protocol, Transport};

use super::support::*;

/// Answers each read with `reply_len` copies of its first byte, and notes
/// what `get_write_buffer_size` said right after.
struct Replier {
    t: Option<Transport>,
    reply_len: usize,
    buffered: Rc<RefCell<Vec<usize>>>,
}

impl Protocol for Replier {
    fn connection_made(&mut self, t: Transport) {
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        let t = self.t.as_ref().unwrap();
        t.write(&vec![data[0]; self.reply_len]).unwrap();
        self.buffered.borrow_mut().push(t.get_write_buffer_size());
    }
}

struct Rig {
    rec: Rc<RecordingTransport>,
    lower: Rc<RefCell<dyn Protocol>>,
    client: rustls::ClientConnection,
}

impl Rig {
    /// Hand the client's pending records to the layer in one read and
    /// return the writes the layer made below, one entry per write.
    async fn client_to_server(&mut self) -> Vec<Vec<u8>> {
        let mut records = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut records).unwrap();
        }
        self.rec.take_calls();
        self.lower.borrow_mut().data_received(&records);
        // Let anything the layer scheduled run before looking.
        protoloop::sleep(Duration::from_millis(1)).await;
        self.rec
            .take_calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Write(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    /// Feed the layer's writes to the client; the plaintext they held.
    fn server_to_client(&mut self, writes: &[Vec<u8>]) -> Vec<u8> {
        let all = writes.concat();
        let mut rd = &all[..];
        let mut plain = Vec::new();
        while !rd.is_empty() {
            self.client.read_tls(&mut rd).unwrap();
            self.client.process_new_packets().unwrap();
            // rustls holds only so much plaintext: take it as it comes.
            match self.client.reader().read_to_end(&mut plain) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("client read: {e}"),
            }
        }
        plain
    }
}

/// Handshake up to the client's `Finished`, then send it with one byte of
/// data in the same read, as a client pipelining its first request does.
/// Returns the layer's writes for that read, the client's plaintext from
/// them, and what the protocol saw buffered after its reply.
fn finished_and_first_request(reply_len: usize) -> (Vec<Vec<u8>>, Vec<u8>, Vec<usize>) {
    let pki = pki();
    let lp = EventLoop::new().unwrap();
    let buffered = Rc::new(RefCell::new(Vec::new()));
    let b = buffered.clone();
    let (writes, plain) = lp
        .run_until_complete(async move {
            let rec = RecordingTransport::new();
            let proto = Rc::new(RefCell::new(Replier {
                t: None,
                reply_len,
                buffered: b,
            }));
            let up = tls::start_tls_with_protocol(
                &rec.transport(),
                TlsServer::new(pki.server()),
                b"",
                proto,
            )
            .unwrap();
            protoloop::sleep(Duration::from_millis(1)).await; // the swap
            let lower = rec
                .transport()
                .get_protocol()
                .expect("the layer is the protocol below");
            let client = rustls::ClientConnection::new(pki.client(), localhost()).unwrap();
            let mut rig = Rig { rec, lower, client };

            let flight = rig.client_to_server().await; // ClientHello
            assert!(!flight.is_empty(), "the server answered the ClientHello");
            rig.server_to_client(&flight);
            assert!(
                !rig.client.is_handshaking(),
                "the client has the server's Finished"
            );

            rig.client.writer().write_all(b"x").unwrap();
            let writes = rig.client_to_server().await; // Finished + "x"
            let plain = rig.server_to_client(&writes);
            drop(up);
            (writes, plain)
        })
        .unwrap();
    let seen = buffered.borrow().clone();
    (writes, plain, seen)
}

#[test]
fn session_tickets_and_the_first_reply_leave_in_one_write() {
    let (writes, plain, buffered) = finished_and_first_request(100);
    assert_eq!(plain, vec![b'x'; 100]);
    assert_eq!(
        writes.len(),
        1,
        "tickets and reply in one write, got writes of {:?} bytes",
        writes.iter().map(Vec::len).collect::<Vec<_>>()
    );
    // While held, the reply counts as buffered for flow control.
    assert_eq!(buffered, vec![100]);
}

#[test]
fn a_big_reply_leaves_at_once_behind_what_was_held() {
    let big = 64 * 1024;
    let (writes, plain, buffered) = finished_and_first_request(big);
    assert_eq!(plain.len(), big, "every byte of the reply arrived");
    assert!(plain.iter().all(|&b| b == b'x'));
    // Over the cork's limit the reply went below before write() returned,
    // after the tickets (the client decrypted them first, in order).
    assert_eq!(buffered, vec![0]);
    assert!(!writes.is_empty());
}
