//! The write buffer shared by stream transports: a queue of byte chunks,
//! its size kept as a counter, and the water marks that decide when the
//! protocol is asked to pause and resume writing.
//!
//! It is a plain state machine: `push` and `consume` report whether a
//! `pause_writing` or `resume_writing` is due, and the transport calls the
//! protocol. Calls are always paired: a resume is only reported after a
//! pause. The pairing itself is [`WaterMarks`], which the datagram send
//! queue and the TLS layer use too.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// Default high-water mark: 64 KiB.
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;
/// Default low-water mark: 16 KiB.
pub const DEFAULT_LOW_WATER: usize = 16 * 1024;

/// Small writes are copied into the tail chunk up to this size, so that
/// many small writes become one `write` system call.
const COALESCE: usize = 4096;

/// What the protocol must be told after a buffer change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Nothing changed.
    Same,
    /// Went above the high mark: call `pause_writing`.
    Pause,
    /// Drained to the low mark after a pause: call `resume_writing`.
    Resume,
}

/// The high and low water marks of a queue, and whether the protocol was
/// told to pause: decides when `pause_writing` and `resume_writing` are
/// due, always in pairs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaterMarks {
    high: usize,
    low: usize,
    paused: bool,
}

impl Default for WaterMarks {
    fn default() -> Self {
        WaterMarks {
            high: DEFAULT_HIGH_WATER,
            low: DEFAULT_LOW_WATER,
            paused: false,
        }
    }
}

impl WaterMarks {
    /// `(high, low)`.
    pub(crate) fn limits(&self) -> (usize, usize) {
        (self.high, self.low)
    }

    /// Set the marks (a low mark above the high one is lowered to it).
    /// The caller then calls [`check`](Self::check) with its size.
    pub(crate) fn set_limits(&mut self, high: usize, low: usize) {
        self.high = high;
        self.low = low.min(high);
    }

    /// What a queue of `size` bytes calls for: a pause above the high
    /// mark, a resume at or below the low mark after a pause.
    pub(crate) fn check(&mut self, size: usize) -> Flow {
        if !self.paused && size > self.high {
            self.paused = true;
            Flow::Pause
        } else if self.paused && size <= self.low {
            self.paused = false;
            Flow::Resume
        } else {
            Flow::Same
        }
    }
}

/// The write buffer: a queue of chunks with a size counter and water
/// marks. Crate-private, exposed only to the fuzz targets through the
/// hidden `fuzzing` module (feature `fuzzing`).
#[derive(Debug, Default)]
pub struct WriteBuffer {
    chunks: VecDeque<Bytes>,
    /// Small writes gather here before joining `chunks`.
    tail: BytesMut,
    len: usize,
    marks: WaterMarks,
}

impl WriteBuffer {
    /// Bytes buffered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `(high, low)` water marks.
    pub fn limits(&self) -> (usize, usize) {
        self.marks.limits()
    }

    /// Set the marks; returns the flow change the new marks cause.
    pub fn set_limits(&mut self, high: usize, low: usize) -> Flow {
        self.marks.set_limits(high, low);
        self.check()
    }

    /// Queue a copy of `data`.
    pub fn push_slice(&mut self, data: &[u8]) -> Flow {
        if data.is_empty() {
            return Flow::Same;
        }
        if data.len() <= COALESCE && self.tail.len() + data.len() <= COALESCE * 4 {
            self.tail.extend_from_slice(data);
        } else {
            self.seal_tail();
            self.chunks.push_back(Bytes::copy_from_slice(data));
        }
        self.len += data.len();
        self.check()
    }

    /// Queue `data` without copying.
    pub fn push_bytes(&mut self, data: Bytes) -> Flow {
        if data.is_empty() {
            return Flow::Same;
        }
        self.seal_tail();
        self.len += data.len();
        self.chunks.push_back(data);
        self.check()
    }

