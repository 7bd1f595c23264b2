//! [`SubprocessTransport`]: the handle to a running child.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::process::ExitStatus;
use std::rc::{Rc, Weak};
use std::time::Duration;

use rustix::process::Signal;

use super::core::Core;
use crate::error::{Error, Result};
use crate::transport::Transport;

/// Kills the child when the last owner handle goes, if asked to.
struct Owner {
    core: Rc<Core>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        if self.core.kill_on_drop && self.core.status.get().is_none() {
            // The exit watcher reaps it and the protocol still hears of it.
            let _ = self.core.signal(Signal::KILL);
        }
    }
}

/// The handle to a child process started by
/// [`Handle::subprocess_exec`](crate::Handle::subprocess_exec): its pid and
/// status, signals, its stdin as a [`Transport`], and a future for its
/// exit. A cheap `Clone`; `!Send`.
///
/// # Owner handles and kill-on-drop
///
/// The handle returned by `subprocess_exec` (and its clones) *owns* the
/// child: with [`SubprocessOptions::kill_on_drop`](super::SubprocessOptions::kill_on_drop),
/// dropping the last of them sends `SIGKILL` to a child that still runs.
/// The handle given to the protocol's `connection_made` does not own the
/// child and does not keep anything alive; once the process has ended and
/// its state is dropped, its methods answer with errors or `None`
/// (`pid` and `returncode` keep working).
///
/// Whatever happens to the handles, the child is always reaped: by the
/// loop while it runs, by a background thread if the loop is closed first.
#[derive(Clone)]
pub struct SubprocessTransport {
    pid: u32,
    status: Rc<Cell<Option<ExitStatus>>>,
    core: Weak<Core>,
    owner: Option<Rc<Owner>>,
}

impl fmt::Debug for SubprocessTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubprocessTransport")
            .field("pid", &self.pid)
            .field("returncode", &self.status.get())
            .finish()
    }
}

impl SubprocessTransport {
    /// The handle returned by `subprocess_exec`.
    pub(super) fn owner(core: &Rc<Core>) -> SubprocessTransport {
        SubprocessTransport {
            pid: core.pid,
            status: core.status.clone(),
            core: Rc::downgrade(core),
            owner: Some(Rc::new(Owner { core: core.clone() })),
        }
    }

    /// The handle given to the protocol.
    pub(super) fn weak(core: &Rc<Core>) -> SubprocessTransport {
        SubprocessTransport {
            pid: core.pid,
            status: core.status.clone(),
            core: Rc::downgrade(core),
            owner: None,
        }
    }

