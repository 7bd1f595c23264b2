//! Request/reply on framed connections: [`RpcClient`], whose
//! [`call`](RpcClient::call) returns a future of the reply, and
//! [`Service`], which answers requests with a handler.
//!
//! # Correlation
//!
//! The demo's wire carries no request ids, so by default replies are
//! matched to calls in order (FIFO), and the server answers in order.
//! Replies can instead be matched by a key both carry
//! ([`RpcOptions::by_key`]: the bank's `Response` carries the
//! `customer_id`), or requests can travel in an
//! [`Envelope`](crate::proto::rpc::Envelope) with an id for servers that
//! answer out of order ([`RpcOptions::with_ids`] with
//! [`Service::with_ids`]). The matching itself is the sans-IO
//! [`correlator::Correlator`], tested without sockets or clocks.
//!
//! # The ATM demo's two links
//!
//! ```
//! use protoloop::proto::bank::{GetBalance, Response};
//! use protoloop::proto::customer::{Reply, Request};
//! use protoloop::rpc::{RpcClient, RpcOptions, Service};
//! use protoloop::{EventLoop, ServerOptions};
//!
//! let lp = EventLoop::new().unwrap();
//! let h = lp.handle();
//! // A bank that knows one balance.
//! let bank = Service::new(|q: GetBalance| Response { balance: 100.0, customer_id: q.customer_id });
//! let bank_server = h
//!     .create_server(move || bank.protocol(), "127.0.0.1:0", ServerOptions::default())
//!     .unwrap();
//! let bank_addr = bank_server.local_addrs()[0];
//!
//! let balance = lp
//!     .run_until_complete(async move {
//!         // The ATM's link to the bank, matched by customer id.
//!         let opts = RpcOptions::<GetBalance, Response>::new()
//!             .by_key(|q| q.customer_id.clone(), |r| r.customer_id.clone());
//!         let bank = RpcClient::connect(&h, bank_addr, opts).await.unwrap();
//!         // The ATM's service to customers: each Request asks the bank.
//!         let b = bank.clone();
//!         let atm = Service::new_async(move |req: Request| {
//!             let bank = b.clone();
//!             async move {
//!                 match bank.call(GetBalance { customer_id: req.customer_id }).await {
//!                     Ok(r) => Reply { success: true, balance: r.balance },
//!                     Err(_) => Reply { success: false, balance: 0.0 },
//!                 }
//!             }
//!         });
//!         # let _ = atm;
//!         let r = bank.call(GetBalance { customer_id: "Jane Doe".into() }).await.unwrap();
//!         bank.close();
//!         r.balance
//!     })
//!     .unwrap();
//! assert_eq!(balance, 100.0);
//! ```

mod call;
mod client;
pub mod correlator;
mod error;
mod options;
mod protocol;
mod server;
mod shared;

pub use call::Call;
pub use client::RpcClient;
pub use correlator::{CallId, Correlation};
pub use error::RpcError;
pub use options::{Backoff, DEFAULT_MAX_IN_FLIGHT, RpcOptions};
pub use protocol::RpcProtocol;
pub use server::{DEFAULT_MAX_PENDING, Service, ServiceProtocol};
