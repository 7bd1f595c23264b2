//! The transport proxy a checked protocol receives: forwards every call and
//! marks the connection as inside a transport method meanwhile.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::Registry;
use crate::error::Result;
use crate::protocol::Protocol;
use crate::transport::{SocketAddress, Transport, TransportImpl, TransportStats};

/// The transport a checked protocol sees: forwards every call and marks
/// the connection "inside a transport method" meanwhile, so a callback
/// made re-entrantly is caught.
pub(super) struct CheckedTransport {
    pub(super) inner: Transport,
    pub(super) reg: Rc<Registry>,
    pub(super) id: usize,
}

impl CheckedTransport {
    fn call<R>(&self, method: &'static str, f: impl FnOnce(&Transport) -> R) -> R {
        let prev = self.reg.conns.borrow_mut()[self.id].in_call.replace(method);
        struct Restore<'a>(&'a CheckedTransport, Option<&'static str>);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.0.reg.conns.borrow_mut()[self.0.id].in_call = self.1;
            }
        }
        let _restore = Restore(self, prev);
        f(&self.inner)
    }
}

impl TransportImpl for CheckedTransport {
    fn write(&self, data: &[u8]) -> Result<()> {
        self.call("write", |t| t.write(data))
    }
    fn write_bytes(&self, data: bytes::Bytes) -> Result<()> {
        self.call("write_bytes", |t| t.write_bytes(data))
    }
    fn writelines(&self, chunks: &[&[u8]]) -> Result<()> {
        self.call("writelines", |t| t.writelines(chunks))
    }
    fn write_eof(&self) -> Result<()> {
        self.call("write_eof", |t| t.write_eof())
    }
    fn can_write_eof(&self) -> bool {
        self.inner.can_write_eof()
    }
    fn close(&self) {
        self.call("close", |t| t.close())
    }
    fn close_with_deadline(&self, deadline: Duration) {
        self.call("close_with_deadline", |t| t.close_with_deadline(deadline))
    }
    fn abort(&self) {
        self.call("abort", |t| t.abort())
    }
    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }
    fn pause_reading(&self) {
        self.call("pause_reading", |t| t.pause_reading())
    }
    fn resume_reading(&self) {
        self.call("resume_reading", |t| t.resume_reading())
    }
    fn is_reading(&self) -> bool {
        self.inner.is_reading()
    }
    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.call("set_write_buffer_limits", |t| {
            t.set_write_buffer_limits(high, low)
        })
    }
    fn get_write_buffer_limits(&self) -> (usize, usize) {
        self.inner.get_write_buffer_limits()
    }
    fn get_write_buffer_size(&self) -> usize {
        self.inner.get_write_buffer_size()
    }
    fn peer_addr(&self) -> Option<SocketAddress> {
        self.inner.peer_addr()
    }
    fn local_addr(&self) -> Option<SocketAddress> {
        self.inner.local_addr()
    }
    fn stats(&self) -> TransportStats {
        self.inner.stats()
    }
    fn set_protocol(&self, protocol: Rc<RefCell<dyn Protocol>>) {
        self.inner.set_protocol_dyn(protocol)
    }
    fn get_protocol(&self) -> Option<Rc<RefCell<dyn Protocol>>> {
        self.inner.get_protocol()
    }
    fn extra(&self, key: &str) -> Option<Box<dyn std::any::Any>> {
        self.inner.extra(key)
    }
}
