//! Helpers shared by the integration tests: a recording protocol, an echo
//! protocol with flow control, bounded waits, a raw socket pair, and a
//! small deterministic PRNG; in submodules, TCP servers (`net`), the
//! per-thread lifecycle checker and its `run` (`lifecycle`), and unique
//! Unix socket names (`unix`).
//!
//! Every wait here has a deadline, so a broken transport fails a test
//! instead of hanging it.

#![allow(dead_code)] // each test binary uses a different subset

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{ErrorKind, Read};
use std::net::{TcpListener, TcpStream};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub mod lifecycle;
pub mod net;
pub mod unix;

use protoloop::{
    CloseReason, EventLoop, ExceptionContext, ExceptionKind, Handle, Protocol, Transport,
};

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Run `fut` on `lp`, failing the test if it takes longer than `limit`.
pub fn run<F>(lp: &EventLoop, limit: Duration, fut: F) -> F::Output
where
    F: Future + 'static,
    F::Output: 'static,
{
    let h = lp.handle();
    lp.run_until_complete(async move { h.timeout(limit, fut).await })
        .expect("loop stopped before the test finished")
        .unwrap_or_else(|_| panic!("test body did not finish within {limit:?}"))
}

/// Poll `cond` every millisecond until it holds; panic after [`WAIT`].
pub async fn wait_until(h: &Handle, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        h.sleep(Duration::from_millis(1)).await;
    }
}

/// Let the loop run `n` more iterations.
pub async fn turns(n: usize) {
    for _ in 0..n {
        yield_now().await;
    }
}

/// Give way to the loop once.
pub fn yield_now() -> impl Future<Output = ()> {
    struct Yield(bool);
    impl Future for Yield {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                Poll::Ready(())
            } else {
                self.0 = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
    Yield(false)
}

/// Collect what the exception handler is told.
pub fn capture_exceptions(h: &Handle) -> Rc<RefCell<Vec<ExceptionContext>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    h.set_exception_handler(move |ctx| s.borrow_mut().push(ctx.clone()));
    seen
}

/// `true` if the handler was told about a problem of `kind`.
pub fn reported(seen: &Rc<RefCell<Vec<ExceptionContext>>>, kind: ExceptionKind) -> bool {
    seen.borrow().iter().any(|c| c.kind == kind)
}

/// A connected pair of blocking std sockets on loopback.
pub fn socket_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

