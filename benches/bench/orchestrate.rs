//! The orchestrator: which workloads, how many repetitions, and the run
//! itself. Each (workload, server) cell gets a fresh server process, so
//! peak RSS belongs to that cell alone; repetitions alternate the servers
//! (and rotate their order) so that drift on a shared machine spreads
//! over all of them instead of landing on one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::load::{self, EchoLoad};
use crate::load_more::{self, MoreLoad};
use crate::peers::{self, Peer, Python};
use crate::perf::{self, Perf};
use crate::proc::{self, ServerProc};
use crate::report::{self, Metric, Report, Sample};
use crate::rpc_clients::{self, ProtoloopClients, TokioClients};
use crate::rpc_load::RpcLoad;
pub use crate::workloads::{More, Workload};

#[derive(Debug, Clone)]
pub struct Config {
    pub reps: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub idle_conns: usize,
    pub peers: Vec<Peer>,
    pub workloads: Vec<Workload>,
    pub pin: bool,
    /// `None`: on unless quick.
    pub perf: Option<bool>,
    pub quick: bool,
    pub out: PathBuf,
    /// The TLS servers' certificate and key, made by `run`.
    pub tls: Option<crate::servers_more::TlsFiles>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reps: 3,
            warmup: Duration::from_millis(500),
            measure: Duration::from_secs(3),
            idle_conns: 10_000,
            peers: Peer::ALL.to_vec(),
            workloads: Workload::ALL.to_vec(),
            pin: false,
            perf: None,
            quick: false,
            out: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench")),
            tls: None,
        }
    }
}

impl Config {
    /// Small counts for a smoke run; later flags still override them.
    pub fn quick(&mut self) {
        self.quick = true;
        self.warmup = Duration::from_millis(50);
        self.measure = Duration::from_millis(100);
        self.idle_conns = 1000;
    }
}

/// Idle connections opened before the baseline RSS is read, so one-time
/// allocations (read buffers, first slab pages) are not charged per
/// connection.
const IDLE_WARM: usize = 100;

