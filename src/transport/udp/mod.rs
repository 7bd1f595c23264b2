//! UDP: [`Handle::create_datagram_endpoint`] and its [`DatagramOptions`].
//!
//! The endpoint is the crate's datagram endpoint (see [`DatagramTransport`]
//! for sending, flow control and errors) over a UDP socket, bound to a
//! local address, connected to a remote one, or both.
//!
//! # Addresses
//!
//! Host names are resolved on the loop's executor. With only a local
//! address, each resolved address is tried until one binds. With a remote
//! address the endpoint is connected (it sends with `send` and receives
//! only from the peer); each resolved remote address is tried in turn,
//! bound first to the local address of the same family if one was given.
//!
//! # Errors for earlier datagrams (Linux)
//!
//! The socket is made with `IP_RECVERR` (`IPV6_RECVERR` for IPv6), so ICMP
//! errors are read from the socket's error queue and `error_received`
//! gets the destination they concern, for connected and unconnected
//! endpoints alike. Elsewhere an ICMP error surfaces, without an address,
//! as the result of a later receive on a connected endpoint.
//!
//! # Size
//!
//! One UDP datagram carries at most 65,507 bytes over IPv4 and 65,527 over
//! IPv6; `sendto` refuses larger ones with `EMSGSIZE`.

#[cfg(any(target_os = "linux", target_os = "android"))]
mod errqueue;

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;

use socket2::{Domain, Socket, Type};

use super::datagram::{DatagramEndpoint, DatagramError, DatagramSocket};
use super::tcp::Address;
use super::{DatagramTransport, ProtocolHandle, SocketAddress};
use crate::error::{Error, Result};
use crate::event_loop::Handle;
use crate::protocol::DatagramProtocol;

/// Largest UDP payload over IPv4: 65,535 minus the IP and UDP headers.
const MAX_UDP_V4: usize = 65_507;
/// Largest UDP payload over IPv6 (no jumbograms): 65,535 minus the UDP header.
const MAX_UDP_V6: usize = 65_527;

/// Options for [`Handle::create_datagram_endpoint`]. At least one of
/// `local_addr` and `remote_addr` is needed.
///
/// ```
/// let opts = protoloop::DatagramOptions::default()
///     .local_addr("127.0.0.1:0")
///     .reuse_port(true)
///     .allow_broadcast(true);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Default)]
pub struct DatagramOptions {
    local_addr: Option<Address>,
    remote_addr: Option<Address>,
    reuse_address: bool,
    reuse_port: bool,
    allow_broadcast: bool,
}

impl DatagramOptions {
    /// Bind to this address (port 0: any free port).
    pub fn local_addr(mut self, addr: impl Into<Address>) -> Self {
        self.local_addr = Some(addr.into());
        self
    }
    /// Connect to this address: datagrams go there with
    /// [`DatagramTransport::send`], and only its datagrams are received.
    pub fn remote_addr(mut self, addr: impl Into<Address>) -> Self {
        self.remote_addr = Some(addr.into());
        self
    }
    /// `SO_REUSEADDR` (default off).
    pub fn reuse_address(mut self, on: bool) -> Self {
        self.reuse_address = on;
        self
    }
    /// `SO_REUSEPORT` (default off): several sockets may bind the same
    /// address and port (each needs it on).
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }
    /// `SO_BROADCAST` (default off): allow sending to broadcast addresses;
    /// without it the kernel refuses them with `EACCES`.
    pub fn allow_broadcast(mut self, on: bool) -> Self {
        self.allow_broadcast = on;
        self
    }
}

/// A UDP socket as the datagram endpoint sees it.
pub(crate) struct UdpSock {
    sock: UdpSocket,
    v6: bool,
    errqueue: bool,
}

impl UdpSock {
    fn new(sock: Socket, v6: bool) -> UdpSock {
        let sock: UdpSocket = sock.into();
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let errqueue = errqueue::enable(sock.as_raw_fd(), v6).is_ok();
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let errqueue = false;
        UdpSock { sock, v6, errqueue }
    }
}

fn not_inet(addr: &SocketAddress) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("a UDP endpoint cannot send to the Unix address {addr}"),
    )
}

impl DatagramSocket for UdpSock {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    #[inline]
    fn send_to(&self, buf: &[u8], addr: &SocketAddress) -> io::Result<usize> {
        match addr {
            SocketAddress::Inet(a) => self.sock.send_to(buf, a),
            other => Err(not_inet(other)),
        }
    }

    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.sock.send(buf)
    }

    type Addr = SocketAddr;

    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.sock.recv_from(buf)
    }

    fn local(&self) -> Option<SocketAddress> {
        self.sock.local_addr().ok().map(SocketAddress::Inet)
    }

    #[inline]
    fn check_dest(&self, addr: &SocketAddress) -> io::Result<()> {
        match addr {
            SocketAddress::Inet(a) if a.is_ipv6() && !self.v6 => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("an IPv4 UDP endpoint cannot send to the IPv6 address {a}"),
            )),
            SocketAddress::Inet(_) => Ok(()),
            other => Err(not_inet(other)),
        }
    }

    #[inline]
    fn max_datagram(&self, dest: Option<&SocketAddress>) -> usize {
        let v4_path = match dest {
            Some(SocketAddress::Inet(SocketAddr::V6(a))) => a.ip().to_ipv4_mapped().is_some(),
            Some(SocketAddress::Inet(SocketAddr::V4(_))) => true,
            _ => !self.v6,
        };
        if v4_path { MAX_UDP_V4 } else { MAX_UDP_V6 }
    }

    fn read_errors(&self, out: &mut Vec<DatagramError>) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if self.errqueue {
            errqueue::drain(self.sock.as_raw_fd(), out);
        }
        let _ = out;
    }

    fn udp(&self) -> Option<&UdpSocket> {
        Some(&self.sock)
    }

    fn kind(&self) -> &'static str {
        "UDP"
    }
}

