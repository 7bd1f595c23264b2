//! Soak: many concurrent customers through the real `atm` binary (started
//! with `protoloop::testing::Program`) and a bank in this process, round
//! after round, with every reply accounted for and the ATM's memory
//! watched.
//!
//! Each customer has an account of its own at the bank and makes
//! [`REQUESTS`] deposits and withdrawals one after another (the ATM
//! serves one request per connection, so each is a new connection); all
//! customers of a round run at once. The demo's wire has no message that
//! changes a balance, so the bank here keeps a ledger that the test
//! posts each reply to, as a real bank would; the ATM computes every
//! reply from the balance the bank gives it. At the end:
//!
//! - every reply is the one the demo's rule gives, for that customer;
//! - each final balance is the opening balance plus the successful
//!   deposits minus the successful withdrawals, computed separately;
//! - the bank answered, and the ATM says it served, exactly one request
//!   per customer request, and dropped none;
//! - the ATM's resident memory after the last round is within
//!   [`RSS_GROWTH_LIMIT`] of what it was after a warm-up round.
//!
//! The default size (100 customers) runs in the normal `cargo test`. The
//! full size, 1,000 concurrent customers:
//!
//! ```sh
//! PROTOLOOP_SOAK=1000 cargo test --release --test soak -- --nocapture
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use protoloop::demo::bank::BankServer;
use protoloop::demo::child::atm;
use protoloop::demo::customer::Customer;
use protoloop::demo::session::{Kind, decide};
use protoloop::proto::bank::{GetBalance, Response};
use protoloop::proto::customer::Reply;
use protoloop::rpc::Service;
use protoloop::testing::{RunningProgram, Stream};
use protoloop::{EventLoop, Handle};

const ATM: &str = env!("CARGO_BIN_EXE_atm");
/// Concurrent customers unless `PROTOLOOP_SOAK` says otherwise.
const DEFAULT_CUSTOMERS: usize = 100;
/// Requests each customer makes per round, one after another.
const REQUESTS: usize = 3;
/// Rounds after the warm-up round.
const ROUNDS: usize = 3;
/// How much the ATM's resident memory may grow from after the warm-up
/// to after the last round. Generous: this catches a leak per
/// connection or per request (1,000 customers x 9 requests leaking even
/// 4 KiB each is 36 MiB), not allocator noise.
const RSS_GROWTH_LIMIT: u64 = 24 << 20;
/// File descriptors needed besides one per customer (the test's own,
/// the loop's, the ATM child's pipes).
const FD_MARGIN: u64 = 64;

fn customers() -> usize {
    match std::env::var("PROTOLOOP_SOAK") {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            panic!("PROTOLOOP_SOAK: expected a number of customers, got `{v}`")
        }),
        Err(_) => DEFAULT_CUSTOMERS,
    }
}

/// Make sure `n` sockets can be open at once, here and in the ATM (which
/// inherits the limit): raise the soft limit up to the hard one if need
/// be, or fail saying what to do.
fn ensure_fds(n: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let want = n + FD_MARGIN;
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current.is_some_and(|cur| cur >= want) {
        return;
    }
    if lim.maximum.is_some_and(|max| max < want) {
        panic!(
            "the soak test needs {want} file descriptors but the hard limit is {:?}; \
             raise it (ulimit -Hn) or run a smaller PROTOLOOP_SOAK",
            lim.maximum
        );
    }
    lim.current = Some(want);
    setrlimit(Resource::Nofile, lim)
        .unwrap_or_else(|e| panic!("raising the file descriptor limit to {want}: {e}"));
}

/// The ATM's resident memory in bytes, from `/proc/PID/status`.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading the ATM's /proc/{pid}/status: {e}"));
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("expected `VmRSS: N kB`, got `{line}`"));
    kib * 1024
}

/// Customer `i`'s account.
fn account(i: usize) -> String {
    format!("soak-{i:04}")
}

/// What customer `i` opens with: whole amounts, so f32 sums are exact.
fn opening(i: usize) -> f32 {
    ((i % 7) * 100) as f32
}

/// Customer `i`'s request `j` of round `r`: a mix of deposits and
/// withdrawals, some of which overdraw and fail.
fn request(i: usize, r: usize, j: usize) -> (Kind, f32) {
    let k = i * 7 + r * 5 + j * 13;
    let kind = if k % 3 == 0 {
        Kind::Deposit
    } else {
        Kind::Withdraw
    };
    (kind, ((k % 50) + 1) as f32 * 10.0)
}

/// The model: each account after every round up to `rounds`, and what
/// each reply must be; kept apart from the ledger the bank answers from.
struct Model {
    balance: Vec<f32>,
    deposited: Vec<f32>,
    withdrawn: Vec<f32>,
}

impl Model {
    fn new(n: usize) -> Model {
        Model {
            balance: (0..n).map(opening).collect(),
            deposited: vec![0.0; n],
            withdrawn: vec![0.0; n],
        }
    }

    /// The reply customer `i` must get for `(kind, amount)`; moves the model.
    fn expect(&mut self, i: usize, kind: Kind, amount: f32) -> Reply {
        let d = decide(kind, amount, self.balance[i]);
        if d.success {
            match kind {
                Kind::Deposit => self.deposited[i] += amount,
                Kind::Withdraw => self.withdrawn[i] += amount,
            }
        }
        self.balance[i] = d.balance;
        Reply {
            success: d.success,
            balance: d.balance,
        }
    }
}

/// The bank's side: balances it answers with, and requests answered.
#[derive(Clone)]
struct Ledger {
    balances: Rc<RefCell<HashMap<String, f32>>>,
    answered: Rc<Cell<u64>>,
}

