//! Subprocess transport: real children (`cat`, `sh`, `sleep`), every wait
//! bounded by a deadline, every protocol under the lifecycle checker.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::Duration;

use protoloop::testing::Checked;
use protoloop::{
    CloseReason, Error, EventLoop, ExceptionKind, Handle, SettableFuture, Stdio, SubprocessOptions,
    SubprocessProtocol, SubprocessTransport, TimeoutKind,
};

mod common;

use common::lifecycle::{checked, run};

#[path = "subprocess/faults.rs"]
mod faults;
#[path = "subprocess/flow.rs"]
mod flow;
#[path = "subprocess/groups.rs"]
mod groups;
#[path = "subprocess/lifecycle.rs"]
mod lifecycle;
#[path = "subprocess/process.rs"]
mod process;

/// The bound on each test body.
const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Made,
    Data(i32, Vec<u8>),
    Lost(i32, String),
    Pause,
    Resume,
    Exited,
    Ended(ExitStatus),
}

/// Records every callback; resolves `ended` at process_ended.
struct Rec {
    log: Rc<RefCell<Vec<Ev>>>,
    ended: SettableFuture<ExitStatus>,
    transport: Option<SubprocessTransport>,
    keep_transport: bool,
}

impl Rec {
    /// A recorder under this test's lifecycle checker.
    fn new(
        h: &Handle,
    ) -> (
        Checked<Rec>,
        Rc<RefCell<Vec<Ev>>>,
        SettableFuture<ExitStatus>,
    ) {
        let log = Rc::new(RefCell::new(Vec::new()));
        let ended = h.create_future();
        let rec = Rec {
            log: log.clone(),
            ended: ended.clone(),
            transport: None,
            keep_transport: true,
        };
        (checked(rec), log, ended)
    }
}

/// A child started under a fresh [`Rec`]: its transport, the callback log,
/// and the future `process_ended` resolves. (The protocol handle is
/// dropped at once, as every test using these did.)
type Recorded = (
    SubprocessTransport,
    Rc<RefCell<Vec<Ev>>>,
    SettableFuture<ExitStatus>,
);

/// `sh -c command` under a fresh recorder.
fn shell(h: &Handle, command: impl AsRef<OsStr>, opts: SubprocessOptions) -> Recorded {
    let (rec, log, ended) = Rec::new(h);
    let (t, _) = h.subprocess_shell(move || rec, command, opts).unwrap();
    (t, log, ended)
}

/// `program args...` under a fresh recorder.
fn exec<S: AsRef<OsStr>>(
    h: &Handle,
    program: &str,
    args: impl IntoIterator<Item = S>,
    opts: SubprocessOptions,
) -> Recorded {
    let (rec, log, ended) = Rec::new(h);
    let (t, _) = h.subprocess_exec(move || rec, program, args, opts).unwrap();
    (t, log, ended)
}

impl SubprocessProtocol for Rec {
    fn connection_made(&mut self, t: SubprocessTransport) {
        self.log.borrow_mut().push(Ev::Made);
        if self.keep_transport {
            self.transport = Some(t);
        }
    }
    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        let mut log = self.log.borrow_mut();
        // Merge consecutive chunks of one fd to keep logs small.
        if let Some(Ev::Data(f, d)) = log.last_mut()
            && *f == fd
        {
            d.extend_from_slice(data);
            return;
        }
        log.push(Ev::Data(fd, data.to_vec()));
    }
    fn pipe_connection_lost(&mut self, fd: i32, reason: CloseReason) {
        self.log
            .borrow_mut()
            .push(Ev::Lost(fd, format!("{reason:?}")));
    }
    fn pause_writing(&mut self) {
        self.log.borrow_mut().push(Ev::Pause);
    }
    fn resume_writing(&mut self) {
        self.log.borrow_mut().push(Ev::Resume);
    }
    fn process_exited(&mut self) {
        self.log.borrow_mut().push(Ev::Exited);
    }
    fn process_ended(&mut self, status: ExitStatus) {
        self.log.borrow_mut().push(Ev::Ended(status));
        self.ended.set_result(status).unwrap();
    }
}

fn data_of(log: &[Ev], fd: i32) -> Vec<u8> {
    let mut v = Vec::new();
    for e in log {
        if let Ev::Data(f, d) = e
            && *f == fd
        {
            v.extend_from_slice(d);
        }
    }
    v
}

