//! Read and write pipe transports over OS pipes, child pipes and this
//! process's own stdin/stdout (in a child run of this binary); every
//! wait bounded by a deadline, every protocol under the lifecycle checker.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use protoloop::testing::Checked;
use protoloop::{CloseReason, Error, EventLoop, Handle, Protocol, SettableFuture, Transport};

mod common;

use common::lifecycle::{checked, run};

/// The bound on each test body.
const DEADLINE: Duration = Duration::from_secs(30);

fn os_pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap()
}

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Made,
    Data(Vec<u8>),
    Eof,
    Pause,
    Resume,
    Lost(String),
}

struct Rec {
    log: Rc<RefCell<Vec<Ev>>>,
    lost: SettableFuture<CloseReason>,
    transport: Option<Transport>,
    pause_in_made: bool,
}

impl Rec {
    /// A recorder under this test's lifecycle checker.
    fn new(
        h: &Handle,
    ) -> (
        Checked<Rec>,
        Rc<RefCell<Vec<Ev>>>,
        SettableFuture<CloseReason>,
    ) {
        let log = Rc::new(RefCell::new(Vec::new()));
        let lost = h.create_future();
        let rec = Rec {
            log: log.clone(),
            lost: lost.clone(),
            transport: None,
            pause_in_made: false,
        };
        (checked(rec), log, lost)
    }
}

/// The callbacks a [`Rec`] saw, in order.
type Log = Rc<RefCell<Vec<Ev>>>;

/// A pipe end connected through the loop under a fresh recorder: its
/// transport, the recorder's log, and the future `connection_lost`
/// resolves. (The protocol handle is dropped at once: the transport keeps
/// the protocol until `connection_lost`.)
type Recorded = (Transport, Log, SettableFuture<CloseReason>);

/// Connect `fd`, a pipe's read end, under a fresh recorder.
fn connect_read(h: &Handle, fd: impl Into<OwnedFd>) -> Recorded {
    let (rec, log, lost) = Rec::new(h);
    let (t, _) = h.connect_read_pipe(move || rec, fd).unwrap();
    (t, log, lost)
}

/// Connect `fd`, a pipe's write end, under a fresh recorder.
fn connect_write(h: &Handle, fd: impl Into<OwnedFd>) -> Recorded {
    let (rec, log, lost) = Rec::new(h);
    let (t, _) = h.connect_write_pipe(move || rec, fd).unwrap();
    (t, log, lost)
}

/// A fresh pipe whose read end is connected under a recorder; its write
/// end, last, is the test's.
fn read_pipe(h: &Handle) -> (Transport, Log, SettableFuture<CloseReason>, OwnedFd) {
    let (r, w) = os_pipe();
    let (t, log, lost) = connect_read(h, r);
    (t, log, lost, w)
}

/// A fresh pipe whose write end is connected under a recorder; its read
/// end, last, is the test's.
fn write_pipe(h: &Handle) -> (Transport, Log, SettableFuture<CloseReason>, OwnedFd) {
    let (r, w) = os_pipe();
    let (t, log, lost) = connect_write(h, w);
    (t, log, lost, r)
}

impl Protocol for Rec {
    fn connection_made(&mut self, t: Transport) {
        self.log.borrow_mut().push(Ev::Made);
        if self.pause_in_made {
            t.pause_reading();
        }
        self.transport = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        let mut log = self.log.borrow_mut();
        if let Some(Ev::Data(d)) = log.last_mut() {
            d.extend_from_slice(data);
        } else {
            log.push(Ev::Data(data.to_vec()));
        }
    }
    fn eof_received(&mut self) -> bool {
        self.log.borrow_mut().push(Ev::Eof);
        true // a read pipe closes anyway
    }
    fn pause_writing(&mut self) {
        self.log.borrow_mut().push(Ev::Pause);
    }
    fn resume_writing(&mut self) {
        self.log.borrow_mut().push(Ev::Resume);
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.log.borrow_mut().push(Ev::Lost(format!("{reason:?}")));
        self.lost.set_result(reason).unwrap();
    }
}

