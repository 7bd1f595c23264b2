//! The event loop: [`EventLoop`] runs it, [`Handle`] schedules work on it
//! from the loop's own thread, and [`RemoteHandle`] from any thread.
//!
//! # One iteration, in order
//!
//! 1. Compute the poll timeout: zero if callbacks or tasks are ready or the
//!    loop is stopping, otherwise until the next timer (none: block).
//! 2. Poll mio and dispatch I/O readiness to transports and watchers.
//! 3. Move callbacks sent from other threads to the ready queue.
//! 4. With a virtual clock and nothing else to do (no callback, task or
//!    executor job pending; auto-advance on), jump to the next timer.
//! 5. Move due timers to the ready queue, in `(deadline, seq)` order.
//! 6. Run the callbacks that were ready when this step began (FIFO);
//!    callbacks they schedule wait for the next iteration.
//! 7. Run the tasks woken so far.
//! 8. Run the end-of-iteration hooks registered so far (crate-internal:
//!    writes batched during the iteration are flushed here, so that what
//!    many tasks wrote in one iteration leaves in one system call).
//! 9. If `stop()` was called, leave `run_forever`.
//!
//! # Panics and errors
//!
//! A panic in a callback, a task or a protocol callback is caught; the
//! loop's exception handler (see [`Handle::set_exception_handler`]) is
//! told, and the loop goes on. The default handler prints one line to
//! stderr.
//!
//! # Threads
//!
//! A loop belongs to the thread that made it: [`Handle`] is `!Send`. One
//! loop may run per thread at a time; any number of loops may exist in one
//! process (tests run them on parallel threads). There is no global state.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{self, AssertUnwindSafe, Location};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::reactor::{Reactor, WAKER_TOKEN};
use crate::time::{CallbackHandle, Clock, Entry, TimerHandle, Timers, until};

#[cfg(test)]
mod at_end_tests;
mod driving;
mod executor;
mod fd;
mod read_buf;
mod remote;
mod signals;

pub use executor::ExecutorFuture;
pub(crate) use read_buf::ReadBuf;
pub use remote::RemoteHandle;
pub(crate) use remote::Shared;

/// Size of the loop's shared read buffer (asyncio reads up to 256 KiB).
pub(crate) const READ_BUFFER_SIZE: usize = 256 * 1024;

/// Default threshold for slow-callback reports in debug mode.
pub const DEFAULT_SLOW_CALLBACK: Duration = Duration::from_millis(100);

thread_local! {
    static CURRENT: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// What went wrong, as told to the exception handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExceptionKind {
    /// A `call_soon`/`call_later` callback panicked.
    CallbackPanic,
    /// A spawned task panicked.
    TaskPanic,
    /// A protocol callback panicked; its connection was aborted.
    ProtocolPanic,
    /// An I/O watcher, signal handler or other loop-internal callback
    /// panicked.
    HandlerPanic,
    /// Debug mode: a callback ran longer than the slow-callback threshold.
    SlowCallback,
    /// An error with no caller to return it to (e.g. `accept` failed).
    Error,
}

/// What the exception handler is told.
#[derive(Debug, Clone)]
pub struct ExceptionContext {
    /// The kind of problem.
    pub kind: ExceptionKind,
    /// One line saying what happened.
    pub message: String,
}

impl fmt::Display for ExceptionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protoloop: {:?}: {}", self.kind, self.message)
    }
}

type ExceptionHandler = Rc<dyn Fn(&ExceptionContext)>;

pub(crate) struct Inner {
    pub(crate) reactor: Reactor,
    ready: RefCell<VecDeque<Rc<Entry>>>,
    /// Run at the end of the current iteration (see the module docs).
    at_end: RefCell<Vec<Box<dyn FnOnce()>>>,
    timers: RefCell<Timers>,
    clock: Clock,
    seq: Cell<u64>,
    stopping: Cell<bool>,
    running: Cell<bool>,
    closed: Cell<bool>,
    auto_advance: Cell<bool>,
    /// Real time the loop must sit idle before a virtual clock jumps.
    auto_advance_after: Cell<Duration>,
    pub(crate) shared: Arc<Shared>,
    exception_handler: RefCell<Option<ExceptionHandler>>,
    slow_callback: Cell<Option<Duration>>,
    read_buf: RefCell<ReadBuf>,
    executor: RefCell<Option<executor::Pool>>,
    signals: RefCell<Option<Rc<signals::SignalWatcher>>>,
    fds: RefCell<fd::FdTable>,
}

