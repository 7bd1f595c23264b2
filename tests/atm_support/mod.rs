//! The ATM tests' fixture, as in the talk's conftest: a bank in the
//! test's own loop (port 0), the real `atm` binary started against it
//! with `protoloop::testing::Program`, and customers whose `send` returns
//! a future.
//!
//! - The ATM is ready once it prints `atm: listening on ADDR`, which it
//!   does after its listener is bound: from then on connections are
//!   accepted. Waiting for it has a deadline; a failure says what the
//!   ATM wrote.
//! - Every test body runs under a time limit.
//! - [`Rig::finish`] stops the ATM with `SIGTERM` and waits for it; if
//!   the test panics first, dropping the [`Rig`] stops the ATM the same
//!   way (the fixture's `Drop`) and prints what it wrote. No process is
//!   left behind.

// Each test uses its own subset.
#![allow(dead_code)]

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::{Duration, Instant};

use protoloop::demo::bank::{Bank, BankServer};
use protoloop::demo::child::atm;
use protoloop::demo::customer::Customer;
use protoloop::proto::bank::{GetBalance, Response};
use protoloop::rpc::Service;
use protoloop::testing::{ProgramError, RunningProgram, Stream, fake_client};
use protoloop::{
    CloseReason, EventLoop, Handle, Protocol, SettableFuture, Stdio, SubprocessOptions, Transport,
};

/// The `atm` binary cargo built for these tests.
pub const ATM: &str = env!("CARGO_BIN_EXE_atm");
/// The `bank` binary.
pub const BANK: &str = env!("CARGO_BIN_EXE_bank");
/// The `customer` binary.
pub const CUSTOMER: &str = env!("CARGO_BIN_EXE_customer");

/// How long the ATM may take to start, and any single wait.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a whole test body may take.
pub const LIMIT: Duration = Duration::from_secs(30);

/// A bank in this loop and an `atm` child process using it.
pub struct Rig {
    // Dropped first, while the loop is still open: stops the ATM.
    ctx: Ctx,
    lp: EventLoop,
}

/// What a test body gets: cheap to clone into tasks.
#[derive(Clone)]
pub struct Ctx {
    /// The test's loop.
    pub h: Handle,
    /// The bank's server (connections, abort_clients).
    pub bank: BankServer,
    /// Where the ATM listens.
    pub atm: SocketAddr,
    child: Rc<RunningProgram>,
}

impl Rig {
    /// The demo's bank and an ATM.
    pub fn start() -> Rig {
        Rig::with_bank(Bank::demo().service())
    }

    /// A bank answering with `service`, and an ATM.
    pub fn with_bank(service: Service<GetBalance, Response>) -> Rig {
        let lp = EventLoop::new().unwrap();
        let h = lp.handle();
        let bank = BankServer::start(&h, "127.0.0.1:0", service).unwrap();
        let args = [
            "--bank".to_string(),
            bank.local_addr().to_string(),
            "--listen".to_string(),
            "127.0.0.1:0".to_string(),
        ];
        let child = lp
            .run_until_complete(atm(ATM, args).ready_within(WAIT).start(&h))
            .unwrap()
            .unwrap_or_else(|e| panic!("the ATM did not start: {e}"));
        let ctx = Ctx {
            h,
            bank,
            atm: child.addr().expect("the ATM prints its address"),
            child: Rc::new(child),
        };
        Rig { ctx, lp }
    }

    /// Run a test body on the loop, failing (not hanging) after [`LIMIT`].
    pub fn run<F, Fut>(&self, body: F) -> Fut::Output
    where
        F: FnOnce(Ctx) -> Fut,
        Fut: Future + 'static,
        Fut::Output: 'static,
    {
        let h = self.ctx.h.clone();
        let fut = body(self.ctx.clone());
        self.lp
            .run_until_complete(async move { h.timeout(LIMIT, fut).await })
            .unwrap()
            .unwrap_or_else(|_| panic!("test body did not finish within {LIMIT:?}"))
    }

    /// `SIGTERM` the ATM and wait for it (killed after a grace period).
    pub fn finish(&self) -> ExitStatus {
        let stop = self.ctx.child.stop();
        self.run(|_| stop)
            .unwrap_or_else(|e| panic!("stopping the ATM: {e}"))
    }

