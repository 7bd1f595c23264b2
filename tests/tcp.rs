//! TCP connections over loopback: bulk data, half-close in both
//! directions, abort and reset, what close and close_with_deadline
//! deliver, adopting a socket, switching protocols, writelines, byte
//! counters, and what closing the loop does to open connections.

mod common;

use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::Duration;

use common::net::{connect, echo_server, first_lost, rec_server, write_with_flow_control};
use common::{Echo, Rec, Rng, read_to_eof, run, wait_until};
use protoloop::{CloseReason, Error, EventLoop, Protocol, ServerOptions, TimeoutKind, Transport};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn ten_megabytes_through_the_echo_server_arrive_byte_exact() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (server, addr) = echo_server(&h);
    let data = Rc::new(Rng::new(42).bytes(10 << 20));
    let h2 = h.clone();
    let d = data.clone();
    let probe = run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0).await;
        write_with_flow_control(&h2, &t, &p, &d, 1).await;
        wait_until(&h2, "the echo", || p.data_len() >= d.len()).await;
        let stats = t.stats();
        assert_eq!(stats.bytes_sent, d.len() as u64);
        assert_eq!(stats.bytes_received, d.len() as u64);
        t.close();
        wait_until(&h2, "lost", || p.is_lost()).await;
        p
    });
    assert_eq!(probe.data_len(), data.len());
    assert!(*probe.data.borrow() == *data, "echoed bytes differ");
    probe.check_contract();
    assert!(matches!(probe.lost(), Some(CloseReason::LocalClose)));
    server.close();
}

#[test]
fn client_write_eof_while_the_server_keeps_writing() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let reply = Rc::new(Rng::new(5).bytes(1 << 20));
    let r = reply.clone();
    let (_server, addr, sprobes) = rec_server(
        &h,
        move || {
            let r = r.clone();
            // eof_received returns true: our write side stays open.
            Rec::new().0.on_eof(move |t| {
                t.write(&r).unwrap();
                t.close();
                true
            })
        },
        ServerOptions::default(),
    );
    let h2 = h.clone();
    let (client, server) = run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0).await;
        t.write(b"request").unwrap();
        t.write_eof().unwrap();
        assert!(matches!(t.write(b"x"), Err(Error::EofWritten)));
        assert!(t.is_reading(), "write_eof stopped reading");
        wait_until(&h2, "client lost", || p.is_lost()).await;
        let s = first_lost(&h2, "server lost", &sprobes).await;
        (p, s)
    });
    assert_eq!(*server.data.borrow(), b"request");
    assert!(*client.data.borrow() == *reply);
    client.check_contract();
    server.check_contract();
    assert!(matches!(server.lost(), Some(CloseReason::LocalClose)));
    assert!(client.got_eof());
}

#[test]
fn server_write_eof_while_the_client_keeps_writing() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(
        &h,
        || {
            Rec::new().0.on_made(|t| {
                t.write(b"hello").unwrap();
                t.write_eof().unwrap();
            })
        },
        ServerOptions::default(),
    );
    let upload = Rc::new(Rng::new(9).bytes(1 << 20));
    let u = upload.clone();
    let h2 = h.clone();
    let (client, server) = run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0.on_eof(|_| true)).await;
        wait_until(&h2, "server's EOF", || p.got_eof()).await;
        assert_eq!(*p.data.borrow(), b"hello");
        assert!(
            !t.is_closing(),
            "eof_received returned true but the transport closed"
        );
        write_with_flow_control(&h2, &t, &p, &u, 2).await;
        t.close();
        wait_until(&h2, "client lost", || p.is_lost()).await;
        let s = first_lost(&h2, "server lost", &sprobes).await;
        (p, s)
    });
    assert!(*server.data.borrow() == *upload);
    client.check_contract();
    server.check_contract();
    assert!(server.got_eof());
    assert!(matches!(client.lost(), Some(CloseReason::LocalClose)));
}

#[test]
fn both_sides_write_eof_and_the_connection_closes() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(
        &h,
        || {
            Rec::new().0.on_eof(|t| {
                t.write(b"last").unwrap();
                t.write_eof().unwrap();
                true
            })
        },
        ServerOptions::default(),
    );
    let h2 = h.clone();
    let (client, server) = run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0.on_eof(|_| true)).await;
        t.write_eof().unwrap();
        wait_until(&h2, "client lost", || p.is_lost()).await;
        let s = first_lost(&h2, "server lost", &sprobes).await;
        (p, s)
    });
    assert_eq!(*client.data.borrow(), b"last");
    client.check_contract();
    server.check_contract();
    assert!(!client.lost().unwrap().is_error(), "{:?}", client.lost());
    assert!(!server.lost().unwrap().is_error(), "{:?}", server.lost());
}

