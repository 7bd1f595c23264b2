//! [`RecordingTransport`]: a transport that only remembers what a protocol
//! did to it, for protocol unit tests with no loop and no socket.

use std::cell::RefCell;
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::protocol::Protocol;
use crate::transport::{
    DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, SocketAddress, Transport, TransportImpl, TransportStats,
};

/// One call a protocol made on a [`RecordingTransport`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// Bytes accepted by `write`, `write_bytes` or `writelines` (one entry
    /// per call; `writelines` is joined).
    Write(Vec<u8>),
    /// A write that was refused (after close, after `write_eof`, or by
    /// [`RecordingTransport::fail_next_write`]); its length.
    WriteRefused(usize),
    /// `write_eof`.
    WriteEof,
    /// `close`.
    Close,
    /// `close_with_deadline`.
    CloseWithDeadline(Duration),
    /// `abort`.
    Abort,
    /// `pause_reading`.
    PauseReading,
    /// `resume_reading`.
    ResumeReading,
    /// `set_write_buffer_limits`, with `low` already clamped to `high`.
    SetWriteBufferLimits {
        /// The high-water mark.
        high: usize,
        /// The low-water mark.
        low: usize,
    },
    /// `set_protocol`.
    SetProtocol,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    written: Vec<u8>,
    closing: bool,
    aborted: bool,
    eof_written: bool,
    paused: bool,
    limits: Option<(usize, usize)>,
    buffer_size: usize,
    fail_next: Option<Error>,
    stats: TransportStats,
    peer: Option<SocketAddress>,
    local: Option<SocketAddress>,
    protocol: Option<Rc<RefCell<dyn Protocol>>>,
}

/// A transport that records every call a protocol makes on it and never
/// calls the protocol back. It needs no loop: drive the protocol's
/// callbacks by hand and look at what it wrote.
///
/// It behaves like a transport that is always connected until `close` or
/// `abort`: writes are accepted (and recorded) until then and refused with
/// [`Error::Closed`] after; after `write_eof` they fail with
/// [`Error::EofWritten`]. `is_reading` follows `pause_reading` /
/// `resume_reading`. `get_write_buffer_size` is whatever the test set
/// with [`set_write_buffer_size`](Self::set_write_buffer_size).
///
/// ```
/// use protoloop::Protocol;
/// use protoloop::testing::{Call, RecordingTransport};
///
/// struct Echo(Option<protoloop::Transport>);
/// impl Protocol for Echo {
///     fn connection_made(&mut self, t: protoloop::Transport) { self.0 = Some(t); }
///     fn data_received(&mut self, data: &[u8]) {
///         let t = self.0.as_ref().unwrap();
///         t.write(data).unwrap();
///         if data.ends_with(b"\n") { t.close(); }
///     }
/// }
///
/// let rec = RecordingTransport::new();
/// let mut p = Echo(None);
/// p.connection_made(rec.transport());
/// p.data_received(b"hi");
/// p.data_received(b" there\n");
/// assert_eq!(rec.written(), b"hi there\n");
/// assert_eq!(rec.calls().last(), Some(&Call::Close));
/// assert!(rec.transport().write(b"late").is_err());
/// ```
pub struct RecordingTransport {
    me: Weak<RecordingTransport>,
    st: RefCell<State>,
}

impl fmt::Debug for RecordingTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.st.borrow();
        f.debug_struct("RecordingTransport")
            .field("calls", &st.calls.len())
            .field("written", &st.written.len())
            .field("closing", &st.closing)
            .finish()
    }
}

impl RecordingTransport {
    /// A new, open recording transport.
    pub fn new() -> Rc<RecordingTransport> {
        Rc::new_cyclic(|me| RecordingTransport {
            me: me.clone(),
            st: RefCell::new(State::default()),
        })
    }

    /// A [`Transport`] handle to give to a protocol's `connection_made`.
    pub fn transport(&self) -> Transport {
        Transport::new(
            self.me
                .upgrade()
                .expect("RecordingTransport is alive while borrowed"),
        )
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.st.borrow().calls.clone()
    }

    /// Every call so far, forgetting them.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.st.borrow_mut().calls)
    }

    /// All bytes accepted so far, concatenated.
    pub fn written(&self) -> Vec<u8> {
        self.st.borrow().written.clone()
    }

    /// All bytes accepted so far, forgetting them (the [`Call::Write`]
    /// entries stay in [`calls`](Self::calls)).
    pub fn take_written(&self) -> Vec<u8> {
        std::mem::take(&mut self.st.borrow_mut().written)
    }

    /// `true` once `close`, `close_with_deadline` or `abort` was called.
    pub fn is_closed(&self) -> bool {
        self.st.borrow().closing
    }

    /// `true` once `abort` was called.
    pub fn is_aborted(&self) -> bool {
        self.st.borrow().aborted
    }

    /// `true` once `write_eof` was called.
    pub fn is_eof_written(&self) -> bool {
        self.st.borrow().eof_written
    }

    /// What `get_write_buffer_size` reports from now on (default 0), to
    /// test a protocol's reaction to a backed-up transport.
    pub fn set_write_buffer_size(&self, n: usize) {
        self.st.borrow_mut().buffer_size = n;
    }

    /// Make the next write fail with `err` (recorded as
    /// [`Call::WriteRefused`]); later writes succeed again.
    pub fn fail_next_write(&self, err: Error) {
        self.st.borrow_mut().fail_next = Some(err);
    }

    /// What `peer_addr` and `local_addr` report (default `None`).
    pub fn set_addrs(&self, peer: Option<SocketAddress>, local: Option<SocketAddress>) {
        let mut st = self.st.borrow_mut();
        st.peer = peer;
        st.local = local;
    }

    fn record(&self, call: Call) {
        self.st.borrow_mut().calls.push(call);
    }

    fn accept(&self, data: &[u8]) -> Result<()> {
        let mut st = self.st.borrow_mut();
        let refused = if st.closing {
            Some(Error::Closed)
        } else if st.eof_written {
            Some(Error::EofWritten)
        } else {
            st.fail_next.take()
        };
        if let Some(err) = refused {
            st.calls.push(Call::WriteRefused(data.len()));
            return Err(err);
        }
        st.written.extend_from_slice(data);
        st.stats.bytes_sent += data.len() as u64;
        st.calls.push(Call::Write(data.to_vec()));
        Ok(())
    }
}

