//! Watching for a child's exit without a global `SIGCHLD` handler, so that
//! several loops (and parallel tests) in one process each see their own
//! children.
//!
//! - On Linux 5.3+ a pidfd (`pidfd_open`) is registered with the reactor:
//!   it becomes readable when the child exits, and the child is then
//!   reaped on the loop thread with `waitpid(pid, WNOHANG)`.
//! - Where `pidfd_open` fails (older kernels, seccomp filters, other
//!   systems), a thread per child blocks in
//!   `waitid(P_PID, pid, WEXITED | WNOWAIT)`, which waits for the exit
//!   *without* reaping, and wakes a task on the loop that reaps. Reaping
//!   only ever happens on the loop thread, so a signal sent by the loop
//!   can never reach a recycled pid.
//!
//! A child whose core is dropped before it exited (the loop was closed)
//! is killed if it was started with `kill_on_drop`, and in every case
//! reaped by a background thread: no zombie is left behind.

use std::future::poll_fn;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Child;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Token};

use super::core::Core;
use crate::event_loop::Handle;
use crate::reactor::{IoHandler, Ready};

/// How to watch for the exit; `Thread` exists so tests can exercise the
/// fallback on kernels that have pidfds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum WatchMode {
    #[default]
    Auto,
    #[cfg_attr(not(test), allow(dead_code))]
    Thread,
}

/// Start watching `core`'s child.
pub(super) fn start(core: &Rc<Core>, mode: WatchMode) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if mode == WatchMode::Auto && watch_pidfd(core).is_ok() {
        return Ok(());
    }
    let _ = mode;
    watch_thread(core)
}

/// Stop watching (the child was reaped).
pub(super) fn stop(core: &Core) {
    if let Some((fd, token)) = core.pidfd.borrow_mut().take() {
        unregister(&core.handle, fd, token);
    }
}

/// Deregister and close a pidfd.
pub(super) fn unregister(handle: &Handle, fd: OwnedFd, token: Token) {
    let raw = fd.as_raw_fd();
    handle.inner.reactor.remove(&mut SourceFd(&raw), token);
    drop(fd);
}

struct PidfdWatch {
    core: Rc<Core>,
}

impl IoHandler for PidfdWatch {
    fn ready(self: Rc<Self>, _ready: Ready) {
        // A spurious event finds the child still running: wait for the
        // next one (the pidfd raises a fresh edge at the exit).
        self.core.poll_exit();
    }
}

#[cfg(target_os = "linux")]
fn watch_pidfd(core: &Rc<Core>) -> std::io::Result<()> {
    use rustix::process::{Pid, PidfdFlags, pidfd_open};
    let pid = Pid::from_raw(core.pid as i32)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // The child cannot be reaped before this (we hold it), so the pid
    // still names our child, if only as a zombie.
    let fd = pidfd_open(pid, PidfdFlags::empty())?;
    let reactor = &core.handle.inner.reactor;
    let token = reactor.insert(Rc::new(PidfdWatch { core: core.clone() }));
    let raw = fd.as_raw_fd();
    if let Err(e) = reactor.register(&mut SourceFd(&raw), token, Interest::READABLE) {
        reactor.forget(token);
        return Err(e);
    }
    *core.pidfd.borrow_mut() = Some((fd, token));
    Ok(())
}

#[derive(Default)]
struct ExitSlot {
    exited: bool,
    waker: Option<Waker>,
}

fn watch_thread(core: &Rc<Core>) -> std::io::Result<()> {
    use rustix::process::{Pid, WaitId, WaitIdOptions, waitid};
    let pid = Pid::from_raw(core.pid as i32)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let slot = Arc::new(Mutex::new(ExitSlot::default()));
    let s = slot.clone();
    std::thread::Builder::new()
        .name("protoloop-child-watch".into())
        .spawn(move || {
            // Wait for the exit but leave the zombie for the loop to reap.
            // Any error (ECHILD: reaped elsewhere) also ends the wait; the
            // loop finds out which on its side.
            while let Err(rustix::io::Errno::INTR) = waitid(
                WaitId::Pid(pid),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            ) {}
            let waker = {
                let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
                s.exited = true;
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        })?;
    let core = core.clone();
    let handle = core.handle.clone();
    handle.spawn(async move {
        poll_fn(|cx| {
            let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
            if s.exited {
                Poll::Ready(())
            } else {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        // The child is a zombie now; `poll_exit` reaps it. The retry is
        // only a guard against a surprising kernel answer.
        while !core.poll_exit() {
            core.handle.sleep(Duration::from_millis(10)).await;
        }
    });
    Ok(())
}

/// Reap `child` off the loop, killing it first if asked.
pub(super) fn reap_in_background(mut child: Child, kill: bool) {
    if kill {
        let _ = child.kill();
    }
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // Without a thread the child would stay a zombie once it exits;
    // there is nothing else to do without blocking the caller.
    let _ = std::thread::Builder::new()
        .name("protoloop-reaper".into())
        .spawn(move || {
            let _ = child.wait();
        });
}
