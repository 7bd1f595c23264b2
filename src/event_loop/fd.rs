//! Watching raw file descriptors (asyncio's `add_reader` / `add_writer`),
//! so that other libraries' sockets can live on the loop.
//!
//! # Level-triggered, like asyncio
//!
//! mio is edge-triggered, but a foreign library usually expects to be
//! called for as long as its descriptor is ready. After each callback the
//! descriptor is re-registered, which re-arms it: if it is still ready, the
//! callback runs again on the next iteration. That costs one `epoll_ctl`
//! per callback and spares the user from draining to `WouldBlock`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};

use mio::unix::SourceFd;
use mio::{Interest, Token};

use super::{ExceptionKind, Handle, Inner};
use crate::error::{Error, Result};
use crate::reactor::{IoHandler, Ready};

type FdCallback = Rc<RefCell<dyn FnMut()>>;

#[derive(Default)]
pub(crate) struct FdTable {
    watches: HashMap<RawFd, Rc<FdWatch>>,
}

impl FdTable {
    pub(crate) fn clear(&mut self) {
        self.watches.clear();
    }
}

struct FdWatch {
    fd: RawFd,
    token: Cell<Token>,
    reader: RefCell<Option<FdCallback>>,
    writer: RefCell<Option<FdCallback>>,
    handle: Weak<Inner>,
}

impl FdWatch {
    fn interest(&self) -> Option<Interest> {
        match (
            self.reader.borrow().is_some(),
            self.writer.borrow().is_some(),
        ) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        }
    }
}

impl IoHandler for FdWatch {
    fn ready(self: Rc<Self>, ready: Ready) {
        let Some(inner) = self.handle.upgrade() else {
            return;
        };
        let handle = Handle { inner };
        let fd = self.fd;
        if ready.readable || ready.read_closed || ready.error {
            let cb = self.reader.borrow().clone();
            if let Some(cb) = cb {
                handle.guard(
                    ExceptionKind::HandlerPanic,
                    &|| format!("reader of fd {fd}"),
                    || (cb.borrow_mut())(),
                );
            }
        }
        if ready.writable || ready.write_closed || ready.error {
            let cb = self.writer.borrow().clone();
            if let Some(cb) = cb {
                handle.guard(
                    ExceptionKind::HandlerPanic,
                    &|| format!("writer of fd {fd}"),
                    || (cb.borrow_mut())(),
                );
            }
        }
        // Re-arm (level-triggered semantics), unless the watch was removed
        // or replaced meanwhile.
        let current = handle.inner.fds.borrow().watches.get(&fd).cloned();
        if let (Some(w), Some(interest)) = (current, self.interest())
            && Rc::ptr_eq(&w, &self)
        {
            let _ = handle
                .inner
                .reactor
                .reregister(&mut SourceFd(&fd), self.token.get(), interest);
        }
    }
}

impl Handle {
    /// Call `callback` whenever `fd` is readable, until
    /// [`remove_reader`](Handle::remove_reader). The loop does not own the
    /// descriptor: keep it open while it is watched.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    /// let lp = protoloop::EventLoop::new().unwrap();
    /// let (mut a, mut b) = UnixStream::pair().unwrap();
    /// b.set_nonblocking(true).unwrap();
    /// let h = lp.handle();
    /// let fd = b.as_raw_fd();
    /// h.add_reader(fd, {
    ///     let h = h.clone();
    ///     move || {
    ///         let mut buf = [0; 16];
    ///         assert_eq!(b.read(&mut buf).unwrap(), 5);
    ///         h.remove_reader(fd);
    ///         h.stop();
    ///     }
    /// })
    /// .unwrap();
    /// a.write_all(b"hello").unwrap();
    /// lp.run_forever().unwrap();
    /// ```
    pub fn add_reader(&self, fd: RawFd, callback: impl FnMut() + 'static) -> Result<()> {
        self.watch_fd(fd, Rc::new(RefCell::new(callback)), true)
    }

    /// Call `callback` whenever `fd` is writable, until
    /// [`remove_writer`](Handle::remove_writer).
    pub fn add_writer(&self, fd: RawFd, callback: impl FnMut() + 'static) -> Result<()> {
        self.watch_fd(fd, Rc::new(RefCell::new(callback)), false)
    }

    /// Stop watching `fd` for reading; `false` if it was not watched.
    pub fn remove_reader(&self, fd: RawFd) -> bool {
        self.unwatch_fd(fd, true)
    }

    /// Stop watching `fd` for writing; `false` if it was not watched.
    pub fn remove_writer(&self, fd: RawFd) -> bool {
        self.unwatch_fd(fd, false)
    }

    fn watch_fd(&self, fd: RawFd, cb: FdCallback, read: bool) -> Result<()> {
        if self.is_closed() {
            return Err(Error::LoopClosed);
        }
        let existing = self.inner.fds.borrow().watches.get(&fd).cloned();
        let watch = match existing {
            Some(w) => w,
            None => {
                let w = Rc::new(FdWatch {
                    fd,
                    token: Cell::new(Token(0)),
                    reader: RefCell::new(None),
                    writer: RefCell::new(None),
                    handle: Rc::downgrade(&self.inner),
                });
                let token = self.inner.reactor.insert(w.clone());
                w.token.set(token);
                w
            }
        };
        let was = watch.interest();
        if read {
            *watch.reader.borrow_mut() = Some(cb);
        } else {
            *watch.writer.borrow_mut() = Some(cb);
        }
        let interest = watch.interest().expect("a callback was just set");
        let res = match was {
            None => self
                .inner
                .reactor
                .register(&mut SourceFd(&fd), watch.token.get(), interest),
            Some(_) => {
                self.inner
                    .reactor
                    .reregister(&mut SourceFd(&fd), watch.token.get(), interest)
            }
        };
        if let Err(e) = res {
            if was.is_none() {
                self.inner.reactor.forget(watch.token.get());
            } else if read {
                *watch.reader.borrow_mut() = None;
            } else {
                *watch.writer.borrow_mut() = None;
            }
            return Err(Error::io(format!("watching fd {fd}"), e));
        }
        self.inner.fds.borrow_mut().watches.insert(fd, watch);
        Ok(())
    }

    fn unwatch_fd(&self, fd: RawFd, read: bool) -> bool {
        let Some(watch) = self.inner.fds.borrow().watches.get(&fd).cloned() else {
            return false;
        };
        let slot = if read { &watch.reader } else { &watch.writer };
        if slot.borrow_mut().take().is_none() {
            return false;
        }
        match watch.interest() {
            Some(interest) => {
                let _ =
                    self.inner
                        .reactor
                        .reregister(&mut SourceFd(&fd), watch.token.get(), interest);
            }
            None => {
                self.inner.fds.borrow_mut().watches.remove(&fd);
                self.inner
                    .reactor
                    .remove(&mut SourceFd(&fd), watch.token.get());
            }
        }
        true
    }
}
