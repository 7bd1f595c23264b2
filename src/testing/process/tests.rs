//! The fixtures' own edge cases that need their insides.

use std::rc::Rc;
use std::time::Duration;

use super::{Program, Ready, Stream};
use crate::EventLoop;

/// A program dropped after its loop was closed is stopped and reaped on
/// the spot; its exit must not arm the pipe-grace timer on the closed
/// loop, where nothing would ever fire or clear it, and which would keep
/// the child's state (and through it the loop) alive for good.
#[test]
fn a_program_dropped_after_its_loop_was_closed_leaves_no_timer() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let p = lp
        .run_until_complete(
            Program::new("sh")
                .args(["-c", "echo up; exec sleep 30"])
                .ready(Ready::line(Stream::Stdout, "up"))
                .stop_grace(Duration::from_secs(5))
                .start(&h),
        )
        .unwrap()
        .unwrap();
    let captured = Rc::downgrade(&p.state);
    let pid = p.pid();
    lp.close().unwrap();
    assert_eq!(h.stats().timers, 0, "close clears the timers");

    drop(p);
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_err(),
        "the child was stopped and reaped by the drop"
    );
    assert_eq!(h.stats().timers, 0, "a timer was armed on the closed loop");
    assert!(
        captured.upgrade().is_none(),
        "the child's state outlived its program (held by a timer)"
    );
}

/// Kills a process we did not start (a grandchild) when dropped, so a
/// failing test leaves nothing behind.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0 as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// The loop closed while the grace timer waited for a grandchild's
/// pipes: closing drops the timer from the loop, and the timer must not
/// keep the child's state alive from there (a cycle through the state's
/// own handle to it).
#[test]
fn closing_the_loop_during_the_pipe_grace_period_frees_the_program() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (p, grandchild) = lp
        .run_until_complete({
            let h = h.clone();
            async move {
                let p = Program::new("sh")
                    .args(["-c", "sleep 30 & echo $!; echo up"])
                    .ready(Ready::line(Stream::Stdout, "up"))
                    .stop_grace(Duration::from_secs(30))
                    .start(&h)
                    .await
                    .unwrap();
                let grandchild = KillOnDrop(p.stdout().lines().next().unwrap().parse().unwrap());
                // The shell exits at once; its `sleep` holds stdout open.
                h.timeout(Duration::from_secs(10), p.transport().wait())
                    .await
                    .unwrap()
                    .unwrap();
                (p, grandchild)
            }
        })
        .unwrap();
    {
        let s = p.state.borrow();
        assert!(s.exited && s.ended.is_none(), "exited, pipes still open");
    }
    let captured = Rc::downgrade(&p.state);
    lp.close().unwrap();
    drop(p);
    assert!(
        captured.upgrade().is_none(),
        "the child's state outlived its program and its loop"
    );
    drop(grandchild);
}
