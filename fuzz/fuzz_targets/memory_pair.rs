//! The in-memory transport pair (and through it the write buffer and the
//! callback contract) under fuzzed settings and operations: every byte
//! must arrive in order and the lifecycle checker must stay silent.

#![no_main]

use std::cell::RefCell;
use std::rc::Rc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use protoloop::testing::{Chunking, EndOptions, LifecycleChecker, PairOptions, pair_with};
use protoloop::{EventLoop, Protocol, Transport};

#[derive(Arbitrary, Debug)]
struct Setup {
    seed: u64,
    max_chunk: u16,
    max_write: Option<u16>,
    capacity: u16,
    high: u16,
    low: u16,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Write(u16),
    Writelines(u8, u8),
    PauseReading,
    ResumeReading,
    RunUntilIdle,
    SetLimits(u16, u16),
    SetChunk(u16),
}

#[derive(Default)]
struct Sink(Rc<RefCell<Vec<u8>>>);
impl Protocol for Sink {
    fn connection_made(&mut self, _: Transport) {}
    fn data_received(&mut self, d: &[u8]) {
        self.0.borrow_mut().extend_from_slice(d);
    }
}

fuzz_target!(|s: Setup| {
    let lp = EventLoop::new_virtual().unwrap();
    let checker = LifecycleChecker::new();
    let got = Rc::new(RefCell::new(Vec::new()));
    let opts = PairOptions {
        a: EndOptions::default().max_write(s.max_write.map(|n| n as usize + 1)),
        b: EndOptions::default()
            .chunking(Chunking::Random { seed: s.seed, max: s.max_chunk as usize + 1 })
            .capacity(s.capacity as usize + 1),
    };
    let (a, b) = pair_with(
        &lp.handle(),
        checker.wrap(Sink::default()),
        checker.wrap(Sink(got.clone())),
        opts,
    );
    let t = a.transport().clone();
    t.set_write_buffer_limits(s.high as usize, s.low as usize);
    let mut sent = Vec::new();
    let mut next = |n: usize| {
        let start = sent.len();
        let d: Vec<u8> = (start..start + n).map(|i| (i % 253) as u8).collect();
        sent.extend_from_slice(&d);
        d
    };
    for op in s.ops.into_iter().take(100) {
        match op {
            // Volume adds little; interleavings are the point. Keep each
            // run short (a capacity of 1 moves one byte per iteration).
            Op::Write(n) => t.write(&next(n as usize % 4096)).unwrap(),
            Op::Writelines(x, y) => {
                let (p, q) = (next(x as usize), next(y as usize));
                t.writelines(&[&p, &q]).unwrap()
            }
            Op::PauseReading => b.transport().pause_reading(),
            Op::ResumeReading => b.transport().resume_reading(),
            Op::RunUntilIdle => lp.run_until_idle().unwrap(),
            Op::SetLimits(h, l) => t.set_write_buffer_limits(h as usize, l as usize),
            Op::SetChunk(n) => b.set_chunking(Chunking::Max(n as usize + 1)),
        }
    }
    b.transport().resume_reading();
    t.close();
    lp.run_until_idle().unwrap();
    checker.assert_finished();
    assert!(*got.borrow() == sent, "bytes lost or reordered");
});
