//! Sessions and process groups: `start_new_session` and `process_group`
//! really move the child (checked from the child's own `/proc/self/stat`
//! against the parent's own), a group signal reaches the
//! processes the child started, and every misuse is a clear error that
//! signals nobody.

use std::io::ErrorKind;

use protoloop::Process;

use super::*;

/// The (pid, process group, session) in a `/proc/PID/stat` line. Both
/// sides of every comparison below come from `/proc`, so they agree even
/// where the session or group lies outside this PID namespace (a container
/// whose init started the tests), which the kernel reports as 0.
fn ids_in_stat(stat: &str) -> (u32, i32, i32) {
    // "pid (comm) state ppid pgrp session ...": comm may hold spaces.
    let (pid, rest) = stat.split_once(" (").unwrap();
    let fields: Vec<&str> = rest
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    (
        pid.parse().unwrap(),
        fields[2].parse().unwrap(),
        fields[3].parse().unwrap(),
    )
}

/// The (pid, process group, session) a child reports for itself, read by
/// `cat` from its own `/proc/self/stat` (so it is `cat`'s, the child's).
fn ids_of_child(lp: &EventLoop, opts: SubprocessOptions) -> (u32, i32, i32) {
    let p = lp
        .handle()
        .create_subprocess_exec("cat", ["/proc/self/stat"], opts)
        .unwrap();
    let pid = p.pid();
    let out = run(lp, DEADLINE, async move { p.communicate(None).await }).unwrap();
    assert!(out.status.success(), "{out:?}");
    let ids = ids_in_stat(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(ids.0, pid);
    ids
}

/// This test process's (process group, session).
fn parent_ids() -> (i32, i32) {
    let (_, pgrp, sid) = ids_in_stat(&std::fs::read_to_string("/proc/self/stat").unwrap());
    (pgrp, sid)
}

fn quiet() -> SubprocessOptions {
    SubprocessOptions::default().stdin(Stdio::Null)
}

#[test]
fn by_default_the_child_shares_the_parents_group_and_session() {
    let lp = EventLoop::new().unwrap();
    let (_, pgrp, sid) = ids_of_child(&lp, quiet());
    assert_eq!((pgrp, sid), parent_ids());
}

#[test]
fn start_new_session_makes_the_child_lead_a_session_and_a_group() {
    let lp = EventLoop::new().unwrap();
    let (pid, pgrp, sid) = ids_of_child(&lp, quiet().start_new_session(true));
    let (parent_pgrp, parent_sid) = parent_ids();
    assert_eq!((pgrp, sid), (pid as i32, pid as i32));
    assert_ne!(pgrp, parent_pgrp);
    assert_ne!(sid, parent_sid);
}

#[test]
fn process_group_0_makes_a_new_group_in_the_parents_session() {
    let lp = EventLoop::new().unwrap();
    let (pid, pgrp, sid) = ids_of_child(&lp, quiet().process_group(0));
    let (parent_pgrp, parent_sid) = parent_ids();
    assert_eq!(pgrp, pid as i32);
    assert_ne!(pgrp, parent_pgrp);
    assert_eq!(sid, parent_sid, "same session");
}

#[test]
fn process_group_joins_a_group_and_a_group_signal_reaches_every_member() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let leader = h
        .create_subprocess_exec("sleep", ["30"], quiet().process_group(0))
        .unwrap();
    let (_, pgrp, _) = ids_of_child(&lp, quiet().process_group(leader.pid()));
    assert_eq!(pgrp, leader.pid() as i32, "joined the leader's group");

    let member = h
        .create_subprocess_exec("sleep", ["30"], quiet().process_group(leader.pid()))
        .unwrap();
    // A member does not lead its group: signalling "its" group is refused.
    let e = member.send_signal_to_group(15).unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::InvalidInput), "{e}");
    assert!(e.to_string().contains("not a process group leader"), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("in group {}", leader.pid())),
        "{e}"
    );
    assert!(member.returncode().is_none(), "nothing was sent");

    leader.send_signal_to_group(15).unwrap();
    let (a, b) = run(&lp, DEADLINE, async move {
        (leader.wait().await.unwrap(), member.wait().await.unwrap())
    });
    assert_eq!((a.signal(), b.signal()), (Some(15), Some(15)));
}

