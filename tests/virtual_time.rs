//! The virtual clock: auto-advance, `run_until_idle`, `advance`/`advance_to`,
//! the auto-advance threshold and auto-advance off with real sockets, and
//! executor jobs in virtual time.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protoloop::{Error, EventLoop, Handle, Protocol, Server, ServerOptions, Transport};

type Log = Rc<RefCell<Vec<(&'static str, Duration)>>>;

/// A timer that records its name and the loop time it fired at, relative
/// to `start`.
fn record(h: &Handle, log: &Log, start: Instant, after: Duration, name: &'static str) {
    let log = log.clone();
    let h2 = h.clone();
    h.call_later(after, move || {
        log.borrow_mut().push((name, h2.time() - start))
    });
}

#[test]
fn auto_advance_fires_timers_in_order_at_their_own_deadlines() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    let start = h.time();
    let log: Log = Rc::default();
    record(&h, &log, start, Duration::from_secs(30), "c");
    record(&h, &log, start, Duration::from_secs(10), "a");
    record(&h, &log, start, Duration::from_secs(20), "b1");
    record(&h, &log, start, Duration::from_secs(20), "b2");
    let h2 = h.clone();
    lp.run_until_complete(async move { h2.sleep(Duration::from_secs(3600)).await })
        .unwrap();
    let s = Duration::from_secs;
    assert_eq!(
        *log.borrow(),
        [("a", s(10)), ("b1", s(20)), ("b2", s(20)), ("c", s(30))]
    );
    assert_eq!(h.time() - start, s(3600));
}

#[test]
fn run_until_idle_runs_chains_but_never_moves_time() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    let start = h.time();
    let steps = Rc::new(Cell::new(0));
    fn chain(steps: Rc<Cell<u32>>) {
        steps.set(steps.get() + 1);
        if steps.get() < 100 {
            Handle::current().call_soon(move || chain(steps));
        }
    }
    let s = steps.clone();
    h.call_soon(move || chain(s));
    let timer_fired = Rc::new(Cell::new(false));
    let tf = timer_fired.clone();
    h.call_later(Duration::from_millis(1), move || tf.set(true));
    let zero = h.call_later(Duration::ZERO, || {});
    let task = h.spawn(async { 5 });
    lp.run_until_idle().unwrap();
    assert_eq!(steps.get(), 100);
    assert!(task.is_finished());
    assert!(!timer_fired.get(), "a timer in the future must not fire");
    assert_eq!(h.time(), start);
    assert_eq!(h.next_timer(), Some(start + Duration::from_millis(1)));
    assert!(
        !zero.cancelled(),
        "the zero-delay timer ran: it was due now"
    );
    assert_eq!(h.stats().ready, 0);
}

#[test]
fn advance_steps_through_timers_and_chained_timers_measure_from_their_deadline() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    let start = h.time();
    let log: Log = Rc::default();
    let (l, h2) = (log.clone(), h.clone());
    h.call_later(Duration::from_secs(1), move || {
        l.borrow_mut().push(("first", h2.time() - start));
        let (l, h3) = (l.clone(), h2.clone());
        h2.call_later(Duration::from_secs(1), move || {
            l.borrow_mut().push(("second", h3.time() - start))
        });
    });
    record(&h, &log, start, Duration::from_secs(5), "late");
    lp.advance(Duration::from_secs(3)).unwrap();
    let s = Duration::from_secs;
    assert_eq!(*log.borrow(), [("first", s(1)), ("second", s(2))]);
    assert_eq!(h.time() - start, s(3));
    // A deadline exactly at the target fires.
    lp.advance_to(start + s(5)).unwrap();
    assert_eq!(log.borrow().last(), Some(&("late", s(5))));
    // The past is a no-op apart from running what is ready.
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    h.call_soon(move || r.set(true));
    lp.advance_to(start).unwrap();
    assert!(ran.get());
    assert_eq!(h.time() - start, s(5));
}

#[test]
fn a_timer_cancelled_on_the_way_does_not_fire() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    let victim = h.call_later(Duration::from_secs(2), move || f.set(true));
    h.call_later(Duration::from_secs(1), move || victim.cancel());
    lp.advance(Duration::from_secs(10)).unwrap();
    assert!(!fired.get());
    assert_eq!(h.next_timer(), None);
}

