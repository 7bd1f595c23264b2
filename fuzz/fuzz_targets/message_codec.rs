//! Arbitrary bytes decoded through the message codec as each of the
//! crate's generated messages (bank, customer, rpc envelope, adder): no
//! panic, and either the typed refusal a reference model predicts (not a
//! message, or a proto2 required field missing) or a message that
//! re-encodes and decodes to the same value, alone or framed and fed in
//! chunks.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use protoloop::fuzzing::messages::check_messages;

#[derive(Arbitrary, Debug)]
struct Input {
    which: u8,
    prefix: u8,
    payloads: Vec<Vec<u8>>,
    cuts: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let cuts: Vec<usize> = input.cuts.into_iter().map(usize::from).collect();
    check_messages(input.which, input.prefix, &input.payloads, &cuts);
});
