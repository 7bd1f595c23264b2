//! Pipes as transports: [`Handle::connect_read_pipe`] and
//! [`Handle::connect_write_pipe`] run a [`Protocol`] on one end of a pipe.
//!
//! Any pipe-like file descriptor works: a `std::process` child's
//! `ChildStdout` / `ChildStderr` / `ChildStdin`, either end of an OS pipe
//! (`rustix::pipe::pipe`, `std::io::pipe`), a FIFO, a terminal, a socket,
//! or a duplicate of the process's own stdin/stdout. Regular files and
//! `/dev/null` cannot be watched for readiness (epoll refuses them): those
//! are a clear error. The descriptor is made non-blocking; for a duplicate
//! of stdin or stdout that flag is shared with every process using the
//! same open file, as in asyncio.
//!
//! # The read end
//!
//! The callbacks are the stream contract: `connection_made`, then
//! `data_received` any number of times, then at the end of input
//! `eof_received` and `connection_lost(CloseReason::PeerEof)`. A read pipe
//! has no writing side to keep open, so it closes after EOF whatever
//! `eof_received` returns (asyncio does the same). `pause_reading` /
//! `resume_reading` work as on TCP. `write` fails with
//! [`Error::Unsupported`], `write_eof` with
//! [`Error::EofNotSupported`]. A
//! `BufferedProtocol` is fed through `data_received` (one copy).
//!
//! # The write end
//!
//! Writes, the write buffer and flow control are those of TCP:
//! `pause_writing` above the high-water mark (64 KiB), `resume_writing` at
//! the low-water mark (16 KiB), always paired. `write_eof` and `close` are
//! the same thing for a pipe: flush what was written, then close the
//! descriptor, which is the reader's EOF; `connection_lost(LocalClose)`
//! follows. `abort` drops the buffer and closes at once (`LocalAbort`).
//! When the reader goes away, `connection_lost` comes with
//! `CloseReason::PeerEof` if nothing was pending, or
//! `CloseReason::PeerReset` (broken pipe) if written data was lost. Writes
//! after `close` fail with [`Error::Closed`].
//! `data_received` is never called on a write pipe.
//!
//! # Closing the loop
//!
//! A pipe still open when its loop is closed (or dropped) is closed
//! there and then, as a socket is: the descriptor is closed, so a reader
//! at the other end sees EOF and a writer a broken pipe; whatever the
//! write end still had buffered is dropped, with its close deadline if one
//! was armed; and the protocol is dropped without `connection_lost`, since
//! no callback runs on a closed loop. The protocol may keep its
//! [`Transport`]: that cycle is broken then.
//!
//! On either end, `Transport::extra("fd")` gives the raw descriptor (an
//! `i32`) while the transport is open.
//!
//! Rust programs ignore `SIGPIPE`, so writing to a pipe without a reader
//! gives `EPIPE` rather than killing the process. A program that restores
//! the default `SIGPIPE` disposition must not use write pipes.
//!
//! ```
//! use std::io::Write;
//! use protoloop::{CloseReason, EventLoop, Protocol, SettableFuture};
//!
//! /// Collects everything, and says when the writer is done.
//! struct Collect {
//!     got: Vec<u8>,
//!     done: SettableFuture<Vec<u8>>,
//! }
//! impl Protocol for Collect {
//!     fn data_received(&mut self, data: &[u8]) {
//!         self.got.extend_from_slice(data);
//!     }
//!     fn connection_lost(&mut self, _: CloseReason) {
//!         let _ = self.done.set_result(std::mem::take(&mut self.got));
//!     }
//! }
//!
//! let lp = EventLoop::new().unwrap();
//! let h = lp.handle();
//! let (r, w) = rustix::pipe::pipe().unwrap();
//! let done = h.create_future();
//! let d = done.clone();
//! h.connect_read_pipe(move || Collect { got: Vec::new(), done: d }, r).unwrap();
//! std::fs::File::from(w).write_all(b"hello").unwrap(); // then EOF
//! let got = lp.run_until_complete(done).unwrap().unwrap();
//! assert_eq!(got, b"hello");
//! ```

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use mio::event::Source;
use mio::{Interest, Token};

use super::invoke::{self, NotCalled};
use super::{ProtocolHandle, Transport, TransportImpl};
use crate::error::{Error, Result};
use crate::event_loop::Handle;
use crate::protocol::{CloseReason, Protocol};
use crate::reactor::IoHandler;

mod read;
mod write;

pub(crate) use read::ReadPipe;
pub(crate) use write::WritePipe;

impl Handle {
    /// Run a protocol made by `factory` on the read end of a pipe
    /// (asyncio's `connect_read_pipe`). `connection_made` has been called
    /// when this returns; data arrives as the loop runs. See the
    /// [module docs](crate::transport::pipe) for what works on a pipe.
    ///
    /// Fails if the descriptor cannot be watched (a regular file,
    /// `/dev/null`) or the loop is closed; the descriptor is closed then.
    pub fn connect_read_pipe<P, F>(
        &self,
        factory: F,
        pipe: impl Into<OwnedFd>,
    ) -> Result<(Transport, ProtocolHandle<P>)>
    where
        P: Protocol,
        F: FnOnce() -> P,
    {
        self.connect_pipe_end(factory, pipe.into(), ReadPipe::open)
    }

