//! [`MessageCodec`]: typed prost messages over a [`FrameCodec`].

use std::fmt;
use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{CodecError, FrameCodec, RequiredFields};

/// Decodes frames into `In` messages and encodes `Out` messages into
/// frames: a `tokio_util::codec` [`Decoder`] and [`Encoder`] on a plain
/// `BytesMut`.
///
/// A message is encoded straight after its length prefix, with no
/// intermediate copy; an oversize message is refused before anything is
/// written.
///
/// A decoded message missing one of its proto2 `required` fields is
/// refused with [`CodecError::MissingRequired`]. The crate's own messages
/// ([`proto`](crate::proto)) are checked without being asked; give other
/// messages' fields with [`required`](Self::required).
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
    /// Checked on each decoded frame.
    required: Option<RequiredFields>,
    // `fn` keeps the codec `Send`/`Sync` whatever the message types are.
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> fmt::Debug for MessageCodec<In, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageCodec")
            .field("in", &std::any::type_name::<In>())
            .field("out", &std::any::type_name::<Out>())
            .field("frames", &self.frames)
            .field("required", &self.required)
            .finish()
    }
}

impl<In, Out> Clone for MessageCodec<In, Out> {
    fn clone(&self) -> Self {
        MessageCodec {
            frames: self.frames.clone(),
            required: self.required,
            _types: PhantomData,
        }
    }
}

impl<In: 'static, Out> Default for MessageCodec<In, Out> {
    fn default() -> Self {
        MessageCodec::new()
    }
}

impl<In: 'static, Out> MessageCodec<In, Out> {
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
            required: RequiredFields::of::<In>(),
            _types: PhantomData,
        }
    }
}

impl<In, Out> MessageCodec<In, Out> {
    /// Check decoded messages for these required fields (`None`: check
    /// nothing), in place of those of the crate's own generated `In`, if
    /// any ([`RequiredFields::of`]).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use protoloop::codec::{CodecError, MessageCodec, RequiredFields};
    /// use tokio_util::codec::Decoder;
    ///
    /// /// A message from elsewhere: `required int32 a = 1;`
    /// #[derive(Clone, PartialEq, prost::Message)]
    /// struct Ping {
    ///     #[prost(int32, required, tag = "1")]
    ///     a: i32,
    /// }
    ///
    /// let mut codec = MessageCodec::<Ping>::new()
    ///     .required(Some(RequiredFields::new("demo.Ping", &[(1, "a")])));
    /// let mut wire = BytesMut::from(&b"\x00\x00"[..]); // an empty frame
    /// assert!(matches!(
    ///     codec.decode(&mut wire),
    ///     Err(CodecError::MissingRequired { tag: 1, .. })
    /// ));
    /// ```
    pub fn required(mut self, fields: Option<RequiredFields>) -> Self {
        self.required = fields;
        self
    }

    /// The required fields checked on decode, if any.
    pub fn required_fields(&self) -> Option<RequiredFields> {
        self.required
    }

    /// The frame codec underneath.
    pub fn framing(&self) -> &FrameCodec {
        &self.frames
    }
}

impl<In: prost::Message + Default + 'static, Out> MessageCodec<In, Out> {
    /// Decode one frame's payload as an `In`, checking the required fields
    /// of the crate's own generated messages ([`RequiredFields::of`]).
    pub fn decode_payload(payload: Bytes) -> Result<In, CodecError> {
        decode_checked(payload.clone(), &payload, RequiredFields::of::<In>())
    }
}

impl<In: prost::Message + Default, Out> MessageCodec<In, Out> {
    /// Decode one frame's payload as an `In`, checking this codec's
    /// required fields.
    pub fn decode_message(&self, payload: Bytes) -> Result<In, CodecError> {
        decode_checked(payload.clone(), &payload, self.required)
    }
}

/// prost's decode, then one scan for missing required fields. Decoding
/// first leaves malformed bytes to prost's more precise error.
impl<In: prost::Message + Default, Out> MessageCodec<In, Out> {
    /// The next whole message at the front of `src` and the bytes it took,
    /// decoded in place (`Framed`'s path when nothing is buffered).
    pub(crate) fn decode_from_slice(&self, src: &[u8]) -> Result<Option<(In, usize)>, CodecError> {
        let Some((payload, used)) = self.frames.split_frame(src)? else {
            return Ok(None);
        };
        let message = decode_checked(payload, payload, self.required)?;
        Ok(Some((message, used)))
    }
}

fn decode_checked<M: prost::Message + Default>(
    payload: impl bytes::Buf,
    raw: &[u8],
    required: Option<RequiredFields>,
) -> Result<M, CodecError> {
    let message = M::decode(payload).map_err(|source| CodecError::Decode {
        expected: std::any::type_name::<M>(),
        length: raw.len(),
        source,
    })?;
    if let Some(required) = required {
        required.check(raw)?;
    }
    Ok(message)
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
            Some(frame) => self.decode_message(frame.freeze()).map(Some),
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        match self.frames.decode_eof(src)? {
            Some(frame) => self.decode_message(frame.freeze()).map(Some),
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