/// Where `process_exited` and pipe `fd`'s `pipe_connection_lost` stand in
/// `log` (each must be there), to check which came first.
fn exited_and_lost(log: &[Ev], fd: i32) -> (usize, usize) {
    let exited = log.iter().position(|e| *e == Ev::Exited).unwrap();
    let lost = log
        .iter()
        .position(|e| matches!(e, Ev::Lost(f, _) if *f == fd))
        .unwrap();
    (exited, lost)
}

/// The ordering contract, checked on any log.
fn check_order(log: &[Ev], piped: &[i32]) {
    assert_eq!(
        log.first(),
        Some(&Ev::Made),
        "connection_made first: {log:?}"
    );
    assert!(
        matches!(log.last(), Some(Ev::Ended(_))),
        "process_ended last: {log:?}"
    );
    let count = |p: &dyn Fn(&Ev) -> bool| log.iter().filter(|e| p(e)).count();
    assert_eq!(count(&|e| matches!(e, Ev::Made)), 1);
    assert_eq!(count(&|e| matches!(e, Ev::Exited)), 1);
    assert_eq!(count(&|e| matches!(e, Ev::Ended(_))), 1);
    for &fd in piped {
        let lost = log
            .iter()
            .position(|e| matches!(e, Ev::Lost(f, _) if *f == fd))
            .unwrap_or_else(|| panic!("no pipe_connection_lost({fd}): {log:?}"));
        assert_eq!(count(&|e| matches!(e, Ev::Lost(f, _) if *f == fd)), 1);
        let last_data = log
            .iter()
            .rposition(|e| matches!(e, Ev::Data(f, _) if *f == fd));
        if let Some(d) = last_data {
            assert!(d < lost, "data after pipe_connection_lost({fd}): {log:?}");
        }
    }
    let pauses = count(&|e| matches!(e, Ev::Pause));
    let resumes = count(&|e| matches!(e, Ev::Resume));
    assert!(
        pauses == resumes || pauses == resumes + 1,
        "{pauses} pauses, {resumes} resumes"
    );
}

/// Run the loop for `d` (output and pipe events get in).
fn settle(lp: &EventLoop, d: Duration) {
    let h = lp.handle();
    run(lp, DEADLINE, async move { h.sleep(d).await });
}

fn proc_gone(pid: u32) -> bool {
    // After reaping, the pid no longer exists (not even as a zombie).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            assert!(!state.starts_with('Z'), "process {pid} is a zombie");
            false
        }
    }
}

#[test]
fn exit_codes_are_reported() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    for code in [0, 1, 3, 42, 255] {
        let (t, log, ended) = shell(&h, format!("exit {code}"), SubprocessOptions::default());
        let st = run(&lp, DEADLINE, ended).unwrap();
        assert_eq!(st.code(), Some(code));
        assert_eq!(st.success(), code == 0);
        assert_eq!(run(&lp, DEADLINE, t.wait()).unwrap(), st);
        check_order(&log.borrow(), &[0, 1, 2]);
    }
}

#[test]
fn a_signal_is_reported_as_the_signal() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    // SIGUSR1, not SIGINT, for `send_signal`: a child inherits an ignored
    // SIGINT (any command started in the background by a shell has one),
    // and then `sleep` would outlive the test.
    for (sig, how) in [(9, "kill"), (15, "terminate"), (10, "send_signal")] {
        let (t, log, ended) = exec(&h, "sleep", ["30"], SubprocessOptions::default());
        assert!(t.returncode().is_none());
        match how {
            "kill" => t.kill().unwrap(),
            "terminate" => t.terminate().unwrap(),
            _ => t.send_signal(sig).unwrap(),
        }
        let st = run(&lp, DEADLINE, t.wait()).unwrap();
        assert_eq!(st.signal(), Some(sig));
        assert_eq!(st.code(), None);
        assert_eq!(run(&lp, DEADLINE, ended).unwrap(), st);
        check_order(&log.borrow(), &[0, 1, 2]);
        // Signalling a reaped child is a no-op, never a stray signal.
        t.kill().unwrap();
        assert!(proc_gone(t.pid()));
    }
}

