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
//! # Closing the loop
//!
//! A child still running when its loop is closed is left running, as
//! asyncio leaves it (with a `ResourceWarning`), but nothing of it is kept
//! open: its pipes are closed with the loop, like any pipe (see
//! [`pipe`](crate::transport::pipe)), so it reads EOF on its stdin and
//! writing to its stdout or stderr gets it `SIGPIPE` or `EPIPE`, even if
//! the protocol kept a pipe's transport. No callback comes any more; the
//! protocol is dropped with the process state once no owner handle is
//! left, and then the child is killed if it was started with
//! [`SubprocessOptions::kill_on_drop`] and reaped by a background thread
//! when it exits.
//!
//! # Spawning
//!
//! Spawning (`fork`/`exec` through `std::process::Command`) happens on the
//! loop thread and returns at once with the transport; a program that
//! cannot be started is an [`Error::Io`] naming it (`io_kind()` tells
//! `NotFound` from `PermissionDenied`). All pipes are close-on-exec in the
//! parent, so children started at the same time by other loops never hold
//! each other's pipes open.
//!
//! # Sessions and process groups
//!
//! By default the child joins the parent's process group and session, so
//! a Ctrl-C at the terminal reaches it too. As with asyncio's
//! `create_subprocess_exec(..., start_new_session=True)` and
//! `process_group=0` (Python 3.11+),
//! [`SubprocessOptions::start_new_session`] runs it in a session of its
//! own (`setsid`) and [`SubprocessOptions::process_group`] puts it in a
//! process group (0: a new group whose id is the child's pid). Either way
//! the child leads its own group, and
//! [`SubprocessTransport::send_signal_to_group`] signals it together with
//! every process it started (asyncio's
//! `os.killpg(os.getpgid(p.pid), sig)`): the way to stop a shell and its
//! background jobs at once.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::process::Command;
use std::rc::Rc;

use crate::error::{Error, Result};
use crate::event_loop::Handle;
use crate::protocol::SubprocessProtocol;
use crate::transport::ProtocolHandle;
use crate::transport::pipe::{PipeTransport, ReadPipe, WritePipe};

mod core;
mod options;
mod process;
mod transport;
mod watch;

#[cfg(test)]
mod tests;

pub use options::{Stdio, SubprocessOptions};
pub use process::Process;
pub use transport::SubprocessTransport;

use self::core::{Core, PipeProto, PipeRef};
use options::{configure_session, configure_stdio};

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
    configure_session(&mut cmd, &opts)?;
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
        let mut context = format!("could not start {name}");
        if let Some(dir) = &opts.cwd {
            context += &format!(" in {}", dir.display());
        }
        // setpgid and setsid fail in the child, and say only EPERM.
        if let Some(pgid) = opts.process_group {
            context += &format!(" in process group {pgid}");
        }
        if opts.new_session {
            context += " in a new session";
        }
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
