//! TLS over any stream transport, with rustls: clients and servers from
//! the same `create_connection` / `create_server` calls, and
//! [`start_tls`] to upgrade a plaintext connection (STARTTLS).
//!
//! # Design
//!
//! TLS is a layer, as asyncio's `SSLProtocol` is: a TLS state object sits
//! as the protocol of the TCP (or Unix) transport, drives a rustls session
//! sans-IO (`read_tls` / `process_new_packets` / `reader()` / `writer()` /
//! `write_tls` against byte buffers), and is itself the [`Transport`] of
//! the user's protocol, which sees plaintext and exactly the
//! [`Protocol`] contract and flow control of plain TCP.
//!
//! # Connecting and serving
//!
//! [`ConnectOptions::tls`](crate::ConnectOptions::tls) and
//! [`ServerOptions::tls`](crate::ServerOptions::tls) turn the ordinary
//! calls into TLS ones (over Unix sockets:
//! [`UnixConnectOptions::tls`](crate::UnixConnectOptions::tls) with
//! [`Handle::create_unix_connection_with`](crate::Handle::create_unix_connection_with),
//! and [`UnixServerOptions::tls`](crate::UnixServerOptions::tls)) (chosen over separate `create_tls_*` calls so that
//! every other option, and everything a [`Server`](crate::Server) does,
//! applies unchanged):
//!
//! - `connection_made` is called only once the handshake completed, so
//!   nothing can be written before it.
//! - A client's `create_connection` resolves after `connection_made`; if
//!   the handshake fails it fails with [`Error::TlsHandshake`] carrying
//!   the reason ([`CloseReason::Tls`] with the rustls error for a bad
//!   certificate), and the protocol is never called.
//! - On a server, a connection whose handshake fails is closed (after the
//!   alert is sent) without its protocol ever being called; the server
//!   goes on serving. The failure (a TLS error or the handshake timeout)
//!   goes to the loop's exception handler as one line naming the client's
//!   address and the reason, so an operator can see why clients fail.
//!
//! Under TLS 1.3 a client finishes its handshake before the server has
//! checked the client's certificate, so a server refusing a client
//! certificate shows up on the client as `connection_lost` with
//! [`CloseReason::Tls`] (the server's alert) right after
//! `connection_made`, not as a `create_connection` error.
//!
//! # What the protocol can learn
//!
//! [`Transport::tls_info`] (or `transport.extra("tls")`, a boxed
//! [`TlsInfo`]) gives the peer's certificates, the ALPN protocol, the TLS
//! version, the cipher suite and the SNI name; it is there from
//! `connection_made` on.
//!
//! # Closing
//!
//! - `close()` stops reading, sends what was written, then a
//!   `close_notify`, and waits (reading, discarding data) for the peer's
//!   `close_notify` or EOF before closing the socket:
//!   `connection_lost(LocalClose)`. A peer that never answers is reset
//!   when the shutdown timeout (default 30 s) passes:
//!   `connection_lost(Timeout(TimeoutKind::Shutdown))`.
//! - A `close_notify` from the peer is a clean EOF: `eof_received`. If it
//!   returns `false` the layer answers with its own `close_notify` and
//!   closes (`PeerEof`); `true` keeps our writing side open.
//! - `write_eof()` is a half-close: it sends `close_notify` (and shuts the
//!   socket's writing side) while reading goes on.
//! - An EOF from the socket without a `close_notify` after the handshake
//!   may be a truncation attack: it ends the connection with
//!   [`CloseReason::Io`] of kind `UnexpectedEof`, after the data received
//!   before it was delivered.
//! - A TLS error (bad record, alert from the peer) ends the connection
//!   with [`CloseReason::Tls`] after the plaintext before it was delivered.
//! - A handshake that does not finish within the handshake timeout
//!   (default 60 s) ends with [`CloseReason::Timeout`]`(Handshake)`.
//!
//! # Closing the loop
//!
//! A TLS connection still open when its loop is closed (or dropped) is
//! closed with the socket below it, in whatever state it is: handshaking,
//! open, or closing and waiting for the peer's `close_notify` or for a
//! close deadline. Nothing more is sent (no `close_notify`) and no
//! callback runs, since none runs on a closed loop: the timers are
//! dropped, a task still awaiting the handshake (in `create_connection` or
//! [`TlsUpgrade::handshake`]) is dropped with the loop as any task is, and
//! the protocol is dropped without `connection_lost`. The protocol may
//! keep its [`Transport`]: that cycle is broken then. The same goes for a
//! connection closed or aborted just before its loop, whose
//! `connection_lost` had not run yet.
//!
//! # Reading and writing
//!
//! `pause_reading` stops decrypting too: the socket below is paused (it
//! keeps reading during the handshake and while waiting for the peer's
//! `close_notify`, which need it). `pause_writing` / `resume_writing`
//! follow the plaintext held for the handshake plus the ciphertext queued
//! below, against the same water marks as TCP. [`TransportStats`] counts
//! plaintext bytes.
//!
//! [`TransportStats`]: crate::TransportStats
//!
//! # An echo over TLS
//!
//! ```
//! use std::sync::Arc;
//! use protoloop::{ConnectOptions, EventLoop, Protocol, ServerOptions, Transport, tls};
//! use rustls::pki_types::{PrivateKeyDer, ServerName};
//!
//! struct Echo(Option<Transport>);
//! impl Protocol for Echo {
//!     fn connection_made(&mut self, t: Transport) { self.0 = Some(t); }
//!     fn data_received(&mut self, data: &[u8]) { let _ = self.0.as_ref().unwrap().write(data); }
//! }
//! #[derive(Default)]
//! struct Got(Vec<u8>);
//! impl Protocol for Got {
//!     fn data_received(&mut self, data: &[u8]) { self.0.extend_from_slice(data); }
//! }
//!
//! // A certificate for "localhost", made up for the example.
//! let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
//! let key = PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
//! let server_config = tls::server_config(vec![c.cert.der().clone()], key).unwrap();
//! let client_config = tls::client_config([c.cert.der().clone()]).unwrap();
//!
//! let lp = EventLoop::new().unwrap();
//! let h = lp.handle();
//! let server = h
//!     .create_server(|| Echo(None), "127.0.0.1:0",
//!                    ServerOptions::default().tls(Arc::new(server_config)))
//!     .unwrap();
//! let addr = server.local_addrs()[0];
//! let opts = ConnectOptions::default()
//!     .tls(Arc::new(client_config), ServerName::try_from("localhost").unwrap());
//! let got = lp.run_until_complete(async move {
//!     let (t, proto) = h.create_connection(Got::default, addr, opts).await.unwrap();
//!     let info = t.tls_info().unwrap();
//!     assert_eq!(info.protocol_version, rustls::ProtocolVersion::TLSv1_3);
//!     t.write(b"hello").unwrap();
//!     while proto.with(|p| p.0.len()) < 5 {
//!         h.sleep(std::time::Duration::from_millis(1)).await;
//!     }
//!     t.close();
//!     proto.with(|p| p.0.clone())
//! }).unwrap();
//! assert_eq!(got, b"hello");
//! ```

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::rc::{Rc, Weak};

