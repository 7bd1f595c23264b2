//! Property tests over the checks in this module: the same rules the fuzz
//! targets hold the code to, with bounded case counts for the normal test
//! run.

use proptest::prelude::*;

use super::frames::{self, DecodeCase};

/// Streams that are mostly well-formed frames, with some noise: random
/// bytes alone almost never make a whole frame.
fn stream(prefix: u8) -> impl Strategy<Value = Vec<u8>> {
    let frame = prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(move |p| {
            let mut out = Vec::new();
            match frames::prefix_of(prefix) {
                crate::codec::LengthPrefix::U16Be => out.extend_from_slice(&(p.len() as u16).to_be_bytes()),
                crate::codec::LengthPrefix::U32Be => out.extend_from_slice(&(p.len() as u32).to_be_bytes()),
                _ => prost::encoding::encode_varint(p.len() as u64, &mut out),
            }
            out.extend_from_slice(&p);
            out
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..12),
    ];
    proptest::collection::vec(frame, 0..6).prop_map(|fs| fs.concat())
}

fn decode_case() -> impl Strategy<Value = DecodeCase> {
    (0u8..3).prop_flat_map(|prefix| {
        (
            stream(prefix),
            proptest::option::of(0usize..400),
            proptest::collection::vec(0usize..64, 0..20),
            any::<bool>(),
        )
            .prop_map(move |(bytes, max, cuts, eof)| DecodeCase {
                prefix,
                max,
                bytes,
                cuts,
                eof,
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Same frames and same error as the model, one-shot, chunked and one
    /// byte at a time.
    #[test]
    fn frame_decoder_matches_the_model_at_any_split(case in decode_case()) {
        frames::check_decode(&case);
    }

    /// Encoded payloads decode to themselves; oversize ones are refused
    /// with nothing written.
    #[test]
    fn frame_round_trip(
        prefix in 0u8..3,
        max in proptest::option::of(0usize..600),
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..700), 0..6),
        cuts in proptest::collection::vec(0usize..200, 0..20),
    ) {
        frames::check_round_trip(prefix, max, &payloads, &cuts);
    }
}

/// A payload made of protobuf fields of every wire type, some with the
/// messages' own field numbers, so that both whole messages and messages
/// with missing or mistyped fields come up.
fn fields() -> impl Strategy<Value = Vec<u8>> {
    let field = (
        1u32..5,
        0u8..8,
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..12),
    )
        .prop_map(|(tag, wire, n, bytes)| {
            let mut out = Vec::new();
            prost::encoding::encode_varint(u64::from(tag << 3 | u32::from(wire)), &mut out);
            match wire {
                0 => prost::encoding::encode_varint(n, &mut out),
                1 => out.extend_from_slice(&n.to_le_bytes()),
                2 => {
                    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
                    out.extend_from_slice(&bytes);
                }
                // A group: a varint field inside, then its end.
                3 => {
                    out.extend_from_slice(&[0x08, n as u8 & 0x7f]);
                    prost::encoding::encode_varint(u64::from(tag << 3 | 4), &mut out);
                }
                4 => {} // an end of group with no start
                5 => out.extend_from_slice(&(n as u32).to_le_bytes()),
                _ => out.extend_from_slice(&bytes), // not a wire type at all
            }
            out
        });
    prop_oneof![
        4 => proptest::collection::vec(field, 0..5).prop_map(|f| f.concat()),
        1 => proptest::collection::vec(any::<u8>(), 0..16),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any payload as any of the crate's messages: the model's typed
    /// refusal, or a message that round-trips, alone or through the codec
    /// in chunks.
    #[test]
    fn message_decoding_matches_the_model(
        which in 0u8..7,
        prefix in 0u8..3,
        payloads in proptest::collection::vec(fields(), 0..5),
        cuts in proptest::collection::vec(0usize..40, 0..10),
    ) {
        super::messages::check_messages(which, prefix, &payloads, &cuts);
    }
}

fn rpc_op() -> impl Strategy<Value = super::rpc::RpcOp> {
    use super::rpc::RpcOp;
    prop_oneof![
        6 => (any::<u8>(), proptest::option::of(0u8..40))
            .prop_map(|(key, timeout_ms)| RpcOp::Call { key, timeout_ms }),
        2 => any::<u8>().prop_map(RpcOp::Cancel),
        6 => any::<u8>().prop_map(RpcOp::Reply),
        1 => Just(RpcOp::Duplicate),
        1 => (0u16..40, any::<u8>()).prop_map(|(id, key)| RpcOp::Forged { id, key }),
        1 => any::<bool>().prop_map(RpcOp::Garbage),
        4 => Just(RpcOp::Run),
        3 => (0u8..30).prop_map(RpcOp::Advance),
        1 => prop_oneof![Just(RpcOp::ServerClose), Just(RpcOp::ServerAbort), Just(RpcOp::ClientClose)],
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The client over the in-memory pair and the virtual clock agrees with
    /// the model after every step, and leaves nothing in flight.
    #[test]
    fn rpc_client_matches_the_model(
        mode in 0u8..3,
        cap in 1u8..5,
        chunk_seed in any::<u64>(),
        max_chunk in 0u8..8,
        ops in proptest::collection::vec(rpc_op(), 0..40),
    ) {
        super::rpc::check_rpc(&super::rpc::RpcCase { mode, cap, chunk_seed, max_chunk, ops });
    }
}

// Fixed cases: the edges the strategies above reach only by luck, run
// through the same checks.

#[test]
fn frame_decoder_edges() {
    let cases: &[(u8, Option<usize>, &[u8])] = &[
        // A prefix announcing more than any buffer, with no limit asked.
        (2, Some(usize::MAX), &[0xff; 9]),
        (
            2,
            Some(usize::MAX),
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
        // Ten varint bytes whose last carries more than the 64th bit.
        (
            2,
            None,
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02],
        ),
        // An over-long but in-range varint (zero padded).
        (2, None, &[0x81, 0x80, 0x00, 0x07]),
        // A frame exactly at the limit, then one over it.
        (0, Some(3), b"\x00\x03abc\x00\x04abcd"),
        (1, Some(0), b"\x00\x00\x00\x00\x00\x00\x00\x01x"),
    ];
    for &(prefix, max, bytes) in cases {
        for eof in [false, true] {
            frames::check_decode(&DecodeCase {
                prefix,
                max,
                bytes: bytes.to_vec(),
                cuts: vec![1, 0, 2],
                eof,
            });
        }
    }
}

#[test]
fn rpc_late_duplicate_and_forged_replies_in_every_mode() {
    use super::rpc::{RpcCase, RpcOp::*, check_rpc};
    for mode in 0..3 {
        for ops in [
            // A call times out in flight and its reply comes late, after
            // a queued call took its place.
            vec![
                Call {
                    key: 1,
                    timeout_ms: Some(5),
                },
                Call {
                    key: 1,
                    timeout_ms: None,
                },
                Advance(10),
                Reply(0),
                Reply(0),
                Run,
            ],
            // Out of order, then a duplicate, then a forged reply.
            vec![
                Call {
                    key: 0,
                    timeout_ms: None,
                },
                Call {
                    key: 1,
                    timeout_ms: None,
                },
                Run,
                Reply(1),
                Reply(0),
                Duplicate,
                Run,
                Forged { id: 7, key: 4 },
                Run,
                Call {
                    key: 2,
                    timeout_ms: None,
                },
            ],
            // Cancelled while queued and while sent; then the server goes.
            vec![
                Call {
                    key: 3,
                    timeout_ms: None,
                },
                Call {
                    key: 3,
                    timeout_ms: None,
                },
                Call {
                    key: 3,
                    timeout_ms: Some(1),
                },
                Cancel(1),
                Cancel(0),
                Run,
                ServerAbort,
                Call {
                    key: 0,
                    timeout_ms: None,
                },
            ],
        ] {
            check_rpc(&RpcCase {
                mode,
                cap: 1,
                chunk_seed: 7,
                max_chunk: 3,
                ops,
            });
        }
    }
}
