//! [`RpcClient`]: the request/reply client's public face. Its state and
//! the I/O shell around the [`Correlator`](super::correlator::Correlator)
//! live in `shared.rs`.

use std::fmt;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use super::RpcError;
use super::call::Call;
use super::options::RpcOptions;
use super::protocol::RpcProtocol;
use super::shared::{Connector, Shared};
use crate::event_loop::Handle;
use crate::transport::Transport;
use crate::transport::tcp::{Address, ConnectOptions};

/// A request/reply client over one connection: [`call`](Self::call)
/// sends a request and returns a future of its reply.
///
/// A cheap `Clone` (an `Rc` inside, `!Send`): share it between tasks. The
/// connection is closed when [`close`](Self::close) is called, or when the
/// last clone and the last pending [`Call`] are dropped.
///
/// # Calls
///
/// - A request is queued when `call` is called, not when its future is
///   first polled, so requests go out in the order of the `call`s:
///   pipelining is just making many calls before awaiting them.
/// - At most `max_in_flight` requests are on the wire unanswered; more
///   wait, as they do while the transport is paused for writing.
/// - Dropping a [`Call`] cancels it: if it was not sent it never is; if it
///   was, its reply is consumed and thrown away (and the loop's exception
///   handler told), so later replies still go to the right callers. It
///   stops counting as in flight at once.
/// - A call with a deadline fails with [`RpcError::Timeout`] when it
///   passes.
/// - When the connection is lost, every call sent and unanswered fails
///   with [`RpcError::ConnectionLost`] carrying the real [`CloseReason`](crate::CloseReason);
///   calls not yet sent fail too, unless the client reconnects, in which
///   case they go out on the new connection.
///
/// ```
/// use protoloop::proto::adder::{AddReply, AddRequest};
/// use protoloop::rpc::{RpcClient, RpcOptions, Service};
/// use protoloop::{EventLoop, ServerOptions};
///
/// let lp = EventLoop::new().unwrap();
/// let h = lp.handle();
/// let adder = Service::new(|r: AddRequest| AddReply { sum: i64::from(r.a) + i64::from(r.b) });
/// let server = h
///     .create_server(move || adder.protocol(), "127.0.0.1:0", ServerOptions::default())
///     .unwrap();
/// let addr = server.local_addrs()[0];
/// let sum = lp
///     .run_until_complete(async move {
///         let client = RpcClient::connect(&h, addr, RpcOptions::new()).await?;
///         let reply: AddReply = client.call(AddRequest { a: 3, b: 4 }).await?;
///         client.close();
///         Ok::<_, protoloop::rpc::RpcError>(reply.sum)
///     })
///     .unwrap()
///     .unwrap();
/// assert_eq!(sum, 7);
/// ```
pub struct RpcClient<Req, Resp>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    shared: Rc<Shared<Req, Resp>>,
}

impl<Req, Resp> Clone for RpcClient<Req, Resp>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    fn clone(&self) -> Self {
        RpcClient {
            shared: self.shared.clone(),
        }
    }
}

