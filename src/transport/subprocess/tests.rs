//! The thread fallback for exit watching, forced on a kernel that has
//! pidfds (integration tests cover the pidfd path).

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use super::watch::WatchMode;
use super::{Stdio, SubprocessOptions};
use crate::EventLoop;

fn thread_watched() -> SubprocessOptions {
    SubprocessOptions {
        watch: WatchMode::Thread,
        ..Default::default()
    }
}

#[test]
fn thread_watcher_reports_exit_codes_signals_and_output() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let h2 = h.clone();
    let r = lp.run_until_complete(async move {
        h2.timeout(Duration::from_secs(30), async {
            let mut procs = Vec::new();
            for i in 0..10 {
                let p = h2
                    .create_subprocess_shell(format!("echo {i}; exit {i}"), thread_watched())
                    .unwrap();
                procs.push(p);
            }
            for (i, p) in procs.iter().enumerate() {
                let out = p.communicate(None).await.unwrap();
                assert_eq!(out.status.code(), Some(i as i32));
                assert_eq!(out.stdout, format!("{i}\n").as_bytes());
            }
            assert!(h2.stats().sources == 0, "pipes deregistered, no pidfd used");

            let p = h2
                .create_subprocess_exec("sleep", ["30"], thread_watched().stdin(Stdio::Null))
                .unwrap();
            let st = p.stop(Duration::from_secs(5)).await.unwrap();
            assert_eq!(st.signal(), Some(15));
            assert!(
                std::fs::metadata(format!("/proc/{}", p.pid())).is_err(),
                "reaped"
            );
        })
        .await
    });
    r.unwrap().expect("timed out");
}

#[test]
fn a_pidfd_is_used_where_the_kernel_has_them() {
    let have_pidfd = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .is_ok();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let opts = SubprocessOptions::default()
        .stdin(Stdio::Null)
        .stdout(Stdio::Null)
        .stderr(Stdio::Null);
    let p = h.create_subprocess_exec("sleep", ["30"], opts).unwrap();
    // No pipes: the only source is the pidfd, when there is one.
    assert_eq!(h.stats().sources, usize::from(have_pidfd));
    let st = lp
        .run_until_complete(async move { p.stop(Duration::from_secs(5)).await })
        .unwrap()
        .unwrap();
    assert_eq!(st.signal(), Some(15));
    assert_eq!(h.stats().sources, 0, "pidfd deregistered at the exit");
}
