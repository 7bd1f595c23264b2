//! [`CodecError`]: everything framing and message coding can refuse.

use std::fmt;
use std::io;
use std::sync::Arc;

/// Why a frame or message could not be encoded, decoded or sent.
///
/// Cheap to clone; every message says what was expected and what came.
///
/// ```
/// use protoloop::codec::CodecError;
/// let e = CodecError::FrameTooLarge { length: 70_000, max: 65_535 };
/// assert_eq!(
///     e.to_string(),
///     "frame too large: expected a length of at most 65535 bytes, got 70000"
/// );
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CodecError {
    /// A frame is longer than the codec's maximum frame length. On send,
    /// nothing was written; on receive, the framing adapter closes the
    /// connection with [`CloseReason::Protocol`](crate::CloseReason::Protocol)
    /// carrying this error (frames before it were delivered).
    FrameTooLarge {
        /// The frame's length: the payload to send, or the length prefix
        /// that was received (which may be far beyond any real frame).
        length: u64,
        /// The codec's maximum frame length.
        max: usize,
    },
    /// A varint length prefix did not end within 10 bytes or does not fit
    /// in 64 bits: the peer does not speak varint-delimited framing.
    BadVarint {
        /// How many bytes of the prefix were read.
        bytes: usize,
    },
    /// A frame's bytes are not a valid message of the expected type.
    Decode {
        /// The Rust type the frame should have decoded to.
        expected: &'static str,
        /// The length of the frame's payload.
        length: usize,
        /// prost's description of what is wrong.
        source: prost::DecodeError,
    },
    /// A frame decoded, but a proto2 `required` field of the message is
    /// not in it (prost alone would have given the field its default).
    MissingRequired {
        /// The message's full protobuf name, e.g. `"bank.GetBalance"`.
        message: &'static str,
        /// The missing field's name.
        field: &'static str,
        /// The missing field's number.
        tag: u32,
    },
    /// The stream ended in the middle of a frame: its bytes are reported,
    /// not dropped silently.
    PartialFrame {
        /// How many bytes of the unfinished frame arrived (prefix included).
        buffered: usize,
        /// How many bytes the whole frame needs (prefix included), when the
        /// length prefix itself arrived whole.
        expected: Option<u64>,
    },
    /// The transport refused the write (it is closing or closed); nothing
    /// was queued.
    Transport(crate::Error),
    /// An I/O error from the underlying tokio-util codec.
    Io(Arc<io::Error>),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::FrameTooLarge { length, max } => write!(
                f,
                "frame too large: expected a length of at most {max} bytes, got {length}"
            ),
            CodecError::BadVarint { bytes } => write!(
                f,
                "bad varint length prefix: expected at most 10 bytes encoding a 64-bit value, \
                 got {bytes} bytes that do not"
            ),
            CodecError::Decode {
                expected,
                length,
                source,
            } => write!(
                f,
                "undecodable frame: expected a {expected} message, \
                 got {length} bytes that do not decode as one ({source})"
            ),
            CodecError::MissingRequired {
                message,
                field,
                tag,
            } => write!(
                f,
                "missing required field: expected a {message} with field {tag} ({field}), \
                 got one without it"
            ),
            CodecError::PartialFrame {
                buffered,
                expected: Some(n),
            } => write!(
                f,
                "stream ended inside a frame: expected {n} bytes, got {buffered}"
            ),
            CodecError::PartialFrame {
                buffered,
                expected: None,
            } => write!(
                f,
                "stream ended inside a frame's length prefix: expected a whole prefix, \
                 got {buffered} bytes"
            ),
            CodecError::Transport(e) => write!(f, "could not send: {e}"),
            CodecError::Io(e) => write!(f, "framing I/O error: {e}"),
        }
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CodecError::Decode { source, .. } => Some(source),
            CodecError::Transport(e) => Some(e),
            CodecError::Io(e) => Some(&**e),
            _ => None,
        }
    }
}

/// tokio-util's `Decoder` needs this; the frame codec never returns one in
/// practice (it checks lengths before tokio-util's codec sees them).
impl From<io::Error> for CodecError {
    fn from(e: io::Error) -> Self {
        CodecError::Io(Arc::new(e))
    }
}

impl From<crate::Error> for CodecError {
    fn from(e: crate::Error) -> Self {
        CodecError::Transport(e)
    }
}
