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

use std::ops::{Deref, DerefMut};

use super::{Handle, READ_BUFFER_SIZE};

const PAGE: usize = 4096;

impl Handle {
    /// Run `f` with the loop's shared read buffer, allocated on first use.
    /// A nested call gets a fresh one.
    #[inline]
    pub(crate) fn with_read_buf<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        match self.inner.read_buf.try_borrow_mut() {
            Ok(mut buf) => {
                if buf.is_empty() {
                    *buf = ReadBuf::new(READ_BUFFER_SIZE);
                }
                f(&mut buf)
            }
            Err(_) => f(&mut ReadBuf::new(READ_BUFFER_SIZE)),
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
    fn default_is_empty() {
        let b = ReadBuf::default();
        assert!(b.is_empty());
    }
}
