//! Message decoding through the codec: arbitrary payloads as each of the
//! crate's generated messages must give a clean typed error or a message
//! that re-encodes and decodes to the same value.
//!
//! The model: prost's decode says whether the bytes are a message at all,
//! and a walk over the top-level fields with prost's own key reader and
//! field skipper says which required fields are there.

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use prost::Message;
use prost::encoding::{DecodeContext, decode_key, skip_field};
use tokio_util::codec::{Decoder, Encoder};

use super::frames::{chunks, prefix_of};
use crate::codec::{CodecError, FrameCodec, MessageCodec, RequiredFields};
use crate::proto::{adder, bank, customer, rpc};

/// A [`CodecError`] from message decoding, reduced to what the model
/// predicts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    Decode {
        expected: &'static str,
        length: usize,
    },
    Missing {
        message: &'static str,
        tag: u32,
    },
}

fn refusal(e: &CodecError) -> Refusal {
    match e {
        CodecError::Decode {
            expected, length, ..
        } => Refusal::Decode {
            expected,
            length: *length,
        },
        CodecError::MissingRequired { message, tag, .. } => Refusal::Missing { message, tag: *tag },
        other => panic!("message decoding returned an unexpected error: {other:?}"),
    }
}

/// The top-level field numbers of a payload prost accepted.
fn top_level_tags(mut buf: &[u8]) -> Vec<u32> {
    let mut tags = Vec::new();
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).expect("prost accepted these bytes");
        tags.push(tag);
        skip_field(wire, tag, &mut buf, DecodeContext::default())
            .expect("prost accepted these bytes");
    }
    tags
}

/// What decoding `payload` as an `M` must give.
fn expected<M: Message + Default + 'static>(payload: &[u8]) -> Result<Vec<u8>, Refusal> {
    let m = M::decode(payload).map_err(|_| Refusal::Decode {
        expected: std::any::type_name::<M>(),
        length: payload.len(),
    })?;
    let required = RequiredFields::of::<M>().expect("the crate's messages have required fields");
    let tags = top_level_tags(payload);
    if let Some(&(tag, _)) = required.fields().iter().find(|(t, _)| !tags.contains(t)) {
        return Err(Refusal::Missing {
            message: required.message(),
            tag,
        });
    }
    Ok(m.encode_to_vec())
}

/// Compared by encoding: a float field may hold a NaN.
fn encoded<M: Message>(r: &Result<M, CodecError>) -> Result<Vec<u8>, Refusal> {
    match r {
        Ok(m) => Ok(m.encode_to_vec()),
        Err(e) => Err(refusal(e)),
    }
}

fn check_as<M: Message + Default + Debug + 'static>(
    prefix: u8,
    payloads: &[Vec<u8>],
    cuts: &[usize],
) {
    let framing = FrameCodec::builder()
        .length_prefix(prefix_of(prefix))
        .max_frame_length(usize::MAX)
        .build();
    let mut wants = Vec::new();
    for p in payloads {
        let want = expected::<M>(p);
        let got = MessageCodec::<M>::decode_payload(Bytes::copy_from_slice(p));
        assert_eq!(
            encoded(&got),
            want,
            "{} from {p:02x?}",
            std::any::type_name::<M>()
        );
        if let Ok(m) = got {
            // Re-encoded, it decodes to the same value, through the whole
            // codec this time.
            let mut codec = MessageCodec::<M>::with_framing(framing.clone());
            let mut wire = BytesMut::new();
            codec.encode(&m, &mut wire).expect("no limit");
            let back = codec.decode(&mut wire).expect("re-encoded message decodes");
            assert_eq!(back.map(|b| b.encode_to_vec()), Some(m.encode_to_vec()));
            assert!(wire.is_empty());
        }
        wants.push(want);
    }
    // The payloads framed one after another and fed through the message
    // codec in chunks: each decodes as on its own, up to the first refusal.
    let mut frames = framing.clone();
    let mut wire = BytesMut::new();
    for p in payloads {
        frames.encode(&p[..], &mut wire).expect("no limit");
    }
    let mut codec = MessageCodec::<M>::with_framing(framing);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    'feed: for chunk in chunks(&wire, cuts) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(m)) => got.push(Ok(m.encode_to_vec())),
                Ok(None) => break,
                Err(e) => {
                    got.push(Err(refusal(&e)));
                    break 'feed;
                }
            }
        }
    }
    let stop = wants
        .iter()
        .position(Result::is_err)
        .map_or(wants.len(), |i| i + 1);
    assert_eq!(
        got,
        wants[..stop],
        "{} through the codec",
        std::any::type_name::<M>()
    );
}

/// Decode `payloads`, framed with prefix `prefix` and fed in the chunks
/// `cuts` says, as message type number `which` (of the crate's seven), and
/// hold the results to the model.
pub fn check_messages(which: u8, prefix: u8, payloads: &[Vec<u8>], cuts: &[usize]) {
    match which % 7 {
        0 => check_as::<bank::GetBalance>(prefix, payloads, cuts),
        1 => check_as::<bank::Response>(prefix, payloads, cuts),
        2 => check_as::<customer::Request>(prefix, payloads, cuts),
        3 => check_as::<customer::Reply>(prefix, payloads, cuts),
        4 => check_as::<rpc::Envelope>(prefix, payloads, cuts),
        5 => check_as::<adder::AddRequest>(prefix, payloads, cuts),
        _ => check_as::<adder::AddReply>(prefix, payloads, cuts),
    }
}
