//! Unix-domain stream sockets: [`Handle::create_unix_connection`] and
//! [`Handle::create_unix_server`], and the address type [`UnixAddr`] that
//! Unix datagram endpoints share.
//!
//! # The same transport as TCP
//!
//! A Unix connection is the crate's stream transport, so the
//! [`Transport`] API and the [`Protocol`] contract are those of TCP: flow
//! control, half-close (`write_eof` shuts the writing side; the peer reads
//! EOF), `close` (flush, then close), `abort`, and [`Server`] shutdown.
//! One difference: Unix sockets have no `SO_LINGER` reset, so after
//! `abort` the peer reads EOF (or `ECONNRESET` if we left data unread).
//!
//! # TLS
//!
//! [`UnixServerOptions::tls`] and [`UnixConnectOptions::tls`] (with
//! [`Handle::create_unix_connection_with`]) run TLS over a Unix
//! connection exactly as over TCP: see the [`tls`](crate::tls) module.
//!
//! # Socket files
//!
//! Binding a path creates a socket file that outlives a server that dies
//! without cleaning up, and a stale file makes the next `bind` fail with
//! `EADDRINUSE`. With [`UnixServerOptions::remove_stale`] (the default) the
//! server checks such a file by connecting to it: `ECONNREFUSED` means no
//! one listens, so the file is removed and the bind retried. A live
//! server's file, or anything that is not a socket, is never removed; the
//! bind fails with `EADDRINUSE` and says so. The check costs a live server
//! one connection that closes at once.
//!
//! When the server closes, its socket file is removed
//! ([`UnixServerOptions::remove_on_close`]), but only if it is still the
//! file this server made (same device and inode).
//!
//! # Abstract names (Linux)
//!
//! [`UnixAddr::abstract_name`] names a socket in the abstract namespace:
//! no file is made, and the name goes away with the last socket bound to
//! it.

use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use socket2::{Domain, Socket, Type};

mod addr;

pub use addr::UnixAddr;
pub(crate) use addr::{SocketFile, bind_unix};

use super::server::{Listener, Server, serve};
use super::stream::StreamSocket;
use super::tls::{TlsClient, TlsServer};
use super::{ProtocolHandle, SocketAddress, Transport};
use crate::error::{Error, Result};
use crate::event_loop::Handle;
use crate::protocol::Protocol;
use crate::reactor::{interrupted, would_block};

/// How long `create_unix_connection` retries while the server's listen
/// backlog is full (Linux then fails `connect` with `EAGAIN` rather than
/// completing it later).
const BACKLOG_RETRY_LIMIT: Duration = Duration::from_secs(2);

impl StreamSocket for UnixStream {
    #[inline]
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
    #[inline]
    fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    #[inline]
    fn write_vectored_some(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
    fn peer(&self) -> Option<SocketAddress> {
        self.peer_addr().ok().map(SocketAddress::Unix)
    }
    fn local(&self) -> Option<SocketAddress> {
        self.local_addr().ok().map(SocketAddress::Unix)
    }
}

/// A listening Unix socket that removes its socket file when dropped
/// (when asked to).
struct UnixListenerSock {
    inner: UnixListener,
    file: Option<SocketFile>,
}

impl Drop for UnixListenerSock {
    fn drop(&mut self) {
        if let Some(f) = &self.file {
            f.remove();
        }
    }
}

impl mio::event::Source for UnixListenerSock {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.inner.register(r, t, i)
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.inner.reregister(r, t, i)
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.inner.deregister(r)
    }
}

impl Listener for UnixListenerSock {
    type Stream = UnixStream;
    fn accept_stream(&self) -> io::Result<UnixStream> {
        self.inner.accept().map(|(s, _)| s)
    }
    fn address(&self) -> Option<SocketAddress> {
        self.inner.local_addr().ok().map(SocketAddress::Unix)
    }
}

/// Options for [`Handle::create_unix_server`].
///
/// ```
/// let opts = protoloop::UnixServerOptions::default()
///     .backlog(64)
///     .remove_stale(false);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
pub struct UnixServerOptions {
    backlog: i32,
    start_serving: bool,
    remove_stale: bool,
    remove_on_close: bool,
    idle_timeout: Option<Duration>,
    /// TLS on every connection (`UnixServerOptions::tls`, in the `tls` module).
    pub(crate) tls: Option<TlsServer>,
}