pub fn run(mut cfg: Config) -> Result<(), String> {
    let started = Instant::now();
    let mut notes = Vec::new();
    let nofile = raise_nofile_limit();
    let need = cfg.idle_conns + IDLE_WARM + 64;
    if cfg.workloads.contains(&Workload::Idle) && (nofile as usize) < need {
        let n = (nofile as usize).saturating_sub(IDLE_WARM + 64);
        notes.push(format!(
            "RLIMIT_NOFILE is {nofile}: idle connections cut from {} to {n}",
            cfg.idle_conns
        ));
        cfg.idle_conns = n;
    }

    let tls_wanted = cfg
        .workloads
        .iter()
        .any(|w| matches!(w, Workload::More { kind, .. } if kind.app() == "tls"));
    if tls_wanted {
        let dir = std::env::temp_dir().join(format!("protoloop-bench-tls-{}", std::process::id()));
        cfg.tls = Some(crate::servers_more::write_test_certificate(&dir)?);
    }
    let py = peers::setup_python(
        cfg.peers.contains(&Peer::Asyncio),
        cfg.peers.contains(&Peer::Uvloop),
        peers::SetupLimits::new(cfg.quick),
    );
    for n in &py.notes {
        eprintln!("bench: {n}");
    }
    notes.extend(py.notes.iter().cloned());
    if cfg.workloads.iter().any(|w| w.is_client()) && cfg.peers.iter().any(|p| p.is_python()) {
        notes.push(
            "the client workloads have no Python client: asyncio and uvloop sit them out".into(),
        );
    }
    let peers: Vec<Peer> = cfg
        .peers
        .iter()
        .copied()
        .filter(|p| peers::server_command(*p, &py, "echo", None).is_some())
        .collect();
    if peers.is_empty() {
        return Err("no server to run".into());
    }

    let perf = cfg.perf.unwrap_or(!cfg.quick);
    let perf = perf
        && match perf::perf_works() {
            Ok(()) => true,
            Err(e) => {
                notes.push(format!(
                    "{e}: system calls are not counted, and the user/system split is \
                     getrusage's (4 ms ticks: noisy)"
                ));
                false
            }
        };
    if !perf && cfg.perf.is_none() && cfg.quick {
        notes.push(
            "--quick: no perf, so system calls are not counted and the user/system split is \
             getrusage's (4 ms ticks: noisy); add --perf"
                .into(),
        );
    }

    if cfg.pin {
        proc::pin_to_cpu(0).map_err(|e| format!("pinning the load generator to CPU 0: {e}"))?;
    }
    let mut rep = Report::new(&cfg, &peers, notes, perf);
    eprintln!(
        "bench: {} servers x {} workloads x {} reps, {:?} measured per cell",
        peers.len(),
        cfg.workloads.len(),
        cfg.reps,
        cfg.measure
    );
    let mut failures = Vec::new();
    for r in 0..cfg.reps {
        for &w in &cfg.workloads {
            for k in 0..peers.len() {
                let peer = peers[(k + r) % peers.len()];
                if sits_out(w, peer, &py) {
                    continue;
                }
                let how = if perf { PerfUse::Sample } else { PerfUse::None };
                match run_cell(peer, w, &cfg, &py, how) {
                    Ok((sample, _)) => {
                        eprintln!(
                            "  rep {} {:<9} {:<10} {}",
                            r + 1,
                            w.key(),
                            peer.name(),
                            sample.brief()
                        );
                        rep.add(w, peer, sample);
                    }
                    Err(e) => {
                        eprintln!(
                            "  rep {} {:<9} {:<10} FAILED: {e}",
                            r + 1,
                            w.key(),
                            peer.name()
                        );
                        failures.push(format!("{} on {}: {e}", peer.name(), w.key()));
                    }
                }
            }
        }
    }
    if perf {
        // A separate pass, so tracing never slows the timed runs.
        let counted = |w: &&Workload| **w != Workload::Idle && !w.is_client();
        for &w in cfg.workloads.iter().filter(counted) {
            for &peer in &peers {
                if sits_out(w, peer, &py) {
                    continue;
                }
                match run_cell(peer, w, &cfg, &py, PerfUse::Syscalls) {
                    Ok((_, Some(sc))) => rep.add_syscalls(w, peer, sc),
                    Ok((_, None)) => {}
                    Err(e) => {
                        failures.push(format!("{} on {} (perf pass): {e}", peer.name(), w.key()))
                    }
                }
            }
        }
    }
    if let Some(dir) = cfg.tls.as_ref().and_then(|t| t.cert.parent()) {
        let _ = std::fs::remove_dir_all(dir);
    }
    rep.set_failures(failures.clone());
    rep.set_duration(started.elapsed());

    let md = rep.markdown();
    println!("{md}");
    std::fs::create_dir_all(&cfg.out).map_err(|e| format!("{}: {e}", cfg.out.display()))?;
    let md_path = cfg.out.join("RESULTS.md");
    let svg_path = cfg.out.join("results.svg");
    std::fs::write(&md_path, &md).map_err(|e| format!("{}: {e}", md_path.display()))?;
    std::fs::write(&svg_path, report::svg(&rep))
        .map_err(|e| format!("{}: {e}", svg_path.display()))?;
    eprintln!(
        "bench: wrote {} and {} in {:.0} s",
        md_path.display(),
        svg_path.display(),
        started.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} cell(s) failed", failures.len()))
    }
}

/// Whether `peer` has nothing to run `w` with. Every peer has a server for
/// every workload; only the Python ones lack a client, and without the
/// protobuf package a request/reply server.
fn sits_out(w: Workload, peer: Peer, py: &Python) -> bool {
    peer.is_python() && (w.is_client() || (w.is_rpc() && !py.protobuf))
}

/// What perf does in a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PerfUse {
    None,
    /// Sample the server to split its CPU time into user and kernel.
    Sample,
    /// Count the server's system calls (an extra, untimed pass).
    Syscalls,
}

