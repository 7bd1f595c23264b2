//! The ATM server: one persistent request/reply link to the bank, and a
//! listener whose every customer connection is a
//! [`Session`](super::session::Session) driven by a thin shell.
//!
//! ```text
//!  customer --Request--> ATM --GetBalance--> bank
//!  customer <--Reply---- ATM <--Response---- bank
//!      (one connection each)  (one connection for all)
//! ```
//!
//! # Promises
//!
//! - **Start**: [`Atm::start`] connects to the bank first, retrying until
//!   [`AtmOptions::bank_wait`] has passed, and fails with
//!   [`AtmError::BankNeverAnswered`] if it never answers; only then does it
//!   listen.
//! - **Correlation**: the bank's replies are matched by the customer id
//!   they carry, oldest call first for each id
//!   ([`RpcOptions::by_key`](crate::rpc::RpcOptions::by_key)). The
//!   original kept one waiting future per id in a dict, so two concurrent
//!   requests for one customer broke it; here any number may be in flight.
//! - **Bad customers**: one who closes without a request, sends bytes that
//!   are not a `customer.Request` or a length over
//!   [`AtmOptions::max_request`] is dropped with one log line; nobody else
//!   notices.
//! - **Bank lost**: customers whose calls were on the wire are dropped
//!   with a log line; the link reconnects with [`AtmOptions::reconnect`]'s
//!   backoff, and customers that come meanwhile wait for it, up to
//!   [`AtmOptions::call_timeout`].
//! - **Shutdown**: [`Atm::shutdown`] stops listening, drops idle
//!   customers, lets those waiting for the bank finish within the grace
//!   period, then closes the bank link.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use super::teller::{Branch, Log, Teller};
use crate::codec::{FrameCodec, Framed};
use crate::proto::bank::{GetBalance, Response};
use crate::protocol::{CloseReason, Protocol};
use crate::rpc::{Backoff, RpcClient, RpcError, RpcOptions, RpcProtocol};
use crate::transport::Transport;
use crate::{Address, ConnectOptions, Handle, Server, ServerOptions};

/// The demo's bank address, the ATM's default `--bank`.
pub const DEFAULT_BANK: &str = "127.0.0.1:44444";
/// The demo's ATM address, the ATM's default `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:33333";
/// The longest request frame the ATM takes by default. A real request is
/// a name and 10 bytes; the 2-byte length prefix allows 65,535.
pub const DEFAULT_MAX_REQUEST: usize = 4096;

/// How an [`Atm`] runs. Defaults: the demo's addresses, 5 s to reach the
/// bank at start, 5 s for each bank call, reconnecting for ever (100 ms,
/// doubling, at most 2 s apart), requests of at most
/// [`DEFAULT_MAX_REQUEST`] bytes, log lines on stderr prefixed `atm: `.
///
/// ```
/// use std::time::Duration;
/// use protoloop::demo::atm::AtmOptions;
/// let opts = AtmOptions::new()
///     .bank("127.0.0.1:4444")
///     .listen("127.0.0.1:0")
///     .bank_wait(Duration::from_secs(1))
///     .log(|line| println!("{line}"));
/// # let _ = opts;
/// ```
#[derive(Clone)]
pub struct AtmOptions {
    bank: Address,
    listen: String,
    bank_wait: Duration,
    call_timeout: Duration,
    reconnect: Backoff,
    max_request: usize,
    log: Log,
}

impl fmt::Debug for AtmOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtmOptions")
            .field("bank", &self.bank)
            .field("listen", &self.listen)
            .field("bank_wait", &self.bank_wait)
            .field("call_timeout", &self.call_timeout)
            .field("reconnect", &self.reconnect)
            .field("max_request", &self.max_request)
            .finish()
    }
}

impl Default for AtmOptions {
    fn default() -> Self {
        AtmOptions {
            bank: DEFAULT_BANK.into(),
            listen: DEFAULT_LISTEN.into(),
            bank_wait: Duration::from_secs(5),
            call_timeout: Duration::from_secs(5),
            reconnect: Backoff::default().max(Duration::from_secs(2)),
            max_request: DEFAULT_MAX_REQUEST,
            log: Rc::new(|line| eprintln!("atm: {line}")),
        }
    }
}