#[test]
fn advancing_a_real_clock_is_refused() {
    let lp = EventLoop::new().unwrap();
    let err = lp.advance(Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    // run_until_idle works on a real clock.
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    lp.handle().call_soon(move || r.set(true));
    lp.run_until_idle().unwrap();
    assert!(ran.get());
}

#[test]
fn run_until_idle_refuses_nesting_and_a_closed_loop() {
    let lp = EventLoop::new_virtual().unwrap();
    let lp = Rc::new(lp);
    let inner_result = Rc::new(RefCell::new(None));
    let (l2, r2) = (lp.clone(), inner_result.clone());
    lp.handle()
        .call_soon(move || *r2.borrow_mut() = Some(l2.run_until_idle()));
    lp.run_until_idle().unwrap();
    assert!(matches!(
        inner_result.borrow_mut().take(),
        Some(Err(Error::LoopRunning))
    ));
    lp.close().unwrap();
    assert!(matches!(lp.run_until_idle(), Err(Error::LoopClosed)));
    assert!(matches!(
        lp.advance(Duration::from_secs(1)),
        Err(Error::LoopClosed)
    ));
}

#[test]
#[should_panic(expected = "keeps rescheduling itself")]
fn run_until_idle_names_a_callback_that_never_stops() {
    let lp = EventLoop::new_virtual().unwrap();
    fn again() {
        Handle::current().call_soon(again);
    }
    lp.handle().call_soon(again);
    let _ = lp.run_until_idle();
}

#[test]
fn an_executor_job_in_flight_holds_virtual_time() {
    // Before the fix the clock jumped to the timeout while the job ran on
    // its thread, so any timeout around run_in_executor fired at once.
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    let start = h.time();
    let h2 = h.clone();
    let r = lp
        .run_until_complete(async move {
            h2.timeout(
                Duration::from_secs(10),
                h2.run_in_executor(|| {
                    std::thread::sleep(Duration::from_millis(30));
                    7
                }),
            )
            .await
        })
        .unwrap();
    assert_eq!(r.unwrap().unwrap(), 7);
    assert_eq!(h.time(), start, "no time passed while the job ran");
    // A job whose future was dropped still holds time until it ends; then
    // the clock moves on to the pending timer.
    let job = h.run_in_executor(|| std::thread::sleep(Duration::from_millis(20)));
    drop(job);
    let h3 = h.clone();
    lp.run_until_complete(async move { h3.sleep(Duration::from_secs(1)).await })
        .unwrap();
    assert_eq!(h.time() - start, Duration::from_secs(1));
}

struct Collect(Rc<RefCell<Vec<u8>>>);
impl Protocol for Collect {
    fn connection_made(&mut self, _t: Transport) {}
    fn data_received(&mut self, data: &[u8]) {
        self.0.borrow_mut().extend_from_slice(data);
        // Ignored by run_until.
        Handle::current().stop();
    }
}

/// The set-up of the two tests below: a server that collects what it
/// reads, a timer 1 s (loop time) away whose firing sets the returned
/// flag, and a thread that connects and writes "hello" 20 ms (real time)
/// later. Runs the loop until the bytes are in and checks them; the
/// thread hands back its stream so the connection outlives the checks.
fn hello_from_a_thread_20ms_late(
    lp: &EventLoop,
) -> (Server, Rc<Cell<bool>>, JoinHandle<std::net::TcpStream>) {
    let h = lp.handle();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    let server = h
        .create_server(
            move || Collect(g.clone()),
            "127.0.0.1:0",
            ServerOptions::default(),
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    h.call_later(Duration::from_secs(1), move || f.set(true));
    let writer = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        s.write_all(b"hello").unwrap();
        s
    });
    lp.run_until(Duration::from_secs(20), || !got.borrow().is_empty())
        .unwrap();
    assert_eq!(&*got.borrow(), b"hello");
    (server, fired, writer)
}

#[test]
fn without_auto_advance_the_loop_waits_for_real_io_and_time_stands_still() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    h.set_auto_advance(false);
    assert!(!h.auto_advance());
    let start = h.time();
    let (server, fired, writer) = hello_from_a_thread_20ms_late(&lp);
    assert!(
        !fired.get(),
        "the timer must wait for the test to move time"
    );
    assert_eq!(h.time(), start);
    lp.advance(Duration::from_secs(1)).unwrap();
    assert!(fired.get());
    drop(writer.join().unwrap());
    server.close();
}

#[test]
fn an_auto_advance_threshold_lets_real_io_arrive_before_a_jump() {
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    h.set_auto_advance_after(Duration::from_millis(500));
    let start = h.time();
    let (server, fired, writer) = hello_from_a_thread_20ms_late(&lp);
    assert!(!fired.get(), "the bytes came within the threshold");
    assert_eq!(h.time(), start);
    // Nothing more in flight: after the threshold the clock jumps.
    let t0 = Instant::now();
    lp.run_until(Duration::from_secs(20), || fired.get())
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(500));
    assert_eq!(h.time() - start, Duration::from_secs(1));
    drop(writer.join().unwrap());
    server.close();
}

#[test]
fn without_a_threshold_a_jump_does_not_wait_for_real_io() {
    // The reason for the threshold: by default an idle loop jumps at
    // once, before a reply 20 ms away in real time can arrive.
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    h.call_later(Duration::from_secs(1), move || f.set(true));
    let arrived = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (a, remote) = (arrived.clone(), h.remote());
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        remote
            .call_soon_threadsafe(move || a.store(true, std::sync::atomic::Ordering::SeqCst))
            .unwrap();
    });
    lp.run_until(Duration::from_secs(20), || {
        arrived.load(std::sync::atomic::Ordering::SeqCst)
    })
    .unwrap();
    assert!(fired.get(), "the timer fired first");
    t.join().unwrap();
}

