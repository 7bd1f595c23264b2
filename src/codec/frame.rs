//! [`FrameCodec`]: length-prefixed frames on a bare `BytesMut`.
//!
//! The fixed-width prefixes are decoded by tokio-util's
//! `LengthDelimitedCodec`, set to leave the prefix in the buffer until the
//! whole frame is there (`num_skip(0)`), so this codec can always read the
//! length itself first and refuse an oversize frame with its numbers before
//! any of it is consumed. The varint prefix has its own decoder; it leaves
//! the buffer untouched until the prefix and the payload are both whole, so
//! a prefix split across reads is simply waited for.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use super::CodecError;

/// The longest frame a codec accepts unless told otherwise when the prefix
/// can express more than that: 8 MiB, as tokio-util's default.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 8 * 1024 * 1024;

/// The longest a varint can be: 10 bytes carry 64 bits.
const MAX_VARINT_LEN: usize = 10;

/// The most the decoder reserves ahead of the bytes that arrived for an
/// unfinished frame. A length prefix costs a peer a few bytes; reserving
/// all it announces would let each connection make us allocate up to the
/// maximum frame length for nothing. Beyond this the buffer grows as the
/// bytes actually come.
pub(crate) const MAX_RESERVE_AHEAD: usize = 64 * 1024;

/// How a frame's length is written in front of its bytes. The length never
/// counts the prefix itself.
///
/// ```
/// use protoloop::codec::LengthPrefix;
/// assert_eq!(LengthPrefix::default(), LengthPrefix::U16Be);
/// assert_eq!(LengthPrefix::U16Be.max_length(), 65_535);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LengthPrefix {
    /// 2 bytes, unsigned big-endian: Python's `struct.pack("!H", n)`, the
    /// ATM demo's format. The default.
    #[default]
    U16Be,
    /// 4 bytes, unsigned big-endian: `struct.pack("!I", n)`.
    U32Be,
    /// A protobuf base-128 varint: Java's `writeDelimitedTo`, prost's
    /// `encode_length_delimited`.
    Varint,
}

impl LengthPrefix {
    /// The largest length the prefix can express.
    pub fn max_length(self) -> u64 {
        match self {
            LengthPrefix::U16Be => u16::MAX as u64,
            LengthPrefix::U32Be => u32::MAX as u64,
            LengthPrefix::Varint => u64::MAX,
        }
    }

    /// The number of prefix bytes in front of a payload of `len` bytes.
    ///
    /// ```
    /// use protoloop::codec::LengthPrefix;
    /// assert_eq!(LengthPrefix::U32Be.header_len(10), 4);
    /// assert_eq!(LengthPrefix::Varint.header_len(127), 1);
    /// assert_eq!(LengthPrefix::Varint.header_len(128), 2);
    /// ```
    pub fn header_len(self, len: usize) -> usize {
        match self {
            LengthPrefix::U16Be => 2,
            LengthPrefix::U32Be => 4,
            LengthPrefix::Varint => prost::encoding::encoded_len_varint(len as u64),
        }
    }
}

/// Length-prefixed frames: a `tokio_util::codec` [`Decoder`] (whole
/// payloads out, prefix stripped) and [`Encoder`] (payload in, prefix
/// added), on a plain `BytesMut`: no runtime, no I/O.
///
/// ```text
/// U16Be (default)        U32Be                      Varint
/// +--------+---------+   +----------------+------+  +-----------+------+
/// | len:u16| payload |   |     len:u32    | pay- |  | len: 1-10 | pay- |
/// |   BE   | len B   |   |       BE       | load |  | B varint  | load |
/// +--------+---------+   +----------------+------+  +-----------+------+
/// ```
///
/// ```
/// use bytes::BytesMut;
/// use protoloop::codec::FrameCodec;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = FrameCodec::new();
/// let mut wire = BytesMut::new();
/// codec.encode(&b"hi"[..], &mut wire).unwrap();
/// assert_eq!(&wire[..], b"\x00\x02hi");
/// assert_eq!(&codec.decode(&mut wire).unwrap().unwrap()[..], b"hi");
/// assert!(wire.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct FrameCodec {
    prefix: LengthPrefix,
    max: usize,
    /// Decodes the fixed-width prefixes; `None` for varint.
    decoder: Option<LengthDelimitedCodec>,
    /// Encodes the fixed-width prefixes; `None` for varint.
    encoder: Option<LengthDelimitedCodec>,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new()
    }
}

