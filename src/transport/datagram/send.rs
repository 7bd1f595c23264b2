//! The sending half of a datagram endpoint: straight to the kernel when
//! nothing is queued, into the send queue when it is full, and the flush
//! that empties the queue when the socket has room.

use std::io;
use std::rc::Rc;

use bytes::Bytes;

use super::{DatagramEndpoint, DatagramError, DatagramSocket, RETRY_MAX, RETRY_MIN, same_address};
use crate::error::{Error, Result};
use crate::protocol::CloseReason;
use crate::reactor::{interrupted, would_block};
use crate::transport::{SocketAddress, closed};

/// One attempt to send `data` to `dest` (`None`: the connected peer).
fn send_once<S: DatagramSocket>(
    sock: &S,
    data: &[u8],
    dest: Option<&SocketAddress>,
) -> io::Result<usize> {
    match dest {
        Some(a) => sock.send_to(data, a),
        None => sock.send(data),
    }
}

/// Finish sending one datagram whose last attempt gave `r`.
/// `Ok(false)`: the kernel's buffer is full. Errors the kernel kept for
/// earlier datagrams are moved to `earlier` and the send retried.
fn try_send_from<S: DatagramSocket>(
    sock: &S,
    data: &[u8],
    dest: Option<&SocketAddress>,
    mut r: io::Result<usize>,
    earlier: &mut Vec<DatagramError>,
) -> io::Result<bool> {
    let mut retries = 0;
    loop {
        match r {
            Ok(_) => return Ok(true),
            Err(e) if would_block(&e) => return Ok(false),
            Err(e) if interrupted(&e) => {}
            Err(e) => {
                let before = earlier.len();
                sock.read_errors(earlier);
                if earlier.len() > before && retries < 4 {
                    retries += 1;
                } else {
                    return Err(e);
                }
            }
        }
        r = send_once(sock, data, dest);
    }
}

impl<S: DatagramSocket> DatagramEndpoint<S> {
    /// Send one datagram now (see [`try_send_from`]).
    fn try_send(
        &self,
        data: &[u8],
        dest: Option<&SocketAddress>,
        earlier: &mut Vec<DatagramError>,
    ) -> io::Result<bool> {
        let sock = self.sock.borrow();
        let Some(sock) = sock.as_ref() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        try_send_from(sock, data, dest, send_once(sock, data, dest), earlier)
    }

    /// `sendto` / `send`: checks, then straight to the kernel if nothing
    /// is queued. The common case (checks pass, the kernel takes it) makes
    /// one borrow of each cell, copies no address and allocates nothing;
    /// everything else is in [`send_refused`](Self::send_refused).
    pub(super) fn send_datagram(&self, data: &[u8], dest: Option<&SocketAddress>) -> Result<()> {
        let queued = {
            let st = self.st.borrow();
            if st.lost || st.closing {
                return closed();
            }
            !st.queue.items.is_empty()
        };
        let sock = self.sock.borrow();
        // The socket goes only when the endpoint is lost, checked above.
        let Some(sock) = sock.as_ref() else {
            return closed();
        };
        let dest = self.resolve_dest(sock, dest)?;
        let max = sock.max_datagram(dest.or(self.peer.as_ref()));
        if data.len() > max {
            return Err(self.too_large(data.len(), max, dest));
        }
        if queued {
            return self.enqueue(data, dest);
        }
        let first = send_once(sock, data, dest);
        if first.is_ok() {
            return Ok(());
        }
        self.send_refused(sock, data, dest, first)
    }

