//! The shared state of one child process: its `Child`, its pipes, its
//! protocol, and the rules that order the protocol's callbacks.
//!
//! # Who holds what
//!
//! ```text
//! reactor slab ──> pipe transport ──> PipeProto ──> Core ──> user protocol
//! reactor slab ──> exit watcher ───────────────────> Core
//! owner handle (from subprocess_exec) ─────────────> Core
//! user protocol ──> handle from connection_made ··> Core   (weak)
//! user protocol ──> pipe transport (get_pipe_transport), if it keeps one
//! Core ··> pipe transports                                  (weak)
//! ```
//!
//! So the core lives while the child runs, while a pipe is open, or while
//! the user holds the owner handle, and no cycle outlives the loop: when
//! the loop closes, each pipe drops its `PipeProto` (breaking the cycle
//! through a pipe transport the user protocol kept), the slab is cleared,
//! and the core is dropped, which hands a still-running child to a reaper
//! thread (see `watch`).

use std::cell::{Cell, RefCell};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::rc::{Rc, Weak};
use std::time::Duration;

use mio::Token;

use super::watch;
use crate::error::{Error, Result};
use crate::event_loop::{ExceptionKind, Handle};
use crate::protocol::{CloseReason, Protocol, SubprocessProtocol, TimeoutKind};
use crate::task::SettableFuture;
use crate::time::TimerHandle;
use crate::transport::Transport;
use crate::transport::invoke::{self, NotCalled};
use crate::transport::pipe::{PipeTransport, ReadPipe, WritePipe};

/// One of the child's pipes, held weakly (the reactor owns it).
pub(super) enum PipeRef {
    Read(Weak<ReadPipe>),
    Write(Weak<WritePipe>),
}

impl PipeRef {
    fn transport(&self) -> Option<Transport> {
        match self {
            PipeRef::Read(w) => w.upgrade().map(|p| Transport::new(p)),
            PipeRef::Write(w) => w.upgrade().map(|p| Transport::new(p)),
        }
    }

    fn end_with(&self, reason: CloseReason) {
        match self {
            PipeRef::Read(w) => {
                if let Some(p) = w.upgrade() {
                    p.finish(reason);
                }
            }
            PipeRef::Write(w) => {
                if let Some(p) = w.upgrade() {
                    p.finish(reason);
                }
            }
        }
    }
}

pub(crate) struct Core {
    pub(super) handle: Handle,
    me: Weak<Core>,
    pub(super) pid: u32,
    /// The program, for messages.
    pub(super) name: String,
    child: RefCell<Option<Child>>,
    /// Shared with every `SubprocessTransport`, which may outlive the core.
    pub(super) status: Rc<Cell<Option<ExitStatus>>>,
    protocol: RefCell<Option<Rc<RefCell<dyn SubprocessProtocol>>>>,
    pipes: RefCell<[Option<PipeRef>; 3]>,
    /// One bit per fd whose pipe has not delivered `pipe_connection_lost`.
    open: Cell<u8>,
    ended: Cell<bool>,
    closed: Cell<bool>,
    pub(super) kill_on_drop: bool,
    pipe_grace: Option<Duration>,
    grace_timer: RefCell<Option<TimerHandle>>,
    waiters: RefCell<Vec<SettableFuture<ExitStatus>>>,
    /// The registered pidfd, while the exit is being watched that way.
    pub(super) pidfd: RefCell<Option<(OwnedFd, Token)>>,
}

impl Core {
    pub(super) fn new(
        handle: &Handle,
        child: Child,
        name: String,
        kill_on_drop: bool,
        pipe_grace: Option<Duration>,
    ) -> Rc<Core> {
        Rc::new_cyclic(|me| Core {
            handle: handle.clone(),
            me: me.clone(),
            pid: child.id(),
            name,
            child: RefCell::new(Some(child)),
            status: Rc::new(Cell::new(None)),
            protocol: RefCell::new(None),
            pipes: RefCell::new([None, None, None]),
            open: Cell::new(0),
            ended: Cell::new(false),
            closed: Cell::new(false),
            kill_on_drop,
            pipe_grace,
            grace_timer: RefCell::new(None),
            waiters: RefCell::new(Vec::new()),
            pidfd: RefCell::new(None),
        })
    }

    fn rc(&self) -> Rc<Core> {
        self.me
            .upgrade()
            .expect("core is alive while its methods run")
    }

    pub(super) fn add_pipe(&self, fd: i32, pipe: PipeRef) {
        self.pipes.borrow_mut()[fd as usize] = Some(pipe);
        self.open.set(self.open.get() | 1 << fd);
    }

    pub(super) fn set_protocol(&self, p: Rc<RefCell<dyn SubprocessProtocol>>) {
        *self.protocol.borrow_mut() = Some(p);
    }

    pub(super) fn pipe_transport(&self, fd: i32) -> Option<Transport> {
        let pipes = self.pipes.borrow();
        pipes.get(usize::try_from(fd).ok()?)?.as_ref()?.transport()
    }

