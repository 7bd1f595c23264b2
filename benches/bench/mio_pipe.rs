//! The raw mio server for `--app pipe`: the ceiling one thread reaches
//! relaying a TCP echo through a `cat` child per connection (socket ->
//! cat's stdin, cat's stdout -> socket), with no framework.
//!
//! One `Poll`, a `Slab` of connections, three edge-triggered
//! registrations per connection (the socket for read+write, cat's stdin
//! for write, cat's stdout for read), one shared page-aligned read buffer
//! for both directions. A short read is taken as "drained", as in the raw
//! mio echo server. Each direction keeps at most the part of one read its
//! writer has not taken yet; while it has one, its reader stops, so
//! nothing buffers without bound. Resuming a stopped reader reads to
//! `WouldBlock`, since the edge that stopped it may have carried the end.
//!
//! Either side ending (the peer closing, cat exiting, an error) ends the
//! connection: all three are deregistered, cat is killed and reaped.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::unix::pipe::{Receiver, Sender};
use mio::{Events, Interest, Registry, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX - 1);

/// A connection's three tokens are `key * 3 + SOCK / STDIN / STDOUT`.
const SOCK: usize = 0;
const STDIN: usize = 1;
const STDOUT: usize = 2;

struct Conn {
    sock: TcpStream,
    /// cat's stdin: what the socket sends goes here.
    stdin: Sender,
    /// cat's stdout: what comes out goes back to the socket.
    stdout: Receiver,
    child: Child,
    /// Read from the socket, not yet taken by cat's stdin.
    to_cat: Vec<u8>,
    /// Read from cat's stdout, not yet taken by the socket.
    to_sock: Vec<u8>,
}

pub fn run(addr: SocketAddr) -> Result<(), String> {
    let (mut poll, listener) = crate::servers::mio_listen(addr, LISTENER)?;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = crate::load::AlignedBuf::new(256 * 1024);
    loop {
        crate::servers::mio_wait(&mut poll, &mut events)?;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                accept_all(poll.registry(), &listener, &mut conns);
                continue;
            }
            let (key, side) = (ev.token().0 / 3, ev.token().0 % 3);
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            let alive = on_event(c, side, ev, &mut buf);
            if !alive {
                close(poll.registry(), conns.remove(key));
            }
        }
    }
}