/// A cheap, cloneable reference to a loop, for use on the loop's thread.
///
/// Everything that schedules work takes `&self`.
#[derive(Clone)]
pub struct Handle {
    pub(crate) inner: Rc<Inner>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("running", &self.inner.running.get())
            .field("closed", &self.inner.closed.get())
            .finish()
    }
}

/// An event loop. Make one per thread, run it, and drop or
/// [`close`](EventLoop::close) it when done.
///
/// ```
/// use std::time::Duration;
/// use protoloop::EventLoop;
///
/// let lp = EventLoop::new().unwrap();
/// let h = lp.handle();
/// let answer = lp
///     .run_until_complete(async move {
///         h.sleep(Duration::from_millis(1)).await;
///         42
///     })
///     .unwrap();
/// assert_eq!(answer, 42);
/// ```
pub struct EventLoop {
    handle: Handle,
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.handle.fmt(f)
    }
}

impl EventLoop {
    /// A new loop on the real clock.
    pub fn new() -> io::Result<EventLoop> {
        Self::with_clock(Clock::Real)
    }

    /// A new loop on a virtual clock, for tests: time stands still until
    /// [`Handle::advance_time`] moves it, or until the loop has nothing to
    /// do but wait for a timer, when it jumps straight to that timer. No
    /// test sleeps.
    ///
    /// ```
    /// use std::time::Duration;
    /// let lp = protoloop::EventLoop::new_virtual().unwrap();
    /// let h = lp.handle();
    /// let start = h.time();
    /// lp.run_until_complete(async move { h.sleep(Duration::from_secs(3600)).await }).unwrap();
    /// assert!(lp.handle().time() - start >= Duration::from_secs(3600));
    /// ```
    pub fn new_virtual() -> io::Result<EventLoop> {
        Self::with_clock(Clock::Virtual(Rc::new(Cell::new(Instant::now()))))
    }

    fn with_clock(clock: Clock) -> io::Result<EventLoop> {
        let reactor = Reactor::new()?;
        let waker = mio::Waker::new(reactor.registry(), WAKER_TOKEN)?;
        let inner = Rc::new(Inner {
            reactor,
            ready: RefCell::new(VecDeque::new()),
            at_end: RefCell::new(Vec::new()),
            timers: RefCell::new(Timers::default()),
            clock,
            seq: Cell::new(0),
            stopping: Cell::new(false),
            running: Cell::new(false),
            closed: Cell::new(false),
            auto_advance: Cell::new(true),
            auto_advance_after: Cell::new(Duration::ZERO),
            shared: Arc::new(Shared::new(waker)),
            exception_handler: RefCell::new(None),
            slow_callback: Cell::new(None),
            read_buf: RefCell::new(ReadBuf::default()),
            executor: RefCell::new(None),
            signals: RefCell::new(None),
            fds: RefCell::new(fd::FdTable::default()),
        });
        Ok(EventLoop {
            handle: Handle { inner },
        })
    }

    /// A handle to schedule work on this loop.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Run until [`Handle::stop`] is called.
    ///
    /// Fails with [`Error::LoopRunning`] if a loop is already running on
    /// this thread, [`Error::LoopClosed`] after `close`.
    pub fn run_forever(&self) -> Result<()> {
        self.handle.run_forever()
    }

    /// Ask the loop to stop after the current iteration; the same as
    /// [`Handle::stop`]. Called before `run_forever`, it makes the next
    /// run do one iteration and return, as asyncio's `loop.stop()` does.
    ///
    /// ```
    /// let lp = protoloop::EventLoop::new().unwrap();
    /// lp.stop();
    /// lp.run_forever().unwrap(); // one iteration, then back here
    /// ```
    pub fn stop(&self) {
        self.handle.stop()
    }

