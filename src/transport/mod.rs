//! Transports: the handle a protocol writes through, and one module per
//! kind of connection.
//!
//! [`Transport`] is what every stream protocol receives in
//! `connection_made`: a cheap `Clone` (an `Rc` inside, `!Send`) whose
//! methods take `&self`. Behind it is a [`TransportImpl`]; the crate's TCP,
//! Unix, TLS and pipe transports implement it, and so can your own (the
//! `testing` module's recording transport does).
//!
//! # Writes
//!
//! `write` tries the socket first and buffers what the kernel did not
//! take. When the buffer goes above the high-water mark (64 KiB by default)
//! the protocol's `pause_writing` is called; when it drains to the
//! low-water mark (16 KiB) `resume_writing` follows. A write after
//! `close`/`abort` returns [`Error::Closed`]: nothing is dropped silently.
//!
//! # A handle that outlives its connection
//!
//! Methods on a transport whose connection is gone return errors or do
//! nothing; they never panic.

use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::protocol::Protocol;

pub(crate) mod buffer;
pub(crate) mod close_deadline;
pub(crate) mod datagram;
pub(crate) mod invoke;
pub mod pipe;
pub(crate) mod server;
pub(crate) mod stream;
pub(crate) mod stream_state;
pub mod subprocess;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod unix;
pub mod unix_datagram;

pub use buffer::{DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER};
pub use datagram::DatagramTransport;

/// An address of either end of a connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SocketAddress {
    /// An IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A Unix-domain socket address (path, abstract name, or unnamed).
    Unix(std::os::unix::net::SocketAddr),
}

impl SocketAddress {
    /// The IP address and port, if this is an internet address.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            SocketAddress::Inet(a) => Some(*a),
            SocketAddress::Unix(_) => None,
        }
    }
}

impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketAddress::Inet(a) => write!(f, "{a}"),
            SocketAddress::Unix(a) => match a.as_pathname() {
                Some(p) => write!(f, "{}", p.display()),
                None => write!(f, "{a:?}"),
            },
        }
    }
}

impl From<SocketAddr> for SocketAddress {
    fn from(a: SocketAddr) -> Self {
        SocketAddress::Inet(a)
    }
}

/// Byte counters of a transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Bytes received from the peer and handed to the protocol.
    pub bytes_received: u64,
    /// Bytes handed to the kernel (written to the peer).
    pub bytes_sent: u64,
}

/// What a transport does; implement it to make a new kind of transport.
/// Users call these through [`Transport`].
///
/// The contract for implementers: never call the protocol from inside
/// these methods (schedule callbacks on the loop instead), and keep every
/// method safe to call after the connection is gone.
pub trait TransportImpl {
    /// See [`Transport::write`].
    fn write(&self, data: &[u8]) -> Result<()>;
    /// See [`Transport::write_bytes`]. The default copies.
    fn write_bytes(&self, data: bytes::Bytes) -> Result<()> {
        self.write(&data)
    }
    /// See [`Transport::writelines`]. The default writes each in turn.
    fn writelines(&self, chunks: &[&[u8]]) -> Result<()> {
        for c in chunks {
            self.write(c)?;
        }
        Ok(())
    }
    /// See [`Transport::write_eof`].
    fn write_eof(&self) -> Result<()>;
    /// See [`Transport::can_write_eof`].
    fn can_write_eof(&self) -> bool;
    /// See [`Transport::close`].
    fn close(&self);
    /// See [`Transport::close_with_deadline`].
    fn close_with_deadline(&self, deadline: Duration);
    /// See [`Transport::abort`].
    fn abort(&self);
    /// See [`Transport::is_closing`].
    fn is_closing(&self) -> bool;
    /// See [`Transport::pause_reading`].
    fn pause_reading(&self);
    /// See [`Transport::resume_reading`].
    fn resume_reading(&self);
    /// See [`Transport::is_reading`].
    fn is_reading(&self) -> bool;
    /// See [`Transport::set_write_buffer_limits`].
    fn set_write_buffer_limits(&self, high: usize, low: usize);
    /// See [`Transport::get_write_buffer_limits`].
    fn get_write_buffer_limits(&self) -> (usize, usize);
    /// See [`Transport::get_write_buffer_size`].
    fn get_write_buffer_size(&self) -> usize;
    /// See [`Transport::peer_addr`].
    fn peer_addr(&self) -> Option<SocketAddress>;
    /// See [`Transport::local_addr`].
    fn local_addr(&self) -> Option<SocketAddress>;
    /// See [`Transport::stats`].
    fn stats(&self) -> TransportStats;
    /// See [`Transport::set_protocol`].
    fn set_protocol(&self, protocol: Rc<RefCell<dyn Protocol>>);
    /// See [`Transport::get_protocol`].
    fn get_protocol(&self) -> Option<Rc<RefCell<dyn Protocol>>>;
    /// Kind-specific details (TLS session, raw fd ...) for
    /// [`Transport::extra`]; `None` by default.
    fn extra(&self, key: &str) -> Option<Box<dyn std::any::Any>> {
        let _ = key;
        None
    }
}

