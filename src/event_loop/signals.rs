//! Unix signal handlers (asyncio's `add_signal_handler`), through
//! `signal-hook-mio`: the signal handler itself only writes to a self-pipe
//! registered with the loop, and the user's callback runs on the loop like
//! any other callback.
//!
//! Several loops in one process may watch the same signal; each is told.
//! After `remove_signal_handler` the signal is no longer watched by this
//! loop; `signal-hook` cannot put back the default disposition, so a signal
//! nobody watches any more is ignored rather than, say, terminating.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

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
    pub(crate) fn close(&self, handle: &Handle) {
        handle
            .inner
            .reactor
            .remove(&mut *self.signals.borrow_mut(), self.token);
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
        watcher
            .signals
            .borrow()
            .add_signal(sig)
            .map_err(|e| Error::io(format!("watching signal {sig}"), e))?;
        watcher
            .callbacks
            .borrow_mut()
            .insert(sig, Rc::new(RefCell::new(callback)));
        Ok(())
    }

    /// Stop handling `sig`; `false` if there was no handler.
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
            if let Ok(w) = self.signal_watcher() {
                for sig in rest.keys() {
                    let _ = w.signals.borrow().add_signal(*sig);
                }
                *w.callbacks.borrow_mut() = rest;
            }
        }
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
