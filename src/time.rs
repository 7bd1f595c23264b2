//! Time: the loop's clock (real, or virtual for tests) and the timer heap
//! ordered by `(deadline, seq)`, with lazy cancellation.
//!
//! Timers scheduled for the same instant fire in the order they were
//! scheduled (`seq` breaks ties). A cancelled timer stays in the heap until
//! it reaches the top or until cancelled entries outnumber live ones, when
//! the heap is rebuilt (asyncio does the same).

use std::cell::{Cell, RefCell};
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;
use std::panic::Location;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The loop's clock. `Real` reads `Instant::now()`; `Virtual` only moves
/// when told to, or when the loop is idle and jumps to the next timer.
#[derive(Clone, Debug)]
pub(crate) enum Clock {
    Real,
    Virtual(Rc<Cell<Instant>>),
}

impl Clock {
    pub(crate) fn now(&self) -> Instant {
        match self {
            Clock::Real => Instant::now(),
            Clock::Virtual(t) => t.get(),
        }
    }

    pub(crate) fn is_virtual(&self) -> bool {
        matches!(self, Clock::Virtual(_))
    }

    /// Move a virtual clock forward to `to` (never backwards).
    pub(crate) fn advance_to(&self, to: Instant) {
        if let Clock::Virtual(t) = self
            && to > t.get()
        {
            t.set(to);
        }
    }
}

/// One scheduled callback: the body of both [`CallbackHandle`] and
/// [`TimerHandle`].
pub(crate) struct Entry {
    pub(crate) callback: RefCell<Option<Box<dyn FnOnce()>>>,
    pub(crate) cancelled: Cell<bool>,
    pub(crate) when: Instant,
    pub(crate) seq: u64,
    pub(crate) origin: &'static Location<'static>,
    pub(crate) name: &'static str,
    /// While the entry sits in a timer heap: that heap's count of
    /// cancelled entries, which a cancel bumps (see [`Timers`]).
    heap: Cell<Option<Rc<Cell<usize>>>>,
}

impl Entry {
    pub(crate) fn new(
        callback: Box<dyn FnOnce()>,
        when: Instant,
        seq: u64,
        origin: &'static Location<'static>,
        name: &'static str,
    ) -> Rc<Entry> {
        Rc::new(Entry {
            callback: RefCell::new(Some(callback)),
            cancelled: Cell::new(false),
            when,
            seq,
            origin,
            name,
            heap: Cell::new(None),
        })
    }

    /// Take the callback to run it; `None` if cancelled or already run.
    pub(crate) fn take(&self) -> Option<Box<dyn FnOnce()>> {
        if self.cancelled.get() {
            return None;
        }
        self.callback.borrow_mut().take()
    }

    /// What this callback is, for debug reports.
    pub(crate) fn describe(&self) -> String {
        format!("{} scheduled at {}", self.name, self.origin)
    }
}

/// A callback scheduled with `call_soon`; cancel it before it runs.
///
/// ```
/// let lp = protoloop::EventLoop::new().unwrap();
/// let h = lp.handle().call_soon(|| panic!("never runs"));
/// assert!(h.when() <= lp.handle().time());
/// h.cancel();
/// lp.handle().call_soon({ let hd = lp.handle(); move || hd.stop() });
/// lp.run_forever().unwrap();
/// ```
#[derive(Clone)]
pub struct CallbackHandle(pub(crate) Rc<Entry>);

impl CallbackHandle {
    /// Stop the callback from running (and drop it now). Idempotent.
    pub fn cancel(&self) {
        self.0.cancelled.set(true);
        let cb = self.0.callback.borrow_mut().take();
        drop(cb);
    }

    /// `true` once cancelled.
    pub fn cancelled(&self) -> bool {
        self.0.cancelled.get()
    }

    /// When it was scheduled, on the loop's clock: it is due at once and
    /// runs on the loop's next iteration.
    pub fn when(&self) -> Instant {
        self.0.when
    }
}