/// A non-blocking UDP socket of `addr`'s family with the options set.
fn new_socket(addr: SocketAddr, opts: &DatagramOptions) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if opts.reuse_address {
        s.set_reuse_address(true)?;
    }
    if opts.reuse_port {
        s.set_reuse_port(true)?;
    }
    if opts.allow_broadcast {
        s.set_broadcast(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Bind to the first local address that works.
fn open_bound(locals: &[SocketAddr], opts: &DatagramOptions) -> Result<UdpSock> {
    let mut last = None;
    for l in locals {
        let r = new_socket(*l, opts).and_then(|s| s.bind(&(*l).into()).map(|()| s));
        match r {
            Ok(s) => return Ok(UdpSock::new(s, l.is_ipv6())),
            Err(e) => last = Some(Error::io(format!("binding {l}"), e)),
        }
    }
    Err(last.expect("resolve never returns an empty list"))
}

/// Connect to the first remote address that works.
fn open_connected(
    target: String,
    locals: Option<&[SocketAddr]>,
    remotes: &[SocketAddr],
    opts: &DatagramOptions,
) -> Result<(UdpSock, SocketAddr)> {
    let mut attempts = Vec::new();
    for r in remotes {
        let local = match locals {
            Some(ls) => match ls.iter().find(|l| l.is_ipv4() == r.is_ipv4()) {
                Some(l) => Some(*l),
                None => {
                    let e = io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "no local address of the same family",
                    );
                    attempts.push((*r, Arc::new(e)));
                    continue;
                }
            },
            None => None,
        };
        let res = new_socket(*r, opts).and_then(|s| {
            if let Some(l) = local {
                s.bind(&l.into())?;
            }
            s.connect(&(*r).into())?;
            Ok(s)
        });
        match res {
            Ok(s) => return Ok((UdpSock::new(s, r.is_ipv6()), *r)),
            Err(e) => attempts.push((*r, Arc::new(e))),
        }
    }
    Err(Error::Connect { target, attempts })
}

impl Handle {
    /// Make a UDP endpoint and run the protocol made by `factory` on it
    /// (asyncio's `create_datagram_endpoint`). Resolves to the transport and
    /// a handle to the protocol once `connection_made` has been called.
    ///
    /// ```
    /// use protoloop::{DatagramOptions, DatagramProtocol, DatagramTransport, EventLoop, SocketAddress};
    ///
    /// struct Echo(Option<DatagramTransport>);
    /// impl DatagramProtocol for Echo {
    ///     fn connection_made(&mut self, t: DatagramTransport) { self.0 = Some(t); }
    ///     fn datagram_received(&mut self, data: &[u8], addr: SocketAddress) {
    ///         let _ = self.0.as_ref().unwrap().sendto(data, addr);
    ///     }
    /// }
    /// struct Got(Vec<u8>);
    /// impl DatagramProtocol for Got {
    ///     fn datagram_received(&mut self, data: &[u8], _: SocketAddress) { self.0 = data.to_vec(); }
    /// }
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let h = lp.handle();
    /// let got = lp.run_until_complete(async move {
    ///     let local = DatagramOptions::default().local_addr("127.0.0.1:0");
    ///     let (server, _) = h.create_datagram_endpoint(|| Echo(None), local).await.unwrap();
    ///     let there = server.local_addr().unwrap().to_string();
    ///     let remote = DatagramOptions::default().remote_addr(there.as_str());
    ///     let (client, proto) = h.create_datagram_endpoint(|| Got(Vec::new()), remote).await.unwrap();
    ///     client.send(b"ping").unwrap();
    ///     for _ in 0..1000 {
    ///         if !proto.with(|p| p.0.is_empty()) { break; }
    ///         h.sleep(std::time::Duration::from_millis(1)).await;
    ///     }
    ///     client.close();
    ///     server.close();
    ///     proto.with(|p| p.0.clone())
    /// }).unwrap();
    /// assert_eq!(got, b"ping");
    /// ```
    pub fn create_datagram_endpoint<P, F>(
        &self,
        factory: F,
        opts: DatagramOptions,
    ) -> impl Future<Output = Result<(DatagramTransport, ProtocolHandle<P>)>> + 'static
    where
        P: DatagramProtocol,
        F: FnOnce() -> P + 'static,
    {
        let handle = self.clone();
        async move {
            let locals = match opts.local_addr.clone() {
                Some(a) => Some(a.resolve(&handle).await?),
                None => None,
            };
            let (sock, peer) = match opts.remote_addr.clone() {
                Some(remote) => {
                    let target = remote.to_string();
                    let remotes = remote.resolve(&handle).await?;
                    let (s, peer) = open_connected(target, locals.as_deref(), &remotes, &opts)?;
                    (s, Some(SocketAddress::Inet(peer)))
                }
                None => match &locals {
                    Some(ls) => (open_bound(ls, &opts)?, None),
                    None => {
                        return Err(Error::io(
                            "creating a datagram endpoint",
                            io::Error::new(
                                io::ErrorKind::InvalidInput,
                                "a local_addr or a remote_addr is needed",
                            ),
                        ));
                    }
                },
            };
            let proto = Rc::new(RefCell::new(factory()));
            let t = DatagramEndpoint::start(&handle, sock, peer, proto.clone())
                .map_err(|e| Error::io("registering the socket", e))?;
            Ok((t, ProtocolHandle::new(proto)))
        }
    }
}
