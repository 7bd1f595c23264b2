//! The correlation rules, without sockets or clocks.

use std::time::{Duration, Instant};

use super::*;

fn fifo() -> Correlator<String> {
    Correlator::new(Correlation::Fifo)
}

fn send_all(c: &mut Correlator<String>) -> Vec<CallId> {
    std::iter::from_fn(|| c.next_to_send()).collect()
}

#[test]
fn fifo_matches_in_order() {
    let mut c = fifo();
    let ids: Vec<_> = (0..100).map(|_| c.submit(None, None)).collect();
    assert_eq!(send_all(&mut c), ids);
    for id in &ids {
        assert_eq!(c.on_reply(ReplyTag::Next), Ok(Delivery::Call(*id)));
    }
    assert_eq!(c.in_flight(), 0);
    assert_eq!(
        c.on_reply(ReplyTag::Next),
        Err(CorrelationError::NoCallInFlight)
    );
}

#[test]
fn cancelled_in_flight_call_still_consumes_its_reply() {
    let mut c = fifo();
    let ids: Vec<_> = (0..5).map(|_| c.submit(None, None)).collect();
    send_all(&mut c);
    assert_eq!(c.cancel(ids[1]), Cancelled::Abandoned);
    assert_eq!(c.cancel(ids[3]), Cancelled::Abandoned);
    assert_eq!(c.cancel(ids[3]), Cancelled::Unknown);
    let got: Vec<_> = (0..5)
        .map(|_| c.on_reply(ReplyTag::Next).unwrap())
        .collect();
    assert_eq!(
        got,
        vec![
            Delivery::Call(ids[0]),
            Delivery::Abandoned(ids[1]),
            Delivery::Call(ids[2]),
            Delivery::Abandoned(ids[3]),
            Delivery::Call(ids[4]),
        ]
    );
}

#[test]
fn cancelled_queued_call_never_goes_out() {
    let mut c = fifo().with_max_in_flight(1);
    let a = c.submit(None, None);
    let b = c.submit(None, None);
    let d = c.submit(None, None);
    assert_eq!(c.next_to_send(), Some(a));
    assert_eq!(c.next_to_send(), None, "cap of 1");
    assert_eq!(c.cancel(b), Cancelled::Unsent);
    assert_eq!(c.queued(), 1);
    assert_eq!(c.on_reply(ReplyTag::Next), Ok(Delivery::Call(a)));
    assert_eq!(c.next_to_send(), Some(d));
    assert_eq!(c.on_reply(ReplyTag::Next), Ok(Delivery::Call(d)));
}

#[test]
fn abandoned_calls_leave_the_in_flight_count_and_the_cap_at_once() {
    let mut c = fifo().with_max_in_flight(2);
    let a = c.submit(None, None);
    let b = c.submit(None, None);
    let d = c.submit(None, None);
    assert_eq!(send_all(&mut c), vec![a, b]);
    c.cancel(a);
    assert_eq!((c.in_flight(), c.abandoned()), (1, 1));
    assert_eq!(c.next_to_send(), Some(d), "a no longer holds a place");
    assert_eq!((c.in_flight(), c.abandoned()), (2, 1));
    // a's reply still comes first and is thrown away.
    assert_eq!(c.on_reply(ReplyTag::Next), Ok(Delivery::Abandoned(a)));
    assert_eq!((c.in_flight(), c.abandoned()), (2, 0));
    assert_eq!(c.on_reply(ReplyTag::Next), Ok(Delivery::Call(b)));
    assert_eq!(c.on_reply(ReplyTag::Next), Ok(Delivery::Call(d)));
    assert_eq!((c.in_flight(), c.abandoned()), (0, 0));
}

/// A server that never answers the calls that time out (by id, a server
/// may drop requests) does not wedge the client: each expiry frees its
/// place under the cap.
#[test]
fn timeouts_do_not_use_up_the_cap() {
    let t0 = Instant::now();
    let mut c = Correlator::<String>::new(Correlation::ById).with_max_in_flight(2);
    for i in 0..10u32 {
        let now = t0 + Duration::from_secs(u64::from(i));
        let id = c.submit(None, Some(now + Duration::from_millis(500)));
        assert_eq!(c.next_to_send(), Some(id), "round {i}");
        assert_eq!(c.expire(now + Duration::from_secs(1)), vec![id]);
        assert_eq!((c.in_flight(), c.abandoned()), (0, 0));
    }
    // A late reply for one of them is thrown away, not an error.
    assert_eq!(
        c.on_reply(ReplyTag::Id(3)),
        Ok(Delivery::Abandoned(CallId(3)))
    );
}

#[test]
fn write_pause_holds_calls() {
    let mut c = fifo();
    c.set_write_paused(true);
    let a = c.submit(None, None);
    assert!(!c.can_send());
    assert_eq!(c.next_to_send(), None);
    c.set_write_paused(false);
    assert_eq!(c.next_to_send(), Some(a));
}

