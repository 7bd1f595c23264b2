//! Fake peers for tests of programs under test: [`FakeServer`] (a server
//! on a free loopback port whose connections' protocols the test can
//! reach) and [`fake_client`] (one connection, with a deadline).

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::event_loop::Handle;
use crate::protocol::{CloseReason, Protocol};
use crate::transport::tcp::{Address, ConnectOptions, Server, ServerOptions};
use crate::transport::{ProtocolHandle, Transport};

/// A TCP server on `127.0.0.1:0` (a free loopback port) running a
/// protocol per connection, for a program under test to connect to in
/// place of the real service. Unlike a bare [`Server`], it keeps a
/// [`ProtocolHandle`] to each accepted connection's protocol, so the test
/// can see what each peer sent and make it answer.
///
/// Each protocol runs behind a thin forwarder, so a
/// [`Buffered`](crate::Buffered) protocol is fed through
/// `data_received` (one copy) rather than its own buffer.
///
/// ```
/// use std::time::Duration;
/// use protoloop::testing::{FakeServer, fake_client};
/// use protoloop::{EventLoop, Protocol, Transport};
///
/// #[derive(Default)]
/// struct Sink { got: Vec<u8> }
/// impl Protocol for Sink {
///     fn data_received(&mut self, d: &[u8]) { self.got.extend_from_slice(d); }
/// }
/// struct Hello;
/// impl Protocol for Hello {
///     fn connection_made(&mut self, t: Transport) { t.write(b"hello").unwrap(); t.close(); }
///     fn data_received(&mut self, _: &[u8]) {}
/// }
///
/// let lp = EventLoop::new().unwrap();
/// let h = lp.handle();
/// let server = FakeServer::start(&h, Sink::default).unwrap();
/// let within = Duration::from_secs(10);
/// let got = lp.run_until_complete({
///     let (h, server) = (h.clone(), server.clone());
///     async move {
///         fake_client(&h, server.addr(), || Hello, within).await.unwrap();
///         let conns = server.wait_for_connections(1, within).await.unwrap();
///         // Wait until the bytes are in (bounded).
///         let deadline = h.time() + within;
///         while conns[0].with(|p| p.got.len()) < 5 && h.time() < deadline {
///             h.sleep(Duration::from_millis(1)).await;
///         }
///         conns[0].with(|p| p.got.clone())
///     }
/// }).unwrap();
/// assert_eq!(got, b"hello");
/// server.close();
/// ```
pub struct FakeServer<P> {
    server: Server,
    addr: SocketAddr,
    conns: Rc<RefCell<Vec<ProtocolHandle<P>>>>,
    handle: Handle,
}

impl<P> Clone for FakeServer<P> {
    fn clone(&self) -> Self {
        FakeServer {
            server: self.server.clone(),
            addr: self.addr,
            conns: self.conns.clone(),
            handle: self.handle.clone(),
        }
    }
}

impl<P> fmt::Debug for FakeServer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeServer")
            .field("addr", &self.addr)
            .field("accepted", &self.conns.borrow().len())
            .finish()
    }
}

impl<P: Protocol> FakeServer<P> {
    /// Listen on `127.0.0.1:0` and run a protocol made by `factory` on
    /// each connection.
    pub fn start(handle: &Handle, factory: impl Fn() -> P + 'static) -> Result<FakeServer<P>> {
        FakeServer::start_with(handle, factory, ServerOptions::default())
    }

    /// [`start`](Self::start) with server options (an idle timeout,
    /// TLS, ...). The address is always `127.0.0.1:0`.
    pub fn start_with(
        handle: &Handle,
        factory: impl Fn() -> P + 'static,
        opts: ServerOptions,
    ) -> Result<FakeServer<P>> {
        let conns: Rc<RefCell<Vec<ProtocolHandle<P>>>> = Rc::default();
        let c = conns.clone();
        let server = handle.create_server(
            move || {
                let p = Rc::new(RefCell::new(factory()));
                c.borrow_mut().push(ProtocolHandle::new(p.clone()));
                Shared(p)
            },
            "127.0.0.1:0",
            opts,
        )?;
        let addr = server.local_addrs()[0];
        Ok(FakeServer {
            server,
            addr,
            conns,
            handle: handle.clone(),
        })
    }
}

impl<P> FakeServer<P> {
    /// Where it listens (pass this to the program under test).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The protocols of the connections accepted so far, oldest first
    /// (closed ones included).
    pub fn connections(&self) -> Vec<ProtocolHandle<P>> {
        self.conns.borrow().clone()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Wait until `n` connections have been accepted, then give them all;
    /// [`Error::Timeout`] after `within`.
    pub fn wait_for_connections(
        &self,
        n: usize,
        within: Duration,
    ) -> impl Future<Output = Result<Vec<ProtocolHandle<P>>>> + 'static
    where
        P: 'static,
    {
        let (h, conns) = (self.handle.clone(), self.conns.clone());
        async move {
            let deadline = h.time() + within;
            // Accepts are not observable as an event here; a short poll
            // keeps this simple and is bounded by the deadline.
            while conns.borrow().len() < n {
                if h.time() >= deadline {
                    return Err(Error::Timeout);
                }
                h.sleep(Duration::from_millis(1)).await;
            }
            Ok(conns.borrow().clone())
        }
    }

    /// The underlying server (connection count, `abort_clients`,
    /// `shutdown`).
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Stop listening; open connections are left alone.
    pub fn close(&self) {
        self.server.close()
    }
}

/// Forwards every callback to a protocol the test can also reach.
struct Shared<P>(Rc<RefCell<P>>);

impl<P: Protocol> Protocol for Shared<P> {
    fn connection_made(&mut self, transport: Transport) {
        self.0.borrow_mut().connection_made(transport)
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0.borrow_mut().data_received(data)
    }
    fn eof_received(&mut self) -> bool {
        self.0.borrow_mut().eof_received()
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.0.borrow_mut().connection_lost(reason)
    }
    fn pause_writing(&mut self) {
        self.0.borrow_mut().pause_writing()
    }
    fn resume_writing(&mut self) {
        self.0.borrow_mut().resume_writing()
    }
    fn drain_requested(&mut self) -> bool {
        self.0.borrow_mut().drain_requested()
    }
}

/// Connect to `addr` (a program under test) with a protocol made by
/// `factory`, giving up after `within`: a fake client. Nagle is off, so
/// small writes go out as they are made.
pub fn fake_client<P, F>(
    handle: &Handle,
    addr: impl Into<Address>,
    factory: F,
    within: Duration,
) -> impl Future<Output = Result<(Transport, ProtocolHandle<P>)>> + 'static
where
    P: Protocol,
    F: FnOnce() -> P + 'static,
{
    let opts = ConnectOptions::default().timeout(within).nodelay(true);
    handle.create_connection(factory, addr, opts)
}