use crate::error::{Error, Result};
use crate::event_loop::{ExceptionKind, Handle};
use crate::protocol::{CloseReason, Protocol};
use crate::transport::server::{Accepted, Factory};
use crate::transport::stream::StreamSocket;
use crate::transport::{ProtocolHandle, Transport, TransportImpl};

mod api;
mod config;
mod inbound;
mod layer;
mod options;
mod session;
#[cfg(test)]
mod session_tests;

pub use config::{
    certificates_from_pem, client_config, client_config_with_certificate, crypto_provider,
    dangerous_client_config_without_verification, load_certificates, load_private_key,
    private_key_from_pem, server_config, server_config_with_client_auth,
};

pub use options::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT, TlsClient, TlsInfo, TlsServer, TlsSide,
};

use layer::TlsLayer;
pub(crate) use options::TlsTimeouts;
use session::Session;

/// A connection being upgraded by [`start_tls`]: the new TLS transport
/// (usable at once: writes are held until the handshake completes) and
/// the handshake's outcome.
pub struct TlsUpgrade {
    layer: Rc<TlsLayer>,
}

impl fmt::Debug for TlsUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsUpgrade")
            .field("handshake", &self.layer.handshake_result())
            .finish()
    }
}

impl TlsUpgrade {
    /// The TLS transport; use it instead of the old one from now on.
    pub fn transport(&self) -> Transport {
        Transport::new(self.layer.clone())
    }