#[test]
fn run_until_checks_first_times_out_in_real_time_and_ignores_stop() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    lp.run_until(Duration::ZERO, move || {
        c.set(c.get() + 1);
        true
    })
    .unwrap();
    assert_eq!(calls.get(), 1, "a condition already true runs nothing");
    // A loop with nothing to do waits, bounded by the deadline.
    let t0 = Instant::now();
    let r = lp.run_until(Duration::from_millis(30), || false);
    assert!(matches!(r, Err(Error::Timeout)));
    assert!(t0.elapsed() >= Duration::from_millis(30));
    // stop() does not end it; the condition does.
    let n = Rc::new(Cell::new(0));
    let n2 = n.clone();
    fn tick(h: Handle, n: Rc<Cell<u32>>) {
        n.set(n.get() + 1);
        h.stop();
        let h2 = h.clone();
        h.call_later(Duration::from_millis(1), move || tick(h2, n));
    }
    let h2 = h.clone();
    h.call_soon(move || tick(h2, n2));
    lp.run_until(Duration::from_secs(10), || n.get() >= 5)
        .unwrap();
    assert_eq!(n.get(), 5);
    // Refused inside the loop.
    let lp = Rc::new(lp);
    let (l2, seen) = (lp.clone(), Rc::new(RefCell::new(None)));
    let s2 = seen.clone();
    lp.handle()
        .call_soon(move || *s2.borrow_mut() = Some(l2.run_until(Duration::ZERO, || true)));
    lp.run_until_idle().unwrap();
    assert!(matches!(
        seen.borrow_mut().take(),
        Some(Err(Error::LoopRunning))
    ));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Timers (some scheduling a follow-up from their callback) fire
        /// exactly once, at their own deadline, in deadline order, however
        /// the test steps the clock.
        #[test]
        fn timers_fire_once_at_their_deadline_whatever_the_steps(
            timers in proptest::collection::vec((0u64..5_000, proptest::option::of(0u64..2_000)), 1..40),
            steps in proptest::collection::vec(0u64..1_500, 1..20),
        ) {
            let lp = EventLoop::new_virtual().unwrap();
            let h = lp.handle();
            let start = h.time();
            let fired: Rc<RefCell<Vec<(usize, Duration)>>> = Rc::default();
            let mut expected = Vec::new();
            for (i, &(delay, child)) in timers.iter().enumerate() {
                let (f, h2) = (fired.clone(), h.clone());
                expected.push((i, Duration::from_millis(delay)));
                if let Some(c) = child {
                    expected.push((1000 + i, Duration::from_millis(delay + c)));
                }
                h.call_later(Duration::from_millis(delay), move || {
                    f.borrow_mut().push((i, h2.time() - start));
                    if let Some(c) = child {
                        let (f, h3) = (f.clone(), h2.clone());
                        h2.call_later(Duration::from_millis(c), move || {
                            f.borrow_mut().push((1000 + i, h3.time() - start))
                        });
                    }
                });
            }
            for s in steps {
                lp.advance(Duration::from_millis(s)).unwrap();
                let now = h.time() - start;
                // Nothing due is left unfired.
                prop_assert!(fired.borrow().iter().all(|(_, t)| *t <= now));
                let due = expected.iter().filter(|(_, t)| *t <= now).count();
                prop_assert_eq!(fired.borrow().len(), due);
            }
            lp.advance(Duration::from_millis(10_000)).unwrap();
            let got = fired.borrow().clone();
            prop_assert!(got.windows(2).all(|w| w[0].1 <= w[1].1), "out of order: {:?}", got);
            let mut got_sorted = got.clone();
            got_sorted.sort();
            expected.sort();
            prop_assert_eq!(got_sorted, expected);
        }
    }
}

#[test]
fn a_delay_of_duration_max_means_never_and_does_not_panic() {
    // Instant + Duration::MAX overflows; call_later, sleep, timeout and
    // advance used to panic on it.
    let lp = EventLoop::new_virtual().unwrap();
    let h = lp.handle();
    let start = h.time();
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    let t = h.call_later(Duration::MAX, move || f.set(true));
    assert!(t.when() > start + Duration::from_secs(50 * 365 * 24 * 3600));
    let h2 = h.clone();
    let r = lp
        .run_until_complete(async move { h2.timeout(Duration::MAX, async { 5 }).await })
        .unwrap();
    assert_eq!(r.unwrap(), 5);
    lp.advance(Duration::from_secs(3600)).unwrap();
    assert!(!fired.get());
    t.cancel();
    let h3 = h.clone();
    let slept = lp.run_until_complete(async move {
        h3.timeout(Duration::from_secs(1), h3.sleep(Duration::MAX))
            .await
    });
    assert!(matches!(slept.unwrap(), Err(Error::Timeout)));
    lp.advance(Duration::MAX).unwrap();
    assert!(h.time() > start);
}