/// Read `peer` (blocking, 10 s per read) until the connection is reset;
/// how many bytes came first. A clean EOF or any other error fails.
fn bytes_before_reset(peer: &mut TcpStream) -> usize {
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut total = 0;
    let mut buf = vec![0; 1 << 16];
    loop {
        match peer.read(&mut buf) {
            Ok(0) => panic!("clean EOF after {total} bytes; expected a reset"),
            Ok(n) => total += n,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
                return total;
            }
        }
    }
}

#[test]
fn abort_gives_the_peer_a_reset() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(
        &h,
        || Rec::new().0.on_data(|t, _, _| t.abort()),
        ServerOptions::default(),
    );
    let h2 = h.clone();
    let server = run(&lp, LIMIT, async move {
        let mut peer = TcpStream::connect(addr).unwrap();
        peer.write_all(b"please abort").unwrap();
        let server = first_lost(&h2, "server lost", &sprobes).await;
        let n = bytes_before_reset(&mut peer);
        assert_eq!(n, 0, "peer read {n} bytes instead of a reset");
        server
    });
    assert!(matches!(server.lost(), Some(CloseReason::LocalAbort)));
    server.check_contract();
}

#[test]
fn a_reset_from_the_peer_is_peer_reset() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(&h, || Rec::new().0, ServerOptions::default());
    let h2 = h.clone();
    let server = run(&lp, LIMIT, async move {
        let peer = TcpStream::connect(addr).unwrap();
        wait_until(&h2, "accepted", || !sprobes.borrow().is_empty()).await;
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
        first_lost(&h2, "server lost", &sprobes).await
    });
    assert!(
        matches!(server.lost(), Some(CloseReason::PeerReset(_))),
        "{:?}",
        server.lost()
    );
}

#[test]
fn close_delivers_everything_written_before_it() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let payload = Rc::new(Rng::new(11).bytes(6 << 20));
    let pl = payload.clone();
    let (_server, addr, sprobes) = rec_server(
        &h,
        move || {
            let pl = pl.clone();
            Rec::new().0.on_made(move |t| {
                // Several writes, far more than the kernel takes at once,
                // then close at once.
                for c in pl.chunks(1 << 20) {
                    t.write(c).unwrap();
                }
                t.close();
                assert!(t.is_closing());
            })
        },
        ServerOptions::default(),
    );
    let h2 = h.clone();
    let (got, server) = run(&lp, LIMIT, async move {
        let mut peer = TcpStream::connect(addr).unwrap();
        let got = read_to_eof(&h2, &mut peer).await.unwrap();
        let s = first_lost(&h2, "server lost", &sprobes).await;
        (got, s)
    });
    assert_eq!(got.len(), payload.len());
    assert!(got == *payload);
    assert!(matches!(server.lost(), Some(CloseReason::LocalClose)));
    server.check_contract();
}

#[test]
fn close_with_deadline_aborts_when_the_peer_does_not_read() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(
        &h,
        || {
            Rec::new().0.on_made(|t| {
                t.write(&vec![0; 16 << 20]).unwrap();
                t.close_with_deadline(Duration::from_millis(200));
                t.close_with_deadline(Duration::from_secs(100)); // no effect
            })
        },
        ServerOptions::default(),
    );
    let h2 = h.clone();
    let server = run(&lp, LIMIT, async move {
        let mut peer = TcpStream::connect(addr).unwrap();
        let server = first_lost(&h2, "server lost", &sprobes).await;
        // The peer gets part of the data, then a reset, never a clean EOF.
        let total = bytes_before_reset(&mut peer);
        assert!(total < 16 << 20);
        server
    });
    assert!(
        matches!(
            server.lost(),
            Some(CloseReason::Timeout(TimeoutKind::Close))
        ),
        "{:?}",
        server.lost()
    );
}

#[test]
fn close_with_deadline_closes_normally_when_flushed_in_time() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(
        &h,
        || {
            Rec::new().0.on_made(|t| {
                t.write(&[3; 100_000]).unwrap();
                t.close_with_deadline(Duration::from_secs(30));
            })
        },
        ServerOptions::default(),
    );
    let h2 = h.clone();
    let (got, server) = run(&lp, LIMIT, async move {
        let mut peer = TcpStream::connect(addr).unwrap();
        let got = read_to_eof(&h2, &mut peer).await.unwrap();
        let s = first_lost(&h2, "lost", &sprobes).await;
        (got, s)
    });
    assert_eq!(got, vec![3; 100_000]);
    assert!(matches!(server.lost(), Some(CloseReason::LocalClose)));
    // The deadline timer went with the connection.
    assert_eq!(h.stats().ready, 0);
}

