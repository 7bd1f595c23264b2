//! TCP: `create_connection`, `create_server` and `connect_accepted_socket`
//! on [`Handle`], and the [`Server`] they make.
//!
//! # Connecting
//!
//! Host names are resolved on the loop's executor, never on the loop
//! thread. Every resolved address is tried in turn; if none connects, the
//! error lists each address with its own failure. `TCP_NODELAY` is on by
//! default, as in asyncio.
//!
//! # Serving
//!
//! `create_server` binds every address now and returns a [`Server`], the
//! same handle a Unix server has; the accept loop is shared (see the
//! `server` module) and behaves as asyncio's does.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use socket2::{Domain, Socket, Type};

use super::server::serve;
use super::stream::{StreamSocket, StreamTransport};
use super::{ProtocolHandle, Transport};
use crate::error::{Error, Result};
use crate::event_loop::Handle;
use crate::protocol::Protocol;
use crate::reactor::{IoHandler, Ready, would_block};

pub use super::server::Server;

/// Where to connect: resolved addresses, or a host name and port to be
/// resolved off the loop thread.
///
/// ```
/// use protoloop::Address;
/// let a: Address = "127.0.0.1:8888".into();
/// let b: Address = ("localhost", 8888).into();
/// let c: Address = std::net::SocketAddr::from(([127, 0, 0, 1], 8888)).into();
/// # let _ = (a, b, c);
/// ```
#[derive(Debug, Clone)]
pub enum Address {
    /// Addresses to try in order.
    Resolved(Vec<SocketAddr>),
    /// A host name (or IP literal) and a port.
    Host(String, u16),
    /// `"host:port"` (IPv6 literals in brackets).
    HostPort(String),
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Address::Resolved(vec![a])
    }
}
impl From<Vec<SocketAddr>> for Address {
    fn from(a: Vec<SocketAddr>) -> Self {
        Address::Resolved(a)
    }
}
impl From<&str> for Address {
    fn from(s: &str) -> Self {
        match s.parse::<SocketAddr>() {
            Ok(a) => Address::Resolved(vec![a]),
            Err(_) => Address::HostPort(s.to_string()),
        }
    }
}
impl From<String> for Address {
    fn from(s: String) -> Self {
        Address::from(s.as_str())
    }
}
impl From<(&str, u16)> for Address {
    fn from((h, p): (&str, u16)) -> Self {
        match h.parse::<IpAddr>() {
            Ok(ip) => Address::Resolved(vec![SocketAddr::new(ip, p)]),
            Err(_) => Address::Host(h.to_string(), p),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Resolved(v) if v.len() == 1 => write!(f, "{}", v[0]),
            Address::Resolved(v) => write!(f, "{v:?}"),
            Address::Host(h, p) => write!(f, "{h}:{p}"),
            Address::HostPort(s) => f.write_str(s),
        }
    }
}

impl Address {
    /// Resolve on the executor if a name lookup is needed.
    pub(crate) async fn resolve(self, handle: &Handle) -> Result<Vec<SocketAddr>> {
        let target = self.to_string();
        let addrs = match self {
            Address::Resolved(v) => v,
            Address::Host(h, p) => handle
                .run_in_executor(move || {
                    (h.as_str(), p)
                        .to_socket_addrs()
                        .map(|i| i.collect::<Vec<_>>())
                })
                .await?
                .map_err(|e| Error::Resolve {
                    target: target.clone(),
                    source: Some(Arc::new(e)),
                })?,
            Address::HostPort(s) => handle
                .run_in_executor(move || {
                    s.as_str().to_socket_addrs().map(|i| i.collect::<Vec<_>>())
                })
                .await?
                .map_err(|e| Error::Resolve {
                    target: target.clone(),
                    source: Some(Arc::new(e)),
                })?,
        };
        if addrs.is_empty() {
            return Err(Error::Resolve {
                target,
                source: None,
            });
        }
        Ok(addrs)
    }
}

