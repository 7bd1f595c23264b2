//! TCP helpers shared by the loopback suites: servers whose protocols
//! are recorded, connecting with a recording protocol, and writing with
//! flow control honoured.

use std::cell::RefCell;
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;

use protoloop::{ConnectOptions, Handle, Server, ServerOptions, Transport};

use super::{Echo, Ev, Probe, Rec, Rng, is_paused, socket_pair, turns, wait_until};

/// An echo server on 127.0.0.1 and its address.
pub fn echo_server(h: &Handle) -> (Server, SocketAddr) {
    let s = h
        .create_server(Echo::default, "127.0.0.1:0", ServerOptions::default())
        .unwrap();
    let a = s.local_addrs()[0];
    (s, a)
}

/// A server whose protocols are [`Rec`]s built by `make`; their probes
/// are collected in accept order.
pub fn rec_server(
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

/// Wait until the first connection a [`rec_server`] accepted is lost
/// (`what` names the wait in the timeout message); its probe.
pub async fn first_lost(h: &Handle, what: &str, probes: &Rc<RefCell<Vec<Probe>>>) -> Probe {
    wait_until(h, what, || {
        probes.borrow().first().is_some_and(|p| p.is_lost())
    })
    .await;
    probes.borrow()[0].clone()
}

/// Connect with a recording protocol.
pub async fn connect(
    h: &Handle,
    addr: impl Into<protoloop::Address>,
    rec: Rec,
) -> (Transport, Probe) {
    let probe = rec.probe();
    let (t, _) = h
        .create_connection(move || rec, addr, ConnectOptions::default())
        .await
        .unwrap();
    (t, probe)
}

/// Write `data` in random-sized chunks, waiting while writing is paused.
pub async fn write_with_flow_control(h: &Handle, t: &Transport, p: &Probe, data: &[u8], seed: u64) {
    let mut rng = Rng::new(seed);
    let mut off = 0;
    while off < data.len() {
        let n = rng.range(1, 64 * 1024).min(data.len() - off);
        t.write(&data[off..off + n]).unwrap();
        off += n;
        if is_paused(p) {
            wait_until(h, "resume_writing", || !is_paused(p)).await;
        } else if rng.range(0, 3) == 0 {
            turns(1).await;
        }
    }
}

/// Put `rec` on one end of a fresh loopback connection; the other end is
/// a blocking std socket the test drives by hand.
pub fn adopt(h: &Handle, rec: Rec) -> (Probe, TcpStream) {
    let (ours, peer) = socket_pair();
    let probe = rec.probe();
    h.connect_accepted_socket(rec, ours).unwrap();
    (probe, peer)
}

/// The log as short names, for comparing call sequences.
pub fn kinds(p: &Probe) -> Vec<String> {
    p.log
        .borrow()
        .iter()
        .map(|e| match e {
            Ev::Made => "made".to_string(),
            Ev::Data(_) => "data".to_string(),
            Ev::Eof => "eof".to_string(),
            Ev::Lost(r) => format!("lost:{r:?}"),
            Ev::PauseWriting(_) => "pause".to_string(),
            Ev::ResumeWriting(_) => "resume".to_string(),
            Ev::Drain => "drain".to_string(),
            Ev::Mark(m) => format!("mark:{m}"),
        })
        .collect()
}
