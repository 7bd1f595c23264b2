//! Unix datagram endpoints: request and reply between paths, flow
//! control against a receiver that stops reading (connected, unconnected,
//! and with the receiver's queue full of someone else's datagrams),
//! errors, and stale socket paths.

use std::io::ErrorKind;
use std::time::Duration;

use protoloop::{
    CloseReason, DatagramProtocol, DatagramTransport, Error, EventLoop, Handle, Protocol,
    ProtocolHandle, SocketAddress, UnixAddr, UnixDatagramOptions, UnixServerOptions,
};

mod common;

use common::lifecycle::{checked, run};
use common::unix::{TempPath, abstract_name};
use common::{WAIT, wait_until};
use protoloop::testing::Checked;

/// The bound on each test body.
const DEADLINE: Duration = WAIT.saturating_mul(3);

/// A stream protocol that ignores its input.
struct Sink;

impl Protocol for Sink {
    fn data_received(&mut self, _: &[u8]) {}
}

/// Records every datagram callback.
#[derive(Default)]
struct DgramRecorder {
    t: Option<DatagramTransport>,
    got: Vec<(Vec<u8>, SocketAddress)>,
    errors: Vec<(std::io::Error, Option<SocketAddress>)>,
    lost: Vec<CloseReason>,
    pauses: usize,
    resumes: usize,
    after_lost: usize,
    /// Answer each datagram with its reverse.
    reply: bool,
    pause_in_made: bool,
}

impl DatagramProtocol for DgramRecorder {
    fn connection_made(&mut self, t: DatagramTransport) {
        if self.pause_in_made {
            t.pause_reading();
        }
        self.t = Some(t);
    }
    fn datagram_received(&mut self, data: &[u8], addr: SocketAddress) {
        self.after_lost += usize::from(!self.lost.is_empty());
        if self.reply {
            let back: Vec<u8> = data.iter().rev().copied().collect();
            self.t
                .as_ref()
                .unwrap()
                .sendto(&back, addr.clone())
                .unwrap();
        }
        self.got.push((data.to_vec(), addr));
    }
    fn error_received(&mut self, error: std::io::Error, addr: Option<SocketAddress>) {
        self.after_lost += usize::from(!self.lost.is_empty());
        self.errors.push((error, addr));
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.after_lost += usize::from(!self.lost.is_empty());
        self.lost.push(reason);
    }
    fn pause_writing(&mut self) {
        self.pauses += 1;
    }
    fn resume_writing(&mut self) {
        self.resumes += 1;
    }
}

fn dgram(
    h: &Handle,
    make: impl FnOnce() -> DgramRecorder + 'static,
    opts: UnixDatagramOptions,
) -> (DatagramTransport, ProtocolHandle<Checked<DgramRecorder>>) {
    h.create_unix_datagram_endpoint(move || checked(make()), opts)
        .unwrap()
}

#[test]
fn unix_datagram_request_and_reply_between_paths() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (sp, cp) = (TempPath::new("dgram-srv"), TempPath::new("dgram-cli"));
    let (server, sprot) = dgram(
        &h,
        || DgramRecorder {
            reply: true,
            ..DgramRecorder::default()
        },
        UnixDatagramOptions::default().local_addr(sp.path()),
    );
    let (client, cprot) = dgram(
        &h,
        DgramRecorder::default,
        UnixDatagramOptions::default().local_addr(cp.path()),
    );
    let to = UnixAddr::path(sp.path()).socket_address().unwrap();
    let (spath, cpath) = (sp.path().to_path_buf(), cp.path().to_path_buf());
    run(&lp, DEADLINE, async move {
        client.sendto(b"abc", to.clone()).unwrap();
        client.sendto(b"", to.clone()).unwrap();
        client.sendto(b"hello", to).unwrap();
        wait_until(&h, "replies", || cprot.with(|p| p.got.len() == 3)).await;
        cprot.with(|p| {
            let got: Vec<&[u8]> = p.got.iter().map(|(d, _)| d.as_slice()).collect();
            assert_eq!(
                got,
                [&b"cba"[..], b"", b"olleh"],
                "in order, empty one included"
            );
            assert_eq!(p.got[0].1.to_string(), spath.display().to_string());
        });
        sprot.with(|p| assert_eq!(p.got[0].1.to_string(), cpath.display().to_string()));
        assert!(client.peer_addr().is_none());
        client.close();
        server.close();
        wait_until(&h, "both lost", || {
            cprot.with(|p| p.lost.len()) == 1 && sprot.with(|p| p.lost.len()) == 1
        })
        .await;
        assert!(
            !spath.exists() && !cpath.exists(),
            "socket files removed on close"
        );
        cprot.with(|p| assert!(p.errors.is_empty() && p.after_lost == 0));
    });
}

