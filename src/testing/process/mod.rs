//! Fixtures for tests that start real programs, the counterpart of a
//! pytest-asyncio `conftest.py`: [`Program`] starts a program under test
//! through the crate's own subprocess transport and waits until it is
//! [`Ready`]; the [`RunningProgram`] it gives keeps all the program wrote,
//! lets the test wait for log lines, and stops the program at the end.
//!
//! # Promises
//!
//! - **Readiness has a deadline.** The program is ready once it prints a
//!   line containing a given text ([`Ready::line`], for programs that say
//!   `listening on ADDR` once bound) or once a TCP connection to an
//!   address is accepted ([`Ready::connect`]). If it exits first, the
//!   error is [`ProgramError::Exited`] with its exit status; if the
//!   deadline passes, it is killed and reaped and the error is
//!   [`ProgramError::Timeout`]. Both carry everything it wrote.
//! - **Output is captured whole.** stdout is always piped, stderr unless
//!   [`Program::stderr`] says otherwise; nothing is dropped, so a test can
//!   look for a log line again and a failure shows all of it.
//! - **The program is always stopped and reaped.** [`RunningProgram::stop`]
//!   sends `SIGTERM`, then `SIGKILL` after the grace period
//!   ([`Program::stop_grace`]), and resolves once the child is reaped and
//!   its pipes are closed. If the test never gets there (it failed, or
//!   panicked), dropping the [`RunningProgram`] does the same without the
//!   loop: it signals, waits for the exit on the spot (blocking for at
//!   most the grace period plus the kill), and has the child reaped; when
//!   the thread is panicking it also prints what the program wrote, so
//!   the failure report has it.
//! - Pipes a grandchild keeps open do not make `stop` hang: they are
//!   closed a grace period after the child's exit.
//!
//! stdin is `/dev/null`: programs under test talk over sockets. For
//! pipes, use [`Handle::subprocess_exec`] directly.
//!
//! ```
//! use std::time::Duration;
//! use protoloop::EventLoop;
//! use protoloop::testing::{Program, Ready, Stream};
//!
//! let lp = EventLoop::new().unwrap();
//! let h = lp.handle();
//! let status = lp.run_until_complete(async move {
//!     let p = Program::new("sh")
//!         .args(["-c", "echo starting; echo 'ready on 127.0.0.1:4242'; exec sleep 30"])
//!         .ready(Ready::line(Stream::Stdout, "ready on"))
//!         .ready_within(Duration::from_secs(10))
//!         .start(&h)
//!         .await
//!         .unwrap();
//!     assert_eq!(p.ready_line(), Some("ready on 127.0.0.1:4242"));
//!     assert_eq!(p.addr().unwrap().port(), 4242);
//!     assert_eq!(p.stdout(), "starting\nready on 127.0.0.1:4242\n");
//!     p.stop().await.unwrap() // SIGTERM; `sleep` dies of it
//! }).unwrap();
//! use std::os::unix::process::ExitStatusExt;
//! assert_eq!(status.signal(), Some(15));
//! ```

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::event_loop::Handle;
use crate::protocol::Protocol;
use crate::transport::subprocess::{Stdio, SubprocessOptions, SubprocessTransport};
use crate::transport::tcp::ConnectOptions;

mod capture;
mod error;
#[cfg(test)]
mod tests;

pub use error::ProgramError;

use capture::{Capture, Captured, until};

/// How long [`Program::start`] waits for readiness by default.
pub const DEFAULT_READY_WITHIN: Duration = Duration::from_secs(10);
/// How long a program gets to exit after `SIGTERM` by default.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);
/// How often [`Ready::Connect`] tries to connect.
const CONNECT_EVERY: Duration = Duration::from_millis(10);

/// One of the program's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// fd 1.
    Stdout,
    /// fd 2.
    Stderr,
}

impl Stream {
    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        })
    }
}

/// When a started program counts as ready.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ready {
    /// As soon as it has been started.
    Started,
    /// Once a complete line (ended by `\n`) on `stream` contains `text`.
    /// The usual choice for servers that print where they listen once
    /// they are bound: the line is kept
    /// ([`RunningProgram::ready_line`]) and an address at its end is
    /// parsed ([`RunningProgram::addr`]), so the program can listen on
    /// port 0.
    Line {
        /// Where the line comes.
        stream: Stream,
        /// What it contains.
        text: String,
    },
    /// Once a TCP connection to `addr` is accepted, tried every 10 ms.
    /// The probe connection is closed at once, so the program sees a
    /// client come and go; the port must be one that only the program
    /// will listen on.
    Connect(SocketAddr),
}

impl Ready {
    /// [`Ready::Line`].
    pub fn line(stream: Stream, text: impl Into<String>) -> Ready {
        Ready::Line {
            stream,
            text: text.into(),
        }
    }

