//! Length-prefixed protobuf framing: a frame codec, a typed message codec
//! over it, and [`Framed`], the adapter that makes a [`MessageHandler`] a
//! [`Protocol`](crate::Protocol).
//!
//! # Wire format
//!
//! A frame is a length prefix, then that many bytes of payload; the
//! length does not count the prefix. The default is the ATM demo's, a
//! 2-byte unsigned big-endian length (Python's `struct.pack("!H", n)`):
//!
//! ```text
//!  0       1       2                                 2 + len
//! +-------+-------+--------------------------------+
//! |  len (u16 BE) |  payload: one protobuf message  |
//! +-------+-------+--------------------------------+
//!
//!  GetBalance("Jane Doe"):
//!  00 0a | 0a 08 4a 61 6e 65 20 44 6f 65
//!  len=10  field 1, 8 bytes, "Jane Doe"
//! ```
//!
//! A 4-byte big-endian length and a protobuf varint length are options
//! ([`LengthPrefix`]); so is the maximum frame length
//! ([`FrameCodecBuilder::max_frame_length`]), 65,535 bytes by default with
//! the 2-byte prefix and 8 MiB with the others.
//!
//! # What each piece owns
//!
//! - [`FrameCodec`]: bytes to payloads and back, on a bare `BytesMut`
//!   (tokio-util's `Decoder`/`Encoder`, no runtime): the sans-IO core,
//!   testable one byte at a time.
//! - [`MessageCodec`]: prost messages to frames and back.
//! - [`Framed`] + [`MessageHandler`] + [`MessageSender`]: the connection
//!   side. Its promises (every frame of a read delivered, split frames
//!   joined, nothing delivered while reading is paused, bad input closing
//!   the connection with a typed [`CloseReason::Protocol`](crate::CloseReason::Protocol))
//!   are listed on [`Framed`].
//!
//! # Errors
//!
//! Everything refused is a [`CodecError`]: too large (on send nothing is
//! written), not a valid message (including a proto2 message missing a
//! `required` field: see [`Required`]), cut short at the end of the
//! stream, or sent on a closed connection.

mod error;
mod frame;
mod framed;
mod message;
mod required;
pub(crate) mod sender;

pub use error::CodecError;
pub use frame::{DEFAULT_MAX_FRAME_LENGTH, FrameCodec, FrameCodecBuilder, LengthPrefix};
pub use framed::{Framed, MessageHandler};
pub use message::MessageCodec;
pub use required::{Required, RequiredFields};
pub use sender::MessageSender;