    /// Resolves when the handshake is over: what it negotiated, or
    /// [`Error::TlsHandshake`] with why it failed. May be awaited any
    /// number of times.
    pub fn handshake(&self) -> impl Future<Output = Result<TlsInfo>> + 'static {
        let layer = self.layer.clone();
        let waiter = layer.handshake_waiter();
        async move {
            let _ = waiter.await;
            layer
                .handshake_result()
                .unwrap_or(Err(Error::TlsHandshake(CloseReason::LocalAbort)))
        }
    }
}

/// Upgrade the plaintext connection `transport` to TLS (STARTTLS), playing
/// `side`, without losing a byte.
///
/// - Reading is paused across the swap; the TLS layer becomes the
///   transport's protocol, and the current protocol now receives the
///   plaintext from the TLS layer. It is **not** called `connection_made`
///   again (as with asyncio's `start_tls`); await
///   [`TlsUpgrade::handshake`] to learn the handshake is done. If the
///   handshake fails, the protocol gets `connection_lost` with the reason.
/// - `already_received` is what the protocol received but did not consume
///   before the upgrade (for example the start of a ClientHello pipelined
///   behind the STARTTLS command in the same read): it is fed to TLS
///   first. Call `start_tls` from inside `data_received` and pass the
///   rest of that buffer; the next read goes to TLS.
/// - Writes on the returned transport before the handshake completes are
///   held and sent after it, in order. Plaintext written on the old
///   transport before this call goes out before the handshake. Do not
///   write on the old transport afterwards: it would corrupt the stream.
///
/// Fails with [`Error::Closed`] if the transport is closing,
/// [`Error::LoopClosed`] outside a running loop, [`Error::Tls`] if the
/// rustls session cannot be made.
///
/// ```
/// use std::sync::Arc;
/// use protoloop::{ConnectOptions, EventLoop, Protocol, ServerOptions, Transport, tls};
/// use rustls::pki_types::{PrivateKeyDer, ServerName};
///
/// let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// let key = PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
/// let server_tls = tls::TlsServer::new(Arc::new(
///     tls::server_config(vec![c.cert.der().clone()], key).unwrap()));
/// let client_tls = tls::TlsClient::new(
///     Arc::new(tls::client_config([c.cert.der().clone()]).unwrap()),
///     ServerName::try_from("localhost").unwrap());
///
/// /// Plaintext until "STARTTLS\n", then TLS; echoes what it gets over TLS.
/// struct Upgrader { t: Option<Transport>, tls: tls::TlsServer, upgraded: bool }
/// impl Protocol for Upgrader {
///     fn connection_made(&mut self, t: Transport) { self.t = Some(t); }
///     fn data_received(&mut self, data: &[u8]) {
///         if self.upgraded {
///             let _ = self.t.as_ref().unwrap().write(data);
///         } else if let Some(rest) = data.strip_prefix(b"STARTTLS\n") {
///             let up = tls::start_tls(self.t.as_ref().unwrap(), self.tls.clone(), rest).unwrap();
///             self.t = Some(up.transport());
///             self.upgraded = true;
///         }
///     }
/// }
/// #[derive(Default)]
/// struct Got(Vec<u8>);
/// impl Protocol for Got {
///     fn data_received(&mut self, d: &[u8]) { self.0.extend_from_slice(d); }
/// }
///
/// let lp = EventLoop::new().unwrap();
/// let h = lp.handle();
/// let server = h.create_server(
///     move || Upgrader { t: None, tls: server_tls.clone(), upgraded: false },
///     "127.0.0.1:0", ServerOptions::default()).unwrap();
/// let addr = server.local_addrs()[0];
/// let got = lp.run_until_complete(async move {
///     let (plain, proto) = h.create_connection(Got::default, addr, ConnectOptions::default())
///         .await.unwrap();
///     plain.write(b"STARTTLS\n").unwrap();
///     let up = tls::start_tls(&plain, client_tls, b"").unwrap();
///     up.transport().write(b"secret").unwrap(); // held until the handshake is done
///     up.handshake().await.unwrap();
///     while proto.with(|p| p.0.len()) < 6 {
///         h.sleep(std::time::Duration::from_millis(1)).await;
///     }
///     up.transport().close();
///     proto.with(|p| p.0.clone())
/// }).unwrap();
/// assert_eq!(got, b"secret");
/// ```
pub fn start_tls(
    transport: &Transport,
    side: impl Into<TlsSide>,
    already_received: &[u8],
) -> Result<TlsUpgrade> {
    let protocol = transport.get_protocol().ok_or(Error::Closed)?;
    upgrade(transport, side.into(), already_received, protocol, false)
}

