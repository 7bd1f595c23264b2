//! The datagram endpoint shared by UDP and Unix datagram sockets: one
//! generic endpoint over a small `DatagramSocket` trait, and its public
//! handle [`DatagramTransport`], whose docs state the rules kept here
//! (sending, flow control, errors, callback order).
//!
//! Files: `queue.rs` (the send queue and its water marks), `send.rs` (the
//! send path and flush), `transport.rs` (the public handle).

use std::cell::{Cell, RefCell};
use std::io;
use std::net::UdpSocket;
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Token};

use self::queue::SendQueue;
use super::SocketAddress;
use super::buffer::Flow;
use super::invoke::{self, NotCalled};
use crate::event_loop::Handle;
use crate::protocol::{CloseReason, DatagramProtocol};
use crate::reactor::{IoHandler, Ready, interrupted, would_block};
use crate::time::TimerHandle;

mod queue;
mod send;
mod transport;

pub use transport::DatagramTransport;

/// Datagrams read in a row before yielding to the rest of the loop.
const MAX_READS_PER_EVENT: usize = 32;
/// What each queued datagram adds to the queue size besides its bytes.
const DATAGRAM_OVERHEAD: usize = 8;
/// Bounds on the retry delay when the kernel gives no writability edge.
const RETRY_MIN: Duration = Duration::from_millis(1);
const RETRY_MAX: Duration = Duration::from_millis(16);

/// An error and the destination it concerns, if known.
pub(crate) type DatagramError = (io::Error, Option<SocketAddress>);

/// A bound (and maybe connected) non-blocking datagram socket.
pub(crate) trait DatagramSocket: 'static {
    /// The descriptor to register with the reactor.
    fn fd(&self) -> RawFd;
    fn send_to(&self, buf: &[u8], addr: &SocketAddress) -> io::Result<usize>;
    /// Send to the connected peer.
    fn send(&self, buf: &[u8]) -> io::Result<usize>;
    /// A sender's address as this socket reads it. Made into a
    /// [`SocketAddress`] (about 120 bytes) only where the protocol gets
    /// it, so that a UDP sender (a 32-byte `SocketAddr`) is not copied at
    /// full size through the read path.
    type Addr: Into<SocketAddress>;
    /// One datagram: its length (possibly more than `buf` holds, if the
    /// socket can tell) and sender.
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Self::Addr)>;
    fn local(&self) -> Option<SocketAddress>;
    /// Refuse a destination of the wrong kind or family.
    fn check_dest(&self, addr: &SocketAddress) -> io::Result<()>;
    /// The largest datagram the kernel sends to `dest`.
    fn max_datagram(&self, dest: Option<&SocketAddress>) -> usize;
    /// Move errors the kernel queued for earlier datagrams into `out`.
    fn read_errors(&self, out: &mut Vec<DatagramError>) {
        let _ = out;
    }
    /// `true` if, after `WouldBlock`, writability says nothing (an
    /// unconnected Unix datagram socket sending to a peer with a full
    /// queue: the kernel never signals room there, yet signals "writable"
    /// after every refusal), so the queue is retried on a timer instead.
    fn poll_writes(&self) -> bool {
        false
    }
    /// The UDP socket, for the options only UDP has.
    fn udp(&self) -> Option<&UdpSocket> {
        None
    }
    /// `"UDP"`, `"Unix datagram"`: for messages.
    fn kind(&self) -> &'static str;
}

/// Whether two addresses name the same endpoint.
pub(crate) fn same_address(a: &SocketAddress, b: &SocketAddress) -> bool {
    match (a, b) {
        (SocketAddress::Inet(x), SocketAddress::Inet(y)) => x == y,
        (SocketAddress::Unix(x), SocketAddress::Unix(y)) => {
            let (x, y) = (
                super::unix::UnixAddr::from_std(x),
                super::unix::UnixAddr::from_std(y),
            );
            x.is_some() && x == y
        }
        _ => false,
    }
}

#[derive(Default)]
struct State {
    queue: SendQueue,
    closing: bool,
    lost: bool,
    reading_paused: bool,
    retry: Option<TimerHandle>,
    retry_delay: Duration,
    /// Errors found inside a transport method, waiting for delivery.
    errors: Vec<DatagramError>,
    errors_scheduled: bool,
}

/// The endpoint of one datagram socket.
pub(crate) struct DatagramEndpoint<S: DatagramSocket> {
    handle: Handle,
    me: Weak<DatagramEndpoint<S>>,
    token: Cell<Option<Token>>,
    sock: RefCell<Option<S>>,
    /// Cached at creation: connected mode is fixed for the endpoint's life.
    peer: Option<SocketAddress>,
    protocol: RefCell<Option<Rc<RefCell<dyn DatagramProtocol>>>>,
    st: RefCell<State>,
}

