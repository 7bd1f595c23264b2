//! [`MessageCodec`]: typed prost messages over a [`FrameCodec`].

use std::fmt;
use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{CodecError, FrameCodec};

/// Decodes frames into `In` messages and encodes `Out` messages into
/// frames: a `tokio_util::codec` [`Decoder`] and [`Encoder`] on a plain
/// `BytesMut`.
///
/// A message is encoded straight after its length prefix, with no
/// intermediate copy; an oversize message is refused before anything is
/// written.
///
/// ```
/// use bytes::BytesMut;
/// use protoloop::codec::MessageCodec;
/// use protoloop::proto::bank::GetBalance;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = MessageCodec::<GetBalance>::new();
/// let mut wire = BytesMut::new();
/// let msg = GetBalance { customer_id: "Jane Doe".into() };
/// codec.encode(&msg, &mut wire).unwrap();
/// assert_eq!(&wire[..], b"\x00\x0a\x0a\x08Jane Doe");
/// assert_eq!(codec.decode(&mut wire).unwrap(), Some(msg));
/// ```
pub struct MessageCodec<In, Out = In> {
    frames: FrameCodec,
    // `fn` keeps the codec `Send`/`Sync` whatever the message types are.
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> fmt::Debug for MessageCodec<In, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageCodec")
            .field("in", &std::any::type_name::<In>())
            .field("out", &std::any::type_name::<Out>())
            .field("frames", &self.frames)
            .finish()
    }
}

impl<In, Out> Clone for MessageCodec<In, Out> {
    fn clone(&self) -> Self {
        MessageCodec {
            frames: self.frames.clone(),
            _types: PhantomData,
        }
    }
}

impl<In, Out> Default for MessageCodec<In, Out> {
    fn default() -> Self {
        MessageCodec::new()
    }
}

impl<In, Out> MessageCodec<In, Out> {
    /// The demo's framing ([`FrameCodec::new`]).
    pub fn new() -> Self {
        MessageCodec::with_framing(FrameCodec::new())
    }

    /// Messages in the frames of `frames`.
    ///
    /// ```
    /// use protoloop::codec::{FrameCodec, LengthPrefix, MessageCodec};
    /// use protoloop::proto::adder::{AddReply, AddRequest};
    ///
    /// let framing = FrameCodec::builder().length_prefix(LengthPrefix::U32Be).build();
    /// let codec = MessageCodec::<AddRequest, AddReply>::with_framing(framing);
    /// # let _ = codec;
    /// ```
    pub fn with_framing(frames: FrameCodec) -> Self {
        MessageCodec {
            frames,
            _types: PhantomData,
        }
    }

    /// The frame codec underneath.
    pub fn framing(&self) -> &FrameCodec {
        &self.frames
    }
}

impl<In: prost::Message + Default, Out> MessageCodec<In, Out> {
    /// Decode one frame's payload as an `In`.
    pub fn decode_payload(payload: Bytes) -> Result<In, CodecError> {
        let length = payload.len();
        In::decode(payload).map_err(|source| CodecError::Decode {
            expected: std::any::type_name::<In>(),
            length,
            source,
        })
    }
}

impl<In, Out: prost::Message> MessageCodec<In, Out> {
    /// Append `message` as one frame to `dst`. An oversize message is
    /// refused and nothing is appended.
    pub fn encode_into(&self, message: &Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        let len = message.encoded_len();
        self.frames.check_length(len)?;
        dst.reserve(self.frames.length_prefix().header_len(len) + len);
        self.frames.put_header(len, dst);
        message
            .encode(dst)
            .expect("a BytesMut grows to take any message");
        Ok(())
    }

    /// `message` as one frame, ready for a transport's `write_bytes`.
    ///
    /// ```
    /// use protoloop::codec::MessageCodec;
    /// use protoloop::proto::customer::Reply;
    ///
    /// let codec = MessageCodec::<(), Reply>::new();
    /// let frame = codec.encode_frame(&Reply { success: true, balance: 400.0 }).unwrap();
    /// assert_eq!(&frame[..], b"\x00\x07\x08\x01\x15\x00\x00\xc8\x43");
    /// ```
    pub fn encode_frame(&self, message: &Out) -> Result<Bytes, CodecError> {
        let mut buf = BytesMut::new();
        self.encode_into(message, &mut buf)?;
        Ok(buf.freeze())
    }
}

impl<In: prost::Message + Default, Out> Decoder for MessageCodec<In, Out> {
    type Item = In;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        match self.frames.decode(src)? {
            Some(frame) => Self::decode_payload(frame.freeze()).map(Some),
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        match self.frames.decode_eof(src)? {
            Some(frame) => Self::decode_payload(frame.freeze()).map(Some),
            None => Ok(None),
        }
    }
}

impl<In, Out: prost::Message> Encoder<&Out> for MessageCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, message: &Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_into(message, dst)
    }
}