    /// [`Ready::Connect`].
    pub fn connect(addr: SocketAddr) -> Ready {
        Ready::Connect(addr)
    }

    fn describe(&self) -> String {
        match self {
            Ready::Started => "start".into(),
            Ready::Line { stream, text } => lines_wanted(*stream, text, 1),
            Ready::Connect(addr) => format!("accept a TCP connection on {addr}"),
        }
    }
}

fn lines_wanted(stream: Stream, text: &str, n: usize) -> String {
    match n {
        1 => format!("print a line containing `{text}` on {stream}"),
        n => format!("print {n} lines containing `{text}` on {stream}"),
    }
}

/// How to start a program under test; [`start`](Self::start) starts it.
/// See the [module docs](self) for what is promised.
#[derive(Debug, Clone)]
pub struct Program {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    stderr: Stdio,
    ready: Ready,
    within: Duration,
    grace: Duration,
}

impl Program {
    /// `program` (looked up in `PATH` if it has no `/`), with no
    /// arguments, ready once started; stderr piped and captured.
    pub fn new(program: impl AsRef<OsStr>) -> Program {
        Program {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stderr: Stdio::Pipe,
            ready: Ready::Started,
            within: DEFAULT_READY_WITHIN,
            grace: DEFAULT_STOP_GRACE,
        }
    }