/// Like [`start_tls`], but hand the connection to a new `protocol`, which
/// gets `connection_made` with the TLS transport once the handshake
/// completes (and nothing at all if it fails; the old protocol is not
/// called again either way).
pub fn start_tls_with_protocol<P: Protocol>(
    transport: &Transport,
    side: impl Into<TlsSide>,
    already_received: &[u8],
    protocol: Rc<RefCell<P>>,
) -> Result<TlsUpgrade> {
    upgrade(transport, side.into(), already_received, protocol, true)
}

fn upgrade(
    transport: &Transport,
    side: TlsSide,
    already_received: &[u8],
    protocol: Rc<RefCell<dyn Protocol>>,
    connect_on_handshake: bool,
) -> Result<TlsUpgrade> {
    if transport.is_closing() {
        return Err(Error::Closed);
    }
    let handle = Handle::try_current().ok_or(Error::LoopClosed)?;
    let session = Session::new(&side).map_err(Error::Tls)?;
    let layer = TlsLayer::new(
        &handle,
        session,
        protocol,
        connect_on_handshake,
        side.timeouts(),
    );
    layer.begin_swap();
    transport.pause_reading();
    transport.set_protocol_dyn(layer.lower_protocol());
    layer.attach(transport.clone());
    let rest = already_received.to_vec();
    let l = layer.clone();
    handle.call_soon(move || l.end_swap(&rest));
    Ok(TlsUpgrade { layer })
}

/// `create_connection` (TCP or Unix) with TLS: run the layer on the
/// connected stream and resolve once the handshake completed (and
/// `connection_made` ran). `token`: the reactor token the stream is
/// already registered under, if it is (TCP's connect waits on one).
pub(crate) async fn connect_stream<S, P, F>(
    handle: &Handle,
    stream: S,
    token: Option<mio::Token>,
    factory: F,
    tls: &TlsClient,
) -> Result<(Transport, ProtocolHandle<P>)>
where
    S: StreamSocket,
    P: Protocol,
    F: FnOnce() -> P + 'static,
{
    let session = match Session::new(&TlsSide::Client(tls.clone())) {
        Ok(s) => s,
        Err(e) => {
            if let Some(token) = token {
                let mut stream = stream;
                handle.inner.reactor.remove(&mut stream, token);
            }
            return Err(Error::Tls(e));
        }
    };
    let proto = Rc::new(RefCell::new(factory()));
    let layer = TlsLayer::new(handle, session, proto.clone(), true, tls.timeouts);
    super::tcp::start_stream(handle, stream, token, layer.lower_protocol())?;
    let waiter = layer.handshake_waiter();
    let _ = waiter.await;
    match layer.handshake_result() {
        Some(Ok(_)) => Ok((Transport::new(layer), ProtocolHandle::new(proto))),
        Some(Err(e)) => Err(e),
        None => Err(Error::TlsHandshake(CloseReason::LocalAbort)),
    }
}

/// `create_server` with TLS: each accepted stream gets a TLS layer in
/// front of a protocol from `factory`.
pub(crate) fn server_factory<P, F>(handle: &Handle, factory: F, tls: TlsServer) -> Factory
where
    P: Protocol,
    F: Fn() -> P + 'static,
{
    let handle = handle.clone();
    Box::new(move || {
        let user: Rc<RefCell<dyn Protocol>> = Rc::new(RefCell::new(factory()));
        match Session::new(&TlsSide::Server(tls.clone())) {
            Ok(session) => {
                let layer = TlsLayer::new(&handle, session, user, true, tls.timeouts);
                let front: Weak<dyn TransportImpl> = Rc::downgrade(&layer) as Weak<TlsLayer>;
                Accepted {
                    protocol: layer.lower_protocol(),
                    front: Some(front),
                }
            }
            Err(e) => {
                handle.report(
                    ExceptionKind::Error,
                    format!("cannot start a TLS session for an accepted connection: {e}"),
                );
                Accepted::plain(Rc::new(RefCell::new(Refuse)))
            }
        }
    })
}

/// Closes a connection whose TLS session could not be made.
struct Refuse;

impl Protocol for Refuse {
    fn connection_made(&mut self, transport: Transport) {
        transport.abort();
    }
    fn data_received(&mut self, _data: &[u8]) {}
}