    /// Run a protocol made by `factory` on the write end of a pipe
    /// (asyncio's `connect_write_pipe`). `connection_made` has been called
    /// when this returns. See the [module docs](crate::transport::pipe).
    ///
    /// ```
    /// use protoloop::{EventLoop, Protocol};
    ///
    /// struct Quiet;
    /// impl Protocol for Quiet {
    ///     fn data_received(&mut self, _: &[u8]) {}
    /// }
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let (r, w) = rustix::pipe::pipe().unwrap();
    /// let (t, _p) = lp.handle().connect_write_pipe(|| Quiet, w).unwrap();
    /// t.write(b"to the reader").unwrap();
    /// t.close(); // flush, then EOF
    /// # drop(r);
    /// ```
    pub fn connect_write_pipe<P, F>(
        &self,
        factory: F,
        pipe: impl Into<OwnedFd>,
    ) -> Result<(Transport, ProtocolHandle<P>)>
    where
        P: Protocol,
        F: FnOnce() -> P,
    {
        self.connect_pipe_end(factory, pipe.into(), WritePipe::open)
    }

    /// Both `connect_*_pipe`: `open` makes the end's transport, which is
    /// then started. `fd` is closed if the loop is closed.
    fn connect_pipe_end<P, F, T>(
        &self,
        factory: F,
        fd: OwnedFd,
        open: OpenEnd<T>,
    ) -> Result<(Transport, ProtocolHandle<P>)>
    where
        P: Protocol,
        F: FnOnce() -> P,
        T: PipeTransport,
    {
        if self.is_closed() {
            return Err(Error::LoopClosed);
        }
        let proto = Rc::new(RefCell::new(factory()));
        let t = open(self, fd, proto.clone())?;
        t.start();
        Ok((Transport::new(t), ProtocolHandle::new(proto)))
    }
}

/// `ReadPipe::open` or `WritePipe::open`.
type OpenEnd<T> = fn(&Handle, OwnedFd, Rc<RefCell<dyn Protocol>>) -> Result<Rc<T>>;

/// Register a pipe end with the reactor under a fresh token.
fn register<S: Source>(
    handle: &Handle,
    src: &mut S,
    handler: Rc<dyn IoHandler>,
    interest: Interest,
) -> Result<Token> {
    let reactor = &handle.inner.reactor;
    let token = reactor.insert(handler);
    match reactor.register(src, token, interest) {
        Ok(()) => Ok(token),
        Err(e) => {
            reactor.forget(token);
            // epoll answers EPERM for files that are always ready.
            let context = if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) {
                "watching the pipe: this kind of file cannot be polled \
                 (regular files and /dev/null cannot; use a pipe, FIFO, socket or terminal)"
            } else {
                "watching the pipe"
            };
            Err(Error::io(context, e))
        }
    }
}

/// What the two pipe transports hold alike: the loop, the descriptor and
/// its registration, and the protocol.
pub(crate) struct PipeEnd<E> {
    handle: Handle,
    fd: RawFd,
    token: Cell<Option<Token>>,
    pipe: RefCell<Option<E>>,
    protocol: ProtoSlot,
}

impl<E: Source> PipeEnd<E> {
    /// Release the descriptor: deregister and close it. Idempotent.
    fn release(&self) {
        let pipe = self.pipe.borrow_mut().take();
        if let Some(mut pipe) = pipe {
            if let Some(token) = self.token.take() {
                self.handle.inner.reactor.remove(&mut pipe, token);
            }
            drop(pipe);
        }
    }

    /// The loop closed: close the descriptor and drop the protocol, which
    /// usually keeps this transport's handle. The reactor has already
    /// dropped every registration, and a closed descriptor leaves epoll by
    /// itself, so there is nothing to deregister.
    fn loop_closed(&self) {
        self.token.take();
        let pipe = self.pipe.borrow_mut().take();
        drop(pipe);
        self.protocol.clear();
    }

    /// `set_protocol`: refused once the transport is gone and its protocol
    /// dropped, so that no callback can reach the new one.
    fn set_protocol(&self, lost: bool, protocol: Rc<RefCell<dyn Protocol>>) {
        if !lost || self.protocol.get().is_some() {
            self.protocol.set(protocol);
        }
    }

    /// `extra("fd")`, while the descriptor is open.
    fn extra(&self, lost: bool, key: &str) -> Option<Box<dyn std::any::Any>> {
        match key {
            "fd" if !lost => Some(Box::new(self.fd)),
            _ => None,
        }
    }
}

