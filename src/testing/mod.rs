//! The test toolkit: deterministic tests of protocols and transports with
//! no sockets and no sleeping, and fixtures for tests that start real
//! programs.
//!
//! | tool | what it gives a test |
//! |---|---|
//! | virtual clock: [`EventLoop::new_virtual`](crate::EventLoop::new_virtual), [`run_until_idle`](crate::EventLoop::run_until_idle), [`advance`](crate::EventLoop::advance), [`advance_to`](crate::EventLoop::advance_to), [`set_auto_advance`](crate::Handle::set_auto_advance), [`set_auto_advance_after`](crate::Handle::set_auto_advance_after) | timers fire when the test moves time, in order, at their own deadlines |
//! | [`pair`] / [`pair_with`] | two protocols connected in memory, with chunking, short writes, back-pressure and injected faults under the test's control |
//! | [`RecordingTransport`] | a transport that records what a protocol wrote and called, for unit tests with no loop |
//! | [`LifecycleChecker`] | wraps protocols and catches every breach of the callback contract |
//! | [`check_splits`] / [`check_protocol_splits`] / [`SplitCheck`] | feeds a byte sequence cut at every point (and one byte at a time) and demands the same outcome |
//! | [`Program`] / [`RunningProgram`] ([`process`]) | starts a real program under test, waits until it is ready (a log line, or a TCP connect), captures its output, and always stops and reaps it |
//! | [`FakeServer`] / [`fake_client`] | fake peers for a program under test, on loopback port 0 |
//!
//! The first five need no sockets and no sleeping; the last two are for
//! tests across processes, as the talk's pytest-asyncio conftest does
//! them (`tests/atm.rs` runs the real `atm` binary this way).
//!
//! Everything here is ordinary library code, always compiled: it has no
//! cost unless used, and users test their own protocols with it.
//!
//! # A whole test
//!
//! ```
//! use protoloop::testing::{Chunking, EndOptions, LifecycleChecker, pair_with};
//! use protoloop::{CloseReason, EventLoop, Protocol, Transport};
//!
//! /// Upper-cases what it receives and closes at EOF.
//! struct Upper(Option<Transport>);
//! impl Protocol for Upper {
//!     fn connection_made(&mut self, t: Transport) { self.0 = Some(t); }
//!     fn data_received(&mut self, d: &[u8]) {
//!         self.0.as_ref().unwrap().write(&d.to_ascii_uppercase()).unwrap();
//!     }
//! }
//! #[derive(Default)]
//! struct Client { got: Vec<u8>, reason: Option<CloseReason> }
//! impl Protocol for Client {
//!     fn connection_made(&mut self, t: Transport) {
//!         t.write(b"hello, world").unwrap();
//!         t.write_eof().unwrap();
//!     }
//!     fn data_received(&mut self, d: &[u8]) { self.got.extend_from_slice(d); }
//!     fn connection_lost(&mut self, r: CloseReason) { self.reason = Some(r); }
//! }
//!
//! let lp = EventLoop::new_virtual().unwrap();
//! let checker = LifecycleChecker::new();
//! // One byte per data_received, both ways.
//! let opts = EndOptions::default().chunking(Chunking::Max(1));
//! let (client, _server) = pair_with(
//!     &lp.handle(),
//!     checker.wrap(Client::default()),
//!     checker.wrap(Upper(None)),
//!     opts,
//! );
//! lp.run_until_idle().unwrap();
//! checker.assert_finished();
//! client.protocol().with(|c| {
//!     assert_eq!(c.got, b"HELLO, WORLD");
//!     assert!(matches!(c.reason, Some(CloseReason::PeerEof)));
//! });
//! ```

mod fake;
mod lifecycle;
mod memory;
pub mod process;
#[cfg(test)]
mod props;
mod recording;
mod split;

pub use fake::{FakeServer, fake_client};
pub use lifecycle::{Checked, Event, LifecycleChecker, Violation};
pub use memory::{Chunking, DEFAULT_CAPACITY, EndOptions, MemoryEnd, PairOptions, pair, pair_with};
pub use process::{Program, ProgramError, Ready, RunningProgram, Stream};
pub use recording::{Call, RecordingTransport};
pub use split::{DEFAULT_THREE_WAY_MAX, SplitCheck, check_protocol_splits, check_splits};