/// The handle a protocol uses to write to, and close, its connection.
///
/// A cheap `Clone`; `!Send`. See the [module docs](self) for the write
/// and flow-control rules.
#[derive(Clone)]
pub struct Transport {
    inner: Rc<dyn TransportImpl>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("peer", &self.inner.peer_addr())
            .field("closing", &self.inner.is_closing())
            .finish()
    }
}

impl Transport {
    /// Wrap a transport implementation.
    pub fn new(inner: Rc<dyn TransportImpl>) -> Transport {
        Transport { inner }
    }

    /// The implementation behind this handle.
    pub fn inner(&self) -> &Rc<dyn TransportImpl> {
        &self.inner
    }

    /// Write `data`: sent to the kernel now if it takes it, buffered
    /// otherwise. Fails with [`Error::Closed`] once `close`/`abort` was
    /// called (nothing is queued then).
    #[inline]
    pub fn write(&self, data: &[u8]) -> Result<()> {
        self.inner.write(data)
    }

    /// Like [`write`](Self::write), but what the kernel does not take now
    /// is queued without a copy.
    #[inline]
    pub fn write_bytes(&self, data: bytes::Bytes) -> Result<()> {
        self.inner.write_bytes(data)
    }

    /// Write several buffers with as few system calls as possible
    /// (vectored I/O).
    #[inline]
    pub fn writelines(&self, chunks: &[&[u8]]) -> Result<()> {
        self.inner.writelines(chunks)
    }

    /// Close the writing side once the buffer is flushed (half-close);
    /// reading goes on.
    pub fn write_eof(&self) -> Result<()> {
        self.inner.write_eof()
    }

    /// Whether [`write_eof`](Self::write_eof) is supported.
    pub fn can_write_eof(&self) -> bool {
        self.inner.can_write_eof()
    }

    /// Stop reading, flush what was written, then close.
    /// `connection_lost(CloseReason::LocalClose)` follows on the loop.
    pub fn close(&self) {
        self.inner.close()
    }

    /// Like [`close`](Self::close), but abort if the buffer is not flushed
    /// within `deadline`.
    pub fn close_with_deadline(&self, deadline: Duration) {
        self.inner.close_with_deadline(deadline)
    }

    /// Drop the write buffer and reset the connection (`SO_LINGER` 0).
    /// `connection_lost(CloseReason::LocalAbort)` follows on the loop.
    pub fn abort(&self) {
        self.inner.abort()
    }

    /// `true` once `close` or `abort` was called or the connection is gone.
    pub fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    /// Stop calling `data_received` until [`resume_reading`](Self::resume_reading).
    /// Idempotent; works inside `connection_made`.
    pub fn pause_reading(&self) {
        self.inner.pause_reading()
    }

    /// Undo [`pause_reading`](Self::pause_reading). Idempotent.
    pub fn resume_reading(&self) {
        self.inner.resume_reading()
    }

    /// `false` while reading is paused or the transport is closing.
    pub fn is_reading(&self) -> bool {
        self.inner.is_reading()
    }

