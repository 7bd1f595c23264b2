//! [`LifecycleChecker`]: wraps protocols and records every breach of the
//! callback contract (see [`crate::protocol`]) their transport commits.
//!
//! The checker is a small state machine per connection, fed one [`Event`]
//! per callback. [`Checked`] feeds it for a stream [`Protocol`], a
//! [`DatagramProtocol`] and a [`SubprocessProtocol`] alike: the same
//! machine, with each kind's own events.

use std::cell::RefCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use crate::protocol::{CloseReason, DatagramProtocol, Protocol, SubprocessProtocol};
use crate::transport::subprocess::SubprocessTransport;
use crate::transport::{DatagramTransport, SocketAddress, Transport};

mod proxy;

use proxy::CheckedTransport;

/// One callback a checked protocol received.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// `connection_made`.
    ConnectionMade,
    /// `data_received` with this many bytes.
    DataReceived(usize),
    /// `eof_received`.
    EofReceived,
    /// `connection_lost` (the reason is in [`LifecycleChecker::reasons`]).
    ConnectionLost,
    /// `pause_writing`.
    PauseWriting,
    /// `resume_writing`.
    ResumeWriting,
    /// `drain_requested`.
    DrainRequested,
    /// `get_buffer`, with the length of the buffer the protocol lent
    /// (`None`: it lent none).
    GetBuffer(Option<usize>),
    /// `buffer_updated` with this many bytes.
    BufferUpdated(usize),
    /// A datagram protocol's `datagram_received` with this many bytes.
    DatagramReceived(usize),
    /// A datagram protocol's `error_received`.
    ErrorReceived,
    /// A subprocess protocol's `pipe_data_received(fd, n bytes)`.
    PipeDataReceived(i32, usize),
    /// A subprocess protocol's `pipe_connection_lost(fd)`.
    PipeConnectionLost(i32),
    /// A subprocess protocol's `process_exited`.
    ProcessExited,
    /// A subprocess protocol's `process_ended`: its last callback, the
    /// counterpart of `connection_lost`.
    ProcessEnded,
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::ConnectionMade => "connection_made",
            Event::DataReceived(_) => "data_received",
            Event::EofReceived => "eof_received",
            Event::ConnectionLost => "connection_lost",
            Event::PauseWriting => "pause_writing",
            Event::ResumeWriting => "resume_writing",
            Event::DrainRequested => "drain_requested",
            Event::GetBuffer(_) => "get_buffer",
            Event::BufferUpdated(_) => "buffer_updated",
            Event::DatagramReceived(_) => "datagram_received",
            Event::ErrorReceived => "error_received",
            Event::PipeDataReceived(..) => "pipe_data_received",
            Event::PipeConnectionLost(_) => "pipe_connection_lost",
            Event::ProcessExited => "process_exited",
            Event::ProcessEnded => "process_ended",
        }
    }
}

/// A breach of the callback contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which wrapped protocol (0-based, in [`LifecycleChecker::wrap`]
    /// order).
    pub connection: usize,
    /// The callback that broke the contract (`None` for a check made at
    /// the end, such as a missing `connection_lost`).
    pub event: Option<Event>,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection #{}: {}", self.connection, self.message)
    }
}

/// The contract state of one connection.
#[derive(Default)]
struct Conn {
    made: bool,
    eof: bool,
    lost: bool,
    reason: Option<CloseReason>,
    writing_paused: bool,
    lent: Option<usize>,
    /// Subprocess: which of fds 0, 1, 2 were reported lost.
    pipe_lost: [bool; 3],
    /// Subprocess: which of fds 1, 2 delivered data.
    pipe_data: [bool; 3],
    /// Subprocess: `process_exited` came.
    exited: bool,
    /// Name of the transport method running right now, if any.
    in_call: Option<&'static str>,
    events: Vec<Event>,
    violations: Vec<Violation>,
}

