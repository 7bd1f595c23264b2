//! Split-point testing: feed one byte sequence cut every possible way and
//! demand the same outcome each time.
//!
//! A stream transport may deliver bytes in any cut (TCP guarantees order,
//! not boundaries), so a decoder or protocol must not care where the cuts
//! fall. [`check_splits`] runs a closure on every cut of an input and
//! [`check_protocol_splits`] feeds a fresh protocol every cut through a
//! [`RecordingTransport`]; both panic on the first cut whose outcome
//! differs from feeding the input whole, and name that cut.

use std::fmt::Debug;
use std::ops::Range;

use super::recording::RecordingTransport;
use crate::protocol::{CloseReason, Protocol};

/// Inputs up to this long are also cut in every 3-way split by default
/// (C(63, 2) = 1953 cuts at 64 bytes).
pub const DEFAULT_THREE_WAY_MAX: usize = 64;

/// Which cuts to try, and how a protocol's connection ends; the free
/// functions use the defaults.
///
/// ```
/// use protoloop::testing::SplitCheck;
/// // Decimal digits summed by a tiny streaming decoder.
/// let sum = SplitCheck::new().three_way_max(16).check(b"12345", |chunks| {
///     chunks.iter().flat_map(|c| c.iter()).map(|b| (b - b'0') as u32).sum::<u32>()
/// });
/// assert_eq!(sum, 15);
/// ```
#[derive(Debug, Clone)]
pub struct SplitCheck {
    three_way_max: usize,
    eof: bool,
}

impl Default for SplitCheck {
    fn default() -> Self {
        SplitCheck {
            three_way_max: DEFAULT_THREE_WAY_MAX,
            eof: false,
        }
    }
}

impl SplitCheck {
    /// The default: whole, one byte at a time, every 2-way cut, and every
    /// 3-way cut for inputs up to [`DEFAULT_THREE_WAY_MAX`] bytes; no EOF.
    pub fn new() -> SplitCheck {
        SplitCheck::default()
    }

    /// Try every 3-way cut for inputs up to `n` bytes (0: never).
    pub fn three_way_max(mut self, n: usize) -> Self {
        self.three_way_max = n;
        self
    }

    /// [`check_protocol`](Self::check_protocol) ends the stream with
    /// `eof_received` (and the `connection_lost` that follows it) after the
    /// data, as a peer that closes would.
    pub fn eof(mut self, on: bool) -> Self {
        self.eof = on;
        self
    }

    /// Every cut tried for an input of `len` bytes, as byte ranges, first
    /// the whole input (the reference). No cut has an empty piece; an
    /// empty input has one cut with no pieces.
    pub fn cuts(&self, len: usize) -> Vec<Vec<Range<usize>>> {
        let mut out: Vec<Vec<Range<usize>>> = Vec::new();
        if len == 0 {
            out.push(Vec::new());
            return out;
        }
        out.push(std::iter::once(0..len).collect());
        if len > 1 {
            out.push((0..len).map(|i| i..i + 1).collect());
        }
        for i in 1..len {
            out.push(vec![0..i, i..len]);
        }
        if len <= self.three_way_max {
            for i in 1..len {
                for j in i + 1..len {
                    out.push(vec![0..i, i..j, j..len]);
                }
            }
        }
        out
    }

    /// Run `run` on every cut of `input` (as a list of chunks) and return
    /// the outcome of the whole input.
    ///
    /// # Panics
    ///
    /// On the first cut whose outcome differs, naming the chunk sizes and
    /// both outcomes.
    #[track_caller]
    pub fn check<T, F>(&self, input: &[u8], mut run: F) -> T
    where
        T: PartialEq + Debug,
        F: FnMut(&[&[u8]]) -> T,
    {
        let mut cuts = self.cuts(input.len()).into_iter();
        let whole: Vec<&[u8]> = cuts
            .next()
            .expect("the whole input is always a cut")
            .into_iter()
            .map(|r| &input[r])
            .collect();
        let expected = run(&whole);
        for cut in cuts {
            let chunks: Vec<&[u8]> = cut.iter().map(|r| &input[r.clone()]).collect();
            let got = run(&chunks);
            if got != expected {
                let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
                panic!(
                    "outcome differs when the {} input bytes arrive in chunks of {sizes:?}:\n  \
                     got:      {got:?}\n  expected: {expected:?} (input in one piece)",
                    input.len()
                );
            }
        }
        expected
    }

