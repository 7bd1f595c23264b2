//! Calling a protocol from a transport: the one place that borrows a
//! protocol for a callback, catches a panic in it and reports what went
//! wrong. Every transport (stream, TLS, datagram, pipe, subprocess) calls
//! its protocol through [`call_protocol`] and keeps only its own reaction
//! to a panic (aborting its connection with `CloseReason::Panic`).
//!
//! # Promises
//!
//! - The protocol is borrowed for the length of the call only; the caller
//!   must hold no borrow of its own cells (the callback may call any
//!   transport method).
//! - A protocol that is already borrowed (a callback reaching its own
//!   transport's protocol) is not called: the skip is reported to the
//!   exception handler as an error.
//! - A panic is caught and reported (`ExceptionKind::ProtocolPanic`), and
//!   a slow callback is reported in debug mode, as for every loop
//!   callback (see `Handle::guard_with`).

use std::cell::RefCell;
use std::sync::Arc;

use crate::event_loop::{ExceptionKind, Handle};

/// Why a protocol call did not run to completion.
#[derive(Debug)]
pub(crate) enum NotCalled {
    /// The protocol was already borrowed: the call was skipped (reported).
    Borrowed,
    /// The callback panicked with this message (reported).
    Panicked(Arc<str>),
}

/// Call `f` on `protocol` with panics caught. `describe` names the call
/// for messages ("data_received of the protocol of connection with ..").
pub(crate) fn call_protocol<P: ?Sized, R>(
    handle: &Handle,
    protocol: &RefCell<P>,
    describe: &dyn Fn() -> String,
    f: impl FnOnce(&mut P) -> R,
) -> Result<R, NotCalled> {
    let Ok(mut p) = protocol.try_borrow_mut() else {
        handle.report(
            ExceptionKind::Error,
            format!("{} skipped: the protocol is already borrowed", describe()),
        );
        return Err(NotCalled::Borrowed);
    };
    let r = handle.guard_with(ExceptionKind::ProtocolPanic, describe, || f(&mut *p));
    drop(p);
    r.map_err(NotCalled::Panicked)
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::event_loop::EventLoop;

    type Seen = Rc<RefCell<Vec<(ExceptionKind, String)>>>;

    /// A loop whose exception handler records (kind, message).
    fn recording_loop() -> (EventLoop, Seen) {
        let lp = EventLoop::new().unwrap();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        lp.handle()
            .set_exception_handler(move |c| s.borrow_mut().push((c.kind, c.message.clone())));
        (lp, seen)
    }

    #[test]
    fn a_completed_call_returns_its_value_and_releases_the_borrow() {
        let (lp, seen) = recording_loop();
        let proto = RefCell::new(1);
        let r = call_protocol(&lp.handle(), &proto, &|| "bump".into(), |p| {
            *p += 1;
            *p * 10
        });
        assert_eq!(r.unwrap(), 20);
        assert_eq!(*proto.borrow_mut(), 2);
        assert!(seen.borrow().is_empty());
    }

    #[test]
    fn a_borrowed_protocol_is_skipped_and_reported() {
        let (lp, seen) = recording_loop();
        let proto = RefCell::new(0);
        let held = proto.borrow_mut();
        let r = call_protocol(
            &lp.handle(),
            &proto,
            &|| "data_received of x".into(),
            |_| unreachable!("must not be called while borrowed"),
        );
        drop(held);
        assert!(matches!(r, Err(NotCalled::Borrowed)));
        let seen = seen.borrow();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, ExceptionKind::Error);
        assert_eq!(
            seen[0].1,
            "data_received of x skipped: the protocol is already borrowed"
        );
    }

    #[test]
    fn a_panic_is_caught_reported_and_its_message_returned() {
        let (lp, seen) = recording_loop();
        let proto = RefCell::new(0);
        let r: Result<(), _> =
            call_protocol(&lp.handle(), &proto, &|| "eof_received of x".into(), |_| {
                panic!("boom")
            });
        match r {
            Err(NotCalled::Panicked(msg)) => assert_eq!(&*msg, "boom"),
            other => panic!("expected a panic, got {other:?}"),
        }
        assert!(proto.try_borrow_mut().is_ok(), "borrow released");
        let seen = seen.borrow();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, ExceptionKind::ProtocolPanic);
        assert_eq!(seen[0].1, "eof_received of x panicked: boom");
    }
}
