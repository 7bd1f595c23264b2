//! The ATM's customer side fed a customer's bytes cut at every point: the
//! teller (the framing adapter around the sans-IO session), on a recording
//! transport, with an in-memory bank behind a real RPC client, answers,
//! drops and logs the same whatever the cuts.

use std::cell::RefCell;
use std::rc::Rc;

use super::atm::AtmStats;
use super::bank::Bank;
use super::session::Kind;
use super::teller::{Branch, Teller};
use super::wire::request;
use crate::EventLoop;
use crate::codec::{FrameCodec, Framed, MessageCodec};
use crate::proto::customer::{Reply, Request};
use crate::rpc::{RpcClient, RpcOptions};
use crate::testing::{Call, RecordingTransport, SplitCheck, pair};

/// The largest request frame these tellers take.
const MAX_REQUEST: usize = 64;

/// What a customer connection came to.
#[derive(Debug, PartialEq)]
struct Outcome {
    replies: Vec<(bool, f32)>,
    calls: Vec<Call>,
    log: Vec<String>,
    stats: AtmStats,
}

/// Tellers of one ATM whose bank is in memory.
struct Atm {
    lp: EventLoop,
    bank: RpcClient<crate::proto::bank::GetBalance, crate::proto::bank::Response>,
    branch: RefCell<Option<Rc<Branch>>>,
    log: Rc<RefCell<Vec<String>>>,
}

impl Atm {
    fn new() -> Atm {
        let lp = EventLoop::new_virtual().unwrap();
        let h = lp.handle();
        let service = Bank::new([("Jane Doe", 500.0)]).service();
        let h2 = h.clone();
        let connect = RpcClient::connect_with(&h, RpcOptions::new(), move |p| {
            let (ours, _bank) = pair(&h2, p, service.protocol());
            std::future::ready(Ok(ours.transport().clone()))
        });
        let bank = lp.run_until_complete(connect).unwrap().unwrap();
        Atm {
            lp,
            bank,
            branch: RefCell::new(None),
            log: Rc::default(),
        }
    }

    /// A fresh teller (and fresh counts) for one customer.
    fn teller(&self) -> Framed<Teller> {
        self.log.borrow_mut().clear();
        let log = self.log.clone();
        let branch = Rc::new(Branch {
            handle: self.lp.handle(),
            bank: self.bank.clone(),
            log: Rc::new(move |line: &str| log.borrow_mut().push(line.to_string())),
            stats: RefCell::new(AtmStats::default()),
        });
        *self.branch.borrow_mut() = Some(branch.clone());
        let framing = FrameCodec::builder().max_frame_length(MAX_REQUEST).build();
        Framed::with_framing(Teller::new(branch), framing)
    }

    /// Let the bank call finish, then say what the customer got.
    fn outcome(&self, rec: &RecordingTransport) -> Outcome {
        self.lp.run_until_idle().unwrap();
        let codec = MessageCodec::<Reply, ()>::new();
        let mut buf = bytes::BytesMut::from(&rec.written()[..]);
        let mut replies = Vec::new();
        while let Some(r) =
            tokio_util::codec::Decoder::decode(&mut codec.clone(), &mut buf).unwrap()
        {
            replies.push((r.success, r.balance));
        }
        assert!(buf.is_empty(), "a partial reply was written");
        let stats = *self.branch.borrow().as_ref().unwrap().stats.borrow();
        Outcome {
            replies,
            calls: rec
                .calls()
                .into_iter()
                .filter(|c| !matches!(c, Call::Write(_)))
                .collect(),
            log: self.log.borrow().clone(),
            stats,
        }
    }

    fn check(&self, splits: SplitCheck, input: &[u8]) -> Outcome {
        splits.check_protocol(
            input,
            || self.teller(),
            |_: &mut Framed<Teller>, rec| self.outcome(rec),
        )
    }
}

fn frame(req: &Request) -> Vec<u8> {
    MessageCodec::<(), Request>::new()
        .encode_frame(req)
        .unwrap()
        .to_vec()
}

#[test]
fn a_request_cut_any_way_gets_the_same_reply() {
    let atm = Atm::new();
    let wire = frame(&request(Kind::Withdraw, "Jane Doe", 100.0));
    assert!(wire.len() <= 64, "every 3-way cut is tried");
    let out = atm.check(SplitCheck::new(), &wire);
    assert_eq!(out.replies, [(true, 400.0)]);
    assert_eq!(out.calls, [Call::Close]);
    assert!(out.log.is_empty(), "{:?}", out.log);
    assert_eq!(
        out.stats,
        AtmStats {
            served: 1,
            dropped: 0
        }
    );

    // The customer half-closes after its request, as the demo's does.
    let out = atm.check(SplitCheck::new().eof(true), &wire);
    assert_eq!(out.replies, [(true, 400.0)]);
    assert_eq!(out.stats.served, 1);
    // A deposit for an account the bank does not know starts from 0.
    let out = atm.check(
        SplitCheck::new(),
        &frame(&request(Kind::Deposit, "nobody", 5.0)),
    );
    assert_eq!(out.replies, [(true, 5.0)]);
}

#[test]
fn a_malformed_request_cut_any_way_is_dropped_with_one_log_line() {
    let atm = Atm::new();
    // A whole frame that lacks the required amount.
    let mut r = frame(&request(Kind::Withdraw, "Jane Doe", 1.0));
    r.truncate(r.len() - 5);
    r[1] -= 5;
    let out = atm.check(SplitCheck::new(), &r);
    assert!(out.replies.is_empty());
    assert_eq!(out.calls, [Call::Close]);
    assert_eq!(
        out.stats,
        AtmStats {
            served: 0,
            dropped: 1
        }
    );
    assert_eq!(out.log.len(), 1, "{:?}", out.log);
    assert!(out.log[0].contains("amount"), "{:?}", out.log);

    // Bytes that are no protobuf at all.
    let out = atm.check(SplitCheck::new(), &[0, 3, 0xff, 0xff, 0xff]);
    assert!(out.replies.is_empty());
    assert_eq!(out.stats.dropped, 1);
    assert!(out.log[0].contains("customer.Request"), "{:?}", out.log);

    // A length over the limit.
    let mut big = vec![0, MAX_REQUEST as u8 + 1];
    big.extend([0u8; 8]);
    let out = atm.check(SplitCheck::new(), &big);
    assert!(out.replies.is_empty());
    assert_eq!((out.stats.dropped, out.log.len()), (1, 1), "{:?}", out.log);
}

#[test]
fn a_request_cut_short_by_eof_is_dropped_the_same_at_every_cut() {
    let atm = Atm::new();
    let wire = frame(&request(Kind::Deposit, "Jane Doe", 1.0));
    let out = atm.check(SplitCheck::new().eof(true), &wire[..wire.len() - 2]);
    assert!(out.replies.is_empty());
    assert_eq!(
        out.stats,
        AtmStats {
            served: 0,
            dropped: 1
        }
    );
    assert_eq!(out.log.len(), 1, "{:?}", out.log);
}
