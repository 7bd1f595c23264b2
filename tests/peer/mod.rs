//! Helpers shared by the integration tests: a recording protocol with
//! hooks, payloads, and a bounded wait.

#![allow(dead_code)] // each test crate uses a different subset

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use protoloop::{CloseReason, EventLoop, Protocol, Transport};

type Hook = Box<dyn FnMut(&Transport)>;
type DataHook = Box<dyn FnMut(&Transport, &[u8])>;

/// A protocol that records everything and runs optional hooks.
#[derive(Default)]
pub struct Peer {
    pub t: Option<Transport>,
    pub got: Vec<u8>,
    pub sizes: Vec<usize>,
    pub eofs: usize,
    pub keep_open: bool,
    pub reason: Option<CloseReason>,
    pub pauses: usize,
    pub resumes: usize,
    pub on_made: Option<Hook>,
    pub on_data: Option<DataHook>,
    pub on_eof: Option<Hook>,
    pub on_resume: Option<Hook>,
    pub on_lost: Option<Box<dyn FnMut()>>,
    /// Shared log of callback names, to check order across both ends.
    pub log: Option<Rc<RefCell<Vec<String>>>>,
    pub name: &'static str,
}

impl Peer {
    pub fn new() -> Peer {
        Peer::default()
    }

    pub fn on_made(mut self, f: impl FnMut(&Transport) + 'static) -> Self {
        self.on_made = Some(Box::new(f));
        self
    }

    pub fn on_data(mut self, f: impl FnMut(&Transport, &[u8]) + 'static) -> Self {
        self.on_data = Some(Box::new(f));
        self
    }

    pub fn on_eof(mut self, f: impl FnMut(&Transport) + 'static) -> Self {
        self.on_eof = Some(Box::new(f));
        self
    }

    pub fn on_lost(mut self, f: impl FnMut() + 'static) -> Self {
        self.on_lost = Some(Box::new(f));
        self
    }

    pub fn on_resume(mut self, f: impl FnMut(&Transport) + 'static) -> Self {
        self.on_resume = Some(Box::new(f));
        self
    }

    pub fn logged(mut self, name: &'static str, log: &Rc<RefCell<Vec<String>>>) -> Self {
        self.name = name;
        self.log = Some(log.clone());
        self
    }

    pub fn keep_open(mut self) -> Self {
        self.keep_open = true;
        self
    }

    fn note(&self, what: &str) {
        if let Some(l) = &self.log {
            l.borrow_mut().push(format!("{}:{what}", self.name));
        }
    }
}

impl Protocol for Peer {
    fn connection_made(&mut self, t: Transport) {
        self.note("made");
        self.t = Some(t.clone());
        if let Some(f) = &mut self.on_made {
            f(&t);
        }
    }
    fn data_received(&mut self, data: &[u8]) {
        self.note("data");
        self.got.extend_from_slice(data);
        self.sizes.push(data.len());
        if let Some(f) = &mut self.on_data {
            let t = self.t.clone().unwrap();
            f(&t, data);
        }
    }
    fn eof_received(&mut self) -> bool {
        self.note("eof");
        self.eofs += 1;
        if let Some(f) = &mut self.on_eof {
            let t = self.t.clone().unwrap();
            f(&t);
        }
        self.keep_open
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.note("lost");
        self.reason = Some(reason);
        self.t = None;
        if let Some(f) = &mut self.on_lost {
            f();
        }
    }
    fn pause_writing(&mut self) {
        self.note("pause");
        self.pauses += 1;
    }
    fn resume_writing(&mut self) {
        self.note("resume");
        self.resumes += 1;
        if let Some(f) = &mut self.on_resume {
            let t = self.t.clone().unwrap();
            f(&t);
        }
    }
}

/// A deterministic payload of `n` bytes.
pub fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

pub fn is_peer_reset(r: &Option<CloseReason>) -> bool {
    matches!(r, Some(CloseReason::PeerReset(_)))
}

/// Run `lp` until `cond` holds; fail the test after 20 s of real time.
#[track_caller]
pub fn wait(lp: &EventLoop, what: &str, cond: impl FnMut() -> bool) {
    if lp.run_until(Duration::from_secs(20), cond).is_err() {
        panic!("timed out waiting for {what}");
    }
}
