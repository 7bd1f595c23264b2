//! The bank: answers each `GetBalance(customer_id)` with
//! `Response(customer_id, balance)`, in request order, from a fixed table
//! of balances. As in the original, the bank only reports balances: the
//! demo's wire has no message to change one, so the ATM's replies say what
//! the balance *would* be.
//!
//! [`Bank`] is the service; [`BankServer`] runs it on a listening socket
//! and counts what it sees (the integration tests check that many
//! customers share one ATM-to-bank connection).

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::proto::bank::{GetBalance, Response};
use crate::rpc::Service;
use crate::{Handle, Server, ServerOptions};

/// The demo's balances: Jane Doe has 100, John Doe 500; anybody else 0.
pub const DEMO_BALANCES: [(&str, f32); 2] = [("Jane Doe", 100.0), ("John Doe", 500.0)];

/// Told of each request answered: the customer id and the balance.
type Observer = Rc<dyn Fn(&str, f32)>;

/// A table of balances; anybody not in it has 0.
///
/// ```
/// use protoloop::demo::bank::Bank;
/// let bank = Bank::demo();
/// assert_eq!(bank.balance("John Doe"), 500.0);
/// assert_eq!(bank.balance("Anonymous"), 0.0);
/// ```
#[derive(Clone)]
pub struct Bank {
    balances: Rc<HashMap<String, f32>>,
    requests: Rc<Cell<u64>>,
    observer: Option<Observer>,
}

impl fmt::Debug for Bank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bank")
            .field("balances", &self.balances)
            .field("requests", &self.requests.get())
            .finish()
    }
}

impl Bank {
    /// A bank with these balances.
    pub fn new<S: Into<String>>(balances: impl IntoIterator<Item = (S, f32)>) -> Bank {
        Bank {
            balances: Rc::new(balances.into_iter().map(|(k, v)| (k.into(), v)).collect()),
            requests: Rc::new(Cell::new(0)),
            observer: None,
        }
    }

    /// The demo's bank ([`DEMO_BALANCES`]).
    pub fn demo() -> Bank {
        Bank::new(DEMO_BALANCES)
    }

    /// Call `observer(customer_id, balance)` for each request answered
    /// (the `bank` program prints them).
    pub fn on_request(mut self, observer: impl Fn(&str, f32) + 'static) -> Bank {
        self.observer = Some(Rc::new(observer));
        self
    }

    /// `customer_id`'s balance.
    pub fn balance(&self, customer_id: &str) -> f32 {
        self.balances.get(customer_id).copied().unwrap_or(0.0)
    }

    /// Requests answered so far, over every connection.
    pub fn requests(&self) -> u64 {
        self.requests.get()
    }

    /// Answer one request.
    pub fn answer(&self, request: GetBalance) -> Response {
        let balance = self.balance(&request.customer_id);
        self.requests.set(self.requests.get() + 1);
        if let Some(observe) = &self.observer {
            observe(&request.customer_id, balance);
        }
        Response {
            customer_id: request.customer_id,
            balance,
        }
    }

    /// The bank as a request/reply service (replies in request order).
    pub fn service(&self) -> Service<GetBalance, Response> {
        let bank = self.clone();
        Service::new(move |request| bank.answer(request))
    }
}

/// Parse a `--balance` value, `NAME=AMOUNT` (the name may hold `=`; the
/// last one splits).
///
/// ```
/// use protoloop::demo::bank::parse_balance;
/// assert_eq!(parse_balance("Jane Doe=12.5"), Ok(("Jane Doe".to_string(), 12.5)));
/// assert!(parse_balance("Jane Doe").is_err());
/// assert!(parse_balance("Jane Doe=lots").unwrap_err().contains("lots"));
/// ```
pub fn parse_balance(arg: &str) -> Result<(String, f32), String> {
    let Some((name, amount)) = arg.rsplit_once('=') else {
        return Err(format!("expected NAME=AMOUNT, got `{arg}`"));
    };
    match amount.trim().parse::<f32>() {
        Ok(a) if a.is_finite() => Ok((name.to_string(), a)),
        _ => Err(format!(
            "expected NAME=AMOUNT with a number for AMOUNT, got `{amount}` in `{arg}`"
        )),
    }
}

/// A listening bank: a [`Service`] on a TCP [`Server`], counting the
/// connections it accepts.
///
/// ```
/// use protoloop::demo::bank::{Bank, BankServer};
/// use protoloop::proto::bank::{GetBalance, Response};
/// use protoloop::rpc::{RpcClient, RpcOptions};
/// use protoloop::EventLoop;
///
/// let lp = EventLoop::new().unwrap();
/// let h = lp.handle();
/// let bank = BankServer::start(&h, "127.0.0.1:0", Bank::demo().service()).unwrap();
/// let addr = bank.local_addr();
/// let r = lp.run_until_complete(async move {
///     let client = RpcClient::<GetBalance, Response>::connect(&h, addr, RpcOptions::new()).await?;
///     let r = client.call(GetBalance { customer_id: "Jane Doe".into() }).await;
///     client.close();
///     r
/// }).unwrap().unwrap();
/// assert_eq!(r.balance, 100.0);
/// assert_eq!(bank.connections(), 1);
/// bank.close();
/// ```
#[derive(Debug, Clone)]
pub struct BankServer {
    server: Server,
    connections: Rc<Cell<usize>>,
}

impl BankServer {
    /// Listen on `addr` and answer with `service` on every connection.
    pub fn start(
        handle: &Handle,
        addr: &str,
        service: Service<GetBalance, Response>,
    ) -> crate::Result<BankServer> {
        let connections = Rc::new(Cell::new(0));
        let counter = connections.clone();
        let server = handle.create_server(
            move || {
                counter.set(counter.get() + 1);
                service.protocol()
            },
            addr,
            ServerOptions::default(),
        )?;
        Ok(BankServer {
            server,
            connections,
        })
    }

    /// Where it listens (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addrs()[0]
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.get()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.server.connection_count()
    }

    /// Reset every open connection (the tests' "bank connection lost").
    pub fn abort_clients(&self) {
        self.server.abort_clients()
    }

    /// Stop listening; open connections are left alone.
    pub fn close(&self) {
        self.server.close()
    }

    /// Stop listening and let open connections finish their replies for
    /// up to `grace`.
    pub fn shutdown(&self, grace: Duration) -> impl Future<Output = ()> + 'static {
        self.server.shutdown(grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_from_the_table_and_counts() {
        let seen = Rc::new(Cell::new(0.0));
        let s = seen.clone();
        let bank = Bank::new([("A", 7.0)]).on_request(move |_, b| s.set(b));
        let r = bank.answer(GetBalance {
            customer_id: "A".into(),
        });
        assert_eq!((r.customer_id.as_str(), r.balance), ("A", 7.0));
        assert_eq!(seen.get(), 7.0);
        let r = bank.answer(GetBalance {
            customer_id: "B".into(),
        });
        assert_eq!(r.balance, 0.0);
        assert_eq!(bank.requests(), 2);
    }

    #[test]
    fn balance_arguments() {
        assert_eq!(parse_balance("a=b=3"), Ok(("a=b".into(), 3.0)));
        assert_eq!(parse_balance("=0"), Ok(("".into(), 0.0)));
        assert!(parse_balance("x=inf").is_err());
        assert!(parse_balance("x=").is_err());
    }
}