impl Default for UnixServerOptions {
    fn default() -> Self {
        UnixServerOptions {
            backlog: 1024,
            start_serving: true,
            remove_stale: true,
            remove_on_close: true,
            idle_timeout: None,
            tls: None,
        }
    }
}

impl UnixServerOptions {
    /// Listen backlog (default 1024).
    pub fn backlog(mut self, n: i32) -> Self {
        self.backlog = n;
        self
    }
    /// Accept connections at once (default) or only after
    /// [`Server::start_serving`].
    pub fn start_serving(mut self, on: bool) -> Self {
        self.start_serving = on;
        self
    }
    /// Remove a stale socket file left at the path by a dead server
    /// (default on). A live server's socket is never removed.
    pub fn remove_stale(mut self, on: bool) -> Self {
        self.remove_stale = on;
        self
    }
    /// Remove the socket file when the server closes (default on).
    pub fn remove_on_close(mut self, on: bool) -> Self {
        self.remove_on_close = on;
        self
    }
    /// Close accepted connections on which no byte was received or sent
    /// for `timeout` (default: never), with
    /// `CloseReason::Timeout(TimeoutKind::Idle)`; the same as
    /// [`ServerOptions::idle_timeout`](crate::ServerOptions::idle_timeout).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }
}

/// Options for [`Handle::create_unix_connection_with`]: TLS (see
/// [`UnixConnectOptions::tls`]).
///
/// ```
/// let opts = protoloop::UnixConnectOptions::default();
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Default)]
pub struct UnixConnectOptions {
    /// TLS on top (`UnixConnectOptions::tls`, in the `tls` module).
    pub(crate) tls: Option<TlsClient>,
}

