//! The traits users implement and the typed [`CloseReason`] every
//! `connection_lost` receives:
//!
//! - [`Protocol`]: stream connections (TCP, Unix, TLS, pipes);
//!   [`BufferedProtocol`] (through [`Buffered`]) reads into its own buffer.
//! - [`DatagramProtocol`]: UDP and Unix datagram endpoints.
//! - [`SubprocessProtocol`]: a child process and its pipes.
//!
//! # The callback contract
//!
//! A transport drives its protocol in this order, exactly as asyncio does:
//!
//! ```text
//! connection_made  (exactly once, first)
//! data_received*   (any number of times)
//! eof_received?    (at most once)
//! connection_lost  (exactly once, last; nothing after it)
//! ```
//!
//! `pause_writing` / `resume_writing` may be called between
//! `connection_made` and `connection_lost`, always in pairs: a
//! `resume_writing` only ever follows a `pause_writing`.
//!
//! Transport methods never call back into the protocol re-entrantly: what
//! they cause (for example `connection_lost` after `close()`) is scheduled
//! on the loop. No internal borrow is held while protocol code runs, so a
//! callback may call any transport method.
//!
//! A panic inside a callback is caught by the loop: that connection is
//! aborted, `connection_lost(CloseReason::Panic(..))` is delivered, the
//! loop's exception handler is told, and every other connection goes on.

use std::fmt;
use std::io;
use std::sync::Arc;

use crate::transport::Transport;

/// Why a connection ended; passed to [`Protocol::connection_lost`].
///
/// Cheap to clone (sources are behind `Arc`), so one reason can be handed to
/// every pending request of a request/reply client.
///
/// ```
/// use protoloop::CloseReason;
/// let r = CloseReason::LocalClose;
/// assert!(!r.is_error());
/// assert_eq!(r.to_string(), "closed locally");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CloseReason {
    /// `close()` was called on our side and the buffer was flushed.
    LocalClose,
    /// `abort()` was called on our side: buffered data was dropped and the
    /// connection reset.
    LocalAbort,
    /// The peer closed its side (EOF) and the protocol's `eof_received`
    /// returned `false`, so the transport closed too.
    PeerEof,
    /// The peer reset the connection (`ECONNRESET`, `EPIPE`).
    PeerReset(Arc<io::Error>),
    /// A deadline passed: connect, close, handshake or idle timeout.
    Timeout(TimeoutKind),
    /// The TLS layer failed (handshake, certificate, alert, bad record).
    Tls(rustls::Error),
    /// The bytes on the wire broke the application protocol (bad frame,
    /// oversize length, undecodable message, partial frame at EOF).
    Protocol(Arc<dyn std::error::Error + Send + Sync>),
    /// Any other I/O error on the connection.
    Io(Arc<io::Error>),
    /// A protocol callback panicked; the message of the panic.
    Panic(Arc<str>),
}

/// Which deadline passed, in a [`CloseReason::Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// `close_with_deadline` could not flush in time.
    Close,
    /// A TLS handshake took too long.
    Handshake,
    /// A TLS shutdown (close_notify exchange) took too long.
    Shutdown,
    /// The connection was idle longer than the server allows.
    Idle,
    /// A child process exited but one of its pipes stayed open (held by a
    /// process it started) longer than
    /// `SubprocessOptions::close_pipes_after_exit` allows.
    PipeAfterExit,
}

impl CloseReason {
    /// `true` unless the connection ended in an orderly way
    /// (`LocalClose` or `PeerEof`).
    pub fn is_error(&self) -> bool {
        !matches!(self, CloseReason::LocalClose | CloseReason::PeerEof)
    }