    pub(super) fn is_closing(&self) -> bool {
        self.closed.get()
    }

    /// Call the protocol with panics caught: a panic is reported and
    /// closes the transport. `false` if the call did not complete.
    pub(super) fn call(&self, what: &str, f: impl FnOnce(&mut dyn SubprocessProtocol)) -> bool {
        let Some(proto) = self.protocol.borrow().clone() else {
            return false;
        };
        let describe = || {
            format!(
                "{what} of the protocol of process {} ({})",
                self.pid, self.name
            )
        };
        match invoke::call_protocol(&self.handle, &proto, &describe, f) {
            Ok(()) => true,
            Err(NotCalled::Borrowed) => false,
            Err(NotCalled::Panicked(_)) => {
                self.rc().close();
                false
            }
        }
    }

    /// A pipe delivered data.
    fn pipe_data(&self, fd: i32, data: &[u8]) {
        self.call("pipe_data_received", |p| p.pipe_data_received(fd, data));
    }

    /// A pipe is gone: tell the protocol, then see if the child is done.
    fn pipe_lost(self: &Rc<Self>, fd: i32, reason: CloseReason) {
        let bit = 1 << fd;
        if self.open.get() & bit == 0 {
            return;
        }
        self.open.set(self.open.get() & !bit);
        self.call("pipe_connection_lost", |p| {
            p.pipe_connection_lost(fd, reason)
        });
        self.try_finish();
    }

    /// Reap the child if it has exited. `true` once the exit is known.
    pub(super) fn poll_exit(self: &Rc<Self>) -> bool {
        if self.status.get().is_some() {
            return true;
        }
        let res = match self.child.borrow_mut().as_mut() {
            Some(c) => c.try_wait(),
            None => return true,
        };
        match res {
            Ok(Some(status)) => {
                self.on_exit(status);
                true
            }
            Ok(None) => false,
            Err(e) => {
                // Only possible if someone else reaped our child (a global
                // waitpid(-1), or SIGCHLD set to SIG_IGN). asyncio reports
                // 255 in this case; so do we, and say why.
                self.handle.report(
                    ExceptionKind::Error,
                    format!(
                        "process {} ({}) could not be reaped ({e}): it was reaped elsewhere; \
                         reporting exit status 255",
                        self.pid, self.name
                    ),
                );
                self.on_exit(ExitStatus::from_raw(255 << 8));
                true
            }
        }
    }