/// Connect a non-blocking Unix stream socket to `addr`.
async fn connect_unix(handle: &Handle, addr: &UnixAddr) -> io::Result<UnixStream> {
    let sa = addr.to_sockaddr()?;
    let give_up = handle.time() + BACKLOG_RETRY_LIMIT;
    let mut pause = Duration::from_millis(1);
    loop {
        let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        sock.set_nonblocking(true)?;
        match sock.connect(&sa) {
            Ok(()) => return Ok(UnixStream::from_std(sock.into())),
            Err(e) if interrupted(&e) => continue,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {
                // Not on Linux, where connecting is immediate; wait for
                // writability and read the outcome where it happens.
                let done = handle.create_future::<()>();
                let fd = sock.as_raw_fd();
                let d = done.clone();
                handle
                    .add_writer(fd, move || {
                        let _ = d.set_result(());
                    })
                    .map_err(|e| io::Error::other(e.to_string()))?;
                let _ = done.await;
                handle.remove_writer(fd);
                if let Some(e) = sock.take_error()? {
                    return Err(e);
                }
                return Ok(UnixStream::from_std(sock.into()));
            }
            // The listen backlog is full: Linux refuses rather than
            // queueing the connect, so try again shortly.
            Err(e) if would_block(&e) && handle.time() < give_up => {
                handle.sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Handle {
    /// Connect to the Unix stream socket at `addr` (a path, or a
    /// [`UnixAddr::abstract_name`]) and run the protocol made by
    /// `factory` on it. Resolves to the transport and a handle to the
    /// protocol once `connection_made` has been called, as
    /// [`create_connection`](Handle::create_connection) does for TCP.
    ///
    /// If the server's listen backlog is full, connecting is retried for
    /// up to 2 seconds before the error is returned.
    ///
    /// ```
    /// use protoloop::{EventLoop, Protocol, UnixAddr, UnixServerOptions};
    /// struct Sink;
    /// impl Protocol for Sink { fn data_received(&mut self, _: &[u8]) {} }
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let h = lp.handle();
    /// let name = UnixAddr::abstract_name(format!("protoloop-doc-{}", std::process::id()));
    /// let server = h.create_unix_server(|| Sink, name.clone(), UnixServerOptions::default()).unwrap();
    /// let (transport, _proto) = lp
    ///     .run_until_complete(h.create_unix_connection(|| Sink, name))
    ///     .unwrap()
    ///     .unwrap();
    /// transport.write(b"hi").unwrap();
    /// transport.close();
    /// server.close();
    /// ```
    pub fn create_unix_connection<P, F>(
        &self,
        factory: F,
        addr: impl Into<UnixAddr>,
    ) -> impl Future<Output = Result<(Transport, ProtocolHandle<P>)>> + 'static
    where
        P: Protocol,
        F: FnOnce() -> P + 'static,
    {
        self.create_unix_connection_with(factory, addr, UnixConnectOptions::default())
    }

    /// [`create_unix_connection`](Handle::create_unix_connection) with
    /// options: with [`UnixConnectOptions::tls`] the connection speaks
    /// TLS and resolves once the handshake completed, as
    /// [`create_connection`](Handle::create_connection) does with
    /// [`ConnectOptions::tls`](crate::ConnectOptions::tls) (see the
    /// [`tls`](crate::tls) module).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use protoloop::{EventLoop, Protocol, UnixAddr, UnixConnectOptions, UnixServerOptions, tls};
    /// use rustls::pki_types::{PrivateKeyDer, ServerName};
    /// struct Sink;
    /// impl Protocol for Sink { fn data_received(&mut self, _: &[u8]) {} }
    ///
    /// let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// let key = PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
    /// let server_config = tls::server_config(vec![c.cert.der().clone()], key).unwrap();
    /// let client_config = tls::client_config([c.cert.der().clone()]).unwrap();
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let h = lp.handle();
    /// let name = UnixAddr::abstract_name(format!("protoloop-doc-tls-{}", std::process::id()));
    /// let server = h
    ///     .create_unix_server(|| Sink, name.clone(),
    ///                         UnixServerOptions::default().tls(Arc::new(server_config)))
    ///     .unwrap();
    /// let opts = UnixConnectOptions::default()
    ///     .tls(Arc::new(client_config), ServerName::try_from("localhost").unwrap());
    /// let (transport, _proto) = lp
    ///     .run_until_complete(h.create_unix_connection_with(|| Sink, name, opts))
    ///     .unwrap()
    ///     .unwrap();
    /// assert!(transport.tls_info().is_some());
    /// transport.close();
    /// server.close();
    /// ```
    pub fn create_unix_connection_with<P, F>(
        &self,
        factory: F,
        addr: impl Into<UnixAddr>,
        opts: UnixConnectOptions,
    ) -> impl Future<Output = Result<(Transport, ProtocolHandle<P>)>> + 'static
    where
        P: Protocol,
        F: FnOnce() -> P + 'static,
    {
        let handle = self.clone();
        let addr = addr.into();
        async move {
            let stream = connect_unix(&handle, &addr)
                .await
                .map_err(|e| Error::io(format!("connecting to {addr}"), e))?;
            if let Some(tls) = &opts.tls {
                return super::tls::connect_stream(&handle, stream, None, factory, tls).await;
            }
            super::tcp::start_plain(&handle, stream, None, factory())
        }
    }

    /// Listen on the Unix socket `addr` (a path, or a
    /// [`UnixAddr::abstract_name`]) and run a protocol made by `factory`
    /// on each accepted connection. See the [module docs](self) for
    /// what happens to a socket file already at the path.
    ///
    /// ```
    /// use protoloop::{EventLoop, Protocol, UnixServerOptions};
    /// struct Sink;
    /// impl Protocol for Sink { fn data_received(&mut self, _: &[u8]) {} }
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let path = std::env::temp_dir().join(format!("protoloop-doc-{}.sock", std::process::id()));
    /// let server = lp
    ///     .handle()
    ///     .create_unix_server(|| Sink, &path, UnixServerOptions::default())
    ///     .unwrap();
    /// assert!(path.exists());
    /// server.close();
    /// assert!(!path.exists());
    /// ```
    pub fn create_unix_server<P, F>(
        &self,
        factory: F,
        addr: impl Into<UnixAddr>,
        opts: UnixServerOptions,
    ) -> Result<Server>
    where
        P: Protocol,
        F: Fn() -> P + 'static,
    {
        let addr = addr.into();
        let (sock, file) = bind_unix(&addr, Type::STREAM, opts.remove_stale)?;
        let listener = (|| {
            sock.listen(opts.backlog)?;
            sock.set_nonblocking(true)?;
            io::Result::Ok(UnixListener::from_std(sock.into()))
        })();
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                if let Some(f) = &file {
                    f.remove();
                }
                return Err(Error::io(format!("listening on {addr}"), e));
            }
        };
        let listener = UnixListenerSock {
            inner: listener,
            file: file.filter(|_| opts.remove_on_close),
        };
        serve(
            self,
            vec![listener],
            factory,
            opts.tls,
            Box::new(|_: &UnixStream| {}),
            opts.idle_timeout,
            opts.start_serving,
        )
    }
}