fn accept_all(registry: &Registry, listener: &TcpListener, conns: &mut Slab<Conn>) {
    loop {
        match listener.accept() {
            Ok((sock, _)) => {
                let _ = sock.set_nodelay(true);
                let entry = conns.vacant_entry();
                match start(registry, sock, entry.key()) {
                    Ok(conn) => {
                        entry.insert(conn);
                    }
                    Err(e) => eprintln!("mio pipe server: {e}"),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) => {
                // Out of descriptors, most likely; the next event retries.
                eprintln!("mio pipe server: accept: {e}");
                return;
            }
        }
    }
}

/// Handle one readiness event of `c`'s end `side`; `false` when the
/// connection is done.
fn on_event(c: &mut Conn, side: usize, ev: &Event, buf: &mut [u8]) -> bool {
    // The end raises no further edge: after it, read to EOF.
    let trust_short_read = !(ev.is_read_closed() || ev.is_error());
    match side {
        SOCK => {
            // Flush first: an emptied `to_sock` restarts cat's stdout,
            // which stopped while the socket was backed up.
            if !c.to_sock.is_empty() {
                match flush(&mut c.sock, &mut c.to_sock) {
                    Ok(true) if !pump_out(c, buf, false) => return false,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
            let readable = ev.is_readable() || !trust_short_read;
            !readable || !c.to_cat.is_empty() || pump_in(c, buf, trust_short_read)
        }
        STDIN => {
            // An error here is cat's end of the pipe closing.
            if ev.is_error() {
                return false;
            }
            if c.to_cat.is_empty() {
                return true; // the socket's reading never stopped
            }
            // An emptied `to_cat` restarts the socket's reading.
            match flush(&mut c.stdin, &mut c.to_cat) {
                Ok(true) => pump_in(c, buf, false),
                Ok(false) => true,
                Err(_) => false,
            }
        }
        _ => !c.to_sock.is_empty() || pump_out(c, buf, trust_short_read),
    }
}

/// Start cat for a new connection and register all three ends.
fn start(registry: &Registry, mut sock: TcpStream, key: usize) -> Result<Conn, String> {
    let mut child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting cat: {e}"))?;
    // Both were asked for as pipes, so both are there.
    let (mut stdin, mut stdout) = match (child.stdin.take(), child.stdout.take()) {
        (Some(cin), Some(cout)) => (Sender::from(cin), Receiver::from(cout)),
        _ => unreachable!("cat's stdin and stdout are piped"),
    };
    let registered = stdin
        .set_nonblocking(true)
        .and_then(|()| stdout.set_nonblocking(true))
        .and_then(|()| {
            registry.register(
                &mut sock,
                Token(key * 3 + SOCK),
                Interest::READABLE | Interest::WRITABLE,
            )
        })
        .and_then(|()| registry.register(&mut stdin, Token(key * 3 + STDIN), Interest::WRITABLE))
        .and_then(|()| registry.register(&mut stdout, Token(key * 3 + STDOUT), Interest::READABLE));
    let conn = Conn {
        sock,
        stdin,
        stdout,
        child,
        to_cat: Vec::new(),
        to_sock: Vec::new(),
    };
    match registered {
        Ok(()) => Ok(conn),
        Err(e) => {
            close(registry, conn);
            Err(format!("registering: {e}"))
        }
    }
}

/// Deregister all three ends, then kill and reap cat (no zombies).
fn close(registry: &Registry, mut c: Conn) {
    let _ = registry.deregister(&mut c.sock);
    let _ = registry.deregister(&mut c.stdin);
    let _ = registry.deregister(&mut c.stdout);
    let _ = c.child.kill();
    let _ = c.child.wait();
}

/// Socket -> cat's stdin, until the socket is drained or the pipe is
/// full; `false` when the connection is done.
fn pump_in(c: &mut Conn, buf: &mut [u8], trust_short_read: bool) -> bool {
    relay(
        &mut c.sock,
        &mut c.stdin,
        &mut c.to_cat,
        buf,
        trust_short_read,
    )
}

/// cat's stdout -> socket, until the pipe is drained or the socket is
/// full; `false` when the connection is done.
fn pump_out(c: &mut Conn, buf: &mut [u8], trust_short_read: bool) -> bool {
    relay(
        &mut c.stdout,
        &mut c.sock,
        &mut c.to_sock,
        buf,
        trust_short_read,
    )
}

/// Read `from` and write each read to `to`; what `to` does not take goes
/// to `pending` (empty on entry) and stops the reading until a writable
/// edge flushes it. `false` on the end or an error.
fn relay(
    mut from: impl Read,
    mut to: impl Write,
    pending: &mut Vec<u8>,
    buf: &mut [u8],
    trust_short_read: bool,
) -> bool {
    loop {
        let n = match from.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        match write_some(&mut to, &buf[..n]) {
            Ok(w) if w == n => {}
            Ok(w) => {
                pending.extend_from_slice(&buf[w..n]);
                return true; // a writable edge will resume us
            }
            Err(_) => return false,
        }
        if n < buf.len() && trust_short_read {
            return true; // short read: drained
        }
    }
}

/// Write out `pending`; `Ok(true)` once it is empty.
fn flush(to: impl Write, pending: &mut Vec<u8>) -> io::Result<bool> {
    let n = write_some(to, pending)?;
    pending.drain(..n);
    Ok(pending.is_empty())
}

/// Write as much as `to` takes now, on until `WouldBlock` after a short
/// write: only that promises a writable edge.
fn write_some(mut to: impl Write, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match to.write(&data[done..]) {
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