    /// Run `future` to completion on the loop and return its output.
    ///
    /// Fails with [`Error::StoppedBeforeComplete`] if `stop()` is called
    /// before the future is done (the future is dropped then). A panic
    /// inside the future is resumed here, so an `assert!` in a test's
    /// future fails the test.
    pub fn run_until_complete<F>(&self, future: F) -> Result<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.handle.run_until_complete(future)
    }

    /// Close the loop: drop every pending callback, timer, task and
    /// registered source, and shut the executor down (running jobs finish
    /// on their threads; their results are dropped). Idempotent. Fails with
    /// [`Error::LoopRunning`] while running.
    ///
    /// Open connections are closed (their peers see EOF, or a reset if
    /// input was unread) and their protocols dropped, without
    /// `connection_lost`: no callback runs on a closed loop. Dropping the
    /// loop closes it.
    ///
    /// A task whose waker is held elsewhere is dropped when that waker is
    /// woken or dropped on this thread; if it is woken from another
    /// thread the task is leaked, since its `!Send` state must not be
    /// dropped there.
    pub fn close(&self) -> Result<()> {
        self.handle.close()
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        if !self.handle.inner.running.get() {
            let _ = self.handle.close();
        }
    }
}

impl Handle {
    /// The loop running on this thread.
    ///
    /// # Panics
    ///
    /// If no loop is running on this thread (like asyncio's
    /// `get_running_loop`). Use [`Handle::try_current`] to check.
    pub fn current() -> Handle {
        Self::try_current().expect("no protoloop event loop is running on this thread")
    }

    /// The loop running on this thread, if any.
    pub fn try_current() -> Option<Handle> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// A `Send` handle for scheduling from other threads.
    pub fn remote(&self) -> RemoteHandle {
        RemoteHandle::new(self.inner.shared.clone())
    }

    /// The loop's current time (virtual on a virtual-clock loop).
    pub fn time(&self) -> Instant {
        self.inner.clock.now()
    }

    /// `true` if this loop runs on a virtual clock.
    pub fn is_virtual_time(&self) -> bool {
        self.inner.clock.is_virtual()
    }

    /// Move a virtual clock forward by `by`; timers that come due fire on
    /// the next iteration. No effect on a real-clock loop.
    pub fn advance_time(&self, by: Duration) {
        let now = self.inner.clock.now();
        self.inner.clock.advance_to(crate::time::after(now, by));
    }

    /// `true` while `run_forever`/`run_until_complete` is on the stack.
    pub fn is_running(&self) -> bool {
        self.inner.running.get()
    }

