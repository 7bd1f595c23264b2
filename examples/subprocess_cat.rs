// cargo run --example subprocess_cat -- [--size BYTES]
//
// Streams BYTES (default 16 MiB) through `cat` with the subprocess
// transport: writes its stdin under flow control (stop at pause_writing,
// go on at resume_writing), reads its stdout as it comes, and checks that
// what came back is what went in.

use std::process::{ExitCode, ExitStatus};
use std::time::{Duration, Instant};

use protoloop::{
    CloseReason, EventLoop, SettableFuture, SubprocessOptions, SubprocessProtocol,
    SubprocessTransport,
};

/// The byte at offset `i` of the stream: a pattern that catches
/// reordering, loss and duplication.
fn byte_at(i: usize) -> u8 {
    (i.wrapping_mul(31) % 251) as u8
}

struct Cat {
    transport: Option<SubprocessTransport>,
    size: usize,
    /// Bytes written to stdin so far.
    sent: usize,
    /// Bytes read back from stdout so far, all checked.
    received: usize,
    paused: bool,
    pauses: usize,
    mismatch: Option<usize>,
    done: SettableFuture<(ExitStatus, usize, Option<usize>, usize)>,
}

impl Cat {
    /// Write until the transport asks us to pause or all is sent.
    fn pump(&mut self) {
        let Some(stdin) = self
            .transport
            .as_ref()
            .and_then(|t| t.get_pipe_transport(0))
        else {
            return;
        };
        let mut chunk = Vec::with_capacity(64 * 1024);
        while !self.paused && self.sent < self.size {
            let end = (self.sent + 64 * 1024).min(self.size);
            chunk.clear();
            chunk.extend((self.sent..end).map(byte_at));
            if stdin.write(&chunk).is_err() {
                return; // cat went away; process_ended reports how
            }
            self.sent = end;
            // pause_writing arrives on the next loop iteration; stop as
            // soon as the buffer is over its high-water mark.
            if stdin.get_write_buffer_size() > stdin.get_write_buffer_limits().0 {
                break;
            }
        }
        if self.sent == self.size {
            stdin.close(); // EOF: cat finishes and exits
        }
    }
}

impl SubprocessProtocol for Cat {
    fn connection_made(&mut self, transport: SubprocessTransport) {
        self.transport = Some(transport);
        self.pump();
    }

    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        if fd != 1 {
            eprintln!("cat on fd {fd}: {}", String::from_utf8_lossy(data));
            return;
        }
        for (k, &b) in data.iter().enumerate() {
            if self.mismatch.is_none() && b != byte_at(self.received + k) {
                self.mismatch = Some(self.received + k);
            }
        }
        self.received += data.len();
    }

    fn pipe_connection_lost(&mut self, fd: i32, reason: CloseReason) {
        if reason.is_error() {
            eprintln!("pipe {fd} lost: {reason}");
        }
    }

    fn pause_writing(&mut self) {
        self.paused = true;
        self.pauses += 1;
    }

    fn resume_writing(&mut self) {
        self.paused = false;
        self.pump();
    }

    fn process_ended(&mut self, status: ExitStatus) {
        let _ = self
            .done
            .set_result((status, self.received, self.mismatch, self.pauses));
    }
}

fn main() -> ExitCode {
    let mut size = 16 * 1024 * 1024;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--size", Some(v)) => match v.parse() {
                Ok(n) => size = n,
                Err(e) => {
                    eprintln!("--size {v}: {e}");
                    return ExitCode::FAILURE;
                }
            },
            _ => {
                eprintln!("usage: subprocess_cat [--size BYTES]");
                return ExitCode::FAILURE;
            }
        }
    }

    let lp = EventLoop::new().expect("event loop");
    let h = lp.handle();
    let done = h.create_future();
    let d = done.clone();
    let started = Instant::now();
    let spawned = h.subprocess_exec(
        move || Cat {
            transport: None,
            size,
            sent: 0,
            received: 0,
            paused: false,
            pauses: 0,
            mismatch: None,
            done: d,
        },
        "cat",
        std::iter::empty::<&str>(),
        SubprocessOptions::default().kill_on_drop(true),
    );
    let (_transport, _proto) = match spawned {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let h2 = h.clone();
    let result =
        lp.run_until_complete(async move { h2.timeout(Duration::from_secs(120), done).await });
    let (status, received, mismatch, pauses) = match result {
        Ok(Ok(Ok(v))) => v,
        Ok(Err(_)) => {
            eprintln!("timed out");
            return ExitCode::FAILURE;
        }
        other => {
            eprintln!("failed: {other:?}");
            return ExitCode::FAILURE;
        }
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "cat: {status}; sent {size} bytes, got {received} back in {secs:.2} s \
         ({:.0} MiB/s), writing paused {pauses} times",
        (size as f64 / (1024.0 * 1024.0)) / secs
    );
    match mismatch {
        Some(at) => {
            println!("MISMATCH at byte {at}");
            ExitCode::FAILURE
        }
        None if received != size => {
            println!("SHORT: {received} of {size} bytes");
            ExitCode::FAILURE
        }
        None if !status.success() => ExitCode::FAILURE,
        None => {
            println!("ok: byte-exact");
            ExitCode::SUCCESS
        }
    }
}
