//! Watching raw file descriptors (`add_reader` / `add_writer`,
//! level-triggered) and Unix signal handlers. Only one test raises a
//! signal in this process (SIGUSR1), since tests run on parallel threads
//! of one process; signals that may kill are raised in child processes.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use common::{run, turns};
use protoloop::{Error, EventLoop};

#[test]
fn add_reader_is_level_triggered_until_removed() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (mut a, b) = UnixStream::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    a.write_all(b"x").unwrap();
    let calls = Rc::new(Cell::new(0));
    let fd = b.as_raw_fd();
    let h2 = h.clone();
    let c = calls.clone();
    // The callback never reads: a level-triggered watch keeps calling it.
    h.add_reader(fd, move || {
        c.set(c.get() + 1);
        if c.get() == 3 {
            assert!(h2.remove_reader(fd));
        }
    })
    .unwrap();
    let h3 = h.clone();
    run(&lp, Duration::from_secs(10), async move {
        common::wait_until(&h3, "three reader calls", || calls.get() >= 3).await;
        turns(20).await;
        assert_eq!(calls.get(), 3, "reader called after remove_reader");
        assert!(!h3.remove_reader(fd), "second remove_reader");
    });
    drop((a, b));
}

#[test]
fn add_reader_and_writer_on_one_fd_and_removal() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (mut a, mut b) = UnixStream::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    let fd = b.as_raw_fd();
    let writes = Rc::new(Cell::new(0));
    let got = Rc::new(RefCell::new(Vec::new()));
    let w = writes.clone();
    let g = got.clone();
    let mut reader_sock = b.try_clone().unwrap();
    h.add_reader(fd, move || {
        let mut buf = [0u8; 64];
        if let Ok(n) = reader_sock.read(&mut buf) {
            g.borrow_mut().extend_from_slice(&buf[..n]);
        }
    })
    .unwrap();
    h.add_writer(fd, move || w.set(w.get() + 1)).unwrap();
    let h2 = h.clone();
    let w2 = writes.clone();
    let got2 = got.clone();
    run(&lp, Duration::from_secs(10), async move {
        // Always writable: the writer is called on iteration after iteration.
        common::wait_until(&h2, "writer calls", || w2.get() >= 5).await;
        assert!(h2.remove_writer(fd));
        assert!(!h2.remove_writer(fd));
        turns(3).await;
        let after = w2.get();
        // The reader still works on its own.
        a.write_all(b"ping").unwrap();
        common::wait_until(&h2, "reader data", || got2.borrow().len() == 4).await;
        assert_eq!(w2.get(), after, "writer called after remove_writer");
        assert!(h2.remove_reader(fd));
        a.write_all(b"more").unwrap();
        turns(20).await;
        assert_eq!(*got2.borrow(), b"ping");
        assert_eq!(h2.stats().sources, 0);
        b.write_all(b"!").unwrap();
    });
}

#[test]
fn add_reader_on_a_bad_fd_is_an_error() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let r = h.add_reader(1_000_000, || {});
    assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
    assert_eq!(h.stats().sources, 0, "failed watch left a source behind");
}

