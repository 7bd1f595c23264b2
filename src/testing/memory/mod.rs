//! An in-memory stream connection between two protocols: [`pair`] and
//! [`pair_with`].
//!
//! Each end is a real [`TransportImpl`] that follows the callback contract
//! exactly as the socket transport does (callbacks scheduled on the loop,
//! never re-entrant; `pause_writing`/`resume_writing` at the water marks;
//! half-close; close flushes; abort resets the peer), so a protocol tested
//! here behaves the same over TCP. What a socket leaves to chance is under
//! the test's control:
//!
//! - **chunking**: how many bytes each `data_received` gets
//!   ([`Chunking`]);
//! - **short writes**: at most `max_write` bytes go to the "kernel" per
//!   write; the rest is buffered and flushed on a later iteration;
//! - **capacity**: how many bytes an end holds unread before its peer's
//!   writes start to back up (a paused reader makes the writer pause);
//! - **faults**: [`MemoryEnd::inject_error`], [`MemoryEnd::reset`],
//!   [`MemoryEnd::fail_next_write`].
//!
//! # How the two ends affect each other
//!
//! - A graceful close (or `write_eof`) sends the peer EOF after the data
//!   already sent; `abort`, a close deadline and a protocol panic send it a
//!   reset, which arrives after the data it has queued.
//! - Writing to an end that is gone makes the writer's connection reset
//!   (its pending writes fail at once; reading ends after the data already
//!   queued).
//! - An injected error ends only that end; its peer finds out when it
//!   writes.
//!
//! There are no addresses: `peer_addr` and `local_addr` are `None`.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::rc::Rc;

use crate::event_loop::Handle;
use crate::protocol::Protocol;
use crate::transport::{ProtocolHandle, Transport};

mod transport;

use transport::MemoryTransport;

/// Default [`EndOptions::capacity`]: 256 KiB, about what a loopback socket
/// pair buffers.
pub const DEFAULT_CAPACITY: usize = 256 * 1024;

/// How the bytes waiting at an end are cut into `data_received` calls.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Chunking {
    /// Everything that has arrived, in one call.
    All,
    /// At most this many bytes per call (`Max(1)`: one byte at a time).
    Max(usize),
    /// Sizes taken in turn from the list, starting over at its end.
    Cycle(Vec<usize>),
    /// Sizes from 1 to `max`, from a small seeded generator: the same seed
    /// cuts the same stream the same way.
    Random {
        /// The generator's seed.
        seed: u64,
        /// The largest size.
        max: usize,
    },
}

impl Chunking {
    /// # Panics
    ///
    /// On a zero size anywhere or an empty cycle.
    fn validate(&self) {
        let ok = match self {
            Chunking::All => true,
            Chunking::Max(n) => *n > 0,
            Chunking::Cycle(v) => !v.is_empty() && v.iter().all(|&n| n > 0),
            Chunking::Random { max, .. } => *max > 0,
        };
        assert!(
            ok,
            "{self:?}: chunk sizes must be at least 1 and a cycle must not be empty"
        );
    }
}

/// Cuts chunks per a [`Chunking`].
pub(crate) struct Chunker {
    how: Chunking,
    pos: usize,
    rng: u64,
}

impl Chunker {
    pub(crate) fn new(how: Chunking) -> Chunker {
        how.validate();
        let rng = match &how {
            // xorshift must not start at 0.
            Chunking::Random { seed, .. } => seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            _ => 1,
        };
        Chunker { how, pos: 0, rng }
    }

    /// The next chunk size, given `avail` (> 0) bytes waiting.
    pub(crate) fn next(&mut self, avail: usize) -> usize {
        let n = match &self.how {
            Chunking::All => avail,
            Chunking::Max(n) => *n,
            Chunking::Cycle(v) => {
                let n = v[self.pos % v.len()];
                self.pos += 1;
                n
            }
            Chunking::Random { max, .. } => {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                1 + (self.rng % *max as u64) as usize
            }
        };
        n.clamp(1, avail)
    }
}

