//! A UDP echo client: sends numbered datagrams to an echo server and
//! checks each comes back. UDP may drop what a receiver has no room for,
//! so at most 32 datagrams are in flight at once: the next goes out when
//! an echo comes back.
//!
//! Run: `cargo run --example udp_echo_client -- --connect 127.0.0.1:9999 [--count N] [--message TEXT]`
//! (start `cargo run --example udp_echo_server` first). Exits non-zero if
//! an echo is missing or differs, or if the server's port is closed: the
//! kernel's "port unreachable" reaches `error_received`, naming the
//! address it concerns.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use protoloop::{DatagramOptions, DatagramProtocol, DatagramTransport, EventLoop, SocketAddress};

/// What came back, shared with `main`.
#[derive(Default)]
struct Outcome {
    echoed: BTreeSet<u32>,
    wrong: usize,
    error: Option<String>,
}

/// Datagrams sent but not yet echoed, at most.
const WINDOW: u32 = 32;

/// Sends a window of datagrams and checks each echo against what was sent.
struct Client {
    transport: Option<DatagramTransport>,
    message: String,
    count: u32,
    next: u32,
    outcome: Rc<RefCell<Outcome>>,
}

impl Client {
    fn fill_window(&mut self) {
        let Some(t) = &self.transport else { return };
        let echoed = self.outcome.borrow().echoed.len() as u32;
        while self.next < self.count && self.next - echoed < WINDOW {
            if let Err(e) = t.send(&datagram(self.next, &self.message)) {
                self.outcome.borrow_mut().error = Some(e.to_string());
                return;
            }
            self.next += 1;
        }
    }
}

/// Datagram `n`: a 4-byte big-endian number, then the message.
fn datagram(n: u32, message: &str) -> Vec<u8> {
    let mut d = n.to_be_bytes().to_vec();
    d.extend_from_slice(message.as_bytes());
    d
}

impl DatagramProtocol for Client {
    fn connection_made(&mut self, transport: DatagramTransport) {
        self.transport = Some(transport);
        self.fill_window();
    }

    fn datagram_received(&mut self, data: &[u8], _addr: SocketAddress) {
        self.check(data);
        self.fill_window();
    }

    fn error_received(&mut self, error: std::io::Error, addr: Option<SocketAddress>) {
        let about = addr.map(|a| format!("{a}: ")).unwrap_or_default();
        self.outcome.borrow_mut().error = Some(format!("{about}{error}"));
    }
}

impl Client {
    fn check(&mut self, data: &[u8]) {
        let mut out = self.outcome.borrow_mut();
        match data.get(..4) {
            Some(head) => {
                let n = u32::from_be_bytes(head.try_into().expect("four bytes"));
                if data == datagram(n, &self.message).as_slice() {
                    out.echoed.insert(n);
                } else {
                    out.wrong += 1;
                }
            }
            None => out.wrong += 1,
        }
    }
}

struct Args {
    connect: String,
    count: u32,
    message: String,
}

fn parse_args() -> Result<Args, String> {
    let usage = "usage: udp_echo_client [--connect HOST:PORT] [--count N] [--message TEXT]";
    let mut args = std::env::args().skip(1);
    let mut out = Args {
        connect: "127.0.0.1:9999".into(),
        count: 10,
        message: "Hello over UDP!".into(),
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--connect" => out.connect = args.next().ok_or(usage)?,
            "--message" => out.message = args.next().ok_or(usage)?,
            "--count" => {
                let n = args.next().ok_or(usage)?;
                out.count = n
                    .parse()
                    .map_err(|_| format!("--count wants a number, got {n:?}"))?;
            }
            "-h" | "--help" => return Err(usage.into()),
            other => return Err(format!("unknown argument {other:?}; {usage}")),
        }
    }
    Ok(out)
}

/// Wait (at most 5 s of silence) for every echo.
async fn exchange(
    h: protoloop::Handle,
    args: Args,
    outcome: Rc<RefCell<Outcome>>,
) -> Result<(), String> {
    let mut deadline = h.time() + Duration::from_secs(5);
    let mut progress = 0;
    loop {
        // Look, then let go of the borrow before waiting.
        let verdict = {
            let out = outcome.borrow();
            if let Some(e) = &out.error {
                Some(Err(format!("no echo server there: {e}")))
            } else if out.echoed.len() as u32 == args.count {
                Some(Ok(()))
            } else {
                if out.echoed.len() > progress {
                    progress = out.echoed.len();
                    deadline = h.time() + Duration::from_secs(5);
                }
                (h.time() >= deadline).then(|| {
                    Err(format!(
                        "{} of {} echoes missing, {} wrong",
                        args.count - out.echoed.len() as u32,
                        args.count,
                        out.wrong
                    ))
                })
            }
        };
        if let Some(v) = verdict {
            return v;
        }
        h.sleep(Duration::from_millis(2)).await;
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let lp = EventLoop::new().expect("creating the event loop");
    let h = lp.handle();
    let count = args.count;
    let result = lp.run_until_complete(async move {
        let outcome = Rc::new(RefCell::new(Outcome::default()));
        let o = outcome.clone();
        let (message, count) = (args.message.clone(), args.count);
        let (t, _) = h
            .create_datagram_endpoint(
                move || Client {
                    transport: None,
                    message,
                    count,
                    next: 0,
                    outcome: o,
                },
                DatagramOptions::default().remote_addr(args.connect.as_str()),
            )
            .await
            .map_err(|e| e.to_string())?;
        let r = exchange(h, args, outcome).await;
        t.close();
        r
    });
    match result.expect("running the event loop") {
        Ok(()) => println!("udp_echo_client: all {count} datagrams echoed"),
        Err(e) => {
            eprintln!("udp_echo_client: {e}");
            std::process::exit(1);
        }
    }
}
