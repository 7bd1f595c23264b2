//! The sans-IO TLS session: ciphertext and plaintext in, plaintext,
//! ciphertext and events out, with no socket, timer or callback in sight.
//!
//! [`Session`] wraps a `rustls::Connection` and is driven with
//! `read_tls` / `process_new_packets` / `reader()` / `writer()` /
//! `write_tls` against byte buffers. The layer in `layer.rs` feeds it what
//! the stream transport read and writes what it produces; the tests at
//! the bottom pump bytes between two sessions in memory.
//!
//! # What it promises
//!
//! - Plaintext written before the handshake completed is held here (not
//!   in rustls, which would send it as TLS 1.3 0.5-RTT data before the
//!   client is authenticated) and handed to rustls, in order, once it
//!   completes.
//! - Plaintext decrypted before a fatal error or a `close_notify` is
//!   returned before the error or the close is reported.
//! - rustls's own buffers never fill: its buffer limit is off, and every
//!   `receive` drains the plaintext and every caller drains the ciphertext
//!   with [`Session::write_output`] (or [`Session::take_output`]) right
//!   after feeding or writing.

use std::io::{self, BufRead, Write};

use bytes::BytesMut;
use rustls::pki_types::CertificateDer;

use super::{TlsInfo, TlsSide};

/// What one [`Session::receive`] call brought.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// The handshake completed during this call.
    pub(crate) handshake_completed: bool,
    /// The peer's `close_notify` arrived during this call (after any
    /// plaintext it appended).
    pub(crate) peer_closed: bool,
    /// A fatal TLS error; the alert for the peer is waiting in
    /// [`Session::take_output`].
    pub(crate) error: Option<rustls::Error>,
}

/// One TLS connection's state, fed bytes by its owner.
pub(crate) struct Session {
    conn: rustls::Connection,
    /// Plaintext written while handshaking (see the module docs).
    early: BytesMut,
    handshake_done: bool,
    peer_closed: bool,
    /// The caller was told about `peer_closed` (it is told once).
    close_reported: bool,
    error: Option<rustls::Error>,
}

impl Session {
    /// A client or server session for `side`.
    pub(crate) fn new(side: &TlsSide) -> Result<Session, rustls::Error> {
        let mut conn = match side {
            TlsSide::Client(c) => rustls::Connection::Client(rustls::ClientConnection::new(
                c.config.clone(),
                c.server_name.clone(),
            )?),
            TlsSide::Server(s) => {
                rustls::Connection::Server(rustls::ServerConnection::new(s.config.clone())?)
            }
        };
        // The transport below keeps the ciphertext backlog and does the
        // flow control; rustls must accept every write whole.
        conn.set_buffer_limit(None);
        Ok(Session {
            conn,
            early: BytesMut::new(),
            handshake_done: false,
            peer_closed: false,
            close_reported: false,
            error: None,
        })
    }

    #[cfg(test)]
    pub(crate) fn is_handshaking(&self) -> bool {
        !self.handshake_done
    }

    /// Plaintext waiting for the handshake to complete.
    pub(crate) fn queued_len(&self) -> usize {
        self.early.len()
    }

    /// Feed ciphertext from the peer; decrypted plaintext is appended to
    /// `plain`. Bytes after a `close_notify` or a fatal error are ignored.
    pub(crate) fn receive(&mut self, mut data: &[u8], plain: &mut BytesMut) -> Received {
        let mut out = Received::default();
        while !data.is_empty() && self.error.is_none() && !self.peer_closed {
            match self.conn.read_tls(&mut data) {
                Ok(0) => break, // close_notify already processed
                Ok(_) => {}
                Err(e) => {
                    // Only rustls's back-pressure errors come here, and they
                    // cannot happen since everything is drained below; treat
                    // one as fatal rather than spin.
                    let err = rustls::Error::General(format!("TLS input refused: {e}"));
                    self.error = Some(err.clone());
                    out.error = Some(err);
                    break;
                }
            }
            let res = self.conn.process_new_packets();
            self.drain_plaintext(plain);
            if let Err(e) = res {
                self.error = Some(e.clone());
                out.error = Some(e);
                break;
            }
            if !self.handshake_done && !self.conn.is_handshaking() {
                self.handshake_done = true;
                out.handshake_completed = true;
                self.release_early();
            }
        }
        if self.peer_closed && !self.close_reported {
            self.close_reported = true;
            out.peer_closed = true;
        }
        out
    }

