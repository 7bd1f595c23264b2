//! `create_connection` over loopback: typed errors (refused, every
//! address failing, unresolvable names, timeouts), name resolution,
//! options (TCP_NODELAY both ends), cancellation, and IPv6.

mod common;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use common::net::{connect, echo_server};
use common::{Echo, Rec, run, wait_until};
use protoloop::{ConnectOptions, Error, EventLoop, ServerOptions};

const LIMIT: Duration = Duration::from_secs(60);

/// A socket bound to a free loopback port but not listening, and its
/// address: connecting to it is refused while the socket lives.
fn bound_socket() -> (socket2::Socket, SocketAddr) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    (sock, addr)
}

/// A listener that never accepts, with the smallest backlog: once its
/// queue is full the kernel ignores further SYNs, so connects hang.
fn never_accepting_listener() -> (socket2::Socket, SocketAddr) {
    let (sock, addr) = bound_socket();
    sock.listen(0).unwrap();
    (sock, addr)
}

#[test]
fn connection_refused_is_a_typed_error() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    // Bound but not listening: connecting is refused.
    let (_sock, addr) = bound_socket();
    let h2 = h.clone();
    let r = run(&lp, LIMIT, async move {
        h2.create_connection(|| Rec::new().0, addr, ConnectOptions::default())
            .await
            .map(|_| ())
    });
    let e = r.unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::ConnectionRefused), "{e}");
    match &e {
        Error::Connect { target, attempts } => {
            assert_eq!(target, &addr.to_string());
            assert_eq!(attempts.len(), 1);
            assert_eq!(attempts[0].0, addr);
        }
        other => panic!("expected Error::Connect, got {other:?}"),
    }
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    assert_eq!(h.stats().sources, 0, "failed connect left a source behind");
}

#[test]
fn every_address_is_tried_and_every_failure_reported() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (refusing, bad): (Vec<_>, Vec<SocketAddr>) = (0..2).map(|_| bound_socket()).unzip();
    let (_server, good) = echo_server(&h);
    let h2 = h.clone();
    let b = bad.clone();
    run(&lp, LIMIT, async move {
        // All failing: both errors listed.
        let e = h2
            .create_connection(|| Rec::new().0, b.clone(), ConnectOptions::default())
            .await
            .map(|_| ())
            .unwrap_err();
        match &e {
            Error::Connect { attempts, .. } => {
                let tried: Vec<_> = attempts.iter().map(|(a, _)| *a).collect();
                assert_eq!(tried, b);
            }
            other => panic!("{other:?}"),
        }
        // A good address after bad ones is reached.
        let mut list = b.clone();
        list.push(good);
        let (t, p) = connect(&h2, list, Rec::new().0).await;
        assert_eq!(t.peer_addr().unwrap().as_inet(), Some(good));
        t.write(b"x").unwrap();
        wait_until(&h2, "echo", || p.data_len() == 1).await;
        t.close();
    });
    drop(refusing);
}

#[test]
fn an_unresolvable_host_is_a_resolve_error() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let h2 = h.clone();
    let (a, b) = run(&lp, LIMIT, async move {
        let a = h2
            .create_connection(
                || Rec::new().0,
                ("no-such-host.invalid", 80),
                ConnectOptions::default(),
            )
            .await
            .map(|_| ());
        let b = h2
            .create_connection(
                || Rec::new().0,
                "no-such-host.invalid:80",
                ConnectOptions::default(),
            )
            .await
            .map(|_| ());
        (a, b)
    });
    for r in [a, b] {
        match r {
            Err(Error::Resolve { target, .. }) => assert!(target.contains("no-such-host.invalid")),
            other => panic!("expected Error::Resolve, got {other:?}"),
        }
    }
}

#[test]
fn localhost_resolves_and_connects() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr) = echo_server(&h);
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let (t1, p1) = connect(&h2, ("localhost", addr.port()), Rec::new().0).await;
        let (t2, p2) = connect(&h2, format!("localhost:{}", addr.port()), Rec::new().0).await;
        for (t, p) in [(&t1, &p1), (&t2, &p2)] {
            t.write(b"hi").unwrap();
            wait_until(&h2, "echo", || p.data_len() == 2).await;
            assert_eq!(t.peer_addr().unwrap().as_inet(), Some(addr));
            t.close();
        }
    });
}

