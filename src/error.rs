//! The crate's error type for loop and transport operations.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

/// Errors from loop and transport calls.
///
/// ```
/// use protoloop::Error;
/// let e = Error::Closed;
/// assert_eq!(e.to_string(), "transport is closing or closed");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The transport is closing or closed: the write (or other call) was
    /// refused and nothing was queued.
    Closed,
    /// `write` after `write_eof`: the writing side is already shut.
    EofWritten,
    /// This transport cannot half-close (see `can_write_eof`).
    EofNotSupported,
    /// An I/O error, with what was being done.
    Io {
        /// What the call was doing, e.g. "bind 127.0.0.1:80".
        context: String,
        /// The OS error.
        source: Arc<io::Error>,
    },
    /// No address could be connected; one error per address tried.
    Connect {
        /// The host name or address as given.
        target: String,
        /// Each resolved address and why connecting to it failed.
        attempts: Vec<(SocketAddr, Arc<io::Error>)>,
    },
    /// A host name resolved to no address, or did not resolve.
    Resolve {
        /// The host name as given.
        target: String,
        /// The resolver's error, if it gave one.
        source: Option<Arc<io::Error>>,
    },
    /// The operation did not finish before its deadline.
    Timeout,
    /// The future was cancelled.
    Cancelled,
    /// `run_until_complete`: the loop was stopped before the future finished.
    StoppedBeforeComplete,
    /// The loop is closed, or is not running on this thread.
    LoopClosed,
    /// The loop is already running on this thread (no nesting).
    LoopRunning,
    /// A blocking job in the executor panicked; its panic message.
    ExecutorPanic(Arc<str>),
    /// The feature is not available on this platform or for this kind of
    /// file descriptor.
    Unsupported(&'static str),
    /// A TLS configuration could not be built or a TLS session could not
    /// be started (bad certificate or key, no usable protocol version).
    Tls(rustls::Error),
    /// The TLS handshake did not complete; the reason the connection
    /// ended: [`CloseReason::Tls`](crate::CloseReason::Tls) with the
    /// rustls error (for example an untrusted certificate), a handshake
    /// timeout, or the peer closing or resetting the connection.
    TlsHandshake(crate::protocol::CloseReason),
}

impl Error {
    /// An [`Error::Io`] with a description of what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// The OS error kind for [`Error::Io`], `None` for other variants.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            Error::Connect { attempts, .. } => attempts.last().map(|(_, e)| e.kind()),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Closed => f.write_str("transport is closing or closed"),
            Error::EofWritten => f.write_str("write after write_eof"),
            Error::EofNotSupported => f.write_str("this transport cannot write EOF"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Connect { target, attempts } => {
                write!(f, "could not connect to {target}")?;
                for (i, (addr, e)) in attempts.iter().enumerate() {
                    write!(f, "{} {addr}: {e}", if i == 0 { ":" } else { ";" })?;
                }
                Ok(())
            }
            Error::Resolve { target, source } => match source {
                Some(e) => write!(f, "could not resolve {target}: {e}"),
                None => write!(f, "{target} resolved to no address"),
            },
            Error::Timeout => f.write_str("timed out"),
            Error::Cancelled => f.write_str("cancelled"),
            Error::StoppedBeforeComplete => {
                f.write_str("event loop stopped before the future completed")
            }
            Error::LoopClosed => f.write_str("event loop is closed or not running"),
            Error::LoopRunning => f.write_str("event loop is already running"),
            Error::ExecutorPanic(m) => write!(f, "executor job panicked: {m}"),
            Error::Unsupported(what) => write!(f, "unsupported: {what}"),
            Error::Tls(e) => write!(f, "TLS setup failed: {e}"),
            Error::TlsHandshake(r) => write!(f, "TLS handshake failed: {r}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(&**source),
            Error::Resolve {
                source: Some(s), ..
            } => Some(&**s),
            Error::Tls(e) => Some(e),
            _ => None,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
