//! The servers of the fourth workload set (`--app tls|udp|pipe`):
//!
//! - `tls`: the echo server behind TLS (rustls, ring provider, the
//!   certificate and key the orchestrator wrote: `--cert`, `--key`);
//!   protoloop through `ServerOptions::tls`, tokio through tokio-rustls,
//!   raw mio through a hand-written rustls driver (`mio_tls.rs`).
//! - `udp`: a datagram echo; protoloop, tokio and raw mio.
//! - `pipe`: a TCP echo relayed through a `cat` child per connection
//!   (socket -> cat's stdin, cat's stdout -> socket), so each message
//!   crosses two pipes; protoloop, tokio and raw mio (`mio_pipe.rs`). The
//!   server's CPU covers the socket and both pipe ends, not `cat` itself.
//!
//! The control protocol is the echo servers' (`servers.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::servers::{announce, announce_str, tokio_accept_loop, tokio_current_thread};

/// Where the orchestrator put the TLS certificate and key (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn serve(
    kind: &str,
    app: &str,
    addr: SocketAddr,
    tls: Option<&TlsFiles>,
) -> Result<(), String> {
    match (app, kind) {
        ("tls", "protoloop" | "tokio" | "mio") => {
            let files = tls.ok_or("--app tls needs --cert PATH --key PATH")?;
            let config = server_config(files)?;
            match kind {
                "protoloop" => crate::servers::protoloop_echo(
                    addr,
                    protoloop::ServerOptions::default().tls(config),
                ),
                "tokio" => {
                    crate::servers::tokio_echo(addr, Some(tokio_rustls::TlsAcceptor::from(config)))
                }
                _ => crate::mio_tls::run(addr, config),
            }
        }
        ("udp", "protoloop") => protoloop_udp(addr),
        ("udp", "tokio") => tokio_udp(addr),
        ("udp", "mio") => mio_udp(addr),
        ("pipe", "protoloop") => protoloop_pipe(addr),
        ("pipe", "tokio") => tokio_pipe(addr),
        ("pipe", "mio") => crate::mio_pipe::run(addr),
        _ => Err(format!("no {kind} server for --app {app}")),
    }
}

fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = protoloop::tls::load_certificates(&files.cert).map_err(|e| e.to_string())?;
    let key = protoloop::tls::load_private_key(&files.key).map_err(|e| e.to_string())?;
    protoloop::tls::server_config(certs, key)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// A self-signed certificate for `localhost` / 127.0.0.1, written as
/// `cert.pem` and `key.pem` into `dir`.
pub fn write_test_certificate(dir: &std::path::Path) -> Result<TlsFiles, String> {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(|e| format!("making a certificate: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, c.cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&files.key, c.signing_key.serialize_pem()).map_err(|e| e.to_string())?;
    Ok(files)
}

// --------------------------------------------------------------------- udp

fn protoloop_udp(addr: SocketAddr) -> Result<(), String> {
    use protoloop::{
        DatagramOptions, DatagramProtocol, DatagramTransport, EventLoop, SocketAddress,
    };

    /// asyncio's datagram echo: send each datagram back where it came from.
    struct Echo(Option<DatagramTransport>);
    impl DatagramProtocol for Echo {
        fn connection_made(&mut self, t: DatagramTransport) {
            self.0 = Some(t);
        }
        fn datagram_received(&mut self, data: &[u8], from: SocketAddress) {
            if let Some(t) = &self.0 {
                // UDP: a datagram that cannot go now is dropped, as the
                // other servers drop it.
                let _ = t.sendto(data, from);
            }
        }
    }

    let lp = EventLoop::new().map_err(|e| format!("creating the loop: {e}"))?;
    let h = lp.handle();
    let opts = DatagramOptions::default().local_addr(addr.to_string().as_str());
    let (t, _) = lp
        .run_until_complete(h.create_datagram_endpoint(|| Echo(None), opts))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let local = t.local_addr().ok_or("the endpoint has no address")?;
    announce_str(&local.to_string());
    lp.run_forever().map_err(|e| e.to_string())
}

fn tokio_udp(addr: SocketAddr) -> Result<(), String> {
    tokio_current_thread(async move {
        let sock = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|e| format!("binding {addr}: {e}"))?;
        announce(sock.local_addr().map_err(|e| e.to_string())?);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let _ = sock.send_to(&buf[..n], from).await;
        }
    })
}

