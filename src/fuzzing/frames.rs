//! The frame decoder against a reference model, and encode→decode round
//! trips.
//!
//! The model parses the whole stream at once with the wire format's plain
//! rules; the codec is fed the same bytes in one piece and cut into
//! chunks, and must give the same frames and the same error after the
//! same frames every time.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{CodecError, DEFAULT_MAX_FRAME_LENGTH, FrameCodec, LengthPrefix};

/// One decoder case: a framing, a byte stream and where to cut it.
#[derive(Debug, Clone)]
pub struct DecodeCase {
    /// 0: 2-byte BE, 1: 4-byte BE, else varint.
    pub prefix: u8,
    /// The maximum frame length asked of the builder; `None`: its default.
    pub max: Option<usize>,
    /// The stream.
    pub bytes: Vec<u8>,
    /// Chunk lengths to cut the stream into (0 is an empty read); what is
    /// left after them comes in one last chunk.
    pub cuts: Vec<usize>,
    /// Whether the stream ends (EOF) after the last byte.
    pub eof: bool,
}

/// What decoding a stream gave: the frames, then at most one error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Payloads, in order.
    pub frames: Vec<Vec<u8>>,
    /// The error that stopped decoding, as comparable fields.
    pub error: Option<ErrorKey>,
}

/// A [`CodecError`] reduced to what the model predicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKey {
    /// `FrameTooLarge { length, max }`.
    TooLarge(u64, usize),
    /// `BadVarint { bytes }`.
    BadVarint(usize),
    /// `PartialFrame { buffered, expected }`.
    Partial(usize, Option<u64>),
}

fn key(e: CodecError) -> ErrorKey {
    match e {
        CodecError::FrameTooLarge { length, max } => ErrorKey::TooLarge(length, max),
        CodecError::BadVarint { bytes } => ErrorKey::BadVarint(bytes),
        CodecError::PartialFrame { buffered, expected } => ErrorKey::Partial(buffered, expected),
        other => panic!("the frame decoder returned an unexpected error: {other:?}"),
    }
}

/// The prefix a case asks for.
pub fn prefix_of(n: u8) -> LengthPrefix {
    match n % 3 {
        0 => LengthPrefix::U16Be,
        1 => LengthPrefix::U32Be,
        _ => LengthPrefix::Varint,
    }
}

fn codec(prefix: LengthPrefix, max: Option<usize>) -> FrameCodec {
    let b = FrameCodec::builder().length_prefix(prefix);
    match max {
        Some(m) => b.max_frame_length(m).build(),
        None => b.build(),
    }
}

/// The limit the model expects: what was asked (or the default), lowered
/// to what the prefix can say.
fn model_max(prefix: LengthPrefix, max: Option<usize>) -> usize {
    let asked = max.unwrap_or(DEFAULT_MAX_FRAME_LENGTH) as u64;
    let limit = match prefix {
        LengthPrefix::U16Be => 0xffff,
        LengthPrefix::U32Be => 0xffff_ffff,
        _ => u64::MAX,
    };
    // Also under what a buffer can hold (only matters for huge asks).
    asked.min(limit).min(isize::MAX as u64 - 10) as usize
}

/// A prefix at the front of `b`: `Ok(None)` if cut short, else
/// `(length, prefix bytes)`.
fn model_header(prefix: LengthPrefix, b: &[u8]) -> Result<Option<(u64, usize)>, ErrorKey> {
    match prefix {
        LengthPrefix::U16Be if b.len() >= 2 => {
            Ok(Some((u64::from(b[0]) << 8 | u64::from(b[1]), 2)))
        }
        LengthPrefix::U32Be if b.len() >= 4 => {
            let n = b[..4].iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x));
            Ok(Some((n, 4)))
        }
        LengthPrefix::Varint => {
            // Little-endian groups of 7 bits, at most 10 bytes, the last of
            // which may only hold the 64th bit.
            let mut n: u128 = 0;
            for (i, &x) in b.iter().enumerate().take(10) {
                n |= u128::from(x & 0x7f) << (7 * i);
                if x & 0x80 == 0 {
                    return match u64::try_from(n) {
                        Ok(v) => Ok(Some((v, i + 1))),
                        Err(_) => Err(ErrorKey::BadVarint(i + 1)),
                    };
                }
            }
            if b.len() >= 10 {
                Err(ErrorKey::BadVarint(10))
            } else {
                Ok(None)
            }
        }
        _ => Ok(None),
    }
}

