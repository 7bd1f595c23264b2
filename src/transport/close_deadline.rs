//! `close_with_deadline`, written once for the transports that flush
//! before they close: the stream transport (TCP, Unix), the in-memory
//! test transport and the write end of a pipe. Each says where it keeps
//! the deadline's timer and how it ends the connection when the deadline
//! passes; the order and the rules are here.
//!
//! # Promises
//!
//! - The graceful close begins first: `close` (flush what is buffered,
//!   then close). A transport with nothing buffered may be gone at once,
//!   and then no deadline is armed.
//! - One deadline per connection: the first `close_with_deadline` arms
//!   it, later ones arm nothing (they cannot move it).
//! - When the deadline passes with the connection still there, its timer
//!   slot is cleared and the transport ends the connection with
//!   `CloseReason::Timeout(TimeoutKind::Close)`.
//! - The timer holds the transport (so the deadline fires even if nothing
//!   else does); the transport cancels it when the connection ends, which
//!   releases it.
//!
//! The TLS transport is not one of these: its deadline aborts the stream
//! below it rather than itself, and its timer holds it weakly (see
//! `tls::layer`).

use std::cell::RefMut;
use std::rc::Rc;
use std::time::Duration;

use super::TransportImpl;
use crate::event_loop::Handle;
use crate::protocol::{CloseReason, TimeoutKind};
use crate::time::TimerHandle;

/// A transport whose graceful close a deadline can cut short.
pub(crate) trait CloseDeadline: TransportImpl + Sized + 'static {
    /// The slot for the deadline's timer while the connection is there;
    /// `None` once it is gone.
    fn close_timer(&self) -> Option<RefMut<'_, Option<TimerHandle>>>;

    /// The deadline passed: end the connection now with `reason`.
    fn close_deadline_passed(&self, reason: CloseReason);
}

/// [`TransportImpl::close_with_deadline`] for `me`, whose timer runs on
/// `handle`'s loop: see the module docs.
pub(crate) fn close_with_deadline<T: CloseDeadline>(
    handle: &Handle,
    me: Rc<T>,
    deadline: Duration,
) {
    me.close();
    let Some(mut slot) = me.close_timer() else {
        return;
    };
    if slot.is_some() {
        return;
    }
    let m = me.clone();
    *slot = Some(handle.call_later(deadline, move || {
        if let Some(mut slot) = m.close_timer() {
            *slot = None;
        }
        m.close_deadline_passed(CloseReason::Timeout(TimeoutKind::Close));
    }));
}