impl Conn {
    /// Feed one callback; `reading` is whether the transport says it is
    /// reading at that moment (for data callbacks).
    fn observe(&mut self, id: usize, ev: Event, reading: Option<bool>) {
        let mut bad: Vec<String> = Vec::new();
        let name = ev.name();
        if let Some(method) = self.in_call {
            bad.push(format!(
                "{name} called re-entrantly from inside transport.{method}()"
            ));
        }
        if self.lost {
            bad.push(format!("{name} after connection_lost"));
        } else if ev == Event::ConnectionMade {
            if self.made {
                bad.push("second connection_made".into());
            }
        } else if !self.made {
            bad.push(format!("{name} before connection_made"));
        }
        match ev {
            Event::DataReceived(n) | Event::BufferUpdated(n) => {
                if self.eof {
                    bad.push(format!("{name} after eof_received"));
                }
                if n == 0 {
                    bad.push(format!("{name} with no bytes"));
                }
                if reading == Some(false) && !self.eof {
                    bad.push(format!(
                        "{name} while the transport is not reading (paused or closing)"
                    ));
                }
            }
            Event::EofReceived if self.eof => bad.push("second eof_received".into()),
            Event::PauseWriting if self.writing_paused => {
                bad.push("pause_writing twice without resume_writing in between".into());
            }
            Event::ResumeWriting if !self.writing_paused => {
                bad.push("resume_writing without a pause_writing before it".into());
            }
            Event::GetBuffer(_) if self.eof => bad.push("get_buffer after eof_received".into()),
            Event::DatagramReceived(_) if reading == Some(false) => {
                bad.push(format!("{name} while the endpoint is not reading"));
            }
            Event::PipeDataReceived(fd, n) => {
                if fd != 1 && fd != 2 {
                    bad.push(format!(
                        "{name} for fd {fd}: only stdout and stderr carry data"
                    ));
                } else if self.pipe_lost[fd as usize] {
                    bad.push(format!("{name} for fd {fd} after its pipe_connection_lost"));
                } else {
                    self.pipe_data[fd as usize] = true;
                }
                if n == 0 {
                    bad.push(format!("{name} with no bytes"));
                }
            }
            Event::PipeConnectionLost(fd) => match usize::try_from(fd) {
                Ok(i) if i < 3 => {
                    if self.pipe_lost[i] {
                        bad.push(format!("second pipe_connection_lost for fd {fd}"));
                    }
                    self.pipe_lost[i] = true;
                }
                _ => bad.push(format!("pipe_connection_lost for fd {fd}")),
            },
            Event::ProcessExited if self.exited => bad.push("second process_exited".into()),
            Event::ProcessEnded => {
                if !self.exited {
                    bad.push("process_ended before process_exited".into());
                }
                for fd in [1, 2] {
                    if self.pipe_data[fd] && !self.pipe_lost[fd] {
                        bad.push(format!("process_ended while fd {fd} was still open"));
                    }
                }
            }
            _ => {}
        }
        if let Event::BufferUpdated(n) = ev {
            match self.lent.take() {
                None => bad.push("buffer_updated without a buffer lent by get_buffer".into()),
                Some(lent) if n > lent => bad.push(format!(
                    "buffer_updated({n}) but get_buffer lent only {lent} bytes"
                )),
                Some(_) => {}
            }
        }
        match ev {
            Event::ConnectionMade => self.made = true,
            Event::EofReceived => self.eof = true,
            Event::ConnectionLost | Event::ProcessEnded => self.lost = true,
            Event::ProcessExited => self.exited = true,
            Event::PauseWriting => self.writing_paused = true,
            Event::ResumeWriting => self.writing_paused = false,
            Event::GetBuffer(lent) => self.lent = lent,
            _ => {}
        }
        for message in bad {
            let v = Violation {
                connection: id,
                event: Some(ev.clone()),
                message,
            };
            eprintln!("protoloop lifecycle violation: {v}");
            self.violations.push(v);
        }
        self.events.push(ev);
    }
}

#[derive(Default)]
struct Registry {
    conns: RefCell<Vec<Conn>>,
}

