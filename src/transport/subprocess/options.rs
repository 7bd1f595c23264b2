//! [`SubprocessOptions`]: how a child is started (its streams,
//! environment, directory, session and process group, and what happens
//! when its owner goes), and how they are applied to a `Command`.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::watch::WatchMode;
use crate::error::{Error, Result};

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

/// How to start a child: its environment, working directory, where its
/// standard streams go, and its session and process group. All three
/// streams are pipes by default (as in asyncio's `loop.subprocess_exec`).
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
    pub(super) stdin: Stdio,
    pub(super) stdout: Stdio,
    pub(super) stderr: Stdio,
    pub(super) env_clear: bool,
    pub(super) env: Vec<(OsString, Option<OsString>)>,
    pub(super) cwd: Option<PathBuf>,
    pub(super) kill_on_drop: bool,
    pub(super) pipe_grace: Option<Duration>,
    pub(super) new_session: bool,
    pub(super) process_group: Option<u32>,
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
            new_session: false,
            process_group: None,
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
            .field("start_new_session", &self.new_session)
            .field("process_group", &self.process_group)
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
    /// transport returned by `subprocess_exec`, or the [`Process`](super::Process)) is
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
    /// Run the child in a new session (`setsid` in the child before it
    /// runs the program; asyncio's `start_new_session=True`). It leads
    /// the new session and a new process group whose id is its pid, and
    /// has no controlling terminal: a Ctrl-C or hang-up at the parent's
    /// terminal does not reach it. Default off.
    ///
    /// Cannot be combined with [`process_group`](Self::process_group)
    /// (a session leader cannot change its group): starting fails with
    /// [`Error::Unsupported`].
    ///
    /// ```
    /// use protoloop::{EventLoop, SubprocessOptions};
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let opts = SubprocessOptions::default().start_new_session(true);
    /// // `ps -o sid= -p $$` would show the shell's pid as its session id.
    /// let p = lp.handle().create_subprocess_shell("echo $$", opts).unwrap();
    /// let pid = p.pid();
    /// let out = lp.run_until_complete(async move { p.communicate(None).await })
    ///     .unwrap()
    ///     .unwrap();
    /// assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), pid.to_string());
    /// ```
    pub fn start_new_session(mut self, on: bool) -> Self {
        self.new_session = on;
        self
    }
    /// Put the child in process group `pgid` (`setpgid(0, pgid)` in the
    /// child; asyncio's `process_group=`, Python 3.11+): 0 makes a new
    /// group whose id is the child's pid, any other value joins that
    /// existing group, which must be in the parent's session (for
    /// example the group of a child started earlier with
    /// `process_group(0)`, whose id is that child's
    /// [`pid`](super::SubprocessTransport::pid)). Starting fails with an
    /// [`Error::Io`] (`PermissionDenied`) if there is no such group in
    /// this session. Default: the parent's group.
    ///
    /// ```
    /// use std::time::Duration;
    /// use protoloop::{EventLoop, SubprocessOptions};
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let opts = SubprocessOptions::default().process_group(0);
    /// let p = lp.handle().create_subprocess_shell("sleep 30 & wait", opts).unwrap();
    /// // SIGTERM to the shell *and* its `sleep`: it ends at once.
    /// p.transport().send_signal_to_group(15).unwrap();
    /// let status = lp.run_until_complete(async move { p.wait().await }).unwrap().unwrap();
    /// assert!(!status.success());
    /// ```
    pub fn process_group(mut self, pgid: u32) -> Self {
        self.process_group = Some(pgid);
        self
    }
}

/// Set up the child's session and process group, as asked.
pub(super) fn configure_session(cmd: &mut Command, opts: &SubprocessOptions) -> Result<()> {
    use std::os::unix::process::CommandExt;
    if opts.new_session && opts.process_group.is_some() {
        return Err(Error::Unsupported(
            "start_new_session and process_group together: a session leader cannot change its \
             process group (asyncio's setpgid would fail in the child)",
        ));
    }
    if let Some(pgid) = opts.process_group {
        let pgid = i32::try_from(pgid).map_err(|_| {
            Error::io(
                format!("process_group({pgid})"),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a valid process group id",
                ),
            )
        })?;
        cmd.process_group(pgid);
    }
    if opts.new_session {
        // SAFETY: the closure runs in the child between fork and exec,
        // where only async-signal-safe calls are allowed. It makes one
        // system call (setsid, async-signal-safe in POSIX) and builds its
        // error with `io::Error::from_raw_os_error`, which does not
        // allocate; it touches no lock or memory shared with the parent.
        unsafe {
            cmd.pre_exec(|| match rustix::process::setsid() {
                Ok(_) => Ok(()),
                Err(e) => Err(e.into()),
            });
        }
    }
    Ok(())
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
pub(super) fn configure_stdio(
    cmd: &mut Command,
    opts: &SubprocessOptions,
) -> Result<Option<OwnedFd>> {
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
