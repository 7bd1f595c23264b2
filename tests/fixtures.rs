//! `protoloop::testing`'s multi-process fixtures on real programs (`sh`,
//! `sleep`, and this crate's `bank` and `customer`): readiness by line
//! and by connect, each way a start fails, stopping (also a program that
//! ignores SIGTERM, and from `Drop` when a test panics), fake peers.

use std::cell::Cell;
use std::os::unix::process::ExitStatusExt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use protoloop::testing::{FakeServer, Program, ProgramError, Ready, Stream};
use protoloop::{EventLoop, Protocol, Transport};

const BANK: &str = env!("CARGO_BIN_EXE_bank");
const CUSTOMER: &str = env!("CARGO_BIN_EXE_customer");
const WAIT: Duration = Duration::from_secs(10);

/// Run `f` on `lp`, failing the test after 30 s.
fn run<F>(lp: &EventLoop, f: F) -> F::Output
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    let h = lp.handle();
    lp.run_until_complete(async move {
        h.timeout(Duration::from_secs(30), f)
            .await
            .expect("test timed out")
    })
    .unwrap()
}

/// `pid` no longer exists, not even as a zombie (polled for a bounded
/// time: a background reaper may need a moment).
fn gone(pid: u32) -> bool {
    let start = Instant::now();
    while std::fs::metadata(format!("/proc/{pid}")).is_ok() {
        if start.elapsed() > WAIT {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A shell that ignores SIGTERM, says so, and sleeps (`exec` keeps the
/// signal ignored in `sleep`).
const DEAF: &str = "trap '' TERM; echo deaf; exec sleep 30";

#[test]
fn ready_on_a_line_keeps_the_output_and_stops_with_sigterm() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (p, status) = run(&lp, async move {
        let p = Program::new("sh")
            .args([
                "-c",
                "echo booting; echo 'warn: cold' >&2; echo 'up on 127.0.0.1:5' >&2; \
                 echo 'log 1' >&2; echo 'log 2' >&2; exec sleep 30",
            ])
            .ready(Ready::line(Stream::Stderr, "up on"))
            .start(&h)
            .await
            .unwrap();
        assert_eq!(p.ready_line(), Some("up on 127.0.0.1:5"));
        assert_eq!(p.addr(), Some("127.0.0.1:5".parse().unwrap()));
        let logs = p
            .wait_for_lines(Stream::Stderr, "log", 2, WAIT)
            .await
            .unwrap();
        assert_eq!(logs, ["log 1", "log 2"]);
        assert_eq!(p.lines(Stream::Stdout, "boot"), ["booting"]);
        let status = p.stop().await.unwrap();
        (p, status)
    });
    assert_eq!(status.signal(), Some(15));
    assert_eq!(p.returncode(), Some(status));
    assert!(
        p.stderr().starts_with("warn: cold\nup on"),
        "{}",
        p.stderr()
    );
    assert!(gone(p.pid()));
}

#[test]
fn ready_on_connect_to_the_bank_program() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let status = run(&lp, async move {
        let bank = Program::new(BANK)
            .args(["--listen", &addr.to_string()])
            .ready(Ready::connect(addr))
            .start(&h)
            .await
            .unwrap();
        assert_eq!(bank.addr(), Some(addr));
        // It accepts: a connection now succeeds at the first try.
        std::net::TcpStream::connect(addr).unwrap();
        bank.stop().await.unwrap()
    });
    assert!(status.success(), "the bank exits 0 on SIGTERM: {status}");
}

#[test]
fn a_program_that_exits_before_it_is_ready_gives_its_status_and_output() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let script = "echo booting; echo 'no config file' >&2; exit 3";
    let port = free_port();
    for ready in [
        Ready::line(Stream::Stdout, "listening"),
        Ready::connect(format!("127.0.0.1:{port}").parse().unwrap()),
    ] {
        let start = Program::new("sh")
            .args(["-c", script])
            .ready(ready.clone())
            .start(&h);
        let e = run(&lp, start).unwrap_err();
        assert_eq!(e.status().and_then(|s| s.code()), Some(3), "{e}");
        assert_eq!(e.output(Stream::Stdout), "booting\n");
        assert_eq!(e.output(Stream::Stderr), "no config file\n");
        let msg = e.to_string();
        assert!(msg.starts_with("`sh` exited (exit status: 3)"), "{msg}");
        assert!(
            msg.ends_with("--- its stdout ---\nbooting\n--- its stderr ---\nno config file"),
            "{msg}"
        );
    }
}

#[test]
fn a_program_that_never_listens_is_killed_at_the_deadline() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // `exec` so that the pid we see is the one that must be gone.
    let start = Program::new("sh")
        .args(["-c", "echo 'still thinking'; exec sleep 30"])
        .ready(Ready::connect(addr))
        .ready_within(Duration::from_millis(300))
        .start(&h);
    let e = run(&lp, start).unwrap_err();
    match &e {
        ProgramError::Timeout { within, .. } => {
            assert_eq!(*within, Duration::from_millis(300))
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "`sh` did not accept a TCP connection on {addr} within 300ms"
        )),
        "{msg}"
    );
    assert!(msg.ends_with("--- its stdout ---\nstill thinking"), "{msg}");
    assert_eq!(lp.handle().stats().sources, 0, "its pipes are closed");
}

