//! The raw mio TLS echo server (`--serve mio --app tls`): the ceiling for
//! the `tls10k` and `tlshs` workloads, a hand-written rustls driver with
//! no framework around it.
//!
//! The shape is the raw mio echo server's (`servers.rs`): one thread, a
//! `Slab` of connections, each socket registered once for read and write
//! (edge-triggered) with `TCP_NODELAY`, and a short read taken as
//! "drained". Each connection is a `rustls::ServerConnection` driven the
//! way rustls's own `tlsserver-mio` example drives it:
//!
//! 1. flush: `write_tls` straight to the socket while rustls
//!    `wants_write` (it hands its queued records to one `writev`);
//! 2. read: `read_tls` from the socket, `process_new_packets`;
//! 3. echo: take all the plaintext rustls holds with `reader().read` into
//!    the one shared buffer and hand it back with `writer().write_all`,
//!    which encrypts it into records at once; flush that (and any
//!    handshake messages); back to 2 until the socket is drained.
//!
//! A fatal TLS error queues an alert: one last flush sends it, then the
//! connection closes. The peer's `close_notify` (`reader().read` giving
//! `Ok(0)`) is answered with ours, and the connection closes once that is
//! written (FIN). A TCP EOF without one closes at once.
//!
//! # Flow control
//!
//! As in every other server, reading stops while writes are backed up:
//! when the socket refuses ciphertext (`WouldBlock`), the connection
//! reads nothing until a writable edge lets the flush finish. rustls's
//! outgoing buffer limit is off (the connection bounds it instead, as
//! protoloop's TLS layer does): every `read_tls` is followed by taking all
//! the plaintext it brought and flushing, and `read_tls` brings at most
//! one record's worth (about 16 KiB) before it must be processed, so
//! rustls never holds more than that, encrypted, when the connection
//! stops reading. No plaintext stays in rustls between events.
//!
//! # Copies
//!
//! Per echoed byte, three in user space, one of them inside rustls:
//!
//! - none on the way in: `read_tls` reads from the socket straight into
//!   rustls's record buffer (the kernel's copy), where the record is
//!   decrypted in place;
//! - rustls copies the decrypted payload into its received-plaintext
//!   queue (`take_received_plaintext`), as it does for every user of its
//!   buffered API;
//! - plaintext out of that queue into the shared buffer (`reader().read`);
//! - plaintext into rustls's outgoing record (`writer().write_all`,
//!   `OutboundChunks::copy_to_vec`), encrypted in place there;
//! - none on the way out: `write_tls` writes the records from rustls's
//!   buffer (the kernel's copy).
//!
//! tokio-rustls makes the same three. protoloop's TLS layer makes four:
//! the same three (the second into its `plain_in`), and before them the
//! ciphertext from the loop's read buffer into rustls (`read_tls` from a
//! slice), since its stream transport reads the socket before TLS sees
//! the bytes.
//!
//! The price of reading straight into rustls is the read size: rustls asks
//! the socket for at most 4 KiB beyond what it already holds, so a 10 KiB
//! record takes three `read`s where protoloop takes one and feeds rustls
//! from its 256 KiB buffer (tokio-rustls takes three too). Reading into a
//! shared buffer first and feeding `read_tls` from it, as protoloop does,
//! was tried: one `read` a request and, on a shared machine, about a tenth
//! less system time for a little more user time (the fourth copy). This
//! driver keeps the leaner user side, since the goals compare user time
//! with raw mio; on `tls10k` it makes more system calls than protoloop.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rustls::{ServerConfig, ServerConnection};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX - 1);

struct Conn {
    sock: TcpStream,
    tls: ServerConnection,
    /// Our `close_notify` is queued: close once it is written.
    closing: bool,
}

pub fn run(addr: SocketAddr, config: Arc<ServerConfig>) -> Result<(), String> {
    let (mut poll, listener) = crate::servers::mio_listen(addr, LISTENER)?;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    // Plaintext only, so no page alignment is needed for the kernel's
    // sake; larger than all the plaintext rustls holds at once, so one
    // `reader().read` takes it all.
    let mut plain = crate::load::AlignedBuf::new(64 * 1024);
    loop {
        crate::servers::mio_wait(&mut poll, &mut events)?;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                accept_all(&poll, &listener, &mut conns, &config);
                continue;
            }
            let key = ev.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            // The FIN raises no further edge: after it, read to EOF.
            let trust_short_read = !(ev.is_read_closed() || ev.is_error());
            if !serve_conn(conn, &mut plain, trust_short_read) {
                let mut c = conns.remove(key);
                let _ = poll.registry().deregister(&mut c.sock);
            }
        }
    }
}