fn data(log: &[Ev]) -> Vec<u8> {
    log.iter()
        .filter_map(|e| match e {
            Ev::Data(d) => Some(d.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn read_pipe_delivers_data_then_eof() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (t, log, lost, w) = read_pipe(&h);
    assert!(!t.can_write_eof());
    assert!(t.is_reading());
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    let p2 = payload.clone();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::File::from(w);
        for chunk in p2.chunks(7919) {
            f.write_all(chunk).unwrap();
        }
    });
    let reason = run(&lp, DEADLINE, lost).unwrap();
    writer.join().unwrap();
    assert!(matches!(reason, CloseReason::PeerEof));
    let log = log.borrow();
    assert_eq!(log.first(), Some(&Ev::Made));
    assert_eq!(&log[log.len() - 2..], [Ev::Eof, Ev::Lost("PeerEof".into())]);
    assert!(data(&log) == payload);
    assert_eq!(t.stats().bytes_received, payload.len() as u64);
    assert!(t.is_closing());
    assert_eq!(h.stats().sources, 0);
}

#[test]
fn read_pipe_on_a_child_stdout() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let mut child = std::process::Command::new("sh")
        .args(["-c", "echo one; echo two"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (_, log, lost) = connect_read(&h, child.stdout.take().unwrap());
    run(&lp, DEADLINE, lost).unwrap();
    assert_eq!(data(&log.borrow()), b"one\ntwo\n");
    assert!(child.wait().unwrap().success());
}

#[test]
fn read_pipe_pause_in_connection_made_then_resume() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (r, w) = os_pipe();
    let (mut rec, log, lost) = Rec::new(&h);
    rec.pause_in_made = true;
    let (t, _p) = h.connect_read_pipe(move || rec, r).unwrap();
    assert!(!t.is_reading());
    let mut f = std::fs::File::from(w);
    f.write_all(b"held back").unwrap();
    drop(f); // data and EOF both wait while paused
    let h2 = h.clone();
    run(&lp, DEADLINE, async move {
        h2.sleep(Duration::from_millis(50)).await
    });
    assert_eq!(*log.borrow(), [Ev::Made], "nothing delivered while paused");
    t.resume_reading();
    t.resume_reading(); // idempotent
    run(&lp, DEADLINE, lost).unwrap();
    assert_eq!(
        *log.borrow(),
        [
            Ev::Made,
            Ev::Data(b"held back".to_vec()),
            Ev::Eof,
            Ev::Lost("PeerEof".into())
        ]
    );
}

#[test]
fn read_pipe_refuses_writes_and_closes_locally() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (t, log, lost, w) = read_pipe(&h);
    assert!(matches!(t.write(b"x"), Err(Error::Unsupported(_))));
    assert!(matches!(t.write_eof(), Err(Error::EofNotSupported)));
    t.close();
    t.close(); // idempotent
    assert!(t.is_closing());
    assert!(matches!(
        run(&lp, DEADLINE, lost).unwrap(),
        CloseReason::LocalClose
    ));
    assert_eq!(*log.borrow(), [Ev::Made, Ev::Lost("LocalClose".into())]);
    // Our end is closed: the writer sees a broken pipe.
    let e = std::fs::File::from(w).write_all(b"x").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
}

#[test]
fn a_regular_file_is_a_clear_error() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let f = std::fs::File::open("/etc/passwd").unwrap();
    let (rec, log, _lost) = Rec::new(&h);
    let e = h
        .connect_read_pipe(move || rec, f)
        .err()
        .unwrap_or_else(|| panic!("a regular file was accepted"));
    assert!(e.to_string().contains("cannot be polled"), "{e}");
    assert_eq!(h.stats().sources, 0);
    assert!(log.borrow().is_empty(), "connection_made is not called");
}