#[test]
fn by_key_matches_per_key_in_order() {
    let mut c = Correlator::<String>::new(Correlation::ByKey);
    let jane1 = c.submit(Some("jane".into()), None);
    let bob = c.submit(Some("bob".into()), None);
    let jane2 = c.submit(Some("jane".into()), None);
    c.cancel(jane1);
    assert_eq!(send_all(&mut c), vec![bob, jane2], "jane1 was never sent");
    let mut c = Correlator::<String>::new(Correlation::ByKey);
    let jane1 = c.submit(Some("jane".into()), None);
    let bob = c.submit(Some("bob".into()), None);
    let jane2 = c.submit(Some("jane".into()), None);
    send_all(&mut c);
    c.cancel(jane1);
    assert_eq!(
        c.on_reply(ReplyTag::Key("bob".into())),
        Ok(Delivery::Call(bob))
    );
    assert_eq!(
        c.on_reply(ReplyTag::Key("jane".into())),
        Ok(Delivery::Abandoned(jane1))
    );
    assert_eq!(
        c.on_reply(ReplyTag::Key("jane".into())),
        Ok(Delivery::Call(jane2))
    );
    let extra = c.submit(Some("ann".into()), None);
    c.next_to_send();
    assert_eq!(
        c.on_reply(ReplyTag::Key("zed".into())),
        Err(CorrelationError::UnknownKey {
            key: "\"zed\"".into(),
            in_flight: 1
        })
    );
    assert_eq!(
        c.on_reply(ReplyTag::Key("ann".into())),
        Ok(Delivery::Call(extra))
    );
}

#[test]
fn by_id_matches_any_order() {
    let mut c = Correlator::<String>::new(Correlation::ById);
    let ids: Vec<_> = (0..4).map(|_| c.submit(None, None)).collect();
    send_all(&mut c);
    c.cancel(ids[2]);
    for i in [3, 0, 2, 1] {
        let want = if i == 2 {
            Delivery::Abandoned(ids[i])
        } else {
            Delivery::Call(ids[i])
        };
        assert_eq!(c.on_reply(ReplyTag::Id(ids[i].0)), Ok(want));
    }
    assert_eq!(
        c.on_reply(ReplyTag::Id(1)),
        Ok(Delivery::Abandoned(ids[1])),
        "answered already: thrown away"
    );
    assert_eq!(
        c.on_reply(ReplyTag::Id(99)),
        Err(CorrelationError::UnknownId { id: 99 }),
        "never given out"
    );
    let q = c.submit(None, None);
    assert_eq!(
        c.on_reply(ReplyTag::Id(q.0)),
        Err(CorrelationError::UnknownId { id: q.0 }),
        "not sent yet"
    );
}

#[test]
fn wrong_tag_is_an_error() {
    let mut c = fifo();
    c.submit(None, None);
    c.next_to_send();
    assert!(matches!(
        c.on_reply(ReplyTag::Id(0)),
        Err(CorrelationError::WrongTag {
            expected: Correlation::Fifo,
            ..
        })
    ));
}

#[test]
fn deadlines_expire_queued_and_sent_calls() {
    let t0 = Instant::now();
    let s = Duration::from_secs(1);
    let mut c = fifo().with_max_in_flight(1);
    let a = c.submit(None, Some(t0 + 2 * s));
    let b = c.submit(None, Some(t0 + s));
    let d = c.submit(None, None);
    let e = c.submit(None, Some(t0 + 5 * s));
    assert_eq!(c.next_to_send(), Some(a));
    assert_eq!(c.next_deadline(), Some(t0 + s));
    assert!(c.expire(t0).is_empty());
    assert_eq!(c.expire(t0 + s), vec![b], "b times out unsent");
    assert_eq!(c.next_deadline(), Some(t0 + 2 * s));
    assert_eq!(c.expire(t0 + 3 * s), vec![a], "a times out in flight");
    assert_eq!(c.in_flight(), 0, "a timed-out call is not in flight");
    assert_eq!(c.next_to_send(), Some(d), "nor does it hold a place");
    assert_eq!(c.on_reply(ReplyTag::Next), Ok(Delivery::Abandoned(a)));
    assert_eq!(c.on_reply(ReplyTag::Next), Ok(Delivery::Call(d)));
    assert_eq!(c.next_to_send(), Some(e));
    assert_eq!(c.on_reply(ReplyTag::Next), Ok(Delivery::Call(e)));
    assert_eq!(c.next_deadline(), None, "answered calls have no deadline");
    assert!(c.expire(t0 + 10 * s).is_empty());
}

#[test]
fn connection_loss_fails_in_flight_and_optionally_queued() {
    for keep in [false, true] {
        let mut c = fifo().with_max_in_flight(2);
        let ids: Vec<_> = (0..4).map(|_| c.submit(None, None)).collect();
        send_all(&mut c);
        c.cancel(ids[0]);
        let failed = c.connection_lost(keep);
        if keep {
            assert_eq!(failed, vec![ids[1]]);
            assert_eq!(c.queued(), 2);
            assert_eq!(send_all(&mut c), vec![ids[2], ids[3]]);
            assert_eq!(c.on_reply(ReplyTag::Next), Ok(Delivery::Call(ids[2])));
        } else {
            assert_eq!(failed, vec![ids[1], ids[2], ids[3]]);
            assert_eq!(c.queued(), 0);
            assert_eq!(c.next_to_send(), None);
        }
        assert!(c.next_deadline().is_none());
    }
}

#[test]
#[should_panic(expected = "needs each request's key")]
fn by_key_without_a_key_is_a_bug() {
    Correlator::<String>::new(Correlation::ByKey).submit(None, None);
}

#[test]
fn every_cancellation_pattern_keeps_fifo_matching_right() {
    // For every subset of 6 sent calls cancelled, each surviving call gets
    // exactly its own reply.
    for mask in 0u32..64 {
        let mut c = fifo();
        let ids: Vec<_> = (0..6).map(|_| c.submit(None, None)).collect();
        send_all(&mut c);
        for (i, id) in ids.iter().enumerate() {
            if mask & (1 << i) != 0 {
                c.cancel(*id);
            }
        }
        for (i, id) in ids.iter().enumerate() {
            let want = if mask & (1 << i) != 0 {
                Delivery::Abandoned(*id)
            } else {
                Delivery::Call(*id)
            };
            assert_eq!(c.on_reply(ReplyTag::Next), Ok(want), "mask {mask:b}");
        }
    }
}
