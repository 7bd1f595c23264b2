//! In-memory tests of the sans-IO session: two sessions pump bytes at
//! each other, whole or one byte at a time, with no socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError};

use super::session::{Received, Session};
use super::{TlsClient, TlsServer, TlsSide, client_config, server_config};

struct Pki {
    ca: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

/// A CA (with a name of its own) and a "localhost" certificate it issued.
fn pki() -> Pki {
    static N: AtomicUsize = AtomicUsize::new(0);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let n = N.fetch_add(1, Ordering::Relaxed);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("session test CA {n}"));
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Pki {
        ca: ca.der().clone(),
        leaf: leaf.der().clone(),
        key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    }
}

fn client_for(roots: &CertificateDer<'static>, name: &'static str, alpn: &[&[u8]]) -> Session {
    let mut cfg = client_config([roots.clone()]).unwrap();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let side = TlsSide::Client(TlsClient::new(
        Arc::new(cfg),
        ServerName::try_from(name).unwrap(),
    ));
    Session::new(&side).unwrap()
}

fn server_for(pki: &Pki, alpn: &[&[u8]]) -> Session {
    let mut cfg = server_config(vec![pki.leaf.clone()], pki.key.clone_key()).unwrap();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Session::new(&TlsSide::Server(TlsServer::new(Arc::new(cfg)))).unwrap()
}

/// Everything one end received, summed over the pumping.
#[derive(Default)]
struct End {
    plain: BytesMut,
    completed: usize,
    closed: usize,
    error: Option<rustls::Error>,
    /// `plain.len()` when the handshake completed.
    plain_at_completion: Option<usize>,
}

impl End {
    fn feed(&mut self, s: &mut Session, data: &[u8], byte_at_a_time: bool) {
        let pieces: Vec<&[u8]> = if byte_at_a_time {
            data.chunks(1).collect()
        } else {
            vec![data]
        };
        for p in pieces {
            let r: Received = s.receive(p, &mut self.plain);
            if r.handshake_completed {
                self.completed += 1;
                self.plain_at_completion = Some(self.plain.len());
            }
            self.closed += r.peer_closed as usize;
            if let Some(e) = r.error {
                self.error.get_or_insert(e);
            }
        }
    }
}

/// Move bytes both ways until neither side has anything to say (bounded).
fn pump(c: &mut Session, ce: &mut End, s: &mut Session, se: &mut End, one: bool) {
    for _ in 0..100 {
        let to_server = c.take_output();
        let to_client = s.take_output();
        if to_server.is_none() && to_client.is_none() {
            return;
        }
        if let Some(b) = to_server {
            se.feed(s, &b, one);
        }
        if let Some(b) = to_client {
            ce.feed(c, &b, one);
        }
    }
    panic!("sessions kept talking for 100 rounds");
}

