//! Futures on the loop: the executor for blocking work, spawned tasks
//! (panics, abort, detach), `SettableFuture`, and `sleep` / `timeout` on
//! the virtual and the real clock.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{EXPECTED, capture_exceptions, quiet_expected_panics, reported, run, turns};
use protoloop::{Error, EventLoop, ExceptionKind, FutureError, JoinError};

type Order = Rc<RefCell<Vec<&'static str>>>;

fn push(order: &Order, s: &'static str) -> impl FnOnce() + 'static {
    let o = order.clone();
    move || o.borrow_mut().push(s)
}

#[test]
fn run_in_executor_returns_the_result_off_the_loop_thread() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let loop_thread = std::thread::current().id();
    let (v, tid) = run(&lp, Duration::from_secs(10), async move {
        h.run_in_executor(|| {
            std::thread::sleep(Duration::from_millis(20));
            (6 * 7, std::thread::current().id())
        })
        .await
        .unwrap()
    });
    assert_eq!(v, 42);
    assert_ne!(tid, loop_thread);
}

#[test]
fn run_in_executor_runs_jobs_in_parallel() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    // Two jobs that each wait for the other: only finishes if both run
    // at once.
    let (tx1, rx1) = mpsc::channel::<()>();
    let (tx2, rx2) = mpsc::channel::<()>();
    let r = run(&lp, Duration::from_secs(10), async move {
        let a = h.run_in_executor(move || {
            tx1.send(()).unwrap();
            rx2.recv_timeout(Duration::from_secs(5)).is_ok()
        });
        let b = h.run_in_executor(move || {
            tx2.send(()).unwrap();
            rx1.recv_timeout(Duration::from_secs(5)).is_ok()
        });
        (a.await.unwrap(), b.await.unwrap())
    });
    assert_eq!(r, (true, true));
}

#[test]
fn run_in_executor_starts_a_thread_when_the_idle_one_is_already_taken() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let r = run(&lp, Duration::from_secs(20), async move {
        // One pool thread, then idle.
        h.run_in_executor(|| ()).await.unwrap();
        h.sleep(Duration::from_millis(50)).await;
        // Two jobs submitted back to back, each waiting for the other:
        // the second must not queue behind the first on the one idle
        // thread.
        let (tx1, rx1) = mpsc::channel::<()>();
        let (tx2, rx2) = mpsc::channel::<()>();
        let a = h.run_in_executor(move || {
            tx1.send(()).unwrap();
            rx2.recv_timeout(Duration::from_secs(5)).is_ok()
        });
        let b = h.run_in_executor(move || {
            tx2.send(()).unwrap();
            rx1.recv_timeout(Duration::from_secs(5)).is_ok()
        });
        (a.await.unwrap(), b.await.unwrap())
    });
    assert_eq!(r, (true, true), "the two jobs did not run at the same time");
}

#[test]
fn run_in_executor_panic_becomes_executor_panic() {
    quiet_expected_panics();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let r = run(&lp, Duration::from_secs(10), async move {
        h.run_in_executor(|| -> u32 { panic!("{EXPECTED}: executor job") })
            .await
    });
    match r {
        Err(Error::ExecutorPanic(msg)) => assert!(msg.contains("executor job"), "{msg}"),
        other => panic!("expected ExecutorPanic, got {other:?}"),
    }
}

#[test]
fn panicking_task_gives_join_error_panic_and_is_reported() {
    quiet_expected_panics();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let seen = capture_exceptions(&h);
    let h2 = h.clone();
    let (bad, good) = run(&lp, Duration::from_secs(10), async move {
        let bad = h2.spawn(async {
            turns(2).await;
            panic!("{EXPECTED}: in a task");
        });
        let good = h2.spawn(async { 5 });
        (bad.await, good.await)
    });
    match bad {
        Err(JoinError::Panic(m)) => assert!(m.contains("in a task"), "{m}"),
        other => panic!("expected JoinError::Panic, got {other:?}"),
    }
    assert_eq!(good, Ok(5));
    assert!(reported(&seen, ExceptionKind::TaskPanic));
}

#[test]
fn aborted_task_is_cancelled_and_detached_task_runs_on() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let progress = Rc::new(Cell::new(0));
    let h2 = h.clone();
    let p = progress.clone();
    let detached_done = Rc::new(Cell::new(false));
    let d = detached_done.clone();
    run(&lp, Duration::from_secs(10), async move {
        let t = h2.spawn(async move {
            loop {
                p.set(p.get() + 1);
                turns(1).await;
            }
        });
        turns(5).await;
        assert!(!t.is_finished());
        t.abort();
        let at_abort = progress.get();
        // Dropping a JoinHandle detaches: the task still runs.
        drop(h2.spawn(async move {
            turns(3).await;
            d.set(true);
        }));
        turns(10).await;
        assert_eq!(progress.get(), at_abort, "aborted task kept running");
        assert!(detached_done.get());
    });
}

#[test]
fn waking_a_task_from_another_thread_after_close_does_not_panic() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (tx, rx) = mpsc::channel::<std::task::Waker>();
    // A detached task that hands its waker to another thread and waits.
    drop(h.spawn(std::future::poll_fn(move |cx| {
        let _ = tx.send(cx.waker().clone());
        std::task::Poll::<()>::Pending
    })));
    let h2 = h.clone();
    run(&lp, Duration::from_secs(10), async move {
        turns(3).await;
        drop(h2);
    });
    let waker = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    lp.close().unwrap();
    // The task's future holds loop-thread state: it must not be dropped
    // (or polled) on the waking thread.
    let t = std::thread::spawn(move || waker.wake());
    assert!(
        t.join().is_ok(),
        "wake after close panicked on the waking thread"
    );
}

