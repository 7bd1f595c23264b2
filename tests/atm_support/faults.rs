//! What goes wrong: customers who close early or send bad bytes, a bank
//! link that is lost, shutdown with customers in flight, no bank at all.
//! Each bad customer costs one log line and nobody else notices.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use prost::Message;
use protoloop::CloseReason;
use protoloop::demo::bank::Bank;
use protoloop::demo::session::Kind;
use protoloop::demo::wire::request;
use protoloop::proto::bank::GetBalance;
use protoloop::proto::customer::Reply;
use protoloop::rpc::{RpcError, Service};
use protoloop::testing::{ProgramError, Stream};

use super::JANE_WITHDRAWS_100;
use super::atm_support::{Rig, hex, start_without_bank};

fn jane_served() -> Reply {
    Reply {
        success: true,
        balance: 0.0,
    }
}

/// A bank that answers as the demo's, except that it sits on requests
/// for `hold` (sets `held` when one comes) until `delay` has passed, or
/// for ever with `None`.
fn holding_bank(
    hold: &'static str,
    delay: Option<Duration>,
    held: Rc<Cell<u32>>,
) -> Service<GetBalance, protoloop::proto::bank::Response> {
    let bank = Bank::demo();
    Service::new_async(move |q: GetBalance| {
        let bank = bank.clone();
        let held = held.clone();
        async move {
            if q.customer_id == hold {
                held.set(held.get() + 1);
                match delay {
                    Some(d) => protoloop::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
            }
            bank.answer(q)
        }
    })
}

#[test]
fn a_customer_who_closes_without_a_request_does_not_disturb_the_atm() {
    let rig = Rig::start();
    rig.run(|cx| async move {
        // Half-close with nothing sent: the ATM closes too, without a reply.
        let raw = cx.raw(&[], Duration::ZERO, true).await;
        assert!(raw.bytes.is_empty(), "got {}", hex(&raw.bytes));
        assert!(
            matches!(raw.reason, CloseReason::PeerEof),
            "got {}",
            raw.reason
        );
        // Close outright, at once.
        let (t, _, _) = cx.connect_raw().await;
        t.close();
        let lines = cx.wait_for_log("without a request", 2).await;
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("atm: customer 127.0.0.1:"),
            "{lines:?}"
        );
        // The next customer is served.
        assert_eq!(
            cx.customer().withdraw("Jane Doe", 100.0).await.unwrap(),
            jane_served()
        );
        assert_eq!(
            cx.log_lines("customer ").len(),
            2,
            "one line per dropped customer"
        );
    });
    rig.finish_ok();
}

#[test]
fn malformed_requests_are_dropped_with_a_log_line_and_others_unaffected() {
    let rig = Rig::start();
    rig.run(|cx| async move {
        // A customer half-way through its request while others misbehave.
        let (patient, got, lost) = cx.connect_raw().await;
        patient.write(&JANE_WITHDRAWS_100[..7]).unwrap();

        let mut unknown_type = request(Kind::Deposit, "Jane Doe", 1.0);
        unknown_type.request_type = 3;
        let unknown_type = [
            &[0, unknown_type.encoded_len() as u8][..],
            &unknown_type.encode_to_vec(),
        ]
        .concat();
        let bad: [(&[u8], &str); 4] = [
            (b"\x00\x03\xff\xff\xff", "that do not decode as one"),
            (b"\x00\x00", "without customer_id, request_type, amount"),
            (
                &unknown_type,
                "expected request_type DEPOSIT (1) or WITHDRAW (2), got 3",
            ),
            // Cut short: the stream ends 15 bytes into a 17-byte frame.
            (&JANE_WITHDRAWS_100[..17], "stream ended inside a frame"),
        ];
        for (i, (bytes, why)) in bad.iter().enumerate() {
            let eof = i == 3;
            let raw = cx.raw(&[bytes], Duration::ZERO, eof).await;
            assert!(
                raw.bytes.is_empty(),
                "no reply to bad input, got {}",
                hex(&raw.bytes)
            );
            let lines = cx.wait_for_log(why, 1).await;
            assert!(lines[0].contains("malformed request"), "{lines:?}");
        }
        assert_eq!(cx.log_lines("customer ").len(), 4, "{}", cx.stderr());

        patient.write(&JANE_WITHDRAWS_100[7..]).unwrap();
        let reason =
            cx.h.timeout(super::atm_support::WAIT, lost)
                .await
                .unwrap()
                .unwrap();
        assert_eq!(hex(&got.borrow()), "000708011500000000", "closed: {reason}");
        assert_eq!(
            cx.customer().withdraw("Jane Doe", 100.0).await.unwrap(),
            jane_served()
        );
    });
    rig.finish_ok();
}

#[test]
fn an_oversize_length_is_dropped_at_once() {
    let rig = Rig::start();
    rig.run(|cx| async move {
        // 65,535 bytes announced: refused on the prefix, without waiting
        // for them (the customer never half-closes).
        let raw = cx
            .raw(&[b"\xff\xff\x0a\x08Jane"], Duration::ZERO, false)
            .await;
        assert!(raw.bytes.is_empty());
        let lines = cx.wait_for_log("frame too large", 1).await;
        assert!(lines[0].contains("got 65535"), "{lines:?}");
        assert_eq!(
            cx.customer().withdraw("Jane Doe", 100.0).await.unwrap(),
            jane_served()
        );
    });
    rig.finish_ok();
}