    fn on_exit(self: &Rc<Self>, status: ExitStatus) {
        if self.status.get().is_some() {
            return;
        }
        self.status.set(Some(status));
        watch::stop(self);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            let _ = w.set_result(status);
        }
        self.call("process_exited", |p| p.process_exited());
        // Not on a closed loop (a fixture reaping from `Drop`): nothing
        // would fire the timer or ever take it off the heap.
        if self.open.get() != 0
            && !self.handle.is_closed()
            && let Some(grace) = self.pipe_grace
        {
            // Weak: the core holds the timer, so a strong reference here
            // would be a cycle that outlives a loop closed meanwhile.
            let me = self.me.clone();
            let t = self.handle.call_later(grace, move || {
                if let Some(me) = me.upgrade() {
                    me.grace_timer.borrow_mut().take();
                    me.end_pipes(CloseReason::Timeout(TimeoutKind::PipeAfterExit));
                }
            });
            *self.grace_timer.borrow_mut() = Some(t);
        }
        self.try_finish();
    }

    /// Deliver `process_ended` once the child has exited and every pipe
    /// has closed; then drop the protocol (nothing is called after it).
    fn try_finish(self: &Rc<Self>) {
        let Some(status) = self.status.get() else {
            return;
        };
        if self.open.get() != 0 || self.ended.replace(true) {
            return;
        }
        if let Some(t) = self.grace_timer.borrow_mut().take() {
            t.cancel();
        }
        self.call("process_ended", |p| p.process_ended(status));
        let proto = self.protocol.borrow_mut().take();
        drop(proto);
    }

    fn end_pipes(&self, reason: CloseReason) {
        let pipes = self.pipes.borrow();
        for p in pipes.iter().flatten() {
            p.end_with(reason.clone());
        }
    }

    /// Kill a running child and close every pipe (asyncio's `close`).
    /// The remaining callbacks, `process_ended` last, still come.
    pub(super) fn close(self: &Rc<Self>) {
        if self.closed.replace(true) {
            return;
        }
        if self.status.get().is_none() {
            let _ = self.signal(rustix::process::Signal::KILL);
        }
        let pipes: Vec<Transport> = (0..3).filter_map(|fd| self.pipe_transport(fd)).collect();
        for t in pipes {
            // Input the child will never read is dropped, not flushed.
            if t.get_write_buffer_size() > 0 {
                t.abort();
            } else {
                t.close();
            }
        }
    }

    /// Send `sig` unless the child has been reaped (its pid may belong to
    /// another process by then). Reaping happens only on this thread, so
    /// there is no race with it.
    pub(super) fn signal(&self, sig: rustix::process::Signal) -> Result<()> {
        if self.status.get().is_some() {
            return Ok(());
        }
        let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) else {
            return Err(Error::Unsupported("process id 0"));
        };
        rustix::process::kill_process(pid, sig).map_err(|e| {
            Error::io(
                format!(
                    "sending signal {} to process {} ({})",
                    sig.as_raw(),
                    self.pid,
                    self.name
                ),
                e.into(),
            )
        })
    }

    /// Send `sig` to the child's process group, which must be its own:
    /// never to a group the child merely belongs to (the parent's, by
    /// default), and never once it has been reaped, when its pid, and so
    /// the group id, may name another process.
    pub(super) fn signal_group(&self, sig: rustix::process::Signal) -> Result<()> {
        use rustix::process::{Pid, kill_process_group};
        let context = || {
            format!(
                "sending signal {} to the process group of process {} ({})",
                sig.as_raw(),
                self.pid,
                self.name
            )
        };
        let refuse = |kind, why: String| Error::io(context(), std::io::Error::new(kind, why));
        if self.status.get().is_some() {
            return Err(refuse(
                std::io::ErrorKind::NotFound,
                "the process has exited and been reaped, so its pid no longer names its group"
                    .into(),
            ));
        }
        let Some(pid) = Pid::from_raw(self.pid as i32) else {
            return Err(Error::Unsupported("process id 0"));
        };
        // Not reaped (reaping happens only on this thread), so `pid` is
        // still our child, if only as a zombie.
        // Through libc, not rustix: the group may lie outside this PID
        // namespace (a container whose init started us), and then the
        // kernel reports it as 0, which rustix's `getpgid` asserts against.
        // SAFETY: `getpgid` takes a plain pid and touches no memory.
        let pgid = unsafe { libc::getpgid(pid.as_raw_nonzero().get()) };
        if pgid < 0 {
            return Err(Error::io(context(), std::io::Error::last_os_error()));
        }
        if pgid != pid.as_raw_nonzero().get() {
            let group = match pgid {
                0 => "a group outside this PID namespace".to_owned(),
                g => format!("group {g}"),
            };
            return Err(refuse(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "it is not a process group leader (it is in {group}); start it with \
                     start_new_session(true) or process_group(0)"
                ),
            ));
        }
        kill_process_group(pid, sig).map_err(|e| Error::io(context(), e.into()))
    }

    /// A future for the exit status.
    pub(super) fn exit_future(&self) -> SettableFuture<ExitStatus> {
        let f = self.handle.create_future();
        match self.status.get() {
            Some(s) => {
                let _ = f.set_result(s);
            }
            None => self.waiters.borrow_mut().push(f.clone()),
        }
        f
    }

    /// Setting up failed after the spawn: kill and reap the child now so
    /// nothing is left behind, and deliver nothing.
    pub(super) fn abandon(&self) {
        *self.protocol.borrow_mut() = None;
        self.ended.set(true);
        self.closed.set(true);
        self.end_pipes(CloseReason::LocalAbort);
        if let Some(c) = self.child.borrow_mut().as_mut() {
            let _ = c.kill();
            if let Ok(s) = c.wait() {
                self.status.set(Some(s));
            }
        }
        watch::stop(self);
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if let Some(t) = self.grace_timer.get_mut().take() {
            t.cancel();
        }
        if let Some((fd, token)) = self.pidfd.borrow_mut().take() {
            watch::unregister(&self.handle, fd, token);
        }
        for w in self.waiters.borrow_mut().drain(..) {
            w.cancel();
        }
        if self.status.get().is_none()
            && let Some(child) = self.child.borrow_mut().take()
        {
            // Only when the loop is closed with the child still running.
            watch::reap_in_background(child, self.kill_on_drop);
        }
    }
}

/// The protocol each pipe transport runs: forwards to the core with the
/// pipe's fd number. It never panics itself (the core catches the user's
/// panics), so a pipe transport never ends for its sake.
pub(super) struct PipeProto {
    fd: i32,
    core: Rc<Core>,
}

impl PipeProto {
    pub(super) fn new(fd: i32, core: &Rc<Core>) -> PipeProto {
        PipeProto {
            fd,
            core: core.clone(),
        }
    }
}

impl Protocol for PipeProto {
    fn data_received(&mut self, data: &[u8]) {
        self.core.pipe_data(self.fd, data);
    }

    fn eof_received(&mut self) -> bool {
        false
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        self.core.pipe_lost(self.fd, reason);
    }

    fn pause_writing(&mut self) {
        self.core.call("pause_writing", |p| p.pause_writing());
    }

    fn resume_writing(&mut self) {
        self.core.call("resume_writing", |p| p.resume_writing());
    }
}