/// A transport on one end of a pipe: what `ReadPipe` and `WritePipe`
/// share, written once.
pub(crate) trait PipeTransport: TransportImpl + Sized + 'static {
    /// mio's type for this end.
    type End: Source;

    fn end(&self) -> &PipeEnd<Self::End>;

    fn me(&self) -> &Weak<Self>;

    /// Release the descriptor now and schedule `connection_lost(reason)`.
    /// Idempotent.
    fn finish(&self, reason: CloseReason);

    fn rc(&self) -> Rc<Self> {
        self.me()
            .upgrade()
            .expect("transport is alive while its methods run")
    }

    /// Call the protocol; a panic ends the transport. `false` if the call
    /// did not complete.
    fn call(&self, what: &str, f: impl FnOnce(&mut dyn Protocol)) -> bool {
        let end = self.end();
        match end.protocol.call(&end.handle, what, f) {
            Ok(called) => called,
            Err(msg) => {
                self.finish(CloseReason::Panic(msg));
                false
            }
        }
    }

    /// Call `connection_made`.
    fn start(self: &Rc<Self>) {
        let t = Transport::new(self.clone());
        self.call("connection_made", |p| p.connection_made(t));
    }

    /// The end of `finish`, once its own state says lost: release the
    /// descriptor and schedule `connection_lost`, after which the protocol
    /// is dropped.
    fn release_and_report(&self, reason: CloseReason) {
        self.end().release();
        invoke::schedule_lost(
            &self.end().handle,
            self.rc(),
            move |me| {
                me.call("connection_lost", |p| p.connection_lost(reason));
            },
            |me| me.end().protocol.clear(),
        );
    }
}

/// Make `fd` non-blocking as mio's `E` and register it for `interest`,
/// with the transport `build` makes as its handler; the protocol is not
/// called until [`PipeTransport::start`].
fn open_end<T, E>(
    handle: &Handle,
    fd: OwnedFd,
    protocol: Rc<RefCell<dyn Protocol>>,
    interest: Interest,
    build: impl FnOnce(PipeEnd<E>, Weak<T>) -> T,
) -> Result<Rc<T>>
where
    T: PipeTransport<End = E> + IoHandler,
    E: Source + From<OwnedFd> + NonBlocking,
{
    let raw = fd.as_raw_fd();
    let mut pipe = E::from(fd);
    pipe.set_nonblocking(true).map_err(nonblocking_error)?;
    let end = PipeEnd {
        handle: handle.clone(),
        fd: raw,
        token: Cell::new(None),
        pipe: RefCell::new(None),
        protocol: ProtoSlot::new(protocol),
    };
    let t = Rc::new_cyclic(|me| build(end, me.clone()));
    let token = register(handle, &mut pipe, t.clone(), interest)?;
    t.end().token.set(Some(token));
    *t.end().pipe.borrow_mut() = Some(pipe);
    Ok(t)
}

/// mio's two pipe ends, which have the same inherent `set_nonblocking`.
trait NonBlocking {
    fn set_nonblocking(&self, on: bool) -> io::Result<()>;
}

impl NonBlocking for mio::unix::pipe::Receiver {
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        mio::unix::pipe::Receiver::set_nonblocking(self, on)
    }
}

impl NonBlocking for mio::unix::pipe::Sender {
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        mio::unix::pipe::Sender::set_nonblocking(self, on)
    }
}

fn nonblocking_error(e: io::Error) -> Error {
    Error::io("making the pipe non-blocking", e)
}

/// The protocol of one pipe, borrowed only for one callback at a time.
pub(super) struct ProtoSlot(RefCell<Option<Rc<RefCell<dyn Protocol>>>>);

impl ProtoSlot {
    fn new(p: Rc<RefCell<dyn Protocol>>) -> ProtoSlot {
        ProtoSlot(RefCell::new(Some(p)))
    }

    fn get(&self) -> Option<Rc<RefCell<dyn Protocol>>> {
        self.0.borrow().clone()
    }

    fn set(&self, p: Rc<RefCell<dyn Protocol>>) {
        *self.0.borrow_mut() = Some(p);
    }

    /// Forget the protocol (after `connection_lost`), breaking the
    /// transport <-> protocol cycle.
    fn clear(&self) {
        let p = self.0.borrow_mut().take();
        drop(p);
    }

    /// Call the protocol with panics caught and reported. `Ok(false)` if
    /// there is no protocol or it is already borrowed (reported too),
    /// `Err(message)` if it panicked.
    fn call(
        &self,
        handle: &Handle,
        what: &str,
        f: impl FnOnce(&mut dyn Protocol),
    ) -> std::result::Result<bool, Arc<str>> {
        let Some(proto) = self.get() else {
            return Ok(false);
        };
        let describe = || format!("{what} of a pipe's protocol");
        match invoke::call_protocol(handle, &proto, &describe, f) {
            Ok(()) => Ok(true),
            Err(NotCalled::Borrowed) => Ok(false),
            Err(NotCalled::Panicked(msg)) => Err(msg),
        }
    }
}
