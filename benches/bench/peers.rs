//! The servers under test and how to start each: the Rust ones are this
//! binary again (`--serve KIND`), the Python ones `bench/python/echo_server.py`
//! under a virtual environment that this program makes itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::servers_more::TlsFiles;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    Protoloop,
    Tokio,
    Mio,
    Asyncio,
    Uvloop,
}

impl Peer {
    pub const ALL: [Peer; 5] = [
        Peer::Protoloop,
        Peer::Tokio,
        Peer::Mio,
        Peer::Asyncio,
        Peer::Uvloop,
    ];

    pub fn parse(s: &str) -> Result<Peer, String> {
        Peer::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!("unknown peer {s:?}: expected protoloop, tokio, mio, asyncio or uvloop")
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            Peer::Protoloop => "protoloop",
            Peer::Tokio => "tokio",
            Peer::Mio => "mio",
            Peer::Asyncio => "asyncio",
            Peer::Uvloop => "uvloop",
        }
    }

    /// How the table and chart name it.
    pub fn label(self) -> &'static str {
        match self {
            Peer::Protoloop => "protoloop",
            Peer::Tokio => "tokio current_thread",
            Peer::Mio => "raw mio",
            Peer::Asyncio => "asyncio",
            Peer::Uvloop => "uvloop",
        }
    }

    pub fn is_python(self) -> bool {
        matches!(self, Peer::Asyncio | Peer::Uvloop)
    }
}

/// The Python interpreters found (or set up) for this run.
#[derive(Debug, Default)]
pub struct Python {
    /// Runs the asyncio server; `None` skips it.
    pub asyncio: Option<PathBuf>,
    /// Runs the uvloop server (the venv's python); `None` skips it.
    pub uvloop: Option<PathBuf>,
    /// Whether those interpreters have the `protobuf` package, which the
    /// request/reply server needs; without it they sit those workloads out.
    pub protobuf: bool,
    /// Why a Python peer is skipped, for the report.
    pub notes: Vec<String>,
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn python_script() -> PathBuf {
    manifest_dir().join("bench/python/echo_server.py")
}

pub fn python_rpc_script() -> PathBuf {
    manifest_dir().join("bench/python/rpc_server.py")
}

/// How long each set-up step may take. pip gets its own socket timeout
/// and no retries as well, so an unreachable PyPI fails in seconds; the
/// wall-clock limit catches everything else (a proxy that accepts and
/// stalls, a slow disk), so that a fresh machine without network can
/// never hang the run, `--quick` in CI least of all.
#[derive(Debug, Clone, Copy)]
pub struct SetupLimits {
    pub venv: Duration,
    pub pip: Duration,
}

impl SetupLimits {
    pub fn new(quick: bool) -> SetupLimits {
        if quick {
            // Two pip steps at most: the smoke run stays under a minute.
            SetupLimits {
                venv: Duration::from_secs(20),
                pip: Duration::from_secs(10),
            }
        } else {
            SetupLimits {
                venv: Duration::from_secs(60),
                pip: Duration::from_secs(120),
            }
        }
    }
}

/// Find `python3`, make `target/bench-venv` with uvloop and protobuf in it
/// unless they are there already, and say plainly what is skipped and why.
pub fn setup_python(want_asyncio: bool, want_uvloop: bool, limits: SetupLimits) -> Python {
    let mut py = Python::default();
    if !want_asyncio && !want_uvloop {
        return py;
    }
    let system = PathBuf::from("python3");
    let short = Duration::from_secs(10);
    if let Err(e) = run_within(Command::new(&system).args(["-c", "import asyncio"]), short) {
        py.notes.push(format!(
            "python3 is not usable ({e}): the asyncio and uvloop servers are skipped"
        ));
        return py;
    }
    if want_asyncio {
        py.asyncio = Some(system.clone());
        // Outside the venv only a system-wide protobuf would do.
        py.protobuf = run_within(
            quiet(Command::new(&system).args(["-c", PROTOBUF_CHECK])),
            short,
        )
        .is_ok();
    }
    let venv = manifest_dir().join("target/bench-venv");
    let vpy = venv.join("bin/python");
    if !vpy.exists() {
        eprintln!("bench: making a Python venv in {}", venv.display());
        let made = run_within(
            Command::new(&system).arg("-m").arg("venv").arg(&venv),
            limits.venv,
        );
        if let Err(e) = made {
            // A half-made venv would be taken for a good one next time.
            let _ = std::fs::remove_dir_all(&venv);
            py.notes.push(format!(
                "`python3 -m venv {}` failed ({e}; is python3-venv installed?): uvloop is \
                 skipped, asyncio runs on the system python3",
                venv.display()
            ));
            return py;
        }
    }
    let uvloop = pip_ensure(&vpy, "uvloop", "import uvloop", limits.pip);
    let protobuf = pip_ensure(&vpy, "protobuf", PROTOBUF_CHECK, limits.pip);
    if let Err(e) = &protobuf {
        py.notes.push(format!(
            "{e}: asyncio and uvloop sit the protobuf workloads out"
        ));
    }
    match uvloop {
        Ok(()) if want_uvloop => py.uvloop = Some(vpy.clone()),
        Ok(()) => {}
        Err(e) => py.notes.push(format!("{e}: uvloop is skipped")),
    }
    // The same interpreter for both Python peers, so only the loop differs;
    // the venv's if it has what the system one lacks.
    if want_asyncio && (protobuf.is_ok() || py.uvloop.is_some()) {
        py.asyncio = Some(vpy);
    }
    py.protobuf = if py.asyncio.as_deref() == Some(system.as_path()) {
        py.protobuf
    } else {
        protobuf.is_ok()
    };
    py
}

/// The protobuf runtime the request/reply server needs (4.21 or later:
/// `message_factory.GetMessageClass`).
const PROTOBUF_CHECK: &str = "from google.protobuf import message_factory; \
                              message_factory.GetMessageClass";

/// Make `check` pass in the venv of `vpy`, pip-installing `package` if it
/// does not yet.
fn pip_ensure(vpy: &Path, package: &str, check: &str, limit: Duration) -> Result<(), String> {
    let short = Duration::from_secs(10);
    // Not there yet is the expected answer on a fresh venv: no traceback.
    if run_within(quiet(Command::new(vpy).args(["-c", check])), short).is_ok() {
        return Ok(());
    }
    eprintln!(
        "bench: pip-installing {package} into the venv (at most {} s)",
        limit.as_secs()
    );
    run_within(
        Command::new(vpy).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--timeout",
            "5",
            "--retries",
            "0",
            package,
        ]),
        limit,
    )
    .and_then(|()| run_within(Command::new(vpy).args(["-c", check]), short))
    .map_err(|e| format!("pip could not install {package} ({e}; no network to PyPI?)"))
}