impl Registry {
    fn observe(&self, id: usize, ev: Event, reading: Option<bool>) {
        self.conns.borrow_mut()[id].observe(id, ev, reading);
    }
}

/// Wraps protocols ([`wrap`](Self::wrap): a stream [`Protocol`], a
/// [`DatagramProtocol`] or a [`SubprocessProtocol`]) and records every
/// breach of the callback contract by the transports that drive them: a second
/// `connection_made`, any callback before `connection_made` or after
/// `connection_lost`, data after EOF or while reading is paused, empty
/// data, `pause_writing`/`resume_writing` out of pairs, a `buffer_updated`
/// beyond the lent buffer, and a callback made re-entrantly from inside a
/// transport method. At the end of a test,
/// [`assert_finished`](Self::assert_finished) also demands that every
/// wrapped protocol saw `connection_made` and `connection_lost`.
///
/// Violations are recorded (and printed to stderr as they happen), not
/// panicked on inside the callback, because the loop catches callback
/// panics: call [`assert_ok`](Self::assert_ok) or `assert_finished`.
///
/// A cheap `Clone`: hand one to a server's protocol factory.
///
/// To see re-entrant calls, a stream protocol receives a checking proxy of
/// its transport in `connection_made` (so `Transport::same` between it and
/// the handle `create_connection` returned is `false`); datagram and
/// subprocess protocols get their own transport, so re-entrant calls are
/// not seen for them. A protocol switched in with `set_protocol` is not
/// checked. For a subprocess protocol, `process_ended` plays the part of
/// `connection_lost`: last, once, after `process_exited` and after every
/// output pipe that delivered data was reported lost.
///
/// ```
/// use protoloop::testing::{LifecycleChecker, pair};
/// use protoloop::{EventLoop, Protocol, Transport};
///
/// struct Hello;
/// impl Protocol for Hello {
///     fn connection_made(&mut self, t: Transport) { t.write(b"hello").unwrap(); t.close(); }
///     fn data_received(&mut self, _: &[u8]) {}
/// }
/// struct Sink(Vec<u8>);
/// impl Protocol for Sink {
///     fn data_received(&mut self, d: &[u8]) { self.0.extend_from_slice(d); }
/// }
///
/// let lp = EventLoop::new_virtual().unwrap();
/// let checker = LifecycleChecker::new();
/// let (_a, b) = pair(&lp.handle(), checker.wrap(Hello), checker.wrap(Sink(Vec::new())));
/// lp.run_until_idle().unwrap();
/// checker.assert_finished();
/// assert_eq!(b.protocol().with(|p| p.0.clone()), b"hello");
/// ```
#[derive(Clone, Default)]
pub struct LifecycleChecker {
    reg: Rc<Registry>,
}

impl fmt::Debug for LifecycleChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LifecycleChecker")
            .field("connections", &self.connection_count())
            .field("violations", &self.violations().len())
            .finish()
    }
}

impl LifecycleChecker {
    /// A checker with no connections yet.
    pub fn new() -> LifecycleChecker {
        LifecycleChecker::default()
    }

    /// Wrap `protocol` so its callbacks are checked; use the result
    /// wherever the protocol would go.
    pub fn wrap<P>(&self, protocol: P) -> Checked<P> {
        let mut conns = self.reg.conns.borrow_mut();
        conns.push(Conn::default());
        Checked {
            inner: protocol,
            id: conns.len() - 1,
            reg: self.reg.clone(),
            transport: None,
            endpoint: None,
        }
    }

    /// How many protocols were wrapped.
    pub fn connection_count(&self) -> usize {
        self.reg.conns.borrow().len()
    }

    /// How many wrapped protocols have seen `connection_lost`.
    pub fn lost_count(&self) -> usize {
        self.reg.conns.borrow().iter().filter(|c| c.lost).count()
    }

    /// `true` when every wrapped protocol has seen `connection_lost` (a
    /// condition to run the loop until).
    pub fn all_lost(&self) -> bool {
        self.reg.conns.borrow().iter().all(|c| c.lost)
    }

