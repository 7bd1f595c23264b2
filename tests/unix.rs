//! Unix-domain stream sockets: connections and servers (a 10 MB echo,
//! half-close, flow control, abort, graceful shutdown, stale socket files,
//! abstract names, connect errors, a full backlog, the idle timeout). Unix datagram
//! endpoints are in `unix_datagram.rs`.
//!
//! Socket paths live in the temp dir under unique names and are removed
//! by a guard, so a failing test leaves nothing behind.

use std::cell::{Cell, RefCell};
use std::io::ErrorKind;
use std::rc::Rc;
use std::time::Duration;

use protoloop::{
    CloseReason, Error, EventLoop, Handle, Protocol, Server, SocketAddress, Transport, UnixAddr,
    UnixServerOptions,
};

mod common;

use common::lifecycle::run;
use common::unix::{TempPath, abstract_name};
use common::{Echo, WAIT, wait_until};

/// The bound on each test body.
const DEADLINE: Duration = WAIT.saturating_mul(3);

/// What a [`Recorder`] saw, shared with the test.
#[derive(Default)]
struct Seen {
    transport: RefCell<Option<Transport>>,
    data: RefCell<Vec<u8>>,
    eof: Cell<bool>,
    lost: RefCell<Option<CloseReason>>,
    pauses: Cell<usize>,
    resumes: Cell<usize>,
    /// Calls after `connection_lost` (must stay 0).
    after_lost: Cell<usize>,
}

/// Records every callback; `keep_open` is what `eof_received` returns.
struct Recorder {
    seen: Rc<Seen>,
    keep_open: bool,
}

impl Recorder {
    fn new(seen: &Rc<Seen>) -> Recorder {
        Recorder {
            seen: seen.clone(),
            keep_open: false,
        }
    }
    fn check_alive(&self) {
        if self.seen.lost.borrow().is_some() {
            self.seen.after_lost.set(self.seen.after_lost.get() + 1);
        }
    }
}

impl Protocol for Recorder {
    fn connection_made(&mut self, t: Transport) {
        *self.seen.transport.borrow_mut() = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.check_alive();
        self.seen.data.borrow_mut().extend_from_slice(data);
    }
    fn eof_received(&mut self) -> bool {
        self.check_alive();
        self.seen.eof.set(true);
        self.keep_open
    }
    fn pause_writing(&mut self) {
        self.check_alive();
        self.seen.pauses.set(self.seen.pauses.get() + 1);
    }
    fn resume_writing(&mut self) {
        self.check_alive();
        self.seen.resumes.set(self.seen.resumes.get() + 1);
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.check_alive();
        *self.seen.lost.borrow_mut() = Some(reason);
    }
}

/// Connect to `addr` with a [`Recorder`]: the transport and what the
/// recorder sees.
async fn connect_recorder(
    h: &Handle,
    addr: impl Into<UnixAddr>,
) -> Result<(Transport, Rc<Seen>), Error> {
    let seen = Rc::new(Seen::default());
    let s = seen.clone();
    let (t, _) = h
        .create_unix_connection(move || Recorder::new(&s), addr)
        .await?;
    Ok((t, seen))
}

/// A Unix server on `addr` whose protocols are [`Recorder`]s, and what
/// each of them sees, in accept order.
fn recorder_server(
    h: &Handle,
    addr: impl Into<UnixAddr>,
    opts: UnixServerOptions,
) -> (Server, Rc<RefCell<Vec<Rc<Seen>>>>) {
    let server_seen: Rc<RefCell<Vec<Rc<Seen>>>> = Rc::default();
    let ss = server_seen.clone();
    let server = h
        .create_unix_server(
            move || {
                let s = Rc::new(Seen::default());
                ss.borrow_mut().push(s.clone());
                Recorder::new(&s)
            },
            addr,
            opts,
        )
        .unwrap();
    (server, server_seen)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn ten_megabytes_echo_byte_exact_over_a_path() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let path = TempPath::new("echo");
    let server = h
        .create_unix_server(Echo::default, path.path(), UnixServerOptions::default())
        .unwrap();
    let addrs = server.addresses();
    assert_eq!(addrs.len(), 1);
    assert_eq!(addrs[0].to_string(), path.path().display().to_string());
    assert!(
        server.local_addrs().is_empty(),
        "no IP address on a Unix server"
    );
    let p = path.path().to_path_buf();
    run(&lp, DEADLINE, async move {
        let (t, seen) = connect_recorder(&h, p.as_path()).await.unwrap();
        assert_eq!(t.peer_addr().unwrap().to_string(), p.display().to_string());
        let data = pattern(10 * 1024 * 1024);
        t.write(&data).unwrap();
        assert!(
            t.get_write_buffer_size() > 0,
            "10 MB cannot fit in the kernel"
        );
        wait_until(&h, "the echo", || seen.data.borrow().len() >= data.len()).await;
        assert!(*seen.data.borrow() == data, "echo differs");
        assert!(seen.pauses.get() >= 1 && seen.pauses.get() == seen.resumes.get());
        assert_eq!(server.connection_count(), 1);
        t.close();
        wait_until(&h, "connection_lost", || seen.lost.borrow().is_some()).await;
        assert!(matches!(*seen.lost.borrow(), Some(CloseReason::LocalClose)));
        wait_until(&h, "the server side to close", || {
            server.connection_count() == 0
        })
        .await;
        assert_eq!(
            t.write(b"x").unwrap_err().to_string(),
            Error::Closed.to_string()
        );
        server.close();
        assert!(!p.exists(), "the socket file is removed on close");
        assert_eq!(seen.after_lost.get(), 0);
    });
}

