//! The listening server shared by every stream transport (TCP, Unix):
//! accepting, the set of open connections, closing and graceful shutdown.
//!
//! A kind of listener plugs in through the small [`Listener`] trait; the
//! public [`Server`] handle hides which kind it is, so `create_server` and
//! `create_unix_server` return the same type.
//!
//! # Accepting
//!
//! A server accepts until `WouldBlock` on each readiness event. If
//! `accept` fails for lack of resources (`EMFILE`, `ENOBUFS` ...), the
//! error goes to the exception handler and accepting resumes 100 ms later,
//! as asyncio does.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use mio::{Interest, Token};
use slab::Slab;

use super::stream::{StreamSocket, StreamTransport};
use super::tls::TlsServer;
use super::{SocketAddress, TransportImpl};
use crate::error::{Error, Result};
use crate::event_loop::{ExceptionKind, Handle};
use crate::protocol::Protocol;
use crate::reactor::{IoHandler, Ready, interrupted, would_block};
use crate::task::SettableFuture;
use crate::time::TimerHandle;

/// A non-blocking listening socket.
pub(crate) trait Listener: mio::event::Source + 'static {
    /// The connections it accepts.
    type Stream: StreamSocket;
    /// Accept one connection (`WouldBlock` when none is waiting).
    fn accept_stream(&self) -> io::Result<Self::Stream>;
    /// The address it listens on.
    fn address(&self) -> Option<SocketAddress>;
}

impl Listener for mio::net::TcpListener {
    type Stream = mio::net::TcpStream;
    fn accept_stream(&self) -> io::Result<Self::Stream> {
        self.accept().map(|(s, _)| s)
    }
    fn address(&self) -> Option<SocketAddress> {
        self.local_addr().ok().map(SocketAddress::Inet)
    }
}

/// What the factory makes for each accepted connection.
pub(crate) struct Accepted {
    /// The protocol the stream transport drives.
    pub(crate) protocol: Rc<RefCell<dyn Protocol>>,
    /// The transport the user's protocol sees when a layer (TLS) sits
    /// between it and the stream: `close_clients` closes through it, so
    /// the layer can say goodbye (`close_notify`) after flushing. Weak:
    /// the stream's protocol owns the layer, the server only reaches it.
    pub(crate) front: Option<Weak<dyn TransportImpl>>,
}

impl Accepted {
    /// A protocol run straight on the stream.
    pub(crate) fn plain(protocol: Rc<RefCell<dyn Protocol>>) -> Accepted {
        Accepted {
            protocol,
            front: None,
        }
    }
}

/// Makes the protocol of each accepted connection.
pub(crate) type Factory = Box<dyn Fn() -> Accepted>;

/// Per-connection setup before the transport starts (e.g. `TCP_NODELAY`).
pub(crate) type Configure<S> = Box<dyn Fn(&S)>;

/// What the server needs of an open connection.
trait ServerConn {
    fn close(&self);
    fn abort(&self);
    /// Ask the protocol to drain; close unless it asks for time.
    fn drain(&self);
}

/// An open connection: its stream transport, and the user-facing
/// transport over it if there is a layer between them.
struct Conn<S: StreamSocket> {
    stream: Rc<StreamTransport<S>>,
    front: Option<Weak<dyn TransportImpl>>,
}

impl<S: StreamSocket> ServerConn for Conn<S> {
    fn close(&self) {
        match self.front.as_ref().and_then(Weak::upgrade) {
            Some(front) => front.close(),
            None => TransportImpl::close(&*self.stream),
        }
    }
    fn abort(&self) {
        TransportImpl::abort(&*self.stream)
    }
    fn drain(&self) {
        let mut keep = false;
        if self
            .stream
            .call_protocol("drain_requested", |p| keep = p.drain_requested())
            && !keep
        {
            TransportImpl::close(&*self.stream);
        }
    }
}

/// The kind-independent face of a server, behind [`Server`].
trait ServerOps {
    fn handle(&self) -> &Handle;
    fn addresses(&self) -> &[SocketAddress];
    fn connection_count(&self) -> usize;
    fn is_serving(&self) -> bool;
    fn is_closed(&self) -> bool;
    fn start_serving(&self) -> Result<()>;
    fn close(&self);
    fn connections(&self) -> Vec<Rc<dyn ServerConn>>;
    fn add_waiter(&self, f: SettableFuture<()>);
}

/// One server over listeners of kind `L`.
pub(crate) struct ServerCore<L: Listener> {
    handle: Handle,
    me: Weak<ServerCore<L>>,
    listeners: RefCell<Vec<(Option<Token>, L)>>,
    addrs: Vec<SocketAddress>,
    factory: Factory,
    configure: Configure<L::Stream>,
    conns: RefCell<Slab<Rc<dyn ServerConn>>>,
    idle_timeout: Cell<Option<Duration>>,
    serving: Cell<bool>,
    closed: Cell<bool>,
    waiters: RefCell<Vec<SettableFuture<()>>>,
    retry: RefCell<Option<TimerHandle>>,
}

