//! How much memory an idle connection costs the server.
//!
//! Run: `cargo run --release --example idle_conns -- --conns 10000`
//!
//! The program is the server: an echo server on `--listen` (default
//! 127.0.0.1:0). It starts itself again with `--client --connect ADDR` as
//! a separate process that opens the connections, so that only server
//! memory is measured. The client first opens a few warm-up connections
//! and echoes a byte on each (so the loop's read buffer and other one-time
//! allocations exist before the baseline), then, on request, `--conns`
//! idle connections. The server reports its resident set growth (VmRSS
//! in /proc/self/status) and its live heap growth (counted by a wrapping
//! global allocator) per idle connection.
//!
//! Both processes need `--conns` + a few file descriptors; the soft
//! `RLIMIT_NOFILE` is raised to the hard limit if it is lower.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use protoloop::{EventLoop, Protocol, ServerOptions, Transport};

/// Counts live heap bytes, to tell the heap's share of the RSS growth.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers every call to the system allocator unchanged; only
// counts the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Connections opened (and echoed on) before the baseline is taken.
const WARMUP: usize = 100;

struct Args {
    client: bool,
    addr: String,
    conns: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        client: false,
        addr: "127.0.0.1:0".into(),
        conns: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--client" => a.client = true,
            "--listen" | "--connect" => {
                a.addr = it.next().ok_or(format!("{arg} needs HOST:PORT"))?
            }
            "--conns" => {
                let v = it.next().ok_or("--conns needs a number")?;
                a.conns = v.parse().map_err(|e| format!("--conns {v}: {e}"))?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other}\nusage: idle_conns [--listen HOST:PORT] [--conns N]"
                ));
            }
        }
    }
    Ok(a)
}

/// Raise the soft open-files limit so that `need` descriptors fit.
fn raise_nofile(need: u64) -> Result<(), String> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let soft = lim.current.unwrap_or(u64::MAX);
    if soft >= need {
        return Ok(());
    }
    let hard = lim.maximum.unwrap_or(u64::MAX);
    if hard < need {
        return Err(format!(
            "{need} file descriptors needed, hard limit is {hard} (ulimit -Hn)"
        ));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: lim.maximum,
        },
    )
    .map_err(|e| format!("raising RLIMIT_NOFILE to {hard}: {e}"))
}

/// VmRSS of this process, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kb: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}

/// The client process: warm-up connections with one echo each, then
/// `conns` idle ones; talks to the server over stdin/stdout.
fn client(addr: &str, conns: usize) -> Result<(), String> {
    raise_nofile(conns as u64 + WARMUP as u64 + 64)?;
    let connect = || TcpStream::connect(addr).map_err(|e| format!("client: connect {addr}: {e}"));
    let mut warm = Vec::new();
    for _ in 0..WARMUP {
        let mut s = connect()?;
        s.write_all(b"w").map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).map_err(|e| e.to_string())?;
        warm.push(s);
    }
    let mut out = std::io::stdout();
    writeln!(out, "warm")
        .and_then(|_| out.flush())
        .map_err(|e| e.to_string())?;
    let mut stdin = BufReader::new(std::io::stdin());
    let mut line = String::new();
    stdin.read_line(&mut line).map_err(|e| e.to_string())?;
    if line.trim() != "go" {
        return Ok(()); // the server went away
    }
    let mut idle = Vec::with_capacity(conns);
    for _ in 0..conns {
        idle.push(connect()?);
    }
    writeln!(out, "ready")
        .and_then(|_| out.flush())
        .map_err(|e| e.to_string())?;
    // Hold the connections until the server closes our stdin.
    let mut rest = String::new();
    let _ = stdin.read_to_string(&mut rest);
    drop(idle);
    drop(warm);
    Ok(())
}

/// Echoes; an idle connection only ever sees `connection_made`.
struct Echo(Option<Transport>);

impl Protocol for Echo {
    fn connection_made(&mut self, t: Transport) {
        self.0 = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.0 {
            let _ = t.write(data);
        }
    }
}