impl<S: DatagramSocket> DatagramEndpoint<S> {
    /// Register `sock` and call the protocol's `connection_made`.
    pub(crate) fn start(
        handle: &Handle,
        sock: S,
        peer: Option<SocketAddress>,
        protocol: Rc<RefCell<dyn DatagramProtocol>>,
    ) -> io::Result<DatagramTransport> {
        let ep = Rc::new_cyclic(|me| DatagramEndpoint {
            handle: handle.clone(),
            me: me.clone(),
            token: Cell::new(None),
            sock: RefCell::new(None),
            peer,
            protocol: RefCell::new(Some(protocol)),
            st: RefCell::new(State {
                retry_delay: RETRY_MIN,
                ..State::default()
            }),
        });
        let reactor = &handle.inner.reactor;
        let token = reactor.insert(ep.clone());
        let fd = sock.fd();
        if let Err(e) = reactor.register(
            &mut SourceFd(&fd),
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            reactor.forget(token);
            return Err(e);
        }
        ep.token.set(Some(token));
        *ep.sock.borrow_mut() = Some(sock);
        let t = DatagramTransport { inner: ep.clone() };
        let t2 = t.clone();
        ep.call_protocol("connection_made", |p| p.connection_made(t2));
        Ok(t)
    }

    fn rc(&self) -> Rc<Self> {
        self.me
            .upgrade()
            .expect("endpoint is alive while its methods run")
    }

    fn describe(&self, what: &str) -> String {
        let kind = self.sock.borrow().as_ref().map_or("datagram", |s| s.kind());
        match self.local() {
            Some(a) => format!("{what} of the protocol of {kind} endpoint {a}"),
            None => format!("{what} of a {kind} endpoint's protocol"),
        }
    }

    /// Call the protocol; a panic aborts the endpoint. Returns `false` if
    /// the call did not complete.
    fn call_protocol(&self, what: &str, f: impl FnOnce(&mut dyn DatagramProtocol)) -> bool {
        let Some(proto) = self.protocol.borrow().clone() else {
            return false;
        };
        self.call_protocol_on(&proto, what, f)
    }

    /// [`call_protocol`](Self::call_protocol) with the protocol already
    /// in hand (taken from `self.protocol` by the caller).
    fn call_protocol_on(
        &self,
        proto: &RefCell<dyn DatagramProtocol>,
        what: &str,
        f: impl FnOnce(&mut dyn DatagramProtocol),
    ) -> bool {
        match invoke::call_protocol(&self.handle, proto, &|| self.describe(what), f) {
            Ok(()) => true,
            Err(NotCalled::Borrowed) => false,
            Err(NotCalled::Panicked(msg)) => {
                self.finish(CloseReason::Panic(msg));
                false
            }
        }
    }

    fn schedule_flow(&self, flow: Flow) {
        invoke::schedule_flow(
            &self.handle,
            flow,
            || self.rc(),
            |me: &Self, what, f| !me.st.borrow().lost && me.call_protocol(what, f),
        );
    }

    /// Queue errors for `error_received` on a later iteration.
    fn schedule_errors(&self, errors: Vec<DatagramError>) {
        if errors.is_empty() {
            return;
        }
        let mut st = self.st.borrow_mut();
        st.errors.extend(errors);
        if std::mem::replace(&mut st.errors_scheduled, true) {
            return;
        }
        drop(st);
        let me = self.rc();
        self.handle.call_soon(move || {
            let errors = {
                let mut st = me.st.borrow_mut();
                st.errors_scheduled = false;
                std::mem::take(&mut st.errors)
            };
            me.deliver_errors(errors);
        });
    }

    /// Call `error_received` for each error, unless the endpoint is gone.
    fn deliver_errors(&self, errors: Vec<DatagramError>) {
        for (e, addr) in errors {
            if self.st.borrow().lost {
                return;
            }
            if !self.call_protocol("error_received", |p| p.error_received(e, addr)) {
                return;
            }
        }
    }

    fn read_errors(&self) -> Vec<DatagramError> {
        let mut out = Vec::new();
        if let Some(s) = self.sock.borrow().as_ref() {
            s.read_errors(&mut out);
        }
        out
    }

    fn can_read(&self) -> bool {
        let st = self.st.borrow();
        !(st.lost || st.closing || st.reading_paused)
    }

    fn read_ready(self: &Rc<Self>) {
        // One borrow of the loop's read buffer and one clone of the protocol
        // for the whole batch, not per datagram: nothing the protocol can
        // do from a callback reads another socket or replaces the protocol
        // (`finish` only schedules its release), and `can_read` still
        // stops the batch as soon as the endpoint closes or pauses.
        let Some(proto) = self.protocol.borrow().clone() else {
            return;
        };
        let last_ok = self.read_batch(&proto, &mut self.handle.read_buf());
        // Yield to other work; carry on next iteration. After an error,
        // wait for the next edge instead, so a socket that keeps failing
        // cannot spin the loop.
        if last_ok == Some(true) {
            let me = self.clone();
            self.handle.call_soon(move || me.read_ready());
        }
    }