impl<Req, Resp> fmt::Debug for RpcClient<Req, Resp>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcClient")
            .field("correlation", &self.shared.opts.correlation)
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<Req, Resp> RpcClient<Req, Resp>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    /// Connect to `addr` over TCP. With [`RpcOptions::reconnect`], later
    /// connections go to the same address; the first must succeed.
    pub fn connect(
        handle: &Handle,
        addr: impl Into<Address>,
        options: RpcOptions<Req, Resp>,
    ) -> impl Future<Output = Result<Self, RpcError>> + 'static {
        let addr = addr.into();
        let h = handle.clone();
        Self::connect_with(handle, options, move |protocol| {
            let h = h.clone();
            let addr = addr.clone();
            async move {
                h.create_connection(move || protocol, addr, ConnectOptions::default())
                    .await
                    .map(|(t, _)| t)
            }
        })
    }

    /// Connect with `connector`, which must run the protocol it is given on
    /// a new connection of any kind (TCP with options, Unix, TLS ...) and
    /// resolve once it is up. It is called again for each reconnection.
    ///
    /// ```
    /// use protoloop::proto::adder::{AddReply, AddRequest};
    /// use protoloop::rpc::{RpcClient, RpcOptions, Service};
    /// use protoloop::{ConnectOptions, EventLoop, ServerOptions};
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let h = lp.handle();
    /// let adder = Service::new(|r: AddRequest| AddReply { sum: i64::from(r.a) + i64::from(r.b) });
    /// let server = h.create_server(move || adder.protocol(), "127.0.0.1:0", ServerOptions::default()).unwrap();
    /// let addr = server.local_addrs()[0];
    /// let h2 = h.clone();
    /// let connect = RpcClient::<AddRequest, AddReply>::connect_with(&h, RpcOptions::new(), move |p| {
    ///     let h = h2.clone();
    ///     async move {
    ///         let opts = ConnectOptions::default().nodelay(true);
    ///         Ok(h.create_connection(move || p, addr, opts).await?.0)
    ///     }
    /// });
    /// let client = lp.run_until_complete(connect).unwrap().unwrap();
    /// client.close();
    /// ```
    pub fn connect_with<C, F>(
        handle: &Handle,
        options: RpcOptions<Req, Resp>,
        connector: C,
    ) -> impl Future<Output = Result<Self, RpcError>> + 'static
    where
        C: Fn(RpcProtocol<Req, Resp>) -> F + 'static,
        F: Future<Output = crate::Result<Transport>> + 'static,
    {
        let connector: Connector<Req, Resp> = Rc::new(move |p| Box::pin(connector(p)));
        let shared = Shared::new(handle, options, connector);
        async move {
            let attempt = (shared.connector)(shared.protocol(0));
            match attempt.await {
                Ok(_) => Ok(RpcClient { shared }),
                Err(e) => {
                    let err = RpcError::Connect(e);
                    shared.give_up(err.clone());
                    Err(err)
                }
            }
        }
    }

    /// Send `request`; the future resolves to its reply. Uses the
    /// options' call timeout, if any.
    pub fn call(&self, request: Req) -> Call<Resp> {
        self.shared.call(request, self.shared.opts.call_timeout)
    }

    /// Like [`call`](Self::call), failing with [`RpcError::Timeout`] if no
    /// reply comes within `timeout`.
    pub fn call_with_timeout(&self, request: Req, timeout: Duration) -> Call<Resp> {
        self.shared.call(request, Some(timeout))
    }
}

impl<Req, Resp> RpcClient<Req, Resp>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    /// Close the connection after flushing what was sent, and stop
    /// reconnecting. Calls still unanswered fail with
    /// [`RpcError::ConnectionLost`] (`LocalClose`); later calls with
    /// [`RpcError::Closed`]. Idempotent.
    pub fn close(&self) {
        self.shared.close()
    }

    /// `true` after [`close`](Self::close).
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// `true` while a connection is up.
    pub fn is_connected(&self) -> bool {
        self.shared.transport().is_some()
    }

    /// Requests sent whose callers wait for their replies. A call that
    /// timed out or was cancelled after it was sent no longer counts, here
    /// or against `max_in_flight`; see [`abandoned`](Self::abandoned).
    pub fn in_flight(&self) -> usize {
        self.shared.counts().0
    }

    /// Requests sent and then given up on (timed out or cancelled) whose
    /// replies are still due: in request order and by key, such a reply is
    /// consumed and thrown away when it comes, so that it reaches no other
    /// call, and the loop's exception handler is told. Always 0 with ids,
    /// where a reply names its call.
    pub fn abandoned(&self) -> usize {
        self.shared.counts().2
    }

    /// Requests waiting to be sent.
    pub fn queued(&self) -> usize {
        self.shared.counts().1
    }

    /// The current connection's transport, if one is up.
    pub fn transport(&self) -> Option<Transport> {
        self.shared.transport()
    }
}