/// Run the loop until `cond` holds or `limit` passes.
fn run_until(lp: &EventLoop, what: &str, limit: Duration, cond: impl Fn() -> bool + 'static) {
    let h = lp.handle();
    let ok = lp
        .run_until_complete(async move {
            let deadline = Instant::now() + limit;
            while !cond() {
                if Instant::now() > deadline {
                    return false;
                }
                h.sleep(Duration::from_millis(2)).await;
            }
            true
        })
        .expect("running the loop");
    if !ok {
        eprintln!("idle_conns: timed out waiting for {what}");
        std::process::exit(1);
    }
}

/// The lines the client process prints, read by a helper thread.
struct ClientLines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: RefCell<Vec<String>>,
}

impl ClientLines {
    fn new(out: std::process::ChildStdout) -> Rc<ClientLines> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Rc::new(ClientLines {
            rx,
            seen: RefCell::new(Vec::new()),
        })
    }

    /// Has the client printed `line` yet?
    fn has(&self, line: &str) -> bool {
        while let Ok(l) = self.rx.try_recv() {
            self.seen.borrow_mut().push(l);
        }
        self.seen.borrow().iter().any(|l| l == line)
    }
}

fn server(addr: &str, conns: usize) -> Result<(), String> {
    raise_nofile(conns as u64 + WARMUP as u64 + 64)?;
    let lp = EventLoop::new().map_err(|e| e.to_string())?;
    let h = lp.handle();
    let server = h
        .create_server(|| Echo(None), addr, ServerOptions::default())
        .map_err(|e| e.to_string())?;
    let local = server.local_addrs()[0];
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["--client", "--connect", &local.to_string(), "--conns"])
        .arg(conns.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the client process: {e}"))?;
    let lines = ClientLines::new(child.stdout.take().expect("piped stdout"));
    let mut to_child = child.stdin.take().expect("piped stdin");

    let (l, s) = (lines.clone(), server.clone());
    run_until(
        &lp,
        "the warm-up connections",
        Duration::from_secs(60),
        move || l.has("warm") && s.connection_count() == WARMUP,
    );
    // Let anything the warm-up scheduled finish before the baseline.
    run_until(&lp, "a pause", Duration::from_secs(1), {
        let start = Instant::now();
        move || start.elapsed() > Duration::from_millis(100)
    });
    let (rss0, heap0) = (rss(), LIVE.load(Ordering::Relaxed));

    writeln!(to_child, "go").map_err(|e| e.to_string())?;
    let (l, s) = (lines.clone(), server.clone());
    let started = Instant::now();
    run_until(
        &lp,
        "the idle connections",
        Duration::from_secs(300),
        move || l.has("ready") && s.connection_count() == WARMUP + conns,
    );
    let took = started.elapsed();
    run_until(&lp, "a pause", Duration::from_secs(1), {
        let start = Instant::now();
        move || start.elapsed() > Duration::from_millis(200)
    });
    let (rss1, heap1) = (rss(), LIVE.load(Ordering::Relaxed));

    let rss_per = (rss1 as f64 - rss0 as f64) / conns as f64;
    let heap_per = (heap1 - heap0) as f64 / conns as f64;
    println!(
        "idle connections:        {conns} (accepted in {:.2} s)",
        took.as_secs_f64()
    );
    println!(
        "server RSS:              {:.1} MiB -> {:.1} MiB",
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0
    );
    println!("RSS growth / connection: {rss_per:.0} bytes");
    println!("heap growth / connection: {heap_per:.0} bytes (live bytes requested)");
    println!("goal:                    < 512 bytes / connection");

    // Let the client go and check the server sees every connection end.
    drop(to_child);
    let s = server.clone();
    run_until(
        &lp,
        "the connections to close",
        Duration::from_secs(120),
        move || s.connection_count() == 0,
    );
    let _ = child.wait();
    server.close();
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("idle_conns: {e}");
            std::process::exit(2);
        }
    };
    let r = if args.client {
        client(&args.addr, args.conns)
    } else {
        server(&args.addr, args.conns)
    };
    if let Err(e) = r {
        eprintln!("idle_conns: {e}");
        std::process::exit(1);
    }
}
