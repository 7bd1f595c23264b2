//! A child that dies with its pipes open: killed mid-write with unread
//! output, and exiting while a grandchild holds stdout. As in asyncio:
//! `process_exited` comes at the exit, with the status, whatever the
//! pipes do; `process_ended` only once the exit is in and every pipe has
//! closed; writes to a child that is gone fail with a clear error; and
//! output written before the end is all delivered.

use super::*;

/// `true` once `e` says the child is gone: the write met the broken pipe
/// itself, or the transport had already seen it close.
fn child_gone_error(e: &Error) -> bool {
    matches!(e, Error::Closed) || e.io_kind() == Some(std::io::ErrorKind::BrokenPipe)
}

#[test]
fn a_child_killed_mid_write_with_unread_output() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    // 60,000 bytes on stdout (under a pipe's 64 KiB, so it does not
    // block), then it sleeps without reading stdin.
    let (t, log, ended) = shell(
        &h,
        "head -c 60000 /dev/zero; echo wrote >&2; exec sleep 30",
        SubprocessOptions::default(),
    );
    let stdout = t.get_pipe_transport(1).unwrap();
    stdout.pause_reading();
    let stdin = t.get_pipe_transport(0).unwrap();
    run(&lp, DEADLINE, {
        let log = log.clone();
        let h = h.clone();
        async move {
            while data_of(&log.borrow(), 2) != b"wrote\n" {
                h.sleep(Duration::from_millis(2)).await;
            }
        }
    });
    // 1 MiB into a pipe nobody reads: 64 KiB fit, the rest waits in our
    // buffer and the protocol is paused.
    stdin.write(&vec![b'i'; 1 << 20]).unwrap();
    settle(&lp, Duration::from_millis(20));
    assert!(stdin.get_write_buffer_size() > 0, "mid-write");
    assert!(log.borrow().contains(&Ev::Pause));

    t.kill().unwrap();
    let status = run(&lp, DEADLINE, t.wait()).unwrap();
    assert_eq!(status.signal(), Some(9));
    settle(&lp, Duration::from_millis(50));
    {
        let log = log.borrow();
        assert!(log.contains(&Ev::Exited), "exit reported: {log:?}");
        // The stdin data it never read is lost, and said to be.
        let lost0 = log.iter().find_map(|e| match e {
            Ev::Lost(0, r) => Some(r.clone()),
            _ => None,
        });
        let lost0 = lost0.unwrap_or_else(|| panic!("stdin still open: {log:?}"));
        assert!(lost0.contains("BrokenPipe"), "{lost0}");
        // stdout is paused with data in it: not ended yet.
        assert!(!log.iter().any(|e| matches!(e, Ev::Lost(1, _))), "{log:?}");
        assert!(!log.iter().any(|e| matches!(e, Ev::Ended(_))), "{log:?}");
    }
    let e = stdin.write(b"more").unwrap_err();
    assert!(child_gone_error(&e), "{e}");
    drop(stdin);
    assert!(t.get_pipe_transport(0).is_none(), "the stdin pipe is gone");

    // Nothing written before the kill is lost.
    stdout.resume_reading();
    assert_eq!(run(&lp, DEADLINE, ended).unwrap(), status);
    let log = log.borrow();
    check_order(&log, &[0, 1, 2]);
    assert_eq!(data_of(&log, 1).len(), 60_000);
    let (exited, lost1) = exited_and_lost(&log, 1);
    assert!(exited < lost1, "exit before stdout's end: {log:?}");
    assert!(proc_gone(t.pid()));
}

#[test]
fn a_child_that_exits_while_a_grandchild_holds_stdout() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    // The background list gets /dev/null for stdin (sh without job
    // control), so only stdout and stderr are held after the exit.
    let (t, log, ended) = shell(
        &h,
        "echo before; (sleep 0.5; echo after) & exit 3",
        SubprocessOptions::default(),
    );
    let stdin = t.get_pipe_transport(0).unwrap();
    let status = run(&lp, DEADLINE, t.wait()).unwrap();
    assert_eq!(status.code(), Some(3));
    assert_eq!(t.returncode(), Some(status));

    // Nobody reads stdin any more: a write fails, now and after. (The
    // background subshell holds stdin until it has switched to
    // /dev/null, which may be just after the exit: until then a write
    // fills the pipe and succeeds, so give it a bounded moment.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match stdin.write(b"hello?") {
            Err(e) => {
                assert!(child_gone_error(&e), "{e}");
                break;
            }
            Ok(()) => {
                assert!(std::time::Instant::now() < deadline, "stdin still writable");
                settle(&lp, Duration::from_millis(5));
            }
        }
    }
    settle(&lp, Duration::from_millis(50));
    let e = stdin.write(b"hello?").unwrap_err();
    assert!(matches!(e, Error::Closed), "{e}");
    {
        let log = log.borrow();
        assert!(log.contains(&Ev::Exited), "{log:?}");
        assert!(
            log.iter().any(|e| matches!(e, Ev::Lost(0, _))),
            "stdin closed: {log:?}"
        );
        assert!(
            !log.iter().any(|e| matches!(e, Ev::Lost(1, _))),
            "stdout still held by the grandchild: {log:?}"
        );
        assert!(
            !log.iter().any(|e| matches!(e, Ev::Ended(_))),
            "not ended while a pipe is open: {log:?}"
        );
        assert_eq!(data_of(&log, 1), b"before\n", "read before the exit");
    }

    // The grandchild finishes: its output comes, then the end.
    assert_eq!(run(&lp, DEADLINE, ended).unwrap(), status);
    let log = log.borrow();
    check_order(&log, &[0, 1, 2]);
    assert_eq!(data_of(&log, 1), b"before\nafter\n");
    let (exited, lost1) = exited_and_lost(&log, 1);
    assert!(exited < lost1, "{log:?}");
    assert_eq!(h.stats().sources, 0, "every pipe and the pidfd are gone");
}