/// Read what a non-blocking std socket has now; `Ok(true)` at EOF.
pub fn read_available(s: &mut TcpStream, out: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Read a non-blocking std socket from inside the loop until EOF.
pub async fn read_to_eof(h: &Handle, s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    s.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    loop {
        if read_available(s, &mut out)? {
            return Ok(out);
        }
        assert!(
            Instant::now() < deadline,
            "peer never saw EOF ({} bytes read)",
            out.len()
        );
        h.sleep(Duration::from_millis(1)).await;
    }
}

/// xorshift64*: deterministic test data and chunk sizes without a crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// In `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// One protocol callback, as recorded by [`Rec`].
#[derive(Debug, Clone)]
pub enum Ev {
    Made,
    Data(usize),
    Eof,
    Lost(CloseReason),
    PauseWriting(usize),
    ResumeWriting(usize),
    Drain,
    /// A marker a test pushes from inside a callback.
    Mark(&'static str),
}

pub type Log = Rc<RefCell<Vec<Ev>>>;

type MadeHook = Box<dyn FnMut(&Transport)>;
type DataHook = Box<dyn FnMut(&Transport, &[u8], &Log)>;
type AskHook = Box<dyn FnMut(&Transport) -> bool>;

/// A protocol that records every callback, with optional behaviour.
pub struct Rec {
    pub log: Log,
    pub data: Rc<RefCell<Vec<u8>>>,
    pub transport: Rc<RefCell<Option<Transport>>>,
    /// Set while one of this protocol's callbacks runs, to catch re-entry.
    busy: Rc<Cell<bool>>,
    on_made: Option<MadeHook>,
    on_data: Option<DataHook>,
    on_eof: Option<AskHook>,
    on_drain: Option<AskHook>,
}

struct Busy(Rc<Cell<bool>>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// What a test keeps to look at a [`Rec`] from outside.
#[derive(Clone)]
pub struct Probe {
    pub log: Log,
    pub data: Rc<RefCell<Vec<u8>>>,
    pub transport: Rc<RefCell<Option<Transport>>>,
}

impl Probe {
    pub fn lost(&self) -> Option<CloseReason> {
        self.log.borrow().iter().find_map(|e| match e {
            Ev::Lost(r) => Some(r.clone()),
            _ => None,
        })
    }
    pub fn is_lost(&self) -> bool {
        self.lost().is_some()
    }
    pub fn got_eof(&self) -> bool {
        self.log.borrow().iter().any(|e| matches!(e, Ev::Eof))
    }
    pub fn count(&self, f: impl Fn(&Ev) -> bool) -> usize {
        self.log.borrow().iter().filter(|e| f(e)).count()
    }
    pub fn transport(&self) -> Transport {
        self.transport
            .borrow()
            .clone()
            .expect("connection_made was called")
    }
    pub fn data_len(&self) -> usize {
        self.data.borrow().len()
    }
    /// Assert the callback contract on the log: made first and once, data
    /// only before EOF, EOF at most once, lost once and last (when the
    /// connection is over), pause/resume alternating starting with pause.
    pub fn check_contract(&self) {
        let log = self.log.borrow();
        assert!(
            matches!(log.first(), Some(Ev::Made)),
            "first callback not connection_made: {log:?}"
        );
        assert_eq!(
            log.iter().filter(|e| matches!(e, Ev::Made)).count(),
            1,
            "{log:?}"
        );
        let lost: Vec<usize> = log
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, Ev::Lost(_)))
            .map(|(i, _)| i)
            .collect();
        assert!(
            lost.len() <= 1,
            "connection_lost called {} times: {log:?}",
            lost.len()
        );
        if let Some(&i) = lost.first() {
            let after: Vec<&Ev> = log[i + 1..]
                .iter()
                .filter(|e| !matches!(e, Ev::Mark(_)))
                .collect();
            assert!(
                after.is_empty(),
                "callbacks after connection_lost: {after:?}"
            );
        }
        let eofs: Vec<usize> = log
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, Ev::Eof))
            .map(|(i, _)| i)
            .collect();
        assert!(eofs.len() <= 1, "eof_received called {} times", eofs.len());
        if let Some(&i) = eofs.first() {
            assert!(
                !log[i..].iter().any(|e| matches!(e, Ev::Data(_))),
                "data after eof: {log:?}"
            );
        }
        let mut paused = false;
        for e in log.iter() {
            match e {
                Ev::PauseWriting(_) => {
                    assert!(!paused, "pause_writing twice without resume: {log:?}");
                    paused = true;
                }
                Ev::ResumeWriting(_) => {
                    assert!(paused, "resume_writing without pause_writing: {log:?}");
                    paused = false;
                }
                _ => {}
            }
        }
    }
}

impl Rec {
    pub fn new() -> (Rec, Probe) {
        let r = Rec {
            log: Rc::default(),
            data: Rc::default(),
            transport: Rc::default(),
            busy: Rc::default(),
            on_made: None,
            on_data: None,
            on_eof: None,
            on_drain: None,
        };
        let p = r.probe();
        (r, p)
    }

    pub fn probe(&self) -> Probe {
        Probe {
            log: self.log.clone(),
            data: self.data.clone(),
            transport: self.transport.clone(),
        }
    }

    pub fn on_made(mut self, f: impl FnMut(&Transport) + 'static) -> Self {
        self.on_made = Some(Box::new(f));
        self
    }
    pub fn on_data(mut self, f: impl FnMut(&Transport, &[u8], &Log) + 'static) -> Self {
        self.on_data = Some(Box::new(f));
        self
    }
    pub fn on_eof(mut self, f: impl FnMut(&Transport) -> bool + 'static) -> Self {
        self.on_eof = Some(Box::new(f));
        self
    }
    pub fn on_drain(mut self, f: impl FnMut(&Transport) -> bool + 'static) -> Self {
        self.on_drain = Some(Box::new(f));
        self
    }