/// Server side of the half-close test: collects until EOF, then answers
/// with the byte count and closes its side.
struct CountThenReply {
    t: Option<Transport>,
    n: usize,
}

impl Protocol for CountThenReply {
    fn connection_made(&mut self, t: Transport) {
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.n += data.len();
    }
    fn eof_received(&mut self) -> bool {
        let t = self.t.as_ref().unwrap();
        t.write(format!("got {}", self.n).as_bytes()).unwrap();
        t.write_eof().unwrap();
        true
    }
}

#[test]
fn half_close_both_ways() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let path = TempPath::new("halfclose");
    let server = h
        .create_unix_server(
            || CountThenReply { t: None, n: 0 },
            path.path(),
            UnixServerOptions::default(),
        )
        .unwrap();
    let p = path.path().to_path_buf();
    run(&lp, DEADLINE, async move {
        let seen = Rc::new(Seen::default());
        let s = seen.clone();
        let (t, _proto) = h
            .create_unix_connection(
                move || Recorder {
                    seen: s,
                    keep_open: true,
                },
                p.as_path(),
            )
            .await
            .unwrap();
        assert!(t.can_write_eof());
        t.write(&pattern(300_000)).unwrap();
        t.write_eof().unwrap();
        assert!(matches!(t.write(b"late"), Err(Error::EofWritten)));
        // Our writing side is shut, but we still read the reply.
        wait_until(&h, "the reply and EOF", || seen.eof.get()).await;
        assert_eq!(&*seen.data.borrow(), b"got 300000");
        // Both sides shut: the transport closes itself.
        wait_until(&h, "connection_lost", || seen.lost.borrow().is_some()).await;
        assert!(!seen.lost.borrow().as_ref().unwrap().is_error());
        wait_until(&h, "server side gone", || server.connection_count() == 0).await;
        server.close();
    });
}

#[test]
fn abort_is_seen_by_the_peer_and_shutdown_drains() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let name = abstract_name("shutdown");
    let (server, server_seen) = recorder_server(&h, name.clone(), UnixServerOptions::default());
    run(&lp, DEADLINE, async move {
        // One connection aborted by the client.
        let (t, seen) = connect_recorder(&h, name.clone()).await.unwrap();
        wait_until(&h, "accept", || server.connection_count() == 1).await;
        t.write(b"bye").unwrap();
        t.abort();
        wait_until(&h, "the server side to see it", || {
            server_seen.borrow()[0].lost.borrow().is_some()
        })
        .await;
        assert!(matches!(*seen.lost.borrow(), Some(CloseReason::LocalAbort)));

        // Two more, then a graceful shutdown: the protocols do not ask for
        // time, so both are closed and the clients read EOF.
        let mut clients = Vec::new();
        for _ in 0..2 {
            clients.push(connect_recorder(&h, name.clone()).await.unwrap());
        }
        wait_until(&h, "accept", || server.connection_count() == 2).await;
        server.shutdown(Duration::from_secs(10)).await;
        assert!(server.is_closed() && !server.is_serving());
        for (_t, s) in &clients {
            wait_until(&h, "client EOF", || s.lost.borrow().is_some()).await;
            assert!(s.eof.get());
        }
        // The abstract name is free again.
        let again = h
            .create_unix_server(Echo::default, name.clone(), UnixServerOptions::default())
            .unwrap();
        again.close();
        for s in server_seen.borrow().iter() {
            assert_eq!(s.after_lost.get(), 0);
        }
    });
}