#[test]
fn handshake_negotiates_and_reports_what_it_agreed() {
    let pki = pki();
    let mut c = client_for(&pki.ca, "localhost", &[b"h2", b"echo/1"]);
    let mut s = server_for(&pki, &[b"echo/1"]);
    let (mut ce, mut se) = (End::default(), End::default());
    assert!(c.is_handshaking() && s.is_handshaking());
    pump(&mut c, &mut ce, &mut s, &mut se, false);
    assert_eq!((ce.completed, se.completed), (1, 1));
    assert!(!c.is_handshaking() && !s.is_handshaking());
    let ci = c.info();
    let si = s.info();
    assert_eq!(ci.protocol_version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(ci.cipher_suite, si.cipher_suite);
    assert_eq!(ci.alpn_protocol.as_deref(), Some(&b"echo/1"[..]));
    assert_eq!(si.alpn_protocol.as_deref(), Some(&b"echo/1"[..]));
    assert_eq!(ci.peer_certificates, vec![pki.leaf.clone()]);
    assert!(si.peer_certificates.is_empty());
    assert_eq!(si.server_name.as_deref(), Some("localhost"));
    assert!(si.is_server && !ci.is_server);
}

#[test]
fn one_byte_at_a_time_gives_the_same_bytes() {
    let pki = pki();
    let mut c = client_for(&pki.ca, "localhost", &[]);
    let mut s = server_for(&pki, &[]);
    let (mut ce, mut se) = (End::default(), End::default());
    let msg: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    c.write(&msg).unwrap(); // held: the handshake has not started
    assert_eq!(c.queued_len(), msg.len());
    pump(&mut c, &mut ce, &mut s, &mut se, true);
    assert_eq!(c.queued_len(), 0);
    assert_eq!(&se.plain[..], &msg[..]);
    s.write(b"reply").unwrap();
    pump(&mut c, &mut ce, &mut s, &mut se, true);
    assert_eq!(&ce.plain[..], b"reply");
    assert!(ce.error.is_none() && se.error.is_none());
}

#[test]
fn server_writes_made_during_the_handshake_wait_for_its_end() {
    let pki = pki();
    let mut c = client_for(&pki.ca, "localhost", &[]);
    let mut s = server_for(&pki, &[]);
    let (mut ce, mut se) = (End::default(), End::default());
    let hello = c.take_output().unwrap();
    se.feed(&mut s, &hello, false);
    // The server could send 0.5-RTT data now; the session must hold it
    // until the client has finished (and, with mTLS, been checked).
    s.write(b"early words").unwrap();
    assert_eq!(s.queued_len(), 11);
    let flight = s.take_output().unwrap();
    ce.feed(&mut c, &flight, false);
    assert_eq!(ce.completed, 1);
    assert!(
        ce.plain.is_empty(),
        "no application data in the server's first flight"
    );
    pump(&mut c, &mut ce, &mut s, &mut se, false);
    assert_eq!(se.completed, 1);
    assert_eq!(&ce.plain[..], b"early words");
}

#[test]
fn close_notify_is_reported_once_after_the_data_before_it() {
    let pki = pki();
    let mut c = client_for(&pki.ca, "localhost", &[]);
    let mut s = server_for(&pki, &[]);
    let (mut ce, mut se) = (End::default(), End::default());
    pump(&mut c, &mut ce, &mut s, &mut se, false);
    c.write(b"last words").unwrap();
    c.close_notify();
    let bytes = c.take_output().unwrap();
    let mut plain = BytesMut::new();
    let r = s.receive(&bytes, &mut plain);
    assert!(r.peer_closed && r.error.is_none());
    assert_eq!(&plain[..], b"last words");
    // Anything after close_notify is ignored, and the close is not
    // reported again.
    let r = s.receive(b"\x17\x03\x03\x00\x01x", &mut plain);
    assert!(!r.peer_closed && r.error.is_none());
    assert_eq!(&plain[..], b"last words");
    // The other direction still works: half-close.
    s.write(b"answer").unwrap();
    pump(&mut c, &mut ce, &mut s, &mut se, false);
    assert_eq!(&ce.plain[..], b"answer");
}

#[test]
fn untrusted_certificate_fails_on_both_ends_with_no_data() {
    let pki = pki();
    let other = self::pki(); // a CA that did not issue the server's cert
    let mut c = client_for(&other.ca, "localhost", &[]);
    let mut s = server_for(&pki, &[]);
    let (mut ce, mut se) = (End::default(), End::default());
    s.write(b"must not leak").unwrap();
    pump(&mut c, &mut ce, &mut s, &mut se, false);
    assert!(
        matches!(
            ce.error,
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ),
        "{:?}",
        ce.error
    );
    assert!(
        matches!(
            se.error,
            Some(rustls::Error::AlertReceived(AlertDescription::UnknownCA))
        ),
        "{:?}",
        se.error
    );
    assert!(ce.plain.is_empty() && se.plain.is_empty());
    assert_eq!((ce.completed, se.completed), (0, 0));
    assert!(c.write(b"x").is_err(), "writes fail after a fatal error");
}

#[test]
fn wrong_host_name_fails_with_not_valid_for_name() {
    let pki = pki();
    let mut c = client_for(&pki.ca, "example.org", &[]);
    let mut s = server_for(&pki, &[]);
    let (mut ce, mut se) = (End::default(), End::default());
    pump(&mut c, &mut ce, &mut s, &mut se, false);
    assert!(
        matches!(
            ce.error,
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{:?}",
        ce.error
    );
    assert!(se.error.is_some());
    assert_eq!(ce.completed, 0);
}

#[test]
fn garbage_instead_of_a_client_hello_is_an_error_with_an_alert() {
    let pki = pki();
    let mut s = server_for(&pki, &[]);
    let mut plain = BytesMut::new();
    let r = s.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut plain);
    assert!(r.error.is_some(), "{r:?}");
    assert!(plain.is_empty() && !r.handshake_completed);
    // The fatal alert is ready for the peer.
    assert!(s.take_output().is_some());
}

#[test]
fn plaintext_before_a_bad_record_is_still_returned() {
    let pki = pki();
    let mut c = client_for(&pki.ca, "localhost", &[]);
    let mut s = server_for(&pki, &[]);
    let (mut ce, mut se) = (End::default(), End::default());
    pump(&mut c, &mut ce, &mut s, &mut se, false);
    c.write(b"good").unwrap();
    let mut bytes = c.take_output().unwrap();
    // An application-data record whose contents do not decrypt.
    bytes.extend_from_slice(b"\x17\x03\x03\x00\x20");
    bytes.extend_from_slice(&[0xAB; 32]);
    let mut plain = BytesMut::new();
    let r = s.receive(&bytes, &mut plain);
    assert_eq!(&plain[..], b"good");
    assert!(
        matches!(r.error, Some(rustls::Error::DecryptError)),
        "{:?}",
        r.error
    );
}
