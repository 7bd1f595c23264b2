//! A TLS echo client: connects, shows what the handshake negotiated,
//! sends a message, waits for it to come back, prints it.
//!
//! Run: `cargo run --example tls_echo_client -- --connect 127.0.0.1:8443 --ca CERT.pem
//! [--server-name localhost] [--message TEXT]` (start
//! `cargo run --example tls_echo_server -- --self-signed` first; it names
//! the CERT file). `--insecure` skips certificate verification instead of
//! `--ca`: encrypted, not authenticated. Exits non-zero if the server
//! cannot be reached, the handshake fails, or the echo differs.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use protoloop::{CloseReason, ConnectOptions, EventLoop, Protocol, tls};
use rustls::pki_types::ServerName;

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
            eprintln!("tls_echo_client: connection lost: {reason}");
        }
    }
}

struct Args {
    connect: String,
    ca: Option<String>,
    insecure: bool,
    server_name: String,
    message: String,
}

const USAGE: &str = "usage: tls_echo_client [--connect HOST:PORT] (--ca CERT.pem | --insecure) \
                     [--server-name NAME] [--message TEXT]";

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut a = Args {
        connect: "127.0.0.1:8443".into(),
        ca: None,
        insecure: false,
        server_name: "localhost".into(),
        message: "Hello over TLS from protoloop!".into(),
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--connect" => a.connect = args.next().ok_or(USAGE)?,
            "--ca" => a.ca = Some(args.next().ok_or(USAGE)?),
            "--insecure" => a.insecure = true,
            "--server-name" => a.server_name = args.next().ok_or(USAGE)?,
            "--message" => a.message = args.next().ok_or(USAGE)?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    if a.ca.is_some() == a.insecure {
        return Err(format!("give exactly one of --ca and --insecure; {USAGE}"));
    }
    Ok(a)
}

fn client_config(a: &Args) -> Result<rustls::ClientConfig, String> {
    match &a.ca {
        Some(path) => {
            let roots = tls::load_certificates(path).map_err(|e| e.to_string())?;
            tls::client_config(roots).map_err(|e| e.to_string())
        }
        // Asked for by name on the command line; never a default.
        None => Ok(tls::dangerous_client_config_without_verification()),
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
    let config = match client_config(&args) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("tls_echo_client: {e}");
            std::process::exit(1);
        }
    };
    let name = match ServerName::try_from(args.server_name.clone()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("tls_echo_client: bad --server-name: {e}");
            std::process::exit(2);
        }
    };
    let lp = EventLoop::new().expect("creating the event loop");
    let h = lp.handle();
    let message = args.message.clone();
    let result = lp.run_until_complete(async move {
        let received = Rc::new(RefCell::new(Vec::new()));
        let r = received.clone();
        let opts = ConnectOptions::default()
            .timeout(Duration::from_secs(5))
            .tls_client(
                tls::TlsClient::new(config, name).handshake_timeout(Duration::from_secs(5)),
            );
        let (transport, _) = h
            .create_connection(move || Client { received: r }, args.connect.as_str(), opts)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(info) = transport.tls_info() {
            println!(
                "tls_echo_client: {:?}, {:?}",
                info.protocol_version, info.cipher_suite
            );
        }
        transport
            .write(message.as_bytes())
            .map_err(|e| e.to_string())?;
        // Wait (at most 5 s) for the whole message to come back.
        let deadline = h.time() + Duration::from_secs(5);
        while received.borrow().len() < message.len() && h.time() < deadline {
            h.sleep(Duration::from_millis(2)).await;
        }
        // close_notify, then wait for the server's (bounded by the
        // shutdown timeout).
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
        Ok(echo) => println!("tls_echo_client: {echo}"),
        Err(e) => {
            eprintln!("tls_echo_client: {e}");
            std::process::exit(1);
        }
    }
}
