//! Unix datagram sockets: [`Handle::create_unix_datagram_endpoint`] and
//! its [`UnixDatagramOptions`].
//!
//! The endpoint is the same [`DatagramTransport`] and
//! [`DatagramProtocol`] as UDP; addresses are
//! [`SocketAddress::Unix`]. Unix datagrams are reliable and ordered: when
//! the receiver's queue is full the kernel says `WouldBlock` rather than
//! dropping, and the endpoint queues with flow control as for UDP.
//!
//! # Binding
//!
//! A local path is handled as for a Unix server (see the
//! [`unix` module](super::unix)): a stale socket file is removed, a live
//! one never; the file is removed when the endpoint closes. An endpoint
//! without a local address can send but cannot be answered.
//!
//! # No wake-up for a full peer (Linux)
//!
//! An unconnected socket that finds its destination's queue full gets
//! `EAGAIN`, but the kernel never signals when that queue has room (and
//! reports the socket writable after every refusal, so waiting for
//! writability would spin). Such an endpoint retries its queue on a timer
//! instead, 1 ms doubling to 16 ms, until it drains. A connected endpoint
//! is woken by the kernel when its peer has room.

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::rc::Rc;

use socket2::{SockAddr, SockRef, Socket, Type};

use super::datagram::{DatagramEndpoint, DatagramSocket};
use super::unix::{SocketFile, UnixAddr, bind_unix};
use super::{DatagramTransport, ProtocolHandle, SocketAddress};
use crate::error::{Error, Result};
use crate::event_loop::Handle;
use crate::protocol::DatagramProtocol;

/// Linux refuses a datagram longer than the send buffer less this much.
const SNDBUF_SLACK: usize = 32;

/// Options for [`Handle::create_unix_datagram_endpoint`].
///
/// ```
/// let opts = protoloop::UnixDatagramOptions::default()
///     .local_addr(protoloop::UnixAddr::abstract_name("logger"))
///     .remote_addr("/run/collector.sock");
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
pub struct UnixDatagramOptions {
    local_addr: Option<UnixAddr>,
    remote_addr: Option<UnixAddr>,
    remove_stale: bool,
    remove_on_close: bool,
}

impl Default for UnixDatagramOptions {
    fn default() -> Self {
        UnixDatagramOptions {
            local_addr: None,
            remote_addr: None,
            remove_stale: true,
            remove_on_close: true,
        }
    }
}

impl UnixDatagramOptions {
    /// Bind to this path or abstract name.
    pub fn local_addr(mut self, addr: impl Into<UnixAddr>) -> Self {
        self.local_addr = Some(addr.into());
        self
    }
    /// Connect to this socket: send with [`DatagramTransport::send`], and
    /// receive only from it.
    pub fn remote_addr(mut self, addr: impl Into<UnixAddr>) -> Self {
        self.remote_addr = Some(addr.into());
        self
    }
    /// Remove a stale socket file at the local path (default on); a live
    /// socket's file is never removed.
    pub fn remove_stale(mut self, on: bool) -> Self {
        self.remove_stale = on;
        self
    }
    /// Remove the local socket file when the endpoint closes (default on).
    pub fn remove_on_close(mut self, on: bool) -> Self {
        self.remove_on_close = on;
        self
    }
}

/// A Unix datagram socket as the datagram endpoint sees it.
pub(crate) struct UnixDgramSock {
    sock: UnixDatagram,
    /// Removed when the socket goes.
    file: Option<SocketFile>,
    /// The address of a sender that never bound (std cannot make one).
    unnamed: SocketAddr,
    max: usize,
    connected: bool,
}

impl Drop for UnixDgramSock {
    fn drop(&mut self) {
        if let Some(f) = &self.file {
            f.remove();
        }
    }
}

fn not_unix(addr: &SocketAddress) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("a Unix datagram endpoint cannot send to the IP address {addr}"),
    )
}

impl UnixDgramSock {
    fn to_std(&self, a: &SockAddr) -> io::Result<SocketAddr> {
        if let Some(p) = a.as_pathname() {
            return SocketAddr::from_pathname(p);
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(name) = a.as_abstract_namespace() {
            use std::os::linux::net::SocketAddrExt;
            return SocketAddr::from_abstract_name(name);
        }
        Ok(self.unnamed.clone())
    }
}

impl DatagramSocket for UnixDgramSock {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn send_to(&self, buf: &[u8], addr: &SocketAddress) -> io::Result<usize> {
        match addr {
            SocketAddress::Unix(a) => self.sock.send_to_addr(buf, a),
            other => Err(not_unix(other)),
        }
    }

    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.sock.send(buf)
    }

