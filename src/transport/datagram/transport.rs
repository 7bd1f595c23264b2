//! [`DatagramTransport`], the public handle of a datagram endpoint, and
//! the kind-independent operations behind it.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::rc::Rc;

use super::{DatagramEndpoint, DatagramSocket};
use crate::error::{Error, Result};
use crate::protocol::CloseReason;
use crate::transport::{SocketAddress, closed};

/// The kind-independent operations behind [`DatagramTransport`].
pub(super) trait DatagramOps {
    fn send_datagram(&self, data: &[u8], dest: Option<&SocketAddress>) -> Result<()>;
    fn close(&self);
    fn abort(&self);
    fn is_closing(&self) -> bool;
    fn pause_reading(&self);
    fn resume_reading(&self);
    fn is_reading(&self) -> bool;
    fn set_write_buffer_limits(&self, high: usize, low: usize);
    fn get_write_buffer_limits(&self) -> (usize, usize);
    fn get_write_buffer_size(&self) -> usize;
    fn local_addr(&self) -> Option<SocketAddress>;
    fn peer_addr(&self) -> Option<SocketAddress>;
    fn with_udp(&self, f: &mut dyn FnMut(&UdpSocket) -> io::Result<()>) -> Result<()>;
}

impl<S: DatagramSocket> DatagramOps for DatagramEndpoint<S> {
    fn send_datagram(&self, data: &[u8], dest: Option<&SocketAddress>) -> Result<()> {
        DatagramEndpoint::send_datagram(self, data, dest)
    }

    fn close(&self) {
        let empty = {
            let mut st = self.st.borrow_mut();
            if st.lost || st.closing {
                return;
            }
            st.closing = true;
            st.queue.items.is_empty()
        };
        if empty {
            self.finish(CloseReason::LocalClose);
        }
    }

    fn abort(&self) {
        self.finish(CloseReason::LocalAbort);
    }

    fn is_closing(&self) -> bool {
        DatagramEndpoint::is_closing(self)
    }

    fn pause_reading(&self) {
        self.st.borrow_mut().reading_paused = true;
    }

    fn resume_reading(&self) {
        let was = std::mem::replace(&mut self.st.borrow_mut().reading_paused, false);
        if was && self.can_read() {
            // Datagrams that came while paused raised no edge we acted on.
            let me = self.rc();
            self.handle.call_soon(move || me.read_ready());
        }
    }

    fn is_reading(&self) -> bool {
        self.can_read()
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        let flow = self.st.borrow_mut().queue.set_limits(high, low);
        self.schedule_flow(flow);
    }

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        self.st.borrow().queue.limits()
    }

    fn get_write_buffer_size(&self) -> usize {
        self.st.borrow().queue.size
    }

    fn local_addr(&self) -> Option<SocketAddress> {
        self.local()
    }

    fn peer_addr(&self) -> Option<SocketAddress> {
        self.peer.clone()
    }

    fn with_udp(&self, f: &mut dyn FnMut(&UdpSocket) -> io::Result<()>) -> Result<()> {
        let sock = self.sock.borrow();
        let Some(sock) = sock.as_ref() else {
            return closed();
        };
        match sock.udp() {
            Some(u) => f(u).map_err(|e| Error::io("setting a UDP socket option", e)),
            None => Err(Error::Unsupported("this option needs a UDP endpoint")),
        }
    }
}

/// The handle a [`DatagramProtocol`](crate::DatagramProtocol) uses to
/// send datagrams and close its endpoint (UDP or Unix datagram): asyncio's
/// `DatagramTransport`.
///
/// A cheap `Clone` (an `Rc` inside), `!Send`. A handle that outlives its
/// endpoint answers with [`Error::Closed`].
///
/// # Sending
///
/// `sendto` hands the datagram to the kernel at once if nothing is queued.
/// If the kernel's buffer is full (`WouldBlock`) the datagram is queued
/// whole, in order, and sent when the socket is writable. The queue's size
/// counts each datagram's bytes plus 8 (as asyncio does, so that empty
/// datagrams count too); above the high-water mark (64 KiB by default)
/// `pause_writing` is called, and `resume_writing` once it drains to the
/// low-water mark (16 KiB).
///
/// Errors the caller can act on are returned by the call: a datagram
/// larger than the socket can send (`EMSGSIZE`), a destination of the
/// wrong kind, `send` on an endpoint that is not connected, or the
/// kernel's refusal (`EACCES` for a broadcast without `allow_broadcast`).
/// Nothing is queued then. A queued datagram that fails later, when no
/// caller is there, is reported to `error_received` with its destination.
///
/// # Errors for earlier datagrams
///
/// The kernel reports an ICMP error (port unreachable ...) some time after
/// the datagram left. On Linux the endpoint reads these from the socket's
/// error queue (`IP_RECVERR`), so `error_received` names the destination
/// the error concerns. Such an error can also surface as the result of an
/// unrelated later `sendto`; the endpoint then reports it as the earlier
/// datagram's error and sends the new datagram anyway, so one unreachable
/// peer never costs a datagram to another.
///
/// # Callback delivery
///
/// `datagram_received` and errors found while reading are called from the
/// readiness handler; everything a transport method causes
/// (`pause_writing`, `resume_writing`, `error_received`,
/// `connection_lost`) is scheduled with `call_soon`, never called
/// re-entrantly.
#[derive(Clone)]
pub struct DatagramTransport {
    pub(super) inner: Rc<dyn DatagramOps>,
}

impl fmt::Debug for DatagramTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramTransport")
            .field("local", &self.inner.local_addr())
            .field("peer", &self.inner.peer_addr())
            .field("closing", &self.inner.is_closing())
            .finish()
    }
}