/// Settings of one end of a [`pair_with`].
///
/// ```
/// use protoloop::testing::{Chunking, EndOptions};
/// let opts = EndOptions::default()
///     .chunking(Chunking::Max(1))
///     .max_write(Some(100))
///     .capacity(4096);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
pub struct EndOptions {
    pub(crate) chunking: Chunking,
    pub(crate) max_write: Option<usize>,
    pub(crate) capacity: usize,
}

impl Default for EndOptions {
    fn default() -> Self {
        EndOptions {
            chunking: Chunking::All,
            max_write: None,
            capacity: DEFAULT_CAPACITY,
        }
    }
}

impl EndOptions {
    /// How data arriving at this end is cut into `data_received` calls
    /// (default [`Chunking::All`]).
    ///
    /// # Panics
    ///
    /// On a zero chunk size or an empty cycle.
    pub fn chunking(mut self, how: Chunking) -> Self {
        how.validate();
        self.chunking = how;
        self
    }

    /// At most this many bytes leave this end per kernel write (default
    /// `None`: no limit). What a write does not get out is buffered.
    ///
    /// # Panics
    ///
    /// On `Some(0)`.
    pub fn max_write(mut self, n: Option<usize>) -> Self {
        assert!(n != Some(0), "max_write must be at least 1");
        self.max_write = n;
        self
    }

    /// How many bytes this end holds unread before its peer's writes back
    /// up (default [`DEFAULT_CAPACITY`]).
    ///
    /// # Panics
    ///
    /// On 0.
    pub fn capacity(mut self, n: usize) -> Self {
        assert!(n > 0, "capacity must be at least 1");
        self.capacity = n;
        self
    }
}

/// Settings of both ends of a [`pair_with`]; an [`EndOptions`] converts
/// into one that applies to both.
#[derive(Debug, Clone, Default)]
pub struct PairOptions {
    /// The first end's settings.
    pub a: EndOptions,
    /// The second end's settings.
    pub b: EndOptions,
}

impl From<EndOptions> for PairOptions {
    fn from(both: EndOptions) -> Self {
        PairOptions {
            a: both.clone(),
            b: both,
        }
    }
}

/// One end of an in-memory connection: its transport, its protocol, and
/// the knobs to steer and break it.
pub struct MemoryEnd<P> {
    inner: Rc<MemoryTransport>,
    transport: Transport,
    protocol: ProtocolHandle<P>,
}

impl<P> fmt::Debug for MemoryEnd<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryEnd")
            .field("lost", &self.inner.is_lost())
            .field("unread", &self.inner.unread())
            .finish()
    }
}

impl<P> MemoryEnd<P> {
    /// This end's transport (the handle its protocol got).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// This end's protocol.
    pub fn protocol(&self) -> &ProtocolHandle<P> {
        &self.protocol
    }

    /// Change how data arriving at this end is cut, from the next chunk.
    ///
    /// # Panics
    ///
    /// On a zero chunk size or an empty cycle.
    pub fn set_chunking(&self, how: Chunking) {
        let chunker = Chunker::new(how);
        self.inner.set_options(|c, _, _| *c = chunker);
    }

    /// Change the per-write limit of this end (`None`: no limit).
    ///
    /// # Panics
    ///
    /// On `Some(0)`.
    pub fn set_max_write(&self, n: Option<usize>) {
        assert!(n != Some(0), "max_write must be at least 1");
        self.inner.set_options(|_, m, _| *m = n);
    }

    /// Change how many bytes this end holds unread before its peer backs
    /// up.
    ///
    /// # Panics
    ///
    /// On 0.
    pub fn set_capacity(&self, n: usize) {
        assert!(n > 0, "capacity must be at least 1");
        self.inner.set_options(|_, _, c| *c = n);
    }

    /// Make this end's next kernel write fail with `err`: inside a
    /// `write` call the call returns the error; either way the connection
    /// is lost with `CloseReason::from_io(err)`.
    pub fn fail_next_write(&self, err: io::Error) {
        self.inner.fail_next_write(err);
    }

    /// This end's socket fails with `err` now: its protocol gets
    /// `connection_lost(CloseReason::from_io(err))` (`PeerReset` for a
    /// reset, `Io` otherwise) on the loop. The peer is not told.
    pub fn inject_error(&self, err: io::Error) {
        self.inner.inject_error(err);
    }

