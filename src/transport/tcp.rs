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
//! A [`Server`] accepts until `WouldBlock` on each readiness event. If
//! `accept` fails for lack of resources (`EMFILE`, `ENOBUFS` ...), the
//! error goes to the exception handler and accepting resumes 100 ms later,
//! as asyncio does.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use slab::Slab;
use socket2::{Domain, Socket, Type};

use super::stream::StreamTransport;
use super::{ProtocolHandle, Transport};
use crate::error::{Error, Result};
use crate::event_loop::{ExceptionKind, Handle};
use crate::protocol::Protocol;
use crate::reactor::{IoHandler, Ready, interrupted, would_block};
use crate::task::SettableFuture;
use crate::time::TimerHandle;

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
                                &handle, stream, token, factory, tls,
                            )
                            .await;
                        }
                        let proto = Rc::new(RefCell::new(factory()));
                        let t = StreamTransport::new(&handle, stream, proto.clone());
                        t.adopt_token(token);
                        t.start(true);
                        return Ok((Transport::new(t), ProtocolHandle::new(proto)));
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
        let proto = Rc::new(RefCell::new(protocol));
        let t = StreamTransport::new(self, TcpStream::from_std(stream), proto.clone());
        t.register()
            .map_err(|e| Error::io("registering the socket", e))?;
        t.start(true);
        Ok((Transport::new(t), ProtocolHandle::new(proto)))
    }

    /// Listen on every address `addrs` resolves to and run a protocol
    /// made by `factory` on each accepted connection.
    ///
    /// Binding happens now (port 0 picks a free port: see
    /// [`Server::local_addrs`]); with the default options the server is
    /// accepting when this returns.
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
        let local: Vec<SocketAddr> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let factory: Box<dyn Fn() -> Rc<RefCell<dyn Protocol>>> = match opts.tls.clone() {
            Some(tls) => super::tls::server_factory(self, factory, tls),
            None => Box::new(move || Rc::new(RefCell::new(factory())) as Rc<RefCell<dyn Protocol>>),
        };
        let inner = Rc::new_cyclic(|me| ServerInner {
            handle: self.clone(),
            me: me.clone(),
            listeners: RefCell::new(listeners.into_iter().map(|l| (None, l)).collect()),
            addrs: local,
            factory,
            conns: RefCell::new(Slab::new()),
            serving: Cell::new(false),
            closed: Cell::new(false),
            nodelay: opts.nodelay,
            waiters: RefCell::new(Vec::new()),
            retry: RefCell::new(None),
        });
        let server = Server { inner };
        if opts.start_serving {
            server.start_serving()?;
        }
        Ok(server)
    }
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

type Conn = Rc<StreamTransport<TcpStream>>;

struct ServerInner {
    handle: Handle,
    me: Weak<ServerInner>,
    listeners: RefCell<Vec<(Option<Token>, TcpListener)>>,
    addrs: Vec<SocketAddr>,
    factory: Box<dyn Fn() -> Rc<RefCell<dyn Protocol>>>,
    conns: RefCell<Slab<Conn>>,
    serving: Cell<bool>,
    closed: Cell<bool>,
    nodelay: bool,
    waiters: RefCell<Vec<SettableFuture<()>>>,
    retry: RefCell<Option<TimerHandle>>,
}

/// The reactor's handler of a listening socket. It holds the server
/// strongly, so a server keeps serving after its last `Server` handle is
/// dropped (as documented, and as in asyncio); `Server::close` or closing
/// the loop removes it.
struct ListenerReady {
    server: Rc<ServerInner>,
}

impl IoHandler for ListenerReady {
    fn ready(self: Rc<Self>, _ready: Ready) {
        self.server.accept_all();
    }
}

impl ServerInner {
    fn accept_all(self: &Rc<Self>) {
        if !self.serving.get() {
            return;
        }
        let n = self.listeners.borrow().len();
        for i in 0..n {
            loop {
                let res = {
                    let ls = self.listeners.borrow();
                    match ls.get(i) {
                        Some((_, l)) => l.accept(),
                        None => break,
                    }
                };
                match res {
                    Ok((stream, _peer)) => self.new_connection(stream),
                    Err(e) if would_block(&e) => break,
                    Err(e) if interrupted(&e) || e.kind() == io::ErrorKind::ConnectionAborted => {
                        continue;
                    }
                    Err(e) => {
                        self.handle.report(
                            ExceptionKind::Error,
                            format!("accept on {:?} failed: {e}; retrying in 100 ms", self.addrs),
                        );
                        let me = self.clone();
                        *self.retry.borrow_mut() =
                            Some(self.handle.call_later(Duration::from_millis(100), move || {
                                me.retry.borrow_mut().take();
                                me.accept_all();
                            }));
                        return;
                    }
                }
            }
        }
    }

