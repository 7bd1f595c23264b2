//! The event loop on its own: callback and timer ordering, cancellation,
//! cross-thread wake-ups, the executor, panics, run/stop/close rules,
//! futures, sleep/timeout on both clocks, debug mode, fd watchers and
//! signals.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{EXPECTED, capture_exceptions, quiet_expected_panics, reported, run, turns};
use protoloop::{Error, EventLoop, ExceptionKind, FutureError, Handle, JoinError};

type Order = Rc<RefCell<Vec<&'static str>>>;

fn push(order: &Order, s: &'static str) -> impl FnOnce() + 'static {
    let o = order.clone();
    move || o.borrow_mut().push(s)
}

fn stopper(h: &Handle) -> impl FnOnce() + 'static {
    let h = h.clone();
    move || h.stop()
}

#[test]
fn call_soon_runs_in_fifo_order() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let order: Order = Rc::default();
    for s in ["a", "b", "c", "d", "e"] {
        h.call_soon(push(&order, s));
    }
    h.call_soon(stopper(&h));
    lp.run_forever().unwrap();
    assert_eq!(*order.borrow(), ["a", "b", "c", "d", "e"]);
}

#[test]
fn callbacks_scheduled_during_an_iteration_wait_for_the_next() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let order: Order = Rc::default();
    h.call_soon({
        let (h, o) = (h.clone(), order.clone());
        move || {
            o.borrow_mut().push("first");
            h.call_soon(push(&o, "scheduled by first"));
            // stop() ends run_forever after this iteration: what "first"
            // scheduled must not have run yet.
            h.stop();
        }
    });
    h.call_soon(push(&order, "second"));
    lp.run_forever().unwrap();
    assert_eq!(*order.borrow(), ["first", "second"]);
    h.call_soon(stopper(&h));
    lp.run_forever().unwrap();
    assert_eq!(*order.borrow(), ["first", "second", "scheduled by first"]);
}

#[test]
fn timers_fire_in_deadline_order_with_ties_in_scheduling_order() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    let order: Order = Rc::default();
    let t0 = h.time();
    h.call_later(Duration::from_secs(3), push(&order, "3s"));
    h.call_at(t0 + Duration::from_secs(1), push(&order, "1s-a"));
    h.call_later(Duration::from_secs(2), push(&order, "2s"));
    h.call_at(t0 + Duration::from_secs(1), push(&order, "1s-b"));
    h.call_at(t0 + Duration::from_secs(1), push(&order, "1s-c"));
    h.call_later(Duration::ZERO, push(&order, "0s"));
    h.call_later(Duration::from_secs(4), stopper(&h));
    lp.run_forever().unwrap();
    assert_eq!(*order.borrow(), ["0s", "1s-a", "1s-b", "1s-c", "2s", "3s"]);
    assert!(h.time() - t0 >= Duration::from_secs(4));
}

#[test]
fn cancelled_callbacks_and_timers_never_run() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    let order: Order = Rc::default();
    let soon = h.call_soon(push(&order, "cancelled soon"));
    h.call_soon(push(&order, "kept soon"));
    let later = h.call_later(Duration::from_secs(1), push(&order, "cancelled later"));
    let at = h.call_at(
        h.time() + Duration::from_secs(2),
        push(&order, "cancelled at"),
    );
    h.call_later(Duration::from_secs(3), push(&order, "kept later"));
    soon.cancel();
    later.cancel();
    at.cancel();
    at.cancel(); // idempotent
    assert!(soon.cancelled() && later.cancelled() && at.cancelled());
    h.call_later(Duration::from_secs(5), stopper(&h));
    lp.run_forever().unwrap();
    assert_eq!(*order.borrow(), ["kept soon", "kept later"]);
}

