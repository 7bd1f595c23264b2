//! Child processes as transports: [`Handle::subprocess_exec`] and
//! [`Handle::subprocess_shell`] start a program and run a
//! [`SubprocessProtocol`] on its pipes and exit;
//! [`Handle::create_subprocess_exec`] gives a ready-made [`Process`] with
//! asyncio's `communicate()`.
//!
//! # Callbacks
//!
//! See [`SubprocessProtocol`] for the order: `connection_made` first,
//! `pipe_data_received` for stdout (fd 1) and stderr (fd 2),
//! `pipe_connection_lost` once per pipe, `process_exited` when the child is
//! reaped, and `process_ended(status)` exactly once, last, when the child
//! has exited *and* every pipe has closed.
//!
//! # A child that exits with its pipes still open
//!
//! If the child started a process of its own (`sh -c 'server &'`), that
//! process inherits the pipes and keeps them open after the child exits.
//! By default the transport waits, as asyncio does: `process_exited` comes
//! at the child's exit, the grandchild's output is still delivered, and
//! `process_ended` comes when the last pipe closes.
//! [`SubprocessOptions::close_pipes_after_exit`] bounds that wait: pipes
//! still open that long after the exit are closed with
//! `CloseReason::Timeout(TimeoutKind::PipeAfterExit)`, and
//! `process_ended` follows. [`SubprocessTransport::close`] closes them at
//! once.
//!
//! # Exit and reaping
//!
//! The exit is watched with a pidfd registered with the loop (Linux 5.3+),
//! or else by a thread per child that waits without reaping; the child is
//! reaped on the loop thread in both cases. There is no global `SIGCHLD`
//! handler, so any number of loops in one process (parallel tests) work.
//! Do not install one yourself, nor reap with `waitpid(-1)`: a child
//! reaped behind the loop's back is reported with exit status 255, as
//! asyncio does. Children are always reaped, even if every handle is
//! dropped or the loop is closed first (then a background thread does it).
//!
//! # Spawning
//!
//! Spawning (`fork`/`exec` through `std::process::Command`) happens on the
//! loop thread and returns at once with the transport; a program that
//! cannot be started is an [`Error::Io`] naming it (`io_kind()` tells
//! `NotFound` from `PermissionDenied`). All pipes are close-on-exec in the
//! parent, so children started at the same time by other loops never hold
//! each other's pipes open.

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::rc::Rc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::event_loop::Handle;
use crate::protocol::SubprocessProtocol;
use crate::transport::ProtocolHandle;
use crate::transport::pipe::{ReadPipe, WritePipe};

mod core;
mod process;
mod transport;
mod watch;

#[cfg(test)]
mod tests;

pub use process::Process;
pub use transport::SubprocessTransport;

use self::core::{Core, PipeProto, PipeRef};
use watch::WatchMode;

/// Where one of the child's standard streams goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stdio {
    /// A pipe to the loop: stdin becomes a write transport, stdout and
    /// stderr are delivered to `pipe_data_received`.
    Pipe,
    /// The parent's own stream.
    Inherit,
    /// `/dev/null`.
    Null,
    /// For stderr only: the same place as stdout (`2>&1`). With
    /// `stdout(Stdio::Pipe)` both arrive as fd 1, in the order written.
    Stdout,
}

/// How to start a child: its environment, working directory, and where
/// its standard streams go. All three streams are pipes by default (as
/// in asyncio's `loop.subprocess_exec`).
///
/// ```
/// use std::time::Duration;
/// use protoloop::{Stdio, SubprocessOptions};
///
/// let opts = SubprocessOptions::default()
///     .stdin(Stdio::Null)
///     .stderr(Stdio::Stdout)
///     .env("LANG", "C")
///     .current_dir("/")
///     .kill_on_drop(true)
///     .close_pipes_after_exit(Duration::from_secs(1));
/// # let _ = opts;
/// ```
#[derive(Clone)]
pub struct SubprocessOptions {
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
    env_clear: bool,
    env: Vec<(OsString, Option<OsString>)>,
    cwd: Option<PathBuf>,
    kill_on_drop: bool,
    pipe_grace: Option<Duration>,
    pub(crate) watch: WatchMode,
}

impl Default for SubprocessOptions {
    fn default() -> Self {
        SubprocessOptions {
            stdin: Stdio::Pipe,
            stdout: Stdio::Pipe,
            stderr: Stdio::Pipe,
            env_clear: false,
            env: Vec::new(),
            cwd: None,
            kill_on_drop: false,
            pipe_grace: None,
            watch: WatchMode::Auto,
        }
    }
}

