//! The lifecycle checker catches each kind of contract breach. The breaches
//! are committed by calling the checked protocol by hand, as a broken
//! transport would.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use protoloop::testing::{Checked, Event, LifecycleChecker, RecordingTransport};
use protoloop::{CloseReason, Protocol, SocketAddress, Transport, TransportImpl, TransportStats};

use crate::Peer;

fn messages(c: &LifecycleChecker) -> Vec<String> {
    c.violations().into_iter().map(|v| v.message).collect()
}

fn made(checker: &LifecycleChecker) -> (Checked<Peer>, Rc<RecordingTransport>) {
    let mut p = checker.wrap(Peer::new());
    let rec = RecordingTransport::new();
    p.connection_made(rec.transport());
    (p, rec)
}

#[test]
fn a_clean_lifecycle_passes_and_is_recorded() {
    let checker = LifecycleChecker::new();
    let (mut p, _rec) = made(&checker);
    p.data_received(b"ab");
    p.pause_writing();
    p.resume_writing();
    assert!(!p.eof_received());
    p.connection_lost(CloseReason::PeerEof);
    checker.assert_finished();
    assert_eq!(
        checker.events(0),
        [
            Event::ConnectionMade,
            Event::DataReceived(2),
            Event::PauseWriting,
            Event::ResumeWriting,
            Event::EofReceived,
            Event::ConnectionLost
        ]
    );
    assert!(matches!(checker.reasons()[0], Some(CloseReason::PeerEof)));
    assert_eq!((checker.connection_count(), checker.lost_count()), (1, 1));
    assert!(checker.all_lost());
    // Deref reaches the wrapped protocol.
    assert_eq!(p.got, b"ab");
    assert_eq!(Checked::connection_id(&p), 0);
}

#[test]
fn callbacks_before_connection_made_are_caught() {
    let checker = LifecycleChecker::new();
    let mut p = checker.wrap(Peer::new());
    p.data_received(b"x");
    p.pause_writing();
    assert_eq!(
        messages(&checker),
        [
            "data_received before connection_made",
            "pause_writing before connection_made"
        ]
    );
}

#[test]
fn a_second_connection_made_is_caught() {
    let checker = LifecycleChecker::new();
    let (mut p, rec) = made(&checker);
    p.connection_made(rec.transport());
    assert_eq!(messages(&checker), ["second connection_made"]);
}

#[test]
fn anything_after_connection_lost_is_caught() {
    let checker = LifecycleChecker::new();
    let (mut p, _rec) = made(&checker);
    p.connection_lost(CloseReason::LocalClose);
    p.data_received(b"late");
    p.connection_lost(CloseReason::LocalAbort);
    assert_eq!(
        messages(&checker),
        [
            "data_received after connection_lost",
            "connection_lost after connection_lost"
        ]
    );
    // The first reason is the one kept.
    assert!(matches!(
        checker.reasons()[0],
        Some(CloseReason::LocalClose)
    ));
}

#[test]
fn data_after_eof_a_second_eof_and_empty_data_are_caught() {
    let checker = LifecycleChecker::new();
    let (mut p, _rec) = made(&checker);
    p.data_received(b"");
    p.eof_received();
    p.data_received(b"x");
    p.eof_received();
    assert_eq!(
        messages(&checker),
        [
            "data_received with no bytes",
            "data_received after eof_received",
            "second eof_received"
        ]
    );
}

#[test]
fn unpaired_flow_control_is_caught() {
    let checker = LifecycleChecker::new();
    let (mut p, _rec) = made(&checker);
    p.resume_writing();
    p.pause_writing();
    p.pause_writing();
    assert_eq!(
        messages(&checker),
        [
            "resume_writing without a pause_writing before it",
            "pause_writing twice without resume_writing in between"
        ]
    );
    // Losing the connection while paused is fine.
    p.connection_lost(CloseReason::LocalAbort);
    assert_eq!(checker.violations().len(), 2);
}

#[test]
fn data_while_reading_is_paused_or_closing_is_caught() {
    let checker = LifecycleChecker::new();
    let (mut p, rec) = made(&checker);
    // The protocol pauses through the (proxied) transport it was given.
    p.t.as_ref().unwrap().pause_reading();
    p.data_received(b"x");
    p.t.as_ref().unwrap().resume_reading();
    p.data_received(b"y");
    p.t.as_ref().unwrap().close();
    p.data_received(b"z");
    assert_eq!(
        messages(&checker),
        [
            "data_received while the transport is not reading (paused or closing)",
            "data_received while the transport is not reading (paused or closing)"
        ]
    );
    assert!(rec.is_closed());
}

