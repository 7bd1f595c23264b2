//! Bulk data through `cat` with stdin flow control.

use super::*;

/// Streams 10 MB into `cat` with flow control and checks it comes back.
struct Pump {
    rec: Checked<Rec>,
    data: Rc<Vec<u8>>,
    sent: usize,
    paused: bool,
}

impl Pump {
    fn push(&mut self) {
        let stdin = self
            .rec
            .transport
            .as_ref()
            .unwrap()
            .get_pipe_transport(0)
            .unwrap();
        while !self.paused && self.sent < self.data.len() {
            let end = (self.sent + 32 * 1024).min(self.data.len());
            stdin.write(&self.data[self.sent..end]).unwrap();
            self.sent = end;
            // pause_writing comes from the loop; check the buffer too so
            // one call does not queue all 10 MB.
            if stdin.get_write_buffer_size() > 64 * 1024 {
                break;
            }
        }
        if self.sent == self.data.len() {
            stdin.close();
        }
    }
}

impl SubprocessProtocol for Pump {
    fn connection_made(&mut self, t: SubprocessTransport) {
        self.rec.connection_made(t);
        self.push();
    }
    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        self.rec.pipe_data_received(fd, data);
    }
    fn pipe_connection_lost(&mut self, fd: i32, reason: CloseReason) {
        self.rec.pipe_connection_lost(fd, reason);
    }
    fn pause_writing(&mut self) {
        self.paused = true;
        self.rec.pause_writing();
    }
    fn resume_writing(&mut self) {
        self.paused = false;
        self.rec.resume_writing();
        self.push();
    }
    fn process_exited(&mut self) {
        self.rec.process_exited();
    }
    fn process_ended(&mut self, status: ExitStatus) {
        self.rec.process_ended(status);
    }
}

#[test]
fn ten_megabytes_through_cat_byte_exact() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let data: Rc<Vec<u8>> = Rc::new(
        (0..10 * 1024 * 1024u32)
            .map(|i| (i * 31 % 251) as u8)
            .collect(),
    );
    let (rec, log, ended) = Rec::new(&h);
    let d = data.clone();
    let (t, _p) = h
        .subprocess_exec(
            move || Pump {
                rec,
                data: d,
                sent: 0,
                paused: false,
            },
            "cat",
            std::iter::empty::<&str>(),
            SubprocessOptions::default(),
        )
        .unwrap();
    let status = run(&lp, DEADLINE, ended).unwrap();
    assert!(status.success());
    assert_eq!(t.returncode(), Some(status));
    let log = log.borrow();
    check_order(&log, &[0, 1, 2]);
    let out = data_of(&log, 1);
    assert_eq!(out.len(), data.len());
    assert!(out == *data, "output differs from input");
    assert!(
        log.contains(&Ev::Pause),
        "flow control never paused: 10 MB fit?"
    );
    assert!(log.contains(&Ev::Lost(0, "LocalClose".into())));
    assert!(log.contains(&Ev::Lost(1, "PeerEof".into())));
}
