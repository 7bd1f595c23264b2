//! The servers under test and how to start each: the Rust ones are this
//! binary again (`--serve KIND`), the Python ones `bench/python/echo_server.py`
//! under a virtual environment that this program makes itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
    /// Why a Python peer is skipped, for the report.
    pub notes: Vec<String>,
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn python_script() -> PathBuf {
    manifest_dir().join("bench/python/echo_server.py")
}

/// Find `python3`, make `target/bench-venv` with uvloop in it unless it is
/// there already, and say plainly what is skipped and why.
pub fn setup_python(want_asyncio: bool, want_uvloop: bool) -> Python {
    let mut py = Python::default();
    if !want_asyncio && !want_uvloop {
        return py;
    }
    let system = PathBuf::from("python3");
    if !runs(Command::new(&system).args(["-c", "import asyncio"])) {
        py.notes
            .push("python3 not found: the asyncio and uvloop servers are skipped".into());
        return py;
    }
    if want_asyncio {
        py.asyncio = Some(system.clone());
    }
    if !want_uvloop {
        return py;
    }
    let venv = manifest_dir().join("target/bench-venv");
    let vpy = venv.join("bin/python");
    if !vpy.exists() {
        eprintln!("bench: making a Python venv in {}", venv.display());
        if !runs(Command::new(&system).arg("-m").arg("venv").arg(&venv)) {
            py.notes.push(format!(
                "`python3 -m venv {}` failed (is python3-venv installed?): uvloop is skipped",
                venv.display()
            ));
            return py;
        }
    }
    if !runs(Command::new(&vpy).args(["-c", "import uvloop"])) {
        eprintln!("bench: pip-installing uvloop into {}", venv.display());
        let ok = runs(Command::new(&vpy).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "uvloop",
        ]));
        if !ok || !runs(Command::new(&vpy).args(["-c", "import uvloop"])) {
            py.notes.push(
                "pip could not install uvloop (no network to PyPI?): uvloop is skipped".into(),
            );
            return py;
        }
    }
    // The same interpreter for both Python peers, so only the loop differs.
    if want_asyncio {
        py.asyncio = Some(vpy.clone());
    }
    py.uvloop = Some(vpy);
    py
}

fn runs(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The command that starts `peer` (its echo server, or with `rpc` its
/// request/reply server) listening on a free loopback port, or `None` if
/// the peer is unavailable.
pub fn server_command(peer: Peer, py: &Python, rpc: bool) -> Option<Command> {
    let listen = ["--listen", "127.0.0.1:0"];
    if peer.is_python() {
        if rpc {
            return None; // no protobuf server in Python yet
        }
        let interp = match peer {
            Peer::Asyncio => py.asyncio.as_ref()?,
            _ => py.uvloop.as_ref()?,
        };
        let mut c = Command::new(interp);
        c.arg(python_script())
            .args(["--loop", peer.name()])
            .args(listen);
        Some(c)
    } else {
        let exe = std::env::current_exe().ok()?;
        let mut c = Command::new(exe);
        c.args(["--serve", peer.name()]).args(listen);
        if rpc {
            c.args(["--app", "rpc"]);
        }
        Some(c)
    }
}
