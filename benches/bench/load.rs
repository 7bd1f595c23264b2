//! The load generator, the same for every server: one thread, a raw mio
//! loop, `conns` connections each sending one message and waiting for all
//! of it to come back before sending the next (one request in flight per
//! connection). Every echoed byte is checked against what was sent.
//!
//! It runs in phases (`run`), so the orchestrator can sample the server
//! between the warm-up and the measured window while the connections stay
//! open.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// A zeroed buffer starting on a page boundary. Large `Vec`s come from
/// `mmap` 16 bytes past a page boundary, and on AMD Zen the kernel's copy
/// to user space (`rep movsb`) runs about 3x slower into a destination 8
/// to 31 bytes past a page boundary: 100 KiB reads measured 92 µs vs 30 µs
/// here. Every reader in this benchmark uses one of these, so no server
/// pays or dodges that by accident (protoloop's loop buffer is aligned the
/// same way).
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        const PAGE: usize = 4096;
        let storage = vec![0u8; len + PAGE];
        let addr = storage.as_ptr() as usize;
        let start = (PAGE - addr % PAGE) % PAGE;
        AlignedBuf {
            storage,
            start,
            len,
        }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// Longest wait for any progress before the server is declared stuck.
pub const STALL: Duration = Duration::from_secs(10);

struct Conn {
    sock: TcpStream,
    sent: usize,
    recvd: usize,
    started: Instant,
}

pub struct EchoLoad {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    msg: Vec<u8>,
    rbuf: AlignedBuf,
}

/// What one measured phase saw.
#[derive(Debug, Default)]
pub struct Phase {
    /// Requests completed in the phase.
    pub requests: u64,
    pub elapsed: Duration,
    /// Round-trip times (ns) of requests sent and completed in the phase,
    /// sorted.
    pub latencies_ns: Vec<u32>,
}

/// A load generator on one mio `Poll` whose tokens are connection
/// indices: `drive` runs it for one phase (the echo and request/reply
/// loads share it).
pub trait MioLoad {
    fn io(&mut self) -> (&mut Poll, &mut Events);

    /// Handle readiness on connection `conn`; `t0` starts the phase.
    fn service(&mut self, conn: usize, t0: Instant, phase: &mut Phase) -> io::Result<()>;

    /// Drive the load for `dur`; returns what completed in that time. No
    /// event for `STALL` is an error: the server is stuck.
    fn drive(&mut self, dur: Duration) -> io::Result<Phase> {
        let t0 = Instant::now();
        let end = t0 + dur;
        let mut phase = Phase::default();
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let (poll, events) = self.io();
            poll.poll(events, Some((end - now).min(STALL)))?;
            if events.is_empty() && Instant::now() < end {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no progress for {STALL:?}: the server is stuck"),
                ));
            }
            let ready: Vec<usize> = events.iter().map(|e| e.token().0).collect();
            for i in ready {
                self.service(i, t0, &mut phase)?;
            }
        }
        phase.elapsed = t0.elapsed();
        phase.latencies_ns.sort_unstable();
        Ok(phase)
    }
}

impl Phase {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile (0..=1) of the latencies, in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_ns.len() - 1) as f64 * q).round() as usize;
        self.latencies_ns[i] as f64 / 1000.0
    }
}

impl EchoLoad {
    /// Open `conns` connections to `addr`; messages are `size` bytes.
    pub fn connect(addr: SocketAddr, conns: usize, size: usize) -> io::Result<EchoLoad> {
        let poll = Poll::new()?;
        let mut v = Vec::with_capacity(conns);
        for i in 0..conns {
            let s = std::net::TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            s.set_nonblocking(true)?;
            let mut sock = TcpStream::from_std(s);
            poll.registry().register(
                &mut sock,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            v.push(Conn {
                sock,
                sent: 0,
                recvd: 0,
                started: Instant::now(),
            });
        }
        // Not all one byte value, so a server that reorders bytes is caught.
        let msg = (0..size).map(|i| (i % 251) as u8).collect();
        let mut load = EchoLoad {
            poll,
            events: Events::with_capacity(1024),
            conns: v,
            msg,
            rbuf: AlignedBuf::new(256 * 1024),
        };
        for i in 0..conns {
            load.start(i)?;
        }
        Ok(load)
    }

    /// Send the next message on connection `i`.
    fn start(&mut self, i: usize) -> io::Result<()> {
        let c = &mut self.conns[i];
        c.sent = 0;
        c.recvd = 0;
        c.started = Instant::now();
        Self::send(c, &self.msg)
    }

    fn send(c: &mut Conn, msg: &[u8]) -> io::Result<()> {
        while c.sent < msg.len() {
            match c.sock.write(&msg[c.sent..]) {
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Drive the load for `dur`; returns what completed in that time.
    pub fn run(&mut self, dur: Duration) -> io::Result<Phase> {
        MioLoad::drive(self, dur)
    }
}

/// Hold `n` idle connections open to `addr`, each having echoed one byte
/// (so the server has surely accepted and set it up). Connections are
/// made in batches so the listen backlog never overflows.
pub fn open_idle(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpStream>> {
    const BATCH: usize = 200;
    let mut all = Vec::with_capacity(n);
    while all.len() < n {
        let k = BATCH.min(n - all.len());
        let mut batch = Vec::with_capacity(k);
        for _ in 0..k {
            let s = std::net::TcpStream::connect(addr)?;
            s.set_read_timeout(Some(STALL))?;
            (&s).write_all(b"x")?;
            batch.push(s);
        }
        for s in &batch {
            let mut b = [0u8; 1];
            (&*s).read_exact(&mut b)?;
            if b != *b"x" {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "idle connection: wrong echo",
                ));
            }
        }
        all.extend(batch);
    }
    Ok(all)
}

impl MioLoad for EchoLoad {
    fn io(&mut self) -> (&mut Poll, &mut Events) {
        (&mut self.poll, &mut self.events)
    }

    /// Handle readiness on connection `i`: finish sending, read what came
    /// back, and start the next request when the whole echo is in.
    fn service(&mut self, i: usize, t0: Instant, phase: &mut Phase) -> io::Result<()> {
        {
            let c = &mut self.conns[i];
            if c.sent < self.msg.len() {
                Self::send(c, &self.msg)?;
            }
        }
        loop {
            let c = &mut self.conns[i];
            let n = match c.sock.read(&mut self.rbuf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed a connection",
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let want = self.msg.len() - c.recvd;
            if n > want || self.rbuf[..n] != self.msg[c.recvd..c.recvd + n] {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "connection {i}: the echo differs from what was sent at byte {}",
                        c.recvd
                    ),
                ));
            }
            c.recvd += n;
            if c.recvd == self.msg.len() {
                phase.requests += 1;
                if c.started >= t0 {
                    let ns = c.started.elapsed().as_nanos();
                    phase.latencies_ns.push(ns.min(u32::MAX as u128) as u32);
                }
                self.start(i)?;
            }
            if n < self.rbuf.len() {
                return Ok(()); // short read: drained
            }
        }
    }
}