#[test]
fn a_server_that_closes_in_connection_made() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(
        &h,
        || {
            Rec::new().0.on_made(|t| {
                t.write(b"go away").unwrap();
                t.close();
            })
        },
        ServerOptions::default(),
    );
    let h2 = h.clone();
    let client = run(&lp, LIMIT, async move {
        let (_t, p) = connect(&h2, addr, Rec::new().0).await;
        wait_until(&h2, "client lost", || p.is_lost()).await;
        first_lost(&h2, "server lost", &sprobes)
            .await
            .check_contract();
        p
    });
    client.check_contract();
    assert_eq!(*client.data.borrow(), b"go away");
    assert!(matches!(client.lost(), Some(CloseReason::PeerEof)));
}

#[test]
fn connect_accepted_socket_runs_a_protocol_on_a_std_stream() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (ours, mut peer) = common::socket_pair();
    let peer_addr = peer.local_addr().unwrap();
    let (t, proto) = h.connect_accepted_socket(Echo::default(), ours).unwrap();
    assert_eq!(t.peer_addr().unwrap().as_inet(), Some(peer_addr));
    proto.with(|_echo| {});
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        peer.write_all(b"adopted").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        let got = read_to_eof(&h2, &mut peer).await.unwrap();
        assert_eq!(got, b"adopted");
    });
}

/// Speaks "line" until it sees "UPGRADE", then hands the connection to
/// an [`Upper`] protocol that answers in upper case.
struct Lines {
    t: Option<Transport>,
    lost: Rc<RefCell<Vec<String>>>,
}

impl Protocol for Lines {
    fn connection_made(&mut self, t: Transport) {
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        let t = self.t.as_ref().unwrap();
        if data == b"UPGRADE" {
            t.write(b"switching").unwrap();
            t.set_protocol(Rc::new(RefCell::new(Upper {
                t: t.clone(),
                lost: self.lost.clone(),
            })));
        } else {
            t.write(data).unwrap();
        }
    }
    fn connection_lost(&mut self, _: CloseReason) {
        self.lost.borrow_mut().push("lines".into());
    }
}

struct Upper {
    t: Transport,
    lost: Rc<RefCell<Vec<String>>>,
}

impl Protocol for Upper {
    fn data_received(&mut self, data: &[u8]) {
        self.t.write(&data.to_ascii_uppercase()).unwrap();
    }
    fn connection_lost(&mut self, _: CloseReason) {
        self.lost.borrow_mut().push("upper".into());
    }
}

#[test]
fn set_protocol_switches_protocols_mid_connection() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let lost = Rc::new(RefCell::new(Vec::new()));
    let l = lost.clone();
    let server = h
        .create_server(
            move || Lines {
                t: None,
                lost: l.clone(),
            },
            "127.0.0.1:0",
            ServerOptions::default(),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    let h2 = h.clone();
    let l = lost.clone();
    run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0).await;
        t.write(b"abc").unwrap();
        wait_until(&h2, "echo", || p.data_len() == 3).await;
        t.write(b"UPGRADE").unwrap();
        wait_until(&h2, "switch", || p.data_len() == 12).await;
        t.write(b"abc").unwrap();
        wait_until(&h2, "upper", || p.data_len() == 15).await;
        assert_eq!(*p.data.borrow(), b"abcswitchingABC");
        t.close();
        wait_until(&h2, "server lost", || !l.borrow().is_empty()).await;
    });
    // Only the current protocol hears about the end.
    assert_eq!(*lost.borrow(), ["upper"]);
}

#[test]
fn writelines_sends_every_chunk_in_order() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(&h, || Rec::new().0, ServerOptions::default());
    let mut rng = Rng::new(77);
    // More chunks than one writev takes, some empty, some large.
    let chunks: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            let n = match i % 10 {
                0 => 0,
                1 => rng.range(100_000, 300_000),
                _ => rng.range(1, 2000),
            };
            rng.bytes(n)
        })
        .collect();
    let want: Vec<u8> = chunks.concat();
    let h2 = h.clone();
    let w = want.clone();
    let got = run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0).await;
        let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        t.writelines(&refs[..150]).unwrap();
        t.writelines(&[]).unwrap();
        t.writelines(&refs[150..]).unwrap();
        t.close();
        let server = first_lost(&h2, "server got all", &sprobes).await;
        assert_eq!(t.stats().bytes_sent, w.len() as u64);
        wait_until(&h2, "client lost", || p.is_lost()).await;
        server
    });
    assert_eq!(got.data_len(), want.len());
    assert!(*got.data.borrow() == want);
}