    /// Set the flow-control water marks (`low` is clamped to `high`).
    pub fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.inner.set_write_buffer_limits(high, low)
    }

    /// The `(high, low)` water marks.
    pub fn get_write_buffer_limits(&self) -> (usize, usize) {
        self.inner.get_write_buffer_limits()
    }

    /// Bytes written but not yet handed to the kernel.
    pub fn get_write_buffer_size(&self) -> usize {
        self.inner.get_write_buffer_size()
    }

    /// The peer's address, if known.
    pub fn peer_addr(&self) -> Option<SocketAddress> {
        self.inner.peer_addr()
    }

    /// Our end's address, if known.
    pub fn local_addr(&self) -> Option<SocketAddress> {
        self.inner.local_addr()
    }

    /// Byte counters.
    pub fn stats(&self) -> TransportStats {
        self.inner.stats()
    }

    /// Hand the connection to another protocol; later callbacks go to it
    /// (its `connection_made` is not called: it is given the transport by
    /// whoever switches).
    pub fn set_protocol<P: Protocol>(&self, protocol: Rc<RefCell<P>>) {
        self.inner.set_protocol(protocol)
    }

    /// Like [`set_protocol`](Self::set_protocol) for a protocol already
    /// behind `dyn`.
    pub fn set_protocol_dyn(&self, protocol: Rc<RefCell<dyn Protocol>>) {
        self.inner.set_protocol(protocol)
    }

    /// The current protocol, `None` once the connection is gone.
    pub fn get_protocol(&self) -> Option<Rc<RefCell<dyn Protocol>>> {
        self.inner.get_protocol()
    }

    /// Kind-specific details, asyncio's `get_extra_info`. `None` when the
    /// transport has none. Stream sockets (TCP, Unix) give `"peername"`
    /// and `"sockname"` (a [`SocketAddress`]) and `"fd"` (the socket's
    /// `RawFd`, while the connection is open: for reading or setting
    /// socket options, never for I/O or closing); a TLS transport adds
    /// `"tls"` (a [`TlsInfo`](crate::tls::TlsInfo)).
    ///
    /// ```no_run
    /// # fn f(t: &protoloop::Transport) {
    /// let fd = *t.extra("fd").unwrap().downcast::<std::os::fd::RawFd>().unwrap();
    /// # let _ = fd; }
    /// ```
    pub fn extra(&self, key: &str) -> Option<Box<dyn std::any::Any>> {
        self.inner.extra(key)
    }

    /// `true` if both handles are the same connection.
    pub fn same(&self, other: &Transport) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

/// The protocol object of a connection, as returned next to the transport
/// by `create_connection` (asyncio's `(transport, protocol)` pair).
///
/// Borrow it only between callbacks and never across an `.await`:
/// [`with`](Self::with) takes a closure so the borrow cannot escape.
pub struct ProtocolHandle<P> {
    inner: Rc<RefCell<P>>,
}

impl<P> Clone for ProtocolHandle<P> {
    fn clone(&self) -> Self {
        ProtocolHandle {
            inner: self.inner.clone(),
        }
    }
}

impl<P> fmt::Debug for ProtocolHandle<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProtocolHandle")
    }
}

impl<P> ProtocolHandle<P> {
    /// Wrap a shared protocol.
    pub fn new(inner: Rc<RefCell<P>>) -> Self {
        ProtocolHandle { inner }
    }

    /// Run `f` with the protocol borrowed mutably.
    ///
    /// # Panics
    ///
    /// If called from inside one of this protocol's own callbacks (the
    /// protocol is already borrowed there; use `self` instead).
    pub fn with<R>(&self, f: impl FnOnce(&mut P) -> R) -> R {
        let mut p = self
            .inner
            .try_borrow_mut()
            .expect("ProtocolHandle::with called while the protocol is in a callback");
        f(&mut p)
    }

    /// The shared cell itself.
    pub fn rc(&self) -> &Rc<RefCell<P>> {
        &self.inner
    }
}

/// Refuse an operation on a closing transport.
pub(crate) fn closed<T>() -> Result<T> {
    Err(Error::Closed)
}