/// `cmd` with its stderr thrown away (for "is it installed?" checks).
fn quiet(cmd: &mut Command) -> &mut Command {
    cmd.stderr(Stdio::null())
}

/// Run `cmd` to completion, killing it after `limit`; its output goes to
/// our stderr unless `cmd` says otherwise (pip says why it failed there).
fn run_within(cmd: &mut Command, limit: Duration) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start it: {e}"))?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return Ok(()),
            Ok(Some(s)) => return Err(s.to_string()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {} s", limit.as_secs()));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The command that starts `peer`'s server for `app` (`echo`, `rpc`,
/// `tls`, `udp`, `pipe`) listening on a free loopback port, or `None` if
/// the peer has none.
pub fn server_command(
    peer: Peer,
    py: &Python,
    app: &str,
    tls: Option<&TlsFiles>,
) -> Option<Command> {
    let listen = ["--listen", "127.0.0.1:0"];
    let tls_args = |c: &mut Command, flags: [&str; 2]| {
        if app == "tls"
            && let Some(t) = tls
        {
            c.arg(flags[0]).arg(&t.cert).arg(flags[1]).arg(&t.key);
        }
    };
    if peer.is_python() {
        if app == "rpc" && !py.protobuf {
            return None;
        }
        let interp = match peer {
            Peer::Asyncio => py.asyncio.as_ref()?,
            _ => py.uvloop.as_ref()?,
        };
        let mut c = Command::new(interp);
        c.arg(if app == "rpc" {
            python_rpc_script()
        } else {
            python_script()
        })
        .args(["--loop", peer.name()])
        .args(listen);
        match app {
            "udp" => {
                c.arg("--udp");
            }
            "pipe" => {
                c.arg("--pipe");
            }
            _ => tls_args(&mut c, ["--cert", "--key"]),
        }
        Some(c)
    } else {
        let exe = std::env::current_exe().ok()?;
        let mut c = Command::new(exe);
        c.args(["--serve", peer.name()]).args(listen);
        c.args(["--app", app]);
        tls_args(&mut c, ["--cert", "--key"]);
        Some(c)
    }
}
