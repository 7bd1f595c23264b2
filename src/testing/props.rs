//! Property tests of the core's internal state machines (the write buffer
//! and the timer heap) against simple models. Bounded case counts keep
//! them in the normal test run.

use std::panic::Location;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use crate::time::{Entry, Timers};
use crate::transport::buffer::{Flow, WriteBuffer};

#[derive(Debug, Clone)]
enum BufOp {
    PushSlice(usize, u8),
    PushBytes(usize, u8),
    /// Consume this share (out of 256) of what is buffered.
    Consume(u8),
    SetLimits(usize, usize),
    /// Set the marks this far from the current size: hits the edges.
    LimitsNearLen(i8, i8),
    Clear,
}

fn buf_op() -> impl Strategy<Value = BufOp> {
    prop_oneof![
        // Small writes coalesce (up to 4 KiB each, 16 KiB of tail), big
        // ones become their own chunk: cover both sides of the limits.
        4 => (0usize..5_000, any::<u8>()).prop_map(|(n, b)| BufOp::PushSlice(n, b)),
        2 => (0usize..10_000, any::<u8>()).prop_map(|(n, b)| BufOp::PushBytes(n, b)),
        4 => any::<u8>().prop_map(BufOp::Consume),
        2 => (0usize..30_000, 0usize..30_000).prop_map(|(h, l)| BufOp::SetLimits(h, l)),
        2 => (-2i8..3, -2i8..3).prop_map(|(h, l)| BufOp::LimitsNearLen(h, l)),
        1 => Just(BufOp::Clear),
    ]
}

/// `n` bytes that differ from their neighbours across writes, so a lost,
/// doubled or misplaced byte shows.
fn pattern(counter: &mut usize, n: usize, salt: u8) -> Vec<u8> {
    let start = *counter;
    *counter += n;
    (start..start + n).map(|i| (i % 251) as u8 ^ salt).collect()
}