    /// The reason each wrapped protocol's connection was lost with, in
    /// wrap order (`None`: not lost yet).
    pub fn reasons(&self) -> Vec<Option<CloseReason>> {
        let conns = self.reg.conns.borrow();
        conns.iter().map(|c| c.reason.clone()).collect()
    }

    /// The callbacks connection `id` received, in order.
    ///
    /// # Panics
    ///
    /// If no protocol `id` was wrapped.
    pub fn events(&self, id: usize) -> Vec<Event> {
        self.reg.conns.borrow()[id].events.clone()
    }

    /// Every violation so far, by connection.
    pub fn violations(&self) -> Vec<Violation> {
        let conns = self.reg.conns.borrow();
        conns.iter().flat_map(|c| c.violations.clone()).collect()
    }

    /// Panic, listing them, if any violation was recorded.
    #[track_caller]
    pub fn assert_ok(&self) {
        let v = self.violations();
        if !v.is_empty() {
            panic!("{}", report("callback contract violated", &v));
        }
    }

    /// Panic unless every wrapped protocol saw `connection_made` and
    /// `connection_lost` (`process_ended` for a subprocess) and no
    /// violation was recorded.
    #[track_caller]
    pub fn assert_finished(&self) {
        let mut v = self.violations();
        for (id, c) in self.reg.conns.borrow().iter().enumerate() {
            let message = if !c.made {
                "never got connection_made"
            } else if !c.lost {
                "never got connection_lost"
            } else {
                continue;
            };
            v.push(Violation {
                connection: id,
                event: None,
                message: format!("{message} (callbacks: {})", summary(&c.events)),
            });
        }
        if !v.is_empty() {
            panic!("{}", report("connections not finished cleanly", &v));
        }
    }
}

fn report(what: &str, v: &[Violation]) -> String {
    let mut s = format!("{what}: {} problem(s)", v.len());
    for x in v.iter().take(20) {
        s.push_str(&format!("\n  {x}"));
    }
    if v.len() > 20 {
        s.push_str(&format!("\n  ... and {} more", v.len() - 20));
    }
    s
}

fn summary(events: &[Event]) -> String {
    let names: Vec<&str> = events.iter().map(|e| e.name()).collect();
    if names.len() <= 12 {
        return names.join(", ");
    }
    format!(
        "{}, ... {} more ..., {}",
        names[..6].join(", "),
        names.len() - 12,
        names[names.len() - 6..].join(", ")
    )
}

/// A protocol wrapped by a [`LifecycleChecker`]. It derefs to the wrapped
/// protocol, so `handle.with(|p| p.field)` reaches your fields.
pub struct Checked<P> {
    inner: P,
    id: usize,
    reg: Rc<Registry>,
    transport: Option<Transport>,
    /// A datagram protocol's endpoint, to see whether it is reading.
    endpoint: Option<DatagramTransport>,
}

impl<P> fmt::Debug for Checked<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checked").field("id", &self.id).finish()
    }
}

impl<P> Checked<P> {
    /// This connection's number in its checker. An associated function,
    /// so it never hides a method of the wrapped protocol.
    pub fn connection_id(this: &Self) -> usize {
        this.id
    }

    /// The wrapped protocol.
    pub fn into_inner(this: Self) -> P {
        this.inner
    }

    /// `connection_lost(reason)`: the event, and the reason kept for
    /// [`LifecycleChecker::reasons`].
    fn observe_lost(&self, reason: &CloseReason) {
        self.observe(Event::ConnectionLost);
        let mut conns = self.reg.conns.borrow_mut();
        conns[self.id].reason.get_or_insert_with(|| reason.clone());
    }

    fn observe(&self, ev: Event) {
        let reading = match ev {
            Event::DataReceived(_) | Event::BufferUpdated(_) => {
                self.transport.as_ref().map(|t| t.is_reading())
            }
            _ => None,
        };
        self.reg.observe(self.id, ev, reading);
    }
}

impl<P> Deref for Checked<P> {
    type Target = P;
    fn deref(&self) -> &P {
        &self.inner
    }
}