/// The only test in this binary that raises signals in its own process
/// (SIGUSR1): tests run on parallel threads of one process.
#[test]
fn signal_handlers_run_on_the_loop_and_can_be_removed() {
    use signal_hook::consts::{SIGKILL, SIGSEGV, SIGUSR1};
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    assert!(matches!(
        h.add_signal_handler(SIGKILL, || {}),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        h.add_signal_handler(SIGSEGV, || {}),
        Err(Error::Unsupported(_))
    ));
    let hits = Rc::new(Cell::new(0));
    let thread = std::thread::current().id();
    let hh = hits.clone();
    h.add_signal_handler(SIGUSR1, move || {
        assert_eq!(std::thread::current().id(), thread);
        hh.set(hh.get() + 1);
    })
    .unwrap();
    let h2 = h.clone();
    let hits2 = hits.clone();
    run(&lp, Duration::from_secs(10), async move {
        signal_hook::low_level::raise(SIGUSR1).unwrap();
        common::wait_until(&h2, "the signal handler", || hits2.get() == 1).await;
        // Replacing the handler: only the new one runs.
        let second = Rc::new(Cell::new(0));
        let s = second.clone();
        h2.add_signal_handler(SIGUSR1, move || s.set(s.get() + 1))
            .unwrap();
        signal_hook::low_level::raise(SIGUSR1).unwrap();
        common::wait_until(&h2, "the new handler", || second.get() == 1).await;
        assert_eq!(hits2.get(), 1);
        assert!(h2.remove_signal_handler(SIGUSR1));
        assert!(!h2.remove_signal_handler(SIGUSR1));
        // SIGUSR1 is back to its default action (terminate) now: see
        // `removing_the_last_handler_gives_the_signal_back`, which raises
        // it in a child process.
        assert_eq!(second.get(), 1);
        assert_eq!(h2.stats().sources, 0);
    });

    // Two loops on two threads watching one signal: each is told.
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        let lp = EventLoop::new().unwrap();
        let h = lp.handle();
        let got = Rc::new(Cell::new(false));
        let g = got.clone();
        h.add_signal_handler(SIGUSR1, move || g.set(true)).unwrap();
        ready_tx.send(()).unwrap();
        let h2 = h.clone();
        run(&lp, Duration::from_secs(10), async move {
            common::wait_until(&h2, "the signal on the second loop", || got.get()).await;
        });
        go_rx.recv().unwrap();
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let mine = Rc::new(Cell::new(false));
    let m = mine.clone();
    h.add_signal_handler(SIGUSR1, move || m.set(true)).unwrap();
    let h2 = h.clone();
    run(&lp, Duration::from_secs(10), async move {
        signal_hook::low_level::raise(SIGUSR1).unwrap();
        common::wait_until(&h2, "the signal on the first loop", || mine.get()).await;
    });
    go_tx.send(()).unwrap();
    other.join().unwrap();
}

/// Run as a child of the next test: add a handler for the signal named by
/// `PROTOLOOP_SIGNAL_CHILD`, remove it (or close the loop), raise the
/// signal, and print "survived" if the process is still there.
fn signal_child(sig: i32, by_close: bool) {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    h.add_signal_handler(sig, || {}).unwrap();
    if by_close {
        lp.close().unwrap();
    } else {
        assert!(h.remove_signal_handler(sig));
    }
    signal_hook::low_level::raise(sig).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    println!("survived");
}

#[test]
fn removing_the_last_handler_gives_the_signal_back() {
    use signal_hook::consts::{SIGPIPE, SIGUSR2};
    use std::os::unix::process::ExitStatusExt;
    if let Ok(spec) = std::env::var("PROTOLOOP_SIGNAL_CHILD") {
        let (sig, how) = spec.split_once(':').unwrap();
        signal_child(sig.parse().unwrap(), how == "close");
        return;
    }
    // SIGUSR2's default terminates; SIGPIPE, which Rust ignores at start,
    // stays ignored. Each case runs in a child process, since it may die.
    for (sig, how, dies) in [
        (SIGUSR2, "remove", true),
        (SIGUSR2, "close", true),
        (SIGPIPE, "remove", false),
    ] {
        let out = common::this_test_in_a_child(
            "removing_the_last_handler_gives_the_signal_back",
            "PROTOLOOP_SIGNAL_CHILD",
            &format!("{sig}:{how}"),
        )
        .output()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if dies {
            assert_eq!(
                out.status.signal(),
                Some(sig),
                "signal {sig} after {how}: {:?} {stdout}",
                out.status
            );
        } else {
            assert!(
                out.status.success() && stdout.contains("survived"),
                "signal {sig} after {how}: {:?} {stdout}",
                out.status
            );
        }
    }
}
