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

impl<S: DatagramSocket> DatagramEndpoint<S> {
    /// Send one datagram now. `Ok(false)`: the kernel's buffer is full.
    /// Errors the kernel kept for earlier datagrams are moved to
    /// `earlier` and the send retried.
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
        let mut retries = 0;
        loop {
            let r = match dest {
                Some(a) => sock.send_to(data, a),
                None => sock.send(data),
            };
            match r {
                Ok(_) => return Ok(true),
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) if interrupted(&e) => continue,
                Err(e) => {
                    let before = earlier.len();
                    sock.read_errors(earlier);
                    if earlier.len() > before && retries < 4 {
                        retries += 1;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    pub(super) fn send_datagram(&self, data: &[u8], dest: Option<SocketAddress>) -> Result<()> {
        if self.is_closing() {
            return closed();
        }
        let dest = self.resolve_dest(dest)?;
        let max = self.sock.borrow().as_ref().map_or(usize::MAX, |s| {
            s.max_datagram(dest.as_ref().or(self.peer.as_ref()))
        });
        if data.len() > max {
            return Err(Error::io(
                format!(
                    "sending a datagram of {} bytes to {} (at most {max} fit in one)",
                    data.len(),
                    self.dest_text(&dest)
                ),
                io::Error::from_raw_os_error(rustix::io::Errno::MSGSIZE.raw_os_error()),
            ));
        }
        if !self.st.borrow().queue.items.is_empty() {
            let flow = self
                .st
                .borrow_mut()
                .queue
                .push(Bytes::copy_from_slice(data), dest);
            self.schedule_flow(flow);
            return Ok(());
        }
        let mut earlier = Vec::new();
        let r = self.try_send(data, dest.as_ref(), &mut earlier);
        self.schedule_errors(earlier);
        match r {
            Ok(true) => Ok(()),
            Ok(false) => {
                let flow = self
                    .st
                    .borrow_mut()
                    .queue
                    .push(Bytes::copy_from_slice(data), dest);
                self.schedule_flow(flow);
                self.arm_retry();
                Ok(())
            }
            Err(e) => Err(Error::io(
                format!("sending a datagram to {}", self.dest_text(&dest)),
                e,
            )),
        }
    }

    /// Where a datagram for `dest` goes, for an error message (made only
    /// then: formatting an address on every send cost more than the send's
    /// own user-space work).
    fn dest_text(&self, dest: &Option<SocketAddress>) -> String {
        match (dest, &self.peer) {
            (Some(d), _) => d.to_string(),
            (None, Some(peer)) => peer.to_string(),
            (None, None) => "nowhere".to_string(),
        }
    }

    /// Check the destination against connected mode; `None` means the
    /// connected peer.
    fn resolve_dest(&self, dest: Option<SocketAddress>) -> Result<Option<SocketAddress>> {
        let invalid = |msg: String| {
            Err(Error::io(
                "sending a datagram",
                io::Error::new(io::ErrorKind::InvalidInput, msg),
            ))
        };
        match (dest, &self.peer) {
            (None, Some(_)) => Ok(None),
            (None, None) => {
                invalid("the endpoint is not connected: use sendto with an address".into())
            }
            (Some(d), Some(peer)) if same_address(&d, peer) => Ok(None),
            (Some(d), Some(peer)) => invalid(format!(
                "the endpoint is connected to {peer}; it cannot send to {d}"
            )),
            (Some(d), None) => {
                if let Some(s) = self.sock.borrow().as_ref()
                    && let Err(e) = s.check_dest(&d)
                {
                    return Err(Error::io(format!("sending a datagram to {d}"), e));
                }
                Ok(Some(d))
            }
        }
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
