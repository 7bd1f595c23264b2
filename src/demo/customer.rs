//! The customer: one connection to the ATM per request, one
//! `Request` out, one `Reply` back. [`Customer::send`] returns a future of
//! the reply, as the talk's test client does.

use std::future::Future;
use std::time::Duration;

use super::session::Kind;
use super::wire::request;
use crate::proto::customer::{Reply, Request};
use crate::rpc::{RpcClient, RpcError, RpcOptions};
use crate::{Address, Handle};

/// A customer of the ATM at one address.
///
/// ```
/// use protoloop::demo::atm::{Atm, AtmOptions};
/// use protoloop::demo::bank::{Bank, BankServer};
/// use protoloop::demo::customer::Customer;
/// use protoloop::EventLoop;
///
/// let lp = EventLoop::new().unwrap();
/// let h = lp.handle();
/// let bank = BankServer::start(&h, "127.0.0.1:0", Bank::demo().service()).unwrap();
/// let opts = AtmOptions::new().bank(bank.local_addr()).listen("127.0.0.1:0");
/// let (jane, anonymous) = lp.run_until_complete(async move {
///     let atm = Atm::start(&h, opts).await.unwrap();
///     let customer = Customer::new(&h, atm.local_addr());
///     // Both sent at once; each future resolves to its own reply.
///     let jane = h.spawn(customer.withdraw("Jane Doe", 100.0));
///     let anonymous = h.spawn(customer.withdraw("Anonymous", 100.0));
///     let replies = (jane.await.unwrap().unwrap(), anonymous.await.unwrap().unwrap());
///     atm.shutdown(std::time::Duration::from_secs(1)).await;
///     replies
/// }).unwrap();
/// assert_eq!((jane.success, jane.balance), (true, 0.0));
/// assert_eq!((anonymous.success, anonymous.balance), (false, 0.0));
/// ```
#[derive(Debug, Clone)]
pub struct Customer {
    handle: Handle,
    atm: Address,
    timeout: Duration,
}

impl Customer {
    /// A customer of the ATM at `atm`; each exchange gives up after 10 s.
    pub fn new(handle: &Handle, atm: impl Into<Address>) -> Customer {
        Customer {
            handle: handle.clone(),
            atm: atm.into(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Give up on an exchange (connecting included) after `timeout`
    /// (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Customer {
        self.timeout = timeout;
        self
    }

    /// Connect, send `request`, and resolve to the ATM's reply. Fails
    /// with [`RpcError::Connect`] if the ATM cannot be reached, with
    /// [`RpcError::ConnectionLost`] if it closes without replying, and
    /// with [`RpcError::Timeout`] if the whole exchange takes longer than
    /// the customer's timeout.
    pub fn send(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Reply, RpcError>> + 'static {
        let (h, atm, timeout) = (self.handle.clone(), self.atm.clone(), self.timeout);
        async move {
            let exchange = async {
                let client =
                    RpcClient::connect(&h, atm, RpcOptions::<Request, Reply>::new()).await?;
                let reply = client.call(request).await;
                client.close();
                reply
            };
            match h.timeout(timeout, exchange).await {
                Ok(result) => result,
                Err(_) => Err(RpcError::Timeout { after: timeout }),
            }
        }
    }

    /// Send a request of `kind`.
    pub fn request(
        &self,
        kind: Kind,
        customer_id: &str,
        amount: f32,
    ) -> impl Future<Output = Result<Reply, RpcError>> + 'static {
        self.send(request(kind, customer_id, amount))
    }

    /// Withdraw `amount` from `customer_id`'s account.
    pub fn withdraw(
        &self,
        customer_id: &str,
        amount: f32,
    ) -> impl Future<Output = Result<Reply, RpcError>> + 'static {
        self.request(Kind::Withdraw, customer_id, amount)
    }

    /// Deposit `amount` into `customer_id`'s account.
    pub fn deposit(
        &self,
        customer_id: &str,
        amount: f32,
    ) -> impl Future<Output = Result<Reply, RpcError>> + 'static {
        self.request(Kind::Deposit, customer_id, amount)
    }
}