    fn new_connection(self: &Rc<Self>, stream: TcpStream) {
        if self.nodelay {
            let _ = stream.set_nodelay(true);
        }
        let Some(proto) = self.handle.guard(
            ExceptionKind::ProtocolPanic,
            &|| "the server's protocol factory".into(),
            || (self.factory)(),
        ) else {
            return; // the stream is dropped: the client sees the connection closed
        };
        let t = StreamTransport::new(&self.handle, stream, proto);
        if let Err(e) = t.register() {
            self.handle.report(
                ExceptionKind::Error,
                format!("registering an accepted connection failed: {e}"),
            );
            return;
        }
        let key = self.conns.borrow_mut().insert(t.clone());
        let me = self.me.clone();
        t.set_on_lost(Box::new(move || {
            if let Some(s) = me.upgrade() {
                s.conns.borrow_mut().try_remove(key);
                s.check_closed();
            }
        }));
        t.start(false);
    }

    fn check_closed(&self) {
        if self.closed.get() && self.conns.borrow().is_empty() {
            let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
            for w in waiters {
                let _ = w.set_result(());
            }
        }
    }

    fn conns(&self) -> Vec<Conn> {
        self.conns.borrow().iter().map(|(_, c)| c.clone()).collect()
    }
}

/// A listening TCP server; see [`Handle::create_server`]. A cheap `Clone`.
/// Dropping the last `Server` handle does not stop it: call
/// [`close`](Server::close).
#[derive(Clone)]
pub struct Server {
    inner: Rc<ServerInner>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addrs", &self.inner.addrs)
            .field("serving", &self.inner.serving.get())
            .field("connections", &self.connection_count())
            .finish()
    }
}

impl Server {
    /// The addresses the server listens on (with the real port when 0
    /// was asked for).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.addrs.clone()
    }

    /// Open connections accepted by this server.
    pub fn connection_count(&self) -> usize {
        self.inner.conns.borrow().len()
    }

    /// `true` while accepting.
    pub fn is_serving(&self) -> bool {
        self.inner.serving.get()
    }

    /// Start accepting (for servers made with `start_serving(false)`).
    pub fn start_serving(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.closed.get() {
            return Err(Error::Closed);
        }
        if inner.serving.replace(true) {
            return Ok(());
        }
        let reactor = &inner.handle.inner.reactor;
        for (token, l) in inner.listeners.borrow_mut().iter_mut() {
            let t = reactor.insert(Rc::new(ListenerReady {
                server: inner.clone(),
            }));
            reactor
                .register(l, t, Interest::READABLE)
                .map_err(|e| Error::io("registering the listener", e))?;
            *token = Some(t);
        }
        // Connections may be waiting already: the registration's edge is
        // enough on Linux, but accept once to be sure on every platform.
        let me = inner.clone();
        inner.handle.call_soon(move || me.accept_all());
        Ok(())
    }

    /// Stop listening. Open connections are left alone (see
    /// [`close_clients`](Server::close_clients)). Idempotent.
    pub fn close(&self) {
        let inner = &self.inner;
        if inner.closed.replace(true) {
            return;
        }
        inner.serving.set(false);
        if let Some(t) = inner.retry.borrow_mut().take() {
            t.cancel();
        }
        let listeners = std::mem::take(&mut *inner.listeners.borrow_mut());
        for (token, mut l) in listeners {
            if let Some(t) = token {
                inner.handle.inner.reactor.remove(&mut l, t);
            }
        }
        inner.check_closed();
    }

    /// Close every open connection (flush, then close).
    pub fn close_clients(&self) {
        for c in self.inner.conns() {
            super::TransportImpl::close(&*c);
        }
    }

    /// Abort every open connection.
    pub fn abort_clients(&self) {
        for c in self.inner.conns() {
            super::TransportImpl::abort(&*c);
        }
    }

    /// Graceful shutdown: stop accepting, ask each protocol to drain
    /// (`Protocol::drain_requested`), close those that do not ask for time,
    /// and abort whatever is still open after `grace`. Resolves when every
    /// connection is gone.
    pub fn shutdown(&self, grace: Duration) -> impl Future<Output = ()> + 'static {
        self.close();
        let handle = self.inner.handle.clone();
        for c in self.inner.conns() {
            handle.call_soon(move || {
                let mut keep = false;
                if c.call_protocol("drain_requested", |p| keep = p.drain_requested()) && !keep {
                    super::TransportImpl::close(&*c);
                }
            });
        }
        let me = self.clone();
        let timer = handle.call_later(grace, move || me.abort_clients());
        let closed = self.wait_closed();
        async move {
            closed.await;
            timer.cancel();
        }
    }

    /// Resolves once the server is closed and all its connections are gone.
    pub fn wait_closed(&self) -> impl Future<Output = ()> + 'static {
        let f = SettableFuture::new();
        if self.inner.closed.get() && self.inner.conns.borrow().is_empty() {
            let _ = f.set_result(());
        } else {
            self.inner.waiters.borrow_mut().push(f.clone());
        }
        async move {
            let _ = f.await;
        }
    }
}
