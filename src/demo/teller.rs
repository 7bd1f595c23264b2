//! One customer connection of the ATM: the thin shell that feeds a
//! [`Session`] what happens on the connection and on the bank link, and
//! carries out the [`Action`]s it returns.
//!
//! The shell owns no decisions: which events end a session, when a reply
//! is due and what gets logged are the session's. What it promises:
//!
//! - One bank call per session, as a task; if the customer goes first, the
//!   task is aborted, which cancels the call (its reply, still due on the
//!   shared bank connection, is thrown away when it comes).
//! - One log line per customer dropped without a reply, naming the peer.
//! - No borrow is held while a log line is written or a task spawned.

use std::cell::RefCell;
use std::rc::Rc;

use super::session::{Action, Event, Session};
use super::wire::{WireRequest, reply};
use crate::Handle;
use crate::codec::{CodecError, MessageHandler, MessageSender};
use crate::proto::bank::{GetBalance, Response};
use crate::proto::customer::Reply;
use crate::protocol::CloseReason;
use crate::rpc::RpcClient;
use crate::task::JoinHandle;

/// Where the ATM's log lines go.
pub(crate) type Log = Rc<dyn Fn(&str)>;

/// What every teller of one ATM shares.
pub(crate) struct Branch {
    pub(crate) handle: Handle,
    pub(crate) bank: RpcClient<GetBalance, Response>,
    pub(crate) log: Log,
    pub(crate) stats: RefCell<super::atm::AtmStats>,
}

/// The [`MessageHandler`] of one customer connection.
pub(crate) struct Teller {
    desk: Rc<Desk>,
}

struct Desk {
    branch: Rc<Branch>,
    session: RefCell<Session>,
    sender: RefCell<Option<MessageSender<Reply>>>,
    peer: RefCell<String>,
    bank_call: RefCell<Option<JoinHandle<()>>>,
}

impl Teller {
    pub(crate) fn new(branch: Rc<Branch>) -> Teller {
        Teller {
            desk: Rc::new(Desk {
                branch,
                session: RefCell::new(Session::new()),
                sender: RefCell::new(None),
                peer: RefCell::new("(unknown peer)".into()),
                bank_call: RefCell::new(None),
            }),
        }
    }
}

impl Desk {
    fn sender(&self) -> Option<MessageSender<Reply>> {
        self.sender.borrow().clone()
    }

    fn log(&self, what: &str) {
        let line = format!("customer {}: {what}", self.peer.borrow());
        (self.branch.log)(&line);
    }

    /// Feed `event` to the session and carry out what it says.
    fn feed(self: &Rc<Self>, event: Event) {
        let action = self.session.borrow_mut().handle(event);
        match action {
            Action::None => {}
            Action::AskBank(customer_id) => self.ask_bank(customer_id),
            Action::ReplyAndClose(decision) => {
                let Some(sender) = self.sender() else { return };
                match sender.send(&reply(decision)) {
                    Ok(()) => self.branch.stats.borrow_mut().served += 1,
                    Err(e) => {
                        self.branch.stats.borrow_mut().dropped += 1;
                        self.log(&format!("could not send the reply: {e}"));
                    }
                }
                sender.close();
            }
            Action::Drop(why) => {
                self.branch.stats.borrow_mut().dropped += 1;
                self.log(&why);
                if let Some(sender) = self.sender() {
                    sender.close();
                }
                self.cancel_bank_call();
            }
        }
    }

    fn ask_bank(self: &Rc<Self>, customer_id: String) {
        // The call is queued now, so requests reach the bank in the order
        // customers' requests arrived.
        let call = self.branch.bank.call(GetBalance { customer_id });
        let me = self.clone();
        let task = self.branch.handle.spawn(async move {
            let event = match call.await {
                Ok(response) => Event::Balance(response.balance),
                Err(e) => Event::BankFailed(e.to_string()),
            };
            me.feed(event);
        });
        *self.bank_call.borrow_mut() = Some(task);
    }

    fn cancel_bank_call(&self) {
        let task = self.bank_call.borrow_mut().take();
        // Dropping the call's future runs no user code of ours, but keep
        // the borrow short anyway.
        if let Some(task) = task {
            task.abort();
        }
    }
}

/// A malformed-input reason in the customer's words: the codec's error,
/// with the Rust type of the request replaced by its protobuf name.
fn malformed(reason: &CloseReason) -> Option<String> {
    let CloseReason::Protocol(e) = reason else {
        return None;
    };
    Some(match e.downcast_ref::<CodecError>() {
        Some(CodecError::Decode { length, source, .. }) => format!(
            "expected a customer.Request, got {length} bytes that do not decode as one ({source})"
        ),
        _ => e.to_string(),
    })
}

impl MessageHandler for Teller {
    type In = WireRequest;
    type Out = Reply;

    fn connection_made(&mut self, sender: MessageSender<Reply>) {
        if let Some(peer) = sender.transport().peer_addr() {
            *self.desk.peer.borrow_mut() = peer.to_string();
        }
        *self.desk.sender.borrow_mut() = Some(sender);
    }

    fn message_received(&mut self, request: WireRequest) {
        self.desk.feed(request.into_event());
    }

    fn eof_received(&mut self) -> bool {
        self.desk.feed(Event::Eof);
        // Half-closed after the request: stay open to send the reply.
        self.desk.session.borrow().awaits_bank()
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        if let Some(why) = malformed(&reason) {
            self.desk.feed(Event::Malformed(why));
        }
        self.desk.feed(Event::Lost(reason.to_string()));
        self.desk.cancel_bank_call();
        // Break the desk <-> sender cycle.
        self.desk.sender.borrow_mut().take();
    }

    fn drain_requested(&mut self) -> bool {
        // Shutting down: a request waiting for the bank may finish (the
        // server aborts it after its grace period); an idle customer is
        // dropped now.
        if self.desk.session.borrow().awaits_bank() {
            return true;
        }
        self.desk
            .feed(Event::Lost("the ATM is shutting down".into()));
        false
    }
}