    /// The first attempt to send failed: retry, report errors the kernel
    /// kept for earlier datagrams, queue the datagram if the kernel is
    /// full, or return the error.
    #[cold]
    fn send_refused(
        &self,
        sock: &S,
        data: &[u8],
        dest: Option<&SocketAddress>,
        first: io::Result<usize>,
    ) -> Result<()> {
        let mut earlier = Vec::new();
        let r = try_send_from(sock, data, dest, first, &mut earlier);
        self.schedule_errors(earlier);
        match r {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.enqueue(data, dest)?;
                self.arm_retry();
                Ok(())
            }
            Err(e) => Err(Error::io(
                format!("sending a datagram to {}", self.dest_text(dest)),
                e,
            )),
        }
    }

    /// Queue a datagram behind the ones waiting (a copy: the caller keeps
    /// its buffer).
    fn enqueue(&self, data: &[u8], dest: Option<&SocketAddress>) -> Result<()> {
        let flow = self
            .st
            .borrow_mut()
            .queue
            .push(Bytes::copy_from_slice(data), dest.cloned());
        self.schedule_flow(flow);
        Ok(())
    }

    #[cold]
    fn too_large(&self, len: usize, max: usize, dest: Option<&SocketAddress>) -> Error {
        Error::io(
            format!(
                "sending a datagram of {len} bytes to {} (at most {max} fit in one)",
                self.dest_text(dest)
            ),
            io::Error::from_raw_os_error(rustix::io::Errno::MSGSIZE.raw_os_error()),
        )
    }

    /// Where a datagram for `dest` goes, for an error message (made only
    /// then: formatting an address on every send cost more than the send's
    /// own user-space work).
    fn dest_text(&self, dest: Option<&SocketAddress>) -> String {
        match (dest, &self.peer) {
            (Some(d), _) => d.to_string(),
            (None, Some(peer)) => peer.to_string(),
            (None, None) => "nowhere".to_string(),
        }
    }

    /// Check the destination against connected mode; `None` means the
    /// connected peer.
    fn resolve_dest<'a>(
        &self,
        sock: &S,
        dest: Option<&'a SocketAddress>,
    ) -> Result<Option<&'a SocketAddress>> {
        match (dest, &self.peer) {
            (None, Some(_)) => Ok(None),
            (Some(d), None) => match sock.check_dest(d) {
                Ok(()) => Ok(Some(d)),
                Err(e) => Err(Error::io(format!("sending a datagram to {d}"), e)),
            },
            (Some(d), Some(peer)) if same_address(d, peer) => Ok(None),
            (dest, peer) => Err(self.wrong_dest(dest, peer.as_ref())),
        }
    }

    #[cold]
    fn wrong_dest(&self, dest: Option<&SocketAddress>, peer: Option<&SocketAddress>) -> Error {
        let msg = match (dest, peer) {
            (Some(d), Some(peer)) => {
                format!("the endpoint is connected to {peer}; it cannot send to {d}")
            }
            _ => "the endpoint is not connected: use sendto with an address".into(),
        };
        Error::io(
            "sending a datagram",
            io::Error::new(io::ErrorKind::InvalidInput, msg),
        )
    }

    /// Send what is queued, in order, until the kernel is full.
    pub(super) fn flush(self: &Rc<Self>) {
        let mut errors = Vec::new();
        loop {
            let Some((data, dest)) = self.st.borrow().queue.front() else {
                break;
            };
            if self.st.borrow().lost {
                return;
            }
            match self.try_send(&data, dest.as_ref(), &mut errors) {
                Ok(true) => {
                    let flow = self.st.borrow_mut().queue.pop();
                    self.st.borrow_mut().retry_delay = RETRY_MIN;
                    self.schedule_flow(flow);
                }
                Ok(false) => {
                    self.arm_retry();
                    break;
                }
                Err(e) => {
                    // No caller to return it to: report it with the
                    // datagram's destination and go on with the next.
                    let flow = self.st.borrow_mut().queue.pop();
                    self.schedule_flow(flow);
                    errors.push((e, dest.or_else(|| self.peer.clone())));
                }
            }
        }
        self.deliver_errors(errors);
        let done = {
            let st = self.st.borrow();
            st.closing && !st.lost && st.queue.items.is_empty()
        };
        if done {
            self.finish(CloseReason::LocalClose);
        }
    }

    /// Retry the queue on a timer if the kernel may not say when it has
    /// room.
    fn arm_retry(&self) {
        let poll = self.sock.borrow().as_ref().is_some_and(|s| s.poll_writes());
        let mut st = self.st.borrow_mut();
        if !poll || st.retry.is_some() || st.lost {
            return;
        }
        let delay = st.retry_delay;
        st.retry_delay = (delay * 2).min(RETRY_MAX);
        let me = self.rc();
        st.retry = Some(self.handle.call_later(delay, move || {
            me.st.borrow_mut().retry = None;
            me.flush();
        }));
    }
}