#[test]
fn bad_signal_number_is_an_error() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (t, _, _) = exec(&h, "sleep", ["30"], SubprocessOptions::default());
    let e = t.send_signal(12345).unwrap_err();
    assert_eq!(e.io_kind(), Some(std::io::ErrorKind::InvalidInput));
    assert!(e.to_string().contains("12345"), "{e}");
    assert!(t.returncode().is_none(), "the child is untouched");
    let st = run(&lp, DEADLINE, t.stop(Duration::from_secs(5))).unwrap();
    assert_eq!(st.signal(), Some(15));
}

#[test]
fn a_program_that_cannot_start_is_a_clear_error() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let made = Rc::new(RefCell::new(0));
    let m = made.clone();
    let e = h
        .subprocess_exec(
            move || {
                *m.borrow_mut() += 1;
                Rec::new(
                    &Handle::try_current().unwrap_or_else(|| EventLoop::new().unwrap().handle()),
                )
                .0
            },
            "no-such-program-protoloop",
            ["x"],
            SubprocessOptions::default(),
        )
        .unwrap_err();
    assert_eq!(e.io_kind(), Some(std::io::ErrorKind::NotFound));
    assert!(e.to_string().contains("no-such-program-protoloop"), "{e}");
    assert_eq!(lp.handle().stats().sources, 0, "nothing left registered");

    let e = h
        .create_subprocess_exec("/etc/passwd", ["x"], SubprocessOptions::default())
        .unwrap_err();
    assert_eq!(e.io_kind(), Some(std::io::ErrorKind::PermissionDenied));
    assert!(e.to_string().contains("/etc/passwd"), "{e}");

    let e = h
        .create_subprocess_exec(
            "true",
            std::iter::empty::<&str>(),
            SubprocessOptions::default().current_dir("/no/such/dir"),
        )
        .unwrap_err();
    assert!(e.to_string().contains("/no/such/dir"), "{e}");

    let e = h
        .create_subprocess_exec(
            "true",
            std::iter::empty::<&str>(),
            SubprocessOptions::default().stdin(Stdio::Stdout),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    assert_eq!(lp.handle().stats().sources, 0);
}

#[test]
fn callback_order_with_output_on_both_pipes() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    for _ in 0..20 {
        let (_, log, ended) = shell(
            &h,
            "echo out; echo err >&2; echo more",
            SubprocessOptions::default(),
        );
        let st = run(&lp, DEADLINE, ended).unwrap();
        assert!(st.success());
        let log = log.borrow();
        check_order(&log, &[0, 1, 2]);
        assert_eq!(data_of(&log, 1), b"out\nmore\n");
        assert_eq!(data_of(&log, 2), b"err\n");
    }
}

#[test]
fn pipes_closed_before_the_exit_still_end_with_process_ended() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_, log, ended) = shell(
        &h,
        "echo bye; exec <&- >&- 2>&-; sleep 0.2; exit 5",
        SubprocessOptions::default(),
    );
    let st = run(&lp, DEADLINE, ended).unwrap();
    assert_eq!(st.code(), Some(5));
    let log = log.borrow();
    check_order(&log, &[0, 1, 2]);
    for fd in 0..3 {
        let (exited, lost) = exited_and_lost(&log, fd);
        assert!(lost < exited, "pipe {fd} closed before the exit: {log:?}");
    }
    assert_eq!(data_of(&log, 1), b"bye\n");
}

#[test]
fn spawning_on_a_closed_loop_is_an_error() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    lp.close().unwrap();
    let e = h
        .create_subprocess_exec(
            "true",
            std::iter::empty::<&str>(),
            SubprocessOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::LoopClosed), "{e}");
}

#[test]
fn closing_stdin_ends_cat() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (t, log, ended) = exec(
        &h,
        "cat",
        std::iter::empty::<&str>(),
        SubprocessOptions::default(),
    );
    let stdin = t.get_pipe_transport(0).unwrap();
    stdin.write(b"abc").unwrap();
    settle(&lp, Duration::from_millis(50));
    assert!(t.returncode().is_none(), "cat waits for more input");
    stdin.close();
    assert!(matches!(stdin.write(b"x"), Err(Error::Closed)));
    let st = run(&lp, DEADLINE, ended).unwrap();
    assert!(st.success());
    let log = log.borrow();
    check_order(&log, &[0, 1, 2]);
    assert_eq!(data_of(&log, 1), b"abc");
    assert!(log.contains(&Ev::Lost(0, "LocalClose".into())));
    drop(stdin);
    assert!(t.get_pipe_transport(0).is_none(), "the pipe is gone");
}