/// Send `n` datagrams of `size` bytes to a receiver that is not reading,
/// then let it read: the sender must queue, pause, resume, and deliver
/// every datagram in order.
fn unix_datagram_flow_control(connected: bool) {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let name = abstract_name(if connected { "flow-c" } else { "flow-u" });
    let (rx, rprot) = dgram(
        &h,
        || DgramRecorder {
            pause_in_made: true,
            ..DgramRecorder::default()
        },
        UnixDatagramOptions::default().local_addr(name.clone()),
    );
    let opts = if connected {
        UnixDatagramOptions::default().remote_addr(name.clone())
    } else {
        UnixDatagramOptions::default()
    };
    let (tx, tprot) = dgram(&h, DgramRecorder::default, opts);
    let to = name.socket_address().unwrap();
    run(&lp, DEADLINE, async move {
        const N: usize = 300;
        for i in 0..N {
            let mut d = vec![(i % 256) as u8; 1000];
            d[..4].copy_from_slice(&(i as u32).to_be_bytes());
            if connected {
                tx.send(&d).unwrap();
            } else {
                tx.sendto(&d, to.clone()).unwrap();
            }
        }
        // The receiver's queue holds only a few: the rest is ours.
        assert!(tx.get_write_buffer_size() > tx.get_write_buffer_limits().0);
        wait_until(&h, "pause_writing", || tprot.with(|p| p.pauses == 1)).await;
        let huge = vec![0; 10_000_000];
        let e = if connected {
            tx.send(&huge)
        } else {
            tx.sendto(&huge, to.clone())
        }
        .unwrap_err();
        assert!(e.to_string().contains("10000000"), "{e}");
        rx.resume_reading();
        wait_until(&h, "every datagram", || rprot.with(|p| p.got.len() == N)).await;
        wait_until(&h, "resume_writing", || tprot.with(|p| p.resumes == 1)).await;
        assert_eq!(tx.get_write_buffer_size(), 0);
        rprot.with(|p| {
            for (i, (d, _)) in p.got.iter().enumerate() {
                assert_eq!(d.len(), 1000);
                assert_eq!(u32::from_be_bytes(d[..4].try_into().unwrap()) as usize, i);
            }
        });
        // close() flushes what is queued before closing.
        rx.pause_reading();
        for _ in 0..100 {
            tx.sendto(&[9; 1000], to.clone()).unwrap();
        }
        tx.close();
        assert!(tx.is_closing());
        assert!(matches!(tx.sendto(b"late", to.clone()), Err(Error::Closed)));
        rx.resume_reading();
        wait_until(&h, "the flushed tail", || {
            rprot.with(|p| p.got.len() == N + 100)
        })
        .await;
        wait_until(&h, "connection_lost", || tprot.with(|p| !p.lost.is_empty())).await;
        tprot.with(|p| {
            assert!(matches!(p.lost[..], [CloseReason::LocalClose]));
            assert!(p.errors.is_empty(), "{:?}", p.errors);
        });
        rx.close();
    });
}

#[test]
fn unix_datagram_flow_control_connected() {
    unix_datagram_flow_control(true);
}

#[test]
fn unix_datagram_flow_control_unconnected_retries() {
    unix_datagram_flow_control(false);
}

