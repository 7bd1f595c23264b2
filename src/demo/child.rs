//! The `atm` program as a child process, started through protoloop's
//! subprocess transport: the demo ([`tour`](super::tour)) and the
//! integration tests run the real binary this way.
//!
//! The ATM prints [`LISTENING`] and its address on stdout once its
//! listener is bound (after it reached the bank), so from that line on it
//! accepts connections; [`AtmChild::start`] waits for that line, with a
//! deadline, and says what the child wrote on stderr if it never comes.
//! The child is killed if the [`AtmChild`] is dropped while it runs.

use std::ffi::OsStr;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;

use crate::{Handle, Process, Stdio, SubprocessOptions};

/// What the `atm` program prints on stdout, followed by the address, once
/// it accepts customers: `atm: listening on 127.0.0.1:33333`.
pub const LISTENING: &str = "atm: listening on ";

/// The address in a [`LISTENING`] line.
///
/// ```
/// use protoloop::demo::child::listening_addr;
/// let addr = listening_addr("atm: listening on 127.0.0.1:4242\n").unwrap();
/// assert_eq!(addr.port(), 4242);
/// assert!(listening_addr("atm: hello").is_none());
/// ```
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    line.trim_end().strip_prefix(LISTENING)?.parse().ok()
}

/// Why the ATM child did not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum ChildError {
    /// The program could not be started.
    Spawn(crate::Error),
    /// It exited before it said it was listening.
    Exited {
        /// How it exited.
        status: ExitStatus,
        /// What it wrote on stderr (empty unless stderr was piped).
        stderr: String,
    },
    /// It did not say it was listening in time (it was killed).
    Silent {
        /// How long it was given.
        within: Duration,
        /// What it wrote on stderr meanwhile (empty unless piped).
        stderr: String,
    },
}

impl fmt::Display for ChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildError::Spawn(e) => write!(f, "could not start the ATM: {e}"),
            ChildError::Exited { status, stderr } => {
                write!(f, "the ATM exited ({status}) before it listened")?;
                write_stderr(f, stderr)
            }
            ChildError::Silent { within, stderr } => {
                write!(
                    f,
                    "expected the ATM to print `{LISTENING}ADDRESS` within {within:?}, got nothing"
                )?;
                write_stderr(f, stderr)
            }
        }
    }
}

fn write_stderr(f: &mut fmt::Formatter<'_>, stderr: &str) -> fmt::Result {
    if stderr.is_empty() {
        Ok(())
    } else {
        write!(f, "; its stderr:\n{}", stderr.trim_end())
    }
}

impl std::error::Error for ChildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ChildError::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

/// A running `atm` child that said where it listens.
#[derive(Debug)]
pub struct AtmChild {
    process: Process,
    addr: SocketAddr,
}

impl AtmChild {
    /// Start `program` with `args` (stdin closed, stdout piped, stderr as
    /// `stderr` says) and wait up to `within` for its [`LISTENING`] line.
    /// Other stdout lines before it are skipped.
    pub fn start<I, S>(
        handle: &Handle,
        program: impl AsRef<OsStr>,
        args: I,
        stderr: Stdio,
        within: Duration,
    ) -> impl Future<Output = Result<AtmChild, ChildError>> + 'static
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let opts = SubprocessOptions::default()
            .stdin(Stdio::Null)
            .stdout(Stdio::Pipe)
            .stderr(stderr)
            .kill_on_drop(true);
        let spawned = handle.create_subprocess_exec(program, args, opts);
        let h = handle.clone();
        async move {
            let process = spawned.map_err(ChildError::Spawn)?;
            let deadline = h.time() + within;
            loop {
                let left = deadline.saturating_duration_since(h.time());
                match h.timeout(left, process.read_line(1)).await {
                    Ok(Ok(Some(line))) => {
                        if let Some(addr) = listening_addr(&String::from_utf8_lossy(&line)) {
                            return Ok(AtmChild { process, addr });
                        }
                    }
                    // stdout closed: it is exiting (or closed stdout, which
                    // it never does); say how it ended.
                    Ok(Ok(None)) | Ok(Err(_)) => {
                        let out = process.communicate(None);
                        let ended = h.timeout(Duration::from_secs(5), out).await;
                        return match ended {
                            Ok(Ok(out)) => Err(ChildError::Exited {
                                status: out.status,
                                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                            }),
                            _ => Err(silent(&process, within)),
                        };
                    }
                    Err(_) => return Err(silent(&process, within)),
                }
            }
        }
    }

    /// Where the ATM listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The child process (signals, exit status, output not yet read).
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// `SIGTERM`, then `SIGKILL` after `grace`; resolves with the exit
    /// status once the child is reaped.
    pub fn stop(
        &self,
        grace: Duration,
    ) -> impl Future<Output = crate::Result<ExitStatus>> + 'static {
        self.process.stop(grace)
    }
}

/// Kill a child that did not say it listens, and describe it.
fn silent(process: &Process, within: Duration) -> ChildError {
    let _ = process.kill();
    let stderr = process.take_output(2).unwrap_or_default();
    ChildError::Silent {
        within,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}
