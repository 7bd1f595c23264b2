//! The Rust echo servers, each run as its own process by `--serve KIND`
//! (`--app rpc` picks the request/reply servers of `rpc_servers.rs`):
//! protoloop, tokio `current_thread`, and a raw single-threaded mio loop.
//!
//! Every server speaks the same control protocol with the orchestrator
//! (see `proc.rs`): it prints `listening HOST:PORT` once it accepts, then
//! answers each `cpu` line on stdin with `cpu USER_US SYSTEM_US` (its own
//! `getrusage`), and exits when stdin closes. The control thread sleeps in
//! `read(0)` the rest of the time, so it costs the server nothing.
//!
//! All three echo what they read and stop reading while their writes are
//! backed up, so none buffers without bound.

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;

pub fn serve(
    kind: &str,
    listen: &str,
    app: &str,
    tls: Option<&crate::servers_more::TlsFiles>,
) -> Result<(), String> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| format!("--listen {listen:?}: {e}"))?;
    match app {
        "echo" => {}
        "rpc" => return crate::rpc_servers::serve(kind, addr),
        "tls" | "udp" | "pipe" => return crate::servers_more::serve(kind, app, addr, tls),
        other => {
            return Err(format!(
                "unknown --app {other:?}: expected echo, rpc, tls, udp or pipe"
            ));
        }
    }
    match kind {
        "protoloop" => protoloop_echo(addr, protoloop::ServerOptions::default()),
        "tokio" => tokio_echo(addr, None),
        "mio" => mio_echo::run(addr),
        other => Err(format!(
            "unknown server {other:?}: expected protoloop, tokio or mio"
        )),
    }
}

/// Announce the address and start answering the orchestrator.
pub fn announce(addr: SocketAddr) {
    announce_str(&addr.to_string());
}

/// [`announce`] for an address already written out.
pub fn announce_str(addr: &str) {
    println!("listening {addr}");
    let _ = io::stdout().flush();
    std::thread::spawn(control);
}

/// The raw mio servers' start: a `Poll` with a listener on `addr`
/// registered under `token`, announced to the orchestrator.
pub fn mio_listen(
    addr: SocketAddr,
    token: mio::Token,
) -> Result<(mio::Poll, mio::net::TcpListener), String> {
    let poll = mio::Poll::new().map_err(|e| e.to_string())?;
    let mut listener =
        mio::net::TcpListener::bind(addr).map_err(|e| format!("listening on {addr}: {e}"))?;
    poll.registry()
        .register(&mut listener, token, mio::Interest::READABLE)
        .map_err(|e| e.to_string())?;
    announce(listener.local_addr().map_err(|e| e.to_string())?);
    Ok((poll, listener))
}

/// Wait for events with no timeout, as every raw mio server does,
/// retrying when a signal interrupts the wait.
pub fn mio_wait(poll: &mut mio::Poll, events: &mut mio::Events) -> Result<(), String> {
    loop {
        match poll.poll(events, None) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
    }
}

/// Run `serve` on a tokio `current_thread` runtime: every tokio peer.
pub fn tokio_current_thread(
    serve: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("building the runtime: {e}"))?
        .block_on(serve)
}

/// Listen on `addr`, announce it, and hand every accepted connection
/// (with `TCP_NODELAY`) to `on_conn`, which spawns its task. Runs for
/// ever inside [`tokio_current_thread`]; a failed accept is reported on
/// stderr under `name` and the loop goes on.
pub async fn tokio_accept_loop(
    addr: SocketAddr,
    name: &str,
    mut on_conn: impl FnMut(tokio::net::TcpStream),
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("listening on {addr}: {e}"))?;
    announce(listener.local_addr().map_err(|e| e.to_string())?);
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                let _ = sock.set_nodelay(true);
                on_conn(sock);
            }
            Err(e) => eprintln!("{name}: accept: {e}"),
        }
    }
}

fn control() {
    let stdin = io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "cpu" {
            let (user, sys) = own_cpu_us();
            println!("cpu {user} {sys}");
            let _ = io::stdout().flush();
        }
    }
    // The orchestrator is done with us (or gone).
    std::process::exit(0);
}

fn own_cpu_us() -> (u64, u64) {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is valid for writes of a `rusage`, which getrusage fills.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(ru.ru_utime), us(ru.ru_stime))
}

// ---------------------------------------------------------------- protoloop