impl fmt::Debug for SubprocessOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubprocessOptions")
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .field("env_clear", &self.env_clear)
            .field("env", &self.env)
            .field("cwd", &self.cwd)
            .field("kill_on_drop", &self.kill_on_drop)
            .field("close_pipes_after_exit", &self.pipe_grace)
            .finish()
    }
}

impl SubprocessOptions {
    /// Where the child's stdin comes from (default [`Stdio::Pipe`]).
    pub fn stdin(mut self, s: Stdio) -> Self {
        self.stdin = s;
        self
    }
    /// Where the child's stdout goes (default [`Stdio::Pipe`]).
    pub fn stdout(mut self, s: Stdio) -> Self {
        self.stdout = s;
        self
    }
    /// Where the child's stderr goes (default [`Stdio::Pipe`];
    /// [`Stdio::Stdout`] merges it into stdout).
    pub fn stderr(mut self, s: Stdio) -> Self {
        self.stderr = s;
        self
    }
    /// Set an environment variable for the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }
    /// Remove an environment variable for the child.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }
    /// Start from an empty environment (then add with [`env`](Self::env)).
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self.env.clear();
        self
    }
    /// Run the child in this directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }
    /// Kill the child (`SIGKILL`) when the last owner handle (the
    /// transport returned by `subprocess_exec`, or the [`Process`]) is
    /// dropped while it still runs. Default off, as in asyncio and tokio.
    pub fn kill_on_drop(mut self, on: bool) -> Self {
        self.kill_on_drop = on;
        self
    }
    /// Once the child has exited, close pipes still open after `grace`
    /// (held open by a process the child started), so that
    /// `process_ended` comes. Default: wait for them however long.
    pub fn close_pipes_after_exit(mut self, grace: Duration) -> Self {
        self.pipe_grace = Some(grace);
        self
    }
}

fn std_stdio(s: Stdio) -> Result<std::process::Stdio> {
    Ok(match s {
        Stdio::Pipe => std::process::Stdio::piped(),
        Stdio::Inherit => std::process::Stdio::inherit(),
        Stdio::Null => std::process::Stdio::null(),
        Stdio::Stdout => {
            return Err(Error::Unsupported(
                "Stdio::Stdout (merge into stdout) is only valid for stderr",
            ));
        }
    })
}

fn pipe_error(e: std::io::Error) -> Error {
    Error::io("creating a pipe for the child", e)
}

/// Set up `cmd`'s streams; returns the read end of the stdout pipe when
/// stderr is merged into it (std has no `2>&1`, so the pipe is ours).
fn configure_stdio(cmd: &mut Command, opts: &SubprocessOptions) -> Result<Option<OwnedFd>> {
    cmd.stdin(std_stdio(opts.stdin)?);
    if opts.stderr != Stdio::Stdout {
        cmd.stdout(std_stdio(opts.stdout)?);
        cmd.stderr(std_stdio(opts.stderr)?);
        return Ok(None);
    }
    match opts.stdout {
        Stdio::Pipe => {
            // Close-on-exec in the parent; the child gets them as 1 and 2.
            let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| pipe_error(e.into()))?;
            let w2 = w.try_clone().map_err(pipe_error)?;
            cmd.stdout(w2);
            cmd.stderr(w);
            Ok(Some(r))
        }
        Stdio::Inherit => {
            let out = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| Error::io("duplicating stdout for the child's stderr", e))?;
            cmd.stdout(std::process::Stdio::inherit());
            cmd.stderr(out);
            Ok(None)
        }
        Stdio::Null => {
            cmd.stdout(std::process::Stdio::null());
            cmd.stderr(std::process::Stdio::null());
            Ok(None)
        }
        Stdio::Stdout => Err(Error::Unsupported(
            "Stdio::Stdout (merge into stdout) is only valid for stderr",
        )),
    }
}

