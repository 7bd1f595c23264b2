//! The ATM's per-customer session logic as a plain state machine: events
//! in, actions out, no sockets. The network shell (the `atm` module, with the framing layer) feeds
//! it and carries out what it returns.
//!
//! ```text
//!   AwaitRequest --Request--> AwaitBalance --Balance--> Done (reply, close)
//!        |                        |
//!        +--EOF / malformed / lost--> Done (drop, one log line)
//!                                 +--bank failed / customer lost--> Done (drop, one log line)
//! ```
//!
//! A customer that half-closes after sending its request still gets its
//! reply; frames after the first request are ignored, as in the original.
//! Every way a session ends without a reply produces exactly one
//! [`Action::Drop`], so the ATM logs one line per dropped customer.

use std::fmt;

/// What a customer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Add `amount` to the balance; always succeeds.
    Deposit,
    /// Take `amount` out; succeeds when `amount <= balance`.
    Withdraw,
}

/// The ATM's answer: the demo's `Reply(success, balance)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Whether the transaction went through.
    pub success: bool,
    /// The balance after it (unchanged on failure).
    pub balance: f32,
}

/// The demo's rule, exactly as the original `atm.py`:
/// a deposit always succeeds with `balance + amount`; a withdrawal
/// succeeds when `amount <= balance`, with `balance - amount`, and
/// otherwise fails with the balance unchanged.
///
/// ```
/// use protoloop::demo::session::{decide, Kind};
/// assert_eq!(decide(Kind::Withdraw, 100.0, 100.0).balance, 0.0);
/// assert!(!decide(Kind::Withdraw, 100.0, 0.0).success);
/// assert_eq!(decide(Kind::Deposit, 50.0, 500.0).balance, 550.0);
/// ```
pub fn decide(kind: Kind, amount: f32, balance: f32) -> Decision {
    match kind {
        Kind::Deposit => Decision {
            success: true,
            balance: balance + amount,
        },
        Kind::Withdraw if amount <= balance => Decision {
            success: true,
            balance: balance - amount,
        },
        Kind::Withdraw => Decision {
            success: false,
            balance,
        },
    }
}

/// What happened on a customer connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A whole request arrived.
    Request {
        /// Whose account.
        customer_id: String,
        /// Deposit or withdrawal.
        kind: Kind,
        /// How much.
        amount: f32,
    },
    /// The customer's bytes were not a valid request (or its length was
    /// over the limit); the text says what was wrong.
    Malformed(String),
    /// The customer closed its sending side.
    Eof,
    /// The bank answered with this balance.
    Balance(f32),
    /// The bank connection was lost (or the bank call failed); why.
    BankFailed(String),
    /// The customer's connection is gone (reset, or closed by us while
    /// shutting down); why. Nothing can be sent any more.
    Lost(String),
}

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing to do.
    None,
    /// Ask the bank for this customer's balance.
    AskBank(String),
    /// Write this reply, then close the connection.
    ReplyAndClose(Decision),
    /// Close the connection without a reply, logging this one line.
    Drop(String),
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    AwaitRequest,
    AwaitBalance { kind: Kind, amount: f32 },
    Done,
}

/// One customer connection's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    state: State,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            state: State::AwaitRequest,
        }
    }
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::AwaitRequest => f.write_str("waiting for a request"),
            State::AwaitBalance { .. } => f.write_str("waiting for the bank"),
            State::Done => f.write_str("done"),
        }
    }
}

impl Session {
    /// A session waiting for its request.
    pub fn new() -> Session {
        Session::default()
    }

    /// `true` once the session has replied or been dropped.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// `true` while the request is waiting for the bank's answer (a
    /// shutting-down ATM lets these finish).
    pub fn awaits_bank(&self) -> bool {
        matches!(self.state, State::AwaitBalance { .. })
    }