    /// Feed every cut of `input` to a fresh protocol from `make`, through
    /// a fresh [`RecordingTransport`], as a transport would: once the
    /// protocol closes or aborts, the rest is not delivered and
    /// `connection_lost` follows. Then `observe` reports the outcome
    /// (the protocol's state, what it wrote: `rec.written()`, `rec.calls()`
    /// ...). Returns the outcome of the whole input.
    ///
    /// Reading pauses are not modelled: every chunk is fed (use the
    /// in-memory [`pair`](super::pair) to test flow control).
    ///
    /// # Panics
    ///
    /// As [`check`](Self::check).
    #[track_caller]
    pub fn check_protocol<P, T>(
        &self,
        input: &[u8],
        mut make: impl FnMut() -> P,
        mut observe: impl FnMut(&mut P, &RecordingTransport) -> T,
    ) -> T
    where
        P: Protocol,
        T: PartialEq + Debug,
    {
        let eof = self.eof;
        self.check(input, |chunks| {
            let rec = RecordingTransport::new();
            let mut p = make();
            p.connection_made(rec.transport());
            for c in chunks {
                if rec.is_closed() {
                    break;
                }
                p.data_received(c);
            }
            // How a socket transport would end the connection from here.
            let (mut peer_eof, mut both_shut) = (false, false);
            if eof && !rec.is_closed() {
                let keep_open = p.eof_received();
                peer_eof = !keep_open;
                both_shut = keep_open && rec.is_eof_written();
            }
            let reason = if rec.is_aborted() {
                Some(CloseReason::LocalAbort)
            } else if rec.is_closed() || both_shut {
                Some(CloseReason::LocalClose)
            } else if peer_eof {
                Some(CloseReason::PeerEof)
            } else {
                None
            };
            if let Some(r) = reason {
                p.connection_lost(r);
            }
            observe(&mut p, &rec)
        })
    }
}

/// [`SplitCheck::check`] with the default cuts.
///
/// ```
/// use protoloop::testing::check_splits;
/// // Count newline-terminated lines with a decoder that keeps state
/// // across chunks.
/// let lines = check_splits(b"a\nbb\nccc\n", |chunks| {
///     let mut lines = Vec::new();
///     let mut cur = Vec::new();
///     for c in chunks {
///         for &b in *c {
///             if b == b'\n' { lines.push(std::mem::take(&mut cur)); } else { cur.push(b); }
///         }
///     }
///     lines
/// });
/// assert_eq!(lines.len(), 3);
/// ```
#[track_caller]
pub fn check_splits<T, F>(input: &[u8], run: F) -> T
where
    T: PartialEq + Debug,
    F: FnMut(&[&[u8]]) -> T,
{
    SplitCheck::default().check(input, run)
}

/// [`SplitCheck::check_protocol`] with the default cuts and no EOF.
///
/// ```
/// use protoloop::testing::check_protocol_splits;
/// use protoloop::{Protocol, Transport};
///
/// /// Answers every complete line with its length.
/// #[derive(Default)]
/// struct LineLen { t: Option<Transport>, cur: usize }
/// impl Protocol for LineLen {
///     fn connection_made(&mut self, t: Transport) { self.t = Some(t); }
///     fn data_received(&mut self, data: &[u8]) {
///         for &b in data {
///             if b == b'\n' {
///                 let n = std::mem::take(&mut self.cur);
///                 self.t.as_ref().unwrap().write(format!("{n}\n").as_bytes()).unwrap();
///             } else {
///                 self.cur += 1;
///             }
///         }
///     }
/// }
///
/// let out = check_protocol_splits(b"ab\n\ncde\nf", LineLen::default, |p, rec| {
///     (rec.written(), p.cur)
/// });
/// assert_eq!(out, (b"2\n0\n3\n".to_vec(), 1));
/// ```
#[track_caller]
pub fn check_protocol_splits<P, T>(
    input: &[u8],
    make: impl FnMut() -> P,
    observe: impl FnMut(&mut P, &RecordingTransport) -> T,
) -> T
where
    P: Protocol,
    T: PartialEq + Debug,
{
    SplitCheck::default().check_protocol(input, make, observe)
}