impl Handle {
    /// Start `program` with `args` and run the protocol made by `factory`
    /// on it (asyncio's `loop.subprocess_exec`). `program` is looked up in
    /// `PATH` if it has no `/`. Returns the owner transport and a handle
    /// to the protocol; `connection_made` has been called by then.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::process::ExitStatus;
    /// use std::rc::Rc;
    /// use protoloop::{EventLoop, SubprocessOptions, SubprocessProtocol};
    ///
    /// #[derive(Default)]
    /// struct Capture { out: Vec<u8>, done: Option<ExitStatus> }
    /// impl SubprocessProtocol for Capture {
    ///     fn pipe_data_received(&mut self, _fd: i32, data: &[u8]) {
    ///         self.out.extend_from_slice(data);
    ///     }
    ///     fn process_ended(&mut self, status: ExitStatus) {
    ///         self.done = Some(status);
    ///     }
    /// }
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let h = lp.handle();
    /// let (transport, proto) = h
    ///     .subprocess_exec(Capture::default, "echo", ["hello"], SubprocessOptions::default())
    ///     .unwrap();
    /// let status = lp.run_until_complete(transport.wait()).unwrap().unwrap();
    /// assert!(status.success());
    /// // process_ended may come a little after the exit: run until it does.
    /// lp.run_until_complete({
    ///     let h = h.clone();
    ///     let proto = proto.clone();
    ///     async move {
    ///         while proto.with(|p| p.done.is_none()) {
    ///             h.sleep(std::time::Duration::from_millis(1)).await;
    ///         }
    ///     }
    /// }).unwrap();
    /// assert_eq!(proto.with(|p| p.out.clone()), b"hello\n");
    /// ```
    pub fn subprocess_exec<P, F, I, S>(
        &self,
        factory: F,
        program: impl AsRef<OsStr>,
        args: I,
        opts: SubprocessOptions,
    ) -> Result<(SubprocessTransport, ProtocolHandle<P>)>
    where
        P: SubprocessProtocol,
        F: FnOnce() -> P,
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let mut cmd = Command::new(program);
        cmd.args(args);
        let name = format!("`{}`", program.to_string_lossy());
        spawn(self, factory, cmd, name, opts)
    }

    /// Run a shell command line with `/bin/sh -c` (asyncio's
    /// `loop.subprocess_shell`). Quoting is the caller's business.
    pub fn subprocess_shell<P, F>(
        &self,
        factory: F,
        command: impl AsRef<OsStr>,
        opts: SubprocessOptions,
    ) -> Result<(SubprocessTransport, ProtocolHandle<P>)>
    where
        P: SubprocessProtocol,
        F: FnOnce() -> P,
    {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(command.as_ref());
        let name = format!("`/bin/sh -c {:?}`", command.as_ref().to_string_lossy());
        spawn(self, factory, cmd, name, opts)
    }
}

fn spawn<P, F>(
    handle: &Handle,
    factory: F,
    mut cmd: Command,
    name: String,
    opts: SubprocessOptions,
) -> Result<(SubprocessTransport, ProtocolHandle<P>)>
where
    P: SubprocessProtocol,
    F: FnOnce() -> P,
{
    if handle.is_closed() {
        return Err(Error::LoopClosed);
    }
    let merged = configure_stdio(&mut cmd, &opts)?;
    // Made before the spawn, so a panicking factory leaves no child.
    let proto = Rc::new(RefCell::new(factory()));
    if opts.env_clear {
        cmd.env_clear();
    }
    for (k, v) in &opts.env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    if let Some(dir) = &opts.cwd {
        cmd.current_dir(dir);
    }
    let spawned = cmd.spawn();
    // The command holds the parent's copies of the child's ends (the
    // merged pipe's write end): drop them now, or EOF never comes.
    drop(cmd);
    let mut child = spawned.map_err(|e| {
        let context = match &opts.cwd {
            Some(dir) => format!("could not start {name} in {}", dir.display()),
            None => format!("could not start {name}"),
        };
        Error::io(context, e)
    })?;
    let stdin = child.stdin.take().map(OwnedFd::from);
    let stdout = child.stdout.take().map(OwnedFd::from).or(merged);
    let stderr = child.stderr.take().map(OwnedFd::from);
    let core = Core::new(handle, child, name, opts.kill_on_drop, opts.pipe_grace);

    // From here on a failure must not leave the child behind.
    let mut started: Vec<Box<dyn FnOnce()>> = Vec::new();
    let setup = (|| -> Result<()> {
        if let Some(fd) = stdin {
            let p = WritePipe::open(handle, fd, Rc::new(RefCell::new(PipeProto::new(0, &core))))?;
            core.add_pipe(0, PipeRef::Write(Rc::downgrade(&p)));
            started.push(Box::new(move || p.start()));
        }
        for (n, fd) in [(1, stdout), (2, stderr)] {
            if let Some(fd) = fd {
                let p =
                    ReadPipe::open(handle, fd, Rc::new(RefCell::new(PipeProto::new(n, &core))))?;
                core.add_pipe(n, PipeRef::Read(Rc::downgrade(&p)));
                started.push(Box::new(move || p.start()));
            }
        }
        watch::start(&core, opts.watch).map_err(|e| Error::io("watching the child for its exit", e))
    })();
    if let Err(e) = setup {
        drop(started);
        core.abandon();
        return Err(e);
    }
    core.set_protocol(proto.clone());
    // The pipes' own connection_made go to PipeProto, which ignores them.
    for s in started {
        s();
    }
    let t = SubprocessTransport::weak(&core);
    core.call("connection_made", |p| p.connection_made(t));
    Ok((
        SubprocessTransport::owner(&core),
        ProtocolHandle::new(proto),
    ))
}