impl FrameCodec {
    /// The demo's framing: a 2-byte big-endian length, frames up to
    /// 65,535 bytes.
    pub fn new() -> FrameCodec {
        FrameCodec::builder().build()
    }

    /// A builder starting from the defaults of [`FrameCodec::new`].
    pub fn builder() -> FrameCodecBuilder {
        FrameCodecBuilder::default()
    }

    /// The length prefix in use.
    pub fn length_prefix(&self) -> LengthPrefix {
        self.prefix
    }

    /// The longest payload accepted, in bytes.
    pub fn max_frame_length(&self) -> usize {
        self.max
    }

    /// Refuse a payload of `len` bytes if it is over the limit.
    pub fn check_length(&self, len: usize) -> Result<(), CodecError> {
        if len > self.max {
            return Err(CodecError::FrameTooLarge {
                length: len as u64,
                max: self.max,
            });
        }
        Ok(())
    }

    /// Write the prefix for a payload of `len` bytes (which the caller then
    /// appends). Used by the message codec to encode a message straight
    /// after its prefix; [`check_length`](Self::check_length) first.
    pub(crate) fn put_header(&self, len: usize, dst: &mut BytesMut) {
        debug_assert!(len <= self.max);
        match self.prefix {
            LengthPrefix::U16Be => dst.put_u16(len as u16),
            LengthPrefix::U32Be => dst.put_u32(len as u32),
            LengthPrefix::Varint => prost::encoding::encode_varint(len as u64, dst),
        }
    }