    /// Classify an I/O error: resets and broken pipes become
    /// [`CloseReason::PeerReset`], everything else [`CloseReason::Io`].
    ///
    /// ```
    /// use protoloop::CloseReason;
    /// let e = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    /// assert!(matches!(CloseReason::from_io(e), CloseReason::PeerReset(_)));
    /// ```
    pub fn from_io(err: io::Error) -> CloseReason {
        match err.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => CloseReason::PeerReset(Arc::new(err)),
            _ => CloseReason::Io(Arc::new(err)),
        }
    }

    /// A protocol error from any error value.
    pub fn protocol<E: std::error::Error + Send + Sync + 'static>(err: E) -> CloseReason {
        CloseReason::Protocol(Arc::new(err))
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::LocalClose => f.write_str("closed locally"),
            CloseReason::LocalAbort => f.write_str("aborted locally"),
            CloseReason::PeerEof => f.write_str("closed by peer (EOF)"),
            CloseReason::PeerReset(e) => write!(f, "reset by peer: {e}"),
            CloseReason::Timeout(k) => write!(f, "timed out ({k:?})"),
            CloseReason::Tls(e) => write!(f, "TLS error: {e}"),
            CloseReason::Protocol(e) => write!(f, "protocol error: {e}"),
            CloseReason::Io(e) => write!(f, "I/O error: {e}"),
            CloseReason::Panic(m) => write!(f, "callback panicked: {m}"),
        }
    }
}

/// A stream protocol: the callbacks a stream transport (TCP, Unix, TLS,
/// pipe) calls. Only `data_received` must be written; the rest default to
/// doing nothing.
///
/// ```
/// use protoloop::{CloseReason, Protocol, Transport};
///
/// /// Writes back everything it receives.
/// struct Echo {
///     transport: Option<Transport>,
/// }
///
/// impl Protocol for Echo {
///     fn connection_made(&mut self, transport: Transport) {
///         self.transport = Some(transport);
///     }
///     fn data_received(&mut self, data: &[u8]) {
///         if let Some(t) = &self.transport {
///             let _ = t.write(data);
///         }
///     }
///     fn connection_lost(&mut self, reason: CloseReason) {
///         if reason.is_error() {
///             eprintln!("connection lost: {reason}");
///         }
///     }
/// }
/// ```
pub trait Protocol: 'static {
    /// The connection is up; keep `transport` to write and close.
    fn connection_made(&mut self, transport: Transport) {
        let _ = transport;
    }

    /// Some bytes arrived. The slice is only valid for this call.
    fn data_received(&mut self, data: &[u8]);

    /// The peer closed its writing side. Return `true` to keep our writing
    /// side open (half-close); `false` (the default) closes the transport.
    fn eof_received(&mut self) -> bool {
        false
    }

    /// The connection is gone; called exactly once, last.
    fn connection_lost(&mut self, reason: CloseReason) {
        let _ = reason;
    }

    /// The transport's write buffer went above its high-water mark.
    fn pause_writing(&mut self) {}

    /// The transport's write buffer drained to its low-water mark.
    fn resume_writing(&mut self) {}

    /// The server is shutting down gracefully (`Server::shutdown`).
    /// Return `false` (the default) to have the transport closed now, after
    /// flushing what was written; return `true` to finish the work in
    /// flight and close it yourself. Whatever is still open when the grace
    /// period ends is aborted.
    fn drain_requested(&mut self) -> bool {
        false
    }

    /// Receive straight into the protocol's own buffer: return `Some`
    /// with writable space, and the transport reads into it and calls
    /// [`Protocol::buffer_updated`]. The default (`None`) uses
    /// `data_received` with the loop's shared read buffer.
    /// [`Buffered`] implements this for a [`BufferedProtocol`].
    fn get_buffer(&mut self, size_hint: usize) -> Option<&mut [u8]> {
        let _ = size_hint;
        None
    }

    /// `nbytes` were written into the buffer from [`Protocol::get_buffer`].
    fn buffer_updated(&mut self, nbytes: usize) {
        let _ = nbytes;
    }
}

