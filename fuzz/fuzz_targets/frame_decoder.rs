//! The frame decoder (every length prefix, with fuzzed maximum frame
//! lengths) against a reference model: the same frames and the same error
//! after the same frames, whether the bytes come at once, in fuzzed chunks
//! or one at a time; and encode→decode round trips.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use protoloop::fuzzing::frames::{DecodeCase, check_decode, check_round_trip};

#[derive(Arbitrary, Debug)]
enum Max {
    Default,
    Small(u16),
    Large(u32),
    Huge,
}

#[derive(Arbitrary, Debug)]
enum Input {
    Decode {
        prefix: u8,
        max: Max,
        bytes: Vec<u8>,
        cuts: Vec<u8>,
        eof: bool,
    },
    RoundTrip {
        prefix: u8,
        max: Max,
        payloads: Vec<Vec<u8>>,
        cuts: Vec<u16>,
    },
}

fn max(m: Max) -> Option<usize> {
    match m {
        Max::Default => None,
        Max::Small(n) => Some(n as usize % 1024),
        Max::Large(n) => Some(n as usize),
        Max::Huge => Some(usize::MAX),
    }
}

fuzz_target!(|input: Input| match input {
    Input::Decode {
        prefix,
        max: m,
        bytes,
        cuts,
        eof,
    } => check_decode(&DecodeCase {
        prefix,
        max: max(m),
        bytes,
        cuts: cuts.into_iter().map(usize::from).collect(),
        eof,
    }),
    Input::RoundTrip {
        prefix,
        max: m,
        payloads,
        cuts,
    } => check_round_trip(
        prefix,
        max(m),
        &payloads,
        &cuts.into_iter().map(usize::from).collect::<Vec<_>>(),
    ),
});