impl fmt::Debug for CallbackHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallbackHandle({})", self.0.describe())
    }
}

/// A callback scheduled with `call_later` or `call_at`.
///
/// ```
/// use std::time::Duration;
/// let lp = protoloop::EventLoop::new().unwrap();
/// let h = lp.handle().call_later(Duration::from_secs(3600), || panic!("never runs"));
/// assert!(h.when() > lp.handle().time());
/// h.cancel();
/// ```
#[derive(Clone)]
pub struct TimerHandle(pub(crate) Rc<Entry>);

impl TimerHandle {
    /// Stop the timer (and drop its callback now). Idempotent; harmless
    /// after it fired.
    pub fn cancel(&self) {
        if !self.0.cancelled.replace(true) {
            if let Some(count) = self.0.heap.take() {
                count.set(count.get() + 1);
            }
            let cb = self.0.callback.borrow_mut().take();
            drop(cb);
        }
    }

    /// `true` once cancelled.
    pub fn cancelled(&self) -> bool {
        self.0.cancelled.get()
    }

    /// When the timer is (or was) due, on the loop's clock.
    pub fn when(&self) -> Instant {
        self.0.when
    }
}

impl fmt::Debug for TimerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimerHandle({:?}, {})", self.0.when, self.0.describe())
    }
}

struct Item(Rc<Entry>);

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.0.when, self.0.seq).cmp(&(other.0.when, other.0.seq))
    }
}

/// The timer heap.
///
/// A cancelled timer stays in the heap until it reaches the top or a
/// compaction drops it; compaction runs when cancelled entries are over
/// half of a heap of at least 64, as in asyncio. The heap knows how many
/// it holds without scanning: each entry in it carries the heap's
/// counter, which its cancel bumps.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Item>>,
    cancelled: Rc<Cell<usize>>,
}

impl Timers {
    pub(crate) fn push(&mut self, entry: Rc<Entry>) {
        if entry.cancelled.get() {
            return;
        }
        entry.heap.set(Some(self.cancelled.clone()));
        self.heap.push(Reverse(Item(entry)));
    }

    /// Pop the top entry; `Some` if it was live.
    fn pop(&mut self) -> Option<Rc<Entry>> {
        let Reverse(Item(e)) = self.heap.pop()?;
        if e.cancelled.get() {
            self.cancelled.set(self.cancelled.get().saturating_sub(1));
            None
        } else {
            e.heap.take();
            Some(e)
        }
    }

    /// The earliest live deadline, dropping cancelled entries on top.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.0.cancelled.get() {
                self.pop();
            } else {
                return Some(top.0.when);
            }
        }
        None
    }

    /// Pop every live entry due at or before `now`, in order.
    pub(crate) fn pop_due(&mut self, now: Instant, out: &mut Vec<Rc<Entry>>) {
        self.compact();
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.0.when > now {
                break;
            }
            if let Some(e) = self.pop() {
                out.push(e);
            }
        }
    }

    fn compact(&mut self) {
        if self.heap.len() >= 64 && self.cancelled.get() * 2 > self.heap.len() {
            self.heap.retain(|r| !r.0.0.cancelled.get());
            self.cancelled.set(0);
        }
    }

    /// Entries in the heap, cancelled ones included.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Cancelled entries still in the heap.
    #[cfg(test)]
    pub(crate) fn cancelled(&self) -> usize {
        self.cancelled.get()
    }

    pub(crate) fn clear(&mut self) {
        for Reverse(Item(e)) in self.heap.drain() {
            e.heap.take();
        }
        self.cancelled.set(0);
    }
}

/// About a century: what "after `Duration::MAX`" means on the loop.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + d`, saturating at about a century from `now` so that a huge
/// delay (`Duration::MAX` as "never") cannot overflow `Instant`.
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(FOREVER)).unwrap_or(now)
}

/// Saturating `deadline - now`.
pub(crate) fn until(deadline: Instant, now: Instant) -> Duration {
    deadline.saturating_duration_since(now)
}
