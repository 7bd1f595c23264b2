//! Unix signal handlers (asyncio's `add_signal_handler`), through
//! `signal-hook-mio`: the signal handler itself only writes to a self-pipe
//! registered with the loop, and the user's callback runs on the loop like
//! any other callback.
//!
//! Several loops in one process may watch the same signal; each is told.
//! When the last loop stops watching a signal (`remove_signal_handler`, or
//! closing the loop), the signal gets back what it had before the first
//! handler: if that was the default action (terminate, for `SIGTERM`),
//! a signal-hook action that emulates it stands in, since signal-hook
//! never uninstalls its own handler; if it was ignored (as Rust makes
//! `SIGPIPE`) or someone else's handler, it stays so.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Mutex;

use mio::{Interest, Token};
use signal_hook_mio::v1_0::Signals;

use super::{ExceptionKind, Handle};
use crate::error::{Error, Result};
use crate::reactor::IoHandler;

type SignalCallback = Rc<RefCell<dyn FnMut()>>;

pub(crate) struct SignalWatcher {
    handle: std::rc::Weak<super::Inner>,
    token: Token,
    signals: RefCell<Signals>,
    callbacks: RefCell<HashMap<i32, SignalCallback>>,
}

impl SignalWatcher {
    /// Stop watching: deregister, and give back every signal that still
    /// had a handler here.
    pub(crate) fn close(&self, handle: &Handle) {
        handle
            .inner
            .reactor
            .remove(&mut *self.signals.borrow_mut(), self.token);
        let sigs: Vec<i32> = self
            .callbacks
            .borrow_mut()
            .drain()
            .map(|(s, _)| s)
            .collect();
        for sig in sigs {
            unwatch(sig);
        }
    }
}

/// A signal's watchers across the process's loops.
struct Watch {
    /// Loops with a handler for it.
    loops: usize,
    /// Its disposition was the default action before any loop watched it.
    was_default: bool,
    /// While no loop watches it: the action emulating the default.
    default: Option<signal_hook::SigId>,
}

static WATCHED: Mutex<BTreeMap<i32, Watch>> = Mutex::new(BTreeMap::new());

/// Whether `sig`'s disposition is the default action right now.
fn disposition_is_default(sig: i32) -> bool {
    // SAFETY: a query only (no new action); `old` is written by the call.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_DFL
    }
}

/// A loop starts watching `sig` (call before registering it).
fn watch(sig: i32) {
    let mut map = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
    let w = map.entry(sig).or_insert_with(|| Watch {
        loops: 0,
        was_default: disposition_is_default(sig),
        default: None,
    });
    w.loops += 1;
    if let Some(id) = w.default.take() {
        signal_hook::low_level::unregister(id);
    }
}

/// A loop stops watching `sig`; the last one puts the default back.
fn unwatch(sig: i32) {
    let mut map = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
    let Some(w) = map.get_mut(&sig) else { return };
    w.loops = w.loops.saturating_sub(1);
    if w.loops == 0 && w.was_default && w.default.is_none() {
        // SAFETY: the action only calls emulate_default_handler, which is
        // async-signal-safe.
        w.default = unsafe {
            signal_hook::low_level::register(sig, move || {
                let _ = signal_hook::low_level::emulate_default_handler(sig);
            })
        }
        .ok();
    }
}

impl IoHandler for SignalWatcher {
    fn ready(self: Rc<Self>, _ready: crate::reactor::Ready) {
        let Some(inner) = self.handle.upgrade() else {
            return;
        };
        let handle = Handle { inner };
        let pending: Vec<i32> = self.signals.borrow_mut().pending().collect();
        for sig in pending {
            let cb = self.callbacks.borrow().get(&sig).cloned();
            if let Some(cb) = cb {
                handle.guard(
                    ExceptionKind::HandlerPanic,
                    &|| format!("handler of signal {sig}"),
                    || (cb.borrow_mut())(),
                );
            }
        }
    }
}

/// Signals whose handlers would break the process or the loop.
fn forbidden(sig: i32) -> bool {
    signal_hook::consts::FORBIDDEN.contains(&sig)
        || [
            libc_sig::SIGSEGV,
            libc_sig::SIGBUS,
            libc_sig::SIGFPE,
            libc_sig::SIGILL,
        ]
        .contains(&sig)
}

