//! The transport write buffer against a plain byte queue: content, order,
//! size, and pause/resume exactly at the water marks, always paired.

#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use protoloop::fuzzing::{Flow, WriteBuffer};

#[derive(Arbitrary, Debug)]
enum Op {
    PushSlice(u16, u8),
    PushBytes(u16, u8),
    /// Consume this share (of 255) of what is buffered.
    Consume(u8),
    SetLimits(u32, u32),
    /// Marks this far from the current size: the edges.
    LimitsNearLen(i8, i8),
    Slices(u8),
    Clear,
}

fuzz_target!(|ops: Vec<Op>| {
    let mut b = WriteBuffer::default();
    let mut model: Vec<u8> = Vec::new();
    let mut paused = false;
    let mut counter = 0usize;
    let mut pattern = |n: usize, salt: u8| {
        let start = counter;
        counter += n;
        (start..start + n).map(|i| (i % 251) as u8 ^ salt).collect::<Vec<u8>>()
    };
    for op in ops.into_iter().take(200) {
        let mut reports = true;
        let flow = match op {
            Op::PushSlice(n, s) => {
                // An empty write changes nothing and reports nothing.
                reports = n > 0;
                let d = pattern(n as usize, s);
                model.extend_from_slice(&d);
                b.push_slice(&d)
            }
            Op::PushBytes(n, s) => {
                reports = n > 0;
                let d = pattern(n as usize, s);
                model.extend_from_slice(&d);
                b.push_bytes(Bytes::from(d))
            }
            Op::Consume(share) => {
                let n = model.len() * share as usize / 255;
                model.drain(..n);
                b.consume(n)
            }
            Op::SetLimits(h, l) => {
                let f = b.set_limits(h as usize, l as usize);
                assert_eq!(b.limits(), (h as usize, (l as usize).min(h as usize)));
                f
            }
            Op::LimitsNearLen(dh, dl) => {
                let near = |d: i8| model.len().saturating_add_signed(d as isize);
                b.set_limits(near(dh), near(dl))
            }
            Op::Slices(max) => {
                let max = max as usize;
                let mut s = Vec::new();
                b.slices(&mut s, max);
                assert!(s.len() <= max);
                let flat: Vec<u8> = s.iter().flat_map(|x| x.iter().copied()).collect();
                assert_eq!(&model[..flat.len()], &flat[..]);
                reports = false;
                Flow::Same
            }
            Op::Clear => {
                model.clear();
                b.clear();
                reports = false;
                Flow::Same
            }
        };
        let (high, low) = b.limits();
        let len = model.len();
        if reports {
            let want = if !paused && len > high {
                Flow::Pause
            } else if paused && len <= low {
                Flow::Resume
            } else {
                Flow::Same
            };
            assert_eq!(flow, want, "len {len}, marks ({high}, {low})");
        } else {
            assert_eq!(flow, Flow::Same);
        }
        match flow {
            Flow::Pause => paused = true,
            Flow::Resume => paused = false,
            Flow::Same => {}
        }
        assert_eq!(b.len(), len);
        assert_eq!(b.is_empty(), len == 0);
    }
    let mut s = Vec::new();
    b.slices(&mut s, usize::MAX);
    let flat: Vec<u8> = s.iter().flat_map(|x| x.iter().copied()).collect();
    assert_eq!(flat, model);
});