    /// Mark a callback as running until the guard drops (also when the
    /// callback panics on purpose).
    fn enter(&self) -> Busy {
        assert!(!self.busy.replace(true), "protocol callback re-entered");
        Busy(self.busy.clone())
    }
    fn t(&self) -> Transport {
        self.transport
            .borrow()
            .clone()
            .expect("callback before connection_made")
    }
}

impl Protocol for Rec {
    fn connection_made(&mut self, t: Transport) {
        let _busy = self.enter();
        self.log.borrow_mut().push(Ev::Made);
        *self.transport.borrow_mut() = Some(t.clone());
        if let Some(f) = &mut self.on_made {
            f(&t);
        }
    }
    fn data_received(&mut self, data: &[u8]) {
        let _busy = self.enter();
        assert!(!data.is_empty(), "data_received with no bytes");
        self.log.borrow_mut().push(Ev::Data(data.len()));
        self.data.borrow_mut().extend_from_slice(data);
        let t = self.t();
        if let Some(f) = &mut self.on_data {
            f(&t, data, &self.log);
        }
    }
    fn eof_received(&mut self) -> bool {
        let _busy = self.enter();
        self.log.borrow_mut().push(Ev::Eof);
        let t = self.t();
        self.on_eof.as_mut().is_some_and(|f| f(&t))
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        let _busy = self.enter();
        self.log.borrow_mut().push(Ev::Lost(reason));
    }
    fn pause_writing(&mut self) {
        let _busy = self.enter();
        let n = self.t().get_write_buffer_size();
        self.log.borrow_mut().push(Ev::PauseWriting(n));
    }
    fn resume_writing(&mut self) {
        let _busy = self.enter();
        let n = self.t().get_write_buffer_size();
        self.log.borrow_mut().push(Ev::ResumeWriting(n));
    }
    fn drain_requested(&mut self) -> bool {
        let _busy = self.enter();
        self.log.borrow_mut().push(Ev::Drain);
        let t = self.t();
        self.on_drain.as_mut().is_some_and(|f| f(&t))
    }
}

/// Writes back what it receives, pausing reading while its own writes
/// are paused so that a slow reader bounds the server's memory.
#[derive(Default)]
pub struct Echo {
    t: Option<Transport>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, t: Transport) {
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.t.as_ref().unwrap().write(data).unwrap();
    }
    fn pause_writing(&mut self) {
        self.t.as_ref().unwrap().pause_reading();
    }
    fn resume_writing(&mut self) {
        self.t.as_ref().unwrap().resume_reading();
    }
}

/// A protocol that keeps a shared flag of whether writing is paused.
pub fn is_paused(p: &Probe) -> bool {
    let log = p.log.borrow();
    let pauses = log
        .iter()
        .filter(|e| matches!(e, Ev::PauseWriting(_)))
        .count();
    let resumes = log
        .iter()
        .filter(|e| matches!(e, Ev::ResumeWriting(_)))
        .count();
    pauses > resumes
}

/// Panics the tests cause on purpose carry this in their message.
pub const EXPECTED: &str = "expected test panic";

/// Hide the default panic output for panics whose message contains
/// [`EXPECTED`], so the test output stays readable. Installed once per
/// process; other panics print as usual.
pub fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !msg.contains(EXPECTED) {
                prev(info);
            }
        }));
    });
}

/// This test binary again, running only `test` (quietly, on one thread,
/// its output not captured by the harness) with `key=value` in its
/// environment: for a test body that needs a process of its own, because
/// it may die of a signal or uses the process's own stdin and stdout. The
/// test checks `key` to know which side it is.
pub fn this_test_in_a_child(test: &str, key: &str, value: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1", "-q"])
        .env(key, value);
    cmd
}
