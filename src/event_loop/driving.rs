//! Driving a loop step by step from a test: run until a condition holds,
//! run what is ready without blocking, and move a virtual clock timer by
//! timer.
//!
//! A virtual-clock loop ([`EventLoop::new_virtual`]) normally jumps to the
//! next timer by itself whenever it would otherwise wait ("auto-advance").
//! That suits tests that only use in-memory transports. A test that mixes
//! virtual time with real sockets, threads or processes has two choices:
//! make the loop sit idle for some real time before each jump
//! ([`Handle::set_auto_advance_after`], trio's "autojump threshold"), so
//! that what is in flight arrives first; or turn auto-advance off
//! ([`Handle::set_auto_advance`]): the loop then waits for I/O as usual and
//! time moves only through [`EventLoop::advance`] /
//! [`EventLoop::advance_to`].

use std::time::{Duration, Instant};

use super::{EventLoop, Handle};
use crate::error::{Error, Result};

/// Iterations [`EventLoop::run_until_idle`] runs before it decides a
/// callback or task reschedules itself forever.
const MAX_IDLE_ITERATIONS: usize = 200_000;
/// Timer deadlines [`EventLoop::advance_to`] steps through at most.
const MAX_TIMER_STEPS: usize = 1_000_000;

impl EventLoop {
    /// Run the loop until `cond` returns `true` (checked before the first
    /// iteration and after each one), or fail with [`Error::Timeout`] once
    /// `timeout` of *real* time has passed: the guard that keeps a test
    /// waiting on real sockets from hanging. Each iteration blocks only as
    /// a normal run would (on I/O, timers, other threads), never past the
    /// deadline. `cond` runs outside every callback, so it may look into
    /// protocols through their handles.
    ///
    /// On a virtual clock with auto-advance on, time jumps as usual
    /// whenever the loop would wait for a timer. `stop()` has no effect.
    ///
    /// Fails with [`Error::LoopRunning`] from inside the loop,
    /// [`Error::LoopClosed`] after `close`.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc, time::Duration};
    /// let lp = protoloop::EventLoop::new().unwrap();
    /// let done = Rc::new(Cell::new(false));
    /// let d = done.clone();
    /// lp.handle().call_later(Duration::from_millis(5), move || d.set(true));
    /// lp.run_until(Duration::from_secs(10), || done.get()).unwrap();
    /// assert!(matches!(
    ///     lp.run_until(Duration::from_millis(10), || false),
    ///     Err(protoloop::Error::Timeout)
    /// ));
    /// ```
    pub fn run_until(&self, timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
        let handle = self.handle();
        let _running = handle.enter()?;
        let deadline = Instant::now() + timeout;
        loop {
            if cond() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            handle
                .run_once(true, Some(left))
                .map_err(|e| Error::io("polling for events", e))?;
            // stop() is for run_forever; here it would only make the loop
            // spin.
            handle.inner.stopping.set(false);
        }
    }

    /// Run every callback, task, due timer and ready I/O event, and what
    /// they schedule in turn, until nothing is left to do *now*; then
    /// return. Never blocks and never moves a virtual clock. Works on a
    /// real-clock loop too (timers not yet due are left alone).
    ///
    /// "Idle" is about this instant: bytes still in flight on a real
    /// socket, an executor job that has not finished, or a callback another
    /// thread has yet to send are not waited for. `stop()` has no effect
    /// here.
    ///
    /// Fails with [`Error::LoopRunning`] when called from inside the loop,
    /// [`Error::LoopClosed`] after `close`.
    ///
    /// # Panics
    ///
    /// If the loop is still busy after 200,000 iterations: some callback
    /// or task reschedules itself forever.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    /// let lp = protoloop::EventLoop::new_virtual().unwrap();
    /// let h = lp.handle();
    /// let n = Rc::new(Cell::new(0));
    /// let n2 = n.clone();
    /// h.call_soon(move || {
    ///     n2.set(1);
    ///     let n3 = n2.clone();
    ///     protoloop::Handle::current().call_soon(move || n3.set(2));
    /// });
    /// lp.run_until_idle().unwrap();
    /// assert_eq!(n.get(), 2);
    /// ```
    pub fn run_until_idle(&self) -> Result<()> {
        let handle = self.handle();
        let _running = handle.enter()?;
        for _ in 0..MAX_IDLE_ITERATIONS {
            let worked = handle
                .run_once(false, None)
                .map_err(|e| Error::io("polling for events", e))?;
            if !worked {
                return Ok(());
            }
        }
        panic!(
            "run_until_idle: the loop was still busy after {MAX_IDLE_ITERATIONS} iterations; \
             a callback or task keeps rescheduling itself"
        );
    }

