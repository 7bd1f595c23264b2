//! The ATM demo end to end, as the talk's conftest does it: a bank in the
//! test's loop, the real `atm` binary as a child process, customers whose
//! `send` returns a future. Every test starts its own ATM and stops it
//! with SIGTERM at the end, expecting exit status 0.
//!
//! Here: the replies, concurrency and the wire. In `atm_support/`:
//! bad customers, a lost bank and shutdown (`faults.rs`), the programs'
//! command lines and the one-command demo (`programs.rs`).

mod atm_support;
#[path = "atm_support/faults.rs"]
mod faults;
#[path = "atm_support/programs.rs"]
mod programs;

use std::time::Duration;

use atm_support::{Rig, hex};
use protoloop::demo::session::{Kind, decide};
use protoloop::proto::customer::Reply;

fn reply(success: bool, balance: f32) -> Reply {
    Reply { success, balance }
}

/// `Request("Jane Doe", WITHDRAW, 100)` framed, byte for byte as the
/// original Python customer sends it.
const JANE_WITHDRAWS_100: &[u8] = b"\x00\x11\x0a\x08Jane Doe\x10\x02\x1d\x00\x00\xc8\x42";

#[test]
fn jane_doe_withdraws_100() {
    let rig = Rig::start();
    let r = rig.run(|cx| async move { cx.customer().withdraw("Jane Doe", 100.0).await });
    assert_eq!(r.unwrap(), reply(true, 0.0));
    rig.finish_ok();
}

#[test]
fn john_doe_withdraws_100() {
    let rig = Rig::start();
    let r = rig.run(|cx| async move { cx.customer().withdraw("John Doe", 100.0).await });
    assert_eq!(r.unwrap(), reply(true, 400.0));
    rig.finish_ok();
}

#[test]
fn anonymous_cannot_withdraw_100() {
    let rig = Rig::start();
    let r = rig.run(|cx| async move { cx.customer().withdraw("Anonymous", 100.0).await });
    assert_eq!(r.unwrap(), reply(false, 0.0));
    rig.finish_ok();
}

#[test]
fn deposits_always_succeed() {
    let rig = Rig::start();
    let (anon, john) = rig.run(|cx| async move {
        let c = cx.customer();
        (
            c.deposit("Anonymous", 25.5).await.unwrap(),
            c.deposit("John Doe", 0.5).await.unwrap(),
        )
    });
    assert_eq!(anon, reply(true, 25.5));
    assert_eq!(john, reply(true, 500.5));
    rig.finish_ok();
}

#[test]
fn an_overdraw_fails_and_leaves_the_balance() {
    let rig = Rig::start();
    let (over, exact) = rig.run(|cx| async move {
        let c = cx.customer();
        (
            c.withdraw("Jane Doe", 100.5).await.unwrap(),
            c.withdraw("John Doe", 500.0).await.unwrap(),
        )
    });
    assert_eq!(over, reply(false, 100.0));
    assert_eq!(
        exact,
        reply(true, 0.0),
        "withdrawing the whole balance is allowed"
    );
    rig.finish_ok();
}

#[test]
fn fifty_customers_at_once_several_for_one_id() {
    let rig = Rig::start();
    let names = ["Jane Doe", "John Doe", "Anonymous"];
    let balances = [100.0, 500.0, 0.0];
    let cases: Vec<(usize, Kind, f32)> = (0..50)
        .map(|i| {
            let kind = if i % 4 == 3 {
                Kind::Deposit
            } else {
                Kind::Withdraw
            };
            (i % names.len(), kind, (i * 20) as f32)
        })
        .collect();
    let expected: Vec<Reply> = cases
        .iter()
        .map(|&(who, kind, amount)| {
            let d = decide(kind, amount, balances[who]);
            reply(d.success, d.balance)
        })
        .collect();
    let cases2 = cases.clone();
    let got = rig.run(move |cx| async move {
        // All sent before any is awaited: 50 connections, 50 bank calls in
        // flight on one bank connection, ~17 per customer id.
        let calls: Vec<_> = cases2
            .iter()
            .map(|&(who, kind, amount)| cx.h.spawn(cx.customer().request(kind, names[who], amount)))
            .collect();
        let mut got = Vec::new();
        for call in calls {
            got.push(call.await.unwrap().unwrap());
        }
        assert_eq!(cx.bank.connections(), 1, "one bank connection for all");
        got
    });
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "customer {i}: {:?}", cases[i]);
    }
    rig.finish_ok();
}

#[test]
fn a_request_written_one_byte_at_a_time() {
    let rig = Rig::start();
    let raw = rig.run(|cx| async move {
        let chunks: Vec<&[u8]> = JANE_WITHDRAWS_100.chunks(1).collect();
        cx.raw(&chunks, Duration::from_millis(3), false).await
    });
    assert_eq!(hex(&raw.bytes), "000708011500000000");
    assert!(!raw.reason.is_error(), "closed cleanly, got {}", raw.reason);
    rig.finish_ok();
}

#[test]
fn the_reply_bytes_are_the_originals() {
    let rig = Rig::start();
    let (jane, john, anon) = rig.run(|cx| async move {
        let john = b"\x00\x11\x0a\x08John Doe\x10\x02\x1d\x00\x00\xc8\x42";
        let anon = b"\x00\x12\x0a\x09Anonymous\x10\x02\x1d\x00\x00\xc8\x42";
        let gap = Duration::ZERO;
        (
            cx.raw(&[JANE_WITHDRAWS_100], gap, false).await.bytes,
            cx.raw(&[john], gap, false).await.bytes,
            cx.raw(&[anon], gap, false).await.bytes,
        )
    });
    // Reply(success, balance): 2-byte length 7, field 1 varint, field 2 float.
    assert_eq!(hex(&jane), "0007_0801_1500000000".replace('_', ""));
    assert_eq!(hex(&john), "0007_0801_150000c843".replace('_', ""));
    assert_eq!(hex(&anon), "0007_0800_1500000000".replace('_', ""));
    rig.finish_ok();
}

#[test]
fn a_customer_who_half_closes_after_the_request_still_gets_the_reply() {
    let rig = Rig::start();
    let raw =
        rig.run(|cx| async move { cx.raw(&[JANE_WITHDRAWS_100], Duration::ZERO, true).await });
    assert_eq!(hex(&raw.bytes), "000708011500000000");
    rig.finish_ok();
}

#[test]
fn the_bank_sees_one_connection_for_many_customers() {
    let rig = Rig::start();
    rig.run(|cx| async move {
        for i in 0..10 {
            let name = if i % 2 == 0 { "Jane Doe" } else { "John Doe" };
            cx.customer().withdraw(name, 1.0).await.unwrap();
        }
        assert_eq!(cx.bank.connections(), 1);
        assert_eq!(cx.bank.open_connections(), 1);
    });
    rig.finish_ok();
    // The ATM closed its bank link on the way out.
    rig.run(|cx| async move {
        let bank = cx.bank.clone();
        cx.wait_until("the bank link to close", move || {
            bank.open_connections() == 0
        })
        .await;
    });
}