#[test]
fn a_missing_program_is_a_spawn_error_naming_it() {
    let lp = EventLoop::new().unwrap();
    let start = Program::new("no-such-program-protoloop")
        .ready(Ready::line(Stream::Stdout, "ready"))
        .start(&lp.handle());
    match run(&lp, start) {
        Err(e @ ProgramError::Spawn { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("could not start `no-such-program-protoloop`"),
                "{msg}"
            );
            let source = std::error::Error::source(&e).unwrap();
            let source = source.downcast_ref::<protoloop::Error>().unwrap();
            assert_eq!(source.io_kind(), Some(std::io::ErrorKind::NotFound));
        }
        other => panic!("expected a spawn error, got {other:?}"),
    }
}

#[test]
fn a_program_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (pid, status) = run(&lp, async move {
        let p = Program::new("sh")
            .args(["-c", DEAF])
            .ready(Ready::line(Stream::Stdout, "deaf"))
            .stop_grace(Duration::from_millis(200))
            .start(&h)
            .await
            .unwrap();
        (p.pid(), p.stop().await.unwrap())
    });
    assert_eq!(status.signal(), Some(9), "SIGTERM was ignored: {status}");
    assert!(gone(pid));
}

#[test]
fn waiting_for_a_line_or_the_exit_has_a_deadline_and_sees_the_exit() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    run(&lp, async move {
        let p = Program::new("sh")
            .args(["-c", "echo one; sleep 0.3; echo two; exit 4"])
            .start(&h)
            .await
            .unwrap();
        let e = p.wait(Duration::from_millis(50)).await.unwrap_err();
        assert!(
            e.to_string()
                .starts_with("`sh` did not exit within 50ms\n--- its stdout ---\none"),
            "{e}"
        );
        let e = p
            .wait_for_line(Stream::Stdout, "three", WAIT)
            .await
            .unwrap_err();
        assert_eq!(e.status().and_then(|s| s.code()), Some(4), "{e}");
        assert_eq!(e.output(Stream::Stdout), "one\ntwo\n");
        assert_eq!(p.wait(WAIT).await.unwrap().code(), Some(4));
    });
}

#[test]
fn a_grandchild_holding_stdout_does_not_make_stop_hang() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (status, out) = run(&lp, async move {
        let p = Program::new("sh")
            .args(["-c", "sleep 30 & echo $!; exec sleep 30"])
            .ready(Ready::line(Stream::Stdout, ""))
            .stop_grace(Duration::from_millis(200))
            .start(&h)
            .await
            .unwrap();
        (p.stop().await.unwrap(), p.stdout())
    });
    assert_eq!(status.signal(), Some(15));
    // Not ours to reap (init adopts it), but ours to clean up.
    let grandchild = out.trim();
    let _ = std::process::Command::new("kill").arg(grandchild).status();
}

#[test]
fn dropping_a_running_program_stops_and_reaps_it_even_if_it_ignores_sigterm() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let p = run(&lp, async move {
        Program::new("sh")
            .args(["-c", DEAF])
            .ready(Ready::line(Stream::Stdout, "deaf"))
            .stop_grace(Duration::from_millis(100))
            .start(&h)
            .await
            .unwrap()
    });
    let (pid, transport) = (p.pid(), p.transport().clone());
    drop(p);
    // Reaped on the spot, through the transport: no zombie, and the
    // status is known without running the loop.
    assert_eq!(transport.returncode().and_then(|s| s.signal()), Some(9));
    assert!(std::fs::metadata(format!("/proc/{pid}")).is_err(), "{pid}");
}

#[test]
fn a_test_that_panics_leaves_no_process_behind() {
    let pid = Rc::new(Cell::new(0));
    let p2 = pid.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let lp = EventLoop::new().unwrap();
        let h = lp.handle();
        let p = run(&lp, async move {
            Program::new("sleep").arg("30").start(&h).await.unwrap()
        });
        p2.set(p.pid());
        panic!("the test failed with the program running");
    }));
    assert!(r.is_err());
    assert_ne!(pid.get(), 0);
    assert!(gone(pid.get()), "process {} left behind", pid.get());
}

/// A fake ATM: answers any request with `Reply(success=true, balance=42)`
/// and keeps what it got.
#[derive(Default)]
struct FakeAtm {
    got: Vec<u8>,
    t: Option<Transport>,
}

impl Protocol for FakeAtm {
    fn connection_made(&mut self, t: Transport) {
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data);
        let whole = self.got.len() >= 2
            && self.got.len() >= 2 + u16::from_be_bytes([self.got[0], self.got[1]]) as usize;
        if let (true, Some(t)) = (whole, &self.t) {
            // Length 7: success (field 1, true), balance (field 2, 42.0f).
            t.write(b"\x00\x07\x08\x01\x15\x00\x00\x28\x42").unwrap();
            t.close();
        }
    }
}

#[test]
fn the_customer_program_against_a_fake_atm() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let atm = FakeServer::start(&h, FakeAtm::default).unwrap();
    let addr = atm.addr().to_string();
    let (status, stdout) = run(&lp, async move {
        let p = Program::new(CUSTOMER)
            .args(["--atm", &addr, "withdraw", "Jane Doe", "100"])
            .start(&h)
            .await
            .unwrap();
        (p.wait(WAIT).await.unwrap(), p.stdout())
    });
    assert!(status.success(), "{status}");
    assert_eq!(stdout, "success=true balance=42\n");
    let conns = atm.connections();
    assert_eq!(conns.len(), 1);
    // Request("Jane Doe", WITHDRAW, 100), as the original customer sends it.
    let jane = b"\x00\x11\x0a\x08Jane Doe\x10\x02\x1d\x00\x00\xc8\x42";
    assert_eq!(conns[0].with(|p| p.got.clone()), jane);
}
