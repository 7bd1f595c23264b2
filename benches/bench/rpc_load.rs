//! The protobuf request/reply load generator, the same for every server:
//! one thread, a raw mio loop, `conns` connections each keeping `depth`
//! `GetBalance` requests in flight (2-byte length framing). Each reply is
//! decoded and checked; it answers the oldest request (the bank answers in
//! order), and a new request goes out for it. The requests one read
//! answers are sent back with one `write`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use prost::Message;
use protoloop::proto::bank::{GetBalance, Response};

use crate::load::{AlignedBuf, MioLoad, Phase};

pub const CUSTOMER: &str = "Jane Doe";

struct Conn {
    sock: TcpStream,
    /// Send times of the requests in flight, oldest first.
    sent: VecDeque<Instant>,
    /// Received bytes not yet a whole frame.
    partial: Vec<u8>,
    /// Requests not yet taken by the socket.
    out: Vec<u8>,
}

pub struct RpcLoad {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    frame: Vec<u8>,
    rbuf: AlignedBuf,
}

/// The request frame: 2-byte big-endian length, then `GetBalance`.
pub fn request_frame() -> Vec<u8> {
    let q = GetBalance {
        customer_id: CUSTOMER.into(),
    };
    let mut f = (q.encoded_len() as u16).to_be_bytes().to_vec();
    q.encode(&mut f).expect("a Vec grows");
    f
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl RpcLoad {
    pub fn connect(addr: SocketAddr, conns: usize, depth: usize) -> io::Result<RpcLoad> {
        let poll = Poll::new()?;
        let frame = request_frame();
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
            let now = Instant::now();
            let mut c = Conn {
                sock,
                sent: (0..depth).map(|_| now).collect(),
                partial: Vec::new(),
                out: frame.repeat(depth),
            };
            flush(&mut c)?;
            v.push(c);
        }
        Ok(RpcLoad {
            poll,
            events: Events::with_capacity(1024),
            conns: v,
            frame,
            rbuf: AlignedBuf::new(256 * 1024),
        })
    }

    /// Drive the load for `dur`; returns what completed in that time.
    pub fn run(&mut self, dur: Duration) -> io::Result<Phase> {
        MioLoad::drive(self, dur)
    }
}

/// Write queued requests until done or `WouldBlock`.
fn flush(c: &mut Conn) -> io::Result<()> {
    let mut done = 0;
    while done < c.out.len() {
        match c.sock.write(&c.out[done..]) {
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    c.out.drain(..done);
    Ok(())
}

impl MioLoad for RpcLoad {
    fn io(&mut self) -> (&mut Poll, &mut Events) {
        (&mut self.poll, &mut self.events)
    }

    fn service(&mut self, i: usize, t0: Instant, phase: &mut Phase) -> io::Result<()> {
        let c = &mut self.conns[i];
        flush(c)?;
        loop {
            let n = match c.sock.read(&mut self.rbuf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed a connection",
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            c.partial.extend_from_slice(&self.rbuf[..n]);
            let mut at = 0;
            let now = Instant::now();
            while c.partial.len() - at >= 2 {
                let len = u16::from_be_bytes([c.partial[at], c.partial[at + 1]]) as usize;
                if c.partial.len() - at - 2 < len {
                    break;
                }
                let r = Response::decode(&c.partial[at + 2..at + 2 + len])
                    .map_err(|e| bad(format!("connection {i}: bad Response: {e}")))?;
                if r.customer_id != CUSTOMER || r.balance != 100.0 {
                    return Err(bad(format!("connection {i}: wrong reply {r:?}")));
                }
                at += 2 + len;
                let started = c
                    .sent
                    .pop_front()
                    .ok_or_else(|| bad(format!("connection {i}: a reply nobody asked for")))?;
                phase.requests += 1;
                if started >= t0 {
                    let ns = now.duration_since(started).as_nanos();
                    phase.latencies_ns.push(ns.min(u32::MAX as u128) as u32);
                }
                c.out.extend_from_slice(&self.frame);
                c.sent.push_back(now);
            }
            c.partial.drain(..at);
            if n < self.rbuf.len() {
                break; // short read: drained
            }
        }
        flush(c)
    }
}