impl AtmOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// The bank's address (default [`DEFAULT_BANK`]).
    pub fn bank(mut self, addr: impl Into<Address>) -> Self {
        self.bank = addr.into();
        self
    }
    /// Where to listen for customers (default [`DEFAULT_LISTEN`]; port 0
    /// picks a free one, see [`Atm::local_addr`]).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }
    /// How long to keep trying to reach the bank at start (default 5 s).
    pub fn bank_wait(mut self, wait: Duration) -> Self {
        self.bank_wait = wait;
        self
    }
    /// How long a customer's bank call may take, waiting for a
    /// reconnection included (default 5 s).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }
    /// How to reconnect to the bank when the link is lost.
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.reconnect = backoff;
        self
    }
    /// The longest request frame taken (default [`DEFAULT_MAX_REQUEST`]).
    pub fn max_request(mut self, bytes: usize) -> Self {
        self.max_request = bytes;
        self
    }
    /// Where log lines go (default: stderr, prefixed `atm: `). One line
    /// per event, no trailing newline.
    pub fn log(mut self, log: impl Fn(&str) + 'static) -> Self {
        self.log = Rc::new(log);
        self
    }
}

/// Why an ATM could not start.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AtmError {
    /// Every attempt to connect to the bank failed for the whole wait.
    BankNeverAnswered {
        /// The bank's address.
        bank: String,
        /// How long the ATM tried.
        waited: Duration,
        /// Why the last attempt failed.
        last: String,
    },
    /// The customer listener could not be opened.
    Listen {
        /// The address asked for.
        addr: String,
        /// Why.
        source: crate::Error,
    },
}

impl fmt::Display for AtmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AtmError::BankNeverAnswered { bank, waited, last } => write!(
                f,
                "the bank at {bank} never answered: tried for {:.1} s, last error: {last}",
                waited.as_secs_f64()
            ),
            AtmError::Listen { addr, source } => {
                write!(f, "could not listen for customers on {addr}: {source}")
            }
        }
    }
}

impl std::error::Error for AtmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AtmError::Listen { source, .. } => Some(source),
            AtmError::BankNeverAnswered { .. } => None,
        }
    }
}

/// Counts of what an ATM did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AtmStats {
    /// Customers who got a reply.
    pub served: u64,
    /// Customers dropped without one (each with a log line).
    pub dropped: u64,
}

/// A running ATM; see the [module docs](self).
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
/// let reply = lp.run_until_complete(async move {
///     let atm = Atm::start(&h, opts).await.unwrap();
///     let customer = Customer::new(&h, atm.local_addr());
///     let reply = customer.withdraw("John Doe", 100.0).await.unwrap();
///     atm.shutdown(std::time::Duration::from_secs(1)).await;
///     reply
/// }).unwrap();
/// assert!(reply.success);
/// assert_eq!(reply.balance, 400.0);
/// ```
pub struct Atm {
    server: Server,
    branch: Rc<Branch>,
    link: Rc<LinkState>,
}

impl fmt::Debug for Atm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Atm")
            .field("listening", &self.server.local_addrs())
            .field("bank", &self.branch.bank)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Atm {
    /// Connect to the bank (retrying for [`AtmOptions::bank_wait`]), then
    /// listen for customers.
    pub fn start(
        handle: &Handle,
        opts: AtmOptions,
    ) -> impl Future<Output = Result<Atm, AtmError>> + 'static {
        let h = handle.clone();
        async move {
            let link = Rc::new(LinkState {
                bank: opts.bank.to_string(),
                log: opts.log.clone(),
                connections: RefCell::new(0),
                closing: RefCell::new(false),
            });
            let bank = connect_bank(&h, &opts, &link).await?;
            let branch = Rc::new(Branch {
                handle: h.clone(),
                bank,
                log: opts.log.clone(),
                stats: RefCell::new(AtmStats::default()),
            });
            let framing = FrameCodec::builder()
                .max_frame_length(opts.max_request)
                .build();
            let b = branch.clone();
            let server = h
                .create_server(
                    move || Framed::with_framing(Teller::new(b.clone()), framing.clone()),
                    opts.listen.as_str(),
                    ServerOptions::default(),
                )
                .map_err(|source| {
                    branch.bank.close();
                    AtmError::Listen {
                        addr: opts.listen.clone(),
                        source,
                    }
                })?;
            Ok(Atm {
                server,
                branch,
                link,
            })
        }
    }

    /// Where it listens for customers (the real port when 0 was asked
    /// for).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addrs()[0]
    }

    /// What it did so far.
    pub fn stats(&self) -> AtmStats {
        *self.branch.stats.borrow()
    }

    /// Connections made to the bank so far (1 until the link is lost).
    pub fn bank_connections(&self) -> u64 {
        *self.link.connections.borrow()
    }

    /// Customers connected now.
    pub fn customers(&self) -> usize {
        self.server.connection_count()
    }

    /// Stop listening, drop idle customers, give those waiting for the
    /// bank `grace` to get their reply (then abort them), and close the
    /// bank link. Resolves when all is closed.
    pub fn shutdown(&self, grace: Duration) -> impl Future<Output = ()> + 'static {
        let drained = self.server.shutdown(grace);
        let branch = self.branch.clone();
        let link = self.link.clone();
        async move {
            drained.await;
            *link.closing.borrow_mut() = true;
            branch.bank.close();
        }
    }
}

