//! Killing, dropping, closing and reaping; grandchildren holding pipes;
//! many children at once.

use super::*;

#[test]
fn fifty_children_at_once() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let mut procs = Vec::new();
    for i in 0..50 {
        let p = h
            .create_subprocess_exec(
                "sh",
                [
                    "-c",
                    "echo child-$1; echo err-$1 >&2; exit $(( $1 % 7 ))",
                    "sh",
                    &i.to_string(),
                ],
                SubprocessOptions::default(),
            )
            .unwrap();
        procs.push(p);
    }
    let pids: Vec<u32> = procs.iter().map(|p| p.pid()).collect();
    let h2 = h.clone();
    let outs = run(&lp, DEADLINE, async move {
        let tasks: Vec<_> = procs
            .into_iter()
            .map(|p| h2.spawn(async move { p.communicate(None).await }))
            .collect();
        let mut outs = Vec::new();
        for t in tasks {
            outs.push(t.await.unwrap().unwrap());
        }
        outs
    });
    for (i, out) in outs.iter().enumerate() {
        assert_eq!(out.status.code(), Some(i as i32 % 7));
        assert_eq!(out.stdout, format!("child-{i}\n").as_bytes());
        assert_eq!(out.stderr, format!("err-{i}\n").as_bytes());
    }
    for pid in pids {
        assert!(proc_gone(pid), "process {pid} left behind");
    }
    assert_eq!(h.stats().sources, 0, "every pipe and pidfd deregistered");
}

#[test]
fn dropping_a_kill_on_drop_transport_leaves_no_process() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    // The protocol keeps its own handle: that must not keep the child.
    let (t, log, ended) = exec(
        &h,
        "sleep",
        ["30"],
        SubprocessOptions::default().kill_on_drop(true),
    );
    let pid = t.pid();
    assert!(!proc_gone(pid));
    drop(t);
    let st = run(&lp, DEADLINE, ended).unwrap();
    assert_eq!(st.signal(), Some(9));
    check_order(&log.borrow(), &[0, 1, 2]);
    assert!(proc_gone(pid), "process {pid} left behind");
    assert_eq!(h.stats().sources, 0);

    // Without kill_on_drop, dropping the handle leaves the child running,
    // and it is still reaped when it exits.
    let (t, _log, ended) = shell(&h, "sleep 0.2", SubprocessOptions::default());
    let pid = t.pid();
    drop(t);
    let st = run(&lp, DEADLINE, ended).unwrap();
    assert!(st.success());
    assert!(proc_gone(pid));
}

#[test]
fn closing_the_loop_kills_and_reaps_a_kill_on_drop_child() {
    let pid;
    {
        let lp = EventLoop::new().unwrap();
        let h = lp.handle();
        let (t, _, _) = exec(
            &h,
            "sleep",
            ["30"],
            SubprocessOptions::default().kill_on_drop(true),
        );
        pid = t.pid();
        drop(t);
        lp.close().unwrap();
    }
    // A background thread reaps it: poll /proc for a bounded time (it
    // may be a zombie for a moment, until that thread gets to it).
    let start = std::time::Instant::now();
    while std::fs::metadata(format!("/proc/{pid}")).is_ok() {
        assert!(start.elapsed() < DEADLINE, "process {pid} left behind");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Keeps the child's stdin transport, as a protocol that feeds the child
/// would: a cycle (protocol, stdin pipe, the process state, protocol)
/// that only the loop can break.
struct KeepsStdin(Option<protoloop::Transport>);

impl SubprocessProtocol for KeepsStdin {
    fn connection_made(&mut self, t: SubprocessTransport) {
        self.0 = t.get_pipe_transport(0);
    }
    fn pipe_data_received(&mut self, _fd: i32, _data: &[u8]) {}
}

/// Closing the loop closes a running child's pipes even when the protocol
/// keeps one: `cat` reads EOF on its stdin and exits, the background
/// thread reaps it, and the protocol is dropped. (Before, the stdin pipe
/// stayed open for good and `cat` with it.)
#[test]
fn closing_the_loop_closes_a_childs_pipes_though_the_protocol_keeps_one() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (t, p) = h
        .subprocess_exec(
            || checked(KeepsStdin(None)),
            "cat",
            std::iter::empty::<&str>(),
            SubprocessOptions::default(),
        )
        .unwrap();
    let pid = t.pid();
    assert!(p.with(|p| p.0.is_some()), "the protocol keeps stdin");
    let protocol = Rc::downgrade(p.rc());
    drop((t, p, h));
    lp.close().unwrap();
    // It may be a zombie for a moment, until the reaper thread gets to it.
    let start = std::time::Instant::now();
    while std::fs::metadata(format!("/proc/{pid}")).is_ok() {
        if start.elapsed() > DEADLINE {
            // Still running, so never reaped: the pid is still our child's.
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).unwrap(),
                rustix::process::Signal::KILL,
            );
            panic!("cat {pid} still runs: its stdin was not closed with the loop");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        protocol.upgrade().is_none(),
        "the protocol outlived its loop"
    );
}

#[test]
fn close_kills_a_running_child_and_still_ends() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (t, log, ended) = exec(&h, "sleep", ["30"], SubprocessOptions::default());
    assert!(!t.is_closing());
    t.close();
    assert!(t.is_closing());
    let st = run(&lp, DEADLINE, ended).unwrap();
    assert_eq!(st.signal(), Some(9));
    let log = log.borrow();
    check_order(&log, &[0, 1, 2]);
    assert!(log.contains(&Ev::Lost(1, "LocalClose".into())));
}

#[test]
fn a_grandchild_holding_the_pipes_delays_process_ended() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_, log, ended) = shell(
        &h,
        "(sleep 0.3; echo late) & exit 3",
        SubprocessOptions::default().stdin(Stdio::Null),
    );
    let st = run(&lp, DEADLINE, ended).unwrap();
    assert_eq!(st.code(), Some(3));
    let log = log.borrow();
    check_order(&log, &[1, 2]);
    let (exited, lost1) = exited_and_lost(&log, 1);
    assert!(
        exited < lost1,
        "the exit comes before the grandchild's EOF: {log:?}"
    );
    assert_eq!(
        data_of(&log, 1),
        b"late\n",
        "output after the exit is delivered"
    );
}

#[test]
fn close_pipes_after_exit_bounds_the_wait_for_a_grandchild() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (_, log, ended) = shell(
        &h,
        "sleep 30 & echo $!; exit 3",
        SubprocessOptions::default().close_pipes_after_exit(Duration::from_millis(200)),
    );
    let st = run(&lp, DEADLINE, ended).unwrap();
    assert_eq!(st.code(), Some(3));
    let log = log.borrow();
    check_order(&log, &[0, 1, 2]);
    let timeout = format!("{:?}", CloseReason::Timeout(TimeoutKind::PipeAfterExit));
    assert!(log.contains(&Ev::Lost(1, timeout)), "{log:?}");
    // Clean up the grandchild (not ours to reap: init adopts it).
    let out = String::from_utf8(data_of(&log, 1)).unwrap();
    let gpid: i32 = out.trim().parse().unwrap();
    let _ = std::process::Command::new("kill")
        .arg(gpid.to_string())
        .status();
}