    /// Queue what the kernel did not take of `chunks` written in order:
    /// everything after the first `sent` bytes. Returns the last flow
    /// change the pushes caused (at most one can happen: pushing only
    /// grows the buffer).
    pub(crate) fn push_unsent(&mut self, chunks: &[&[u8]], sent: usize) -> Flow {
        let mut flow = Flow::Same;
        let mut skip = sent;
        for c in chunks {
            if skip >= c.len() {
                skip -= c.len();
                continue;
            }
            let f = self.push_slice(&c[skip..]);
            skip = 0;
            if f != Flow::Same {
                flow = f;
            }
        }
        flow
    }

    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
    }

    /// Up to `max` slices of pending data, oldest first.
    pub fn slices<'a>(&'a self, out: &mut Vec<IoSlice<'a>>, max: usize) {
        out.clear();
        for c in self.chunks.iter().take(max) {
            out.push(IoSlice::new(c));
        }
        if out.len() < max && !self.tail.is_empty() {
            out.push(IoSlice::new(&self.tail));
        }
    }

    /// The kernel took `n` bytes.
    pub fn consume(&mut self, mut n: usize) -> Flow {
        debug_assert!(n <= self.len);
        self.len -= n;
        while n > 0 {
            match self.chunks.front_mut() {
                Some(front) => {
                    if front.len() <= n {
                        n -= front.len();
                        self.chunks.pop_front();
                    } else {
                        front.advance(n);
                        n = 0;
                    }
                }
                None => {
                    self.tail.advance(n);
                    n = 0;
                }
            }
        }
        if self.len == 0 {
            // Give back the memory of a big burst; an idle connection
            // keeps no buffer.
            self.chunks = VecDeque::new();
            self.tail = BytesMut::new();
        }
        self.check()
    }

    /// Drop everything (abort); never reports a flow change.
    pub fn clear(&mut self) {
        self.chunks = VecDeque::new();
        self.tail = BytesMut::new();
        self.len = 0;
    }

    fn check(&mut self) -> Flow {
        self.marks.check(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(b: &WriteBuffer) -> Vec<u8> {
        let mut v = Vec::new();
        let mut s = Vec::new();
        b.slices(&mut s, usize::MAX);
        for x in s {
            v.extend_from_slice(&x);
        }
        v
    }

    #[test]
    fn pause_and_resume_are_paired_at_the_marks() {
        let mut b = WriteBuffer::default();
        assert_eq!(b.push_slice(&[0; 60 * 1024]), Flow::Same);
        assert_eq!(b.push_slice(&[0; 5 * 1024]), Flow::Pause);
        assert_eq!(b.push_slice(&[0; 5 * 1024]), Flow::Same);
        assert_eq!(b.consume(50 * 1024), Flow::Same);
        assert_eq!(b.len(), 20 * 1024);
        assert_eq!(b.consume(4 * 1024), Flow::Resume);
        assert_eq!(b.consume(16 * 1024), Flow::Same);
        assert!(b.is_empty());
    }

    #[test]
    fn order_is_kept_across_coalescing_and_partial_consumes() {
        let mut b = WriteBuffer::default();
        let mut want = Vec::new();
        for i in 0..200u32 {
            let piece: Vec<u8> = (0..(i * 37 % 9000)).map(|x| (x + i) as u8).collect();
            want.extend_from_slice(&piece);
            if i % 3 == 0 {
                b.push_bytes(Bytes::from(piece));
            } else {
                b.push_slice(&piece);
            }
        }
        assert_eq!(flat(&b), want);
        let mut got = Vec::new();
        while !b.is_empty() {
            let take = 777.min(b.len());
            got.extend_from_slice(&flat(&b)[..take]);
            b.consume(take);
        }
        assert_eq!(got, want);
    }

    #[test]
    fn push_unsent_queues_the_rest_after_any_split_point() {
        let chunks: [&[u8]; 4] = [b"abc", b"", b"defg", b"h"];
        let all = b"abcdefgh";
        for sent in 0..=all.len() {
            let mut b = WriteBuffer::default();
            assert_eq!(b.push_unsent(&chunks, sent), Flow::Same);
            assert_eq!(flat(&b), &all[sent..], "sent {sent}");
            assert_eq!(b.len(), all.len() - sent);
        }
    }

    #[test]
    fn push_unsent_reports_the_pause_it_causes() {
        let mut b = WriteBuffer::default();
        b.set_limits(4, 2);
        let chunks: [&[u8]; 3] = [b"ab", b"cd", b"ef"];
        assert_eq!(b.push_unsent(&chunks, 1), Flow::Pause);
        assert_eq!(flat(&b), b"bcdef");
    }

    #[test]
    fn water_marks_pair_pause_and_resume_and_clamp_the_low_mark() {
        let mut m = WaterMarks::default();
        m.set_limits(10, 50);
        assert_eq!(m.limits(), (10, 10));
        assert_eq!(m.check(10), Flow::Same);
        assert_eq!(m.check(11), Flow::Pause);
        assert_eq!(m.check(20), Flow::Same, "already paused");
        assert_eq!(m.check(10), Flow::Resume);
        assert_eq!(m.check(0), Flow::Same, "resume only after a pause");
    }

    #[test]
    fn lowering_the_mark_under_the_size_pauses() {
        let mut b = WriteBuffer::default();
        b.push_slice(&[1; 1000]);
        assert_eq!(b.set_limits(100, 10), Flow::Pause);
        assert_eq!(b.set_limits(2000, 1000), Flow::Resume);
    }
}
