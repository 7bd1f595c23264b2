//! The protobuf request/reply servers (`--serve KIND --app rpc`): the ATM
//! demo's bank link, `GetBalance` in, `Response` out, each a protobuf
//! message behind a 2-byte big-endian length. Replies go out in request
//! order, so pipelined clients match them first in, first out.
//!
//! - protoloop: the `rpc::Service` helper with a plain handler;
//! - tokio: `current_thread`, tokio-util `Framed` with a 2-byte
//!   `LengthDelimitedCodec`, prost; replies are fed and flushed once per
//!   batch of requests that arrived together (`send` per reply would make
//!   a write per reply at pipeline depth 32);
//! - raw mio: frames parsed straight out of the shared read buffer, the
//!   replies to one read written with one `write`.

use std::net::SocketAddr;

use protoloop::proto::bank::{GetBalance, Response};

use crate::servers::{announce, tokio_accept_loop, tokio_current_thread};

/// The bank's whole business logic.
fn answer(q: GetBalance) -> Response {
    Response {
        customer_id: q.customer_id,
        balance: 100.0,
    }
}

pub fn serve(kind: &str, addr: SocketAddr) -> Result<(), String> {
    match kind {
        "protoloop" => protoloop_rpc(addr),
        "tokio" => tokio_rpc(addr),
        "mio" => mio_rpc::run(addr),
        other => Err(format!(
            "no rpc server {other:?}: expected protoloop, tokio or mio"
        )),
    }
}

fn protoloop_rpc(addr: SocketAddr) -> Result<(), String> {
    use protoloop::rpc::Service;
    use protoloop::{EventLoop, ServerOptions};

    let lp = EventLoop::new().map_err(|e| format!("creating the loop: {e}"))?;
    let bank = Service::new(answer);
    let server = lp
        .handle()
        .create_server(move || bank.protocol(), addr, ServerOptions::default())
        .map_err(|e| e.to_string())?;
    announce(server.local_addrs()[0]);
    lp.run_forever().map_err(|e| e.to_string())
}

/// The demo's framing as tokio-util spells it.
pub fn tokio_codec() -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .length_field_length(2)
        .new_codec()
}

fn tokio_rpc(addr: SocketAddr) -> Result<(), String> {
    use futures_util::{FutureExt, SinkExt, StreamExt};
    use prost::Message;
    use tokio_util::codec::Framed;

    tokio_current_thread(tokio_accept_loop(addr, "tokio rpc server", |sock| {
        tokio::spawn(async move {
            let mut framed = Framed::new(sock, tokio_codec());
            let reply = |frame: bytes::BytesMut| -> Option<bytes::Bytes> {
                let q = GetBalance::decode(frame).ok()?;
                Some(answer(q).encode_to_vec().into())
            };
            while let Some(Ok(frame)) = framed.next().await {
                let Some(r) = reply(frame) else { return };
                if framed.feed(r).await.is_err() {
                    return;
                }
                // Answer what else already arrived before flushing.
                while let Some(Some(Ok(frame))) = framed.next().now_or_never() {
                    let Some(r) = reply(frame) else { return };
                    if framed.feed(r).await.is_err() {
                        return;
                    }
                }
                if SinkExt::<bytes::Bytes>::flush(&mut framed).await.is_err() {
                    return;
                }
            }
        });
    }))
}

mod mio_rpc {
    use std::io::{self, Read, Write};
    use std::net::SocketAddr;

    use mio::net::TcpStream;
    use mio::{Events, Interest, Token};
    use prost::Message;
    use slab::Slab;

    use super::{GetBalance, answer};
    use crate::load::AlignedBuf;

    const LISTENER: Token = Token(usize::MAX - 1);

    #[derive(Default)]
    struct Conn {
        /// A partial frame left over from the last read.
        partial: Vec<u8>,
        /// Replies the socket did not take yet; reading stops meanwhile.
        pending: Vec<u8>,
    }

    pub fn run(addr: SocketAddr) -> Result<(), String> {
        let (mut poll, listener) = crate::servers::mio_listen(addr, LISTENER)?;
        let mut conns: Slab<(TcpStream, Conn)> = Slab::new();
        let mut events = Events::with_capacity(1024);
        let mut buf = AlignedBuf::new(256 * 1024);
        let mut out = Vec::with_capacity(64 * 1024);
        loop {
            crate::servers::mio_wait(&mut poll, &mut events)?;
            for ev in events.iter() {
                if ev.token() == LISTENER {
                    loop {
                        match listener.accept() {
                            Ok((mut sock, _)) => {
                                let _ = sock.set_nodelay(true);
                                let entry = conns.vacant_entry();
                                let token = Token(entry.key());
                                let interest = Interest::READABLE | Interest::WRITABLE;
                                if poll.registry().register(&mut sock, token, interest).is_ok() {
                                    entry.insert((sock, Conn::default()));
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(_) => break,
                        }
                    }
                    continue;
                }
                let key = ev.token().0;
                let Some((sock, conn)) = conns.get_mut(key) else {
                    continue;
                };
                let trust_short_read = !(ev.is_read_closed() || ev.is_error());
                if !serve_conn(sock, conn, &mut buf, &mut out, trust_short_read) {
                    let (mut s, _) = conns.remove(key);
                    let _ = poll.registry().deregister(&mut s);
                }
            }
        }
    }

    /// Answer every whole frame in `data`; returns how many bytes it used.
    /// `None` for a frame that is not a `GetBalance`.
    fn answer_frames(data: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        let mut at = 0;
        while data.len() - at >= 2 {
            let len = u16::from_be_bytes([data[at], data[at + 1]]) as usize;
            if data.len() - at - 2 < len {
                break;
            }
            let q = GetBalance::decode(&data[at + 2..at + 2 + len]).ok()?;
            let r = answer(q);
            let n = r.encoded_len();
            out.extend_from_slice(&(n as u16).to_be_bytes());
            r.encode(out).ok()?;
            at += 2 + len;
        }
        Some(at)
    }

    fn serve_conn(
        sock: &mut TcpStream,
        conn: &mut Conn,
        buf: &mut [u8],
        out: &mut Vec<u8>,
        trust_short_read: bool,
    ) -> bool {
        if !conn.pending.is_empty() {
            match write_some(sock, &conn.pending) {
                Ok(n) => drop(conn.pending.drain(..n)),
                Err(_) => return false,
            }
            if !conn.pending.is_empty() {
                return true;
            }
        }
        loop {
            let n = match sock.read(buf) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            };
            out.clear();
            if conn.partial.is_empty() {
                let Some(used) = answer_frames(&buf[..n], out) else {
                    return false;
                };
                conn.partial.extend_from_slice(&buf[used..n]);
            } else {
                conn.partial.extend_from_slice(&buf[..n]);
                let Some(used) = answer_frames(&conn.partial, out) else {
                    return false;
                };
                conn.partial.drain(..used);
            }
            match write_some(sock, out) {
                Ok(w) if w == out.len() => {}
                Ok(w) => {
                    conn.pending.extend_from_slice(&out[w..]);
                    return true;
                }
                Err(_) => return false,
            }
            if n < buf.len() && trust_short_read {
                return true;
            }
        }
    }

    /// Write until done or `WouldBlock` (see the echo server's).
    fn write_some(sock: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < data.len() {
            match sock.write(&data[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}
