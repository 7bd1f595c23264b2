//! A TLS echo server: writes back every byte it receives, over TLS.
//!
//! Run: `cargo run --example tls_echo_server -- --listen 127.0.0.1:8443 --self-signed`
//! then `cargo run --example tls_echo_client -- --connect 127.0.0.1:8443 --ca CERT`
//! with the CERT file the server names on startup. With a real
//! certificate: `--cert cert.pem --key key.pem` (PEM; the chain leaf
//! first, the key PKCS#8, PKCS#1 or SEC1). Stops cleanly on SIGINT
//! (Ctrl-C) or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protoloop::{CloseReason, EventLoop, Protocol, ServerOptions, Transport, tls};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use signal_hook::consts::{SIGINT, SIGTERM};

/// One connection: echo, and log how it ended.
struct Echo {
    transport: Option<Transport>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        // Called once the handshake completed: the TLS details are known.
        let peer = transport.peer_addr().map(|a| a.to_string());
        if let Some(info) = transport.tls_info() {
            eprintln!(
                "tls_echo_server: connection from {} ({:?}, {:?}, SNI {:?})",
                peer.unwrap_or_default(),
                info.protocol_version,
                info.cipher_suite,
                info.server_name
            );
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
        eprintln!("tls_echo_server: connection closed: {reason}");
    }
}

/// Where the certificate comes from.
enum Identity {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned,
}

const USAGE: &str = "usage: tls_echo_server [--listen HOST:PORT] \
                     (--cert CERT.pem --key KEY.pem | --self-signed)";

fn parse_args() -> Result<(String, Identity), String> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:8443".to_string();
    let (mut cert, mut key, mut self_signed) = (None, None, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().ok_or(USAGE)?,
            "--cert" => cert = Some(PathBuf::from(args.next().ok_or(USAGE)?)),
            "--key" => key = Some(PathBuf::from(args.next().ok_or(USAGE)?)),
            "--self-signed" => self_signed = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    let identity = match (cert, key, self_signed) {
        (Some(cert), Some(key), false) => Identity::Files { cert, key },
        (None, None, true) => Identity::SelfSigned,
        _ => return Err(format!("give --cert and --key, or --self-signed; {USAGE}")),
    };
    Ok((listen, identity))
}

/// Make a certificate for localhost and 127.0.0.1 and write it where the
/// client can be pointed at it with `--ca`.
fn self_signed() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let made = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
    let path = std::env::temp_dir().join("protoloop-tls-echo-cert.pem");
    std::fs::write(&path, made.cert.pem())
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!(
        "tls_echo_server: self-signed certificate written to {}; \
         run the client with --ca {}",
        path.display(),
        path.display()
    );
    let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    Ok((vec![made.cert.der().clone()], key))
}

fn load(identity: Identity) -> Result<rustls::ServerConfig, String> {
    let (chain, key) = match identity {
        Identity::Files { cert, key } => (
            tls::load_certificates(&cert).map_err(|e| e.to_string())?,
            tls::load_private_key(&key).map_err(|e| e.to_string())?,
        ),
        Identity::SelfSigned => self_signed()?,
    };
    tls::server_config(chain, key).map_err(|e| e.to_string())
}

fn main() {
    let (listen, identity) = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let config = match load(identity) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("tls_echo_server: {e}");
            std::process::exit(1);
        }
    };
    let lp = EventLoop::new().expect("creating the event loop");
    let h = lp.handle();
    let server = match h.create_server(
        || Echo { transport: None },
        listen.as_str(),
        ServerOptions::default().tls(config),
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tls_echo_server: {e}");
            std::process::exit(1);
        }
    };
    for addr in server.local_addrs() {
        println!("tls_echo_server: listening on {addr}");
    }
    for sig in [SIGINT, SIGTERM] {
        let server = server.clone();
        let h2 = h.clone();
        h.add_signal_handler(sig, move || {
            eprintln!("tls_echo_server: signal {sig}, shutting down");
            // Each TLS connection is asked to drain; its layer sends
            // close_notify; whatever is still open after 2 s is reset.
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
    println!("tls_echo_server: bye");
}
