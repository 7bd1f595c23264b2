//! Helpers shared by the request/reply tests (`rpc.rs`, `rpc_service.rs`).

// Each test file uses its own subset.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use protoloop::proto::adder::{AddReply, AddRequest};
use protoloop::rpc::{RpcClient, Service};
use protoloop::{EventLoop, Handle, Server, ServerOptions, SettableFuture};

pub type AdderClient = RpcClient<AddRequest, AddReply>;

/// Run a test body on a fresh loop, failing (not hanging) after 20 s.
pub fn run<F, Fut>(body: F)
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let fut = body(h.clone());
    lp.run_until_complete(async move {
        h.timeout(Duration::from_secs(20), fut)
            .await
            .expect("test timed out");
    })
    .unwrap();
}

/// Wait until `cond` holds (bounded: 10 s).
pub async fn until(h: &Handle, mut cond: impl FnMut() -> bool) {
    for _ in 0..5000 {
        if cond() {
            return;
        }
        h.sleep(Duration::from_millis(2)).await;
    }
    panic!("condition never became true");
}

pub fn add(a: i32, b: i32) -> AddRequest {
    AddRequest { a, b }
}

pub fn adder() -> Service<AddRequest, AddReply> {
    Service::new(|r: AddRequest| AddReply {
        sum: i64::from(r.a) + i64::from(r.b),
    })
}

pub fn serve<P: protoloop::Protocol>(h: &Handle, factory: impl Fn() -> P + 'static) -> Server {
    h.create_server(factory, "127.0.0.1:0", ServerOptions::default())
        .unwrap()
}

pub fn addr(s: &Server) -> std::net::SocketAddr {
    s.local_addrs()[0]
}

/// Futures the test resolves by hand, one per request, indexed by `a`.
#[derive(Clone, Default)]
pub struct Gates(pub Rc<RefCell<Vec<SettableFuture<()>>>>);

impl Gates {
    pub fn new(h: &Handle, n: usize) -> Gates {
        Gates(Rc::new(RefCell::new(
            (0..n).map(|_| h.create_future()).collect(),
        )))
    }
    pub fn wait(&self, i: usize) -> SettableFuture<()> {
        self.0.borrow()[i].clone()
    }
    pub fn open(&self, i: usize) {
        let _ = self.0.borrow()[i].set_result(());
    }
}

/// An adder whose reply to request `a` waits for gate `a`; counts the
/// requests it has seen and the most it had waiting at once.
#[derive(Clone)]
pub struct GatedAdder {
    pub gates: Gates,
    pub seen: Rc<Cell<usize>>,
    pub waiting: Rc<Cell<usize>>,
    pub most_waiting: Rc<Cell<usize>>,
}

impl GatedAdder {
    pub fn new(h: &Handle, n: usize) -> GatedAdder {
        GatedAdder {
            gates: Gates::new(h, n),
            seen: Rc::default(),
            waiting: Rc::default(),
            most_waiting: Rc::default(),
        }
    }

    pub fn service(&self) -> Service<AddRequest, AddReply> {
        let me = self.clone();
        Service::new_async(move |r: AddRequest| {
            let me = me.clone();
            async move {
                me.seen.set(me.seen.get() + 1);
                me.waiting.set(me.waiting.get() + 1);
                me.most_waiting
                    .set(me.most_waiting.get().max(me.waiting.get()));
                let _ = me.gates.wait(r.a as usize).await;
                me.waiting.set(me.waiting.get() - 1);
                AddReply {
                    sum: i64::from(r.a) + i64::from(r.b),
                }
            }
        })
    }
}