    fn decode_fixed(
        &mut self,
        head: usize,
        src: &mut BytesMut,
    ) -> Result<Option<BytesMut>, CodecError> {
        if src.len() < head {
            return Ok(None);
        }
        let len = match head {
            2 => u16::from_be_bytes([src[0], src[1]]) as u64,
            _ => u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as u64,
        };
        if len > self.max as u64 {
            return Err(CodecError::FrameTooLarge {
                length: len,
                max: self.max,
            });
        }
        // tokio-util reserves the whole announced frame as soon as it reads
        // a prefix; only hand it whole frames, and reserve a bounded amount
        // ourselves.
        let total = head + len as usize;
        if src.len() < total {
            Self::reserve_ahead(src, total);
            return Ok(None);
        }
        let decoder = self.decoder.as_mut().expect("fixed prefixes have one");
        match decoder.decode(src)? {
            Some(mut frame) => {
                frame.advance(head);
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// Make room for some of the `total` bytes the frame at the front of
    /// `src` needs, never more than [`MAX_RESERVE_AHEAD`] past what is
    /// there.
    fn reserve_ahead(src: &mut BytesMut, total: usize) {
        let missing = total.saturating_sub(src.len());
        src.reserve(missing.min(MAX_RESERVE_AHEAD));
    }

    /// The whole frame at the front of `src`, without copying: its payload
    /// and the bytes it takes in all (prefix included); `Ok(None)` until it
    /// is whole. The same frames and errors as the `Decoder`, which
    /// `Framed` falls back to once bytes have to be kept between reads.
    pub(crate) fn split_frame<'a>(
        &self,
        src: &'a [u8],
    ) -> Result<Option<(&'a [u8], usize)>, CodecError> {
        let (len, head) = match self.prefix {
            LengthPrefix::U16Be if src.len() >= 2 => {
                (u16::from_be_bytes([src[0], src[1]]) as u64, 2)
            }
            LengthPrefix::U32Be if src.len() >= 4 => (
                u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as u64,
                4,
            ),
            LengthPrefix::Varint => match Self::peek_varint(src)? {
                Some(v) => v,
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        if len > self.max as u64 {
            return Err(CodecError::FrameTooLarge {
                length: len,
                max: self.max,
            });
        }
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(head))
            .ok_or_else(|| CodecError::FrameTooLarge {
                length: len,
                max: self.max,
            })?;
        Ok(src.get(head..end).map(|payload| (payload, end)))
    }

    /// Read a varint prefix without consuming it: `Ok(None)` if it is not
    /// whole yet, else `(value, prefix bytes)`.
    fn peek_varint(src: &[u8]) -> Result<Option<(u64, usize)>, CodecError> {
        let mut value = 0u64;
        for (i, &b) in src.iter().take(MAX_VARINT_LEN).enumerate() {
            // The 10th byte may only carry the 64th bit.
            if i == MAX_VARINT_LEN - 1 && b > 1 {
                return Err(CodecError::BadVarint { bytes: i + 1 });
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(Some((value, i + 1)));
            }
        }
        if src.len() >= MAX_VARINT_LEN {
            return Err(CodecError::BadVarint {
                bytes: MAX_VARINT_LEN,
            });
        }
        Ok(None)
    }

    fn decode_varint(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        let Some((len, head)) = Self::peek_varint(src)? else {
            return Ok(None);
        };
        if len > self.max as u64 {
            return Err(CodecError::FrameTooLarge {
                length: len,
                max: self.max,
            });
        }
        let len = len as usize;
        if src.len() < head + len {
            Self::reserve_ahead(src, head + len);
            return Ok(None);
        }
        src.advance(head);
        Ok(Some(src.split_to(len)))
    }

    /// How many bytes the frame at the front of `src` needs in all, if its
    /// prefix is whole.
    fn expected_total(&self, src: &[u8]) -> Option<u64> {
        match self.prefix {
            LengthPrefix::U16Be if src.len() >= 2 => {
                Some(2 + u16::from_be_bytes([src[0], src[1]]) as u64)
            }
            LengthPrefix::U32Be if src.len() >= 4 => {
                Some(4 + u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as u64)
            }
            LengthPrefix::Varint => match Self::peek_varint(src) {
                Ok(Some((len, head))) => Some(head as u64 + len),
                _ => None,
            },
            _ => None,
        }
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = CodecError;

    /// The next whole payload, `None` until one is there. An oversize
    /// length is refused as soon as the prefix is whole.
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        match self.prefix {
            LengthPrefix::U16Be => self.decode_fixed(2, src),
            LengthPrefix::U32Be => self.decode_fixed(4, src),
            LengthPrefix::Varint => self.decode_varint(src),
        }
    }

    /// Like `decode`, but bytes left over at the end of the stream are a
    /// [`CodecError::PartialFrame`].
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(CodecError::PartialFrame {
                buffered: src.len(),
                expected: self.expected_total(src),
            }),
        }
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = CodecError;

    /// Append the prefix and `data`; an oversize `data` is refused with
    /// nothing appended.
    fn encode(&mut self, data: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        self.check_length(data.len())?;
        match self.encoder.as_mut() {
            Some(enc) => enc.encode(data, dst)?,
            None => {
                dst.reserve(self.prefix.header_len(data.len()) + data.len());
                self.put_header(data.len(), dst);
                dst.extend_from_slice(data);
            }
        }
        Ok(())
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, data: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        Encoder::<&[u8]>::encode(self, &data, dst)
    }
}

/// Builds a [`FrameCodec`]. Starts from safe defaults: the demo's 2-byte
/// prefix, and a maximum frame length of what the prefix can express, but
/// never more than [`DEFAULT_MAX_FRAME_LENGTH`].
///
/// ```
/// use protoloop::codec::{FrameCodec, LengthPrefix};
/// let codec = FrameCodec::builder()
///     .length_prefix(LengthPrefix::U32Be)
///     .max_frame_length(1 << 20)
///     .build();
/// assert_eq!(codec.max_frame_length(), 1 << 20);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCodecBuilder {
    prefix: LengthPrefix,
    max: Option<usize>,
}

impl FrameCodecBuilder {
    /// How lengths are written (default [`LengthPrefix::U16Be`]).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use protoloop::codec::{FrameCodec, LengthPrefix};
    /// use tokio_util::codec::Encoder;
    ///
    /// let mut codec = FrameCodec::builder().length_prefix(LengthPrefix::Varint).build();
    /// let mut wire = BytesMut::new();
    /// codec.encode(&[7u8; 300][..], &mut wire).unwrap();
    /// assert_eq!(&wire[..2], [0xac, 0x02]); // 300 as a varint
    /// ```
    pub fn length_prefix(mut self, prefix: LengthPrefix) -> Self {
        self.prefix = prefix;
        self
    }