#[test]
fn cancelling_a_timer_from_an_earlier_callback_of_the_same_iteration() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    let order: Order = Rc::default();
    let when = h.time() + Duration::from_secs(1);
    let victim = Rc::new(RefCell::new(None));
    h.call_at(when, {
        let (v, o) = (victim.clone(), order.clone());
        move || {
            o.borrow_mut().push("killer");
            let t: Option<protoloop::TimerHandle> = v.borrow_mut().take();
            t.unwrap().cancel();
        }
    });
    *victim.borrow_mut() = Some(h.call_at(when, push(&order, "victim")));
    h.call_later(Duration::from_secs(2), stopper(&h));
    lp.run_forever().unwrap();
    assert_eq!(*order.borrow(), ["killer"]);
}

#[test]
fn cancel_after_fire_is_harmless_and_when_is_the_deadline() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    let fired = Rc::new(Cell::new(0));
    let t0 = h.time();
    let f = fired.clone();
    let timer = h.call_later(Duration::from_millis(1500), move || f.set(f.get() + 1));
    assert_eq!(timer.when(), t0 + Duration::from_millis(1500));
    let at = h.call_at(t0 + Duration::from_secs(7), || {});
    assert_eq!(at.when(), t0 + Duration::from_secs(7));
    at.cancel();
    h.call_later(Duration::from_secs(2), stopper(&h));
    lp.run_forever().unwrap();
    assert_eq!(fired.get(), 1);
    timer.cancel();
    timer.cancel();
    assert_eq!(timer.when(), t0 + Duration::from_millis(1500));
    h.call_soon(stopper(&h));
    lp.run_forever().unwrap();
    assert_eq!(fired.get(), 1);
}

#[test]
fn many_cancelled_timers_are_dropped_from_the_heap() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    let timers: Vec<_> = (0..1000)
        .map(|i| {
            h.call_later(Duration::from_secs(100 + i), || {
                panic!("cancelled timer ran")
            })
        })
        .collect();
    for t in &timers {
        t.cancel();
    }
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    h.call_later(Duration::from_secs(1), move || r.set(true));
    h.call_later(Duration::from_secs(2), stopper(&h));
    lp.run_forever().unwrap();
    assert!(ran.get());
    assert!(
        h.stats().timers < 1000,
        "cancelled timers kept: {:?}",
        h.stats()
    );
}

#[test]
fn call_soon_threadsafe_wakes_a_loop_sleeping_in_a_long_poll() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    // Without the wake-up the loop would sleep until this timer.
    let long = h.call_later(Duration::from_secs(30), stopper(&h));
    let remote = h.remote();
    let (tx, rx) = mpsc::channel();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        remote
            .call_soon_threadsafe(move || {
                tx.send(std::thread::current().id()).unwrap();
                Handle::current().stop();
            })
            .unwrap();
    });
    let start = Instant::now();
    lp.run_forever().unwrap();
    let took = start.elapsed();
    sender.join().unwrap();
    assert_eq!(
        rx.recv().unwrap(),
        std::thread::current().id(),
        "ran on the loop's thread"
    );
    assert!(
        took < Duration::from_secs(2),
        "woke after {took:?}, not promptly"
    );
    long.cancel();
}