/// The shell's output: the pid of the `sleep` it started in the
/// background, which holds the shell's stdout open.
fn grandchild_of(lp: &EventLoop, p: &Process) -> u32 {
    let line = run(lp, DEADLINE, p.read_line(1))
        .unwrap()
        .expect("the shell prints $!");
    String::from_utf8(line).unwrap().trim().parse().unwrap()
}

/// `true` once `pid` has exited (gone, or a zombie not yet reaped by
/// whoever inherited it); waits up to five seconds.
fn exits_soon(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(s)
                if s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                return true;
            }
            Ok(_) => {}
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_group_signal_reaches_a_grandchild_and_the_pipes_close_at_once() {
    for opts in [quiet().start_new_session(true), quiet().process_group(0)] {
        let lp = EventLoop::new().unwrap();
        let h = lp.handle();
        let p = h
            .create_subprocess_shell("sleep 30 & echo $!; wait", opts)
            .unwrap();
        let grandchild = grandchild_of(&lp, &p);
        p.send_signal_to_group(15).unwrap();
        // The grandchild held stdout open: with it alive, communicate
        // would wait for its 30 s. Five are plenty for the signal.
        let h2 = h.clone();
        let out = run(&lp, DEADLINE, async move {
            h2.timeout(Duration::from_secs(5), p.communicate(None))
                .await
                .expect("the pipes closed: the grandchild got the signal too")
        })
        .unwrap();
        assert_eq!(out.status.signal(), Some(15));
        assert!(exits_soon(grandchild), "grandchild {grandchild} still runs");
    }
}

#[test]
fn a_group_signal_to_a_child_in_the_parents_group_is_refused() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (t, _log, ended) = exec(&h, "sleep", ["30"], SubprocessOptions::default());
    // Sending would reach this test process: it must not be sent.
    let e = t.send_signal_to_group(15).unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::InvalidInput), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&t.pid().to_string()), "{msg}");
    assert!(msg.contains("start_new_session"), "{msg}");
    assert!(t.returncode().is_none(), "the child is untouched");

    let e = t.send_signal_to_group(12345).unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::InvalidInput), "{e}");
    assert!(e.to_string().contains("12345"), "{e}");

    t.kill().unwrap();
    run(&lp, DEADLINE, ended).unwrap();
}

#[test]
fn a_group_signal_after_the_child_was_reaped_is_refused() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (t, _log, ended) = exec(&h, "true", [""; 0], quiet().process_group(0));
    let status = run(&lp, DEADLINE, ended).unwrap();
    assert!(status.success());
    let e = t.send_signal_to_group(15).unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::NotFound), "{e}");
    assert!(e.to_string().contains("reaped"), "{e}");
}

#[test]
fn a_new_session_and_a_process_group_together_are_refused_before_starting() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let made = Rc::new(RefCell::new(0));
    let (m, h2) = (made.clone(), h.clone());
    let opts = quiet().start_new_session(true).process_group(0);
    let e = h
        .subprocess_exec(
            move || {
                *m.borrow_mut() += 1;
                Rec::new(&h2).0
            },
            "sleep",
            ["30"],
            opts,
        )
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    assert!(e.to_string().contains("start_new_session"), "{e}");
    assert_eq!(*made.borrow(), 0, "no protocol made, no child started");
}

#[test]
fn joining_a_group_of_another_session_is_a_clear_error() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    // Its group lives in its own session: nobody outside may join it.
    let other = h
        .create_subprocess_exec("sleep", ["30"], quiet().start_new_session(true))
        .unwrap();
    let e = h
        .create_subprocess_exec("sleep", ["30"], quiet().process_group(other.pid()))
        .unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::PermissionDenied), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("`sleep`"), "{msg}");
    assert!(
        msg.contains(&format!("in process group {}", other.pid())),
        "{msg}"
    );

    let e = h
        .create_subprocess_exec("sleep", ["30"], quiet().process_group(u32::MAX))
        .unwrap_err();
    assert_eq!(e.io_kind(), Some(ErrorKind::InvalidInput), "{e}");
    assert!(e.to_string().contains(&u32::MAX.to_string()), "{e}");

    other.kill().unwrap();
    run(&lp, DEADLINE, async move { other.wait().await }).unwrap();
}
