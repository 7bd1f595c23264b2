//! [`Waiters`] and [`until`]: tasks waiting for a change in state that
//! callbacks update, kept in a `RefCell` (the output a subprocess's
//! protocol collects, for example).

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// The tasks waiting on one piece of state; woken together when it
/// changes.
#[derive(Default)]
pub(crate) struct Waiters(Vec<Waker>);

impl Waiters {
    /// Wake every waiting task (each polls again and re-registers if it
    /// still waits).
    pub(crate) fn wake_all(&mut self) {
        for w in self.0.drain(..) {
            w.wake();
        }
    }

    /// How many wakers are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// Wait until `f` gives a value; re-checked each time the state's
/// [`Waiters`] (found by `waiters`) are woken.
pub(crate) async fn until<S, T>(
    state: &RefCell<S>,
    waiters: fn(&mut S) -> &mut Waiters,
    mut f: impl FnMut(&mut S) -> Option<T>,
) -> T {
    poll_fn(|cx| {
        let mut s = state.borrow_mut();
        match f(&mut s) {
            Some(v) => Poll::Ready(v),
            None => {
                // Once per task: a task that polls again without a change
                // in between (a read under a timeout, in a loop) would
                // otherwise add a waker each time.
                let w = &mut waiters(&mut s).0;
                if !w.iter().any(|w| w.will_wake(cx.waker())) {
                    w.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    })
    .await
}