#[test]
fn call_soon_threadsafe_from_many_threads_runs_everything() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let count = Rc::new(Cell::new(0usize));
    let (tx, rx) = mpsc::channel::<()>();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let remote = h.remote();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for _ in 0..250 {
                    let tx = tx.clone();
                    remote
                        .call_soon_threadsafe(move || tx.send(()).unwrap())
                        .unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let c = count.clone();
    run(&lp, Duration::from_secs(20), async move {
        while c.get() < 1000 {
            while rx.try_recv().is_ok() {
                c.set(c.get() + 1);
            }
            turns(1).await;
            h.sleep(Duration::from_millis(1)).await;
        }
    });
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(count.get(), 1000);
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
fn panicking_callback_is_contained_and_reported() {
    quiet_expected_panics();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let seen = capture_exceptions(&h);
    let order: Order = Rc::default();
    h.call_soon(push(&order, "before"));
    h.call_soon(|| panic!("{EXPECTED}: in a callback"));
    h.call_soon(push(&order, "after"));
    h.call_later(Duration::from_millis(5), || {
        panic!("{EXPECTED}: in a timer")
    });
    h.call_later(Duration::from_millis(10), push(&order, "timer after"));
    h.call_later(Duration::from_millis(20), stopper(&h));
    lp.run_forever().unwrap();
    assert_eq!(*order.borrow(), ["before", "after", "timer after"]);
    let seen = seen.borrow();
    let panics: Vec<_> = seen
        .iter()
        .filter(|c| c.kind == ExceptionKind::CallbackPanic)
        .collect();
    assert_eq!(panics.len(), 2, "{seen:?}");
    assert!(
        panics[0].message.contains("in a callback"),
        "{}",
        panics[0].message
    );
    assert!(
        panics[1].message.contains("in a timer"),
        "{}",
        panics[1].message
    );
    // The report says where the callback was scheduled.
    assert!(
        panics[0].message.contains("event_loop.rs"),
        "{}",
        panics[0].message
    );
}

#[test]
fn a_panicking_exception_handler_does_not_take_the_loop_down() {
    quiet_expected_panics();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    h.set_exception_handler(|_| panic!("{EXPECTED}: in the exception handler"));
    let ran = Rc::new(Cell::new(false));
    h.call_soon(|| panic!("{EXPECTED}: first"));
    let r = ran.clone();
    h.call_soon(move || r.set(true));
    h.call_soon(stopper(&h));
    lp.run_forever().unwrap();
    assert!(ran.get());
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
fn run_until_complete_returns_the_output() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let v = lp
        .run_until_complete(async move {
            let t = h.spawn(async { "spawned" });
            (t.await.unwrap(), 7)
        })
        .unwrap();
    assert_eq!(v, ("spawned", 7));
    // The loop can be reused.
    assert_eq!(lp.run_until_complete(async { 8 }).unwrap(), 8);
}

#[test]
fn run_until_complete_fails_if_stopped_first() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    h.call_later(Duration::from_secs(1), stopper(&h));
    let h2 = h.clone();
    let r = lp.run_until_complete(async move {
        h2.sleep(Duration::from_secs(10)).await;
        1
    });
    assert!(matches!(r, Err(Error::StoppedBeforeComplete)), "{r:?}");
    assert!(!h.is_running());
}

#[test]
fn run_until_complete_reraises_a_panic_of_the_main_future() {
    quiet_expected_panics();
    let lp = EventLoop::new().unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lp.run_until_complete(async {
            turns(1).await;
            panic!("{EXPECTED}: main future")
        })
    }));
    let payload = r.expect_err("the panic was not re-raised");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(msg.contains("main future"), "{msg}");
    // The loop is still usable.
    assert!(!lp.handle().is_running());
    assert_eq!(lp.run_until_complete(async { 3 }).unwrap(), 3);
}

#[test]
fn stop_before_run_forever_runs_one_iteration() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let order: Order = Rc::default();
    h.call_soon({
        let (h, o) = (h.clone(), order.clone());
        move || {
            o.borrow_mut().push("ready");
            h.call_soon(push(&o, "next iteration"));
        }
    });
    h.stop();
    lp.run_forever().unwrap();
    assert_eq!(*order.borrow(), ["ready"]);
    // The stop request was used up: the next run goes on until stopped.
    h.call_soon({
        let h = h.clone();
        move || {
            h.call_soon(stopper(&h));
        }
    });
    lp.run_forever().unwrap();
    assert_eq!(*order.borrow(), ["ready", "next iteration"]);
}

#[test]
fn nested_run_is_refused_with_loop_running() {
    let lp = Rc::new(EventLoop::new().unwrap());
    let other = EventLoop::new().unwrap();
    let h = lp.handle();
    let results = Rc::new(RefCell::new(Vec::new()));
    h.call_soon({
        let (lp, h, r) = (lp.clone(), h.clone(), results.clone());
        move || {
            r.borrow_mut().push(lp.run_forever().map(|_| ()));
            r.borrow_mut().push(lp.run_until_complete(async {}));
            // A second loop on a thread that already runs one.
            r.borrow_mut().push(other.run_until_complete(async {}));
            r.borrow_mut().push(lp.close());
            h.stop();
        }
    });
    lp.run_forever().unwrap();
    let results = results.borrow();
    assert_eq!(results.len(), 4);
    for r in results.iter() {
        assert!(matches!(r, Err(Error::LoopRunning)), "{r:?}");
    }
    assert!(!h.is_closed());
}

