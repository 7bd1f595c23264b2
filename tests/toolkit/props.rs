//! Property tests over the in-memory pair: whatever the chunking, short
//! writes, capacity, water marks and reading pauses, every byte arrives in
//! order and the callback contract holds.

use proptest::prelude::*;
use protoloop::EventLoop;
use protoloop::testing::{Chunking, EndOptions, LifecycleChecker, PairOptions, pair_with};

use crate::Peer;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_byte_arrives_in_order_under_any_settings(
        writes in proptest::collection::vec(1usize..5000, 1..30),
        toggles in proptest::collection::vec(any::<bool>(), 30),
        seed in any::<u64>(),
        max_chunk in 1usize..3000,
        max_write in proptest::option::of(1usize..3000),
        capacity in 1usize..20_000,
        high in 0usize..40_000,
    ) {
        let lp = EventLoop::new_virtual().unwrap();
        let checker = LifecycleChecker::new();
        let opts = PairOptions {
            a: EndOptions::default().max_write(max_write),
            b: EndOptions::default()
                .chunking(Chunking::Random { seed, max: max_chunk })
                .capacity(capacity),
        };
        let (a, b) = pair_with(&lp.handle(), checker.wrap(Peer::new()), checker.wrap(Peer::new()), opts);
        a.transport().set_write_buffer_limits(high, high / 4);
        let mut sent = Vec::new();
        let mut reading = true;
        for (i, n) in writes.iter().enumerate() {
            let data: Vec<u8> = (sent.len()..sent.len() + n).map(|x| (x % 253) as u8).collect();
            a.transport().write(&data).unwrap();
            sent.extend_from_slice(&data);
            if toggles[i] {
                reading = !reading;
                if reading {
                    b.transport().resume_reading();
                } else {
                    b.transport().pause_reading();
                }
            }
            if i % 3 == 0 {
                lp.run_until_idle().unwrap();
            }
        }
        b.transport().resume_reading();
        a.transport().close();
        lp.run_until_idle().unwrap();
        checker.assert_finished();
        let got = b.protocol().with(|p| p.got.clone());
        prop_assert!(got == sent, "got {} of {} bytes, or out of order", got.len(), sent.len());
        prop_assert!(b.protocol().with(|p| p.sizes.iter().all(|&n| n <= max_chunk)));
    }
}
