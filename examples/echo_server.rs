//! An echo server: writes back every byte it receives.
//!
//! Run: `cargo run --example echo_server -- --listen 127.0.0.1:8888`
//! then `cargo run --example echo_client -- --connect 127.0.0.1:8888`.
//! Stops cleanly on SIGINT (Ctrl-C) or SIGTERM: it stops accepting, closes
//! every connection (flushing what was written) and exits 0.

use std::time::Duration;

use protoloop::{CloseReason, EventLoop, Protocol, ServerOptions, Transport};
use signal_hook::consts::{SIGINT, SIGTERM};

/// One connection: echo, and log how it ended.
struct Echo {
    transport: Option<Transport>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        if let Some(peer) = transport.peer_addr() {
            eprintln!("echo_server: connection from {peer}");
        }
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            // A failed write means the connection is going away;
            // connection_lost will say why.
            let _ = t.write(data);
        }
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        eprintln!("echo_server: connection closed: {reason}");
    }
}

fn listen_arg() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:8888".to_string();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs HOST:PORT")?,
            "-h" | "--help" => return Err("usage: echo_server [--listen HOST:PORT]".into()),
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: echo_server [--listen HOST:PORT]"
                ));
            }
        }
    }
    Ok(listen)
}

fn main() {
    let listen = match listen_arg() {
        Ok(l) => l,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let lp = EventLoop::new().expect("creating the event loop");
    let h = lp.handle();
    let server = match h.create_server(
        || Echo { transport: None },
        listen.as_str(),
        ServerOptions::default(),
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo_server: {e}");
            std::process::exit(1);
        }
    };
    for addr in server.local_addrs() {
        println!("echo_server: listening on {addr}");
    }
    for sig in [SIGINT, SIGTERM] {
        let server = server.clone();
        let h2 = h.clone();
        h.add_signal_handler(sig, move || {
            eprintln!("echo_server: signal {sig}, shutting down");
            let done = server.shutdown(Duration::from_secs(2));
            let h3 = h2.clone();
            h2.spawn(async move {
                done.await;
                h3.stop();
            });
        })
        .expect("installing signal handlers");
    }
    lp.run_forever().expect("running the event loop");
    println!("echo_server: bye");
}
