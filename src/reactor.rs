//! The reactor: the `mio::Poll`, a `Slab` of registered sources, and
//! readiness dispatch. Only this module and `transport/*` touch mio.
//!
//! # Registration
//!
//! A source is registered once, for the whole life of its file descriptor,
//! usually for both `READABLE` and `WRITABLE`. mio is edge-triggered, so a
//! handler must drain readiness (read or write until `WouldBlock`, or until
//! a short read, see below) before it returns; an event that finds nothing
//! to do is harmless.
//!
//! # Short reads
//!
//! A read that fills less than the buffer it was given means the socket's
//! receive queue was emptied: data that arrives afterwards raises a new
//! edge. Handlers may stop there rather than making one more read that is
//! sure to fail with `WouldBlock` (tokio does the same).
//!
//! # Stale events
//!
//! A handler can be removed while events for it are still in the batch
//! being dispatched; they are dropped. A token reused in the same batch may
//! receive a spurious event, which handlers tolerate by design.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::Duration;

use mio::event::Source;
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;

/// The token of the loop's cross-thread waker.
pub(crate) const WAKER_TOKEN: Token = Token(usize::MAX);

/// Readiness of one event, copied out of mio's `Event`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ready {
    pub readable: bool,
    pub writable: bool,
    pub error: bool,
    pub read_closed: bool,
    pub write_closed: bool,
}

/// Something registered with the reactor. A handler without a source
/// (an in-memory end) hears only `loop_closed`.
pub(crate) trait IoHandler {
    /// Called with each readiness event for the handler's token.
    fn ready(self: Rc<Self>, ready: Ready);

    /// The loop is closing and will never dispatch again: release the
    /// source and break reference cycles (a transport and the protocol
    /// that keeps its handle). Runs no protocol callbacks.
    fn loop_closed(&self) {}
}

pub(crate) struct Reactor {
    poll: RefCell<Poll>,
    registry: Registry,
    handlers: RefCell<Slab<Rc<dyn IoHandler>>>,
    events: RefCell<Events>,
    woken: Cell<bool>,
}

impl Reactor {
    pub(crate) fn new() -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        Ok(Reactor {
            poll: RefCell::new(poll),
            registry,
            handlers: RefCell::new(Slab::new()),
            events: RefCell::new(Events::with_capacity(1024)),
            woken: Cell::new(false),
        })
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Reserve a token for `handler`; register the source with it next.
    pub(crate) fn insert(&self, handler: Rc<dyn IoHandler>) -> Token {
        Token(self.handlers.borrow_mut().insert(handler))
    }

    /// Insert a handler built from its own token.
    pub(crate) fn insert_with(&self, make: impl FnOnce(Token) -> Rc<dyn IoHandler>) -> Token {
        let mut handlers = self.handlers.borrow_mut();
        let entry = handlers.vacant_entry();
        let token = Token(entry.key());
        entry.insert(make(token));
        token
    }

    /// Replace the handler of a token (e.g. connecting -> connected).
    pub(crate) fn set_handler(&self, token: Token, handler: Rc<dyn IoHandler>) {
        if let Some(h) = self.handlers.borrow_mut().get_mut(token.0) {
            *h = handler;
        }
    }

    /// Register `source` under `token` (from [`Reactor::insert`]).
    pub(crate) fn register<S: Source + ?Sized>(
        &self,
        source: &mut S,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.registry.register(source, token, interest)
    }

    /// Change the interest of a registered source. Re-registering also
    /// re-arms it: a source that is ready now raises a fresh event.
    pub(crate) fn reregister<S: Source + ?Sized>(
        &self,
        source: &mut S,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.registry.reregister(source, token, interest)
    }

    /// Deregister `source` and forget its handler. Errors are ignored: the
    /// source is going away either way.
    pub(crate) fn remove<S: Source + ?Sized>(&self, source: &mut S, token: Token) {
        let _ = self.registry.deregister(source);
        self.forget(token);
    }

    /// Forget a token's handler (its source was deregistered or closed).
    /// Dropping the handler happens after the slab borrow is released, so
    /// a handler's `Drop` may use the reactor.
    pub(crate) fn forget(&self, token: Token) {
        let removed = self.handlers.borrow_mut().try_remove(token.0);
        drop(removed);
    }

    /// Number of registered handlers.
    pub(crate) fn len(&self) -> usize {
        self.handlers.borrow().len()
    }

    /// Drop every handler (loop close), breaking reference cycles: each is
    /// told first, then all are dropped (outside the slab borrow).
    pub(crate) fn clear(&self) {
        let all = std::mem::take(&mut *self.handlers.borrow_mut());
        for (_, h) in all.iter() {
            h.loop_closed();
        }
        drop(all);
    }

    /// Wait for events; returns how many arrived (the waker's included).
    pub(crate) fn poll(&self, timeout: Option<Duration>) -> io::Result<usize> {
        let mut events = self
            .events
            .try_borrow_mut()
            .expect("reactor poll is not re-entrant");
        let res = match self.poll.borrow_mut().poll(&mut events, timeout) {
            // A signal: report nothing rather than wait again with the
            // same (now too long) timeout.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                events.clear();
                Ok(())
            }
            other => other,
        };
        res.map(|_| events.iter().count())
    }

    /// Call the handler of each event from the last `poll`. Returns whether
    /// the cross-thread waker fired.
    pub(crate) fn dispatch(&self) -> bool {
        let events = self
            .events
            .try_borrow_mut()
            .expect("reactor dispatch is not re-entrant");
        self.woken.set(false);
        for ev in events.iter() {
            let token = ev.token();
            if token == WAKER_TOKEN {
                self.woken.set(true);
                continue;
            }
            let handler = self.handlers.borrow().get(token.0).cloned();
            if let Some(h) = handler {
                h.ready(Ready {
                    readable: ev.is_readable(),
                    writable: ev.is_writable(),
                    error: ev.is_error(),
                    read_closed: ev.is_read_closed(),
                    write_closed: ev.is_write_closed(),
                });
            }
        }
        self.woken.get()
    }
}

/// `true` for `WouldBlock`.
pub(crate) fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

/// `true` for `Interrupted` (retry the call).
pub(crate) fn interrupted(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Interrupted
}

/// One non-blocking write of `bufs`: `one` for a single buffer (a plain
/// `write`, cheaper than `writev`), `many` otherwise; retried on
/// `Interrupted`, and `Ok(0)` when the kernel takes nothing (would block).
/// Always inlined: the stream transport's every reply goes through it.
#[inline(always)]
pub(crate) fn write_nonblocking(
    bufs: &[io::IoSlice<'_>],
    mut one: impl FnMut(&[u8]) -> io::Result<usize>,
    mut many: impl FnMut(&[io::IoSlice<'_>]) -> io::Result<usize>,
) -> io::Result<usize> {
    loop {
        let r = if bufs.len() == 1 {
            one(&bufs[0])
        } else {
            many(bufs)
        };
        match r {
            Err(e) if interrupted(&e) => continue,
            Err(e) if would_block(&e) => return Ok(0),
            other => return other,
        }
    }
}
