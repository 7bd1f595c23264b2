//! [`SettableFuture`]: asyncio's `Future`, the bridge from callbacks to
//! `async` code.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::event_loop::Handle;

/// Why a [`SettableFuture`] holds no value.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FutureError {
    /// [`SettableFuture::cancel`] was called.
    Cancelled,
    /// [`SettableFuture::set_exception`] was called with this error.
    Failed(Arc<dyn std::error::Error + Send + Sync>),
    /// The result was already taken by another awaiter.
    Taken,
}

impl fmt::Display for FutureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FutureError::Cancelled => f.write_str("future was cancelled"),
            FutureError::Failed(e) => write!(f, "{e}"),
            FutureError::Taken => f.write_str("future's result was already taken"),
        }
    }
}

impl std::error::Error for FutureError {}

enum State<T> {
    Pending,
    Done(Option<Result<T, FutureError>>),
}

struct Inner<T> {
    state: State<T>,
    wakers: Vec<Waker>,
    callbacks: Vec<Box<dyn FnOnce()>>,
    handle: Option<Handle>,
}

/// A future whose result is set by hand, from a callback: asyncio's
/// `Future`. A cheap `Clone`; `!Send`.
///
/// Awaiting it gives the result; the first awaiter takes the value, any
/// later one gets [`FutureError::Taken`]. Setting a result on a future that
/// is already done is refused (asyncio's `InvalidStateError`).
///
/// ```
/// let lp = protoloop::EventLoop::new().unwrap();
/// let h = lp.handle();
/// let fut = h.create_future::<u32>();
/// let setter = fut.clone();
/// h.call_soon(move || { setter.set_result(5).unwrap(); });
/// assert_eq!(lp.run_until_complete(fut).unwrap().unwrap(), 5);
/// ```
pub struct SettableFuture<T> {
    inner: Rc<RefCell<Inner<T>>>,
}

impl<T> Clone for SettableFuture<T> {
    fn clone(&self) -> Self {
        SettableFuture {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for SettableFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettableFuture")
            .field("done", &self.done())
            .field("cancelled", &self.cancelled())
            .finish()
    }
}

impl<T> Default for SettableFuture<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> SettableFuture<T> {
    /// A pending future not tied to a loop: done-callbacks run at once
    /// when it completes rather than being scheduled.
    pub fn new() -> Self {
        SettableFuture {
            inner: Rc::new(RefCell::new(Inner {
                state: State::Pending,
                wakers: Vec::new(),
                callbacks: Vec::new(),
                handle: None,
            })),
        }
    }

    fn complete(&self, value: Result<T, FutureError>) -> Result<(), Result<T, FutureError>> {
        let (wakers, callbacks, handle) = {
            let mut inner = self.inner.borrow_mut();
            if let State::Done(_) = inner.state {
                return Err(value);
            }
            inner.state = State::Done(Some(value));
            (
                std::mem::take(&mut inner.wakers),
                std::mem::take(&mut inner.callbacks),
                inner.handle.clone(),
            )
        };
        for w in wakers {
            w.wake();
        }
        for cb in callbacks {
            match &handle {
                Some(h) => {
                    h.call_soon(cb);
                }
                None => cb(),
            }
        }
        Ok(())
    }

    /// Set the result. Gives the value back if the future is already done.
    pub fn set_result(&self, value: T) -> Result<(), T> {
        self.complete(Ok(value)).map_err(|v| match v {
            Ok(v) => v,
            Err(_) => unreachable!("set_result passes Ok"),
        })
    }

    /// Fail the future with `error`. `false` if it is already done.
    pub fn set_exception<E: std::error::Error + Send + Sync + 'static>(&self, error: E) -> bool {
        self.complete(Err(FutureError::Failed(Arc::new(error))))
            .is_ok()
    }

    /// Cancel the future. `false` if it is already done.
    pub fn cancel(&self) -> bool {
        self.complete(Err(FutureError::Cancelled)).is_ok()
    }

    /// `true` once a result, an error or a cancellation is set.
    pub fn done(&self) -> bool {
        matches!(self.inner.borrow().state, State::Done(_))
    }

    /// `true` if cancelled.
    pub fn cancelled(&self) -> bool {
        matches!(
            self.inner.borrow().state,
            State::Done(Some(Err(FutureError::Cancelled)))
        )
    }

    /// Take the result without awaiting: `None` while pending.
    pub fn take_result(&self) -> Option<Result<T, FutureError>> {
        match &mut self.inner.borrow_mut().state {
            State::Pending => None,
            State::Done(v) => Some(v.take().unwrap_or(Err(FutureError::Taken))),
        }
    }

    /// Call `callback` when the future is done (on the loop, via
    /// `call_soon`, for a future from [`Handle::create_future`]); at once if
    /// it already is.
    pub fn add_done_callback(&self, callback: impl FnOnce() + 'static) {
        let handle = {
            let mut inner = self.inner.borrow_mut();
            if let State::Pending = inner.state {
                inner.callbacks.push(Box::new(callback));
                return;
            }
            inner.handle.clone()
        };
        match handle {
            Some(h) => {
                h.call_soon(callback);
            }
            None => callback(),
        }
    }
}

impl<T> Future for SettableFuture<T> {
    type Output = Result<T, FutureError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = self.inner.borrow_mut();
        match &mut inner.state {
            State::Done(v) => Poll::Ready(v.take().unwrap_or(Err(FutureError::Taken))),
            State::Pending => {
                if !inner.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    inner.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl Handle {
    /// A pending [`SettableFuture`] whose done-callbacks run on this loop.
    pub fn create_future<T>(&self) -> SettableFuture<T> {
        let f = SettableFuture::new();
        f.inner.borrow_mut().handle = Some(self.clone());
        f
    }
}