/// Also the TLS echo server, with `opts` asking for TLS.
pub fn protoloop_echo(addr: SocketAddr, opts: protoloop::ServerOptions) -> Result<(), String> {
    use protoloop::{EventLoop, Protocol, Transport};

    /// The textbook asyncio echo protocol, with flow control.
    struct Echo(Option<Transport>);
    impl Protocol for Echo {
        fn connection_made(&mut self, t: Transport) {
            self.0 = Some(t);
        }
        fn data_received(&mut self, data: &[u8]) {
            if let Some(t) = &self.0 {
                // Fails only once the connection is closing.
                let _ = t.write(data);
            }
        }
        fn pause_writing(&mut self) {
            if let Some(t) = &self.0 {
                t.pause_reading();
            }
        }
        fn resume_writing(&mut self) {
            if let Some(t) = &self.0 {
                t.resume_reading();
            }
        }
    }

    let lp = EventLoop::new().map_err(|e| format!("creating the loop: {e}"))?;
    let server = lp
        .handle()
        .create_server(|| Echo(None), addr, opts)
        .map_err(|e| e.to_string())?;
    announce(server.local_addrs()[0]);
    lp.run_forever().map_err(|e| e.to_string())
}

// -------------------------------------------------------------------- tokio

/// Also the TLS echo server, with a TLS acceptor.
pub fn tokio_echo(addr: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> Result<(), String> {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    async fn echo(mut sock: impl AsyncRead + AsyncWrite + Unpin) {
        // What tokio users (and tokio-util's codecs) write: a `BytesMut`
        // filled by `read_buf`, so memory is touched only as data
        // arrives. 64 KiB: about as much as loopback hands over in one
        // read (tokio's example's 1 KiB would make a 100 KiB message cost
        // a hundred reads).
        let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
        loop {
            buf.clear();
            match sock.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if sock.write_all(&buf).await.is_err() {
                return;
            }
        }
    }

    tokio_current_thread(tokio_accept_loop(addr, "tokio server", |sock| {
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => echo(sock).await,
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(sock).await {
                        echo(s).await
                    }
                }
            }
        });
    }))
}

// ---------------------------------------------------------------- raw mio

/// The ceiling: one thread, no framework, one shared (page-aligned: see
/// `AlignedBuf`) read buffer, every
/// socket registered once for both directions (edge-triggered), and a
/// short read taken as "drained" so a request costs one `read`.
mod mio_echo {
    use std::io::{self, Read, Write};
    use std::net::SocketAddr;

    use mio::net::{TcpListener, TcpStream};
    use mio::{Events, Interest, Poll, Token};
    use slab::Slab;

    const LISTENER: Token = Token(usize::MAX - 1);

    struct Conn {
        sock: TcpStream,
        /// Bytes read but not yet written back; while non-empty, reading
        /// stops (the echo's flow control).
        pending: Vec<u8>,
    }

    pub fn run(addr: SocketAddr) -> Result<(), String> {
        let (mut poll, listener) = super::mio_listen(addr, LISTENER)?;
        let mut conns: Slab<Conn> = Slab::new();
        let mut events = Events::with_capacity(1024);
        let mut buf = crate::load::AlignedBuf::new(256 * 1024);
        loop {
            super::mio_wait(&mut poll, &mut events)?;
            for ev in events.iter() {
                if ev.token() == LISTENER {
                    accept_all(&poll, &listener, &mut conns);
                    continue;
                }
                let key = ev.token().0;
                let Some(conn) = conns.get_mut(key) else {
                    continue;
                };
                // The FIN raises no further edge: after it, read to EOF.
                let trust_short_read = !(ev.is_read_closed() || ev.is_error());
                if !serve_conn(conn, &mut buf, trust_short_read) {
                    let mut c = conns.remove(key);
                    let _ = poll.registry().deregister(&mut c.sock);
                }
            }
        }
    }

    fn accept_all(poll: &Poll, listener: &TcpListener, conns: &mut Slab<Conn>) {
        loop {
            match listener.accept() {
                Ok((mut sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    let entry = conns.vacant_entry();
                    let token = Token(entry.key());
                    if poll
                        .registry()
                        .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)
                        .is_ok()
                    {
                        entry.insert(Conn {
                            sock,
                            pending: Vec::new(),
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of descriptors, most likely; the next event retries.
                    eprintln!("mio server: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Handle one readiness event; `false` when the connection is done.
    fn serve_conn(conn: &mut Conn, buf: &mut [u8], trust_short_read: bool) -> bool {
        // Whatever the event was, flush first, then read (an edge that
        // arrived while we were backed up must not be lost).
        if !conn.pending.is_empty() {
            match write_some(&mut conn.sock, &conn.pending) {
                Ok(n) => {
                    conn.pending.drain(..n);
                }
                Err(_) => return false,
            }
            if !conn.pending.is_empty() {
                return true;
            }
        }
        loop {
            let n = match conn.sock.read(buf) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            };
            match write_some(&mut conn.sock, &buf[..n]) {
                Ok(w) if w == n => {}
                Ok(w) => {
                    conn.pending.extend_from_slice(&buf[w..n]);
                    return true; // a writable edge will resume us
                }
                Err(_) => return false,
            }
            if n < buf.len() && trust_short_read {
                return true; // short read: drained
            }
        }
    }

    /// Write as much as the socket takes now. After a short write, write
    /// on until `WouldBlock`: only that promises a writable edge (Linux
    /// sends one after a short write too, gVisor does not).
    fn write_some(sock: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < data.len() {
            match sock.write(&data[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}
