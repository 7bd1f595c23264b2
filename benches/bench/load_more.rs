//! Load for the TLS and UDP workloads, on a tokio `current_thread`
//! runtime in the orchestrator's thread (as the mio generator is for the
//! others: one thread, the same for every server):
//!
//! - TLS echo: `conns` TLS connections (kept from warm-up to measurement),
//!   each writing a message and reading all of it back, then the next;
//! - TLS handshakes: `conns` clients, each connecting, completing a
//!   handshake and one 1-byte echo, closing (close_notify, then FIN), and
//!   starting over; a request is one whole connection;
//! - UDP echo: `conns` sockets, each with one datagram in flight. A
//!   datagram not back within 200 ms counts as lost and is sent again.
//!
//! Clients skip certificate verification: the server's CPU is what is
//! measured, and the chain is the orchestrator's own.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::load::Phase;

/// A request that takes this long means the server is stuck.
const STALL: Duration = Duration::from_secs(10);
/// A UDP datagram not back by then is taken as lost.
const UDP_LOST: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TlsEcho,
    TlsHandshake,
    Udp,
}

pub struct MoreLoad {
    rt: tokio::runtime::Runtime,
    kind: Kind,
    addr: SocketAddr,
    size: usize,
    connector: TlsConnector,
    tls: Vec<TlsStream<TcpStream>>,
    udp: Vec<UdpSocket>,
    conns: usize,
    /// Datagrams taken as lost, over the whole run.
    pub lost: u64,
}

fn connector() -> TlsConnector {
    let config = protoloop::tls::dangerous_client_config_without_verification();
    TlsConnector::from(Arc::new(config))
}

fn server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("a valid name")
}

async fn tls_connect(c: &TlsConnector, addr: SocketAddr) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    c.connect(server_name(), tcp).await
}

fn stalled() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "no answer within 10 s")
}

impl MoreLoad {
    pub fn connect(
        kind: Kind,
        addr: SocketAddr,
        conns: usize,
        size: usize,
    ) -> io::Result<MoreLoad> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut me = MoreLoad {
            rt,
            kind,
            addr,
            size,
            connector: connector(),
            tls: Vec::new(),
            udp: Vec::new(),
            conns,
            lost: 0,
        };
        match kind {
            Kind::TlsEcho => {
                let c = me.connector.clone();
                me.tls = me.rt.block_on(async move {
                    let mut v = Vec::new();
                    for _ in 0..conns {
                        let s = tokio::time::timeout(STALL, tls_connect(&c, addr))
                            .await
                            .map_err(|_| stalled())??;
                        v.push(s);
                    }
                    Ok::<_, io::Error>(v)
                })?;
            }
            Kind::Udp => {
                me.udp = me.rt.block_on(async move {
                    let mut v = Vec::new();
                    for _ in 0..conns {
                        let s = UdpSocket::bind("127.0.0.1:0").await?;
                        s.connect(addr).await?;
                        v.push(s);
                    }
                    Ok::<_, io::Error>(v)
                })?;
            }
            Kind::TlsHandshake => {}
        }
        Ok(me)
    }

    pub fn run(&mut self, dur: Duration) -> io::Result<Phase> {
        let msg: Arc<Vec<u8>> = Arc::new((0..self.size).map(|i| (i % 251) as u8).collect());
        let started = Instant::now();
        let until = started + dur;
        let (addr, connector) = (self.addr, self.connector.clone());
        let results = match self.kind {
            Kind::TlsEcho => {
                let streams = std::mem::take(&mut self.tls);
                let out = self.rt.block_on(async move {
                    let tasks: Vec<_> = streams
                        .into_iter()
                        .map(|s| tokio::spawn(tls_echo(s, msg.clone(), until)))
                        .collect();
                    join(tasks).await
                })?;
                let mut results = Vec::new();
                for (s, n, lat) in out {
                    self.tls.push(s);
                    results.push((n, lat, 0));
                }
                results
            }
            Kind::TlsHandshake => {
                let conns = self.conns;
                self.rt.block_on(async move {
                    let tasks: Vec<_> = (0..conns)
                        .map(|_| tokio::spawn(handshakes(connector.clone(), addr, until)))
                        .collect();
                    join(tasks).await
                })?
            }
            Kind::Udp => {
                let socks = std::mem::take(&mut self.udp);
                let out = self.rt.block_on(async move {
                    let tasks: Vec<_> = socks
                        .into_iter()
                        .map(|s| tokio::spawn(udp_echo(s, msg.clone(), until)))
                        .collect();
                    join(tasks).await
                })?;
                let mut results = Vec::new();
                for (s, n, lat, lost) in out {
                    self.udp.push(s);
                    results.push((n, lat, lost));
                }
                results
            }
        };
        let mut phase = Phase {
            elapsed: started.elapsed(),
            ..Phase::default()
        };
        for (n, lat, lost) in results {
            phase.requests += n;
            phase.latencies_ns.extend(lat);
            self.lost += lost;
        }
        phase.latencies_ns.sort_unstable();
        Ok(phase)
    }
}