#[test]
fn buffered_protocol_misuse_is_caught() {
    struct Lends(Vec<u8>);
    impl Protocol for Lends {
        fn data_received(&mut self, _: &[u8]) {}
        fn get_buffer(&mut self, _: usize) -> Option<&mut [u8]> {
            Some(&mut self.0)
        }
    }
    let checker = LifecycleChecker::new();
    let mut p = checker.wrap(Lends(vec![0; 8]));
    let rec = RecordingTransport::new();
    p.connection_made(rec.transport());
    p.buffer_updated(1);
    assert_eq!(p.get_buffer(100).map(|b| b.len()), Some(8));
    p.buffer_updated(9);
    assert_eq!(
        messages(&checker),
        [
            "buffer_updated without a buffer lent by get_buffer",
            "buffer_updated(9) but get_buffer lent only 8 bytes"
        ]
    );
}

/// A broken transport that calls `connection_lost` from inside `close()`.
struct Reentrant {
    protocol: RefCell<Option<Rc<RefCell<dyn Protocol>>>>,
}

impl TransportImpl for Reentrant {
    fn write(&self, _: &[u8]) -> protoloop::Result<()> {
        Ok(())
    }
    fn write_eof(&self) -> protoloop::Result<()> {
        Ok(())
    }
    fn can_write_eof(&self) -> bool {
        true
    }
    fn close(&self) {
        let p = self.protocol.borrow().clone().unwrap();
        p.borrow_mut().connection_lost(CloseReason::LocalClose);
    }
    fn close_with_deadline(&self, _: Duration) {}
    fn abort(&self) {}
    fn is_closing(&self) -> bool {
        false
    }
    fn pause_reading(&self) {}
    fn resume_reading(&self) {}
    fn is_reading(&self) -> bool {
        true
    }
    fn set_write_buffer_limits(&self, _: usize, _: usize) {}
    fn get_write_buffer_limits(&self) -> (usize, usize) {
        (0, 0)
    }
    fn get_write_buffer_size(&self) -> usize {
        0
    }
    fn peer_addr(&self) -> Option<SocketAddress> {
        None
    }
    fn local_addr(&self) -> Option<SocketAddress> {
        None
    }
    fn stats(&self) -> TransportStats {
        TransportStats::default()
    }
    fn set_protocol(&self, p: Rc<RefCell<dyn Protocol>>) {
        *self.protocol.borrow_mut() = Some(p);
    }
    fn get_protocol(&self) -> Option<Rc<RefCell<dyn Protocol>>> {
        self.protocol.borrow().clone()
    }
}

#[test]
fn a_callback_made_from_inside_a_transport_method_is_caught() {
    let checker = LifecycleChecker::new();
    let proto = Rc::new(RefCell::new(checker.wrap(Peer::new())));
    let bad = Rc::new(Reentrant {
        protocol: RefCell::new(Some(proto.clone())),
    });
    proto
        .borrow_mut()
        .connection_made(Transport::new(bad.clone()));
    // Code outside any callback (a task, a timer) closes through the
    // handle the protocol keeps.
    let t = proto.borrow().t.clone().unwrap();
    t.close();
    assert_eq!(
        messages(&checker),
        ["connection_lost called re-entrantly from inside transport.close()"]
    );
}

#[test]
#[should_panic(expected = "connection #1: never got connection_lost")]
fn assert_finished_demands_connection_lost() {
    let checker = LifecycleChecker::new();
    let (mut p, _rec) = made(&checker);
    p.connection_lost(CloseReason::LocalClose);
    let (_q, _rec2) = made(&checker);
    checker.assert_ok();
    checker.assert_finished();
}

#[test]
#[should_panic(expected = "never got connection_made")]
fn assert_finished_demands_connection_made() {
    let checker = LifecycleChecker::new();
    let _p = checker.wrap(Peer::new());
    checker.assert_finished();
}

#[test]
#[should_panic(
    expected = "callback contract violated: 1 problem(s)\n  connection #0: second eof_received"
)]
fn assert_ok_lists_the_violations() {
    let checker = LifecycleChecker::new();
    let (mut p, _rec) = made(&checker);
    p.eof_received();
    p.eof_received();
    checker.assert_ok();
}