    /// Move a virtual clock forward by `by`, firing every timer that comes
    /// due on the way at its own deadline and in order; see
    /// [`advance_to`](Self::advance_to).
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc, time::Duration};
    /// let lp = protoloop::EventLoop::new_virtual().unwrap();
    /// let h = lp.handle();
    /// let fired = Rc::new(RefCell::new(Vec::new()));
    /// for s in [3, 1, 2] {
    ///     let f = fired.clone();
    ///     h.call_later(Duration::from_secs(s), move || f.borrow_mut().push(s));
    /// }
    /// lp.advance(Duration::from_secs(2)).unwrap();
    /// assert_eq!(*fired.borrow(), [1, 2]);
    /// lp.advance(Duration::from_secs(1)).unwrap();
    /// assert_eq!(*fired.borrow(), [1, 2, 3]);
    /// ```
    pub fn advance(&self, by: Duration) -> Result<()> {
        let to = crate::time::after(self.handle().time(), by);
        self.advance_to(to)
    }

    /// Move a virtual clock to `when`, stepping from timer to timer: the
    /// clock is set to each due timer's deadline before it fires, so a
    /// timer that schedules another with `call_later` measures from its own
    /// deadline, exactly as on a real clock. Work that becomes ready on the
    /// way runs ([`run_until_idle`](Self::run_until_idle) after each step
    /// and at `when`). A `when` in the past just runs until idle.
    ///
    /// Fails with [`Error::Unsupported`] on a real-clock loop, and as
    /// `run_until_idle` does.
    ///
    /// # Panics
    ///
    /// As `run_until_idle`, or after a million timer deadlines on the way
    /// (a timer that reschedules itself with no delay).
    pub fn advance_to(&self, when: Instant) -> Result<()> {
        let handle = self.handle();
        if !handle.is_virtual_time() {
            return Err(Error::Unsupported(
                "advancing time needs a virtual-clock loop (EventLoop::new_virtual)",
            ));
        }
        for _ in 0..MAX_TIMER_STEPS {
            self.run_until_idle()?;
            match handle.next_timer() {
                Some(t) if t <= when => handle.inner.clock.advance_to(t),
                _ => {
                    handle.inner.clock.advance_to(when);
                    return self.run_until_idle();
                }
            }
        }
        panic!("advance_to: more than {MAX_TIMER_STEPS} timer deadlines on the way");
    }
}

impl Handle {
    /// Turn a virtual clock's auto-advance on (the default) or off. With
    /// it off, the loop never moves time by itself: it waits for I/O and
    /// callbacks as a real-clock loop would, and time moves only through
    /// [`EventLoop::advance`], [`EventLoop::advance_to`] or
    /// [`Handle::advance_time`]. Use that when real sockets share the loop
    /// with virtual time. No effect on a real-clock loop.
    ///
    /// ```
    /// use std::time::Duration;
    /// let lp = protoloop::EventLoop::new_virtual().unwrap();
    /// let h = lp.handle();
    /// h.set_auto_advance(false);
    /// let t = h.call_later(Duration::from_secs(5), || {});
    /// lp.run_until_idle().unwrap();
    /// assert!(!t.cancelled() && h.next_timer().is_some(), "not fired: time stood still");
    /// lp.advance(Duration::from_secs(5)).unwrap();
    /// assert_eq!(h.next_timer(), None);
    /// ```
    pub fn set_auto_advance(&self, on: bool) {
        self.inner.auto_advance.set(on);
    }

    /// Make a virtual clock's auto-advance wait until the loop has been
    /// idle for `threshold` of *real* time before it jumps to the next
    /// timer (default zero: jump as soon as nothing is ready). With a
    /// threshold, a test can mix virtual time with real sockets, threads
    /// or child processes: a reply that arrives within the threshold is
    /// handled before any timeout fires, and a long timeout still costs
    /// only the threshold. This is trio's `MockClock.autojump_threshold`.
    /// No effect on a real-clock loop or with auto-advance off.
    ///
    /// ```
    /// use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
    /// use std::{cell::Cell, rc::Rc, time::Duration};
    /// let lp = protoloop::EventLoop::new_virtual().unwrap();
    /// let h = lp.handle();
    /// h.set_auto_advance_after(Duration::from_millis(200));
    /// let fired = Rc::new(Cell::new(false));
    /// let f = fired.clone();
    /// h.call_later(Duration::from_secs(60), move || f.set(true));
    /// // Another thread answers after 5 ms of real time...
    /// let arrived = Arc::new(AtomicBool::new(false));
    /// let (a, remote) = (arrived.clone(), h.remote());
    /// let t = std::thread::spawn(move || {
    ///     std::thread::sleep(Duration::from_millis(5));
    ///     remote.call_soon_threadsafe(move || a.store(true, Ordering::SeqCst)).unwrap();
    /// });
    /// lp.run_until(Duration::from_secs(10), || arrived.load(Ordering::SeqCst)).unwrap();
    /// // ... before the loop, idle for less than the threshold, jumped.
    /// assert!(!fired.get());
    /// // Idle for 200 ms of real time, the clock jumps the 60 s.
    /// lp.run_until(Duration::from_secs(10), || fired.get()).unwrap();
    /// t.join().unwrap();
    /// ```
    pub fn set_auto_advance_after(&self, threshold: Duration) {
        self.inner.auto_advance_after.set(threshold);
    }

    /// Whether a virtual clock jumps to the next timer when the loop is
    /// idle; see [`set_auto_advance`](Self::set_auto_advance).
    pub fn auto_advance(&self) -> bool {
        self.inner.auto_advance.get()
    }

    /// When the earliest pending (not cancelled) timer is due, if any.
    ///
    /// ```
    /// use std::time::Duration;
    /// let lp = protoloop::EventLoop::new_virtual().unwrap();
    /// let h = lp.handle();
    /// assert_eq!(h.next_timer(), None);
    /// let t = h.call_later(Duration::from_secs(1), || {});
    /// assert_eq!(h.next_timer(), Some(t.when()));
    /// t.cancel();
    /// assert_eq!(h.next_timer(), None);
    /// ```
    pub fn next_timer(&self) -> Option<Instant> {
        self.inner.timers.borrow_mut().next_deadline()
    }
}