mod libc_sig {
    pub const SIGILL: i32 = signal_hook::consts::SIGILL;
    pub const SIGFPE: i32 = signal_hook::consts::SIGFPE;
    pub const SIGSEGV: i32 = signal_hook::consts::SIGSEGV;
    pub const SIGBUS: i32 = signal_hook::consts::SIGBUS;
}

impl Handle {
    /// Call `callback` on the loop whenever signal `sig` arrives (for
    /// example `signal_hook::consts::SIGTERM`). Replaces an earlier handler
    /// for the same signal. Signals that cannot be caught safely (`SIGKILL`,
    /// `SIGSTOP`, `SIGSEGV` ...) are refused with [`Error::Unsupported`].
    ///
    /// ```
    /// use signal_hook::consts::SIGUSR2;
    /// let lp = protoloop::EventLoop::new().unwrap();
    /// let h = lp.handle();
    /// let h2 = h.clone();
    /// h.add_signal_handler(SIGUSR2, move || h2.stop()).unwrap();
    /// signal_hook::low_level::raise(SIGUSR2).unwrap();
    /// lp.run_forever().unwrap(); // returns: the handler stopped the loop
    /// assert!(h.remove_signal_handler(SIGUSR2));
    /// ```
    pub fn add_signal_handler(&self, sig: i32, callback: impl FnMut() + 'static) -> Result<()> {
        if forbidden(sig) {
            return Err(Error::Unsupported("a handler for this signal"));
        }
        if self.is_closed() {
            return Err(Error::LoopClosed);
        }
        let watcher = self.signal_watcher()?;
        let new = !watcher.callbacks.borrow().contains_key(&sig);
        if new {
            watch(sig);
            if let Err(e) = watcher.signals.borrow().add_signal(sig) {
                unwatch(sig);
                return Err(Error::io(format!("watching signal {sig}"), e));
            }
        }
        watcher
            .callbacks
            .borrow_mut()
            .insert(sig, Rc::new(RefCell::new(callback)));
        Ok(())
    }

    /// Stop handling `sig`; `false` if there was no handler. When no loop
    /// in the process handles `sig` any more, it gets back the disposition
    /// it had before the first handler (see the module docs): a `SIGTERM`
    /// terminates again.
    pub fn remove_signal_handler(&self, sig: i32) -> bool {
        let Some(old) = self.inner.signals.borrow().clone() else {
            return false;
        };
        if old.callbacks.borrow_mut().remove(&sig).is_none() {
            return false;
        }
        // signal-hook cannot drop one signal from a set: build a new set
        // with the rest, so this loop stops registering for `sig`.
        let rest: HashMap<i32, SignalCallback> = old.callbacks.borrow_mut().drain().collect();
        old.close(self);
        *self.inner.signals.borrow_mut() = None;
        if !rest.is_empty() {
            match self.signal_watcher() {
                Ok(w) => {
                    for sig in rest.keys() {
                        let _ = w.signals.borrow().add_signal(*sig);
                    }
                    *w.callbacks.borrow_mut() = rest;
                }
                Err(_) => rest.keys().for_each(|s| unwatch(*s)),
            }
        }
        unwatch(sig);
        true
    }

    fn signal_watcher(&self) -> Result<Rc<SignalWatcher>> {
        if let Some(w) = self.inner.signals.borrow().clone() {
            return Ok(w);
        }
        let signals = Signals::new(std::iter::empty::<i32>())
            .map_err(|e| Error::io("creating the signal pipe", e))?;
        let weak = Rc::downgrade(&self.inner);
        let mut slot = None;
        let token = self.inner.reactor.insert_with(|token| {
            let w = Rc::new(SignalWatcher {
                handle: weak,
                token,
                signals: RefCell::new(signals),
                callbacks: RefCell::new(HashMap::new()),
            });
            slot = Some(w.clone());
            w
        });
        let w = slot.expect("inserted");
        if let Err(e) =
            self.inner
                .reactor
                .register(&mut *w.signals.borrow_mut(), token, Interest::READABLE)
        {
            self.inner.reactor.forget(token);
            return Err(Error::io("registering the signal pipe", e));
        }
        *self.inner.signals.borrow_mut() = Some(w.clone());
        Ok(w)
    }
}