#[test]
fn losing_the_bank_closes_waiting_customers_and_the_atm_reconnects() {
    let held = Rc::new(Cell::new(0));
    let rig = Rig::with_bank(holding_bank("Slow Poke", None, held.clone()));
    rig.run(|cx| async move {
        let slow = cx.h.spawn(cx.customer().withdraw("Slow Poke", 1.0));
        // A customer who gives up first gets a timeout from its future.
        let impatient = cx.customer().timeout(Duration::from_millis(100));
        match impatient.withdraw("Slow Poke", 2.0).await {
            Err(RpcError::Timeout { after }) => assert_eq!(after, Duration::from_millis(100)),
            other => panic!("expected the impatient customer to time out, got {other:?}"),
        }
        let h2 = held.clone();
        cx.wait_until("the bank to get the held requests", move || h2.get() == 2)
            .await;

        cx.bank.abort_clients();
        match slow.await.unwrap() {
            Err(RpcError::ConnectionLost(_)) => {}
            other => panic!("expected the ATM to close on the waiting customer, got {other:?}"),
        }
        // Both sessions waiting on the bank are dropped, one line each.
        let lines = cx.wait_for_log("bank unavailable", 2).await;
        assert!(lines[0].contains("customer 127.0.0.1:"), "{lines:?}");
        cx.wait_for_log("lost the bank connection", 1).await;
        cx.wait_for_log("reconnected to the bank", 1).await;
        assert_eq!(cx.bank.connections(), 2);

        assert_eq!(
            cx.customer().withdraw("Jane Doe", 100.0).await.unwrap(),
            jane_served()
        );
    });
    rig.finish_ok();
}

#[test]
fn sigterm_finishes_what_is_in_flight_closes_idle_customers_and_exits_0() {
    let held = Rc::new(Cell::new(0));
    let rig = Rig::with_bank(holding_bank(
        "Jane Doe",
        Some(Duration::from_millis(300)),
        held.clone(),
    ));
    rig.run(|cx| async move {
        let (_idle, idle_got, idle_lost) = cx.connect_raw().await;
        let waiting = cx.h.spawn(cx.customer().withdraw("Jane Doe", 100.0));
        let h2 = held.clone();
        cx.wait_until("the bank to get the request", move || h2.get() == 1)
            .await;

        cx.child().terminate().unwrap();
        assert_eq!(
            waiting.await.unwrap().unwrap(),
            jane_served(),
            "finished in flight"
        );
        let reason =
            cx.h.timeout(super::atm_support::WAIT, idle_lost)
                .await
                .unwrap()
                .unwrap();
        assert!(
            idle_got.borrow().is_empty(),
            "idle customer closed ({reason}) without a reply"
        );
        let status = cx.child().wait(super::atm_support::WAIT).await.unwrap();
        assert!(
            status.success(),
            "exit status {status}; stderr:\n{}",
            cx.stderr()
        );
        assert_eq!(cx.log_lines("got SIGTERM").len(), 1, "{}", cx.stderr());
        cx.wait_for_log("the ATM is shutting down", 1).await;
        // Nobody listens any more.
        match cx.customer().withdraw("Jane Doe", 1.0).await {
            Err(RpcError::Connect(_)) => {}
            other => panic!("expected the listener gone, got {other:?}"),
        }
    });
    assert!(rig.finish().success());
}

#[test]
fn sigint_stops_the_atm_the_same_way() {
    let rig = Rig::start();
    rig.run(|cx| async move {
        assert_eq!(
            cx.customer().withdraw("Jane Doe", 100.0).await.unwrap(),
            jane_served()
        );
        cx.child()
            .transport()
            .send_signal(signal_hook::consts::SIGINT)
            .unwrap();
        let status = cx.child().wait(super::atm_support::WAIT).await.unwrap();
        assert!(
            status.success(),
            "exit status {status}; stderr:\n{}",
            cx.stderr()
        );
        assert_eq!(cx.log_lines("got SIGINT").len(), 1, "{}", cx.stderr());
    });
    assert!(rig.finish().success());
}

#[test]
fn an_atm_with_no_bank_exits_non_zero_saying_so() {
    match start_without_bank("0.3") {
        e @ ProgramError::Exited { .. } => {
            let (status, stderr) = (e.status().unwrap(), e.output(Stream::Stderr));
            assert_eq!(status.code(), Some(1), "stderr: {stderr}");
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 1, "one line, got {stderr:?}");
            assert!(
                lines[0].starts_with("atm: the bank at 127.0.0.1:")
                    && lines[0].contains("never answered"),
                "{stderr:?}"
            );
            assert!(lines[0].contains("refused"), "says why: {stderr:?}");
        }
        other => panic!("expected the ATM to exit, got {other}"),
    }
}
