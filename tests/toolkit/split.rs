//! The split-point helpers: which cuts are tried, that a cut-sensitive
//! decoder is caught, and how a protocol's connection is ended.

use protoloop::testing::{SplitCheck, check_protocol_splits, check_splits};
use protoloop::{CloseReason, Protocol, Transport};

#[test]
fn the_cuts_cover_whole_bytewise_every_two_way_and_small_three_way() {
    let s = SplitCheck::new();
    assert_eq!(s.cuts(0), [vec![]]);
    assert_eq!(s.cuts(1).len(), 1);
    assert_eq!(s.cuts(1)[0].len(), 1);
    assert_eq!(s.cuts(1)[0][0], 0..1);
    let c = s.cuts(4);
    // whole + bytewise + 3 two-way + C(3,2) three-way
    assert_eq!(c.len(), 1 + 1 + 3 + 3);
    assert_eq!((c[0].len(), c[0][0].clone()), (1, 0..4));
    assert_eq!(c[1], [0..1, 1..2, 2..3, 3..4]);
    assert!(c.contains(&vec![0..1, 1..3, 3..4]));
    for cut in &c {
        assert!(cut.iter().all(|r| !r.is_empty()));
        assert_eq!(cut.first().unwrap().start, 0);
        assert_eq!(cut.last().unwrap().end, 4);
        assert!(cut.windows(2).all(|w| w[0].end == w[1].start));
    }
    // Past the limit only whole, bytewise and two-way cuts.
    assert_eq!(s.clone().three_way_max(3).cuts(4).len(), 1 + 1 + 3);
    assert_eq!(SplitCheck::new().cuts(100).len(), 1 + 1 + 99);
}

#[test]
fn every_cut_is_run() {
    let mut runs = 0;
    let out = check_splits(b"abcdef", |chunks| {
        runs += 1;
        chunks.concat()
    });
    assert_eq!(out, b"abcdef");
    assert_eq!(runs, SplitCheck::new().cuts(6).len());
}

#[test]
#[should_panic(expected = "arrive in chunks of [1, 1, 1, 1]")]
fn a_decoder_that_assumes_whole_frames_is_caught() {
    // Reads a 1-byte length and takes the frame from the same chunk only.
    check_splits(&[3, b'a', b'b', b'c'], |chunks| {
        let first = chunks[0];
        let len = first[0] as usize;
        first.get(1..1 + len).map(|f| f.to_vec())
    });
}

/// Length-prefixed frames (1-byte length); closes on a zero length, and
/// reports a partial frame at EOF.
#[derive(Default)]
struct Frames {
    t: Option<Transport>,
    buf: Vec<u8>,
    frames: Vec<Vec<u8>>,
    reason: Option<String>,
    partial_at_eof: bool,
}

impl Protocol for Frames {
    fn connection_made(&mut self, t: Transport) {
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        while let Some(&len) = self.buf.first() {
            if len == 0 {
                self.t.as_ref().unwrap().close();
                return;
            }
            if self.buf.len() < 1 + len as usize {
                break;
            }
            let frame: Vec<u8> = self.buf.drain(..1 + len as usize).skip(1).collect();
            self.t
                .as_ref()
                .unwrap()
                .write(&[frame.len() as u8])
                .unwrap();
            self.frames.push(frame);
        }
    }
    fn eof_received(&mut self) -> bool {
        self.partial_at_eof = !self.buf.is_empty();
        false
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.reason = Some(reason.to_string());
    }
}

#[test]
fn a_protocol_sees_the_same_frames_and_ending_for_every_cut() {
    let input = [2, b'h', b'i', 1, b'!', 3, b'a'];
    let out = SplitCheck::new()
        .eof(true)
        .check_protocol(&input, Frames::default, |p, rec| {
            (
                p.frames.clone(),
                p.partial_at_eof,
                p.reason.clone(),
                rec.written(),
            )
        });
    assert_eq!(
        out,
        (
            vec![b"hi".to_vec(), b"!".to_vec()],
            true,
            Some("closed by peer (EOF)".to_string()),
            vec![2, 1]
        )
    );
}

#[test]
fn nothing_is_fed_after_the_protocol_closes() {
    // A zero length closes: the bytes after it never arrive, whatever the
    // cut, and connection_lost(LocalClose) follows.
    let input = [1, b'a', 0, 5, b'x'];
    let out = check_protocol_splits(&input, Frames::default, |p, rec| {
        (
            p.frames.clone(),
            p.reason.clone(),
            rec.is_closed(),
            rec.written(),
        )
    });
    assert_eq!(
        out,
        (
            vec![b"a".to_vec()],
            Some("closed locally".to_string()),
            true,
            vec![1]
        )
    );
}
