//! [`RpcError`]: why a call produced no reply.

use std::fmt;
use std::time::Duration;

use crate::codec::CodecError;
use crate::protocol::CloseReason;

/// Why a call produced no reply. Cheap to clone: one connection loss is
/// handed to every pending call.
///
/// ```
/// use std::time::Duration;
/// use protoloop::rpc::RpcError;
/// let e = RpcError::Timeout { after: Duration::from_secs(2) };
/// assert_eq!(e.to_string(), "no reply: expected one within 2s, got none");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RpcError {
    /// The request could not be framed (for example it is over the frame
    /// limit); it was not sent.
    Codec(CodecError),
    /// No reply came within the call's deadline. The request may have
    /// reached the server; a reply that comes later is thrown away.
    Timeout {
        /// The deadline the call had.
        after: Duration,
    },
    /// The connection ended before the reply came, for this reason (a
    /// reply that did not match any call shows here as
    /// [`CloseReason::Protocol`]). The request may have reached the server.
    ConnectionLost(CloseReason),
    /// Connecting failed: the first connection, or reconnecting, which
    /// gave up after its last attempt.
    Connect(crate::Error),
    /// The client was closed with [`RpcClient::close`](super::RpcClient::close).
    Closed,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::Codec(e) => write!(f, "request not sent: {e}"),
            RpcError::Timeout { after } => {
                write!(f, "no reply: expected one within {after:?}, got none")
            }
            RpcError::ConnectionLost(r) => write!(f, "connection lost before the reply: {r}"),
            RpcError::Connect(e) => write!(f, "no connection: {e}"),
            RpcError::Closed => f.write_str("the client is closed"),
        }
    }
}

impl std::error::Error for RpcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RpcError::Codec(e) => Some(e),
            RpcError::Connect(e) => Some(e),
            _ => None,
        }
    }
}

impl From<CodecError> for RpcError {
    fn from(e: CodecError) -> Self {
        RpcError::Codec(e)
    }
}