    /// The longest payload to send or accept, in bytes. Values beyond what
    /// the prefix can express are lowered to that (65,535 for the 2-byte
    /// prefix), and values beyond what a buffer can hold to just under
    /// `isize::MAX`.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use protoloop::codec::{CodecError, FrameCodec};
    /// use tokio_util::codec::{Decoder, Encoder};
    ///
    /// let mut codec = FrameCodec::builder().max_frame_length(4).build();
    /// let mut wire = BytesMut::new();
    /// let err = codec.encode(&b"hello"[..], &mut wire).unwrap_err();
    /// assert!(matches!(err, CodecError::FrameTooLarge { length: 5, max: 4 }));
    /// assert!(wire.is_empty()); // nothing was written
    ///
    /// let mut incoming = BytesMut::from(&b"\x00\x05hello"[..]);
    /// assert!(codec.decode(&mut incoming).is_err());
    ///
    /// let big = FrameCodec::builder().max_frame_length(1 << 20).build();
    /// assert_eq!(big.max_frame_length(), 65_535);
    /// ```
    pub fn max_frame_length(mut self, max: usize) -> Self {
        self.max = Some(max);
        self
    }

    /// The codec.
    pub fn build(self) -> FrameCodec {
        // No buffer holds more than `isize::MAX` bytes; keeping the prefix
        // and the payload under that also keeps their sum from
        // overflowing on a length a peer announces.
        let buffer_limit = isize::MAX as usize - MAX_VARINT_LEN;
        let limit = usize::try_from(self.prefix.max_length())
            .unwrap_or(usize::MAX)
            .min(buffer_limit);
        let max = self.max.unwrap_or(DEFAULT_MAX_FRAME_LENGTH).min(limit);
        let (decoder, encoder) = match self.prefix {
            LengthPrefix::Varint => (None, None),
            LengthPrefix::U16Be | LengthPrefix::U32Be => {
                let head = match self.prefix {
                    LengthPrefix::U16Be => 2,
                    _ => 4,
                };
                let decoder = LengthDelimitedCodec::builder()
                    .length_field_length(head)
                    .big_endian()
                    .max_frame_length(max)
                    // Keep the prefix until the frame is whole (see the
                    // module docs); the decoder strips it afterwards.
                    .num_skip(0)
                    .length_adjustment(head as isize)
                    .new_codec();
                let encoder = LengthDelimitedCodec::builder()
                    .length_field_length(head)
                    .big_endian()
                    .max_frame_length(max)
                    .new_codec();
                (Some(decoder), Some(encoder))
            }
        };
        FrameCodec {
            prefix: self.prefix,
            max,
            decoder,
            encoder,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `split_frame` finds in `wire`, frame by frame, until it needs
    /// more bytes or fails.
    fn split_all(codec: &FrameCodec, mut wire: &[u8]) -> (Vec<Vec<u8>>, Option<String>) {
        let mut frames = Vec::new();
        loop {
            match codec.split_frame(wire) {
                Ok(Some((payload, used))) => {
                    frames.push(payload.to_vec());
                    wire = &wire[used..];
                }
                Ok(None) => return (frames, None),
                Err(e) => return (frames, Some(format!("{e:?}"))),
            }
        }
    }

    /// The same through the `Decoder`.
    fn decode_all(codec: &mut FrameCodec, wire: &[u8]) -> (Vec<Vec<u8>>, Option<String>) {
        let mut buf = BytesMut::from(wire);
        let mut frames = Vec::new();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f.to_vec()),
                Ok(None) => return (frames, None),
                Err(e) => return (frames, Some(format!("{e:?}"))),
            }
        }
    }

    #[test]
    fn split_frame_agrees_with_the_decoder_at_every_cut() {
        for prefix in [
            LengthPrefix::U16Be,
            LengthPrefix::U32Be,
            LengthPrefix::Varint,
        ] {
            let codec = FrameCodec::builder()
                .length_prefix(prefix)
                .max_frame_length(300)
                .build();
            let mut wire = BytesMut::new();
            for len in [0, 1, 127, 128, 300] {
                codec
                    .clone()
                    .encode(&vec![len as u8; len][..], &mut wire)
                    .unwrap();
            }
            // Then a frame over the limit: an error once its prefix is whole.
            let mut big = FrameCodec::builder().length_prefix(prefix).build();
            big.encode(&[7u8; 301][..], &mut wire).unwrap();
            for cut in 0..=wire.len() {
                let (split, split_err) = split_all(&codec, &wire[..cut]);
                // A fresh decoder each time: it remembers a frame's length
                // between calls.
                let (decoded, decode_err) = decode_all(&mut codec.clone(), &wire[..cut]);
                assert_eq!(split, decoded, "{prefix:?}, cut at {cut}");
                assert_eq!(split_err, decode_err, "{prefix:?}, cut at {cut}");
            }
        }
    }

