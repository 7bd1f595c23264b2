// Run: cargo bench --bench bench                 (full run, about 7 minutes)
//      cargo bench --bench bench -- --quick      (smoke run for CI, under a minute)
//      cargo bench --bench bench -- --help       (every option)
//
//! Benchmarks protoloop side by side with tokio, a raw mio loop, asyncio and
//! uvloop (see `bench/README.md`).
//!
//! One binary plays three parts, chosen by its arguments:
//!
//! - the orchestrator (default): starts each server as a child process (this
//!   binary again with `--serve KIND`, or a Python script), drives it with
//!   the load generator, samples the child's CPU time, RSS and (with `perf`)
//!   system calls, and prints a markdown table and writes an SVG chart;
//! - a server (`--serve protoloop|tokio|mio [--app echo|rpc] --listen HOST:PORT`);
//! - a standalone load generator (`--load WORKLOAD --connect HOST:PORT`),
//!   handy next to `perf record -p PID` on a server started by hand.

mod load;
mod load_more;
mod mio_pipe;
mod mio_tls;
mod orchestrate;
mod peers;
mod perf;
mod proc;
mod report;
mod rpc_clients;
mod rpc_load;
mod rpc_servers;
mod servers;
mod servers_more;
mod svg;
mod workloads;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use orchestrate::Config;
use peers::Peer;

const USAGE: &str = "\
usage:
  bench [--quick] [--reps N] [--secs S] [--warmup S] [--idle N]
        [--peers protoloop,tokio,mio,asyncio,uvloop]
        [--workloads echo1k,echo10k,echo100k,pingpong,idle,rpc1x10,rpc32x10,rpc1x100,rpc32x100,
                     client1x10,client32x10,client1x100,client32x100,tls10k,tlshs,udp1k,pipe64k]
        [--pin] [--perf | --no-perf] [--out DIR]
  bench --serve protoloop|tokio|mio [--app echo|rpc|udp|pipe] --listen HOST:PORT
  bench --serve protoloop|tokio|mio --app tls --cert PEM --key PEM --listen HOST:PORT
  bench --load WORKLOAD --connect HOST:PORT [--secs S] [--peers P]
               (P: whose client makes the client* workloads' load; default protoloop)
  bench --write-cert DIR       write a self-signed cert.pem and key.pem for 127.0.0.1 into DIR

  --quick      a smoke run: 3 reps of 0.1 s, 1,000 idle connections, no perf, and one
               workload of each kind (echo1k,echo100k,pingpong,idle,rpc1x10,rpc32x100,
               client1x10,client32x100,tls10k,tlshs,udp1k,pipe64k) unless --workloads says
               otherwise
  --reps N     repetitions of every (workload, server) cell, alternating servers (default 3)
  --secs S     measured seconds per cell (default 3)
  --warmup S   unmeasured seconds before each measurement (default 0.5)
  --idle N     connections for the idle-memory workload (default 10000)
  --pin        pin the load generator to CPU 0 and each server to CPU 1
  --perf       use perf (default on unless --quick): sample the servers to split CPU time
               into user and kernel, and count their system calls in an extra pass
  --out DIR    where RESULTS.md and results.svg go (default target/bench)";

fn main() -> ExitCode {
    // `cargo bench` passes `--bench` to every bench target; it means nothing here.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let mut cfg = Config::default();
    let mut serve: Option<String> = None;
    let mut load: Option<String> = None;
    let mut listen = "127.0.0.1:0".to_string();
    let mut app = "echo".to_string();
    let mut connect: Option<String> = None;
    let (mut cert, mut key): (Option<String>, Option<String>) = (None, None);
    let mut secs_given = false;
    let mut workloads_given = false;
    let mut peers_given = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            "--quick" => cfg.quick(),
            "--reps" => cfg.reps = parse(a, &value()?)?,
            "--secs" => {
                cfg.measure = secs(a, &value()?)?;
                secs_given = true;
            }
            "--warmup" => cfg.warmup = secs(a, &value()?)?,
            "--idle" => cfg.idle_conns = parse(a, &value()?)?,
            "--peers" => {
                peers_given = true;
                cfg.peers = value()?
                    .split(',')
                    .map(Peer::parse)
                    .collect::<Result<_, _>>()?
            }
            "--workloads" => {
                workloads_given = true;
                cfg.workloads = value()?
                    .split(',')
                    .map(orchestrate::Workload::parse)
                    .collect::<Result<_, _>>()?
            }
            "--pin" => cfg.pin = true,
            "--perf" => cfg.perf = Some(true),
            "--no-perf" => cfg.perf = Some(false),
            "--out" => cfg.out = value()?.into(),
            "--serve" => serve = Some(value()?),
            "--listen" => listen = value()?,
            "--app" => app = value()?,
            "--load" => load = Some(value()?),
            "--connect" => connect = Some(value()?),
            "--cert" => cert = Some(value()?),
            "--key" => key = Some(value()?),
            "--write-cert" => {
                let files = servers_more::write_test_certificate(value()?.as_ref())?;
                println!("{}\n{}", files.cert.display(), files.key.display());
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if cfg.quick && !workloads_given {
        cfg.workloads = orchestrate::Workload::QUICK
            .iter()
            .map(|k| orchestrate::Workload::parse(k))
            .collect::<Result<_, _>>()?;
    }
    if cfg.reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    if let Some(kind) = serve {
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(servers_more::TlsFiles {
                cert: cert.into(),
                key: key.into(),
            }),
            (None, None) => None,
            _ => return Err("--cert and --key go together".into()),
        };
        return servers::serve(&kind, &listen, &app, tls.as_ref());
    }
    if let Some(w) = load {
        let addr: SocketAddr = connect
            .ok_or("--load needs --connect HOST:PORT")?
            .parse()
            .map_err(|e| format!("--connect: {e}"))?;
        let w = orchestrate::Workload::parse(&w)?;
        let secs = if secs_given {
            cfg.measure
        } else {
            Duration::from_secs(10)
        };
        // For the client workloads, whose client makes the load.
        let client = match cfg.peers.first() {
            Some(&p) if peers_given => p,
            _ => Peer::Protoloop,
        };
        return orchestrate::standalone_load(w, addr, secs, client);
    }
    orchestrate::run(cfg)
}

fn parse<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.parse().map_err(|e| format!("{flag} {v:?}: {e}"))
}

fn secs(flag: &str, v: &str) -> Result<Duration, String> {
    let s: f64 = parse(flag, v)?;
    if !(s.is_finite() && s > 0.0 && s < 3600.0) {
        return Err(format!("{flag} {v:?}: expected seconds between 0 and 3600"));
    }
    Ok(Duration::from_secs_f64(s))
}
