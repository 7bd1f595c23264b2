//! The whole demo in one call, as `atm demo` runs it: a bank in this
//! process, the `atm` program as a child process (through the subprocess
//! transport), and the talk's three customers at once.
//!
//! ```text
//!   this process                          child process
//!  +-------------------------------+     +------------------+
//!  | bank (127.0.0.1:0)  <---------+-----+- atm             |
//!  | 3 customers  -----------------+---->+  (--listen :0)   |
//!  +-------------------------------+     +------------------+
//! ```
//!
//! It succeeds when every reply is the one the talk shows and the ATM
//! exits 0 on `SIGTERM`.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::Duration;

use super::bank::{Bank, BankServer};
use super::child::{LISTENING, atm, listening_addr};
use super::customer::Customer;
use super::session::Kind;
use super::wire::describe;
use crate::proto::customer::Reply;
use crate::testing::ProgramError;
use crate::{Handle, Stdio};

/// One customer of the demo and the reply the talk shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Case {
    /// Who.
    pub customer: &'static str,
    /// What.
    pub kind: Kind,
    /// How much.
    pub amount: f32,
    /// The reply expected.
    pub expected: Reply,
}

/// The talk's three customers, against [`Bank::demo`].
pub const CASES: [Case; 3] = [
    Case {
        customer: "Jane Doe",
        kind: Kind::Withdraw,
        amount: 100.0,
        expected: Reply {
            success: true,
            balance: 0.0,
        },
    },
    Case {
        customer: "John Doe",
        kind: Kind::Withdraw,
        amount: 100.0,
        expected: Reply {
            success: true,
            balance: 400.0,
        },
    },
    Case {
        customer: "Anonymous",
        kind: Kind::Withdraw,
        amount: 100.0,
        expected: Reply {
            success: false,
            balance: 0.0,
        },
    },
];

/// How long the ATM child may take to say it listens.
const START_WITHIN: Duration = Duration::from_secs(10);
/// How long it has to exit after `SIGTERM` before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Why the demo could not run at all (a wrong reply is not an error: it
/// is reported and makes [`run`] return `false`).
#[derive(Debug)]
#[non_exhaustive]
pub enum TourError {
    /// The in-process bank could not listen.
    Bank(crate::Error),
    /// The ATM child did not start.
    Atm(ProgramError),
    /// The ATM child's listening line had no address in it (the line).
    NoAddress(String),
    /// The ATM child could not be stopped and reaped.
    Stop(ProgramError),
}

impl fmt::Display for TourError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TourError::Bank(e) => write!(f, "the bank could not listen: {e}"),
            TourError::Atm(e) => e.fmt(f),
            TourError::NoAddress(line) => {
                write!(
                    f,
                    "expected `{LISTENING}ADDRESS` from the ATM, got `{line}`"
                )
            }
            TourError::Stop(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TourError {}

fn verb(kind: Kind) -> &'static str {
    match kind {
        Kind::Deposit => "deposits",
        Kind::Withdraw => "withdraws",
    }
}

fn how_it_ended(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// Run the demo with `atm_program` as the ATM, telling `out` what
/// happens, one line at a time. Resolves to `true` when every reply was
/// the expected one and the ATM exited 0 when told to stop.
pub async fn run(
    h: &Handle,
    atm_program: impl AsRef<OsStr>,
    out: impl Fn(&str) + 'static,
) -> Result<bool, TourError> {
    let out: Rc<dyn Fn(&str)> = Rc::new(out);
    let bank =
        BankServer::start(h, "127.0.0.1:0", Bank::demo().service()).map_err(TourError::Bank)?;
    let bank_addr = bank.local_addr();
    out(&format!(
        "demo: bank listening on {bank_addr} (Jane Doe 100, John Doe 500, anybody else 0)"
    ));

    let args = [
        "--bank".to_string(),
        bank_addr.to_string(),
        "--listen".to_string(),
        "127.0.0.1:0".to_string(),
    ];
    // The ATM's log lines go straight to our stderr.
    let started = atm(atm_program, args)
        .stderr(Stdio::Inherit)
        .ready_within(START_WITHIN)
        .stop_grace(STOP_GRACE)
        .start(h)
        .await;
    let atm = match started {
        Ok(atm) => atm,
        Err(e) => {
            bank.close();
            return Err(TourError::Atm(e));
        }
    };
    let line = atm.ready_line().unwrap_or_default();
    let Some(atm_addr) = listening_addr(line) else {
        bank.close();
        return Err(TourError::NoAddress(line.to_string()));
    };
    out(&format!(
        "demo: ATM started (pid {}), listening on {atm_addr}",
        atm.pid(),
    ));

    // All three at once, as in the talk; replies are shown in order.
    let customer = Customer::new(h, atm_addr);
    let calls: Vec<_> = CASES
        .iter()
        .map(|case| h.spawn(customer.request(case.kind, case.customer, case.amount)))
        .collect();
    let mut all_ok = true;
    for (case, call) in CASES.iter().zip(calls) {
        let what = format!("{} {} {}", case.customer, verb(case.kind), case.amount);
        let line = match call.await {
            Ok(Ok(reply)) if reply == case.expected => {
                format!("{what}: {} (as expected)", describe(&reply))
            }
            Ok(Ok(reply)) => {
                all_ok = false;
                format!(
                    "{what}: {}, but expected {}",
                    describe(&reply),
                    describe(&case.expected)
                )
            }
            Ok(Err(e)) => {
                all_ok = false;
                format!("{what}: no reply ({e})")
            }
            Err(e) => {
                all_ok = false;
                format!("{what}: the customer task failed ({e})")
            }
        };
        out(&line);
    }

    let status = atm.stop().await.map_err(TourError::Stop)?;
    bank.close();
    out(&format!(
        "demo: ATM stopped with SIGTERM: {}",
        how_it_ended(status)
    ));
    let ok = all_ok && status.success();
    if ok {
        out(&format!("demo: all {} replies as expected", CASES.len()));
    } else if !status.success() {
        out("demo: FAILED: the ATM did not exit 0 on SIGTERM");
    } else {
        out("demo: FAILED: some replies were not the expected ones");
    }
    Ok(ok)
}