    type Addr = SocketAddress;

    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddress)> {
        // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the kernel
        // only writes initialised bytes into the buffer.
        let uninit = unsafe { &mut *(std::ptr::from_mut(buf) as *mut [MaybeUninit<u8>]) };
        // MSG_TRUNC: the real length, so a datagram larger than the buffer
        // is reported rather than silently cut.
        let (n, from) = SockRef::from(&self.sock).recv_from_with_flags(uninit, libc::MSG_TRUNC)?;
        Ok((n, SocketAddress::Unix(self.to_std(&from)?)))
    }

    fn local(&self) -> Option<SocketAddress> {
        self.sock.local_addr().ok().map(SocketAddress::Unix)
    }

    fn check_dest(&self, addr: &SocketAddress) -> io::Result<()> {
        match addr {
            SocketAddress::Unix(_) => Ok(()),
            other => Err(not_unix(other)),
        }
    }

    fn max_datagram(&self, _dest: Option<&SocketAddress>) -> usize {
        self.max
    }

    fn poll_writes(&self) -> bool {
        !self.connected
    }

    fn kind(&self) -> &'static str {
        "Unix datagram"
    }
}

impl Handle {
    /// Make a Unix datagram endpoint and run the protocol made by
    /// `factory` on it. `connection_made` has been called when this
    /// returns; nothing needs awaiting, since Unix addresses need no name
    /// lookup and connecting is immediate.
    ///
    /// ```
    /// use protoloop::{DatagramProtocol, EventLoop, SocketAddress, UnixAddr, UnixDatagramOptions};
    ///
    /// struct Got(Vec<u8>);
    /// impl DatagramProtocol for Got {
    ///     fn datagram_received(&mut self, data: &[u8], _: SocketAddress) { self.0 = data.to_vec(); }
    /// }
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let h = lp.handle();
    /// let name = UnixAddr::abstract_name(format!("protoloop-doc-dgram-{}", std::process::id()));
    /// let (server, proto) = h
    ///     .create_unix_datagram_endpoint(|| Got(Vec::new()), UnixDatagramOptions::default().local_addr(name.clone()))
    ///     .unwrap();
    /// struct Quiet;
    /// impl DatagramProtocol for Quiet { fn datagram_received(&mut self, _: &[u8], _: SocketAddress) {} }
    /// let (client, _) = h
    ///     .create_unix_datagram_endpoint(|| Quiet, UnixDatagramOptions::default().remote_addr(name))
    ///     .unwrap();
    /// client.send(b"hello").unwrap();
    /// let h2 = h.clone();
    /// let p = proto.clone();
    /// lp.run_until_complete(async move {
    ///     for _ in 0..1000 {
    ///         if !p.with(|g| g.0.is_empty()) { break; }
    ///         h2.sleep(std::time::Duration::from_millis(1)).await;
    ///     }
    /// }).unwrap();
    /// assert_eq!(proto.with(|g| g.0.clone()), b"hello");
    /// client.close();
    /// server.close();
    /// ```
    pub fn create_unix_datagram_endpoint<P, F>(
        &self,
        factory: F,
        opts: UnixDatagramOptions,
    ) -> Result<(DatagramTransport, ProtocolHandle<P>)>
    where
        P: DatagramProtocol,
        F: FnOnce() -> P + 'static,
    {
        let (sock, file) = match &opts.local_addr {
            Some(a) => bind_unix(a, Type::DGRAM, opts.remove_stale)?,
            None => (
                Socket::new(socket2::Domain::UNIX, Type::DGRAM, None)
                    .map_err(|e| Error::io("creating a Unix datagram socket", e))?,
                None,
            ),
        };
        // From here on, dropping `s` removes the file we made.
        let mut s = UnixDgramSock {
            max: 0,
            connected: false,
            unnamed: UnixDatagram::unbound()
                .and_then(|u| u.local_addr())
                .map_err(|e| Error::io("creating a Unix datagram socket", e))?,
            file: file.filter(|_| opts.remove_on_close),
            sock: sock.into(),
        };
        let peer = match &opts.remote_addr {
            Some(r) => {
                let ctx = || format!("connecting to {r}");
                let sa = r.to_sockaddr().map_err(|e| Error::io(ctx(), e))?;
                SockRef::from(&s.sock)
                    .connect(&sa)
                    .map_err(|e| Error::io(ctx(), e))?;
                s.connected = true;
                Some(SocketAddress::Unix(
                    r.to_std().map_err(|e| Error::io(ctx(), e))?,
                ))
            }
            None => None,
        };
        s.sock
            .set_nonblocking(true)
            .map_err(|e| Error::io("making the socket non-blocking", e))?;
        let sndbuf = SockRef::from(&s.sock)
            .send_buffer_size()
            .map_err(|e| Error::io("reading SO_SNDBUF", e))?;
        s.max = sndbuf.saturating_sub(SNDBUF_SLACK);
        let proto = Rc::new(RefCell::new(factory()));
        let t = DatagramEndpoint::start(self, s, peer, proto.clone())
            .map_err(|e| Error::io("registering the socket", e))?;
        Ok((t, ProtocolHandle::new(proto)))
    }
}
