//! A server that runs out of file descriptors: `accept` fails with
//! `EMFILE`, the error goes to the exception handler, and accepting
//! resumes on its own once descriptors are free again, with no connection
//! lost (they wait in the listen backlog meanwhile).
//!
//! This file holds a single test because it lowers the process's
//! `RLIMIT_NOFILE`, which would starve tests running beside it; each test
//! file is a process of its own.

use std::cell::RefCell;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use protoloop::{EventLoop, ExceptionKind, Protocol, ServerOptions, Transport};

struct Echo(Option<Transport>);

impl Protocol for Echo {
    fn connection_made(&mut self, t: Transport) {
        self.0 = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0.as_ref().unwrap().write(data).unwrap();
    }
}

fn nofile() -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim
}

fn set_nofile(lim: &libc::rlimit) {
    // SAFETY: setrlimit only reads the struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, lim) }, 0);
}

/// Open `/dev/null` until the process has no descriptor left (bounded by
/// the lowered limit).
fn exhaust_descriptors() -> Vec<File> {
    let mut held = Vec::new();
    for _ in 0..4096 {
        match File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return held,
            Err(e) => panic!("opening /dev/null: {e}"),
        }
    }
    panic!("no EMFILE after 4096 descriptors: the limit did not apply");
}

/// Run the loop for `d` of real time.
fn spin(lp: &EventLoop, d: Duration) {
    match lp.run_until(d, || false) {
        Ok(()) | Err(protoloop::Error::Timeout) => {}
        Err(e) => panic!("running the loop: {e}"),
    }
}

#[test]
fn accept_out_of_descriptors_reports_and_resumes_when_they_are_free() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let reports = Rc::new(RefCell::new(Vec::<(ExceptionKind, String)>::new()));
    let r = reports.clone();
    h.set_exception_handler(move |ctx| r.borrow_mut().push((ctx.kind, ctx.message.clone())));
    let server = h
        .create_server(
            || Echo(None),
            "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(),
            ServerOptions::default(),
        )
        .unwrap();
    let addr = server.local_addrs()[0];

    // The clients connect now: the kernel finishes their handshakes into
    // the listen backlog while the server cannot accept.
    let mut clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for c in &clients {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }

    let saved = nofile();
    let low = libc::rlimit {
        rlim_cur: 256.min(saved.rlim_cur),
        rlim_max: saved.rlim_max,
    };
    set_nofile(&low);
    let held = Rc::new(RefCell::new(exhaust_descriptors()));

    // Run until the failure is reported, then free the descriptors.
    let deadline = Instant::now() + Duration::from_secs(10);
    while reports.borrow().is_empty() {
        assert!(Instant::now() < deadline, "no accept failure reported");
        spin(&lp, Duration::from_millis(50));
    }
    {
        let got = reports.borrow();
        assert_eq!(got[0].0, ExceptionKind::Error, "{got:?}");
        assert!(
            got[0].1.contains("accept") && got[0].1.contains("retrying"),
            "{got:?}"
        );
    }
    held.borrow_mut().clear();
    set_nofile(&saved);

    // Every client is served once accepting resumes.
    for (i, c) in clients.iter_mut().enumerate() {
        let msg = format!("client {i}");
        c.write_all(msg.as_bytes()).unwrap();
        let mut got = vec![0u8; msg.len()];
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while n < got.len() {
            assert!(Instant::now() < deadline, "client {i} never echoed");
            spin(&lp, Duration::from_millis(20));
            c.set_nonblocking(true).unwrap();
            match c.read(&mut got[n..]) {
                Ok(0) => panic!("client {i} closed"),
                Ok(k) => n += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("client {i}: {e}"),
            }
        }
        assert_eq!(got, msg.as_bytes());
    }
    assert_eq!(server.connection_count(), 3);
    server.close();
}