#[test]
fn closed_loop_refuses_work_with_loop_closed() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let remote = h.remote();
    let dropped = Rc::new(Cell::new(false));
    struct OnDrop(Rc<Cell<bool>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let guard = OnDrop(dropped.clone());
    h.call_later(Duration::from_secs(60), move || drop(guard));
    lp.close().unwrap();
    lp.close().unwrap(); // idempotent
    assert!(h.is_closed());
    assert!(dropped.get(), "close did not drop pending timers");
    assert!(matches!(lp.run_forever(), Err(Error::LoopClosed)));
    assert!(matches!(
        lp.run_until_complete(async {}),
        Err(Error::LoopClosed)
    ));
    assert!(matches!(
        remote.call_soon_threadsafe(|| {}),
        Err(Error::LoopClosed)
    ));
    let (a, _b) = UnixStream::pair().unwrap();
    assert!(matches!(
        h.add_reader(a.as_raw_fd(), || {}),
        Err(Error::LoopClosed)
    ));
    assert!(matches!(
        h.add_signal_handler(signal_hook::consts::SIGUSR2, || {}),
        Err(Error::LoopClosed)
    ));
    let r = lp.run_until_complete(h.run_in_executor(|| 1));
    assert!(matches!(r, Err(Error::LoopClosed)), "{r:?}");
    let fut = h.run_in_executor(|| 1);
    let other = EventLoop::new().unwrap();
    let r = other.run_until_complete(fut).unwrap();
    assert!(matches!(r, Err(Error::LoopClosed)), "{r:?}");
}

#[test]
fn several_loops_run_on_parallel_threads() {
    let threads: Vec<_> = (0..4u64)
        .map(|i| {
            std::thread::spawn(move || {
                let lp = EventLoop::new().unwrap();
                let h = lp.handle();
                let h2 = h.clone();
                lp.run_until_complete(async move {
                    let mut sum = 0;
                    for k in 0..20 {
                        h2.sleep(Duration::from_millis(1)).await;
                        sum += h2.run_in_executor(move || k * i).await.unwrap();
                    }
                    assert!(Handle::current().is_running());
                    sum
                })
                .unwrap()
            })
        })
        .collect();
    let sums: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(sums, [0, 190, 380, 570]);
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

#[test]
fn debug_mode_reports_a_slow_callback_with_its_location() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let seen = capture_exceptions(&h);
    assert_eq!(h.debug(), None);
    h.set_debug(Some(Duration::from_millis(20)));
    assert_eq!(h.debug(), Some(Duration::from_millis(20)));
    let line = line!() + 1;
    h.call_soon(|| std::thread::sleep(Duration::from_millis(100)));
    h.call_soon(|| {});
    h.call_soon(stopper(&h));
    lp.run_forever().unwrap();
    {
        let seen = seen.borrow();
        let slow: Vec<_> = seen
            .iter()
            .filter(|c| c.kind == ExceptionKind::SlowCallback)
            .collect();
        assert_eq!(slow.len(), 1, "{seen:?}");
        let where_ = format!("event_loop.rs:{line}");
        assert!(
            slow[0].message.contains(&where_),
            "{} lacks {where_}",
            slow[0].message
        );
    }
    // Off again: nothing more is reported.
    h.set_debug(None);
    h.call_soon(|| std::thread::sleep(Duration::from_millis(60)));
    h.call_soon(stopper(&h));
    lp.run_forever().unwrap();
    assert_eq!(seen.borrow().len(), 1);
}

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

/// The only test in this binary that raises signals (SIGUSR1): tests run
/// on parallel threads of one process.
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
        // Still caught by signal-hook (not fatal), but nobody is called.
        signal_hook::low_level::raise(SIGUSR1).unwrap();
        h2.sleep(Duration::from_millis(50)).await;
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
