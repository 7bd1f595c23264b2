//! `sleep` and `timeout` on the loop's clock.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::event_loop::Handle;
use crate::time::TimerHandle;

#[derive(Default)]
struct Shared {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// A future that completes at a deadline; see [`Handle::sleep`].
/// Dropping it cancels its timer.
pub struct Sleep {
    handle: Handle,
    deadline: Instant,
    timer: Option<TimerHandle>,
    shared: Rc<Shared>,
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Sleep {
    /// When it completes, on the loop's clock.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.fired.get() || self.handle.time() >= self.deadline {
            if let Some(t) = self.timer.take() {
                t.cancel();
            }
            return Poll::Ready(());
        }
        *self.shared.waker.borrow_mut() = Some(cx.waker().clone());
        if self.timer.is_none() {
            let shared = self.shared.clone();
            let t = self.handle.call_at(self.deadline, move || {
                shared.fired.set(true);
                if let Some(w) = shared.waker.borrow_mut().take() {
                    w.wake();
                }
            });
            self.timer = Some(t);
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(t) = self.timer.take() {
            t.cancel();
        }
    }
}

/// The future of [`Handle::timeout`]: the inner future's output, or
/// [`Error::Timeout`] if the deadline came first (the inner future is
/// dropped then).
pub struct Timeout<F> {
    future: Pin<Box<F>>,
    sleep: Sleep,
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("deadline", &self.sleep.deadline)
            .finish()
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(v) = self.future.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(&mut self.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Error::Timeout)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Handle {
    /// A future that completes after `duration` on this loop's clock.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        self.sleep_until(crate::time::after(self.time(), duration))
    }

    /// A future that completes at `deadline` on this loop's clock.
    pub fn sleep_until(&self, deadline: Instant) -> Sleep {
        Sleep {
            handle: self.clone(),
            deadline,
            timer: None,
            shared: Rc::new(Shared::default()),
        }
    }

    /// Run `future` for at most `duration`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let lp = protoloop::EventLoop::new_virtual().unwrap();
    /// let h = lp.handle();
    /// let r = lp.run_until_complete(async move {
    ///     h.timeout(Duration::from_secs(1), h.sleep(Duration::from_secs(5))).await
    /// });
    /// assert!(matches!(r.unwrap(), Err(protoloop::Error::Timeout)));
    /// ```
    pub fn timeout<F: Future>(&self, duration: Duration, future: F) -> Timeout<F> {
        Timeout {
            future: Box::pin(future),
            sleep: self.sleep(duration),
        }
    }
}

/// [`Handle::sleep`] on the loop running on this thread.
///
/// # Panics
///
/// If no loop is running on this thread.
pub fn sleep(duration: Duration) -> Sleep {
    Handle::current().sleep(duration)
}

/// [`Handle::timeout`] on the loop running on this thread.
///
/// # Panics
///
/// If no loop is running on this thread.
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Handle::current().timeout(duration, future)
}
