//! Shared pieces of the TLS tests: certificates made at test time, TLS
//! servers on them, a recording protocol, bounded waits.

#![allow(dead_code)]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use protoloop::tls::{self, TlsInfo};
use protoloop::{
    CloseReason, Handle, Protocol, Server, ServerOptions, Transport, UnixAddr, UnixServerOptions,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A CA, a server certificate for "localhost" and 127.0.0.1, and a
/// client certificate, all made now.
pub struct Pki {
    pub ca: CertificateDer<'static>,
    pub ca_pem: String,
    pub server_cert: CertificateDer<'static>,
    pub server_cert_pem: String,
    pub server_key: PrivateKeyDer<'static>,
    pub server_key_pem: String,
    pub client_cert: CertificateDer<'static>,
    pub client_key: PrivateKeyDer<'static>,
}

pub fn pki() -> Pki {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("protoloop test CA {} {n}", std::process::id()),
    );
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();

    let server_key = rcgen::KeyPair::generate().unwrap();
    let mut sp =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    sp.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let server = sp.signed_by(&server_key, &ca).unwrap();

    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut cp = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    cp.distinguished_name
        .push(rcgen::DnType::CommonName, "test client");
    cp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = cp.signed_by(&client_key, &ca).unwrap();

    Pki {
        ca: ca.der().clone(),
        ca_pem: ca.pem(),
        server_cert: server.der().clone(),
        server_cert_pem: server.pem(),
        server_key: PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        server_key_pem: server_key.serialize_pem(),
        client_cert: client.der().clone(),
        client_key: PrivateKeyDer::Pkcs8(client_key.serialize_der().into()),
    }
}

impl Pki {
    pub fn server_config(&self) -> rustls::ServerConfig {
        tls::server_config(vec![self.server_cert.clone()], self.server_key.clone_key()).unwrap()
    }

    pub fn server(&self) -> Arc<rustls::ServerConfig> {
        Arc::new(self.server_config())
    }

    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        Arc::new(tls::client_config([self.ca.clone()]).unwrap())
    }
}

pub fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// A TLS server with `pki`'s certificate on a free loopback port, running
/// a protocol from `factory` on each connection; and its address.
pub fn tls_server<P, F>(h: &Handle, pki: &Pki, factory: F) -> (Server, SocketAddr)
where
    P: Protocol,
    F: Fn() -> P + 'static,
{
    let server = h
        .create_server(
            factory,
            "127.0.0.1:0",
            ServerOptions::default().tls(pki.server()),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    (server, addr)
}

/// [`tls_server`] on the Unix socket `addr` (a path or an abstract name).
pub fn unix_tls_server<P, F>(h: &Handle, pki: &Pki, addr: impl Into<UnixAddr>, factory: F) -> Server
where
    P: Protocol,
    F: Fn() -> P + 'static,
{
    h.create_unix_server(
        factory,
        addr,
        UnixServerOptions::default().tls(pki.server()),
    )
    .unwrap()
}

/// A factory of echoing [`Peer`]s for a server, and the log they all
/// record into.
pub fn echo_peers() -> (Shared, impl Fn() -> Peer + 'static) {
    let log = Shared::default();
    let l2 = log.clone();
    (log, move || Peer::echo(&l2))
}

/// What a [`Peer`] saw.
#[derive(Default)]
pub struct Log {
    pub made: usize,
    pub data: Vec<u8>,
    pub eof: usize,
    pub lost: Option<CloseReason>,
    pub pauses: usize,
    pub resumes: usize,
    pub info: Option<TlsInfo>,
    /// Callbacks in order, to check the contract.
    pub order: Vec<&'static str>,
}

pub type Shared = Rc<RefCell<Log>>;

/// A protocol that records everything and can echo.
pub struct Peer {
    pub log: Shared,
    pub t: Option<Transport>,
    pub echo: bool,
    pub keep_open_on_eof: bool,
    pub pause_on_made: bool,
}

impl Peer {
    pub fn new(log: &Shared) -> Peer {
        Peer {
            log: log.clone(),
            t: None,
            echo: false,
            keep_open_on_eof: false,
            pause_on_made: false,
        }
    }
    pub fn echo(log: &Shared) -> Peer {
        Peer {
            echo: true,
            ..Peer::new(log)
        }
    }
}

impl Protocol for Peer {
    fn connection_made(&mut self, t: Transport) {
        let mut l = self.log.borrow_mut();
        l.made += 1;
        l.order.push("made");
        l.info = t.tls_info();
        if self.pause_on_made {
            t.pause_reading();
        }
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        {
            let mut l = self.log.borrow_mut();
            l.data.extend_from_slice(data);
            if l.order.last() != Some(&"data") {
                l.order.push("data");
            }
        }
        if self.echo {
            let _ = self.t.as_ref().unwrap().write(data);
        }
    }
    fn eof_received(&mut self) -> bool {
        let mut l = self.log.borrow_mut();
        l.eof += 1;
        l.order.push("eof");
        self.keep_open_on_eof
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        let mut l = self.log.borrow_mut();
        l.order.push("lost");
        assert!(l.lost.is_none(), "connection_lost called twice");
        l.lost = Some(reason);
    }
    fn pause_writing(&mut self) {
        let mut l = self.log.borrow_mut();
        assert_eq!(l.pauses, l.resumes, "pause_writing twice in a row");
        l.pauses += 1;
    }
    fn resume_writing(&mut self) {
        let mut l = self.log.borrow_mut();
        l.resumes += 1;
        assert_eq!(l.pauses, l.resumes, "resume_writing without a pause");
    }
}

/// Wait on the loop until `cond` holds; panic after `limit`.
pub async fn wait_for(h: &Handle, what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        h.sleep(Duration::from_millis(2)).await;
    }
}

/// The usual bound for waits in these tests.
pub const LIMIT: Duration = Duration::from_secs(20);

/// A unique scratch directory under the system temp dir.
pub fn scratch_dir(tag: &str) -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "protoloop-tls-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Plain TCP client that sends `send` and records what comes back.
pub struct Raw {
    pub send: Vec<u8>,
    pub log: Shared,
}

impl Protocol for Raw {
    fn connection_made(&mut self, t: Transport) {
        if !self.send.is_empty() {
            t.write(&self.send).unwrap();
        }
    }
    fn data_received(&mut self, data: &[u8]) {
        self.log.borrow_mut().data.extend_from_slice(data);
    }
    fn connection_lost(&mut self, r: CloseReason) {
        self.log.borrow_mut().lost = Some(r);
    }
}