    fn core(&self) -> Option<Rc<Core>> {
        match &self.owner {
            Some(o) => Some(o.core.clone()),
            None => self.core.upgrade(),
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status once the child has exited and been reaped; `None`
    /// while it runs. See [`ExitStatus::code`] and, for a child killed by
    /// a signal, `std::os::unix::process::ExitStatusExt::signal`.
    pub fn returncode(&self) -> Option<ExitStatus> {
        self.status.get()
    }

    /// Send signal `sig` (a named signal number such as 15 for `SIGTERM`).
    /// Does nothing once the child has been reaped: its pid may belong to
    /// another process by then.
    pub fn send_signal(&self, sig: i32) -> Result<()> {
        let signal = Signal::from_named_raw(sig).ok_or_else(|| {
            Error::io(
                format!("send_signal({sig})"),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a known signal number",
                ),
            )
        })?;
        self.signal(signal)
    }

    /// Send signal `sig` to the child's whole process group: the child
    /// and every process it started that stayed in its group (asyncio's
    /// `os.killpg(os.getpgid(p.pid), sig)`). The child must lead its own
    /// group, so start it with
    /// [`start_new_session(true)`](super::SubprocessOptions::start_new_session)
    /// or [`process_group(0)`](super::SubprocessOptions::process_group).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] with kind `InvalidInput` if the child is not a group
    /// leader (it is in the parent's group by default, and signalling that
    /// would hit the parent too); with kind `NotFound` once the child has
    /// been reaped (its pid may name another process by then: signal the
    /// group before awaiting the exit); `InvalidInput` too for an unknown
    /// signal number; [`Error::Closed`] from a protocol's handle whose
    /// process state is gone (the loop was closed).
    ///
    /// ```
    /// use std::time::Duration;
    /// use protoloop::{EventLoop, SubprocessOptions};
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let h = lp.handle();
    /// let lone = h.create_subprocess_exec("sleep", ["30"], SubprocessOptions::default()).unwrap();
    /// // In the parent's group: refused, nothing sent.
    /// let e = lone.transport().send_signal_to_group(15).unwrap_err();
    /// assert_eq!(e.io_kind(), Some(std::io::ErrorKind::InvalidInput));
    /// lone.kill().unwrap();
    ///
    /// let opts = SubprocessOptions::default().start_new_session(true);
    /// let p = h.create_subprocess_shell("sleep 30 & sleep 30 & wait", opts).unwrap();
    /// p.transport().send_signal_to_group(9).unwrap();
    /// lp.run_until_complete(async move { p.wait().await }).unwrap().unwrap();
    /// ```
    pub fn send_signal_to_group(&self, sig: i32) -> Result<()> {
        let signal = Signal::from_named_raw(sig).ok_or_else(|| {
            Error::io(
                format!("send_signal_to_group({sig})"),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a known signal number",
                ),
            )
        })?;
        match self.core() {
            Some(core) => core.signal_group(signal),
            None if self.status.get().is_some() => Err(Error::io(
                format!("send_signal_to_group({sig}) to process {}", self.pid),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the process has exited and been reaped, so its pid no longer names its group",
                ),
            )),
            None => Err(Error::Closed),
        }
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        if self.status.get().is_some() {
            return Ok(());
        }
        match self.core() {
            Some(core) => core.signal(sig),
            None => Err(Error::Closed),
        }
    }

    /// Reap the child now if it has exited, without waiting for the loop
    /// to notice (for `testing`'s fixtures, which stop children from
    /// `Drop`, where the loop may never run again). The protocol hears of
    /// the exit as usual.
    pub(crate) fn reap_if_exited(&self) {
        if let Some(core) = self.core() {
            core.poll_exit();
        }
    }

    /// Ask the child to stop: `SIGTERM`.
    pub fn terminate(&self) -> Result<()> {
        self.signal(Signal::TERM)
    }

    /// Kill the child: `SIGKILL`.
    pub fn kill(&self) -> Result<()> {
        self.signal(Signal::KILL)
    }

    /// The transport of one of the child's pipes: fd 0 is its stdin (a
    /// write transport: `write`, flow control, `close` to send EOF), 1 and
    /// 2 its stdout and stderr (read transports: `pause_reading`,
    /// `resume_reading`). `None` if that fd is not a pipe or the pipe is
    /// gone.
    pub fn get_pipe_transport(&self, fd: i32) -> Option<Transport> {
        self.core()?.pipe_transport(fd)
    }

    /// Kill the child if it still runs and close every pipe (asyncio's
    /// `close`). Unwritten stdin data is dropped. The protocol still gets
    /// `pipe_connection_lost`, `process_exited` and, last,
    /// `process_ended`.
    pub fn close(&self) {
        if let Some(core) = self.core() {
            core.close();
        }
    }

    /// `true` once [`close`](Self::close) was called.
    pub fn is_closing(&self) -> bool {
        self.core().is_none_or(|c| c.is_closing())
    }

    /// A future for the child's exit status; ready at once if it has
    /// already exited. It resolves when the child exits, which may be
    /// before its output is all delivered (see `process_ended` for that).
    /// Fails with [`Error::Cancelled`] if the loop is closed first.
    pub fn wait(&self) -> impl Future<Output = Result<ExitStatus>> + 'static {
        let known = self.status.get();
        let fut = match known {
            Some(_) => None,
            None => self.core().map(|c| c.exit_future()),
        };
        async move {
            if let Some(s) = known {
                return Ok(s);
            }
            match fut {
                // Each waiter has its own future, so the only failure is
                // the loop closing (the core cancels its waiters).
                Some(f) => f.await.map_err(|_| Error::Cancelled),
                None => Err(Error::Closed),
            }
        }
    }

    /// Stop the child the polite way: `SIGTERM`, then `SIGKILL` if it has
    /// not exited after `grace`; resolves with its exit status once it is
    /// reaped. Ready at once if it has already exited.
    ///
    /// ```
    /// use std::time::Duration;
    /// use protoloop::{EventLoop, SubprocessOptions};
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let h = lp.handle();
    /// let p = h
    ///     .create_subprocess_exec("sleep", ["30"], SubprocessOptions::default())
    ///     .unwrap();
    /// let status = lp
    ///     .run_until_complete(async move { p.stop(Duration::from_secs(5)).await })
    ///     .unwrap()
    ///     .unwrap();
    /// use std::os::unix::process::ExitStatusExt;
    /// assert_eq!(status.signal(), Some(15)); // SIGTERM was enough
    /// ```
    pub fn stop(&self, grace: Duration) -> impl Future<Output = Result<ExitStatus>> + 'static {
        let t = self.clone();
        let core = self.core();
        async move {
            if let Some(s) = t.returncode() {
                return Ok(s);
            }
            let Some(core) = core else {
                return Err(Error::Closed);
            };
            t.terminate()?;
            match core.handle.timeout(grace, t.wait()).await {
                Ok(r) => r,
                Err(_) => {
                    t.kill()?;
                    t.wait().await
                }
            }
        }
    }
}