#[test]
fn write_pipe_flow_control_against_a_stalled_reader() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (t, log, lost, r) = write_pipe(&h);
    assert!(!t.is_reading());
    let payload: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    t.write(&payload).unwrap();
    // The kernel took at most a pipe's worth; the rest is buffered.
    assert!(t.get_write_buffer_size() > 64 * 1024);
    let h2 = h.clone();
    run(&lp, DEADLINE, async move {
        h2.sleep(Duration::from_millis(20)).await
    });
    assert_eq!(*log.borrow(), [Ev::Made, Ev::Pause], "paused, not resumed");

    // Now the reader starts reading: the buffer drains and writing resumes.
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        std::fs::File::from(r).read_to_end(&mut got).unwrap();
        got
    });
    let (h2, l2) = (h.clone(), log.clone());
    run(&lp, DEADLINE, async move {
        while !l2.borrow().contains(&Ev::Resume) {
            h2.sleep(Duration::from_millis(1)).await;
        }
    });
    t.write(&payload).unwrap();
    t.close(); // flush, then EOF
    assert!(matches!(t.write(b"late"), Err(Error::Closed)));
    assert!(matches!(t.write_eof(), Err(Error::Closed)));
    let reason = run(&lp, DEADLINE, lost).unwrap();
    assert!(matches!(reason, CloseReason::LocalClose), "{reason:?}");
    let got = reader.join().unwrap();
    assert_eq!(got.len(), 2 * payload.len());
    assert!(got[..payload.len()] == payload[..] && got[payload.len()..] == payload[..]);
    // Pause and resume alternate, starting with a pause; the second burst
    // paused again, and whether its resume comes before the transport is
    // finished depends on how the last flushes fall (as on TCP, none is
    // delivered after the end).
    let log = log.borrow();
    assert_eq!(log.first(), Some(&Ev::Made));
    assert_eq!(log.last(), Some(&Ev::Lost("LocalClose".into())));
    let flow: Vec<&Ev> = log[1..log.len() - 1].iter().collect();
    assert!(flow.len() >= 3, "{log:?}");
    for (i, e) in flow.iter().enumerate() {
        let want = if i % 2 == 0 { Ev::Pause } else { Ev::Resume };
        assert_eq!(**e, want, "{log:?}");
    }
    assert_eq!(t.stats().bytes_sent, 2 * payload.len() as u64);
    assert_eq!(h.stats().sources, 0);
}

#[test]
fn write_pipe_write_eof_is_close_after_flush() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (t, _log, lost, r) = write_pipe(&h);
    assert!(t.can_write_eof());
    t.writelines(&[b"a", b"bc", b""]).unwrap();
    t.write_bytes(bytes::Bytes::from_static(b"d")).unwrap();
    t.write_eof().unwrap();
    assert!(matches!(
        run(&lp, DEADLINE, lost).unwrap(),
        CloseReason::LocalClose
    ));
    let mut got = Vec::new();
    std::fs::File::from(r).read_to_end(&mut got).unwrap();
    assert_eq!(got, b"abcd");
}

#[test]
fn write_pipe_reader_gone() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    // Idle: nothing lost, an orderly end.
    let (t, _log, lost, r) = write_pipe(&h);
    drop(r);
    assert!(matches!(
        run(&lp, DEADLINE, lost).unwrap(),
        CloseReason::PeerEof
    ));
    assert!(matches!(t.write(b"x"), Err(Error::Closed)));

    // Data pending: a broken pipe.
    let (t, _log, lost, r) = write_pipe(&h);
    t.write(&vec![0u8; 1_000_000]).unwrap();
    assert!(t.get_write_buffer_size() > 0);
    drop(r);
    let reason = run(&lp, DEADLINE, lost).unwrap();
    assert!(matches!(reason, CloseReason::PeerReset(_)), "{reason:?}");
    assert_eq!(t.get_write_buffer_size(), 0);
}

#[test]
fn write_pipe_abort_and_close_deadline() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (t, _log, lost, r) = write_pipe(&h);
    t.write(&vec![1u8; 500_000]).unwrap();
    t.abort();
    assert!(matches!(t.write(b"x"), Err(Error::Closed)));
    assert!(matches!(
        run(&lp, DEADLINE, lost).unwrap(),
        CloseReason::LocalAbort
    ));
    assert_eq!(t.get_write_buffer_size(), 0, "the buffer was dropped");
    drop(r);

    // A reader that never reads: close_with_deadline gives up.
    let (t, _log, lost, r) = write_pipe(&h);
    t.write(&vec![1u8; 500_000]).unwrap();
    t.close_with_deadline(Duration::from_millis(50));
    let reason = run(&lp, DEADLINE, lost).unwrap();
    assert!(
        matches!(reason, CloseReason::Timeout(protoloop::TimeoutKind::Close)),
        "{reason:?}"
    );
    drop(r);
}