    /// `true` after `close`.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.get()
    }

    /// Ask the loop to stop after the current iteration.
    pub fn stop(&self) {
        self.inner.stopping.set(true);
    }

    fn next_seq(&self) -> u64 {
        let s = self.inner.seq.get();
        self.inner.seq.set(s + 1);
        s
    }

    /// Run `callback` on a later iteration, after the callbacks already
    /// scheduled (FIFO).
    ///
    /// On a closed loop nothing will ever run: the callback is dropped at
    /// once and the handle comes back cancelled (asyncio raises
    /// `RuntimeError` here). Keeping it would keep whatever it holds alive
    /// for as long as the loop's memory.
    #[track_caller]
    pub fn call_soon<F: FnOnce() + 'static>(&self, callback: F) -> CallbackHandle {
        let entry = Entry::new(
            Box::new(callback),
            self.time(),
            self.next_seq(),
            Location::caller(),
            std::any::type_name::<F>(),
        );
        let handle = CallbackHandle(entry.clone());
        if self.inner.closed.get() {
            handle.cancel();
        } else {
            self.inner.ready.borrow_mut().push_back(entry);
        }
        handle
    }

    /// Run `hook` at the end of the current iteration, after the ready
    /// callbacks and the woken tasks; outside `run_once`, at the end of the
    /// next one. Unlike `call_soon` it costs no extra poll: it is for
    /// flushing what the iteration's callbacks and tasks batched up.
    /// Dropped at once on a closed loop, as `call_soon` does.
    pub(crate) fn at_iteration_end(&self, hook: Box<dyn FnOnce()>) {
        if !self.inner.closed.get() {
            self.inner.at_end.borrow_mut().push(hook);
        }
    }

    /// Run `callback` once `delay` has passed. Delays are capped at about
    /// a century, so `Duration::MAX` means "never" instead of overflowing
    /// (the same holds for `sleep`, `timeout` and `advance_time`).
    #[track_caller]
    pub fn call_later<F: FnOnce() + 'static>(&self, delay: Duration, callback: F) -> TimerHandle {
        let when = crate::time::after(self.time(), delay);
        self.call_at(when, callback)
    }

    /// Run `callback` at `when`, on the loop's clock. On a closed loop the
    /// handle comes back cancelled, as for [`call_soon`](Self::call_soon).
    #[track_caller]
    pub fn call_at<F: FnOnce() + 'static>(&self, when: Instant, callback: F) -> TimerHandle {
        let entry = Entry::new(
            Box::new(callback),
            when,
            self.next_seq(),
            Location::caller(),
            std::any::type_name::<F>(),
        );
        let handle = TimerHandle(entry.clone());
        if self.inner.closed.get() {
            handle.cancel();
        } else {
            self.inner.timers.borrow_mut().push(entry);
        }
        handle
    }

    /// Replace the exception handler (see [`ExceptionContext`]). The
    /// default prints one line to stderr.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// let lp = protoloop::EventLoop::new().unwrap();
    /// let seen = Rc::new(RefCell::new(Vec::new()));
    /// let s = seen.clone();
    /// lp.handle().set_exception_handler(move |ctx| s.borrow_mut().push(ctx.kind));
    /// let h = lp.handle();
    /// h.call_soon(|| panic!("boom"));
    /// h.call_soon({ let h = h.clone(); move || h.stop() });
    /// lp.run_forever().unwrap();
    /// assert_eq!(seen.borrow()[0], protoloop::ExceptionKind::CallbackPanic);
    /// ```
    pub fn set_exception_handler(&self, handler: impl Fn(&ExceptionContext) + 'static) {
        *self.inner.exception_handler.borrow_mut() = Some(Rc::new(handler));
    }

    /// Go back to the default exception handler.
    pub fn reset_exception_handler(&self) {
        *self.inner.exception_handler.borrow_mut() = None;
    }

    /// Tell the exception handler about a problem.
    pub fn report(&self, kind: ExceptionKind, message: impl Into<String>) {
        let ctx = ExceptionContext {
            kind,
            message: message.into(),
        };
        let handler = self.inner.exception_handler.borrow().clone();
        match handler {
            Some(h) => {
                if panic::catch_unwind(AssertUnwindSafe(|| h(&ctx))).is_err() {
                    eprintln!("{ctx} (and the exception handler panicked)");
                }
            }
            None => eprintln!("{ctx}"),
        }
    }

    /// Debug mode: report callbacks slower than `threshold` (`None` turns
    /// it off). [`DEFAULT_SLOW_CALLBACK`] is asyncio's 100 ms.
    pub fn set_debug(&self, threshold: Option<Duration>) {
        self.inner.slow_callback.set(threshold);
    }

    /// The slow-callback threshold, if debug mode is on.
    pub fn debug(&self) -> Option<Duration> {
        self.inner.slow_callback.get()
    }

    /// Run `f`, catching a panic and reporting it as `kind`; `None` if it
    /// panicked. `what` says what was running.
    pub(crate) fn guard<R>(
        &self,
        kind: ExceptionKind,
        what: &dyn Fn() -> String,
        f: impl FnOnce() -> R,
    ) -> Option<R> {
        self.guard_with(kind, what, f).ok()
    }

    /// Like `guard`, but gives the panic message back.
    ///
    /// Inlined, with the rare paths out of line: it wraps every protocol
    /// callback, so its cost is paid on every read.
    #[inline]
    pub(crate) fn guard_with<R>(
        &self,
        kind: ExceptionKind,
        what: &dyn Fn() -> String,
        f: impl FnOnce() -> R,
    ) -> std::result::Result<R, Arc<str>> {
        let start = self.inner.slow_callback.get().map(|_| Instant::now());
        let r = panic::catch_unwind(AssertUnwindSafe(f));
        if let Some(start) = start {
            self.check_slow(start, what);
        }
        r.map_err(|payload| self.report_panic(kind, what, payload))
    }

    /// Debug mode: report a callback that ran longer than the threshold.
    #[cold]
    fn check_slow(&self, start: Instant, what: &dyn Fn() -> String) {
        let Some(limit) = self.inner.slow_callback.get() else {
            return;
        };
        let took = start.elapsed();
        if took > limit {
            self.report(
                ExceptionKind::SlowCallback,
                format!("executing {} took {:.3} s", what(), took.as_secs_f64()),
            );
        }
    }

    /// Report a caught panic as `kind`; returns its message.
    #[cold]
    fn report_panic(
        &self,
        kind: ExceptionKind,
        what: &dyn Fn() -> String,
        payload: Box<dyn std::any::Any + Send>,
    ) -> Arc<str> {
        let msg: Arc<str> = panic_message(&*payload).into();
        self.report(kind, format!("{} panicked: {msg}", what()));
        msg
    }

    /// Make this loop the running one on this thread until the guard
    /// drops. Fails if it is closed or a loop is already running here.
    pub(crate) fn enter(&self) -> Result<Running<'_>> {
        let inner = &self.inner;
        if inner.closed.get() {
            return Err(Error::LoopClosed);
        }
        if inner.running.get() || Self::try_current().is_some() {
            return Err(Error::LoopRunning);
        }
        inner.running.set(true);
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        Ok(Running(self))
    }

    fn run_forever(&self) -> Result<()> {
        let _running = self.enter()?;
        loop {
            self.run_once(true, None)
                .map_err(|e| Error::io("polling for events", e))?;
            if self.inner.stopping.get() {
                break;
            }
        }
        Ok(())
    }

    /// One iteration (see the module docs). With `wait` false it polls
    /// without blocking and never moves a virtual clock; `cap` bounds how
    /// long it may block. Returns `true` if it did anything: dispatched
    /// I/O, ran a callback or a task.
    pub(crate) fn run_once(&self, wait: bool, cap: Option<Duration>) -> io::Result<bool> {
        let inner = &self.inner;
        let virtual_clock = inner.clock.is_virtual();
        let busy = |inner: &Inner| {
            inner.stopping.get()
                || !inner.ready.borrow().is_empty()
                || !inner.at_end.borrow().is_empty()
                || inner.shared.has_work()
        };
        // A virtual clock jumps to the next timer only when nothing else
        // can happen first: no work queued, no executor job in flight
        // (its result would come "later" than a jump), auto-advance on.
        let may_jump = |inner: &Inner| {
            wait && inner.auto_advance.get() && !busy(inner) && !inner.shared.jobs_in_flight()
        };
        let next = inner.timers.borrow_mut().next_deadline();
        inner.shared.set_sleeping(true);
        let timeout = if !wait || busy(inner) {
            Some(Duration::ZERO)
        } else {
            match next {
                None => None,
                Some(t) if !virtual_clock => Some(round_up_ms(until(t, inner.clock.now()))),
                Some(t) if t <= inner.clock.now() => Some(Duration::ZERO),
                // Before a jump, give real I/O and other threads the
                // grace the test asked for (none by default).
                Some(_) if may_jump(inner) => Some(inner.auto_advance_after.get()),
                // Virtual time only moves when the test (or a jump) moves
                // it: wait for I/O, a job's result or another thread.
                Some(_) => None,
            }
        };
        let timeout = match (timeout, cap) {
            (Some(t), Some(c)) => Some(t.min(c)),
            (None, c) => c,
            (t, None) => t,
        };
        let polled = inner.reactor.poll(timeout);
        inner.shared.set_sleeping(false);
        let n = polled?;
        if n > 0 {
            inner.reactor.dispatch();
        }
        // Two mutexes and a clock read per iteration were a tenth of the
        // loop's own user time in an echo server: skip them when the
        // atomic counter says no other thread queued anything and there
        // is no timer. (A push counts itself after it is queued, then
        // wakes a sleeping loop, so work missed here is seen next time.)
        let remote_work = inner.shared.has_work();
        if remote_work {
            for cb in inner.shared.take_remote() {
                self.call_soon(cb);
            }
        }
        if virtual_clock && n == 0 && may_jump(inner) {
            if let Some(t) = inner.timers.borrow_mut().next_deadline() {
                inner.clock.advance_to(t);
            }
        }
        if inner.timers.borrow().len() > 0 {
            let mut due = Vec::new();
            inner
                .timers
                .borrow_mut()
                .pop_due(inner.clock.now(), &mut due);
            inner.ready.borrow_mut().extend(due);
        }

        let ntodo = inner.ready.borrow().len();
        for _ in 0..ntodo {
            let entry = inner.ready.borrow_mut().pop_front();
            let Some(entry) = entry else { break };
            if let Some(cb) = entry.take() {
                self.guard(ExceptionKind::CallbackPanic, &|| entry.describe(), cb);
            }
        }
        // Tasks woken by the callbacks above counted themselves too.
        let ntasks = if inner.shared.has_work() {
            inner.shared.runnable_count()
        } else {
            0
        };
        for _ in 0..ntasks {
            match inner.shared.pop_runnable() {
                Some(r) => {
                    // Tasks catch their own panics (see task.rs); this is
                    // the last line of defence.
                    self.guard(ExceptionKind::TaskPanic, &|| "a task".to_string(), || {
                        r.run()
                    });
                }
                None => break,
            }
        }
        // Hooks that these hooks register run at the end of the next
        // iteration, which then does not block.
        let nhooks = inner.at_end.borrow().len();
        if nhooks > 0 {
            let hooks = std::mem::take(&mut *inner.at_end.borrow_mut());
            for hook in hooks {
                self.guard(
                    ExceptionKind::CallbackPanic,
                    &|| "an end-of-iteration hook".to_string(),
                    hook,
                );
            }
        }
        Ok(n > 0 || ntodo > 0 || ntasks > 0 || nhooks > 0)
    }

    fn run_until_complete<F>(&self, future: F) -> Result<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let slot: Rc<RefCell<Option<std::thread::Result<F::Output>>>> = Rc::new(RefCell::new(None));
        let s = slot.clone();
        let h = self.clone();
        let task = self.spawn_raw(async move {
            let out = crate::task::CatchUnwind::new(future).await;
            *s.borrow_mut() = Some(out);
            h.stop();
        });
        let r = self.run_forever();
        let out = slot.borrow_mut().take();
        drop(task);
        r?;
        match out {
            Some(Ok(v)) => Ok(v),
            Some(Err(payload)) => panic::resume_unwind(payload),
            None => Err(Error::StoppedBeforeComplete),
        }
    }

    fn close(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.running.get() {
            return Err(Error::LoopRunning);
        }
        if inner.closed.replace(true) {
            return Ok(());
        }
        if let Some(sig) = inner.signals.borrow_mut().take() {
            sig.close(self);
        }
        inner.fds.borrow_mut().clear();
        // Drop what holds references back to the loop, in an order that
        // lets destructors still reach it.
        let ready = std::mem::take(&mut *inner.ready.borrow_mut());
        drop(ready);
        let hooks = std::mem::take(&mut *inner.at_end.borrow_mut());
        drop(hooks);
        inner.timers.borrow_mut().clear();
        inner.shared.close();
        inner.reactor.clear();
        if let Some(pool) = inner.executor.borrow_mut().take() {
            pool.shutdown();
        }
        Ok(())
    }

    /// Counts of what the loop holds, for tests and leak checks.
    pub fn stats(&self) -> LoopStats {
        LoopStats {
            ready: self.inner.ready.borrow().len(),
            timers: self.inner.timers.borrow().len(),
            sources: self.inner.reactor.len(),
        }
    }
}

/// The loop is running on this thread while this lives (see
/// [`Handle::enter`]).
pub(crate) struct Running<'a>(&'a Handle);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.inner.running.set(false);
        self.0.inner.stopping.set(false);
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

/// What a loop holds; see [`Handle::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopStats {
    /// Callbacks waiting in the ready queue.
    pub ready: usize,
    /// Timers in the heap (cancelled ones not yet dropped included).
    pub timers: usize,
    /// Registered I/O sources. An in-memory end
    /// ([`testing::pair`](crate::testing::pair)) counts as one while its
    /// connection is open: it is told when the loop closes, as a socket
    /// is.
    pub sources: usize,
}

/// Round a timeout up to whole milliseconds so a timer is never polled
/// for just before it is due (epoll's resolution is 1 ms).
fn round_up_ms(d: Duration) -> Duration {
    let ms = d.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(ms.min(u64::MAX as u128) as u64)
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