fn accept_all(
    poll: &Poll,
    listener: &TcpListener,
    conns: &mut Slab<Conn>,
    config: &Arc<ServerConfig>,
) {
    loop {
        match listener.accept() {
            Ok((mut sock, _)) => {
                let _ = sock.set_nodelay(true);
                let mut tls = match ServerConnection::new(config.clone()) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("mio TLS server: {e}");
                        continue;
                    }
                };
                // Bounded by the connection instead (see the module docs).
                tls.set_buffer_limit(None);
                let entry = conns.vacant_entry();
                let token = Token(entry.key());
                if poll
                    .registry()
                    .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)
                    .is_ok()
                {
                    entry.insert(Conn {
                        sock,
                        tls,
                        closing: false,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) => {
                // Out of descriptors, most likely; the next event retries.
                eprintln!("mio TLS server: accept: {e}");
                return;
            }
        }
    }
}

/// What a step of the connection left it in.
enum Step {
    /// Go on.
    Go,
    /// The socket refused ciphertext: wait for a writable edge.
    Blocked,
    /// Close the connection now.
    Close,
}

/// Handle one readiness event; `false` when the connection is done.
fn serve_conn(conn: &mut Conn, plain: &mut [u8], trust_short_read: bool) -> bool {
    // Whatever the event was, flush first, then read (an edge that
    // arrived while we were backed up must not be lost). No plaintext is
    // left in rustls between events: `echo` takes all of it each time.
    match flush(conn) {
        Step::Go => {}
        Step::Blocked => return true,
        Step::Close => return false,
    }
    if conn.closing {
        return false; // our close_notify is out
    }
    loop {
        let mut rd = ShortRead {
            sock: &conn.sock,
            short: false,
        };
        match conn.tls.read_tls(&mut rd) {
            Ok(0) => return false, // EOF without close_notify
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
        let drained = rd.short && trust_short_read;
        if conn.tls.process_new_packets().is_err() {
            // The alert is queued: one last try to send it.
            let _ = flush(conn);
            return false;
        }
        match echo(conn, plain) {
            Step::Go => {}
            Step::Blocked => return true,
            Step::Close => return false,
        }
        if drained {
            return true;
        }
    }
}

/// Hand all the plaintext rustls holds back to it (encrypted at once),
/// then flush that and whatever else it queued (handshake messages,
/// alerts). On the peer's `close_notify`, queue ours.
fn echo(conn: &mut Conn, plain: &mut [u8]) -> Step {
    loop {
        match conn.tls.reader().read(plain) {
            Ok(0) => {
                // The peer's close_notify, after all its plaintext.
                conn.tls.send_close_notify();
                conn.closing = true;
                break;
            }
            Ok(n) => {
                // With no buffer limit rustls takes it all.
                if conn.tls.writer().write_all(&plain[..n]).is_err() {
                    return Step::Close;
                }
            }
            // Nothing (more) for now.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // EOF without close_notify.
            Err(_) => return Step::Close,
        }
    }
    match flush(conn) {
        Step::Go if conn.closing => Step::Close,
        other => other,
    }
}

/// Write what rustls has queued for the peer. As in `mio_echo`'s
/// `write_some`, a short write is followed by another until `WouldBlock`:
/// only that promises a writable edge.
fn flush(conn: &mut Conn) -> Step {
    while conn.tls.wants_write() {
        match conn.tls.write_tls(&mut conn.sock) {
            Ok(0) => return Step::Close,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Blocked,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Step::Close,
        }
    }
    Step::Go
}

/// The socket as `read_tls` sees it, noting whether the last read came
/// back short (the socket drained: no `read` just to see `WouldBlock`).
struct ShortRead<'a> {
    sock: &'a TcpStream,
    short: bool,
}

impl Read for ShortRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut sock = self.sock;
        let n = sock.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}