/// asyncio's `BufferedProtocol`: the transport reads straight into a buffer
/// the protocol lends it, saving a copy. Wrap it in [`Buffered`] to use it
/// wherever a [`Protocol`] is expected.
///
/// ```
/// use protoloop::{Buffered, BufferedProtocol};
///
/// struct Counter { buf: Vec<u8>, total: usize }
/// impl BufferedProtocol for Counter {
///     fn get_buffer(&mut self, _hint: usize) -> &mut [u8] { &mut self.buf }
///     fn buffer_updated(&mut self, n: usize) { self.total += n; }
/// }
/// let p = Buffered(Counter { buf: vec![0; 4096], total: 0 });
/// # let _ = p;
/// ```
pub trait BufferedProtocol: 'static {
    /// See [`Protocol::connection_made`].
    fn connection_made(&mut self, transport: Transport) {
        let _ = transport;
    }
    /// Lend the transport a non-empty buffer to read into.
    fn get_buffer(&mut self, size_hint: usize) -> &mut [u8];
    /// `nbytes` of the lent buffer were filled.
    fn buffer_updated(&mut self, nbytes: usize);
    /// See [`Protocol::eof_received`].
    fn eof_received(&mut self) -> bool {
        false
    }
    /// See [`Protocol::connection_lost`].
    fn connection_lost(&mut self, reason: CloseReason) {
        let _ = reason;
    }
    /// See [`Protocol::pause_writing`].
    fn pause_writing(&mut self) {}
    /// See [`Protocol::resume_writing`].
    fn resume_writing(&mut self) {}
}

/// Adapts a [`BufferedProtocol`] to [`Protocol`]. Transports that can read
/// into the lent buffer do; the others (TLS, which decrypts into its own
/// buffer) copy into it through `data_received`.
pub struct Buffered<P>(pub P);

impl<P: BufferedProtocol> Protocol for Buffered<P> {
    fn connection_made(&mut self, transport: Transport) {
        self.0.connection_made(transport)
    }
    fn data_received(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let buf = self.0.get_buffer(data.len());
            let n = buf.len().min(data.len());
            assert!(
                n > 0,
                "BufferedProtocol::get_buffer returned an empty buffer"
            );
            buf[..n].copy_from_slice(&data[..n]);
            self.0.buffer_updated(n);
            data = &data[n..];
        }
    }
    fn eof_received(&mut self) -> bool {
        self.0.eof_received()
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.0.connection_lost(reason)
    }
    fn pause_writing(&mut self) {
        self.0.pause_writing()
    }
    fn resume_writing(&mut self) {
        self.0.resume_writing()
    }
    fn get_buffer(&mut self, size_hint: usize) -> Option<&mut [u8]> {
        Some(self.0.get_buffer(size_hint))
    }
    fn buffer_updated(&mut self, nbytes: usize) {
        self.0.buffer_updated(nbytes)
    }
}

