//! The request/reply client (and its correlator) against a model, driven
//! deterministically over the in-memory transport pair on a virtual clock:
//! fuzzed calls, replies in and out of order, duplicate replies, replies
//! for unknown ids or keys, garbage frames, timeouts, cancelled call
//! futures and connection loss, in each correlation mode. Every call must
//! resolve exactly once with the reply or typed error the model predicts,
//! the cap must hold, and nothing may be left in flight.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use protoloop::fuzzing::rpc::{RpcCase, RpcOp, check_rpc};

#[derive(Arbitrary, Debug)]
enum Op {
    Call(u8, Option<u8>),
    Cancel(u8),
    Reply(u8),
    Duplicate,
    Forged(u16, u8),
    Garbage(bool),
    Run,
    Advance(u8),
    ServerClose,
    ServerAbort,
    ClientClose,
}

#[derive(Arbitrary, Debug)]
struct Input {
    mode: u8,
    cap: u8,
    chunk_seed: u64,
    max_chunk: u8,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let ops = input
        .ops
        .into_iter()
        .map(|op| match op {
            Op::Call(key, timeout_ms) => RpcOp::Call { key, timeout_ms },
            Op::Cancel(n) => RpcOp::Cancel(n),
            Op::Reply(n) => RpcOp::Reply(n),
            Op::Duplicate => RpcOp::Duplicate,
            // Small ids hit the calls that exist.
            Op::Forged(id, key) => RpcOp::Forged { id: id % 512, key },
            Op::Garbage(empty) => RpcOp::Garbage(empty),
            Op::Run => RpcOp::Run,
            Op::Advance(ms) => RpcOp::Advance(ms),
            Op::ServerClose => RpcOp::ServerClose,
            Op::ServerAbort => RpcOp::ServerAbort,
            Op::ClientClose => RpcOp::ClientClose,
        })
        .collect();
    check_rpc(&RpcCase {
        // Small caps make calls queue.
        cap: input.cap % 8,
        mode: input.mode,
        chunk_seed: input.chunk_seed,
        max_chunk: input.max_chunk,
        ops,
    });
});