/// Options for [`Handle::create_connection`].
///
/// ```
/// use std::time::Duration;
/// let opts = protoloop::ConnectOptions::default()
///     .timeout(Duration::from_secs(5))
///     .nodelay(true);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) nodelay: bool,
    /// TLS on top (`ConnectOptions::tls`, in the `tls` module).
    pub(crate) tls: Option<super::tls::TlsClient>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            local_addr: None,
            timeout: None,
            nodelay: true,
            tls: None,
        }
    }
}

impl ConnectOptions {
    /// Bind to this local address before connecting.
    pub fn local_addr(mut self, addr: SocketAddr) -> Self {
        self.local_addr = Some(addr);
        self
    }
    /// Give up on each address after this long (default: the OS's).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
    /// `TCP_NODELAY` (default on).
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }
}

/// Options for [`Handle::create_server`].
///
/// ```
/// let opts = protoloop::ServerOptions::default().backlog(128).reuse_port(true);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub(crate) backlog: i32,
    pub(crate) reuse_address: bool,
    pub(crate) reuse_port: bool,
    pub(crate) start_serving: bool,
    pub(crate) nodelay: bool,
    /// TLS on every connection (`ServerOptions::tls`, in the `tls` module).
    pub(crate) tls: Option<super::tls::TlsServer>,
    pub(crate) idle_timeout: Option<Duration>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            backlog: 1024,
            reuse_address: true,
            reuse_port: false,
            start_serving: true,
            nodelay: true,
            tls: None,
            idle_timeout: None,
        }
    }
}

impl ServerOptions {
    /// Listen backlog (default 1024).
    pub fn backlog(mut self, n: i32) -> Self {
        self.backlog = n;
        self
    }
    /// `SO_REUSEADDR` (default on, as asyncio on Unix).
    pub fn reuse_address(mut self, on: bool) -> Self {
        self.reuse_address = on;
        self
    }
    /// `SO_REUSEPORT` (default off).
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }
    /// Accept connections at once (default) or only after
    /// [`Server::start_serving`].
    pub fn start_serving(mut self, on: bool) -> Self {
        self.start_serving = on;
        self
    }
    /// `TCP_NODELAY` on accepted connections (default on).
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }
    /// Close accepted connections on which no byte was received or sent
    /// for `timeout` (default: never), with
    /// `CloseReason::Timeout(TimeoutKind::Idle)`: a defence against
    /// clients that connect and send nothing, or stall (slowloris). Time
    /// during which the protocol has paused reading does not count. A
    /// connection with unsent data is reset rather than closed.
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = protoloop::ServerOptions::default().idle_timeout(Duration::from_secs(60));
    /// # let _ = opts;
    /// ```
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }
}

/// Waits for a non-blocking connect to finish.
#[derive(Default)]
struct ConnectWait {
    fired: Cell<bool>,
    waker: RefCell<Option<std::task::Waker>>,
}

impl IoHandler for ConnectWait {
    fn ready(self: Rc<Self>, _ready: Ready) {
        self.fired.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

fn is_in_progress(e: &io::Error) -> bool {
    would_block(e) || e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error())
}

/// Connect one address; the socket comes back registered under the token.
async fn connect_one(
    handle: &Handle,
    addr: SocketAddr,
    opts: &ConnectOptions,
) -> io::Result<(TcpStream, Token)> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_nonblocking(true)?;
    sock.set_cloexec(true)?;
    if let Some(local) = opts.local_addr {
        sock.bind(&local.into())?;
    }
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if is_in_progress(&e) => {}
        Err(e) => return Err(e),
    }
    let mut stream = TcpStream::from_std(std::net::TcpStream::from(sock));
    let wait = Rc::new(ConnectWait::default());
    let reactor = &handle.inner.reactor;
    let token = reactor.insert(wait.clone());
    if let Err(e) = reactor.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
        reactor.forget(token);
        return Err(e);
    }
    // If this future is dropped mid-connect (a timeout around
    // `create_connection`), forget the token; closing the socket, dropped
    // next, deregisters it.
    let mut pending = PendingConnect {
        handle,
        token: Some(token),
    };
    let connected = std::future::poll_fn(|cx| {
        loop {
            if !wait.fired.replace(false) {
                *wait.waker.borrow_mut() = Some(cx.waker().clone());
                return Poll::Pending;
            }
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => return Poll::Ready(Err(e)),
                Ok(None) => {}
            }
            match stream.peer_addr() {
                Ok(_) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => continue, // spurious
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    });
    let res = match opts.timeout {
        Some(t) => match handle.timeout(t, connected).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timed out after {t:?}"),
            )),
        },
        None => connected.await,
    };
    pending.token = None;
    match res {
        Ok(()) => Ok((stream, token)),
        Err(e) => {
            reactor.remove(&mut stream, token);
            Err(e)
        }
    }
}

