//! The end-of-iteration hooks (`Handle::at_iteration_end`), and what
//! scheduling does on a closed loop.

use std::cell::RefCell;
use std::rc::Rc;

use super::{EventLoop, ExceptionKind};

type Log = Rc<RefCell<Vec<String>>>;

fn note(log: &Log, s: &str) {
    log.borrow_mut().push(s.to_string());
}

#[test]
fn hooks_run_after_the_iterations_callbacks_and_tasks() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let log: Log = Rc::default();
    let l = log.clone();
    let h2 = h.clone();
    h.call_soon(move || {
        let l2 = l.clone();
        h2.at_iteration_end(Box::new(move || note(&l2, "hook")));
        let l3 = l.clone();
        // A task woken in this iteration runs before the hook.
        drop(h2.spawn(async move { note(&l3, "task") })); // runs on detached
        let l4 = l.clone();
        // A callback scheduled now waits for the next iteration.
        h2.call_soon(move || note(&l4, "next callback"));
        note(&l, "callback");
    });
    let h3 = h.clone();
    h.call_later(std::time::Duration::from_millis(1), move || h3.stop());
    lp.run_forever().unwrap();
    assert_eq!(*log.borrow(), ["callback", "task", "hook", "next callback"]);
}

#[test]
fn a_hook_registered_by_a_hook_runs_one_iteration_later_without_blocking() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let log: Log = Rc::default();
    let (l, h2) = (log.clone(), h.clone());
    h.at_iteration_end(Box::new(move || {
        note(&l, "first");
        let (l2, h3) = (l.clone(), h2.clone());
        h2.at_iteration_end(Box::new(move || {
            note(&l2, "second");
            h3.stop();
        }));
    }));
    // No timer and no I/O: a poll that blocked here would hang the test.
    lp.run_forever().unwrap();
    assert_eq!(*log.borrow(), ["first", "second"]);
}

#[test]
fn a_panicking_hook_is_reported_and_the_others_still_run() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let seen: Rc<RefCell<Vec<(ExceptionKind, String)>>> = Rc::default();
    let s = seen.clone();
    h.set_exception_handler(move |c| s.borrow_mut().push((c.kind, c.message.clone())));
    let log: Log = Rc::default();
    h.at_iteration_end(Box::new(|| panic!("hook boom")));
    let (l, h2) = (log.clone(), h.clone());
    h.at_iteration_end(Box::new(move || {
        note(&l, "ran");
        h2.stop();
    }));
    lp.run_forever().unwrap();
    assert_eq!(*log.borrow(), ["ran"]);
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, ExceptionKind::CallbackPanic);
    assert_eq!(seen[0].1, "an end-of-iteration hook panicked: hook boom");
}

#[test]
fn closing_the_loop_drops_hooks_that_never_ran() {
    let lp = EventLoop::new().unwrap();
    let held = Rc::new(());
    let h2 = held.clone();
    lp.handle().at_iteration_end(Box::new(move || drop(h2)));
    assert_eq!(Rc::strong_count(&held), 2);
    lp.close().unwrap();
    assert_eq!(Rc::strong_count(&held), 1);
}

#[test]
fn scheduling_on_a_closed_loop_drops_the_callback_and_cancels_the_handle() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    lp.close().unwrap();
    let held = Rc::new(());
    let (a, b, c) = (held.clone(), held.clone(), held.clone());
    let soon = h.call_soon(move || drop(a));
    let later = h.call_later(std::time::Duration::from_secs(1), move || drop(b));
    h.at_iteration_end(Box::new(move || drop(c)));
    assert!(soon.cancelled());
    assert!(later.cancelled());
    assert_eq!(Rc::strong_count(&held), 1, "nothing kept by a closed loop");
    let stats = h.stats();
    assert_eq!((stats.ready, stats.timers), (0, 0));
}
