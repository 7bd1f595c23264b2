//! The local executor for `!Send` futures and the callback-to-future
//! bridge.
//!
//! - [`Handle::spawn`] (or [`spawn`]) runs a future on the loop and gives
//!   a [`JoinHandle`]. Dropping the handle detaches the task, as in tokio;
//!   [`JoinHandle::abort`] cancels it.
//! - [`SettableFuture`] is asyncio's `Future`: a value some callback sets
//!   and some task awaits.
//! - [`sleep`] and [`timeout`] run on the loop's clock, virtual or real.
//!
//! Tasks run between callbacks on the loop's thread, so a task may touch
//! the same `Rc<RefCell<..>>` state as protocols do, provided it never
//! holds a borrow across an `.await`.

use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::event_loop::{ExceptionKind, Handle, panic_message};

mod future;
mod sleep;
mod waiters;

pub use future::{FutureError, SettableFuture};
pub use sleep::{Sleep, Timeout, sleep, timeout};
pub(crate) use waiters::{Waiters, until};

/// Why a task produced no value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinError {
    /// The task was aborted, or its loop closed before it finished.
    Cancelled,
    /// The task panicked; the panic's message (also given to the loop's
    /// exception handler).
    Panic(Arc<str>),
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Cancelled => f.write_str("task was cancelled"),
            JoinError::Panic(m) => write!(f, "task panicked: {m}"),
        }
    }
}

impl std::error::Error for JoinError {}

/// A running task. Await it for the task's output; drop it to let the task
/// run on detached; [`abort`](JoinHandle::abort) to cancel it.
pub struct JoinHandle<T> {
    task: Option<async_task::Task<Result<T, Arc<str>>>>,
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> JoinHandle<T> {
    /// Cancel the task: it is dropped at its current `.await` and never
    /// polled again.
    pub fn abort(mut self) {
        drop(self.task.take());
    }

    /// `true` once the task has finished (or panicked).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.detach();
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(task) = self.task.as_mut() else {
            return Poll::Ready(Err(JoinError::Cancelled));
        };
        match task.poll_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.task = None;
                Poll::Ready(r.map_err(JoinError::Panic))
            }
        }
    }
}

trait PollUnpin: Future + Unpin {
    fn poll_unpin(&mut self, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(self).poll(cx)
    }
}
impl<F: Future + Unpin> PollUnpin for F {}

/// Catches a panic in the wrapped future's `poll`.
pub(crate) struct CatchUnwind<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> CatchUnwind<F> {
    pub(crate) fn new(f: F) -> Self {
        CatchUnwind { inner: Box::pin(f) }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(p) => Poll::Ready(Err(p)),
        }
    }
}

impl Handle {
    /// Run `future` on this loop; it starts on the next iteration.
    ///
    /// ```
    /// let lp = protoloop::EventLoop::new().unwrap();
    /// let h = lp.handle();
    /// let task = h.spawn(async { 1 + 1 });
    /// assert_eq!(lp.run_until_complete(task).unwrap(), Ok(2));
    /// ```
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let task = self.spawn_raw(async move {
            match CatchUnwind::new(future).await {
                Ok(v) => Ok(v),
                Err(p) => {
                    let msg: Arc<str> = panic_message(&*p).into();
                    if let Some(h) = Handle::try_current() {
                        h.report(ExceptionKind::TaskPanic, format!("a task panicked: {msg}"));
                    }
                    Err(msg)
                }
            }
        });
        JoinHandle { task: Some(task) }
    }

    /// Spawn without panic handling; dropping the task cancels it.
    pub(crate) fn spawn_raw<F>(&self, future: F) -> async_task::Task<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let shared = self.inner.shared.clone();
        let (runnable, task) = async_task::spawn_local(future, move |r| shared.push_runnable(r));
        runnable.schedule();
        task
    }
}

/// Spawn on the loop running on this thread; see [`Handle::spawn`].
///
/// # Panics
///
/// If no loop is running on this thread.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    Handle::current().spawn(future)
}
