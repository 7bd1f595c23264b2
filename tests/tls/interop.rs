//! Interoperation with the `openssl s_client` and `openssl s_server`
//! programs, when `openssl` is installed (skipped with a message when it
//! is not). Loopback only, every wait bounded; children are killed at the
//! end whatever happens.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use protoloop::{CloseReason, ConnectOptions, EventLoop, Protocol, ServerOptions, Transport};

use super::support::*;

fn openssl_available() -> bool {
    match Command::new("openssl").arg("version").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            eprintln!("skipping: the openssl program is not installed");
            false
        }
    }
}

/// Kills the child when dropped, so a failing test leaves no process.
struct Reaper(Child);
impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Echoes, and closes (close_notify) once a whole line went back.
struct EchoLine {
    t: Option<Transport>,
    log: Shared,
}

impl Protocol for EchoLine {
    fn connection_made(&mut self, t: Transport) {
        self.log.borrow_mut().info = t.tls_info();
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        let t = self.t.as_ref().unwrap();
        self.log.borrow_mut().data.extend_from_slice(data);
        t.write(data).unwrap();
        if data.contains(&b'\n') {
            t.close();
        }
    }
    fn connection_lost(&mut self, r: CloseReason) {
        self.log.borrow_mut().lost = Some(r);
    }
}

#[test]
fn openssl_s_client_talks_to_our_server() {
    if !openssl_available() {
        return;
    }
    let pki = pki();
    let dir = scratch_dir("s_client");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let slog = Shared::default();
    let s2 = slog.clone();
    let server = h
        .create_server(
            move || EchoLine {
                t: None,
                log: s2.clone(),
            },
            "127.0.0.1:0",
            ServerOptions::default().tls(pki.server()),
        )
        .unwrap();
    let port = server.local_addrs()[0].port();
    let child = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", "localhost", "-verify_return_error", "-quiet"])
        .arg("-CAfile")
        .arg(&ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reaper(child);
    child
        .0
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"hello from s_client\n")
        .unwrap();
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut { stdout }, &mut out);
        let _ = tx.send(out);
    });
    lp.run_until_complete(async move {
        // s_client exits once our server's close_notify arrives.
        let deadline = Instant::now() + LIMIT;
        let out = loop {
            if let Ok(out) = rx.try_recv() {
                break out;
            }
            assert!(Instant::now() < deadline, "s_client did not finish");
            h.sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(String::from_utf8_lossy(&out), "hello from s_client\n");
        wait_for(&h, "server side closed", LIMIT, || {
            slog.borrow().lost.is_some()
        })
        .await;
        let s = slog.borrow();
        assert!(
            matches!(s.lost, Some(CloseReason::LocalClose)),
            "{:?}",
            s.lost
        );
        assert_eq!(
            s.info.as_ref().unwrap().server_name.as_deref(),
            Some("localhost")
        );
    })
    .unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "s_client failed: {status}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A free loopback port: bind port 0, read it, let it go.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn our_client_talks_to_openssl_s_server() {
    if !openssl_available() {
        return;
    }
    let pki = pki();
    let dir = scratch_dir("s_server");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &pki.server_cert_pem).unwrap();
    std::fs::write(&key, &pki.server_key_pem).unwrap();
    let port = free_port();
    let child = Command::new("openssl")
        .args(["s_server", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-naccept", "1", "-quiet"])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Reaper(child);
    let mut stdin = child.0.stdin.take().unwrap();
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The certificate and key went through files: load them back with the
    // crate's PEM helpers, as the example server does.
    assert_eq!(
        protoloop::tls::load_certificates(&cert).unwrap(),
        vec![pki.server_cert.clone()]
    );
    protoloop::tls::load_private_key(&key).unwrap();

    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let clog = Shared::default();
    lp.run_until_complete(async move {
        // s_server takes a moment to start listening.
        let deadline = Instant::now() + LIMIT;
        let t = loop {
            let c2 = clog.clone();
            let opts = ConnectOptions::default().tls(pki.client(), localhost());
            match h
                .create_connection(move || Peer::new(&c2), addr, opts)
                .await
            {
                Ok((t, _)) => break t,
                Err(protoloop::Error::Connect { .. }) if Instant::now() < deadline => {
                    h.sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("connecting to s_server: {e}"),
            }
        };
        let info = t.tls_info().unwrap();
        assert_eq!(info.peer_certificates[0], pki.server_cert);
        t.write(b"hello from protoloop\n").unwrap();
        let deadline = Instant::now() + LIMIT;
        loop {
            match rx.try_recv() {
                Ok(line) if line.contains("hello from protoloop") => break,
                Ok(_) => {}
                Err(_) => {
                    assert!(Instant::now() < deadline, "s_server never printed our line");
                    h.sleep(Duration::from_millis(5)).await;
                }
            }
        }
        stdin.write_all(b"hello from openssl\n").unwrap();
        stdin.flush().unwrap();
        wait_for(&h, "s_server's line", LIMIT, || {
            clog.borrow().data == b"hello from openssl\n"
        })
        .await;
        t.close();
        wait_for(&h, "closed", LIMIT, || clog.borrow().lost.is_some()).await;
        assert!(
            matches!(clog.borrow().lost, Some(CloseReason::LocalClose)),
            "{:?}",
            clog.borrow().lost
        );
    })
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