/// The reference: the whole stream parsed in one go.
pub fn model(prefix: LengthPrefix, max: Option<usize>, bytes: &[u8], eof: bool) -> Outcome {
    let max = model_max(prefix, max);
    let mut frames = Vec::new();
    let mut at = 0;
    let error = loop {
        let rest = &bytes[at..];
        match model_header(prefix, rest) {
            Err(e) => break Some(e),
            Ok(Some((len, _))) if len > max as u64 => break Some(ErrorKey::TooLarge(len, max)),
            Ok(Some((len, head))) if (rest.len() - head) as u64 >= len => {
                frames.push(rest[head..head + len as usize].to_vec());
                at += head + len as usize;
            }
            Ok(header) => {
                break (eof && !rest.is_empty()).then(|| {
                    let expected = header.map(|(len, head)| head as u64 + len);
                    ErrorKey::Partial(rest.len(), expected)
                });
            }
        }
    };
    Outcome { frames, error }
}

/// Feed `chunks` to a fresh codec, decoding after each, then the end of
/// the stream if `eof`.
pub fn feed<'a>(
    prefix: LengthPrefix,
    max: Option<usize>,
    chunks: impl IntoIterator<Item = &'a [u8]>,
    eof: bool,
) -> Outcome {
    let mut c = codec(prefix, max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let fail = |frames, e| Outcome {
        frames,
        error: Some(key(e)),
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match c.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f.to_vec()),
                Ok(None) => {
                    assert_eq!(buf.len(), before, "bytes consumed without a frame");
                    break;
                }
                Err(e) => {
                    assert_eq!(buf.len(), before, "bytes consumed by a refusal");
                    return fail(frames, e);
                }
            }
        }
    }
    if eof {
        loop {
            match c.decode_eof(&mut buf) {
                Ok(Some(f)) => frames.push(f.to_vec()),
                Ok(None) => break,
                Err(e) => return fail(frames, e),
            }
        }
    }
    Outcome {
        frames,
        error: None,
    }
}

/// Cut `bytes` into the chunks `cuts` says.
pub fn chunks<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    for &n in cuts {
        let end = (at + n).min(bytes.len());
        out.push(&bytes[at..end]);
        at = end;
    }
    out.push(&bytes[at..]);
    out
}

/// The decoder, one-shot and chunked, against the model.
pub fn check_decode(case: &DecodeCase) {
    let prefix = prefix_of(case.prefix);
    let want = model(prefix, case.max, &case.bytes, case.eof);
    let whole = feed(prefix, case.max, [&case.bytes[..]], case.eof);
    assert_eq!(whole, want, "one-shot decoding differs from the model");
    let cut = feed(prefix, case.max, chunks(&case.bytes, &case.cuts), case.eof);
    assert_eq!(cut, whole, "chunked decoding differs from one-shot");
    let bytewise = feed(prefix, case.max, case.bytes.chunks(1), case.eof);
    assert_eq!(
        bytewise, whole,
        "byte-at-a-time decoding differs from one-shot"
    );
}

/// Payloads encoded one after another decode to themselves, however the
/// wire is cut; an oversize one is refused with nothing written.
pub fn check_round_trip(prefix: u8, max: Option<usize>, payloads: &[Vec<u8>], cuts: &[usize]) {
    let prefix = prefix_of(prefix);
    let mut c = codec(prefix, max);
    let limit = model_max(prefix, max);
    let mut wire = BytesMut::new();
    let mut sent = Vec::new();
    for p in payloads {
        let before = wire.clone();
        match c.encode(&p[..], &mut wire) {
            Ok(()) => {
                assert!(
                    p.len() <= limit,
                    "{} bytes encoded over a limit of {limit}",
                    p.len()
                );
                assert_eq!(
                    wire.len(),
                    before.len() + prefix.header_len(p.len()) + p.len()
                );
                sent.push(p.clone());
            }
            Err(CodecError::FrameTooLarge { length, max }) => {
                assert!(p.len() > limit && length == p.len() as u64 && max == limit);
                assert_eq!(wire, before, "a refused frame wrote bytes");
            }
            Err(e) => panic!("unexpected encode error {e:?}"),
        }
    }
    let want = Outcome {
        frames: sent,
        error: None,
    };
    assert_eq!(feed(prefix, max, chunks(&wire, cuts), true), want);
    assert_eq!(
        model(prefix, max, &wire, true),
        want,
        "the model disagrees with the encoder"
    );
}