#[test]
fn flow_control_pauses_and_resumes_the_writer() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let path = TempPath::new("flow");
    let (server, server_seen) = recorder_server(&h, path.path(), UnixServerOptions::default());
    let p = path.path().to_path_buf();
    run(&lp, DEADLINE, async move {
        let (t, seen) = connect_recorder(&h, p.as_path()).await.unwrap();
        wait_until(&h, "accept", || !server_seen.borrow().is_empty()).await;
        let peer = server_seen.borrow()[0].clone();
        let peer_t = peer.transport.borrow().clone().unwrap();
        peer_t.pause_reading();
        // Write until the kernel and then our buffer are full.
        let chunk = pattern(64 * 1024);
        let mut sent = 0;
        while seen.pauses.get() == 0 {
            t.write(&chunk).unwrap();
            sent += chunk.len();
            assert!(sent < 64 * 1024 * 1024, "never paused");
            h.sleep(Duration::from_millis(1)).await;
        }
        assert!(t.get_write_buffer_size() > t.get_write_buffer_limits().0);
        assert_eq!(seen.resumes.get(), 0);
        peer_t.resume_reading();
        wait_until(&h, "resume_writing", || seen.resumes.get() == 1).await;
        assert!(t.get_write_buffer_size() <= t.get_write_buffer_limits().1);
        wait_until(&h, "all bytes", || peer.data.borrow().len() == sent).await;
        assert!(peer.data.borrow().chunks(chunk.len()).all(|c| c == chunk));
        t.close();
        server.close();
    });
}

#[test]
fn stale_socket_file_is_removed_but_a_live_one_is_not() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let path = TempPath::new("stale");
    // A dead server: the listener is gone, its socket file stays.
    drop(std::os::unix::net::UnixListener::bind(path.path()).unwrap());
    assert!(path.path().exists());

    let err = h
        .create_unix_server(
            Echo::default,
            path.path(),
            UnixServerOptions::default().remove_stale(false),
        )
        .unwrap_err();
    assert_eq!(err.io_kind(), Some(ErrorKind::AddrInUse), "{err}");
    assert!(err.to_string().contains("stale"), "{err}");

    let live = h
        .create_unix_server(Echo::default, path.path(), UnixServerOptions::default())
        .expect("the stale file is removed and the bind retried");

    // A second server on the live path is refused; the file stays and
    // the first server keeps working.
    let err = h
        .create_unix_server(Echo::default, path.path(), UnixServerOptions::default())
        .unwrap_err();
    assert_eq!(err.io_kind(), Some(ErrorKind::AddrInUse), "{err}");
    assert!(err.to_string().contains("live"), "{err}");
    assert!(path.path().exists());
    let p = path.path().to_path_buf();
    run(&lp, DEADLINE, async move {
        let (t, seen) = connect_recorder(&h, p.as_path())
            .await
            .expect("the live server still accepts");
        t.write(b"ping").unwrap();
        wait_until(&h, "echo", || seen.data.borrow().len() == 4).await;
        t.close();
        live.close();
    });
    assert!(!path.path().exists());
}

#[test]
fn a_file_that_is_not_a_socket_is_never_removed() {
    let lp = EventLoop::new().unwrap();
    let path = TempPath::new("regular");
    std::fs::write(path.path(), b"precious").unwrap();
    let err = lp
        .handle()
        .create_unix_server(Echo::default, path.path(), UnixServerOptions::default())
        .unwrap_err();
    assert_eq!(err.io_kind(), Some(ErrorKind::AddrInUse), "{err}");
    assert_eq!(std::fs::read(path.path()).unwrap(), b"precious");
}

#[test]
fn socket_file_kept_when_asked_and_not_removed_if_replaced() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let path = TempPath::new("keep");
    let s = h
        .create_unix_server(
            Echo::default,
            path.path(),
            UnixServerOptions::default().remove_on_close(false),
        )
        .unwrap();
    s.close();
    assert!(
        path.path().exists(),
        "remove_on_close(false) keeps the file"
    );

    // A server whose file was replaced by someone else's leaves that alone.
    let s = h
        .create_unix_server(Echo::default, path.path(), UnixServerOptions::default())
        .unwrap();
    std::fs::remove_file(path.path()).unwrap();
    std::fs::write(path.path(), b"someone else's").unwrap();
    s.close();
    assert_eq!(std::fs::read(path.path()).unwrap(), b"someone else's");
}

