//! The client side of request/reply: the same `GetBalance` load as
//! `rpc_load.rs`, made through protoloop's `RpcClient` or through tokio
//! `Framed` + prost, to measure what each costs the *client* (the thread's
//! own CPU time per request) against one fixed server, the raw mio one.
//!
//! Both keep `depth` requests in flight per connection. The `RpcClient`
//! version runs `depth` tasks per connection, each awaiting `call` in a
//! loop, as an application would; the tokio version feeds requests into
//! the `Framed` sink and flushes once per batch of replies.
//!
//! Each runs on the calling thread, in phases: `run(dur)` drives its loop
//! for `dur` while the spawned tasks keep their state between phases.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use protoloop::proto::bank::{GetBalance, Response};

use crate::load::Phase;
use crate::rpc_load::CUSTOMER;

/// What the tasks record; `t0` is the start of the current phase.
struct Stats {
    t0: Instant,
    phase: Phase,
    error: Option<String>,
}

type SharedStats = Rc<RefCell<Stats>>;

impl Stats {
    fn new() -> SharedStats {
        Rc::new(RefCell::new(Stats {
            t0: Instant::now(),
            phase: Phase::default(),
            error: None,
        }))
    }

    fn done(&mut self, started: Instant, r: Result<Response, String>) {
        match r {
            Ok(r) if r.customer_id == CUSTOMER && r.balance == 100.0 => {
                self.phase.requests += 1;
                if started >= self.t0 {
                    let ns = started.elapsed().as_nanos();
                    self.phase
                        .latencies_ns
                        .push(ns.min(u32::MAX as u128) as u32);
                }
            }
            Ok(r) => self.error = Some(format!("wrong reply {r:?}")),
            Err(e) => self.error = Some(e),
        }
    }

    /// Start a phase; returns the last one's figures.
    fn take(stats: &SharedStats) -> io::Result<Phase> {
        let mut s = stats.borrow_mut();
        if let Some(e) = s.error.take() {
            return Err(io::Error::other(e));
        }
        let mut p = std::mem::take(&mut s.phase);
        p.elapsed = s.t0.elapsed();
        p.latencies_ns.sort_unstable();
        s.t0 = Instant::now();
        Ok(p)
    }
}

fn request() -> GetBalance {
    GetBalance {
        customer_id: CUSTOMER.into(),
    }
}

/// `RpcClient` connections on a protoloop loop.
pub struct ProtoloopClients {
    lp: protoloop::EventLoop,
    stats: SharedStats,
}

impl ProtoloopClients {
    pub fn connect(addr: SocketAddr, conns: usize, depth: usize) -> io::Result<Self> {
        use protoloop::rpc::{RpcClient, RpcOptions};

        let lp = protoloop::EventLoop::new()?;
        let h = lp.handle();
        let stats = Stats::new();
        let clients = lp
            .run_until_complete(async move {
                let mut v = Vec::new();
                for _ in 0..conns {
                    let opts = RpcOptions::<GetBalance, Response>::new();
                    v.push(RpcClient::connect(&h, addr, opts).await?);
                }
                Ok::<_, protoloop::rpc::RpcError>(v)
            })
            .map_err(io::Error::other)?
            .map_err(io::Error::other)?;
        let h = lp.handle();
        for client in clients {
            for _ in 0..depth {
                let (client, stats) = (client.clone(), stats.clone());
                h.spawn(async move {
                    loop {
                        let started = Instant::now();
                        let r = client.call(request()).await.map_err(|e| e.to_string());
                        let failed = r.is_err();
                        stats.borrow_mut().done(started, r);
                        if failed {
                            return;
                        }
                    }
                });
            }
        }
        Ok(ProtoloopClients { lp, stats })
    }

    pub fn run(&mut self, dur: Duration) -> io::Result<Phase> {
        Stats::take(&self.stats)?;
        let h = self.lp.handle();
        self.lp
            .run_until_complete(async move { h.sleep(dur).await })
            .map_err(io::Error::other)?;
        Stats::take(&self.stats)
    }
}

/// tokio `Framed` + prost connections on a `current_thread` runtime.
pub struct TokioClients {
    rt: tokio::runtime::Runtime,
    local: tokio::task::LocalSet,
    stats: SharedStats,
}

impl TokioClients {
    pub fn connect(addr: SocketAddr, conns: usize, depth: usize) -> io::Result<Self> {
        use futures_util::{FutureExt, SinkExt, StreamExt};
        use prost::Message;
        use tokio_util::codec::Framed;

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let local = tokio::task::LocalSet::new();
        let stats = Stats::new();
        // Each request is built and encoded when it is sent, as the
        // `RpcClient` version does (and as the tokio server encodes each
        // reply): reusing one encoded frame would skip prost's work.
        let frame = || -> bytes::Bytes { request().encode_to_vec().into() };
        for _ in 0..conns {
            let sock = local.block_on(&rt, tokio::net::TcpStream::connect(addr))?;
            sock.set_nodelay(true)?;
            let stats = stats.clone();
            local.spawn_local(async move {
                let mut framed = Framed::new(sock, crate::rpc_servers::tokio_codec());
                let mut sent = VecDeque::with_capacity(depth);
                let fail = |e: String| stats.borrow_mut().error = Some(e);
                for _ in 0..depth {
                    sent.push_back(Instant::now());
                    if let Err(e) = framed.feed(frame()).await {
                        return fail(e.to_string());
                    }
                }
                if let Err(e) = SinkExt::<bytes::Bytes>::flush(&mut framed).await {
                    return fail(e.to_string());
                }
                loop {
                    let mut got = match framed.next().await {
                        Some(r) => Some(r),
                        None => return fail("the server closed a connection".into()),
                    };
                    // Answer every reply already here, then flush once.
                    while let Some(r) = got {
                        let reply = match r {
                            Ok(f) => Response::decode(f).map_err(|e| e.to_string()),
                            Err(e) => Err(e.to_string()),
                        };
                        let Some(started) = sent.pop_front() else {
                            return fail("a reply nobody asked for".into());
                        };
                        let failed = reply.is_err();
                        stats.borrow_mut().done(started, reply);
                        if failed {
                            return;
                        }
                        sent.push_back(Instant::now());
                        if let Err(e) = framed.feed(frame()).await {
                            return fail(e.to_string());
                        }
                        got = framed.next().now_or_never().flatten();
                    }
                    if let Err(e) = SinkExt::<bytes::Bytes>::flush(&mut framed).await {
                        return fail(e.to_string());
                    }
                }
            });
        }
        Ok(TokioClients { rt, local, stats })
    }

    pub fn run(&mut self, dur: Duration) -> io::Result<Phase> {
        Stats::take(&self.stats)?;
        // Made inside the runtime: `sleep` needs its timer.
        self.local
            .block_on(&self.rt, async move { tokio::time::sleep(dur).await });
        Stats::take(&self.stats)
    }
}

/// CPU time of the calling thread, microseconds (user, system).
pub fn thread_cpu() -> crate::proc::Cpu {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is valid for writes of a `rusage`, which getrusage fills.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr());
        ru.assume_init()
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    crate::proc::Cpu {
        user_us: us(ru.ru_utime),
        sys_us: us(ru.ru_stime),
    }
}