impl<P> DerefMut for Checked<P> {
    fn deref_mut(&mut self) -> &mut P {
        &mut self.inner
    }
}

impl<P: Protocol> Protocol for Checked<P> {
    fn connection_made(&mut self, transport: Transport) {
        self.observe(Event::ConnectionMade);
        self.transport = Some(transport.clone());
        let proxy = Transport::new(Rc::new(CheckedTransport {
            inner: transport,
            reg: self.reg.clone(),
            id: self.id,
        }));
        self.inner.connection_made(proxy);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.observe(Event::DataReceived(data.len()));
        self.inner.data_received(data);
    }

    fn eof_received(&mut self) -> bool {
        self.observe(Event::EofReceived);
        self.inner.eof_received()
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        self.observe_lost(&reason);
        // The transport handle would keep the connection alive.
        self.transport = None;
        self.inner.connection_lost(reason);
    }

    fn pause_writing(&mut self) {
        self.observe(Event::PauseWriting);
        self.inner.pause_writing();
    }

    fn resume_writing(&mut self) {
        self.observe(Event::ResumeWriting);
        self.inner.resume_writing();
    }

    fn drain_requested(&mut self) -> bool {
        self.observe(Event::DrainRequested);
        self.inner.drain_requested()
    }

    fn get_buffer(&mut self, size_hint: usize) -> Option<&mut [u8]> {
        let buf = self.inner.get_buffer(size_hint);
        let lent = buf.as_ref().map(|b| b.len());
        self.reg.observe(self.id, Event::GetBuffer(lent), None);
        buf
    }

    fn buffer_updated(&mut self, nbytes: usize) {
        self.observe(Event::BufferUpdated(nbytes));
        self.inner.buffer_updated(nbytes);
    }
}

impl<P: DatagramProtocol> DatagramProtocol for Checked<P> {
    fn connection_made(&mut self, transport: DatagramTransport) {
        self.observe(Event::ConnectionMade);
        self.endpoint = Some(transport.clone());
        self.inner.connection_made(transport);
    }

    fn datagram_received(&mut self, data: &[u8], addr: SocketAddress) {
        let reading = self.endpoint.as_ref().map(|t| t.is_reading());
        self.reg
            .observe(self.id, Event::DatagramReceived(data.len()), reading);
        self.inner.datagram_received(data, addr);
    }

    fn error_received(&mut self, error: std::io::Error, addr: Option<SocketAddress>) {
        self.observe(Event::ErrorReceived);
        self.inner.error_received(error, addr);
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        self.observe_lost(&reason);
        self.endpoint = None;
        self.inner.connection_lost(reason);
    }

    fn pause_writing(&mut self) {
        self.observe(Event::PauseWriting);
        self.inner.pause_writing();
    }

    fn resume_writing(&mut self) {
        self.observe(Event::ResumeWriting);
        self.inner.resume_writing();
    }
}

impl<P: SubprocessProtocol> SubprocessProtocol for Checked<P> {
    fn connection_made(&mut self, transport: SubprocessTransport) {
        self.observe(Event::ConnectionMade);
        self.inner.connection_made(transport);
    }

    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        self.observe(Event::PipeDataReceived(fd, data.len()));
        self.inner.pipe_data_received(fd, data);
    }

    fn pipe_connection_lost(&mut self, fd: i32, reason: CloseReason) {
        self.observe(Event::PipeConnectionLost(fd));
        self.inner.pipe_connection_lost(fd, reason);
    }

    fn pause_writing(&mut self) {
        self.observe(Event::PauseWriting);
        self.inner.pause_writing();
    }

    fn resume_writing(&mut self) {
        self.observe(Event::ResumeWriting);
        self.inner.resume_writing();
    }

    fn process_exited(&mut self) {
        self.observe(Event::ProcessExited);
        self.inner.process_exited();
    }

    fn process_ended(&mut self, status: std::process::ExitStatus) {
        self.observe(Event::ProcessEnded);
        self.inner.process_ended(status);
    }
}