    /// Feed one event; get the action to carry out.
    ///
    /// ```
    /// use protoloop::demo::session::{Action, Decision, Event, Kind, Session};
    /// let mut s = Session::new();
    /// let ask = s.handle(Event::Request { customer_id: "Jane Doe".into(), kind: Kind::Withdraw, amount: 100.0 });
    /// assert_eq!(ask, Action::AskBank("Jane Doe".into()));
    /// let reply = s.handle(Event::Balance(100.0));
    /// assert_eq!(reply, Action::ReplyAndClose(Decision { success: true, balance: 0.0 }));
    /// ```
    pub fn handle(&mut self, event: Event) -> Action {
        let state = std::mem::replace(&mut self.state, State::Done);
        let (next, action) = match (state, event) {
            (
                State::AwaitRequest,
                Event::Request {
                    customer_id,
                    kind,
                    amount,
                },
            ) => (
                State::AwaitBalance { kind, amount },
                Action::AskBank(customer_id),
            ),
            (State::AwaitRequest, Event::Eof) => (
                State::Done,
                Action::Drop("closed the connection without a request".into()),
            ),
            (State::AwaitRequest, Event::Malformed(why)) => (
                State::Done,
                Action::Drop(format!("malformed request: {why}")),
            ),
            (State::AwaitBalance { kind, amount }, Event::Balance(balance)) => (
                State::Done,
                Action::ReplyAndClose(decide(kind, amount, balance)),
            ),
            (State::AwaitBalance { .. }, Event::BankFailed(why)) => (
                State::Done,
                Action::Drop(format!("bank unavailable: {why}")),
            ),
            (State::AwaitRequest, Event::Lost(why)) => (
                State::Done,
                Action::Drop(format!("connection lost before a request: {why}")),
            ),
            (State::AwaitBalance { .. }, Event::Lost(why)) => (
                State::Done,
                Action::Drop(format!(
                    "customer went away while waiting for the bank: {why}"
                )),
            ),
            // A half-close after the request still gets the reply; extra
            // frames or bad bytes after the request are ignored.
            (
                s @ State::AwaitBalance { .. },
                Event::Eof | Event::Request { .. } | Event::Malformed(_),
            ) => (s, Action::None),
            (State::AwaitRequest, Event::Balance(_) | Event::BankFailed(_)) => {
                (State::AwaitRequest, Action::None)
            }
            (State::Done, _) => (State::Done, Action::None),
        };
        self.state = next;
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(kind: Kind, amount: f32) -> Event {
        Event::Request {
            customer_id: "Jane Doe".into(),
            kind,
            amount,
        }
    }

    #[test]
    fn the_demo_cases() {
        // Jane (100) withdraws 100, John (500) withdraws 100, Anonymous (0) withdraws 100.
        assert_eq!(
            decide(Kind::Withdraw, 100.0, 100.0),
            Decision {
                success: true,
                balance: 0.0
            }
        );
        assert_eq!(
            decide(Kind::Withdraw, 100.0, 500.0),
            Decision {
                success: true,
                balance: 400.0
            }
        );
        assert_eq!(
            decide(Kind::Withdraw, 100.0, 0.0),
            Decision {
                success: false,
                balance: 0.0
            }
        );
        assert_eq!(
            decide(Kind::Deposit, 0.5, 0.0),
            Decision {
                success: true,
                balance: 0.5
            }
        );
        assert_eq!(
            decide(Kind::Withdraw, 100.5, 100.0),
            Decision {
                success: false,
                balance: 100.0
            }
        );
    }

    #[test]
    fn full_session() {
        let mut s = Session::new();
        assert!(!s.awaits_bank());
        assert_eq!(
            s.handle(req(Kind::Deposit, 5.0)),
            Action::AskBank("Jane Doe".into())
        );
        assert!(!s.is_done());
        assert!(s.awaits_bank());
        assert_eq!(
            s.handle(Event::Eof),
            Action::None,
            "half-close still gets the reply"
        );
        assert_eq!(
            s.handle(req(Kind::Deposit, 7.0)),
            Action::None,
            "extra requests ignored"
        );
        assert_eq!(
            s.handle(Event::Balance(10.0)),
            Action::ReplyAndClose(Decision {
                success: true,
                balance: 15.0
            })
        );
        assert!(s.is_done());
        assert_eq!(s.handle(Event::Balance(1.0)), Action::None);
    }

    #[test]
    fn drops_are_logged_once() {
        let mut s = Session::new();
        assert!(matches!(s.handle(Event::Eof), Action::Drop(_)));
        assert_eq!(s.handle(Event::Eof), Action::None);

        let mut s = Session::new();
        assert!(
            matches!(s.handle(Event::Malformed("bad".into())), Action::Drop(m) if m.contains("bad"))
        );

        let mut s = Session::new();
        s.handle(req(Kind::Withdraw, 1.0));
        assert!(
            matches!(s.handle(Event::BankFailed("reset".into())), Action::Drop(m) if m.contains("reset"))
        );
        assert!(s.is_done());
    }

    #[test]
    fn a_lost_connection_is_one_drop_whatever_the_state() {
        let mut s = Session::new();
        assert!(
            matches!(s.handle(Event::Lost("reset".into())), Action::Drop(m) if m.contains("before a request"))
        );
        assert!(s.is_done());

        let mut s = Session::new();
        s.handle(req(Kind::Withdraw, 1.0));
        assert!(
            matches!(s.handle(Event::Lost("reset".into())), Action::Drop(m) if m.contains("waiting for the bank"))
        );
        assert_eq!(
            s.handle(Event::Balance(5.0)),
            Action::None,
            "no reply to a lost customer"
        );

        // Dropped for bad input, then the connection goes: still one line.
        let mut s = Session::new();
        assert!(matches!(
            s.handle(Event::Malformed("x".into())),
            Action::Drop(_)
        ));
        assert_eq!(s.handle(Event::Lost("closed".into())), Action::None);

        // Replied, then the connection goes: nothing to log.
        let mut s = Session::new();
        s.handle(req(Kind::Deposit, 1.0));
        s.handle(Event::Balance(1.0));
        assert_eq!(s.handle(Event::Lost("closed".into())), Action::None);
    }

    #[test]
    fn stray_bank_events_before_a_request_are_ignored() {
        let mut s = Session::new();
        assert_eq!(s.handle(Event::Balance(3.0)), Action::None);
        assert_eq!(
            s.handle(req(Kind::Withdraw, 1.0)),
            Action::AskBank("Jane Doe".into())
        );
    }
}