/// The reactor's handler of a listening socket. It holds the server
/// strongly, so a server keeps serving after its last `Server` handle is
/// dropped (as documented, and as in asyncio); `Server::close` or closing
/// the loop removes it.
struct ListenerReady<L: Listener> {
    server: Rc<ServerCore<L>>,
}

impl<L: Listener> IoHandler for ListenerReady<L> {
    fn ready(self: Rc<Self>, _ready: Ready) {
        self.server.accept_all();
    }
}

impl<L: Listener> ServerCore<L> {
    /// A server over bound, listening sockets; not yet accepting.
    pub(crate) fn new(
        handle: &Handle,
        listeners: Vec<L>,
        factory: Factory,
        configure: Configure<L::Stream>,
    ) -> Rc<ServerCore<L>> {
        let addrs = listeners.iter().filter_map(|l| l.address()).collect();
        Rc::new_cyclic(|me| ServerCore {
            handle: handle.clone(),
            me: me.clone(),
            listeners: RefCell::new(listeners.into_iter().map(|l| (None, l)).collect()),
            addrs,
            factory,
            configure,
            conns: RefCell::new(Slab::new()),
            idle_timeout: Cell::new(None),
            serving: Cell::new(false),
            closed: Cell::new(false),
            waiters: RefCell::new(Vec::new()),
            retry: RefCell::new(None),
        })
    }

    /// Close accepted connections idle this long (see
    /// `ServerOptions::idle_timeout`).
    pub(crate) fn set_idle_timeout(&self, timeout: Option<Duration>) {
        self.idle_timeout.set(timeout);
    }

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
                        Some((_, l)) => l.accept_stream(),
                        None => break,
                    }
                };
                match res {
                    Ok(stream) => self.new_connection(stream),
                    Err(e) if would_block(&e) => break,
                    Err(e) if interrupted(&e) || e.kind() == io::ErrorKind::ConnectionAborted => {
                        continue;
                    }
                    Err(e) => {
                        self.handle.report(
                            ExceptionKind::Error,
                            format!(
                                "accept on {} failed: {e}; retrying in 100 ms",
                                AddrList(&self.addrs)
                            ),
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

    fn new_connection(self: &Rc<Self>, stream: L::Stream) {
        (self.configure)(&stream);
        let Some(accepted) = self.handle.guard(
            ExceptionKind::ProtocolPanic,
            &|| "the server's protocol factory".into(),
            || (self.factory)(),
        ) else {
            return; // the stream is dropped: the client sees the connection closed
        };
        let t = StreamTransport::new(&self.handle, stream, accepted.protocol);
        if let Err(e) = t.register() {
            self.handle.report(
                ExceptionKind::Error,
                format!("registering an accepted connection failed: {e}"),
            );
            return;
        }
        let conn = Conn {
            stream: t.clone(),
            front: accepted.front,
        };
        let key = self.conns.borrow_mut().insert(Rc::new(conn));
        let me = self.me.clone();
        t.set_on_lost(Box::new(move || {
            if let Some(s) = me.upgrade() {
                s.conns.borrow_mut().try_remove(key);
                s.check_closed();
            }
        }));
        if let Some(timeout) = self.idle_timeout.get() {
            t.set_idle_timeout(timeout);
        }
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
}

/// Serve on bound, listening sockets: what `create_server` and
/// `create_unix_server` share once their sockets listen. Each accepted
/// connection gets a protocol from `factory`, behind a TLS layer when
/// `tls` is set; `configure` runs on each accepted stream first.
pub(crate) fn serve<L, P, F>(
    handle: &Handle,
    listeners: Vec<L>,
    factory: F,
    tls: Option<TlsServer>,
    configure: Configure<L::Stream>,
    idle_timeout: Option<Duration>,
    start_serving: bool,
) -> Result<Server>
where
    L: Listener,
    P: Protocol,
    F: Fn() -> P + 'static,
{
    let factory: Factory = match tls {
        Some(tls) => super::tls::server_factory(handle, factory, tls),
        None => Box::new(move || Accepted::plain(Rc::new(RefCell::new(factory())))),
    };
    let core = ServerCore::new(handle, listeners, factory, configure);
    core.set_idle_timeout(idle_timeout);
    let server = Server::new(core);
    if start_serving {
        server.start_serving()?;
    }
    Ok(server)
}

impl<L: Listener> ServerOps for ServerCore<L> {
    fn handle(&self) -> &Handle {
        &self.handle
    }

    fn addresses(&self) -> &[SocketAddress] {
        &self.addrs
    }

    fn connection_count(&self) -> usize {
        self.conns.borrow().len()
    }

    fn is_serving(&self) -> bool {
        self.serving.get()
    }

    fn is_closed(&self) -> bool {
        self.closed.get()
    }

    fn start_serving(&self) -> Result<()> {
        if self.closed.get() {
            return Err(Error::Closed);
        }
        if self.serving.replace(true) {
            return Ok(());
        }
        let reactor = &self.handle.inner.reactor;
        let me = self
            .me
            .upgrade()
            .expect("server is alive while its methods run");
        for (token, l) in self.listeners.borrow_mut().iter_mut() {
            let t = reactor.insert(Rc::new(ListenerReady { server: me.clone() }));
            if let Err(e) = reactor.register(l, t, Interest::READABLE) {
                reactor.forget(t);
                return Err(Error::io("registering the listener", e));
            }
            *token = Some(t);
        }
        // Connections may be waiting already: the registration's edge is
        // enough on Linux, but accept once to be sure on every platform.
        self.handle.call_soon(move || me.accept_all());
        Ok(())
    }

    fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        self.serving.set(false);
        if let Some(t) = self.retry.borrow_mut().take() {
            t.cancel();
        }
        let listeners = std::mem::take(&mut *self.listeners.borrow_mut());
        for (token, mut l) in listeners {
            if let Some(t) = token {
                self.handle.inner.reactor.remove(&mut l, t);
            }
        }
        self.check_closed();
    }

    fn connections(&self) -> Vec<Rc<dyn ServerConn>> {
        self.conns.borrow().iter().map(|(_, c)| c.clone()).collect()
    }

    fn add_waiter(&self, f: SettableFuture<()>) {
        if self.closed.get() && self.conns.borrow().is_empty() {
            let _ = f.set_result(());
        } else {
            self.waiters.borrow_mut().push(f);
        }
    }
}

/// Formats a list of addresses for messages.
struct AddrList<'a>(&'a [SocketAddress]);

impl fmt::Display for AddrList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// A listening server (TCP or Unix); see [`Handle::create_server`] and
/// [`Handle::create_unix_server`]. A cheap `Clone`. Dropping the last
/// `Server` handle does not stop it: call [`close`](Server::close).
#[derive(Clone)]
pub struct Server {
    inner: Rc<dyn ServerOps>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addrs", &self.inner.addresses())
            .field("serving", &self.inner.is_serving())
            .field("connections", &self.connection_count())
            .finish()
    }
}