    /// Read up to `MAX_READS_PER_EVENT` datagrams into `buf`, handing each
    /// to `proto`. `Some(ok)` if the batch ran out with the last read
    /// `ok`; `None` if it stopped (drained, closed, paused, or the
    /// protocol did not complete).
    fn read_batch(&self, proto: &RefCell<dyn DatagramProtocol>, buf: &mut [u8]) -> Option<bool> {
        let mut last_ok = false;
        for _ in 0..MAX_READS_PER_EVENT {
            if !self.can_read() {
                return None;
            }
            let res = loop {
                let r = match self.sock.borrow().as_ref() {
                    Some(s) => s.recv_from(buf),
                    None => Err(io::ErrorKind::NotConnected.into()),
                };
                match r {
                    Err(e) if interrupted(&e) => continue,
                    other => break other,
                }
            };
            match res {
                Ok((n, addr)) if n > buf.len() => {
                    let addr: SocketAddress = addr.into();
                    let e = io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "a datagram of {n} bytes from {addr} did not fit the {} byte read buffer and was dropped",
                            crate::event_loop::READ_BUFFER_SIZE
                        ),
                    );
                    if !self.call_protocol_on(proto, "error_received", |p| {
                        p.error_received(e, Some(addr))
                    }) {
                        return None;
                    }
                    last_ok = true;
                }
                Ok((n, addr)) => {
                    let data = &buf[..n];
                    if !self.call_protocol_on(proto, "datagram_received", |p| {
                        p.datagram_received(data, addr.into())
                    }) {
                        return None;
                    }
                    last_ok = true;
                }
                Err(e) if would_block(&e) => return None,
                Err(e) => {
                    // An error for an earlier datagram surfacing here: name
                    // its destination from the error queue if possible.
                    let mut errors = self.read_errors();
                    if errors.is_empty() {
                        errors.push((e, self.peer.clone()));
                    }
                    self.deliver_errors(errors);
                    last_ok = false;
                }
            }
        }
        Some(last_ok)
    }

    /// The endpoint is over: release the socket now and schedule
    /// `connection_lost(reason)`. Idempotent.
    fn finish(&self, reason: CloseReason) {
        {
            let mut st = self.st.borrow_mut();
            if st.lost {
                return;
            }
            st.lost = true;
            st.closing = true;
            st.queue.clear();
            st.errors.clear();
            if let Some(t) = st.retry.take() {
                t.cancel();
            }
        }
        let sock = self.sock.borrow_mut().take();
        if let Some(sock) = sock {
            if let Some(token) = self.token.take() {
                let fd = sock.fd();
                self.handle.inner.reactor.remove(&mut SourceFd(&fd), token);
            }
            drop(sock);
        }
        invoke::schedule_lost(
            &self.handle,
            self.rc(),
            move |me| {
                me.call_protocol("connection_lost", |p| p.connection_lost(reason));
            },
            |me| {
                let proto = me.protocol.borrow_mut().take();
                drop(proto);
            },
        );
    }

    fn is_closing(&self) -> bool {
        let st = self.st.borrow();
        st.lost || st.closing
    }

    fn local(&self) -> Option<SocketAddress> {
        self.sock.borrow().as_ref().and_then(|s| s.local())
    }
}

impl<S: DatagramSocket> IoHandler for DatagramEndpoint<S> {
    fn ready(self: Rc<Self>, ready: Ready) {
        if self.st.borrow().lost {
            return;
        }
        if ready.error {
            let errors = self.read_errors();
            self.deliver_errors(errors);
            if self.st.borrow().lost {
                return;
            }
        }
        let flush = {
            let st = self.st.borrow();
            // While a retry timer is armed, writability edges mean nothing:
            // a refused Unix datagram frees its buffer, which itself raises
            // one, and acting on it would spin the loop.
            !st.queue.items.is_empty() && st.retry.is_none()
        };
        if (ready.writable || ready.error) && flush {
            self.flush();
        }
        if ready.readable || ready.read_closed {
            self.read_ready();
        }
    }

    fn loop_closed(&self) {
        // No callback can run any more, so no connection_lost: close the
        // socket (removing a Unix socket file it made) and drop the
        // protocol, which usually holds this endpoint's handle.
        let timer = {
            let mut st = self.st.borrow_mut();
            st.lost = true;
            st.closing = true;
            st.queue.clear();
            st.errors.clear();
            st.retry.take()
        };
        drop(timer);
        self.token.take();
        let sock = self.sock.borrow_mut().take();
        drop(sock);
        let proto = self.protocol.borrow_mut().take();
        drop(proto);
    }
}