#[test]
fn big_writes_are_flushed_with_no_other_traffic() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(&h, || Rec::new().0, ServerOptions::default());
    let data = Rc::new(Rng::new(8).bytes(8 << 20));
    let d = data.clone();
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let (t, _p) = connect(&h2, addr, Rec::new().0).await;
        wait_until(&h2, "accepted", || sprobes.borrow().len() == 1).await;
        // Nothing else happens on this connection: only writable edges
        // can move the rest of the buffer.
        t.write(&d[..3 << 20]).unwrap();
        t.writelines(&[&d[3 << 20..5 << 20], &d[5 << 20..]])
            .unwrap();
        let s = sprobes.borrow()[0].clone();
        wait_until(&h2, "all bytes at the server", || s.data_len() == d.len()).await;
        assert!(*s.data.borrow() == *d);
        assert_eq!(t.get_write_buffer_size(), 0);
        t.close();
    });
}

#[test]
fn byte_counters_and_addresses_match_on_both_ends() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(
        &h,
        || {
            Rec::new().0.on_data(|t, d, _| {
                t.write(d).unwrap();
                t.write(d).unwrap();
            })
        },
        ServerOptions::default(),
    );
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0).await;
        for n in [1usize, 10, 1000, 100_000] {
            t.write(&vec![1; n]).unwrap();
        }
        let sent = 1 + 10 + 1000 + 100_000;
        wait_until(&h2, "echo", || p.data_len() == 2 * sent).await;
        let s = sprobes.borrow()[0].clone();
        let st = s.transport();
        assert_eq!(t.stats().bytes_sent, sent as u64);
        assert_eq!(t.stats().bytes_received, 2 * sent as u64);
        assert_eq!(st.stats().bytes_received, sent as u64);
        assert_eq!(st.stats().bytes_sent, 2 * sent as u64);
        let (cl, cp) = (t.local_addr().unwrap(), t.peer_addr().unwrap());
        assert_eq!(cp.as_inet(), Some(addr));
        assert_eq!(st.local_addr().unwrap().as_inet(), Some(addr));
        assert_eq!(st.peer_addr().unwrap().as_inet(), cl.as_inet());
        let peername = t.extra("peername").unwrap();
        let peername = peername.downcast_ref::<protoloop::SocketAddress>().unwrap();
        assert_eq!(peername.as_inet(), Some(addr));
        assert!(t.extra("no such key").is_none());
        t.close();
    });
}

#[test]
fn closing_the_loop_closes_its_connections() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr) = echo_server(&h);
    let mut peer = TcpStream::connect(addr).unwrap();
    let (ours, adopted_peer) = common::socket_pair();
    // Protocols that keep their transport: a reference cycle that only
    // the loop can break.
    h.connect_accepted_socket(Echo::default(), ours).unwrap();
    let h2 = h.clone();
    let (mut peer, mut adopted_peer) = run(&lp, LIMIT, async move {
        peer.write_all(b"x").unwrap();
        let got = {
            peer.set_nonblocking(true).unwrap();
            let mut got = Vec::new();
            wait_until(&h2, "echo", || {
                common::read_available(&mut peer, &mut got).unwrap();
                !got.is_empty()
            })
            .await;
            got
        };
        assert_eq!(got, b"x");
        peer.set_nonblocking(false).unwrap();
        (peer, adopted_peer)
    });
    drop(h);
    drop(lp);
    // Both peers see the connection end (EOF or reset), not silence.
    for p in [&mut peer, &mut adopted_peer] {
        p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        match p.read(&mut [0; 8]) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("peer read {other:?} after the loop was dropped"),
        }
    }
}

/// A connection closed just before its loop: `connection_lost` was
/// scheduled, then dropped unrun with the loop. The protocol, which keeps
/// its transport, is dropped all the same.
#[test]
fn a_connection_closed_just_before_its_loop_still_drops_its_protocol() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (ours, _peer) = common::socket_pair();
    let (t, p) = h.connect_accepted_socket(Echo::default(), ours).unwrap();
    let protocol = Rc::downgrade(p.rc());
    t.close();
    drop((t, p, h));
    drop(lp);
    assert!(
        protocol.upgrade().is_none(),
        "the protocol outlived its loop"
    );
}
