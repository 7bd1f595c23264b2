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

/// A subprocess protocol that does nothing.
struct Quiet;
impl protoloop::SubprocessProtocol for Quiet {
    fn pipe_data_received(&mut self, _: i32, _: &[u8]) {}
}

#[test]
fn subprocess_protocols_are_checked_with_their_own_rules() {
    use protoloop::SubprocessProtocol;
    use std::os::unix::process::ExitStatusExt;
    // A SubprocessTransport cannot be made by hand, so these skip
    // connection_made: every callback is also "before connection_made".
    let checker = LifecycleChecker::new();
    let mut p = checker.wrap(Quiet);
    p.pipe_data_received(1, b"out");
    p.pipe_connection_lost(1, CloseReason::PeerEof);
    p.pipe_data_received(1, b"late");
    p.pipe_data_received(2, b"err");
    p.pipe_data_received(0, b"stdin?");
    p.pipe_connection_lost(1, CloseReason::PeerEof);
    p.process_ended(std::process::ExitStatus::from_raw(0));
    p.process_exited();
    let m = messages(&checker);
    for want in [
        "pipe_data_received for fd 1 after its pipe_connection_lost",
        "pipe_data_received for fd 0: only stdout and stderr carry data",
        "second pipe_connection_lost for fd 1",
        "process_ended before process_exited",
        "process_ended while fd 2 was still open",
        "process_exited after connection_lost",
    ] {
        assert!(m.iter().any(|x| x == want), "{want:?} not in {m:#?}");
    }
    assert_eq!(checker.lost_count(), 1, "process_ended ends it");
}

/// A datagram protocol that does nothing.
struct Deaf;
impl protoloop::DatagramProtocol for Deaf {
    fn datagram_received(&mut self, _: &[u8], _: SocketAddress) {}
}

#[test]
fn datagram_protocols_are_checked_too() {
    use protoloop::DatagramProtocol;
    let checker = LifecycleChecker::new();
    let mut p = checker.wrap(Deaf);
    let from = SocketAddress::Inet("127.0.0.1:9".parse().unwrap());
    p.datagram_received(b"", from.clone());
    p.pause_writing();
    p.pause_writing();
    p.connection_lost(CloseReason::LocalClose);
    p.error_received(std::io::Error::other("late"), None);
    p.datagram_received(b"x", from);
    let m = messages(&checker);
    for want in [
        "datagram_received before connection_made",
        "pause_writing twice without resume_writing in between",
        "error_received after connection_lost",
        "datagram_received after connection_lost",
    ] {
        assert!(m.iter().any(|x| x == want), "{want:?} not in {m:#?}");
    }
    // An empty datagram is a datagram: only the missing connection_made
    // is held against the first one.
    assert_eq!(
        checker.violations()[0].message,
        "datagram_received before connection_made"
    );
    assert_eq!(
        checker.events(0)[..2],
        [Event::DatagramReceived(0), Event::PauseWriting]
    );
}