/// Forgets a connect attempt's reactor token unless the attempt finished.
struct PendingConnect<'a> {
    handle: &'a Handle,
    token: Option<Token>,
}

impl Drop for PendingConnect<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.token.take() {
            self.handle.inner.reactor.forget(t);
        }
    }
}

impl Handle {
    /// Connect to `addr` over TCP and run the protocol made by `factory`
    /// on the connection. Resolves to the transport and a handle to the
    /// protocol once `connection_made` has been called (asyncio's
    /// `(transport, protocol)`).
    ///
    /// ```
    /// use protoloop::{ConnectOptions, EventLoop, Protocol, ServerOptions};
    /// struct Sink;
    /// impl Protocol for Sink { fn data_received(&mut self, _: &[u8]) {} }
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let h = lp.handle();
    /// let server = h.create_server(|| Sink, "127.0.0.1:0", ServerOptions::default()).unwrap();
    /// let addr = server.local_addrs()[0];
    /// let (transport, _proto) = lp
    ///     .run_until_complete(h.create_connection(|| Sink, addr, ConnectOptions::default()))
    ///     .unwrap()
    ///     .unwrap();
    /// transport.write(b"hi").unwrap();
    /// transport.close();
    /// ```
    pub fn create_connection<P, F>(
        &self,
        factory: F,
        addr: impl Into<Address>,
        opts: ConnectOptions,
    ) -> impl Future<Output = Result<(Transport, ProtocolHandle<P>)>> + 'static
    where
        P: Protocol,
        F: FnOnce() -> P + 'static,
    {
        let handle = self.clone();
        let addr = addr.into();
        async move {
            let target = addr.to_string();
            let addrs = addr.resolve(&handle).await?;
            let mut attempts = Vec::new();
            for a in addrs {
                match connect_one(&handle, a, &opts).await {
                    Ok((stream, token)) => {
                        if opts.nodelay {
                            let _ = stream.set_nodelay(true);
                        }
                        if let Some(tls) = &opts.tls {
                            return super::tls::connect_stream(
                                &handle,
                                stream,
                                Some(token),
                                factory,
                                tls,
                            )
                            .await;
                        }
                        return start_plain(&handle, stream, Some(token), factory());
                    }
                    Err(e) => attempts.push((a, Arc::new(e))),
                }
            }
            Err(Error::Connect { target, attempts })
        }
    }