#[test]
fn connect_timeout_gives_up_on_an_unanswered_connect() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (sock, addr) = never_accepting_listener();
    let h2 = h.clone();
    let opts = ConnectOptions::default().timeout(Duration::from_millis(300));
    let e = run(&lp, LIMIT, async move {
        let mut kept = Vec::new();
        for _ in 0..16 {
            match h2
                .create_connection(|| Rec::new().0, addr, opts.clone())
                .await
            {
                Ok(c) => kept.push(c), // still room in the queue
                Err(e) => return e,
            }
        }
        panic!("16 connects to a full backlog all succeeded");
    });
    assert_eq!(e.io_kind(), Some(ErrorKind::TimedOut), "{e}");
    assert!(matches!(e, Error::Connect { .. }));
    drop(sock);
}

#[test]
fn connect_with_a_local_address() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr) = echo_server(&h);
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let opts = ConnectOptions::default()
            .local_addr("127.0.0.1:0".parse().unwrap())
            .nodelay(false);
        let (t, _) = h2
            .create_connection(|| Rec::new().0, addr, opts)
            .await
            .unwrap();
        let local = t.local_addr().unwrap().as_inet().unwrap();
        assert!(local.ip().is_loopback() && local.port() != 0);
        t.close();
    });
}

#[test]
fn a_cancelled_connect_leaves_nothing_registered() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    // A full backlog: connects hang until cancelled.
    let (sock, addr) = never_accepting_listener();
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let mut kept = Vec::new();
        let mut cancelled = 0;
        for _ in 0..16 {
            let before = h2.stats().sources;
            let connect = h2.create_connection(|| Rec::new().0, addr, ConnectOptions::default());
            match h2.timeout(Duration::from_millis(200), connect).await {
                Ok(c) => kept.push(c.unwrap()),
                Err(_) => {
                    cancelled += 1;
                    assert_eq!(
                        h2.stats().sources,
                        before,
                        "cancelled connect left its source"
                    );
                    if cancelled == 2 {
                        return;
                    }
                }
            }
        }
        panic!("no connect hung on a full backlog");
    });
    drop(sock);
}

#[test]
fn ipv6_loopback() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let server = match h.create_server(Echo::default, "[::1]:0", ServerOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping ipv6_loopback: cannot listen on [::1]: {e}");
            return;
        }
    };
    let addr = server.local_addrs()[0];
    assert!(addr.is_ipv6());
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0).await;
        t.write(b"over v6").unwrap();
        wait_until(&h2, "echo", || p.data_len() == 7).await;
        assert!(t.local_addr().unwrap().as_inet().unwrap().is_ipv6());
        t.close();
        server.close();
    });
}

/// `TCP_NODELAY` of a transport's socket, read through `extra("fd")`.
fn nodelay_of(t: &protoloop::Transport) -> bool {
    let fd = *t
        .extra("fd")
        .expect("a stream transport has an fd")
        .downcast::<std::os::fd::RawFd>()
        .unwrap();
    // SAFETY: the transport is open, so the descriptor is live for the
    // duration of this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&fd).tcp_nodelay().unwrap()
}

/// Records the accepted side's `TCP_NODELAY` in `connection_made`.
struct NoDelaySeen(std::rc::Rc<std::cell::RefCell<Vec<bool>>>);

impl protoloop::Protocol for NoDelaySeen {
    fn connection_made(&mut self, t: protoloop::Transport) {
        self.0.borrow_mut().push(nodelay_of(&t));
    }
    fn data_received(&mut self, _: &[u8]) {}
}

#[test]
fn tcp_nodelay_is_on_by_default_on_both_ends_and_can_be_turned_off() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for opts in [
        ServerOptions::default(),
        ServerOptions::default().nodelay(false),
    ] {
        let s2 = seen.clone();
        let server = h
            .create_server(move || NoDelaySeen(s2.clone()), "127.0.0.1:0", opts)
            .unwrap();
        addrs.push(server.local_addrs()[0]);
        servers.push(server);
    }
    let h2 = h.clone();
    let s3 = seen.clone();
    run(&lp, LIMIT, async move {
        let mut client_side = Vec::new();
        for (addr, opts) in [
            (addrs[0], ConnectOptions::default()),
            (addrs[1], ConnectOptions::default().nodelay(false)),
        ] {
            let (t, _) = h2
                .create_connection(|| Rec::new().0, addr, opts)
                .await
                .unwrap();
            client_side.push(nodelay_of(&t));
            wait_until(&h2, "accepted", || s3.borrow().len() == client_side.len()).await;
            t.close();
        }
        assert_eq!(client_side, [true, false], "clients: default on, then off");
        assert_eq!(*s3.borrow(), [true, false], "servers: default on, then off");
    });
    for s in servers {
        s.close();
    }
}
