//! [`Process`]: a child with a built-in protocol that collects its output,
//! for the common "run it, feed it, read what it says, stop it" cases
//! (asyncio's `asyncio.subprocess.Process`).

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fmt;
use std::future::Future;
use std::process::{ExitStatus, Output};
use std::rc::Rc;
use std::time::Duration;

use super::{SubprocessOptions, SubprocessTransport};
use crate::error::{Error, Result};
use crate::event_loop::Handle;
use crate::protocol::{CloseReason, SubprocessProtocol};
use crate::task::Waiters;
use crate::transport::Transport;

#[derive(Default)]
struct Collected {
    /// Unread output of stdout (0) and stderr (1).
    unread: [Vec<u8>; 2],
    eof: [bool; 2],
    ended: Option<ExitStatus>,
    wakers: Waiters,
}

impl Collected {
    fn wake(&mut self) {
        self.wakers.wake_all();
    }
}

struct Collector {
    state: Rc<RefCell<Collected>>,
}

impl SubprocessProtocol for Collector {
    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        let mut s = self.state.borrow_mut();
        if let Some(buf) = s.unread.get_mut((fd - 1) as usize) {
            buf.extend_from_slice(data);
        }
        s.wake();
    }
    fn pipe_connection_lost(&mut self, fd: i32, _reason: CloseReason) {
        let mut s = self.state.borrow_mut();
        if let Some(e) = s.eof.get_mut((fd - 1) as usize) {
            *e = true;
        }
        s.wake();
    }
    fn process_ended(&mut self, status: ExitStatus) {
        let mut s = self.state.borrow_mut();
        s.ended = Some(status);
        s.eof = [true, true];
        s.wake();
    }
}

/// A running child whose stdout and stderr are collected in memory, made
/// by [`Handle::create_subprocess_exec`] or
/// [`Handle::create_subprocess_shell`].
///
/// Read output as it comes with [`read_line`](Self::read_line), or all of
/// it at the end with [`communicate`](Self::communicate); stop the child
/// with [`stop`](Self::stop). Output is kept until read, so use
/// [`Handle::subprocess_exec`] with your own protocol for endless streams.
///
/// ```
/// use protoloop::{EventLoop, SubprocessOptions};
///
/// let lp = EventLoop::new().unwrap();
/// let h = lp.handle();
/// let p = h.create_subprocess_exec("cat", ["-"], SubprocessOptions::default()).unwrap();
/// let out = lp
///     .run_until_complete(async move { p.communicate(Some(b"ping")).await })
///     .unwrap()
///     .unwrap();
/// assert!(out.status.success());
/// assert_eq!(out.stdout, b"ping");
/// assert!(out.stderr.is_empty());
/// ```
pub struct Process {
    transport: SubprocessTransport,
    state: Rc<RefCell<Collected>>,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.transport.pid())
            .field("returncode", &self.transport.returncode())
            .finish()
    }
}

impl Handle {
    /// Start `program` with `args`, collecting its output (asyncio's
    /// `create_subprocess_exec`). See [`Process`].
    pub fn create_subprocess_exec<I, S>(
        &self,
        program: impl AsRef<OsStr>,
        args: I,
        opts: SubprocessOptions,
    ) -> Result<Process>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (state, eof) = initial_state(&opts);
        let (transport, _) = self.subprocess_exec(|| Collector { state }, program, args, opts)?;
        Ok(Process::new(transport, eof))
    }

    /// Run a shell command line with `/bin/sh -c`, collecting its output
    /// (asyncio's `create_subprocess_shell`). See [`Process`].
    pub fn create_subprocess_shell(
        &self,
        command: impl AsRef<OsStr>,
        opts: SubprocessOptions,
    ) -> Result<Process> {
        let (state, eof) = initial_state(&opts);
        let (transport, _) = self.subprocess_shell(|| Collector { state }, command, opts)?;
        Ok(Process::new(transport, eof))
    }
}

/// A stream that is not a pipe is at its end from the start.
fn initial_state(opts: &SubprocessOptions) -> (Rc<RefCell<Collected>>, Rc<RefCell<Collected>>) {
    let state = Rc::new(RefCell::new(Collected {
        eof: [
            opts.stdout != super::Stdio::Pipe,
            opts.stderr != super::Stdio::Pipe,
        ],
        ..Default::default()
    }));
    (state.clone(), state)
}

impl Process {
    fn new(transport: SubprocessTransport, state: Rc<RefCell<Collected>>) -> Process {
        Process { transport, state }
    }

    /// The owner transport (signals, `get_pipe_transport`, `close`).
    pub fn transport(&self) -> &SubprocessTransport {
        &self.transport
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.transport.pid()
    }

    /// The exit status once the child has been reaped.
    pub fn returncode(&self) -> Option<ExitStatus> {
        self.transport.returncode()
    }

    /// The child's stdin as a write transport, if it is a pipe.
    pub fn stdin(&self) -> Option<Transport> {
        self.transport.get_pipe_transport(0)
    }

    /// See [`SubprocessTransport::send_signal`].
    pub fn send_signal(&self, sig: i32) -> Result<()> {
        self.transport.send_signal(sig)
    }

    /// See [`SubprocessTransport::send_signal_to_group`].
    pub fn send_signal_to_group(&self, sig: i32) -> Result<()> {
        self.transport.send_signal_to_group(sig)
    }