#[test]
fn settable_future_result_error_cancel_and_callbacks() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let h2 = h.clone();
    run(&lp, Duration::from_secs(10), async move {
        // set_result, done callbacks scheduled on the loop (not run inline).
        let f = h2.create_future::<u32>();
        let calls: Order = Rc::default();
        f.add_done_callback(push(&calls, "cb1"));
        assert!(!f.done());
        let setter = f.clone();
        h2.call_soon(move || {
            setter.set_result(7).unwrap();
        });
        assert_eq!(f.clone().await.unwrap(), 7);
        assert!(f.done() && !f.cancelled());
        assert_eq!(f.set_result(8), Err(8), "second set_result accepted");
        assert!(!f.set_exception(std::io::Error::other("late")));
        assert!(!f.cancel());
        turns(1).await;
        assert_eq!(*calls.borrow(), ["cb1"]);
        // A callback added after completion is still scheduled, not inline.
        f.add_done_callback(push(&calls, "cb2"));
        assert_eq!(*calls.borrow(), ["cb1"]);
        turns(2).await;
        assert_eq!(*calls.borrow(), ["cb1", "cb2"]);
        // The value was taken by the first awaiter.
        assert!(matches!(f.clone().await, Err(FutureError::Taken)));

        // set_exception.
        let g = h2.create_future::<u32>();
        assert!(g.set_exception(std::io::Error::other("broken")));
        match g.clone().await {
            Err(FutureError::Failed(e)) => assert_eq!(e.to_string(), "broken"),
            other => panic!("expected Failed, got {other:?}"),
        }

        // cancel wakes a waiting task.
        let c = h2.create_future::<u32>();
        let waiter = h2.spawn(c.clone());
        turns(2).await;
        assert!(c.cancel());
        assert!(c.cancelled() && c.done());
        assert!(matches!(waiter.await.unwrap(), Err(FutureError::Cancelled)));

        // take_result without awaiting.
        let t = h2.create_future::<&str>();
        assert!(t.take_result().is_none());
        t.set_result("v").unwrap();
        assert_eq!(t.take_result().unwrap().unwrap(), "v");
        assert!(matches!(t.take_result(), Some(Err(FutureError::Taken))));
    });
}

#[test]
fn settable_future_without_a_loop_runs_callbacks_inline() {
    let f = protoloop::SettableFuture::<u8>::new();
    let ran = Rc::new(Cell::new(0));
    let r = ran.clone();
    f.add_done_callback(move || r.set(r.get() + 1));
    f.set_result(1).unwrap();
    assert_eq!(ran.get(), 1);
    let r = ran.clone();
    f.add_done_callback(move || r.set(r.get() + 1));
    assert_eq!(ran.get(), 2);
}

#[test]
fn virtual_clock_passes_an_hour_of_timers_instantly() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    assert!(h.is_virtual_time());
    let start_real = Instant::now();
    let t0 = h.time();
    let fired = Rc::new(RefCell::new(Vec::new()));
    for s in (1..=3600u64).rev() {
        let f = fired.clone();
        h.call_later(Duration::from_secs(s), move || f.borrow_mut().push(s));
    }
    let h2 = h.clone();
    run(&lp, Duration::from_secs(7200), async move {
        h2.sleep(Duration::from_secs(3601)).await;
    });
    assert_eq!(*fired.borrow(), (1..=3600).collect::<Vec<_>>());
    assert!(h.time() - t0 >= Duration::from_secs(3601));
    assert!(
        start_real.elapsed() < Duration::from_secs(60),
        "virtual time took real time"
    );
}

#[test]
fn virtual_clock_advance_time_and_timeout() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    let h2 = h.clone();
    run(&lp, Duration::from_secs(3600), async move {
        let t0 = h2.time();
        h2.advance_time(Duration::from_secs(10));
        assert_eq!(h2.time() - t0, Duration::from_secs(10));
        let r = h2
            .timeout(Duration::from_secs(1), h2.sleep(Duration::from_secs(5)))
            .await;
        assert!(matches!(r, Err(Error::Timeout)));
        assert_eq!(h2.time() - t0, Duration::from_secs(11));
        let r = h2
            .timeout(Duration::from_secs(5), async {
                h2.sleep(Duration::from_secs(1)).await;
                "inner"
            })
            .await;
        assert_eq!(r.unwrap(), "inner");
        assert_eq!(h2.time() - t0, Duration::from_secs(12));
        // The free functions use the running loop.
        protoloop::sleep(Duration::from_secs(3)).await;
        assert!(
            protoloop::timeout(Duration::ZERO, protoloop::sleep(Duration::from_secs(1)))
                .await
                .is_err()
        );
    });
}

#[test]
fn sleep_and_timeout_on_the_real_clock() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    assert!(!h.is_virtual_time());
    let h2 = h.clone();
    run(&lp, Duration::from_secs(20), async move {
        let start = Instant::now();
        h2.sleep(Duration::from_millis(50)).await;
        assert!(
            start.elapsed() >= Duration::from_millis(50),
            "sleep returned early"
        );
        let start = Instant::now();
        let r = h2
            .timeout(Duration::from_millis(50), h2.sleep(Duration::from_secs(60)))
            .await;
        assert!(matches!(r, Err(Error::Timeout)));
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_eq!(
            h2.timeout(Duration::from_secs(60), async { 1 })
                .await
                .unwrap(),
            1
        );
    });
}