    /// Run a protocol on an already-connected `std::net::TcpStream`
    /// (asyncio's `connect_accepted_socket`). The stream is made
    /// non-blocking.
    pub fn connect_accepted_socket<P: Protocol>(
        &self,
        protocol: P,
        stream: std::net::TcpStream,
    ) -> Result<(Transport, ProtocolHandle<P>)> {
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::io("making the socket non-blocking", e))?;
        start_plain(self, TcpStream::from_std(stream), None, protocol)
    }

    /// Listen on every address `addrs` resolves to and run a protocol
    /// made by `factory` on each accepted connection.
    ///
    /// Binding happens now (port 0 picks a free port: see
    /// [`Server::local_addrs`]); with the default options the server is
    /// accepting when this returns.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use protoloop::{EventLoop, Protocol, ServerOptions, Transport};
    ///
    /// /// Answers every chunk with its length.
    /// struct Count(Option<Transport>);
    /// impl Protocol for Count {
    ///     fn connection_made(&mut self, t: Transport) {
    ///         self.0 = Some(t);
    ///     }
    ///     fn data_received(&mut self, data: &[u8]) {
    ///         let t = self.0.as_ref().unwrap();
    ///         t.write(format!("{}\n", data.len()).as_bytes()).unwrap();
    ///         t.close();
    ///     }
    /// }
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let server = lp
    ///     .handle()
    ///     .create_server(|| Count(None), "127.0.0.1:0", ServerOptions::default())
    ///     .unwrap();
    /// let addr = server.local_addrs()[0];
    /// let client = std::thread::spawn(move || {
    ///     let mut s = std::net::TcpStream::connect(addr).unwrap();
    ///     s.write_all(b"hello").unwrap();
    ///     let mut reply = String::new();
    ///     s.read_to_string(&mut reply).unwrap();
    ///     reply
    /// });
    /// lp.run_until(std::time::Duration::from_secs(10), || client.is_finished()).unwrap();
    /// assert_eq!(client.join().unwrap(), "5\n");
    /// server.close();
    /// ```
    pub fn create_server<P, F>(
        &self,
        factory: F,
        addrs: impl ToSocketAddrs,
        opts: ServerOptions,
    ) -> Result<Server>
    where
        P: Protocol,
        F: Fn() -> P + 'static,
    {
        let resolved: Vec<SocketAddr> = addrs
            .to_socket_addrs()
            .map_err(|e| Error::io("resolving the listen address", e))?
            .collect();
        if resolved.is_empty() {
            return Err(Error::Resolve {
                target: "listen address".into(),
                source: None,
            });
        }
        let mut listeners = Vec::new();
        for a in &resolved {
            listeners.push(
                bind_listener(*a, &opts).map_err(|e| Error::io(format!("listening on {a}"), e))?,
            );
        }
        let nodelay = opts.nodelay;
        let configure = Box::new(move |s: &TcpStream| {
            if nodelay {
                let _ = s.set_nodelay(true);
            }
        });
        serve(
            self,
            listeners,
            factory,
            opts.tls,
            configure,
            opts.idle_timeout,
            opts.start_serving,
        )
    }
}

/// Start a stream transport for `protocol` on a connected socket: take
/// over the reactor entry `token` that connecting registered, or register
/// the socket now; then `connection_made` runs and the first read is
/// scheduled. Every client-side connection (TCP or Unix, plain or under
/// TLS) starts here; the server's accept path keeps its own order (see
/// the `server` module).
pub(super) fn start_stream<S: StreamSocket>(
    handle: &Handle,
    stream: S,
    token: Option<Token>,
    protocol: Rc<RefCell<dyn Protocol>>,
) -> Result<Rc<StreamTransport<S>>> {
    let t = StreamTransport::new(handle, stream, protocol);
    match token {
        Some(token) => t.adopt_token(token),
        None => t
            .register()
            .map_err(|e| Error::io("registering the socket", e))?,
    }
    t.start(true);
    Ok(t)
}

/// [`start_stream`] for a protocol run straight on the socket (no TLS),
/// returned as `create_connection` returns it.
pub(super) fn start_plain<S: StreamSocket, P: Protocol>(
    handle: &Handle,
    stream: S,
    token: Option<Token>,
    protocol: P,
) -> Result<(Transport, ProtocolHandle<P>)> {
    let proto = Rc::new(RefCell::new(protocol));
    let t = start_stream(handle, stream, token, proto.clone())?;
    Ok((Transport::new(t), ProtocolHandle::new(proto)))
}

fn bind_listener(addr: SocketAddr, opts: &ServerOptions) -> io::Result<TcpListener> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_cloexec(true)?;
    if opts.reuse_address {
        sock.set_reuse_address(true)?;
    }
    if opts.reuse_port {
        sock.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(opts.backlog)?;
    sock.set_nonblocking(true)?;
    Ok(TcpListener::from_std(std::net::TcpListener::from(sock)))
}