fn contents(b: &WriteBuffer, max: usize) -> Vec<u8> {
    let mut s = Vec::new();
    b.slices(&mut s, max);
    assert!(s.len() <= max, "slices returned more than asked for");
    let mut out = Vec::new();
    for x in &s {
        out.extend_from_slice(x);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Content, order and size match a plain byte queue; pause/resume are
    /// reported exactly when the marks say and always in pairs.
    #[test]
    fn write_buffer_matches_a_byte_queue(ops in proptest::collection::vec(buf_op(), 1..60)) {
        let mut b = WriteBuffer::default();
        let mut model: Vec<u8> = Vec::new();
        let mut paused = false;
        let mut counter = 0usize;
        for op in ops {
            // clear (abort) never reports, and an empty write changes
            // nothing: a resume owed after a clear waits for a real change.
            let silent = matches!(
                op,
                BufOp::Clear | BufOp::PushSlice(0, _) | BufOp::PushBytes(0, _)
            );
            let flow = match op {
                BufOp::PushSlice(n, x) => {
                    let data = pattern(&mut counter, n, x);
                    model.extend_from_slice(&data);
                    b.push_slice(&data)
                }
                BufOp::PushBytes(n, x) => {
                    let data = pattern(&mut counter, n, x);
                    model.extend_from_slice(&data);
                    b.push_bytes(Bytes::from(data))
                }
                BufOp::Consume(share) => {
                    let n = model.len() * share as usize / 255;
                    model.drain(..n);
                    b.consume(n)
                }
                BufOp::SetLimits(h, l) => {
                    let f = b.set_limits(h, l);
                    prop_assert_eq!(b.limits(), (h, l.min(h)));
                    f
                }
                BufOp::LimitsNearLen(dh, dl) => {
                    let near = |d: i8| model.len().saturating_add_signed(d as isize);
                    b.set_limits(near(dh), near(dl))
                }
                BufOp::Clear => {
                    model.clear();
                    b.clear();
                    Flow::Same
                }
            };
            let (high, low) = b.limits();
            let len = model.len();
            let want = if silent {
                Flow::Same
            } else if !paused && len > high {
                Flow::Pause
            } else if paused && len <= low {
                Flow::Resume
            } else {
                Flow::Same
            };
            prop_assert_eq!(flow, want, "len {} marks {:?}", len, (high, low));
            match flow {
                Flow::Pause => { prop_assert!(!paused, "pause while paused"); paused = true; }
                Flow::Resume => { prop_assert!(paused, "resume without pause"); paused = false; }
                Flow::Same => {}
            }
            prop_assert_eq!(b.len(), len);
            prop_assert_eq!(b.is_empty(), len == 0);
            prop_assert!(contents(&b, usize::MAX) == model, "contents differ");
            // A bounded slice list is a prefix.
            let few = contents(&b, 2);
            prop_assert!(model[..few.len()] == few[..], "slices(2) is not a prefix");
        }
    }
}

#[derive(Debug, Clone)]
enum TimerOp {
    Push(u16),
    Cancel(usize),
    /// Move "now" forward by this many ms and pop what is due.
    Advance(u16),
}

fn timer_op() -> impl Strategy<Value = TimerOp> {
    prop_oneof![
        5 => (0u16..1000).prop_map(TimerOp::Push),
        3 => any::<usize>().prop_map(TimerOp::Cancel),
        2 => (0u16..300).prop_map(TimerOp::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The heap pops exactly the live timers that are due, in
    /// (deadline, seq) order, through cancellations and compaction.
    #[test]
    fn timers_pop_live_due_entries_in_order(ops in proptest::collection::vec(timer_op(), 1..300)) {
        let base = Instant::now();
        let mut now = base;
        let mut heap = Timers::default();
        // (when, seq, entry) of every pushed timer not yet popped.
        let mut live: Vec<(Instant, u64, Rc<Entry>)> = Vec::new();
        let mut seq = 0u64;
        for op in ops {
            match op {
                TimerOp::Push(ms) => {
                    let when = now + Duration::from_millis(ms as u64);
                    let e = Entry::new(Box::new(|| {}), when, seq, Location::caller(), "t");
                    heap.push(e.clone());
                    live.push((when, seq, e));
                    seq += 1;
                }
                TimerOp::Cancel(i) => {
                    if !live.is_empty() {
                        let (_, _, e) = live.remove(i % live.len());
                        crate::TimerHandle(e).cancel();
                    }
                }
                TimerOp::Advance(ms) => {
                    now += Duration::from_millis(ms as u64);
                    let mut out = Vec::new();
                    heap.pop_due(now, &mut out);
                    let got: Vec<(Instant, u64)> = out.iter().map(|e| (e.when, e.seq)).collect();
                    let mut want: Vec<(Instant, u64)> = live
                        .iter()
                        .filter(|(w, _, _)| *w <= now)
                        .map(|(w, s, _)| (*w, *s))
                        .collect();
                    want.sort();
                    prop_assert_eq!(got, want);
                    live.retain(|(w, _, _)| *w > now);
                }
            }
            let next = live.iter().map(|(w, _, _)| *w).min();
            prop_assert_eq!(heap.next_deadline(), next);
            prop_assert!(heap.len() >= live.len());
            // The counter knows the cancelled entries without a scan.
            prop_assert_eq!(heap.len() - heap.cancelled(), live.len());
        }
    }
}

/// Found by the `write_buffer` fuzz target (kept as a regression test of
/// the model): after an abort's `clear` while paused, an empty write
/// reports nothing; the owed resume comes with the next real change.
#[test]
fn a_resume_owed_after_clear_waits_for_a_real_change() {
    let mut b = WriteBuffer::default();
    assert_eq!(b.push_slice(&vec![23; 65301]), Flow::Same);
    assert_eq!(b.push_slice(&vec![255; 31487]), Flow::Pause);
    b.clear();
    assert_eq!(b.push_slice(&[]), Flow::Same);
    assert_eq!(b.push_bytes(Bytes::new()), Flow::Same);
    assert_eq!(b.push_slice(&[1]), Flow::Resume);
}