async fn join<T>(tasks: Vec<tokio::task::JoinHandle<io::Result<T>>>) -> io::Result<Vec<T>> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.map_err(io::Error::other)??);
    }
    Ok(out)
}

fn ns(since: Instant) -> u32 {
    since.elapsed().as_nanos().min(u32::MAX as u128) as u32
}

async fn tls_echo(
    mut s: TlsStream<TcpStream>,
    msg: Arc<Vec<u8>>,
    until: Instant,
) -> io::Result<(TlsStream<TcpStream>, u64, Vec<u32>)> {
    let mut buf = vec![0u8; msg.len()];
    let (mut n, mut lat) = (0u64, Vec::new());
    while Instant::now() < until {
        let t0 = Instant::now();
        let round = async {
            s.write_all(&msg).await?;
            s.read_exact(&mut buf).await
        };
        tokio::time::timeout(STALL, round)
            .await
            .map_err(|_| stalled())??;
        if buf != *msg {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "echo differs"));
        }
        lat.push(ns(t0));
        n += 1;
    }
    Ok((s, n, lat))
}

async fn handshakes(
    c: TlsConnector,
    addr: SocketAddr,
    until: Instant,
) -> io::Result<(u64, Vec<u32>, u64)> {
    let (mut n, mut lat) = (0u64, Vec::new());
    while Instant::now() < until {
        let t0 = Instant::now();
        let one = async {
            let mut s = tls_connect(&c, addr).await?;
            s.write_all(b"x").await?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await?;
            // close_notify and FIN, then wait for the server's FIN, so
            // TIME_WAIT stays on the server's side and the client's ports
            // are not used up.
            s.shutdown().await?;
            let _ = s.read(&mut b).await;
            Ok::<_, io::Error>(())
        };
        tokio::time::timeout(STALL, one)
            .await
            .map_err(|_| stalled())??;
        lat.push(ns(t0));
        n += 1;
    }
    Ok((n, lat, 0))
}

async fn udp_echo(
    s: UdpSocket,
    msg: Arc<Vec<u8>>,
    until: Instant,
) -> io::Result<(UdpSocket, u64, Vec<u32>, u64)> {
    let mut buf = vec![0u8; msg.len() + 1];
    let (mut n, mut lat, mut lost) = (0u64, Vec::new(), 0u64);
    let mut lost_in_a_row = 0;
    while Instant::now() < until {
        let t0 = Instant::now();
        s.send(&msg).await?;
        match tokio::time::timeout(UDP_LOST, s.recv(&mut buf)).await {
            Ok(got) => {
                if buf[..got?] != msg[..] {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "echo differs"));
                }
                lat.push(ns(t0));
                n += 1;
                lost_in_a_row = 0;
            }
            Err(_) => {
                lost += 1;
                lost_in_a_row += 1;
                if lost_in_a_row * UDP_LOST >= STALL {
                    return Err(stalled());
                }
            }
        }
    }
    Ok((s, n, lat, lost))
}
