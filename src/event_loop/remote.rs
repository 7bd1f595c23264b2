//! Cross-thread entry into the loop: the queue of callbacks sent with
//! `call_soon_threadsafe`, the queue of woken tasks (wakers may fire on any
//! thread), and the `mio::Waker` that interrupts a sleeping poll.
//!
//! The loop sets `sleeping` before its last look at the queues and its
//! poll; a sender pushes first and wakes only if `sleeping` is set. Either
//! the loop sees the item or the sender sees the flag, so nothing waits a
//! whole poll timeout, and a loop that is busy is never woken needlessly.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use async_task::Runnable;

use crate::error::{Error, Result};

type RemoteCallback = Box<dyn FnOnce() + Send>;

pub(crate) struct Shared {
    remote: Mutex<Vec<RemoteCallback>>,
    runnables: Mutex<VecDeque<Runnable>>,
    pending: AtomicUsize,
    /// Executor jobs submitted and not yet finished or dropped.
    jobs: AtomicUsize,
    sleeping: AtomicBool,
    closed: AtomicBool,
    waker: mio::Waker,
    /// The loop's thread: the only one that may drop a task's future.
    owner: ThreadId,
}

impl Shared {
    pub(crate) fn new(waker: mio::Waker) -> Shared {
        Shared {
            remote: Mutex::new(Vec::new()),
            runnables: Mutex::new(VecDeque::new()),
            pending: AtomicUsize::new(0),
            jobs: AtomicUsize::new(0),
            sleeping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            waker,
            owner: std::thread::current().id(),
        }
    }

    pub(crate) fn set_sleeping(&self, s: bool) {
        self.sleeping.store(s, Ordering::SeqCst);
    }

    fn notify(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }

    /// Anything queued from any thread?
    pub(crate) fn has_work(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0
    }

    /// An executor job was submitted.
    pub(crate) fn job_started(&self) {
        self.jobs.fetch_add(1, Ordering::SeqCst);
    }

    /// An executor job finished (after waking its task) or was dropped.
    /// Wakes the loop: a virtual clock may now jump.
    pub(crate) fn job_done(&self) {
        self.jobs.fetch_sub(1, Ordering::SeqCst);
        self.notify();
    }

    /// Any executor job in flight?
    pub(crate) fn jobs_in_flight(&self) -> bool {
        self.jobs.load(Ordering::SeqCst) > 0
    }

    pub(crate) fn push_remote(&self, cb: RemoteCallback) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::LoopClosed);
        }
        self.remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cb);
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.notify();
        Ok(())
    }

    pub(crate) fn take_remote(&self) -> Vec<RemoteCallback> {
        let v = std::mem::take(&mut *self.remote.lock().unwrap_or_else(|e| e.into_inner()));
        if !v.is_empty() {
            self.pending.fetch_sub(v.len(), Ordering::SeqCst);
        }
        v
    }

    pub(crate) fn push_runnable(&self, r: Runnable) {
        if self.closed.load(Ordering::SeqCst) {
            // The loop is gone. Dropping a runnable drops its task's
            // future, which holds the loop thread's `Rc`s: on the loop's
            // thread that is right; on any other thread async-task would
            // panic inside a destructor and abort the process, so the
            // task is leaked instead.
            if std::thread::current().id() == self.owner {
                drop(r);
            } else {
                std::mem::forget(r);
            }
            return;
        }
        self.runnables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(r);
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.notify();
    }

    pub(crate) fn runnable_count(&self) -> usize {
        self.runnables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub(crate) fn pop_runnable(&self) -> Option<Runnable> {
        let r = self
            .runnables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        if r.is_some() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
        r
    }

    /// Refuse new work and drop what is queued.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let remote = std::mem::take(&mut *self.remote.lock().unwrap_or_else(|e| e.into_inner()));
        drop(remote);
        loop {
            let r = self
                .runnables
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            match r {
                Some(r) => drop(r),
                None => break,
            }
        }
        self.pending.store(0, Ordering::SeqCst);
    }
}

/// A `Send + Sync` handle for scheduling callbacks on a loop from any
/// thread (asyncio's `call_soon_threadsafe`). It wakes a sleeping loop.
///
/// ```
/// let lp = protoloop::EventLoop::new().unwrap();
/// let remote = lp.handle().remote();
/// let (tx, rx) = std::sync::mpsc::channel();
/// std::thread::spawn(move || {
///     remote
///         .call_soon_threadsafe(move || {
///             tx.send(7).unwrap();
///             protoloop::Handle::current().stop();
///         })
///         .unwrap();
/// });
/// lp.run_forever().unwrap();
/// assert_eq!(rx.recv().unwrap(), 7);
/// ```
#[derive(Clone)]
pub struct RemoteHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for RemoteHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RemoteHandle")
    }
}

impl RemoteHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> RemoteHandle {
        RemoteHandle { shared }
    }

    /// Run `callback` on the loop's thread soon. Fails with
    /// [`Error::LoopClosed`] once the loop is closed.
    pub fn call_soon_threadsafe<F: FnOnce() + Send + 'static>(&self, callback: F) -> Result<()> {
        self.shared.push_remote(Box::new(callback))
    }
}