    /// This end's connection is reset: [`inject_error`](Self::inject_error)
    /// with `ConnectionReset`.
    pub fn reset(&self) {
        self.inject_error(io::ErrorKind::ConnectionReset.into());
    }

    /// Bytes that arrived at this end and were not handed to its protocol
    /// yet (held back by paused reading, or not yet delivered).
    pub fn unread(&self) -> usize {
        self.inner.unread()
    }

    /// `true` once this end's connection is over (`connection_lost` is
    /// scheduled or done).
    pub fn is_lost(&self) -> bool {
        self.inner.is_lost()
    }
}

/// Connect protocols `a` and `b` in memory on `handle`'s loop, with
/// default settings; see [`pair_with`].
///
/// ```
/// use protoloop::testing::pair;
/// use protoloop::{EventLoop, Protocol, Transport};
///
/// struct Echo(Option<Transport>);
/// impl Protocol for Echo {
///     fn connection_made(&mut self, t: Transport) { self.0 = Some(t); }
///     fn data_received(&mut self, d: &[u8]) { self.0.as_ref().unwrap().write(d).unwrap(); }
/// }
/// struct Client(Vec<u8>);
/// impl Protocol for Client {
///     fn connection_made(&mut self, t: Transport) { t.write(b"ping").unwrap(); }
///     fn data_received(&mut self, d: &[u8]) { self.0.extend_from_slice(d); }
/// }
///
/// let lp = EventLoop::new_virtual().unwrap();
/// let (client, _server) = pair(&lp.handle(), Client(Vec::new()), Echo(None));
/// lp.run_until_idle().unwrap();
/// assert_eq!(client.protocol().with(|c| c.0.clone()), b"ping");
/// ```
pub fn pair<A: Protocol, B: Protocol>(handle: &Handle, a: A, b: B) -> (MemoryEnd<A>, MemoryEnd<B>) {
    pair_with(handle, a, b, PairOptions::default())
}

/// Connect protocols `a` and `b` in memory on `handle`'s loop.
/// `connection_made` is called on `a`, then on `b`, before this returns;
/// everything after happens as the loop runs (a virtual-clock loop and
/// [`EventLoop::run_until_idle`](crate::EventLoop::run_until_idle) suit
/// it best).
///
/// ```
/// use protoloop::testing::{Chunking, EndOptions, pair_with};
/// use protoloop::{EventLoop, Protocol, Transport};
///
/// struct Send(&'static [u8]);
/// impl Protocol for Send {
///     fn connection_made(&mut self, t: Transport) { t.write(self.0).unwrap(); t.close(); }
///     fn data_received(&mut self, _: &[u8]) {}
/// }
/// struct Sizes(Vec<usize>);
/// impl Protocol for Sizes {
///     fn data_received(&mut self, d: &[u8]) { self.0.push(d.len()); }
/// }
///
/// let lp = EventLoop::new_virtual().unwrap();
/// let opts = EndOptions::default().chunking(Chunking::Cycle(vec![1, 3]));
/// let (_a, b) = pair_with(&lp.handle(), Send(b"abcdefg"), Sizes(Vec::new()), opts);
/// lp.run_until_idle().unwrap();
/// assert_eq!(b.protocol().with(|p| p.0.clone()), [1, 3, 1, 2]);
/// ```
pub fn pair_with<A: Protocol, B: Protocol>(
    handle: &Handle,
    a: A,
    b: B,
    opts: impl Into<PairOptions>,
) -> (MemoryEnd<A>, MemoryEnd<B>) {
    let opts = opts.into();
    let pa = Rc::new(RefCell::new(a));
    let pb = Rc::new(RefCell::new(b));
    let ta = MemoryTransport::new(handle, pa.clone(), &opts.a, "a");
    let tb = MemoryTransport::new(handle, pb.clone(), &opts.b, "b");
    MemoryTransport::link(&ta, &tb);
    ta.start();
    tb.start();
    (end(ta, pa), end(tb, pb))
}

fn end<P>(inner: Rc<MemoryTransport>, protocol: Rc<RefCell<P>>) -> MemoryEnd<P> {
    MemoryEnd {
        transport: Transport::new(inner.clone()),
        inner,
        protocol: ProtocolHandle::new(protocol),
    }
}