    /// [`finish`](Self::finish), asserting the ATM exited 0.
    pub fn finish_ok(&self) {
        let status = self.finish();
        assert!(
            status.success(),
            "the ATM exited with {status} on SIGTERM; its stderr:\n{}",
            self.ctx.stderr()
        );
    }

    /// The test body's context, for use outside `run`.
    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }
}

/// What a raw connection got: every byte, and how it ended.
#[derive(Debug)]
pub struct Raw {
    pub bytes: Vec<u8>,
    pub reason: CloseReason,
}

struct Recorder {
    got: Rc<RefCell<Vec<u8>>>,
    lost: SettableFuture<CloseReason>,
}

impl Protocol for Recorder {
    fn data_received(&mut self, data: &[u8]) {
        self.got.borrow_mut().extend_from_slice(data);
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        let _ = self.lost.set_result(reason);
    }
}

impl Ctx {
    /// A customer of this ATM.
    pub fn customer(&self) -> Customer {
        Customer::new(&self.h, self.atm)
    }

    /// Open a connection to the ATM (a fake client: no Nagle, so small
    /// writes go out as they are made); returns the transport and the recording of what
    /// comes back.
    pub async fn connect_raw(
        &self,
    ) -> (Transport, Rc<RefCell<Vec<u8>>>, SettableFuture<CloseReason>) {
        let got = Rc::new(RefCell::new(Vec::new()));
        let lost = SettableFuture::new();
        let proto = Recorder {
            got: got.clone(),
            lost: lost.clone(),
        };
        let (t, _) = fake_client(&self.h, self.atm, move || proto, WAIT)
            .await
            .expect("connecting to the ATM");
        (t, got, lost)
    }

    /// Write each chunk, `gap` apart, then (if `eof`) half-close, and
    /// wait until the ATM closes the connection.
    pub async fn raw(&self, chunks: &[&[u8]], gap: Duration, eof: bool) -> Raw {
        let (t, got, lost) = self.connect_raw().await;
        for (i, chunk) in chunks.iter().enumerate() {
            if i > 0 {
                self.h.sleep(gap).await;
            }
            t.write(chunk).expect("the ATM closed early");
        }
        if eof {
            t.write_eof().unwrap();
        }
        let reason = self
            .h
            .timeout(WAIT, lost)
            .await
            .expect("the ATM did not close the connection")
            .unwrap();
        let bytes = got.borrow().clone();
        Raw { bytes, reason }
    }

    /// Everything the ATM wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.child.stderr()
    }

    /// Lines of the ATM's stderr containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.child.lines(Stream::Stderr, needle)
    }

    /// Wait until the ATM has logged `n` lines containing `needle`.
    pub async fn wait_for_log(&self, needle: &str, n: usize) -> Vec<String> {
        self.child
            .wait_for_lines(Stream::Stderr, needle, n, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Poll `cond` every 2 ms until it holds; panic (with the ATM's
    /// stderr) after [`WAIT`].
    pub async fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the ATM's stderr:\n{}",
                self.stderr()
            );
            self.h.sleep(Duration::from_millis(2)).await;
        }
    }

    /// The ATM child.
    pub fn child(&self) -> &RunningProgram {
        &self.child
    }
}

/// Run `program` with `args` to completion on a fresh loop (bounded);
/// returns its exit status, stdout and stderr.
pub fn run_program(program: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let opts = SubprocessOptions::default()
        .stdin(Stdio::Null)
        .kill_on_drop(true);
    let p = h.create_subprocess_exec(program, args, opts).unwrap();
    let out = lp
        .run_until_complete(async move { h.timeout(WAIT, p.communicate(None)).await })
        .unwrap()
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish within {WAIT:?}"))
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An ATM started against a bank that is not there: how it ended.
pub fn start_without_bank(bank_wait: &str) -> ProgramError {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let port = free_port();
    let bank = format!("127.0.0.1:{port}");
    let args = [
        "--bank",
        &bank,
        "--listen",
        "127.0.0.1:0",
        "--bank-wait",
        bank_wait,
    ];
    match lp
        .run_until_complete(atm(ATM, args).ready_within(WAIT).start(&h))
        .unwrap()
    {
        Ok(child) => panic!(
            "the ATM started without a bank, listening on {:?}",
            child.addr()
        ),
        Err(e) => e,
    }
}

/// A loopback port nobody listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The bytes as hex, for readable comparisons.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A status's signal, for messages.
pub fn signal(status: ExitStatus) -> Option<i32> {
    status.signal()
}