/// One socket, edge-triggered: read every datagram until `WouldBlock`,
/// sending each back at once (dropped if the socket buffer is full).
fn mio_udp(addr: SocketAddr) -> Result<(), String> {
    use mio::{Events, Interest, Poll, Token, net::UdpSocket};
    use std::io::ErrorKind;

    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut sock = UdpSocket::bind(addr).map_err(|e| format!("binding {addr}: {e}"))?;
    poll.registry()
        .register(&mut sock, Token(0), Interest::READABLE)
        .map_err(|e| e.to_string())?;
    announce(sock.local_addr().map_err(|e| e.to_string())?);
    let mut events = Events::with_capacity(16);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let _ = sock.send_to(&buf[..n], from);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // An ICMP error from an earlier send: go on reading.
                Err(_) => continue,
            }
        }
    }
}

// -------------------------------------------------------------------- pipe

fn protoloop_pipe(addr: SocketAddr) -> Result<(), String> {
    use protoloop::{
        CloseReason, EventLoop, Handle, Protocol, ServerOptions, Stdio, SubprocessOptions,
        SubprocessProtocol, SubprocessTransport, Transport,
    };

    /// The socket side: what arrives goes to cat's stdin.
    #[derive(Default)]
    struct Relay {
        cat: Option<SubprocessTransport>,
        stdin: Option<Transport>,
    }
    /// cat's side: what it prints goes back to the socket.
    struct Cat(Transport);

    impl Protocol for Relay {
        fn connection_made(&mut self, t: Transport) {
            let sock = t.clone();
            let opts = SubprocessOptions::default().stderr(Stdio::Null);
            match Handle::current().subprocess_exec(move || Cat(sock), "cat", [""; 0], opts) {
                Ok((cat, _)) => {
                    self.stdin = cat.get_pipe_transport(0);
                    self.cat = Some(cat);
                }
                Err(e) => {
                    eprintln!("protoloop pipe server: starting cat: {e}");
                    t.abort();
                }
            }
        }
        fn data_received(&mut self, data: &[u8]) {
            if let Some(stdin) = &self.stdin {
                let _ = stdin.write(data);
            }
        }
        fn connection_lost(&mut self, _: CloseReason) {
            if let Some(cat) = &self.cat {
                let _ = cat.kill();
                cat.close();
            }
        }
    }
    impl SubprocessProtocol for Cat {
        fn pipe_data_received(&mut self, _fd: i32, data: &[u8]) {
            let _ = self.0.write(data);
        }
    }

    let lp = EventLoop::new().map_err(|e| format!("creating the loop: {e}"))?;
    let server = lp
        .handle()
        .create_server(Relay::default, addr, ServerOptions::default())
        .map_err(|e| e.to_string())?;
    announce(server.local_addrs()[0]);
    lp.run_forever().map_err(|e| e.to_string())
}

fn tokio_pipe(addr: SocketAddr) -> Result<(), String> {
    use std::process::Stdio;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// Copy with a 64 KiB buffer (what a pipe holds; `tokio::io::copy`'s
    /// 8 KiB would cost eight times the calls).
    async fn pump(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    tokio_current_thread(tokio_accept_loop(addr, "tokio pipe server", |sock| {
        let child = tokio::process::Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                eprintln!("tokio pipe server: starting cat: {e}");
                return;
            }
        };
        let (cin, cout) = (child.stdin.take(), child.stdout.take());
        let (Some(cin), Some(cout)) = (cin, cout) else {
            return;
        };
        tokio::spawn(async move {
            let (rd, wr) = sock.into_split();
            // Either side ending ends the connection (and cat).
            tokio::select! {
                _ = pump(rd, cin) => {}
                _ = pump(cout, wr) => {}
            }
            drop(child);
        });
    }))
}
