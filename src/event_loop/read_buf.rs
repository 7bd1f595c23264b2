//! The loop's shared read buffer, which starts on a page boundary.
//!
//! Why aligned: a large `Vec` comes from `mmap` and starts 16 bytes past
//! a page boundary, and on AMD Zen the kernel's copy to user space
//! (`rep movsb`) runs about 3x slower into a destination 8 to 31 bytes
//! past a page boundary (measured; offsets 0, 32, 64 and up are fast).
//! Reading 100 KiB messages from loopback into such a buffer measured
//! 92 µs per message against 30 µs page-aligned, and the benchmark's
//! 100 KiB echo spent 64% of the server's time in `_copy_to_iter`.
//! Aligning costs one page of memory per loop.

use std::cell::RefMut;
use std::ops::{Deref, DerefMut};

use super::{Handle, READ_BUFFER_SIZE};

const PAGE: usize = 4096;

impl Handle {
    /// Borrow the loop's shared read buffer (allocated on first use) until
    /// the guard drops. A nested borrower gets a fresh buffer.
    #[inline]
    pub(crate) fn read_buf(&self) -> ReadBufGuard<'_> {
        match self.inner.read_buf.try_borrow_mut() {
            Ok(mut buf) => {
                if buf.is_empty() {
                    *buf = ReadBuf::new(READ_BUFFER_SIZE);
                }
                ReadBufGuard::Shared(buf)
            }
            Err(_) => ReadBufGuard::Own(ReadBuf::new(READ_BUFFER_SIZE)),
        }
    }
}

/// The read buffer lent by [`Handle::read_buf`]; derefs to `[u8]`.
pub(crate) enum ReadBufGuard<'a> {
    /// The loop's own, borrowed.
    Shared(RefMut<'a, ReadBuf>),
    /// A fresh one, for a nested borrower.
    Own(ReadBuf),
}

impl Deref for ReadBufGuard<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            ReadBufGuard::Shared(b) => b,
            ReadBufGuard::Own(b) => b,
        }
    }
}

impl DerefMut for ReadBufGuard<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            ReadBufGuard::Shared(b) => b,
            ReadBufGuard::Own(b) => b,
        }
    }
}

/// A zeroed byte buffer whose first byte is page-aligned; derefs to
/// `[u8]`. `Default` is the empty buffer.
#[derive(Default)]
pub(crate) struct ReadBuf {
    /// The buffer is `storage[start..]`: the bytes before `start` only
    /// align it, and the vector is cut to end where the buffer does.
    storage: Vec<u8>,
    start: usize,
}

impl ReadBuf {
    pub(crate) fn new(len: usize) -> ReadBuf {
        let mut storage = vec![0u8; len + PAGE];
        let addr = storage.as_ptr() as usize;
        let start = (PAGE - addr % PAGE) % PAGE;
        storage.truncate(start + len);
        ReadBuf { storage, start }
    }
}

impl Deref for ReadBuf {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.storage[self.start..]
    }
}

impl DerefMut for ReadBuf {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_aligned_and_sized() {
        for len in [1, 4096, 256 * 1024] {
            let mut b = ReadBuf::new(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % PAGE, 0);
            assert!(b.iter().all(|&x| x == 0));
            b[len - 1] = 7;
            assert_eq!(b[len - 1], 7);
        }
    }

    #[test]
    fn a_nested_borrower_gets_its_own_buffer() {
        let lp = crate::EventLoop::new().unwrap();
        let h = lp.handle();
        let mut outer = h.read_buf();
        assert_eq!(outer.len(), READ_BUFFER_SIZE);
        outer[0] = 1;
        let mut inner = h.read_buf();
        assert!(matches!(inner, ReadBufGuard::Own(_)));
        assert_eq!(inner.len(), READ_BUFFER_SIZE);
        inner[0] = 2;
        drop(inner);
        assert_eq!(outer[0], 1);
        drop(outer);
        // The shared one is lent again, with what was left in it.
        let again = h.read_buf();
        assert!(matches!(again, ReadBufGuard::Shared(_)));
        assert_eq!(again[0], 1);
    }

    #[test]
    fn default_is_empty() {
        let b = ReadBuf::default();
        assert!(b.is_empty());
    }
}