impl Ledger {
    fn new(n: usize) -> Ledger {
        Ledger {
            balances: Rc::new(RefCell::new(
                (0..n).map(|i| (account(i), opening(i))).collect(),
            )),
            answered: Rc::default(),
        }
    }

    fn service(&self) -> Service<GetBalance, Response> {
        let me = self.clone();
        Service::new(move |q: GetBalance| {
            me.answered.set(me.answered.get() + 1);
            let balance = me.balances.borrow().get(&q.customer_id).copied();
            Response {
                // An unknown id would be a bug of the ATM: answer NaN so
                // the reply cannot match the model.
                balance: balance.unwrap_or(f32::NAN),
                customer_id: q.customer_id,
            }
        })
    }

    /// Post a transaction the ATM reported.
    fn post(&self, id: &str, reply: &Reply) {
        if reply.success {
            self.balances
                .borrow_mut()
                .insert(id.to_string(), reply.balance);
        }
    }
}

/// One round: every customer at once, each making its requests in turn.
/// Returns the replies by customer, in order, or the first failure.
async fn round(
    h: &Handle,
    customer: &Customer,
    ledger: &Ledger,
    n: usize,
    r: usize,
) -> Vec<Vec<Reply>> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (customer, ledger) = (customer.clone(), ledger.clone());
            h.spawn(async move {
                let id = account(i);
                let mut replies = Vec::with_capacity(REQUESTS);
                for j in 0..REQUESTS {
                    let (kind, amount) = request(i, r, j);
                    let reply = customer
                        .request(kind, &id, amount)
                        .await
                        .unwrap_or_else(|e| panic!("{id}, round {r}, request {j}: {e}"));
                    ledger.post(&id, &reply);
                    replies.push(reply);
                }
                replies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.push(t.await.unwrap_or_else(|e| panic!("a customer failed: {e}")));
    }
    all
}

/// The ATM's own count, from the line it logs on SIGTERM:
/// `... (C customers connected, S served, D dropped)`.
fn atm_counts(atm: &RunningProgram) -> (u64, u64) {
    let line = atm
        .lines(Stream::Stderr, "shutting down (")
        .pop()
        .unwrap_or_else(|| panic!("no shutdown line; the ATM's stderr:\n{}", atm.stderr()));
    let count = |what: &str| -> u64 {
        let before = line
            .split(&format!(" {what}"))
            .next()
            .unwrap_or_else(|| panic!("no `{what}` in `{line}`"));
        let n = before.rsplit([' ', '(']).next().unwrap_or("");
        n.parse()
            .unwrap_or_else(|_| panic!("expected a count before `{what}` in `{line}`"))
    };
    (count("served"), count("dropped"))
}

#[test]
fn customers_through_the_atm_every_reply_accounted_for_and_memory_stable() {
    let n = customers();
    ensure_fds(n as u64);
    let limit = Duration::from_secs(60) + Duration::from_millis(100) * n as u32;
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let ledger = Ledger::new(n);
    let bank = BankServer::start(&h, "127.0.0.1:0", ledger.service()).unwrap();
    let started = Instant::now();

    let body = {
        let (h, ledger) = (h.clone(), ledger.clone());
        async move {
            let bank_addr = bank.local_addr().to_string();
            let args = ["--bank", bank_addr.as_str(), "--listen", "127.0.0.1:0"];
            let atm = atm(ATM, args)
                .start(&h)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let customer = Customer::new(&h, atm.addr().unwrap()).timeout(limit);
            let mut model = Model::new(n);
            let mut rss_after = Vec::new();
            for r in 0..=ROUNDS {
                let replies = round(&h, &customer, &ledger, n, r).await;
                for (i, got) in replies.iter().enumerate() {
                    for (j, reply) in got.iter().enumerate() {
                        let (kind, amount) = request(i, r, j);
                        let want = model.expect(i, kind, amount);
                        assert_eq!(
                            *reply,
                            want,
                            "{}, round {r}, request {j}: {kind:?} {amount}",
                            account(i)
                        );
                    }
                }
                rss_after.push(rss(atm.pid()));
            }
            let status = atm.stop().await.unwrap();
            assert!(status.success(), "{status}; its stderr:\n{}", atm.stderr());
            (model, rss_after, atm_counts(&atm), atm.stderr())
        }
    };
    let (model, rss_after, (served, dropped), stderr) = lp
        .run_until_complete({
            let h = h.clone();
            async move { h.timeout(limit, body).await }
        })
        .unwrap()
        .unwrap_or_else(|_| panic!("the soak did not finish within {limit:?}"));

    let requests = (n * REQUESTS * (ROUNDS + 1)) as u64;
    assert_eq!(ledger.answered.get(), requests, "bank requests");
    assert_eq!(served, requests, "the ATM's own count");
    assert_eq!(dropped, 0, "dropped customers; stderr:\n{stderr}");
    let balances = ledger.balances.borrow();
    for i in 0..n {
        let want = opening(i) + model.deposited[i] - model.withdrawn[i];
        assert_eq!(model.balance[i], want, "{}: the model adds up", account(i));
        assert_eq!(balances[&account(i)], want, "{}: final balance", account(i));
    }

    let (warm, last) = (rss_after[0], *rss_after.last().unwrap());
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "soak: {n} concurrent customers, {requests} requests in {:.1?}; \
         ATM VmRSS after each round: {} MiB; growth after warm-up {:+.2} MiB",
        started.elapsed(),
        rss_after
            .iter()
            .map(|&b| format!("{:.2}", mib(b)))
            .collect::<Vec<_>>()
            .join(", "),
        mib(last) - mib(warm),
    );
    assert!(
        last <= warm + RSS_GROWTH_LIMIT,
        "the ATM's memory grew from {:.2} MiB after the warm-up to {:.2} MiB",
        mib(warm),
        mib(last)
    );
}