impl Server {
    /// Wrap a server core; `start_serving` is up to the caller.
    pub(crate) fn new<L: Listener>(core: Rc<ServerCore<L>>) -> Server {
        Server { inner: core }
    }

    /// The IP addresses a TCP server listens on (with the real port when
    /// 0 was asked for). Empty for a Unix server: see
    /// [`addresses`](Server::addresses).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner
            .addresses()
            .iter()
            .filter_map(SocketAddress::as_inet)
            .collect()
    }

    /// Every address the server listens on, of any kind (IP or Unix).
    pub fn addresses(&self) -> Vec<SocketAddress> {
        self.inner.addresses().to_vec()
    }

    /// Open connections accepted by this server.
    pub fn connection_count(&self) -> usize {
        self.inner.connection_count()
    }

    /// `true` while accepting.
    pub fn is_serving(&self) -> bool {
        self.inner.is_serving()
    }

    /// Start accepting (for servers made with `start_serving(false)`).
    pub fn start_serving(&self) -> Result<()> {
        self.inner.start_serving()
    }

    /// Stop listening (a Unix server also removes its socket file, see
    /// [`UnixServerOptions::remove_on_close`](crate::UnixServerOptions::remove_on_close)).
    /// Open connections are left alone (see
    /// [`close_clients`](Server::close_clients)). Idempotent.
    pub fn close(&self) {
        self.inner.close()
    }

    /// Close every open connection as its own transport's `close` would:
    /// flush, then close (a TLS connection sends its `close_notify` after
    /// the flush).
    pub fn close_clients(&self) {
        for c in self.inner.connections() {
            c.close();
        }
    }

    /// Abort every open connection.
    pub fn abort_clients(&self) {
        for c in self.inner.connections() {
            c.abort();
        }
    }

    /// Graceful shutdown: stop accepting, ask each protocol to drain
    /// (`Protocol::drain_requested`), close those that do not ask for time,
    /// and abort whatever is still open after `grace`. Resolves when every
    /// connection is gone.
    pub fn shutdown(&self, grace: Duration) -> impl Future<Output = ()> + 'static {
        self.close();
        let handle = self.inner.handle().clone();
        for c in self.inner.connections() {
            handle.call_soon(move || c.drain());
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
        self.inner.add_waiter(f.clone());
        async move {
            let _ = f.await;
        }
    }

    /// `true` once [`close`](Server::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}
