//! The protocol a [`RunningProgram`](super::RunningProgram) runs on its
//! child: it keeps *everything* the child wrote on stdout and stderr
//! (tests look at old lines again, and a failure shows all of it), and
//! wakes whoever waits for a line, the exit, or the end.

use std::cell::RefCell;
use std::process::ExitStatus;
use std::rc::Rc;

use super::Stream;
use crate::protocol::{CloseReason, SubprocessProtocol};
use crate::task::Waiters;

#[derive(Default)]
pub(super) struct Captured {
    /// All of stdout (0) and stderr (1) so far.
    pub(super) out: [Vec<u8>; 2],
    /// `process_exited` came.
    pub(super) exited: bool,
    /// `process_ended` came: the child exited and every pipe closed.
    pub(super) ended: Option<ExitStatus>,
    wakers: Waiters,
}

impl Captured {
    fn wake(&mut self) {
        self.wakers.wake_all();
    }

    /// The output of `stream` so far, as text (invalid UTF-8 replaced).
    pub(super) fn text(&self, stream: Stream) -> String {
        String::from_utf8_lossy(&self.out[stream.index()]).into_owned()
    }

    /// The complete lines (without `\n`) of `stream` containing `needle`.
    pub(super) fn lines(&self, stream: Stream, needle: &str) -> Vec<String> {
        let buf = &self.out[stream.index()];
        // A line counts once its `\n` has come: a half-written line may
        // still grow into one that matches differently.
        let complete = match buf.iter().rposition(|&b| b == b'\n') {
            Some(n) => &buf[..n],
            None => return Vec::new(),
        };
        String::from_utf8_lossy(complete)
            .split('\n')
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

pub(super) struct Capture {
    pub(super) state: Rc<RefCell<Captured>>,
}

impl SubprocessProtocol for Capture {
    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        let mut s = self.state.borrow_mut();
        if let Some(buf) = s.out.get_mut((fd - 1) as usize) {
            buf.extend_from_slice(data);
        }
        s.wake();
    }
    fn pipe_connection_lost(&mut self, _fd: i32, _reason: CloseReason) {
        self.state.borrow_mut().wake();
    }
    fn process_exited(&mut self) {
        let mut s = self.state.borrow_mut();
        s.exited = true;
        s.wake();
    }
    fn process_ended(&mut self, status: ExitStatus) {
        let mut s = self.state.borrow_mut();
        s.exited = true;
        s.ended = Some(status);
        s.wake();
    }
}

/// Wait until `f` gives a value; re-checked after each event of the child.
pub(super) async fn until<T>(
    state: &RefCell<Captured>,
    f: impl FnMut(&mut Captured) -> Option<T>,
) -> T {
    crate::task::until(state, |s| &mut s.wakers, f).await
}