#[test]
fn abstract_names_make_no_file_and_are_exclusive() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let name = abstract_name("abs");
    let server = h
        .create_unix_server(Echo::default, name.clone(), UnixServerOptions::default())
        .unwrap();
    match &server.addresses()[0] {
        SocketAddress::Unix(a) => assert_eq!(UnixAddr::from_std(a), Some(name.clone())),
        other => panic!("not a Unix address: {other}"),
    }
    let err = h
        .create_unix_server(Echo::default, name.clone(), UnixServerOptions::default())
        .unwrap_err();
    assert_eq!(err.io_kind(), Some(ErrorKind::AddrInUse), "{err}");
    run(&lp, DEADLINE, async move {
        let (t, seen) = connect_recorder(&h, name).await.unwrap();
        t.write(b"abstract").unwrap();
        wait_until(&h, "echo", || seen.data.borrow().len() == 8).await;
        assert_eq!(&*seen.data.borrow(), b"abstract");
        t.close();
        server.close();
    });
}

#[test]
fn connect_errors_are_clear() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let missing = TempPath::new("missing");
    let stale = TempPath::new("refused");
    drop(std::os::unix::net::UnixListener::bind(stale.path()).unwrap());
    let (m, s) = (missing.path().to_path_buf(), stale.path().to_path_buf());
    run(&lp, DEADLINE, async move {
        let e = h
            .create_unix_connection(Echo::default, m.as_path())
            .await
            .unwrap_err();
        assert_eq!(e.io_kind(), Some(ErrorKind::NotFound), "{e}");
        assert!(e.to_string().contains(&*m.to_string_lossy()), "{e}");
        let e = h
            .create_unix_connection(Echo::default, s.as_path())
            .await
            .unwrap_err();
        assert_eq!(e.io_kind(), Some(ErrorKind::ConnectionRefused), "{e}");
        let e = h
            .create_unix_connection(Echo::default, UnixAddr::path("\0not-abstract"))
            .await
            .unwrap_err();
        assert_eq!(e.io_kind(), Some(ErrorKind::InvalidInput), "{e}");
        let long = "x".repeat(200);
        let e = h
            .create_unix_connection(Echo::default, long.as_str())
            .await
            .unwrap_err();
        assert_eq!(e.io_kind(), Some(ErrorKind::InvalidInput), "{e}");
        let e = h
            .create_unix_server(Echo::default, long.as_str(), UnixServerOptions::default())
            .unwrap_err();
        assert_eq!(e.io_kind(), Some(ErrorKind::InvalidInput), "{e}");
    });
}

#[test]
fn connect_retries_while_the_backlog_is_full() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let path = TempPath::new("backlog");
    // Backlog 0: Linux queues one connection, then refuses with EAGAIN.
    let server = h
        .create_unix_server(
            Echo::default,
            path.path(),
            UnixServerOptions::default().backlog(0).start_serving(false),
        )
        .unwrap();
    let p = path.path().to_path_buf();
    run(&lp, DEADLINE, async move {
        let first = h
            .create_unix_connection(Echo::default, p.as_path())
            .await
            .unwrap();
        let second = h.spawn(h.create_unix_connection(Echo::default, p.as_path()));
        h.sleep(Duration::from_millis(30)).await;
        assert!(!second.is_finished(), "the second connect waits for room");
        server.start_serving().unwrap();
        let (t2, _) = second.await.unwrap().expect("connected once accepted");
        wait_until(&h, "both accepted", || server.connection_count() == 2).await;
        first.0.close();
        t2.close();
        server.close();
    });
}

#[test]
fn an_idle_timeout_closes_a_silent_client_and_spares_an_active_one() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let path = TempPath::new("idle");
    let (server, server_seen) = recorder_server(
        &h,
        path.path(),
        UnixServerOptions::default().idle_timeout(Duration::from_millis(600)),
    );
    let p = path.path().to_path_buf();
    run(&lp, DEADLINE, async move {
        let (_quiet, silent) = connect_recorder(&h, p.as_path()).await.unwrap();
        let (talker, chatty) = connect_recorder(&h, p.as_path()).await.unwrap();
        // Keep one connection busy for well over the timeout.
        for _ in 0..12 {
            talker.write(b".").unwrap();
            protoloop::sleep(Duration::from_millis(100)).await;
        }
        wait_until(&h, "the silent client's close", || {
            silent.lost.borrow().is_some()
        })
        .await;
        assert!(chatty.lost.borrow().is_none(), "the active one stays");
        let seen = server_seen.borrow().clone();
        assert_eq!(seen.len(), 2);
        assert!(
            matches!(
                *seen[0].lost.borrow(),
                Some(CloseReason::Timeout(protoloop::TimeoutKind::Idle))
            ),
            "{:?}",
            seen[0].lost.borrow()
        );
        assert!(seen[1].lost.borrow().is_none());
        assert_eq!(seen[1].data.borrow().len(), 12);
        talker.close();
        server.close();
    });
}