#[test]
fn write_pipe_to_a_child_stdin() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let mut child = std::process::Command::new("wc")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (t, _log, lost) = connect_write(&h, child.stdin.take().unwrap());
    t.write(&vec![b'x'; 300_000]).unwrap();
    t.close();
    run(&lp, DEADLINE, lost).unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out.trim(), "300000");
    assert!(child.wait().unwrap().success());
}

/// Panics in data_received.
struct Bomb(Checked<Rec>);
impl Protocol for Bomb {
    fn connection_made(&mut self, t: Transport) {
        self.0.connection_made(t);
    }
    fn data_received(&mut self, _: &[u8]) {
        panic!("bomb");
    }
    fn connection_lost(&mut self, r: CloseReason) {
        self.0.connection_lost(r);
    }
}

#[test]
fn a_panic_in_a_read_pipe_protocol_ends_that_pipe() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let seen = Rc::new(RefCell::new(0));
    let s = seen.clone();
    h.set_exception_handler(move |_| *s.borrow_mut() += 1);
    let (r, w) = os_pipe();
    let (rec, _log, lost) = Rec::new(&h);
    h.connect_read_pipe(move || Bomb(rec), r).unwrap();
    std::fs::File::from(w).write_all(b"x").unwrap();
    let reason = run(&lp, DEADLINE, lost).unwrap();
    assert!(
        matches!(reason, CloseReason::Panic(ref m) if m.contains("bomb")),
        "{reason:?}"
    );
    assert_eq!(*seen.borrow(), 1);
}

#[test]
fn connecting_on_a_closed_loop_is_an_error() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    lp.close().unwrap();
    let (r, w) = os_pipe();
    let e = h.connect_read_pipe(|| Rec::new(&h).0, r).err().unwrap();
    assert!(matches!(e, Error::LoopClosed), "{e}");
    let e = h.connect_write_pipe(|| Rec::new(&h).0, w).err().unwrap();
    assert!(matches!(e, Error::LoopClosed), "{e}");
}

/// What `r` gives without blocking: the byte count, and whether it ended
/// in EOF (every writer gone) rather than "would block".
fn drain_without_blocking(r: OwnedFd) -> (usize, bool) {
    rustix::fs::fcntl_setfl(&r, rustix::fs::OFlags::NONBLOCK).unwrap();
    let mut f = std::fs::File::from(r);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match f.read(&mut buf) {
            Ok(0) => return (total, true),
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return (total, false),
            Err(e) => panic!("reading the pipe: {e}"),
        }
    }
}

/// A write pipe open when its loop is closed: the protocol keeps its
/// transport and a close deadline is armed (its timer holds the
/// transport), two cycles only the loop can break. Closing the loop
/// closes the descriptor, so the reader gets EOF rather than "would
/// block", and drops the protocol and the transport, without
/// `connection_lost` (no callback runs on a closed loop).
#[test]
fn closing_the_loop_closes_a_write_pipe_and_drops_its_protocol() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (r, w) = os_pipe();
    let (rec, log, _lost) = Rec::new(&h);
    let (t, p) = h.connect_write_pipe(move || rec, w).unwrap();
    let protocol = Rc::downgrade(p.rc());
    let transport = Rc::downgrade(t.inner());
    drop(p);
    // More than the pipe holds: the rest waits in the buffer, so the
    // close waits too, under its deadline.
    t.write(&vec![7u8; 1 << 20]).unwrap();
    assert!(t.get_write_buffer_size() > 0);
    t.close_with_deadline(Duration::from_secs(3600));
    lp.close().unwrap();
    drop(t);
    drop(h);
    drop(lp);
    let (read, eof) = drain_without_blocking(r);
    assert!(
        read > 0,
        "what the pipe took before the close is still there"
    );
    assert!(eof, "the write end is still open after its loop was closed");
    assert!(
        protocol.upgrade().is_none(),
        "the protocol outlived its loop"
    );
    assert!(
        transport.upgrade().is_none(),
        "the transport outlived its loop"
    );
    assert!(
        !log.borrow().iter().any(|e| matches!(e, Ev::Lost(_))),
        "connection_lost on a closed loop: {:?}",
        log.borrow()
    );
}

