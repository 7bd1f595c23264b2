//! The event loop on its own: callback and timer ordering, cancellation,
//! cross-thread wake-ups, panics in callbacks, run/stop/close rules,
//! several loops at once, and debug mode.

mod common;

use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{EXPECTED, capture_exceptions, quiet_expected_panics, run, turns};
use protoloop::{Error, EventLoop, ExceptionKind, Handle};

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
fn huge_delays_mean_never_rather_than_overflow() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let t = h.call_later(Duration::MAX, || panic!("a timer for Duration::MAX fired"));
    assert!(t.when() > h.time() + Duration::from_secs(86400 * 365));
    let h2 = h.clone();
    let r = run(&lp, Duration::from_secs(10), async move {
        let forever = h2.sleep(Duration::MAX);
        assert!(forever.deadline() > h2.time());
        h2.timeout(Duration::MAX, async { 5 }).await
    });
    assert_eq!(r.unwrap(), 5);
    t.cancel();
    let v = EventLoop::new_virtual().unwrap();
    let vh = v.handle();
    let before = vh.time();
    vh.advance_time(Duration::MAX);
    assert!(vh.time() > before);
}