/// What the ATM knows about its bank link, for its log lines.
struct LinkState {
    bank: String,
    log: Log,
    connections: RefCell<u64>,
    /// Shutting down: losing the link is expected.
    closing: RefCell<bool>,
}

/// The bank client's protocol, watched: logs when the link is lost and
/// when it comes back.
struct WatchedLink {
    inner: RpcProtocol<GetBalance, Response>,
    state: Rc<LinkState>,
}

impl Protocol for WatchedLink {
    fn connection_made(&mut self, transport: Transport) {
        let n = {
            let mut c = self.state.connections.borrow_mut();
            *c += 1;
            *c
        };
        if n > 1 {
            (self.state.log)(&format!("reconnected to the bank at {}", self.state.bank));
        }
        self.inner.connection_made(transport)
    }
    fn data_received(&mut self, data: &[u8]) {
        self.inner.data_received(data)
    }
    fn eof_received(&mut self) -> bool {
        self.inner.eof_received()
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        if !*self.state.closing.borrow() {
            (self.state.log)(&format!(
                "lost the bank connection ({reason}); reconnecting"
            ));
        }
        self.inner.connection_lost(reason)
    }
    fn pause_writing(&mut self) {
        self.inner.pause_writing()
    }
    fn resume_writing(&mut self) {
        self.inner.resume_writing()
    }
    fn drain_requested(&mut self) -> bool {
        self.inner.drain_requested()
    }
    fn get_buffer(&mut self, size_hint: usize) -> Option<&mut [u8]> {
        self.inner.get_buffer(size_hint)
    }
    fn buffer_updated(&mut self, nbytes: usize) {
        self.inner.buffer_updated(nbytes)
    }
}

/// Each connection attempt may take this long before it counts as failed.
const CONNECT_ATTEMPT: Duration = Duration::from_secs(1);

/// Connect to the bank, retrying until `opts.bank_wait` has passed.
async fn connect_bank(
    h: &Handle,
    opts: &AtmOptions,
    link: &Rc<LinkState>,
) -> Result<RpcClient<GetBalance, Response>, AtmError> {
    let rpc = RpcOptions::<GetBalance, Response>::new()
        .by_key(|q| q.customer_id.clone(), |r| r.customer_id.clone())
        .call_timeout(opts.call_timeout)
        .reconnect(opts.reconnect);
    let start = h.time();
    let deadline = start + opts.bank_wait;
    let mut pause = Duration::from_millis(50);
    loop {
        // The last attempt gets a little time even at the deadline, so
        // that its error (say, "connection refused") is the one reported.
        let budget = deadline
            .saturating_duration_since(h.time())
            .clamp(Duration::from_millis(100), CONNECT_ATTEMPT);
        let attempt = RpcClient::connect_with(h, rpc.clone(), connector(h, &opts.bank, link));
        let failure = match h.timeout(budget, attempt).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(RpcError::Connect(e))) => e.to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {budget:?}"),
        };
        let left = deadline.saturating_duration_since(h.time());
        if left.is_zero() {
            return Err(AtmError::BankNeverAnswered {
                bank: opts.bank.to_string(),
                waited: h.time().saturating_duration_since(start),
                last: failure,
            });
        }
        h.sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

type Connecting = std::pin::Pin<Box<dyn Future<Output = crate::Result<Transport>>>>;

/// Runs the client's protocol, watched, on a new TCP connection to the
/// bank; called again for each reconnection.
fn connector(
    h: &Handle,
    bank: &Address,
    link: &Rc<LinkState>,
) -> impl Fn(RpcProtocol<GetBalance, Response>) -> Connecting + 'static {
    let (h, bank, link) = (h.clone(), bank.clone(), link.clone());
    move |inner| {
        let (h, bank) = (h.clone(), bank.clone());
        let state = link.clone();
        Box::pin(async move {
            let opts = ConnectOptions::default()
                .timeout(CONNECT_ATTEMPT)
                .nodelay(true);
            let protocol = WatchedLink { inner, state };
            let (t, _) = h.create_connection(move || protocol, bank, opts).await?;
            Ok(t)
        })
    }
}
