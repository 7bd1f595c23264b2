//! Linux's per-socket error queue (`IP_RECVERR`, `IPV6_RECVERR`): how a
//! UDP endpoint learns which destination an ICMP error concerns.
//!
//! With the option on, the kernel queues one entry per ICMP error (port
//! unreachable, host unreachable, fragmentation needed ...) and raises
//! `EPOLLERR`. `recvmsg(MSG_ERRQUEUE)` returns the entry: a
//! `sock_extended_err` with the errno in a control message, and the
//! original datagram's destination in `msg_name`. Reading the last entry
//! also clears the socket's pending error, so it does not surface again as
//! the result of an unrelated call.
//!
//! Entries of origin `SO_EE_ORIGIN_LOCAL` (`EMSGSIZE` found while sending)
//! are skipped: the send call that caused them already returned the error.

use std::io;
use std::mem;
use std::os::fd::RawFd;
use std::ptr;

use socket2::SockAddr;

use crate::reactor::{interrupted, would_block};
use crate::transport::SocketAddress;
use crate::transport::datagram::DatagramError;

/// Most entries read in one go; the rest wait for the next call.
const MAX_ENTRIES: usize = 64;

fn set_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` outlives the call, and the length given is its size,
    // which is what these integer options expect.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            ptr::from_ref(&on).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Turn the error queue on for a UDP socket of the given family.
pub(crate) fn enable(fd: RawFd, v6: bool) -> io::Result<()> {
    if v6 {
        set_int_option(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR)?;
        // A dual-stack socket also gets ICMPv4 errors for v4-mapped peers.
        let _ = set_int_option(fd, libc::IPPROTO_IP, libc::IP_RECVERR);
        Ok(())
    } else {
        set_int_option(fd, libc::IPPROTO_IP, libc::IP_RECVERR)
    }
}

/// Move the queued errors into `out`, until the queue is empty.
pub(crate) fn drain(fd: RawFd, out: &mut Vec<DatagramError>) {
    for _ in 0..MAX_ENTRIES {
        match read_one(fd) {
            Ok(Some(Some(entry))) => out.push(entry),
            Ok(Some(None)) => {} // an entry not worth reporting
            Ok(None) | Err(_) => return,
        }
    }
}

/// One entry: `Ok(None)` when the queue is empty, `Ok(Some(None))` for an
/// entry that is not reported.
fn read_one(fd: RawFd) -> io::Result<Option<Option<DatagramError>>> {
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 64];
    // The start of the offending datagram comes back as data; unused.
    let mut payload = [0u8; 16];
    let mut found: Option<libc::sock_extended_err> = None;
    // SAFETY: `try_init` hands us zeroed storage and its size; recvmsg
    // writes at most `msg_namelen` bytes of address there and reports the
    // length used, which we pass back. Every buffer in `msg` outlives the
    // call. The CMSG_* macros walk only the control bytes the kernel
    // filled (bounded by `msg_controllen`), and the extended error is read
    // unaligned after checking the message is long enough to hold it.
    let res = unsafe {
        SockAddr::try_init(|storage, len| {
            let mut iov = libc::iovec {
                iov_base: payload.as_mut_ptr().cast(),
                iov_len: payload.len(),
            };
            let mut msg: libc::msghdr = mem::zeroed();
            msg.msg_name = storage.cast();
            msg.msg_namelen = *len;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = mem::size_of_val(&control) as _;
            loop {
                let n = libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT);
                if n >= 0 {
                    break;
                }
                let e = io::Error::last_os_error();
                if !interrupted(&e) {
                    return Err(e);
                }
            }
            *len = msg.msg_namelen;
            let want = libc::CMSG_LEN(mem::size_of::<libc::sock_extended_err>() as u32) as usize;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                let c = &*cmsg;
                let ours = (c.cmsg_level == libc::SOL_IP && c.cmsg_type == libc::IP_RECVERR)
                    || (c.cmsg_level == libc::SOL_IPV6 && c.cmsg_type == libc::IPV6_RECVERR);
                if ours && c.cmsg_len as usize >= want {
                    found = Some(ptr::read_unaligned(
                        libc::CMSG_DATA(cmsg).cast::<libc::sock_extended_err>(),
                    ));
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            Ok(())
        })
    };
    match res {
        Err(e) if would_block(&e) => Ok(None),
        Err(e) => Err(e),
        Ok(((), addr)) => Ok(Some(match found {
            Some(ee) if ee.ee_origin != libc::SO_EE_ORIGIN_LOCAL && ee.ee_errno != 0 => Some((
                io::Error::from_raw_os_error(ee.ee_errno as i32),
                addr.as_socket().map(SocketAddress::Inet),
            )),
            _ => None,
        })),
    }
}