impl DatagramTransport {
    /// Send `data` as one datagram to `addr`. On a connected endpoint
    /// `addr` must be the peer's address (or use [`send`](Self::send)).
    ///
    /// Fails, queueing nothing, if the datagram is too large (`EMSGSIZE`),
    /// `addr` is of the wrong kind, the kernel refuses it, or the endpoint
    /// is closing ([`Error::Closed`]).
    pub fn sendto(&self, data: &[u8], addr: impl Into<SocketAddress>) -> Result<()> {
        // By reference from here on: an address is about 120 bytes.
        self.inner.send_datagram(data, Some(&addr.into()))
    }

    /// Send `data` as one datagram to the connected peer. Fails on an
    /// endpoint made without a remote address.
    pub fn send(&self, data: &[u8]) -> Result<()> {
        self.inner.send_datagram(data, None)
    }

    /// Send what is queued, then close. `connection_lost(LocalClose)`
    /// follows on the loop. Idempotent.
    pub fn close(&self) {
        self.inner.close()
    }

    /// Drop the queue and close now. `connection_lost(LocalAbort)`
    /// follows on the loop.
    pub fn abort(&self) {
        self.inner.abort()
    }

    /// `true` once `close` or `abort` was called or the endpoint is gone.
    pub fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    /// Stop calling `datagram_received` until
    /// [`resume_reading`](Self::resume_reading); arriving datagrams wait
    /// in the kernel (which drops what does not fit). Idempotent.
    pub fn pause_reading(&self) {
        self.inner.pause_reading()
    }

    /// Undo [`pause_reading`](Self::pause_reading). Idempotent.
    pub fn resume_reading(&self) {
        self.inner.resume_reading()
    }

    /// `false` while reading is paused or the endpoint is closing.
    pub fn is_reading(&self) -> bool {
        self.inner.is_reading()
    }

    /// Set the send queue's water marks (`low` is clamped to `high`).
    pub fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.inner.set_write_buffer_limits(high, low)
    }

    /// The `(high, low)` water marks.
    pub fn get_write_buffer_limits(&self) -> (usize, usize) {
        self.inner.get_write_buffer_limits()
    }

    /// Size of the send queue: queued bytes plus 8 per datagram.
    pub fn get_write_buffer_size(&self) -> usize {
        self.inner.get_write_buffer_size()
    }

    /// Our address (`None` once closed).
    pub fn local_addr(&self) -> Option<SocketAddress> {
        self.inner.local_addr()
    }

    /// The connected peer's address; `None` if not connected.
    pub fn peer_addr(&self) -> Option<SocketAddress> {
        self.inner.peer_addr()
    }

    /// `SO_BROADCAST` (UDP): allow sending to broadcast addresses.
    pub fn set_broadcast(&self, on: bool) -> Result<()> {
        self.inner.with_udp(&mut |u| u.set_broadcast(on))
    }

    /// Join the IPv4 multicast `group` on the interface with address
    /// `interface` (`0.0.0.0`: the kernel's choice).
    pub fn join_multicast_v4(&self, group: Ipv4Addr, interface: Ipv4Addr) -> Result<()> {
        self.inner
            .with_udp(&mut |u| u.join_multicast_v4(&group, &interface))
    }

    /// Leave an IPv4 multicast group joined with
    /// [`join_multicast_v4`](Self::join_multicast_v4).
    pub fn leave_multicast_v4(&self, group: Ipv4Addr, interface: Ipv4Addr) -> Result<()> {
        self.inner
            .with_udp(&mut |u| u.leave_multicast_v4(&group, &interface))
    }

    /// Join the IPv6 multicast `group` on interface index `interface`
    /// (0: the kernel's choice).
    pub fn join_multicast_v6(&self, group: Ipv6Addr, interface: u32) -> Result<()> {
        self.inner
            .with_udp(&mut |u| u.join_multicast_v6(&group, interface))
    }

    /// Leave an IPv6 multicast group joined with
    /// [`join_multicast_v6`](Self::join_multicast_v6).
    pub fn leave_multicast_v6(&self, group: Ipv6Addr, interface: u32) -> Result<()> {
        self.inner
            .with_udp(&mut |u| u.leave_multicast_v6(&group, interface))
    }

    /// `IP_MULTICAST_LOOP`: whether our own IPv4 multicast comes back to us.
    pub fn set_multicast_loop_v4(&self, on: bool) -> Result<()> {
        self.inner.with_udp(&mut |u| u.set_multicast_loop_v4(on))
    }

    /// `IPV6_MULTICAST_LOOP`.
    pub fn set_multicast_loop_v6(&self, on: bool) -> Result<()> {
        self.inner.with_udp(&mut |u| u.set_multicast_loop_v6(on))
    }

    /// `IP_MULTICAST_TTL`: how many hops IPv4 multicast may travel.
    pub fn set_multicast_ttl_v4(&self, ttl: u32) -> Result<()> {
        self.inner.with_udp(&mut |u| u.set_multicast_ttl_v4(ttl))
    }

    /// `IP_MULTICAST_IF`: send IPv4 multicast out of the interface with
    /// this address.
    pub fn set_multicast_if_v4(&self, interface: Ipv4Addr) -> Result<()> {
        self.inner
            .with_udp(&mut |u| socket2::SockRef::from(u).set_multicast_if_v4(&interface))
    }

    /// `IPV6_MULTICAST_IF`: send IPv6 multicast out of this interface index.
    pub fn set_multicast_if_v6(&self, interface: u32) -> Result<()> {
        self.inner
            .with_udp(&mut |u| socket2::SockRef::from(u).set_multicast_if_v6(interface))
    }

    /// `true` if both handles are the same endpoint.
    pub fn same(&self, other: &DatagramTransport) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}
