//! Write flow control over loopback TCP: `pause_writing` and
//! `resume_writing` paired at the 64 KiB / 16 KiB defaults against a
//! raw peer that stops reading, never delivered inside the write that
//! caused them, and moved by `set_write_buffer_limits`.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::net::{adopt, kinds};
use common::{Ev, Rec, read_available, run, turns, wait_until};
use protoloop::EventLoop;

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn pause_writing_is_not_delivered_inside_the_write_that_caused_it() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let rec = Rec::new().0.on_data(|t, _, log| {
        // Far above the high-water mark; the peer is not reading yet.
        for _ in 0..64 {
            t.write(&[1; 256 * 1024]).unwrap();
        }
        log.borrow_mut().push(Ev::Mark("returned from write"));
    });
    let (probe, mut peer) = adopt(&h, rec);
    let p = probe.clone();
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        peer.write_all(b"go").unwrap();
        wait_until(&h2, "pause_writing", || common::is_paused(&p)).await;
        peer.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut n = 0;
        while got.len() < 64 * 256 * 1024 {
            read_available(&mut peer, &mut got).unwrap();
            h2.sleep(Duration::from_millis(1)).await;
            n += 1;
            assert!(n < 20_000, "peer did not get everything");
        }
        wait_until(&h2, "resume_writing", || !common::is_paused(&p)).await;
        p.transport().close();
        wait_until(&h2, "lost", || p.is_lost()).await;
    });
    probe.check_contract();
    let k = kinds(&probe);
    assert_eq!(
        &k[..4],
        ["made", "data", "mark:returned from write", "pause"],
        "{k:?}"
    );
    assert_eq!(&k[4..], ["resume", "lost:LocalClose"], "{k:?}");
}

/// Write `chunk`-sized pieces until the protocol is paused, then check
/// the buffer size at the pause; drain the peer; check the resume.
#[test]
fn pause_and_resume_writing_are_paired_at_the_default_marks() {
    const CHUNK: usize = 4096;
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (probe, mut peer) = adopt(&h, Rec::new().0);
    peer.set_nonblocking(true).unwrap();
    let p = probe.clone();
    let h2 = h.clone();
    let received = run(&lp, LIMIT, async move {
        let t = p.transport();
        assert_eq!(t.get_write_buffer_limits(), (64 * 1024, 16 * 1024));
        let mut rng = common::Rng::new(7);
        let mut sent = Vec::new();
        let mut got = Vec::new();
        let mut max_buffered = 0;
        for round in 0..3 {
            // Write, yielding between writes so pause_writing can arrive,
            // until paused. The peer reads nothing meanwhile.
            let mut writes = 0;
            while !common::is_paused(&p) {
                let piece = rng.bytes(CHUNK);
                t.write(&piece).unwrap();
                sent.extend_from_slice(&piece);
                max_buffered = max_buffered.max(t.get_write_buffer_size());
                writes += 1;
                assert!(writes < 100_000, "never paused (round {round})");
                turns(1).await;
            }
            // Honour the pause: no writes until resumed.
            let pauses = p.count(|e| matches!(e, Ev::PauseWriting(_)));
            assert_eq!(pauses, round + 1);
            while common::is_paused(&p) {
                read_available(&mut peer, &mut got).unwrap();
                h2.sleep(Duration::from_millis(1)).await;
            }
        }
        // Drain the rest.
        while got.len() < sent.len() {
            read_available(&mut peer, &mut got).unwrap();
            h2.sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "bytes differ");
        // Memory stayed bounded: the buffer never held much more than the
        // high mark plus one write.
        assert!(
            max_buffered <= 64 * 1024 + CHUNK,
            "buffer reached {max_buffered}"
        );
        assert_eq!(t.get_write_buffer_size(), 0);
        t.close();
        wait_until(&h2, "lost", || p.is_lost()).await;
        got.len()
    });
    probe.check_contract();
    let log = probe.log.borrow();
    let pauses: Vec<usize> = log
        .iter()
        .filter_map(|e| match e {
            Ev::PauseWriting(n) => Some(*n),
            _ => None,
        })
        .collect();
    let resumes: Vec<usize> = log
        .iter()
        .filter_map(|e| match e {
            Ev::ResumeWriting(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(pauses.len(), 3);
    assert_eq!(resumes.len(), 3);
    for n in pauses {
        assert!(
            n > 64 * 1024 && n <= 64 * 1024 + CHUNK,
            "paused at {n} bytes"
        );
    }
    for n in resumes {
        assert!(n <= 16 * 1024, "resumed at {n} bytes");
    }
    assert!(received > 0);
}

#[test]
fn lowering_the_write_buffer_limits_pauses_and_raising_resumes() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (probe, mut peer) = adopt(&h, Rec::new().0);
    let p = probe.clone();
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let t = p.transport();
        // Fill the kernel buffers until writes queue past the high mark.
        let mut total = 0;
        while !common::is_paused(&p) {
            t.write(&[0; 65536]).unwrap();
            total += 65536;
            turns(1).await;
            assert!(total < 512 << 20, "kernel never pushed back");
        }
        let queued = t.get_write_buffer_size();
        t.set_write_buffer_limits(queued * 4, queued * 2);
        assert_eq!(t.get_write_buffer_limits(), (queued * 4, queued * 2));
        wait_until(&h2, "resume after raising the marks", || {
            !common::is_paused(&p)
        })
        .await;
        t.set_write_buffer_limits(10, 100); // low is clamped to high
        assert_eq!(t.get_write_buffer_limits(), (10, 10));
        wait_until(&h2, "pause after lowering the marks", || {
            common::is_paused(&p)
        })
        .await;
        t.abort();
        wait_until(&h2, "lost", || p.is_lost()).await;
        drop(peer.read(&mut [0; 1]));
    });
    probe.check_contract();
}