/// One fresh server process, one workload.
fn run_cell(
    peer: Peer,
    w: Workload,
    cfg: &Config,
    py: &Python,
    how: PerfUse,
) -> Result<(Sample, Option<report::Syscalls>), String> {
    if w.is_client() {
        return client_cell(peer, w, cfg, py);
    }
    let cmd =
        peers::server_command(peer, py, w.app(), cfg.tls.as_ref()).ok_or("server unavailable")?;
    let mut srv = ServerProc::spawn(peer.name(), cmd, cfg.pin.then_some(1))?;
    let mut s = Sample::default();
    match w {
        Workload::Echo { .. }
        | Workload::Rpc { .. }
        | Workload::Client { .. }
        | Workload::More { .. } => {
            let io = |e: std::io::Error| format!("load: {e}");
            let mut load = Load::connect(w, peer, srv.addr).map_err(io)?;
            load.run(cfg.warmup).map_err(io)?;
            let mut perf = match how {
                PerfUse::None => None,
                PerfUse::Sample => Some(Perf::sampler(srv.pid())?),
                PerfUse::Syscalls => Some(Perf::syscalls(srv.pid())?),
            };
            let c0 = srv.cpu()?;
            if let Some(p) = &mut perf {
                p.enable()?;
            }
            let measure = match how {
                PerfUse::Syscalls => cfg.measure.min(Duration::from_secs(1)),
                _ => cfg.measure,
            };
            let phase = load.run(measure).map_err(io)?;
            if let Some(p) = &mut perf {
                p.disable()?;
            }
            let cpu = srv.cpu()?.since(c0);
            let (_, hwm) = srv.memory_kib()?;
            drop(load);
            srv.stop();
            if phase.requests == 0 {
                return Err("no request completed".into());
            }
            let total = (cpu.user_us + cpu.sys_us) as f64;
            let (mut user, mut sys) = (cpu.user_us as f64, cpu.sys_us as f64);
            let mut syscalls = None;
            match (how, perf) {
                (PerfUse::Sample, Some(p)) => {
                    let (frac, _) = p.user_fraction()?;
                    (user, sys) = (total * frac, total * (1.0 - frac));
                }
                (PerfUse::Syscalls, Some(p)) => {
                    syscalls = Some(report::Syscalls::new(p.syscall_counts()?, phase.requests));
                }
                _ => {}
            }
            let per_req = |us: f64| us / phase.requests as f64;
            s.set(Metric::Rps, phase.rps());
            s.set(Metric::P50, phase.quantile_us(0.50));
            s.set(Metric::P99, phase.quantile_us(0.99));
            s.set(Metric::UserPerReq, per_req(user));
            s.set(Metric::SysPerReq, per_req(sys));
            s.set(Metric::CpuPerReq, per_req(total));
            s.set(Metric::PeakRss, hwm as f64 / 1024.0);
            Ok((s, syscalls))
        }
        Workload::Idle => {
            let io = |e: std::io::Error| format!("idle connections: {e}");
            let warm = load::open_idle(srv.addr, IDLE_WARM).map_err(io)?;
            let (rss0, _) = srv.memory_kib()?;
            let conns = load::open_idle(srv.addr, cfg.idle_conns).map_err(io)?;
            let (rss1, hwm) = srv.memory_kib()?;
            drop(conns);
            drop(warm);
            srv.stop();
            let growth = rss1.saturating_sub(rss0) as f64 * 1024.0;
            s.set(Metric::BytesPerConn, growth / cfg.idle_conns as f64);
            s.set(Metric::PeakRss, hwm as f64 / 1024.0);
            Ok((s, None))
        }
    }
}

/// A `Client` cell: the raw mio server, driven by `peer`'s client on this
/// thread; the figures are the client thread's.
fn client_cell(
    peer: Peer,
    w: Workload,
    cfg: &Config,
    py: &Python,
) -> Result<(Sample, Option<report::Syscalls>), String> {
    let cmd = peers::server_command(Peer::Mio, py, "rpc", None).ok_or("server unavailable")?;
    let srv = ServerProc::spawn("mio", cmd, cfg.pin.then_some(1))?;
    let io = |e: std::io::Error| format!("{} client: {e}", peer.name());
    let mut load = Load::connect(w, peer, srv.addr).map_err(io)?;
    load.run(cfg.warmup).map_err(io)?;
    let c0 = rpc_clients::thread_cpu();
    let phase = load.run(cfg.measure).map_err(io)?;
    let cpu = rpc_clients::thread_cpu().since(c0);
    drop(load);
    srv.stop();
    if phase.requests == 0 {
        return Err("no request completed".into());
    }
    let per_req = |us: u64| us as f64 / phase.requests as f64;
    let mut s = Sample::default();
    s.set(Metric::Rps, phase.rps());
    s.set(Metric::P50, phase.quantile_us(0.50));
    s.set(Metric::P99, phase.quantile_us(0.99));
    s.set(Metric::UserPerReq, per_req(cpu.user_us));
    s.set(Metric::SysPerReq, per_req(cpu.sys_us));
    s.set(Metric::CpuPerReq, per_req(cpu.user_us + cpu.sys_us));
    Ok((s, None))
}

