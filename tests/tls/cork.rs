//! The layer's output cork, seen from the transport below: what rustls
//! answers to one read (the session tickets after the client's
//! `Finished`) and what the protocol writes back from `data_received`
//! leave in one write; a big write leaves at once; and flow control counts
//! what the cork holds. The server's layer runs over a `RecordingTransport`
//! and the client is a rustls connection in memory, so every write the
//! layer makes below is seen exactly.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Duration;

use proptest::prelude::*;
use protoloop::testing::{Call, RecordingTransport};
use protoloop::tls::{self, TlsServer};
use protoloop::{EventLoop, Protocol, Transport};

use super::support::*;

/// Answers the n-th read with the n-th entry of `script`: writes of those
/// sizes, each filled with the read's first byte; noting what
/// `get_write_buffer_size` said after them.
struct Replier {
    t: Rc<RefCell<Option<Transport>>>,
    script: VecDeque<Vec<usize>>,
    buffered: Rc<RefCell<Vec<usize>>>,
}

impl Protocol for Replier {
    fn connection_made(&mut self, t: Transport) {
        *self.t.borrow_mut() = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        let t = self.t.borrow().clone().unwrap();
        for len in self.script.pop_front().unwrap_or_default() {
            t.write(&vec![data[0]; len]).unwrap();
        }
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

/// What one scripted run saw: per client request, the layer's writes below
/// and the plaintext the client decrypted from them; what the protocol saw
/// buffered after each reply; and the buffer once all was done.
struct Seen {
    writes: Vec<Vec<Vec<u8>>>,
    plain: Vec<Vec<u8>>,
    buffered: Vec<usize>,
    buffered_after: usize,
}

/// Handshake up to the client's `Finished`, then send it with the first
/// one-byte request in the same read, as a client pipelining its first
/// request does; then one request per further entry of `script`, each
/// answered by the writes the entry lists.
fn run_script(pki: &Pki, script: Vec<Vec<usize>>) -> Seen {
    let lp = EventLoop::new().unwrap();
    let buffered = Rc::new(RefCell::new(Vec::new()));
    let rounds = script.len();
    let (b, pki) = (buffered.clone(), (pki.server(), pki.client()));
    let (writes, plain, buffered_after) = lp
        .run_until_complete(async move {
            let rec = RecordingTransport::new();
            let server_t = Rc::new(RefCell::new(None));
            let proto = Rc::new(RefCell::new(Replier {
                t: server_t.clone(),
                script: script.into(),
                buffered: b,
            }));
            let up =
                tls::start_tls_with_protocol(&rec.transport(), TlsServer::new(pki.0), b"", proto)
                    .unwrap();
            protoloop::sleep(Duration::from_millis(1)).await; // the swap
            let lower = rec
                .transport()
                .get_protocol()
                .expect("the layer is the protocol below");
            let client = rustls::ClientConnection::new(pki.1, localhost()).unwrap();
            let mut rig = Rig { rec, lower, client };

            let flight = rig.client_to_server().await; // ClientHello
            assert!(!flight.is_empty(), "the server answered the ClientHello");
            rig.server_to_client(&flight);
            assert!(
                !rig.client.is_handshaking(),
                "the client has the server's Finished"
            );

            let (mut writes, mut plain) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                // The first goes with the client's Finished.
                rig.client
                    .writer()
                    .write_all(&[request_byte(round)])
                    .unwrap();
                let w = rig.client_to_server().await;
                plain.push(rig.server_to_client(&w));
                writes.push(w);
            }
            let after = server_t.borrow().as_ref().unwrap().get_write_buffer_size();
            drop(up);
            (writes, plain, after)
        })
        .unwrap();
    let buffered = buffered.borrow().clone();
    Seen {
        writes,
        plain,
        buffered,
        buffered_after,
    }
}

/// The one byte of the client's request number `round`: `x`, `y`, ...
fn request_byte(round: usize) -> u8 {
    b'x'.wrapping_add(round as u8)
}

/// [`run_script`] with one reply of `reply_len` bytes to the first request.
fn finished_and_first_request(reply_len: usize) -> (Vec<Vec<u8>>, Vec<u8>, Vec<usize>) {
    let mut seen = run_script(&pki(), vec![vec![reply_len]]);
    (seen.writes.remove(0), seen.plain.remove(0), seen.buffered)
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

/// The most plaintext the layer holds back (`CORK_LIMIT` in the layer).
const CORK_LIMIT: usize = 16 * 1024;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the protocol writes from data_received (none, small,
    /// around the cork's limit, big), the client gets every byte in order,
    /// nothing stays held once a read is handled, and a read whose replies
    /// fit under the limit costs exactly one write below.
    #[test]
    fn replies_of_any_size_arrive_whole_in_order(
        script in prop::collection::vec(
            prop::collection::vec(
                prop_oneof![0usize..64, 1usize..4096, 15_000usize..17_000, 17_000usize..70_000],
                0..4,
            ),
            1..6,
        )
    ) {
        let seen = PKI.with(|pki| run_script(pki, script.clone()));
        for (round, sizes) in script.iter().enumerate() {
            let want: Vec<u8> = sizes.iter().flat_map(|&n| vec![request_byte(round); n]).collect();
            prop_assert_eq!(&seen.plain[round], &want, "round {}", round);
            let total: usize = sizes.iter().sum();
            // The first round also carries the session tickets.
            if total > 0 && total <= CORK_LIMIT {
                prop_assert_eq!(seen.writes[round].len(), 1, "round {} ({:?})", round, sizes);
            }
            // What the cork still holds after the replies: a write that
            // would take it over the limit sends everything at once.
            let held = sizes
                .iter()
                .fold(0, |held, &n| if held + n <= CORK_LIMIT { held + n } else { 0 });
            prop_assert_eq!(seen.buffered[round], held, "round {} ({:?})", round, sizes);
        }
        prop_assert_eq!(seen.buffered_after, 0);
    }
}

thread_local! {
    /// One certificate for all the cases: making one takes a while.
    static PKI: Pki = pki();
}