    fn drain_plaintext(&mut self, plain: &mut BytesMut) {
        let mut reader = self.conn.reader();
        loop {
            let n = match reader.fill_buf() {
                Ok([]) => {
                    // Ok(empty) from a Reader means a clean close_notify.
                    self.peer_closed = true;
                    break;
                }
                Ok(chunk) => {
                    plain.extend_from_slice(chunk);
                    chunk.len()
                }
                // WouldBlock: nothing more for now. UnexpectedEof cannot
                // happen: TCP EOF is never fed to rustls.
                Err(_) => break,
            };
            reader.consume(n);
        }
    }

    /// Hand the plaintext written during the handshake to rustls.
    fn release_early(&mut self) {
        if !self.early.is_empty() {
            let early = self.early.split();
            // With no buffer limit rustls takes all of it; an error here
            // can only be the connection's fatal error, reported by
            // `receive` already.
            let _ = self.conn.writer().write_all(&early);
        }
    }

    /// Queue plaintext for the peer: encrypted now, or held until the
    /// handshake completes. Fails once a fatal error happened or after
    /// [`close_notify`](Self::close_notify).
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(), rustls::Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if !self.handshake_done {
            self.early.extend_from_slice(data);
            return Ok(());
        }
        self.conn
            .writer()
            .write_all(data)
            .map_err(|e| rustls::Error::General(format!("TLS write refused: {e}")))
    }

    /// Queue a `close_notify` alert (once; nothing after a fatal alert).
    /// Plaintext still held for the handshake is not sent: the layer only
    /// closes mid-handshake when none is held.
    pub(crate) fn close_notify(&mut self) {
        self.conn.send_close_notify();
    }

    /// Write the ciphertext waiting for the peer straight into `to`
    /// (rustls hands its queued records over with one `write_vectored`).
    /// `false` if `to` refused some; the rest is still queued.
    pub(crate) fn write_output(&mut self, to: &mut dyn io::Write) -> bool {
        while self.conn.wants_write() {
            match self.conn.write_tls(to) {
                Ok(n) if n > 0 => {}
                _ => return false,
            }
        }
        true
    }

    /// Ciphertext waiting to go to the peer, if any.
    pub(crate) fn take_output(&mut self) -> Option<Vec<u8>> {
        if !self.conn.wants_write() {
            return None;
        }
        let mut out = Vec::new();
        while self.conn.wants_write() {
            // Writing into a Vec cannot fail.
            if self.conn.write_tls(&mut out).is_err() {
                break;
            }
        }
        Some(out)
    }

    /// What was negotiated; meaningful once the handshake completed.
    /// This is the server end.
    pub(crate) fn is_server(&self) -> bool {
        matches!(self.conn, rustls::Connection::Server(_))
    }

    pub(crate) fn info(&self) -> TlsInfo {
        let peer_certificates: Vec<CertificateDer<'static>> = self
            .conn
            .peer_certificates()
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let server_name = match &self.conn {
            rustls::Connection::Server(s) => s.server_name().map(str::to_owned),
            rustls::Connection::Client(_) => None,
        };
        TlsInfo {
            protocol_version: self
                .conn
                .protocol_version()
                .unwrap_or(rustls::ProtocolVersion::Unknown(0)),
            cipher_suite: self
                .conn
                .negotiated_cipher_suite()
                .map(|s| s.suite())
                .unwrap_or(rustls::CipherSuite::Unknown(0)),
            alpn_protocol: self.conn.alpn_protocol().map(<[u8]>::to_vec),
            peer_certificates,
            server_name,
            is_server: matches!(self.conn, rustls::Connection::Server(_)),
        }
    }
}
