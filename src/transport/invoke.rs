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
//! - A write queue's flow change ([`schedule_flow`]) reaches the protocol
//!   on the loop, never from inside the transport method that caused it.
//! - After `connection_lost` ([`schedule_lost`]) the transport drops its
//!   protocol, and drops it all the same if the loop is closed before the
//!   call could run.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::buffer::Flow;
use crate::event_loop::{ExceptionKind, Handle};
use crate::protocol::{DatagramProtocol, Protocol};

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

/// The protocols a write queue's flow changes are told to: stream and
/// datagram protocols both have `pause_writing` and `resume_writing`.
pub(crate) trait WriteFlow {
    fn pause_writing(&mut self);
    fn resume_writing(&mut self);
}

impl WriteFlow for dyn Protocol {
    fn pause_writing(&mut self) {
        Protocol::pause_writing(self)
    }
    fn resume_writing(&mut self) {
        Protocol::resume_writing(self)
    }
}

impl WriteFlow for dyn DatagramProtocol {
    fn pause_writing(&mut self) {
        DatagramProtocol::pause_writing(self)
    }
    fn resume_writing(&mut self) {
        DatagramProtocol::resume_writing(self)
    }
}

/// Schedule on the loop the `pause_writing` or `resume_writing` that a
/// write queue's `flow` change calls for; nothing for `Flow::Same`. `me`
/// gives the transport (asked for only when a call is due, so the common
/// write costs no `Rc` clone); on the loop, `call(me, what, callback)`
/// makes the call named `what`, after the transport's own check that it
/// is not gone by then, with its own reaction to a panic (what it returns,
/// whether the call completed, is not needed).
#[inline]
pub(crate) fn schedule_flow<T: ?Sized + 'static, P: WriteFlow + ?Sized + 'static>(
    handle: &Handle,
    flow: Flow,
    me: impl FnOnce() -> Rc<T>,
    call: impl FnOnce(&T, &'static str, fn(&mut P)) -> bool + 'static,
) {
    let (what, callback): (&'static str, fn(&mut P)) = match flow {
        Flow::Same => return,
        Flow::Pause => ("pause_writing", P::pause_writing),
        Flow::Resume => ("resume_writing", P::resume_writing),
    };
    let me = me();
    handle.call_soon(move || {
        call(&me, what, callback);
    });
}

/// Schedule `connection_lost` on the loop: `lost(me)` makes the call,
/// then `release(me)` drops the protocol, breaking the transport <->
/// protocol cycle. `release` runs even if `lost` never does: a loop
/// closed first drops the call unrun, and the transport, already gone
/// from the reactor, would not hear of the close otherwise.
pub(crate) fn schedule_lost<T: 'static>(
    handle: &Handle,
    me: Rc<T>,
    lost: impl FnOnce(&T) + 'static,
    release: fn(&T),
) {
    /// Runs `release` when dropped, whether the call ran or not.
    struct Release<T>(Rc<T>, fn(&T));
    impl<T> Drop for Release<T> {
        fn drop(&mut self) {
            (self.1)(&self.0);
        }
    }
    let me = Release(me, release);
    handle.call_soon(move || {
        lost(&me.0);
        drop(me);
    });
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

    #[test]
    fn a_flow_change_is_told_on_the_loop_and_same_is_told_nothing() {
        struct Flows(Vec<&'static str>);
        impl Protocol for Flows {
            fn data_received(&mut self, _: &[u8]) {}
            fn pause_writing(&mut self) {
                self.0.push("paused");
            }
            fn resume_writing(&mut self) {
                self.0.push("resumed");
            }
        }
        let (lp, seen) = recording_loop();
        let h = lp.handle();
        let proto = Rc::new(RefCell::new(Flows(Vec::new())));
        let names = Rc::new(RefCell::new(Vec::new()));
        schedule_flow::<(), dyn Protocol>(
            &h,
            Flow::Same,
            || unreachable!("no transport is needed for no change"),
            |_, _, _| unreachable!("nothing is scheduled for no change"),
        );
        for flow in [Flow::Pause, Flow::Resume] {
            let n = names.clone();
            let dyn_proto: Rc<RefCell<dyn Protocol>> = proto.clone();
            schedule_flow(
                &h,
                flow,
                || dyn_proto,
                move |p: &RefCell<dyn Protocol>, what, f| {
                    n.borrow_mut().push(what);
                    f(&mut *p.borrow_mut());
                    true
                },
            );
        }
        assert!(
            proto.borrow().0.is_empty(),
            "not told from inside the caller"
        );
        lp.run_until_idle().unwrap();
        assert_eq!(proto.borrow().0, ["paused", "resumed"]);
        assert_eq!(*names.borrow(), ["pause_writing", "resume_writing"]);
        assert!(seen.borrow().is_empty());
    }
}