/// The read end: dropping the loop closes the descriptor (the writer gets
/// a broken pipe rather than a reader that never reads) and drops the
/// protocol that kept its transport.
#[test]
fn dropping_the_loop_closes_a_read_pipe_and_drops_its_protocol() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (r, w) = os_pipe();
    let (rec, _log, _lost) = Rec::new(&h);
    let (t, p) = h.connect_read_pipe(move || rec, r).unwrap();
    let protocol = Rc::downgrade(p.rc());
    let transport = Rc::downgrade(t.inner());
    drop((t, p, h));
    drop(lp);
    match std::fs::File::from(w).write(b"x") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => panic!("the read end is still open after its loop was dropped: {other:?}"),
    }
    assert!(
        protocol.upgrade().is_none(),
        "the protocol outlived its loop"
    );
    assert!(
        transport.upgrade().is_none(),
        "the transport outlived its loop"
    );
}

/// The child side of the next test: stdin through a read pipe transport,
/// upper-cased, out through a write pipe transport on stdout, framed by
/// `<<` `>>` so the parent can find it among the test harness's lines.
fn stdio_child() {
    use std::os::fd::AsFd;
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let stdin = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
    let stdout = std::io::stdout().as_fd().try_clone_to_owned().unwrap();
    let (out, _, _) = connect_write(&h, stdout);
    out.write(b"<<").unwrap();
    let (_inp, log, lost) = connect_read(&h, stdin);
    run(&lp, DEADLINE, async move {
        let reason = lost.await;
        assert!(matches!(reason, Ok(CloseReason::PeerEof)), "{reason:?}");
        let upper = data(&log.borrow()).to_ascii_uppercase();
        out.write(&upper).unwrap();
        out.write(b">>").unwrap();
        out.close();
        while !out.is_closing() || out.get_write_buffer_size() > 0 {
            Handle::current().sleep(Duration::from_millis(1)).await;
        }
    });
}

#[test]
fn stdin_and_stdout_as_pipe_transports() {
    if std::env::var_os("PROTOLOOP_STDIO_CHILD").is_some() {
        stdio_child();
        return;
    }
    // This test binary again, as a filter: what goes to its stdin comes
    // back upper-cased on its stdout.
    let mut child = common::this_test_in_a_child(
        "stdin_and_stdout_as_pipe_transports",
        "PROTOLOOP_STDIO_CHILD",
        "1",
    )
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&big).unwrap();
        big
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let big = writer.join().unwrap();
    assert!(child.wait().unwrap().success());
    let start = out
        .windows(2)
        .position(|w| w == b"<<")
        .expect("the child's output")
        + 2;
    let end = start + big.len();
    assert_eq!(&out[start..end], big.to_ascii_uppercase().as_slice());
    assert_eq!(&out[end..end + 2], b">>");
}

/// Pipes closed just before their loop: `connection_lost` was scheduled,
/// then dropped unrun with the loop. The protocols, which keep their
/// transports, are dropped all the same.
#[test]
fn pipes_closed_just_before_their_loop_still_drop_their_protocols() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_r, w) = os_pipe();
    let (wt, wlog, _) = connect_write(&h, w);
    let (r, _w) = os_pipe();
    let (rt, rlog, _) = connect_read(&h, r);
    let protocols = [&wt, &rt].map(|t| Rc::downgrade(&t.get_protocol().unwrap()));
    wt.close();
    rt.abort();
    drop((wt, rt, h));
    drop(lp);
    assert!(
        protocols.iter().all(|p| p.upgrade().is_none()),
        "a protocol outlived its loop"
    );
    for log in [wlog, rlog] {
        assert_eq!(*log.borrow(), [Ev::Made], "a callback on a closed loop");
    }
}