    /// Add one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Program {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Add arguments.
    pub fn args<I, S>(mut self, args: I) -> Program
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Set an environment variable for the program.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Program {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Run the program in `dir`.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Program {
        self.cwd = Some(dir.into());
        self
    }

    /// Where stderr goes: [`Stdio::Pipe`] (the default: captured),
    /// [`Stdio::Inherit`] (the test's own stderr, as a demo wants),
    /// [`Stdio::Null`], or [`Stdio::Stdout`] (captured with stdout).
    pub fn stderr(mut self, stderr: Stdio) -> Program {
        self.stderr = stderr;
        self
    }

    /// When the program counts as started (default [`Ready::Started`]).
    pub fn ready(mut self, ready: Ready) -> Program {
        self.ready = ready;
        self
    }

    /// How long to wait for readiness (default 10 s).
    pub fn ready_within(mut self, within: Duration) -> Program {
        self.within = within;
        self
    }

    /// How long the program gets to exit after `SIGTERM` before it is
    /// killed, and how long pipes may stay open after its exit (default
    /// 5 s).
    pub fn stop_grace(mut self, grace: Duration) -> Program {
        self.grace = grace;
        self
    }

    /// Start the program and wait until it is ready. On failure nothing
    /// is left running: a program that did not get ready in time is
    /// killed and reaped before the error is returned.
    pub fn start(
        &self,
        handle: &Handle,
    ) -> impl Future<Output = Result<RunningProgram, ProgramError>> + 'static {
        let name = self.program.to_string_lossy().into_owned();
        let mut opts = SubprocessOptions::default()
            .stdin(Stdio::Null)
            .stdout(Stdio::Pipe)
            .stderr(self.stderr)
            .kill_on_drop(true)
            .close_pipes_after_exit(self.grace);
        for (k, v) in &self.env {
            opts = opts.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            opts = opts.current_dir(dir);
        }
        let state = Rc::new(RefCell::new(Captured::default()));
        let s = state.clone();
        let spawned = handle.subprocess_exec(
            move || Capture { state: s },
            &self.program,
            &self.args,
            opts,
        );
        let (h, ready, within, grace) =
            (handle.clone(), self.ready.clone(), self.within, self.grace);
        async move {
            let (transport, _) = spawned.map_err(|source| ProgramError::Spawn {
                program: name.clone(),
                source,
            })?;
            let mut p = RunningProgram {
                name,
                transport,
                state,
                handle: h,
                ready_line: None,
                addr: None,
                grace,
            };
            let got = match &ready {
                Ready::Started => Ok(()),
                Ready::Line { stream, text } => {
                    match p.wait_for_lines(*stream, text, 1, within).await {
                        Ok(mut lines) => {
                            let line = lines.swap_remove(0);
                            p.addr = line.split_whitespace().last().and_then(|w| w.parse().ok());
                            p.ready_line = Some(line);
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                Ready::Connect(addr) => {
                    let r = p.wait_connect(*addr, within, &ready).await;
                    p.addr = Some(*addr);
                    r
                }
            };
            match got {
                Ok(()) => Ok(p),
                Err(ProgramError::Timeout { .. }) => {
                    // Kill it and wait for its pipes, so the error has all
                    // it wrote and nothing is left running.
                    let _ = p.kill();
                    p.ended_within(grace + Duration::from_secs(1)).await;
                    Err(ProgramError::Timeout {
                        program: p.name.clone(),
                        waiting_for: ready.describe(),
                        within,
                        stdout: p.stdout(),
                        stderr: p.stderr(),
                    })
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// A probe connection's protocol: it only connects.
struct Probe;

impl Protocol for Probe {
    fn data_received(&mut self, _data: &[u8]) {}
}

/// A program under test, started by [`Program::start`]. Stopped with
/// [`stop`](Self::stop), or when dropped (see the [module docs](self)).
pub struct RunningProgram {
    name: String,
    transport: SubprocessTransport,
    state: Rc<RefCell<Captured>>,
    handle: Handle,
    ready_line: Option<String>,
    addr: Option<SocketAddr>,
    grace: Duration,
}

impl fmt::Debug for RunningProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningProgram")
            .field("program", &self.name)
            .field("pid", &self.pid())
            .field("addr", &self.addr)
            .field("returncode", &self.returncode())
            .finish()
    }
}

impl RunningProgram {
    /// The program, as given to [`Program::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.transport.pid()
    }

    /// Where it listens: for [`Ready::Connect`], the address connected
    /// to; for [`Ready::Line`], the last word of the ready line if it is a
    /// socket address (`listening on 127.0.0.1:4242`).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The line that made it ready ([`Ready::Line`]), without its `\n`.
    pub fn ready_line(&self) -> Option<&str> {
        self.ready_line.as_deref()
    }

    /// The child's transport: signals, exit status, its pipes.
    pub fn transport(&self) -> &SubprocessTransport {
        &self.transport
    }

    /// The exit status once it has exited and been reaped.
    pub fn returncode(&self) -> Option<ExitStatus> {
        self.transport.returncode()
    }

    /// Send `SIGTERM` (and nothing else: see [`stop`](Self::stop)).
    pub fn terminate(&self) -> crate::Result<()> {
        self.transport.terminate()
    }

    /// Send `SIGKILL`.
    pub fn kill(&self) -> crate::Result<()> {
        self.transport.kill()
    }

    /// Everything it wrote on `stream` so far (invalid UTF-8 replaced).
    pub fn output(&self, stream: Stream) -> String {
        self.state.borrow().text(stream)
    }

    /// Everything it wrote on stdout so far.
    pub fn stdout(&self) -> String {
        self.output(Stream::Stdout)
    }

    /// Everything it wrote on stderr so far (empty unless piped).
    pub fn stderr(&self) -> String {
        self.output(Stream::Stderr)
    }

    /// The complete lines on `stream` so far that contain `text`, without
    /// their `\n`.
    pub fn lines(&self, stream: Stream, text: &str) -> Vec<String> {
        self.state.borrow().lines(stream, text)
    }

    /// Wait until `n` complete lines on `stream` contain `text` (counted
    /// from the start of its output), and give them all. Fails with
    /// [`ProgramError::Exited`] if the program ends first, with
    /// [`ProgramError::Timeout`] after `within` (the program is left
    /// running then).
    pub fn wait_for_lines(
        &self,
        stream: Stream,
        text: &str,
        n: usize,
        within: Duration,
    ) -> impl Future<Output = Result<Vec<String>, ProgramError>> + 'static {
        let (state, h, name, text) = (
            self.state.clone(),
            self.handle.clone(),
            self.name.clone(),
            text.to_string(),
        );
        async move {
            let found = until(&state, |s| {
                let lines = s.lines(stream, &text);
                if lines.len() >= n {
                    Some(Ok(lines))
                } else {
                    // Nothing more can come once it has ended.
                    s.ended.map(Err)
                }
            });
            let result = h.timeout(within, found).await;
            let s = state.borrow();
            let waiting_for = lines_wanted(stream, &text, n);
            match result {
                Ok(Ok(lines)) => Ok(lines),
                Ok(Err(status)) => Err(ProgramError::Exited {
                    program: name,
                    waiting_for,
                    status,
                    stdout: s.text(Stream::Stdout),
                    stderr: s.text(Stream::Stderr),
                }),
                Err(_) => Err(ProgramError::Timeout {
                    program: name,
                    waiting_for,
                    within,
                    stdout: s.text(Stream::Stdout),
                    stderr: s.text(Stream::Stderr),
                }),
            }
        }
    }

    /// [`wait_for_lines`](Self::wait_for_lines) for one line: the first
    /// that contains `text`.
    pub fn wait_for_line(
        &self,
        stream: Stream,
        text: &str,
        within: Duration,
    ) -> impl Future<Output = Result<String, ProgramError>> + 'static {
        let lines = self.wait_for_lines(stream, text, 1, within);
        async move { Ok(lines.await?.swap_remove(0)) }
    }

    /// Wait (up to `within`) for the program to exit by itself and its
    /// pipes to close; gives its exit status. Sends no signal: a program
    /// still running after `within` is a [`ProgramError::Timeout`].
    pub fn wait(
        &self,
        within: Duration,
    ) -> impl Future<Output = Result<ExitStatus, ProgramError>> + 'static {
        let (state, h, name) = (self.state.clone(), self.handle.clone(), self.name.clone());
        async move {
            match h.timeout(within, until(&state, |s| s.ended)).await {
                Ok(status) => Ok(status),
                Err(_) => {
                    let s = state.borrow();
                    Err(ProgramError::Timeout {
                        program: name,
                        waiting_for: "exit".into(),
                        within,
                        stdout: s.text(Stream::Stdout),
                        stderr: s.text(Stream::Stderr),
                    })
                }
            }
        }
    }

    /// Stop the program: `SIGTERM`, then `SIGKILL` if it has not exited
    /// after the grace period; resolves with its exit status once it is
    /// reaped and its output is all in. Ready at once if it has already
    /// exited.
    pub fn stop(&self) -> impl Future<Output = Result<ExitStatus, ProgramError>> + 'static {
        let stop = self.transport.stop(self.grace);
        let (state, h, name) = (self.state.clone(), self.handle.clone(), self.name.clone());
        // The pipes close at most `grace` after the exit (close_pipes_after_exit).
        let bound = self.grace * 2 + Duration::from_secs(1);
        async move {
            let status = stop.await.map_err(|source| ProgramError::Stop {
                program: name,
                source,
            })?;
            let _ = h.timeout(bound, until(&state, |s| s.ended)).await;
            Ok(status)
        }
    }

    /// Wait up to `within` for `process_ended`.
    async fn ended_within(&self, within: Duration) {
        let _ = self
            .handle
            .timeout(within, until(&self.state, |s| s.ended))
            .await;
    }

    /// Try to connect to `addr` until it works, the program exits, or
    /// `within` passes.
    async fn wait_connect(
        &self,
        addr: SocketAddr,
        within: Duration,
        ready: &Ready,
    ) -> Result<(), ProgramError> {
        let h = &self.handle;
        let deadline = h.time() + within;
        loop {
            if let Some(status) = self.returncode() {
                // Let the last of its output in before describing it.
                self.ended_within(self.grace).await;
                let s = self.state.borrow();
                return Err(ProgramError::Exited {
                    program: self.name.clone(),
                    waiting_for: ready.describe(),
                    status,
                    stdout: s.text(Stream::Stdout),
                    stderr: s.text(Stream::Stderr),
                });
            }
            let left = deadline.saturating_duration_since(h.time());
            if left.is_zero() {
                let s = self.state.borrow();
                return Err(ProgramError::Timeout {
                    program: self.name.clone(),
                    waiting_for: ready.describe(),
                    within,
                    stdout: s.text(Stream::Stdout),
                    stderr: s.text(Stream::Stderr),
                });
            }
            let opts = ConnectOptions::default().timeout(left);
            if let Ok((t, _)) = h.create_connection(|| Probe, addr, opts).await {
                t.close();
                return Ok(());
            }
            h.sleep(CONNECT_EVERY.min(left)).await;
        }
    }
}

impl Drop for RunningProgram {
    fn drop(&mut self) {
        if self.returncode().is_none() {
            // The loop may not run again (the test failed): stop the
            // child here, waiting for its exit without the loop.
            let pid = self.pid();
            let _ = self.transport.terminate();
            if !exited_within(pid, self.grace) {
                let _ = self.transport.kill();
                exited_within(pid, Duration::from_secs(10));
            }
            // Reap it now, through the transport (so it is not reaped
            // behind its back) rather than when the loop next runs.
            self.transport.reap_if_exited();
        }
        if std::thread::panicking() {
            let s = self.state.borrow();
            let mut msg = format!("--- `{}` (pid {}) at the failure:", self.name, self.pid());
            let _ = error::write_output(&mut msg, &s.text(Stream::Stdout), &s.text(Stream::Stderr));
            eprintln!("{msg}");
        }
    }
}

/// Wait up to `within` for process `pid` (our child) to exit, without
/// reaping it. `true` if it has exited (or is no longer ours to wait for).
fn exited_within(pid: u32, within: Duration) -> bool {
    use rustix::process::{Pid, WaitId, WaitIdOptions, waitid};
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return true;
    };
    let deadline = Instant::now() + within;
    loop {
        let opts = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG;
        match waitid(WaitId::Pid(pid), opts) {
            Ok(Some(_)) => return true,
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => continue,
            // ECHILD: already reaped.
            Err(_) => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