impl TransportImpl for RecordingTransport {
    fn write(&self, data: &[u8]) -> Result<()> {
        self.accept(data)
    }

    fn writelines(&self, chunks: &[&[u8]]) -> Result<()> {
        self.accept(&chunks.concat())
    }

    fn write_eof(&self) -> Result<()> {
        let mut st = self.st.borrow_mut();
        st.calls.push(Call::WriteEof);
        if st.closing {
            return Err(Error::Closed);
        }
        st.eof_written = true;
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn close(&self) {
        self.record(Call::Close);
        self.st.borrow_mut().closing = true;
    }

    fn close_with_deadline(&self, deadline: Duration) {
        self.record(Call::CloseWithDeadline(deadline));
        self.st.borrow_mut().closing = true;
    }

    fn abort(&self) {
        self.record(Call::Abort);
        let mut st = self.st.borrow_mut();
        st.closing = true;
        st.aborted = true;
    }

    fn is_closing(&self) -> bool {
        self.st.borrow().closing
    }

    fn pause_reading(&self) {
        self.record(Call::PauseReading);
        self.st.borrow_mut().paused = true;
    }

    fn resume_reading(&self) {
        self.record(Call::ResumeReading);
        self.st.borrow_mut().paused = false;
    }

    fn is_reading(&self) -> bool {
        let st = self.st.borrow();
        !st.paused && !st.closing
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        let low = low.min(high);
        self.record(Call::SetWriteBufferLimits { high, low });
        self.st.borrow_mut().limits = Some((high, low));
    }

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        self.st
            .borrow()
            .limits
            .unwrap_or((DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER))
    }

    fn get_write_buffer_size(&self) -> usize {
        self.st.borrow().buffer_size
    }

    fn peer_addr(&self) -> Option<SocketAddress> {
        self.st.borrow().peer.clone()
    }

    fn local_addr(&self) -> Option<SocketAddress> {
        self.st.borrow().local.clone()
    }

    fn stats(&self) -> TransportStats {
        self.st.borrow().stats
    }

    fn set_protocol(&self, protocol: Rc<RefCell<dyn Protocol>>) {
        self.record(Call::SetProtocol);
        self.st.borrow_mut().protocol = Some(protocol);
    }

    fn get_protocol(&self) -> Option<Rc<RefCell<dyn Protocol>>> {
        self.st.borrow().protocol.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_calls_in_order_and_refuses_writes_after_close() {
        let rec = RecordingTransport::new();
        let t = rec.transport();
        t.write(b"ab").unwrap();
        t.writelines(&[b"c", b"de"]).unwrap();
        t.write_bytes(bytes::Bytes::from_static(b"f")).unwrap();
        t.pause_reading();
        assert!(!t.is_reading());
        t.resume_reading();
        assert!(t.is_reading());
        t.set_write_buffer_limits(10, 20);
        assert_eq!(t.get_write_buffer_limits(), (10, 10));
        t.close();
        assert!(matches!(t.write(b"x"), Err(Error::Closed)));
        assert!(matches!(t.write_eof(), Err(Error::Closed)));
        assert_eq!(rec.written(), b"abcdef");
        assert_eq!(t.stats().bytes_sent, 6);
        assert_eq!(
            rec.calls(),
            [
                Call::Write(b"ab".to_vec()),
                Call::Write(b"cde".to_vec()),
                Call::Write(b"f".to_vec()),
                Call::PauseReading,
                Call::ResumeReading,
                Call::SetWriteBufferLimits { high: 10, low: 10 },
                Call::Close,
                Call::WriteRefused(1),
                Call::WriteEof,
            ]
        );
        assert!(rec.is_closed() && !rec.is_aborted() && !t.is_reading());
    }

    #[test]
    fn write_eof_then_write_is_refused_and_abort_is_recorded() {
        let rec = RecordingTransport::new();
        let t = rec.transport();
        t.write_eof().unwrap();
        assert!(rec.is_eof_written());
        assert!(matches!(t.write(b"x"), Err(Error::EofWritten)));
        t.abort();
        assert!(rec.is_aborted() && t.is_closing());
        assert_eq!(rec.take_calls().last(), Some(&Call::Abort));
        assert!(rec.calls().is_empty());
    }

    #[test]
    fn injected_write_failure_hits_one_write_only() {
        let rec = RecordingTransport::new();
        let t = rec.transport();
        rec.fail_next_write(Error::Timeout);
        assert!(matches!(t.write(b"abc"), Err(Error::Timeout)));
        t.write(b"d").unwrap();
        assert_eq!(rec.take_written(), b"d");
        assert!(rec.written().is_empty());
        rec.set_write_buffer_size(99);
        assert_eq!(t.get_write_buffer_size(), 99);
        let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        rec.set_addrs(Some(addr.into()), None);
        assert_eq!(t.peer_addr().and_then(|a| a.as_inet()), Some(addr));
        assert!(t.local_addr().is_none());
    }
}