/// The generator for a workload with requests.
enum Load {
    Echo(EchoLoad),
    More(MoreLoad),
    Rpc(RpcLoad),
    Protoloop(ProtoloopClients),
    Tokio(TokioClients),
}

impl Load {
    /// `peer` picks the client of a `Client` workload.
    fn connect(w: Workload, peer: Peer, addr: SocketAddr) -> std::io::Result<Load> {
        match w {
            Workload::Echo { conns, size, .. } => {
                EchoLoad::connect(addr, conns, size).map(Load::Echo)
            }
            Workload::Rpc { conns, depth, .. } => {
                RpcLoad::connect(addr, conns, depth).map(Load::Rpc)
            }
            Workload::Client { conns, depth, .. } => match peer {
                Peer::Protoloop => {
                    ProtoloopClients::connect(addr, conns, depth).map(Load::Protoloop)
                }
                Peer::Tokio => TokioClients::connect(addr, conns, depth).map(Load::Tokio),
                _ => RpcLoad::connect(addr, conns, depth).map(Load::Rpc),
            },
            Workload::More {
                kind, conns, size, ..
            } => {
                let kind = match kind {
                    More::Pipe => return EchoLoad::connect(addr, conns, size).map(Load::Echo),
                    More::TlsEcho => load_more::Kind::TlsEcho,
                    More::TlsHandshake => load_more::Kind::TlsHandshake,
                    More::Udp => load_more::Kind::Udp,
                };
                MoreLoad::connect(kind, addr, conns, size).map(Load::More)
            }
            Workload::Idle => unreachable!("the idle workload has no requests"),
        }
    }

    fn run(&mut self, dur: Duration) -> std::io::Result<load::Phase> {
        match self {
            Load::Echo(l) => l.run(dur),
            Load::More(l) => l.run(dur),
            Load::Rpc(l) => l.run(dur),
            Load::Protoloop(l) => l.run(dur),
            Load::Tokio(l) => l.run(dur),
        }
    }
}

/// Raise the soft open-files limit to the hard one (children inherit it);
/// returns the soft limit now in force.
fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 1024;
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                rl = want;
            }
        }
        rl.rlim_cur
    }
}

/// `--load`: drive a server started by hand (for profiling it).
pub fn standalone_load(
    w: Workload,
    addr: SocketAddr,
    secs: Duration,
    client: Peer,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("load: {e}");
    match w {
        Workload::Echo { .. }
        | Workload::Rpc { .. }
        | Workload::Client { .. }
        | Workload::More { .. } => {
            let mut load = Load::connect(w, client, addr).map_err(io)?;
            let warm = load.run(Duration::from_millis(500)).map_err(io)?;
            let p = load.run(secs).map_err(io)?;
            println!(
                "{}: {} requests in {:.2} s = {:.0} req/s, p50 {:.1} us, p99 {:.1} us",
                w.label(0),
                p.requests,
                p.elapsed.as_secs_f64(),
                p.rps(),
                p.quantile_us(0.5),
                p.quantile_us(0.99)
            );
            // What the server handled in all, for a count over its whole
            // life (bench/instructions.sh): the warm-up's requests too.
            println!("with the warm-up: {} requests", warm.requests + p.requests);
        }
        Workload::Idle => {
            raise_nofile_limit();
            let n = 10_000;
            let conns = load::open_idle(addr, n).map_err(io)?;
            println!("holding {n} idle connections for {secs:?}");
            std::thread::sleep(secs);
            drop(conns);
        }
    }
    Ok(())
}