    #[test]
    fn varint_prefix_split_at_every_byte() {
        let mut codec = FrameCodec::builder()
            .length_prefix(LengthPrefix::Varint)
            .build();
        let payload = vec![0xab; 20_000]; // a 3-byte varint prefix
        let mut wire = BytesMut::new();
        codec.encode(&payload[..], &mut wire).unwrap();
        assert_eq!(wire.len(), 3 + 20_000);
        let mut buf = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            buf.put_u8(*b);
            let got = codec.decode(&mut buf).unwrap();
            if i + 1 < wire.len() {
                assert!(got.is_none(), "frame early at byte {i}");
            } else {
                assert_eq!(&got.unwrap()[..], &payload[..]);
            }
        }
    }

    #[test]
    fn varint_overlong_is_refused() {
        let mut codec = FrameCodec::builder()
            .length_prefix(LengthPrefix::Varint)
            .build();
        let mut buf = BytesMut::from(&[0xff; 9][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.put_u8(0xff);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::BadVarint { bytes: 10 })
        ));
        let mut buf =
            BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::BadVarint { bytes: 10 })
        ));
    }

    #[test]
    fn varint_length_beyond_any_buffer_is_too_large_even_without_a_limit() {
        let mut codec = FrameCodec::builder()
            .length_prefix(LengthPrefix::Varint)
            .max_frame_length(usize::MAX)
            .build();
        // u64::MAX: the prefix plus that many bytes would overflow usize.
        let mut buf =
            BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        match codec.decode(&mut buf) {
            Err(CodecError::FrameTooLarge { length, max }) => {
                assert_eq!(length, u64::MAX);
                assert!(max < usize::MAX, "{max}");
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        assert_eq!(buf.len(), 10, "nothing consumed");
    }

    #[test]
    fn header_writer_matches_tokio_util() {
        for prefix in [LengthPrefix::U16Be, LengthPrefix::U32Be] {
            let codec = FrameCodec::builder().length_prefix(prefix).build();
            for len in [0usize, 1, 255, 256, 65_535] {
                let mut ours = BytesMut::new();
                codec.put_header(len, &mut ours);
                ours.extend_from_slice(&vec![1u8; len]);
                let mut theirs = BytesMut::new();
                codec
                    .clone()
                    .encode(&vec![1u8; len][..], &mut theirs)
                    .unwrap();
                assert_eq!(ours, theirs, "{prefix:?} {len}");
            }
        }
    }

    /// A prefix announcing a huge frame does not make the decoder allocate
    /// it: the buffer grows with the bytes that come, not the length told.
    #[test]
    fn announced_length_is_not_reserved_up_front() {
        for prefix in [LengthPrefix::U32Be, LengthPrefix::Varint] {
            let mut codec = FrameCodec::builder().length_prefix(prefix).build();
            let len = DEFAULT_MAX_FRAME_LENGTH;
            let mut wire = BytesMut::new();
            codec.encode(&vec![5u8; len][..], &mut wire).unwrap();
            let head = prefix.header_len(len);
            let mut buf = BytesMut::from(&wire[..head + 3]);
            assert!(codec.decode(&mut buf).unwrap().is_none());
            assert!(
                buf.capacity() <= head + 3 + 2 * MAX_RESERVE_AHEAD,
                "{prefix:?}: {} bytes reserved for a {len}-byte frame",
                buf.capacity()
            );
            // Fed the rest in reads, it still decodes, and the buffer only
            // ever held about what arrived.
            let mut at = head + 3;
            let mut got = None;
            while at < wire.len() {
                let end = (at + 100_000).min(wire.len());
                buf.extend_from_slice(&wire[at..end]);
                at = end;
                got = codec.decode(&mut buf).unwrap();
                if got.is_none() {
                    assert!(buf.capacity() <= 2 * (buf.len() + MAX_RESERVE_AHEAD));
                }
            }
            assert_eq!(got.unwrap().len(), len, "{prefix:?}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn partial_frame_reports_what_it_needed() {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::from(&b"\x00\x05ab"[..]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(CodecError::PartialFrame {
                buffered: 4,
                expected: Some(7)
            })
        ));
        let mut buf = BytesMut::from(&b"\x00"[..]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(CodecError::PartialFrame {
                buffered: 1,
                expected: None
            })
        ));
        let mut buf = BytesMut::new();
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    }
}
