//! The `atm` program as a child process, started with the test toolkit's
//! [`Program`] fixture (through protoloop's subprocess transport): the
//! demo ([`tour`](super::tour)) and the integration tests run the real
//! binary this way.
//!
//! The ATM prints [`LISTENING`] and its address on stdout once its
//! listener is bound (after it reached the bank), so from that line on it
//! accepts connections; [`atm`] describes a start that waits for that
//! line. The [`RunningProgram`](crate::testing::RunningProgram) it gives
//! is stopped (and reaped) when dropped.

use std::ffi::OsStr;
use std::net::SocketAddr;

use crate::testing::{Program, Ready, Stream};

/// What the `atm` program prints on stdout, followed by the address, once
/// it accepts customers: `atm: listening on 127.0.0.1:33333`.
pub const LISTENING: &str = "atm: listening on ";

/// The address in a [`LISTENING`] line.
///
/// ```
/// use protoloop::demo::child::listening_addr;
/// let addr = listening_addr("atm: listening on 127.0.0.1:4242\n").unwrap();
/// assert_eq!(addr.port(), 4242);
/// assert!(listening_addr("atm: hello").is_none());
/// ```
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    line.trim_end().strip_prefix(LISTENING)?.parse().ok()
}

/// The `atm` program at `program` with `args`, ready once it prints its
/// [`LISTENING`] line (other lines before it are skipped); stderr
/// captured, 10 s to get ready, 5 s to stop after `SIGTERM` (change any
/// of it on the [`Program`]). The started program's
/// [`addr`](crate::testing::RunningProgram::addr) is where it listens.
///
/// ```
/// use std::time::Duration;
/// use protoloop::EventLoop;
/// use protoloop::demo::child::atm;
///
/// // A stand-in that prints what the ATM prints, then waits.
/// let script = "echo 'atm: listening on 127.0.0.1:4242'; exec sleep 30";
/// let lp = EventLoop::new().unwrap();
/// let h = lp.handle();
/// let port = lp.run_until_complete(async move {
///     let p = atm("sh", ["-c", script]).start(&h).await.unwrap();
///     let port = p.addr().unwrap().port();
///     p.stop().await.unwrap();
///     port
/// }).unwrap();
/// assert_eq!(port, 4242);
/// ```
pub fn atm<I, S>(program: impl AsRef<OsStr>, args: I) -> Program
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Program::new(program)
        .args(args)
        .ready(Ready::line(Stream::Stdout, LISTENING))
}
