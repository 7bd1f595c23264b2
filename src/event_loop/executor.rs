//! The executor for blocking work: a small thread pool owned by the loop
//! (asyncio's default `ThreadPoolExecutor`). Threads start on demand up to
//! a limit and leave after a while without work; a job's result comes back
//! to the loop through a future whose waker is safe to fire from any thread.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::{Handle, panic_message};
use crate::error::{Error, Result};

/// At most this many executor threads per loop.
const MAX_THREADS: usize = 8;
/// An idle thread leaves after this long.
const IDLE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

struct State {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
    shutdown: bool,
}

struct PoolShared {
    state: Mutex<State>,
    cv: Condvar,
}

pub(crate) struct Pool {
    shared: Arc<PoolShared>,
}

impl Pool {
    fn new() -> Pool {
        Pool {
            shared: Arc::new(PoolShared {
                state: Mutex::new(State {
                    jobs: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                    shutdown: false,
                }),
                cv: Condvar::new(),
            }),
        }
    }

    fn submit(&self, job: Job) -> Result<()> {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.jobs.push_back(job);
        // An idle thread that was notified stays counted as idle until it
        // wakes: compare with the queue, not with zero, or back-to-back
        // jobs share one thread while the pool could grow.
        if st.jobs.len() > st.idle && st.threads < MAX_THREADS {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("protoloop-executor".into())
                .spawn(move || worker(shared));
            match spawned {
                Ok(_) => st.threads += 1,
                Err(e) if st.threads == 0 => {
                    st.jobs.pop_back();
                    return Err(Error::io("starting an executor thread", e));
                }
                Err(_) => {} // the running threads will get to it
            }
        } else {
            self.shared.cv.notify_one();
        }
        Ok(())
    }

    pub(crate) fn shutdown(&self) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.shutdown = true;
        st.jobs.clear();
        self.shared.cv.notify_all();
    }
}

fn worker(shared: Arc<PoolShared>) {
    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if st.shutdown {
            break;
        }
        if let Some(job) = st.jobs.pop_front() {
            drop(st);
            job();
            st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        st.idle += 1;
        let (guard, res) = shared
            .cv
            .wait_timeout(st, IDLE)
            .unwrap_or_else(|e| e.into_inner());
        st = guard;
        st.idle -= 1;
        if res.timed_out() && st.jobs.is_empty() {
            break;
        }
    }
    st.threads -= 1;
}

struct Slot<T> {
    value: Option<Result<T>>,
    waker: Option<Waker>,
}

/// The result of [`Handle::run_in_executor`]: resolves to the closure's
/// return value, or [`Error::ExecutorPanic`] if it panicked.
pub struct ExecutorFuture<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

impl<T> Future for ExecutorFuture<T> {
    type Output = Result<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let mut s = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Handle {
    /// Run a blocking closure on the loop's thread pool; the returned
    /// future resolves to its result. The pool starts threads on demand
    /// (at most 8 per loop).
    ///
    /// ```
    /// let lp = protoloop::EventLoop::new().unwrap();
    /// let h = lp.handle();
    /// let n = lp
    ///     .run_until_complete(async move { h.run_in_executor(|| 6 * 7).await })
    ///     .unwrap()
    ///     .unwrap();
    /// assert_eq!(n, 42);
    /// ```
    pub fn run_in_executor<T, F>(&self, f: F) -> ExecutorFuture<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let slot = Arc::new(Mutex::new(Slot {
            value: None,
            waker: None,
        }));
        let s = slot.clone();
        // Counts the job as in flight until it has run (or is dropped
        // unrun), so a virtual clock does not jump past it.
        struct InFlight(Arc<super::Shared>);
        impl Drop for InFlight {
            fn drop(&mut self) {
                self.0.job_done();
            }
        }
        self.inner.shared.job_started();
        let in_flight = InFlight(self.inner.shared.clone());
        let job: Job = Box::new(move || {
            let _in_flight = in_flight;
            let r = panic::catch_unwind(AssertUnwindSafe(f))
                .map_err(|p| Error::ExecutorPanic(panic_message(&*p).into()));
            let waker = {
                let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
                s.value = Some(r);
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        });
        let submitted = if self.inner.closed.get() {
            Err(Error::LoopClosed)
        } else {
            self.inner
                .executor
                .borrow_mut()
                .get_or_insert_with(Pool::new)
                .submit(job)
        };
        if let Err(e) = submitted {
            slot.lock().unwrap_or_else(|e| e.into_inner()).value = Some(Err(e));
        }
        ExecutorFuture { slot }
    }
}