    /// `SIGTERM`.
    pub fn terminate(&self) -> Result<()> {
        self.transport.terminate()
    }

    /// `SIGKILL`.
    pub fn kill(&self) -> Result<()> {
        self.transport.kill()
    }

    /// A future for the exit status (see [`SubprocessTransport::wait`]).
    pub fn wait(&self) -> impl Future<Output = Result<ExitStatus>> + 'static {
        self.transport.wait()
    }

    /// `SIGTERM`, then `SIGKILL` after `grace`; resolves once the child is
    /// reaped (see [`SubprocessTransport::stop`]).
    pub fn stop(&self, grace: Duration) -> impl Future<Output = Result<ExitStatus>> + 'static {
        self.transport.stop(grace)
    }

    /// Output of `fd` (1: stdout, 2: stderr) received and not yet read,
    /// taken now without waiting.
    pub fn take_output(&self, fd: i32) -> Result<Vec<u8>> {
        let i = index(fd)?;
        Ok(std::mem::take(&mut self.state.borrow_mut().unread[i]))
    }

    /// The next line of `fd` (1: stdout, 2: stderr), with its `\n`; at the
    /// end of the stream, what is left without one, then `None`.
    ///
    /// ```
    /// use protoloop::{EventLoop, SubprocessOptions};
    /// let lp = EventLoop::new().unwrap();
    /// let p = lp.handle()
    ///     .create_subprocess_shell("echo one; echo two", SubprocessOptions::default())
    ///     .unwrap();
    /// let lines = lp.run_until_complete(async move {
    ///     let mut v = Vec::new();
    ///     while let Some(l) = p.read_line(1).await.unwrap() { v.push(l); }
    ///     v
    /// }).unwrap();
    /// assert_eq!(lines, [b"one\n".to_vec(), b"two\n".to_vec()]);
    /// ```
    pub fn read_line(&self, fd: i32) -> impl Future<Output = Result<Option<Vec<u8>>>> + 'static {
        let i = index(fd);
        let state = self.state.clone();
        async move {
            let i = i?;
            Ok(until(&state, |s| {
                let buf = &mut s.unread[i];
                if let Some(n) = buf.iter().position(|&b| b == b'\n') {
                    let rest = buf.split_off(n + 1);
                    return Some(Some(std::mem::replace(buf, rest)));
                }
                if s.eof[i] {
                    let left = std::mem::take(buf);
                    return Some((!left.is_empty()).then_some(left));
                }
                None
            })
            .await)
        }
    }

    /// Write `input` (if any) to the child's stdin and close it, then wait
    /// until the child has ended and give its status and the output not
    /// yet read (asyncio's `communicate`). Input the child does not read
    /// is dropped, as in asyncio. Fails at once if `input` is given but
    /// stdin is not a pipe.
    pub fn communicate(
        &self,
        input: Option<&[u8]>,
    ) -> impl Future<Output = Result<Output>> + 'static {
        let stdin = self.stdin();
        let fed = match (&stdin, input) {
            (None, Some(_)) => Err(Error::Unsupported(
                "communicate: input was given but the child's stdin is not a pipe",
            )),
            (Some(t), input) => {
                if let Some(data) = input {
                    // A child that exits without reading makes this fail;
                    // that is its choice, not an error of ours.
                    let _ = t.write(data);
                }
                t.close();
                Ok(())
            }
            (None, None) => Ok(()),
        };
        let state = self.state.clone();
        async move {
            fed?;
            let status = until(&state, |s| s.ended).await;
            let mut s = state.borrow_mut();
            let [stdout, stderr] = std::mem::take(&mut s.unread);
            Ok(Output {
                status,
                stdout,
                stderr,
            })
        }
    }
}

fn index(fd: i32) -> Result<usize> {
    match fd {
        1 | 2 => Ok((fd - 1) as usize),
        _ => Err(Error::Unsupported(
            "a Process collects fd 1 (stdout) and fd 2 (stderr) only",
        )),
    }
}

/// Wait until `f` gives a value; re-checked after each event of the child.
async fn until<T>(state: &RefCell<Collected>, f: impl FnMut(&mut Collected) -> Option<T>) -> T {
    crate::task::until(state, |s| &mut s.wakers, f).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{EventLoop, Stdio, SubprocessOptions};

    /// A task that waits on a silent child again and again (a read under
    /// a timeout, in a loop) must not pile up a waker per attempt.
    #[test]
    fn waiting_again_and_again_on_a_silent_child_keeps_one_waker() {
        let lp = EventLoop::new().unwrap();
        let h = lp.handle();
        let opts = SubprocessOptions::default()
            .stdin(Stdio::Null)
            .kill_on_drop(true);
        let p = h.create_subprocess_exec("sleep", ["30"], opts).unwrap();
        let state = p.state.clone();
        let wakers = lp
            .run_until_complete(async move {
                for _ in 0..50 {
                    let r = h.timeout(Duration::from_millis(1), p.read_line(1)).await;
                    assert!(r.is_err(), "the child prints nothing");
                }
                let n = state.borrow().wakers.len();
                p.kill().unwrap();
                p.wait().await.unwrap();
                n
            })
            .unwrap();
        assert!(wakers <= 1, "{wakers} wakers kept for one waiting task");
    }
}
