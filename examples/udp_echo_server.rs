//! A UDP echo server: sends every datagram back to where it came from.
//!
//! Run: `cargo run --example udp_echo_server -- --listen 127.0.0.1:9999`
//! then `cargo run --example udp_echo_client -- --connect 127.0.0.1:9999`.
//! Stops cleanly on SIGINT (Ctrl-C) or SIGTERM: it sends what is still
//! queued, closes the endpoint and exits 0.

use protoloop::{
    CloseReason, DatagramOptions, DatagramProtocol, DatagramTransport, EventLoop, SocketAddress,
};
use signal_hook::consts::{SIGINT, SIGTERM};

/// The endpoint's protocol: echo, and log what goes wrong.
struct Echo {
    transport: Option<DatagramTransport>,
    stop: Box<dyn Fn()>,
}

impl DatagramProtocol for Echo {
    fn connection_made(&mut self, transport: DatagramTransport) {
        self.transport = Some(transport);
    }

    fn datagram_received(&mut self, data: &[u8], addr: SocketAddress) {
        if let Some(t) = &self.transport {
            // sendto only fails for this one datagram (too large, refused
            // by the kernel ...); the server goes on.
            if let Err(e) = t.sendto(data, addr) {
                eprintln!("udp_echo_server: {e}");
            }
        }
    }

    fn error_received(&mut self, error: std::io::Error, addr: Option<SocketAddress>) {
        // An ICMP error for an earlier reply, e.g. a client that left.
        match addr {
            Some(a) => eprintln!("udp_echo_server: {a}: {error}"),
            None => eprintln!("udp_echo_server: {error}"),
        }
    }

    fn pause_writing(&mut self) {
        // The kernel is not keeping up with our replies: stop reading
        // requests until the queue drains.
        if let Some(t) = &self.transport {
            t.pause_reading();
        }
    }

    fn resume_writing(&mut self) {
        if let Some(t) = &self.transport {
            t.resume_reading();
        }
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        if reason.is_error() {
            eprintln!("udp_echo_server: endpoint closed: {reason}");
        }
        (self.stop)();
    }
}

fn listen_arg() -> Result<String, String> {
    let usage = "usage: udp_echo_server [--listen HOST:PORT]";
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:9999".to_string();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().ok_or(usage)?,
            "-h" | "--help" => return Err(usage.into()),
            other => return Err(format!("unknown argument {other:?}; {usage}")),
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
    let h2 = h.clone();
    let made = lp
        .run_until_complete(h.create_datagram_endpoint(
            move || Echo {
                transport: None,
                stop: Box::new(move || h2.stop()),
            },
            DatagramOptions::default().local_addr(listen.as_str()),
        ))
        .expect("running the event loop");
    let endpoint = match made {
        Ok((t, _)) => t,
        Err(e) => {
            eprintln!("udp_echo_server: {e}");
            std::process::exit(1);
        }
    };
    if let Some(addr) = endpoint.local_addr() {
        println!("udp_echo_server: listening on {addr}");
    }
    for sig in [SIGINT, SIGTERM] {
        let endpoint = endpoint.clone();
        h.add_signal_handler(sig, move || {
            eprintln!("udp_echo_server: signal {sig}, shutting down");
            // connection_lost follows once the queue is sent; it stops the loop.
            endpoint.close();
        })
        .expect("installing signal handlers");
    }
    lp.run_forever().expect("running the event loop");
    println!("udp_echo_server: bye");
}