#[test]
fn unix_datagram_errors_are_clear() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let nobody = TempPath::new("dgram-nobody");
    let (t, p) = dgram(&h, DgramRecorder::default, UnixDatagramOptions::default());
    // Nobody at the path: the kernel says so at once, to the caller.
    let e = t
        .sendto(
            b"x",
            UnixAddr::path(nobody.path()).socket_address().unwrap(),
        )
        .unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::NotFound), "{e}");
    let e = t
        .sendto(b"x", "127.0.0.1:9".parse::<std::net::SocketAddr>().unwrap())
        .unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::InvalidInput), "{e}");
    let e = t.send(b"x").unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::InvalidInput), "{e}");
    // Multicast and broadcast are UDP things.
    assert!(matches!(t.set_broadcast(true), Err(Error::Unsupported(_))));
    // Connecting to nobody fails when the endpoint is made.
    let e = h
        .create_unix_datagram_endpoint(
            DgramRecorder::default,
            UnixDatagramOptions::default().remote_addr(nobody.path()),
        )
        .unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::NotFound), "{e}");
    run(&lp, DEADLINE, async move {
        t.abort();
        wait_until(&h, "lost", || p.with(|p| !p.lost.is_empty())).await;
        p.with(|p| assert!(matches!(p.lost[..], [CloseReason::LocalAbort])));
    });
}

#[test]
fn unix_datagram_stale_path_removed_live_refused() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let path = TempPath::new("dgram-stale");
    drop(std::os::unix::net::UnixDatagram::bind(path.path()).unwrap());
    let opts = || UnixDatagramOptions::default().local_addr(path.path());
    let e = h
        .create_unix_datagram_endpoint(DgramRecorder::default, opts().remove_stale(false))
        .unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::AddrInUse), "{e}");
    let (live, _) = dgram(&h, DgramRecorder::default, opts());
    let e = h
        .create_unix_datagram_endpoint(DgramRecorder::default, opts())
        .unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::AddrInUse), "{e}");
    assert!(path.path().exists());
    // A stream server is refused on a live datagram socket's path too.
    let e = h
        .create_unix_server(|| Sink, path.path(), UnixServerOptions::default())
        .unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::AddrInUse), "{e}");
    run(&lp, DEADLINE, async move {
        live.close();
        h.sleep(Duration::from_millis(1)).await;
    });
    assert!(!path.path().exists());
}

/// The receiver's queue is full of someone else's datagrams: reading them
/// wakes that sender, not ours, so our unconnected endpoint must retry on
/// its own to deliver what it queued.
#[test]
fn unix_datagram_unconnected_sender_retries_when_another_filled_the_queue() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let name = abstract_name("crowded");
    let (rx, rprot) = dgram(
        &h,
        || DgramRecorder {
            pause_in_made: true,
            ..DgramRecorder::default()
        },
        UnixDatagramOptions::default().local_addr(name.clone()),
    );
    let other = std::os::unix::net::UnixDatagram::unbound().unwrap();
    other.set_nonblocking(true).unwrap();
    let to_std = name.to_std().unwrap();
    let mut crowd = 0;
    loop {
        match other.send_to_addr(b"crowd", &to_std) {
            Ok(_) => crowd += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the queue: {e}"),
        }
        assert!(crowd < 100_000, "the receiver's queue never filled");
    }
    let (tx, tprot) = dgram(&h, DgramRecorder::default, UnixDatagramOptions::default());
    let to = name.socket_address().unwrap();
    run(&lp, DEADLINE, async move {
        for i in 0..5u8 {
            tx.sendto(&[i], to.clone()).unwrap();
        }
        assert_eq!(tx.get_write_buffer_size(), 5 * (1 + 8), "all five queued");
        rx.resume_reading();
        wait_until(&h, "our five after the crowd", || {
            rprot.with(|p| p.got.len() == crowd + 5)
        })
        .await;
        rprot.with(|p| {
            let ours: Vec<u8> = p.got[crowd..].iter().map(|(d, _)| d[0]).collect();
            assert_eq!(ours, [0, 1, 2, 3, 4]);
        });
        tprot.with(|p| assert!(p.errors.is_empty()));
        drop(other);
    });
}

#[test]
fn closing_the_loop_closes_endpoints_and_removes_their_files() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let path = TempPath::new("dgram-loopclose");
    // The protocol keeps its transport: a cycle only the loop can break.
    let (_t, _p) = dgram(
        &h,
        DgramRecorder::default,
        UnixDatagramOptions::default().local_addr(path.path()),
    );
    assert!(path.path().exists());
    drop(h);
    drop(lp);
    assert!(!path.path().exists(), "the socket file went with the loop");
}