/// A subprocess protocol: the output of a child's pipes and its exit,
/// asyncio's `SubprocessProtocol` plus [`process_ended`](Self::process_ended).
///
/// # Order of callbacks
///
/// ```text
/// connection_made            (exactly once, first)
/// pipe_data_received*        (fd 1 and fd 2, interleaved as they arrive)
/// pipe_connection_lost(fd)   (once per piped fd: 0, 1, 2, in any order)
/// process_exited             (exactly once, when the child is reaped)
/// process_ended(status)      (exactly once, last: exited AND every pipe closed)
/// ```
///
/// `process_exited` may come before or after the pipes close: a child's
/// exit and the end of its output are separate events, and a process the
/// child started may keep a pipe open long after the child is gone.
/// `process_ended` is the one place that sees all output and the status.
/// Nothing is called after it.
///
/// A panic in one of these callbacks is reported to the loop's exception
/// handler and closes the transport (the child is killed if it still
/// runs); the remaining callbacks, `process_ended` included, still come.
///
/// ```
/// use std::process::ExitStatus;
/// use protoloop::{SubprocessProtocol, SubprocessTransport};
///
/// /// Collects what the child writes to stdout.
/// #[derive(Default)]
/// struct Capture {
///     out: Vec<u8>,
///     status: Option<ExitStatus>,
/// }
///
/// impl SubprocessProtocol for Capture {
///     fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
///         if fd == 1 {
///             self.out.extend_from_slice(data);
///         }
///     }
///     fn process_ended(&mut self, status: ExitStatus) {
///         self.status = Some(status);
///     }
/// }
/// ```
pub trait SubprocessProtocol: 'static {
    /// The child was started; keep `transport` to write to its stdin,
    /// signal it or close it. This handle does not keep the child alive
    /// (see `SubprocessOptions::kill_on_drop`).
    fn connection_made(&mut self, transport: crate::transport::subprocess::SubprocessTransport) {
        let _ = transport;
    }

    /// Bytes from the child's stdout (fd 1) or stderr (fd 2).
    fn pipe_data_received(&mut self, fd: i32, data: &[u8]);

    /// A pipe closed: fd 0 when stdin's write side is gone (closed by us,
    /// or the child stopped reading), fd 1 or 2 at the end of the child's
    /// output.
    fn pipe_connection_lost(&mut self, fd: i32, reason: CloseReason) {
        let _ = (fd, reason);
    }

    /// The child's stdin write buffer went above its high-water mark.
    fn pause_writing(&mut self) {}

    /// The child's stdin write buffer drained to its low-water mark.
    fn resume_writing(&mut self) {}

    /// The child exited and was reaped; the status is in
    /// `transport.returncode()`. Pipes may still be open.
    fn process_exited(&mut self) {}

    /// The child exited AND every pipe closed: called once, last.
    fn process_ended(&mut self, status: std::process::ExitStatus) {
        let _ = status;
    }
}

/// A datagram protocol: the callbacks a datagram endpoint (UDP, Unix
/// datagram) calls, asyncio's `DatagramProtocol`. Only
/// `datagram_received` must be written.
///
/// The contract is the stream one: `connection_made` first, exactly once;
/// `connection_lost` last, exactly once; nothing re-entrant; a panic
/// aborts the endpoint with [`CloseReason::Panic`]. An error is not the
/// end: after `error_received` the endpoint goes on.
///
/// ```
/// use protoloop::{DatagramProtocol, DatagramTransport, SocketAddress};
///
/// /// Sends every datagram back where it came from.
/// struct Echo(Option<DatagramTransport>);
///
/// impl DatagramProtocol for Echo {
///     fn connection_made(&mut self, t: DatagramTransport) {
///         self.0 = Some(t);
///     }
///     fn datagram_received(&mut self, data: &[u8], addr: SocketAddress) {
///         let _ = self.0.as_ref().unwrap().sendto(data, addr);
///     }
/// }
/// ```
pub trait DatagramProtocol: 'static {
    /// The endpoint is ready; keep `transport` to send and close.
    fn connection_made(&mut self, transport: crate::transport::DatagramTransport) {
        let _ = transport;
    }

    /// A datagram arrived from `addr`. The slice is only valid for this call.
    fn datagram_received(&mut self, data: &[u8], addr: crate::transport::SocketAddress);

    /// A send failed after the call that queued it returned, or the
    /// kernel reported an error for an earlier datagram (an ICMP port or
    /// host unreachable). `addr`: the destination the error concerns, when
    /// the kernel says (Linux `IP_RECVERR`/`IPV6_RECVERR`). The endpoint
    /// keeps working.
    fn error_received(&mut self, error: io::Error, addr: Option<crate::transport::SocketAddress>) {
        let _ = (error, addr);
    }

    /// The endpoint is closed; called exactly once, last.
    fn connection_lost(&mut self, reason: CloseReason) {
        let _ = reason;
    }

    /// The endpoint's send queue went above its high-water mark.
    fn pause_writing(&mut self) {}

    /// The endpoint's send queue drained to its low-water mark.
    fn resume_writing(&mut self) {}
}
