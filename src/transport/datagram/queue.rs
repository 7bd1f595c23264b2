//! The send queue of a datagram endpoint: whole datagrams in order, its
//! size as a counter, and the water marks that decide when the protocol is
//! asked to pause and resume writing (the pairing rules of the stream write
//! buffer).

use std::collections::VecDeque;

use bytes::Bytes;

use super::DATAGRAM_OVERHEAD;
use crate::transport::SocketAddress;
use crate::transport::buffer::{Flow, WaterMarks};

/// Queued datagrams with their destinations (`None`: the connected peer).
#[derive(Debug, Default)]
pub(super) struct SendQueue {
    pub(super) items: VecDeque<(Bytes, Option<SocketAddress>)>,
    pub(super) size: usize,
    marks: WaterMarks,
}

impl SendQueue {
    pub(super) fn push(&mut self, data: Bytes, dest: Option<SocketAddress>) -> Flow {
        self.size += data.len() + DATAGRAM_OVERHEAD;
        self.items.push_back((data, dest));
        self.check()
    }

    pub(super) fn front(&self) -> Option<(Bytes, Option<SocketAddress>)> {
        self.items.front().cloned()
    }

    pub(super) fn pop(&mut self) -> Flow {
        if let Some((d, _)) = self.items.pop_front() {
            self.size -= d.len() + DATAGRAM_OVERHEAD;
        }
        self.check()
    }

    pub(super) fn clear(&mut self) {
        self.items = VecDeque::new();
        self.size = 0;
    }

    pub(super) fn set_limits(&mut self, high: usize, low: usize) -> Flow {
        self.marks.set_limits(high, low);
        self.check()
    }

    /// `(high, low)`.
    pub(super) fn limits(&self) -> (usize, usize) {
        self.marks.limits()
    }

    fn check(&mut self) -> Flow {
        self.marks.check(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_pauses_and_resumes_in_pairs_counting_overhead() {
        let mut q = SendQueue::default();
        q.set_limits(100, 20);
        assert_eq!(q.push(Bytes::from_static(&[0; 50]), None), Flow::Same);
        assert_eq!(q.size, 58);
        assert_eq!(q.push(Bytes::from_static(&[0; 50]), None), Flow::Pause);
        assert_eq!(q.push(Bytes::new(), None), Flow::Same);
        assert_eq!(q.size, 124);
        assert_eq!(q.pop(), Flow::Same, "66 > 20: still paused");
        assert_eq!(q.pop(), Flow::Resume, "8 <= 20");
        assert_eq!(q.size, 8);
        assert_eq!(q.push(Bytes::from_static(&[0; 200]), None), Flow::Pause);
        assert_eq!(q.front().unwrap().0.len(), 0, "order kept");
        assert_eq!(q.pop(), Flow::Same);
        assert_eq!(q.pop(), Flow::Resume);
        assert_eq!(q.size, 0);
        assert!(q.front().is_none());
    }

    #[test]
    fn empty_datagrams_still_fill_the_queue() {
        let mut q = SendQueue::default();
        q.set_limits(80, 0);
        let flows: Vec<Flow> = (0..11).map(|_| q.push(Bytes::new(), None)).collect();
        assert_eq!(flows.iter().filter(|f| **f == Flow::Pause).count(), 1);
        assert_eq!(flows[10], Flow::Pause);
    }
}
