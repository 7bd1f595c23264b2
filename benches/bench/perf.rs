//! What `perf` measures on a server, switched on and off exactly around
//! the measured window through perf's control FIFOs (`--control`, started
//! with `-D -1`, i.e. disabled):
//!
//! - system calls per request: `perf stat` on syscall tracepoints;
//! - the user/kernel split of the server's CPU time: `perf record`
//!   sampling `cpu-clock` at 4999 Hz. `getrusage` gets the total right but
//!   splits it by 4 ms scheduler ticks (`CONFIG_HZ=250`, tick accounting),
//!   too coarse for user time that is 5% of the total.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tracepoints counted: all system calls, then the ones an echo
/// server makes per request, to show where the total comes from.
pub const SYSCALL_EVENTS: [&str; 10] = [
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_epoll_pwait",
    "syscalls:sys_enter_read",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_sendmsg",
    "syscalls:sys_enter_epoll_ctl",
];

/// System call counts of one measured window, in `SYSCALL_EVENTS` order.
pub type SyscallCounts = [u64; SYSCALL_EVENTS.len()];

/// Sampling rate for the user/kernel split (prime, to avoid lockstep).
const SAMPLE_HZ: &str = "4999";

/// Whether perf can count syscall tracepoints and sample here (root or a
/// low `perf_event_paranoid`, and tracefs).
pub fn perf_works() -> Result<(), String> {
    let out = Command::new("perf")
        .args(["stat", "-x", ",", "-e", SYSCALL_EVENTS[0], "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("perf is not installed ({e})"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    let counted = err
        .lines()
        .any(|l| l.contains(SYSCALL_EVENTS[0]) && l.split(',').next().is_some_and(is_number));
    if out.status.success() && counted {
        Ok(())
    } else {
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        Err(format!(
            "perf cannot count syscall tracepoints here: {first}"
        ))
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A perf process attached to a server, disabled until `enable`.
pub struct Perf {
    child: Child,
    ctl: File,
    ack: File,
    out: PathBuf,
    dir: PathBuf,
}

impl Perf {
    /// `perf stat` on the syscall tracepoints.
    pub fn syscalls(pid: u32) -> Result<Perf, String> {
        Perf::attach(pid, "syscalls", |cmd, out| {
            cmd.args(["stat", "-x", ","])
                .arg("-o")
                .arg(out)
                .arg("-e")
                .arg(SYSCALL_EVENTS.join(","));
        })
    }

    /// `perf record` sampling where the server's CPU time goes.
    pub fn sampler(pid: u32) -> Result<Perf, String> {
        Perf::attach(pid, "samples", |cmd, out| {
            cmd.args(["record", "-q", "-e", "cpu-clock", "-F", SAMPLE_HZ])
                .arg("-o")
                .arg(out);
        })
    }

    fn attach(
        pid: u32,
        what: &str,
        args: impl FnOnce(&mut Command, &PathBuf),
    ) -> Result<Perf, String> {
        let dir = std::env::temp_dir().join(format!(
            "protoloop-bench-{what}-{}-{pid}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (ctl_path, ack_path, out) = (dir.join("ctl"), dir.join("ack"), dir.join("out"));
        for p in [&ctl_path, &ack_path] {
            let c = std::ffi::CString::new(p.to_str().ok_or("temp dir is not UTF-8")?)
                .map_err(|_| "temp dir has a NUL")?;
            // SAFETY: `c` is a valid NUL-terminated path.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                return Err(format!(
                    "mkfifo {}: {}",
                    p.display(),
                    std::io::Error::last_os_error()
                ));
            }
        }
        // Opening a FIFO read-write never blocks, whether perf is up or not.
        let open = |p: &PathBuf| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(p)
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        let (ctl, ack) = (open(&ctl_path)?, open(&ack_path)?);
        let mut cmd = Command::new("perf");
        args(&mut cmd, &out);
        cmd.args(["-D", "-1", "--control"])
            .arg(format!(
                "fifo:{},{}",
                ctl_path.display(),
                ack_path.display()
            ))
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| format!("starting perf: {e}"))?;
        Ok(Perf {
            child,
            ctl,
            ack,
            out,
            dir,
        })
    }

    fn command(&mut self, cmd: &str) -> Result<(), String> {
        self.ctl
            .write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| format!("perf control: {e}"))?;
        let mut pfd = libc::pollfd {
            fd: self.ack.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
        if n != 1 {
            return Err(format!("perf did not acknowledge {cmd:?} within 10 s"));
        }
        let mut buf = [0u8; 16];
        let _ = self.ack.read(&mut buf);
        Ok(())
    }

    pub fn enable(&mut self) -> Result<(), String> {
        self.command("enable")
    }

    pub fn disable(&mut self) -> Result<(), String> {
        self.command("disable")
    }

    /// Stop perf (SIGINT, as at a terminal) and wait for its output.
    fn stop(&mut self) -> Result<(), String> {
        // SAFETY: plain kill(2) on our own, not yet reaped, child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err("perf did not exit after SIGINT".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stop `perf stat` and read its counts.
    pub fn syscall_counts(mut self) -> Result<SyscallCounts, String> {
        self.stop()?;
        let text = std::fs::read_to_string(&self.out)
            .map_err(|e| format!("reading perf stat output: {e}"))?;
        let mut counts = [0u64; SYSCALL_EVENTS.len()];
        for line in text.lines() {
            let cols: Vec<&str> = line.split(',').collect();
            if cols.len() < 3 {
                continue;
            }
            if let Some(i) = SYSCALL_EVENTS.iter().position(|e| *e == cols[2]) {
                // "<not counted>" means the task never ran while enabled.
                counts[i] = cols[0].parse().unwrap_or(0);
            }
        }
        Ok(counts)
    }

    /// Stop `perf record`; the fraction of samples taken in user space,
    /// and how many samples there were.
    pub fn user_fraction(mut self) -> Result<(f64, u64), String> {
        self.stop()?;
        let out = Command::new("perf")
            .args(["script", "-F", "ip", "-i"])
            .arg(&self.out)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("perf script: {e}"))?;
        let (mut user, mut all) = (0u64, 0u64);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(ip) = u64::from_str_radix(line.trim(), 16) else {
                continue;
            };
            all += 1;
            // Kernel addresses are in the upper half on x86-64 and arm64.
            if ip < 1 << 63 {
                user += 1;
            }
        }
        if all == 0 {
            return Err("perf record took no samples".into());
        }
        Ok((user as f64 / all as f64, all))
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
