#![allow(unused_imports, dead_code)]
//! TCP over loopback: bulk data, half-close, abort, connect errors and
//! options, close semantics, the server's lifecycle (shutdown, close and
//! abort of clients, start_serving, counts, wait_closed), adopting a
//! socket, switching protocols, buffered reads, writelines, counters
//! and IPv6.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{
    EXPECTED, Echo, Ev, Probe, Rec, Rng, capture_exceptions, quiet_expected_panics, read_to_eof,
    run, turns, wait_until,
};
use protoloop::{
    Buffered, BufferedProtocol, CloseReason, ConnectOptions, Error, EventLoop, ExceptionKind,
    Handle, Protocol, Server, ServerOptions, TimeoutKind, Transport,
};

const LIMIT: Duration = Duration::from_secs(60);

fn echo_server(h: &Handle) -> (Server, SocketAddr) {
    let s = h
        .create_server(Echo::default, "127.0.0.1:0", ServerOptions::default())
        .unwrap();
    let a = s.local_addrs()[0];
    (s, a)
}

/// A server whose protocols are [`Rec`]s built by `make`; their probes
/// are collected in accept order.
fn rec_server(
    h: &Handle,
    make: impl Fn() -> Rec + 'static,
    opts: ServerOptions,
) -> (Server, SocketAddr, Rc<RefCell<Vec<Probe>>>) {
    let probes: Rc<RefCell<Vec<Probe>>> = Rc::default();
    let p = probes.clone();
    let s = h
        .create_server(
            move || {
                let r = make();
                p.borrow_mut().push(r.probe());
                r
            },
            "127.0.0.1:0",
            opts,
        )
        .unwrap();
    let a = s.local_addrs()[0];
    (s, a, probes)
}

async fn connect(h: &Handle, addr: impl Into<protoloop::Address>, rec: Rec) -> (Transport, Probe) {
    let probe = rec.probe();
    let (t, _) = h
        .create_connection(move || rec, addr, ConnectOptions::default())
        .await
        .unwrap();
    (t, probe)
}

/// Write `data` in random-sized chunks, waiting while writing is paused.
async fn write_with_flow_control(h: &Handle, t: &Transport, p: &Probe, data: &[u8], seed: u64) {
    let mut rng = Rng::new(seed);
    let mut off = 0;
    while off < data.len() {
        let n = rng.range(1, 64 * 1024).min(data.len() - off);
        t.write(&data[off..off + n]).unwrap();
        off += n;
        if common::is_paused(p) {
            wait_until(h, "resume_writing", || !common::is_paused(p)).await;
        } else if rng.range(0, 3) == 0 {
            turns(1).await;
        }
    }
}

#[test]
fn writelines_sends_every_chunk_in_order() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(&h, || Rec::new().0, ServerOptions::default());
    let mut rng = Rng::new(77);
    // More chunks than one writev takes, some empty, some large.
    let chunks: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            let n = match i % 10 {
                0 => 0,
                1 => rng.range(100_000, 300_000),
                _ => rng.range(1, 2000),
            };
            rng.bytes(n)
        })
        .collect();
    let want: Vec<u8> = chunks.concat();
    let h2 = h.clone();
    let w = want.clone();
    let got = run(&lp, LIMIT, async move {
        let (t, p) = connect(&h2, addr, Rec::new().0).await;
        let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        t.writelines(&refs[..150]).unwrap();
        t.writelines(&[]).unwrap();
        t.writelines(&refs[150..]).unwrap();
        t.close();
        wait_until(&h2, "server got all", || {
            sprobes.borrow().first().is_some_and(|s| s.is_lost())
        })
        .await;
        assert_eq!(t.stats().bytes_sent, w.len() as u64);
        wait_until(&h2, "client lost", || p.is_lost()).await;
        let s = sprobes.borrow()[0].clone();
        s
    });
    assert_eq!(got.data_len(), want.len());
    assert!(*got.data.borrow() == want);
}

#[test]
fn big_writes_are_flushed_with_no_other_traffic() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_server, addr, sprobes) = rec_server(&h, || Rec::new().0, ServerOptions::default());
    let data = Rc::new(Rng::new(8).bytes(8 << 20));
    let d = data.clone();
    let h2 = h.clone();
    run(&lp, LIMIT, async move {
        let (t, _p) = connect(&h2, addr, Rec::new().0).await;
        wait_until(&h2, "accepted", || sprobes.borrow().len() == 1).await;
        // Nothing else happens on this connection: only writable edges
        // can move the rest of the buffer.
        t.write(&d[..3 << 20]).unwrap();
        t.writelines(&[&d[3 << 20..5 << 20], &d[5 << 20..]])
            .unwrap();
        let s = sprobes.borrow()[0].clone();
        wait_until(&h2, "all bytes at the server", || s.data_len() == d.len()).await;
        assert!(*s.data.borrow() == *d);
        assert_eq!(t.get_write_buffer_size(), 0);
        t.close();
    });
}
