//! protoloop: Python asyncio's transports-and-protocols model for Rust.
//!
//! A single-threaded event loop on `mio` ([`EventLoop`]) drives
//! callback-based transports ([`Transport`]) that call user protocols
//! ([`Protocol`]): `connection_made`, `data_received`, `eof_received`,
//! `connection_lost`, `pause_writing` / `resume_writing`, with the contract
//! written down in [`protocol`]. Futures run on the same loop
//! ([`Handle::spawn`], [`SettableFuture`], [`sleep`], [`timeout`]).
//!
//! Pipes and child processes are transports too:
//! [`Handle::connect_read_pipe`] / [`Handle::connect_write_pipe`] run a
//! `Protocol` on a pipe, [`Handle::subprocess_exec`] runs a
//! [`SubprocessProtocol`] on a child's pipes and exit, and
//! [`Handle::create_subprocess_exec`] gives a [`Process`] with asyncio's
//! `communicate()`.
//!
//! Unix-domain sockets have the TCP API: [`Handle::create_unix_connection`]
//! and [`Handle::create_unix_server`] (paths or Linux abstract names, see
//! [`UnixAddr`]; TLS through [`UnixConnectOptions`] and
//! [`UnixServerOptions`]). Datagrams go through a [`DatagramProtocol`] and its
//! [`DatagramTransport`]: [`Handle::create_datagram_endpoint`] for UDP
//! (broadcast, multicast, and ICMP errors attributed to their destination
//! on Linux) and [`Handle::create_unix_datagram_endpoint`].
//!
//! # An echo server
//!
//! ```
//! use protoloop::{EventLoop, Protocol, ServerOptions, Transport};
//!
//! struct Echo(Option<Transport>);
//! impl Protocol for Echo {
//!     fn connection_made(&mut self, t: Transport) { self.0 = Some(t); }
//!     fn data_received(&mut self, data: &[u8]) {
//!         let _ = self.0.as_ref().unwrap().write(data);
//!     }
//! }
//!
//! let lp = EventLoop::new().unwrap();
//! let h = lp.handle();
//! let server = h
//!     .create_server(|| Echo(None), "127.0.0.1:0", ServerOptions::default())
//!     .unwrap();
//! let addr = server.local_addrs()[0];
//! # server.close();
//! # let _ = addr;
//! ```
//!
//! # Layers
//!
//! `reactor` (mio, private) → `time` → [`event_loop`] → [`task`] →
//! [`protocol`] → [`transport`]. See `DESIGN.md` in the project for the map.
//!
//! On top: [`codec`] frames protobuf messages on a connection (the ATM
//! demo's 2-byte length prefix by default) and hands them to a
//! [`MessageHandler`](codec::MessageHandler); [`rpc`] gives a
//! request/reply client whose `call` returns a future
//! ([`RpcClient`](rpc::RpcClient)) and a server-side handler helper
//! ([`Service`](rpc::Service)); [`proto`] holds the demos' generated
//! messages.

#![warn(missing_docs)]

pub mod codec;
pub mod demo;
mod error;
pub mod event_loop;
pub mod proto;
pub mod protocol;
mod reactor;
pub mod rpc;
pub mod task;
pub mod testing;
mod time;
pub mod transport;

/// Internals and model checks for the fuzz targets in `fuzz/` (and the
/// property tests that share the checks); not part of the API.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

pub use error::{Error, Result};
pub use event_loop::{
    DEFAULT_SLOW_CALLBACK, EventLoop, ExceptionContext, ExceptionKind, ExecutorFuture, Handle,
    LoopStats, RemoteHandle,
};
pub use protocol::{
    Buffered, BufferedProtocol, CloseReason, DatagramProtocol, Protocol, SubprocessProtocol,
    TimeoutKind,
};
pub use task::{FutureError, JoinError, JoinHandle, SettableFuture, sleep, spawn, timeout};
pub use time::{CallbackHandle, TimerHandle};
pub use transport::subprocess::{Process, Stdio, SubprocessOptions, SubprocessTransport};
pub use transport::tcp::{Address, ConnectOptions, Server, ServerOptions};
pub use transport::tls;
pub use transport::udp::DatagramOptions;
pub use transport::unix::{UnixAddr, UnixConnectOptions, UnixServerOptions};
pub use transport::unix_datagram::UnixDatagramOptions;
pub use transport::{
    DatagramTransport, ProtocolHandle, SocketAddress, Transport, TransportImpl, TransportStats,
};

/// The README's code blocks, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
