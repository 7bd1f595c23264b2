//! Server child processes and what is read from them: CPU time (the
//! child's own `getrusage`, asked for over stdin) and resident memory
//! (`/proc/PID/status`). `perf.rs` adds what perf can see.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a server may take to start listening or to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// CPU time of a process, microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub user_us: u64,
    pub sys_us: u64,
}

impl Cpu {
    pub fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            user_us: self.user_us.saturating_sub(earlier.user_us),
            sys_us: self.sys_us.saturating_sub(earlier.sys_us),
        }
    }
}

/// A running server; killed on drop if it has not exited.
pub struct ServerProc {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

/// Pin the calling thread (or, in a child before `exec`, the child) to one CPU.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays in bounds
    // for cpu < CPU_SETSIZE, and sched_setaffinity only reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl ServerProc {
    /// Start `cmd` and wait for its `listening HOST:PORT` line.
    pub fn spawn(name: &str, mut cmd: Command, pin: Option<usize>) -> Result<ServerProc, String> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(cpu) = pin {
            // SAFETY: the closure only makes the sched_setaffinity system
            // call, which is async-signal-safe, between fork and exec.
            unsafe {
                cmd.pre_exec(move || pin_to_cpu(cpu));
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting the {name} server: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let lines = reader_thread(stdout);
        let mut me = ServerProc {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdin: child.stdin.take(),
            child,
            lines,
        };
        let line = me.line()?;
        let addr = line
            .strip_prefix("listening ")
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| {
                format!("the {name} server said {line:?}, expected \"listening HOST:PORT\"")
            })?;
        me.addr = addr;
        Ok(me)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> Result<String, String> {
        match self.lines.recv_timeout(REPLY_TIMEOUT) {
            Ok(l) => Ok(l),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
                "the {} server did not answer in {REPLY_TIMEOUT:?}",
                self.name
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                Err(format!(
                    "the {} server exited ({})",
                    self.name,
                    status.map_or("still running".into(), |s| s.to_string())
                ))
            }
        }
    }

    /// The server's CPU time so far, from its own `getrusage`.
    pub fn cpu(&mut self) -> Result<Cpu, String> {
        let stdin = self.stdin.as_mut().ok_or("server stdin closed")?;
        stdin
            .write_all(b"cpu\n")
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("asking the {} server for its CPU time: {e}", self.name))?;
        let line = self.line()?;
        let mut it = line.split_whitespace();
        let parsed = match (it.next(), it.next(), it.next()) {
            (Some("cpu"), Some(u), Some(s)) => u.parse().ok().zip(s.parse().ok()),
            _ => None,
        };
        let (user_us, sys_us) = parsed.ok_or_else(|| {
            format!(
                "the {} server said {line:?}, expected \"cpu USER_US SYS_US\"",
                self.name
            )
        })?;
        Ok(Cpu { user_us, sys_us })
    }

    /// `(VmRSS, VmHWM)` in KiB.
    pub fn memory_kib(&self) -> Result<(u64, u64), String> {
        let path = format!("/proc/{}/status", self.pid());
        let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .ok_or_else(|| format!("no {key} in {path}"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Close stdin (the server exits), then make sure it is gone.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.shutdown();
        }
    }
}

/// Lines of the child's stdout, read on a thread so waits can time out.
fn reader_thread(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