#[test]
fn stderr_merged_into_stdout() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (t, log, ended) = shell(
        &h,
        "echo out; echo err >&2; echo end",
        SubprocessOptions::default().stderr(Stdio::Stdout),
    );
    assert!(t.get_pipe_transport(2).is_none());
    run(&lp, DEADLINE, ended).unwrap();
    let log = log.borrow();
    check_order(&log, &[0, 1]);
    assert_eq!(data_of(&log, 1), b"out\nerr\nend\n");
    assert!(data_of(&log, 2).is_empty());
}

/// Panics on the first output.
struct Panicky(Checked<Rec>);

impl SubprocessProtocol for Panicky {
    fn connection_made(&mut self, t: SubprocessTransport) {
        self.0.connection_made(t);
    }
    fn pipe_data_received(&mut self, _fd: i32, _data: &[u8]) {
        panic!("boom in pipe_data_received");
    }
    fn pipe_connection_lost(&mut self, fd: i32, reason: CloseReason) {
        self.0.pipe_connection_lost(fd, reason);
    }
    fn process_exited(&mut self) {
        self.0.process_exited();
    }
    fn process_ended(&mut self, status: ExitStatus) {
        self.0.process_ended(status);
    }
}

#[test]
fn a_panicking_protocol_kills_the_child_and_still_ends() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    h.set_exception_handler(move |ctx| s.borrow_mut().push((ctx.kind, ctx.message.clone())));
    let (rec, log, ended) = Rec::new(&h);
    h.subprocess_shell(
        move || Panicky(rec),
        "echo hi; exec sleep 30",
        SubprocessOptions::default(),
    )
    .unwrap();
    let st = run(&lp, DEADLINE, ended).unwrap();
    assert_eq!(st.signal(), Some(9), "the child was killed");
    check_order(&log.borrow(), &[0, 1, 2]);
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, ExceptionKind::ProtocolPanic);
    assert!(
        seen[0].1.contains("boom in pipe_data_received"),
        "{}",
        seen[0].1
    );
}

#[test]
fn stdout_can_be_paused_through_its_pipe_transport() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (t, log, ended) = shell(&h, "echo hi", SubprocessOptions::default());
    let out = t.get_pipe_transport(1).unwrap();
    out.pause_reading();
    assert!(!out.is_reading());
    settle(&lp, Duration::from_millis(100));
    assert!(
        data_of(&log.borrow(), 1).is_empty(),
        "nothing read while paused"
    );
    out.resume_reading();
    run(&lp, DEADLINE, ended).unwrap();
    assert_eq!(data_of(&log.borrow(), 1), b"hi\n");
}

/// The child side of the next test: a grandchild with stdout and stderr
/// inherited writes into this process's own streams; no pipe is made.
fn inherit_child() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (t, log, ended) = shell(
        &h,
        "echo inherited-out; echo inherited-err >&2",
        SubprocessOptions::default()
            .stdin(Stdio::Null)
            .stdout(Stdio::Inherit)
            .stderr(Stdio::Inherit),
    );
    assert!(t.get_pipe_transport(0).is_none());
    assert!(t.get_pipe_transport(1).is_none());
    assert!(t.get_pipe_transport(2).is_none());
    let status = run(&lp, DEADLINE, ended).unwrap();
    assert!(status.success());
    assert!(
        !log.borrow().iter().any(|e| matches!(e, Ev::Data(..))),
        "nothing came through a pipe: {:?}",
        log.borrow()
    );
}

#[test]
fn inherited_streams_are_the_parents_own() {
    if std::env::var_os("PROTOLOOP_INHERIT_CHILD").is_some() {
        inherit_child();
        return;
    }
    // This test binary again, with its stdout and stderr captured: what
    // the grandchild wrote must be there.
    let out = common::this_test_in_a_child(
        "inherited_streams_are_the_parents_own",
        "PROTOLOOP_INHERIT_CHILD",
        "1",
    )
    .output()
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("inherited-out\n"), "stdout: {stdout}");
    assert!(stderr.contains("inherited-err\n"), "stderr: {stderr}");
    assert!(!stdout.contains("inherited-err"), "stdout: {stdout}");
}
