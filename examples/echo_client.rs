//! An echo client: sends a message, waits for it to come back, prints it.
//!
//! Run: `cargo run --example echo_client -- --connect 127.0.0.1:8888 [--message TEXT]`
//! (start `cargo run --example echo_server` first). Exits non-zero if the
//! server cannot be reached or the echo differs.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use protoloop::{CloseReason, ConnectOptions, EventLoop, Protocol};

/// Collects what comes back.
struct Client {
    received: Rc<RefCell<Vec<u8>>>,
}

impl Protocol for Client {
    fn data_received(&mut self, data: &[u8]) {
        self.received.borrow_mut().extend_from_slice(data);
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        if reason.is_error() {
            eprintln!("echo_client: connection lost: {reason}");
        }
    }
}

fn parse_args() -> Result<(String, String), String> {
    let usage = "usage: echo_client [--connect HOST:PORT] [--message TEXT]";
    let mut args = std::env::args().skip(1);
    let mut connect = "127.0.0.1:8888".to_string();
    let mut message = "Hello from protoloop!".to_string();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--connect" => connect = args.next().ok_or(usage)?,
            "--message" => message = args.next().ok_or(usage)?,
            "-h" | "--help" => return Err(usage.into()),
            other => return Err(format!("unknown argument {other:?}; {usage}")),
        }
    }
    Ok((connect, message))
}

fn main() {
    let (connect, message) = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let lp = EventLoop::new().expect("creating the event loop");
    let h = lp.handle();
    let result = lp.run_until_complete(async move {
        let received = Rc::new(RefCell::new(Vec::new()));
        let r = received.clone();
        let opts = ConnectOptions::default().timeout(Duration::from_secs(5));
        let (transport, _) = h
            .create_connection(move || Client { received: r }, connect.as_str(), opts)
            .await
            .map_err(|e| e.to_string())?;
        transport
            .write(message.as_bytes())
            .map_err(|e| e.to_string())?;
        // Wait (at most 5 s) for the whole message to come back.
        let deadline = h.time() + Duration::from_secs(5);
        while received.borrow().len() < message.len() && h.time() < deadline {
            h.sleep(Duration::from_millis(2)).await;
        }
        transport.close();
        let got = received.borrow().clone();
        if got == message.as_bytes() {
            Ok(String::from_utf8_lossy(&got).into_owned())
        } else {
            Err(format!(
                "echo differs: sent {} bytes, got {} back",
                message.len(),
                got.len()
            ))
        }
    });
    match result.expect("running the event loop") {
        Ok(echo) => println!("echo_client: {echo}"),
        Err(e) => {
            eprintln!("echo_client: {e}");
            std::process::exit(1);
        }
    }
}
