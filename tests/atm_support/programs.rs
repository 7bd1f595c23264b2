//! The programs as a user runs them: `customer` and `bank` against the
//! others, their command-line errors, and `atm demo`, the README's first
//! command.

use super::atm_support::{ATM, BANK, CUSTOMER, Rig, free_port, run_program};

#[test]
fn atm_demo_runs_the_whole_demo_and_exits_0() {
    let (status, out, err) = run_program(ATM, &["demo"]);
    assert!(
        status.success(),
        "exit {status}\nstdout:\n{out}\nstderr:\n{err}"
    );
    for line in [
        "Jane Doe withdraws 100: success=true balance=0 (as expected)",
        "John Doe withdraws 100: success=true balance=400 (as expected)",
        "Anonymous withdraws 100: success=false balance=0 (as expected)",
        "demo: ATM stopped with SIGTERM: exit status 0",
        "demo: all 3 replies as expected",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing `{line}` in:\n{out}"
        );
    }
}

#[test]
fn the_customer_program_prints_the_reply() {
    let rig = Rig::start();
    let atm = rig.ctx().atm.to_string();
    // The ATM runs on the rig's loop, which must turn while the customer
    // program talks to it: run the program from a task.
    let out = rig.run(move |cx| async move {
        let args = ["--atm", atm.as_str(), "withdraw", "John Doe", "100"];
        let p =
            cx.h.create_subprocess_exec(
                CUSTOMER,
                args,
                protoloop::SubprocessOptions::default().kill_on_drop(true),
            )
            .unwrap();
        p.communicate(None).await.unwrap()
    });
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "success=true balance=400\n"
    );
    rig.finish_ok();
}

#[test]
fn the_customer_program_fails_when_no_atm_answers() {
    let atm = format!("127.0.0.1:{}", free_port());
    let (status, out, err) = run_program(CUSTOMER, &["--atm", &atm, "deposit", "Jane Doe", "1"]);
    assert_eq!(status.code(), Some(1), "stdout {out:?} stderr {err:?}");
    assert!(out.is_empty());
    assert!(
        err.starts_with(&format!(
            "customer: no reply from the ATM at {atm}: no connection"
        )),
        "{err}"
    );
}

#[test]
fn bad_command_lines_are_refused_with_usage() {
    for (program, args, says) in [
        (ATM, &["--bogus"][..], "unexpected argument `--bogus`"),
        (
            ATM,
            &["--bank-wait", "soon"],
            "expected a number of seconds, got `soon`",
        ),
        (ATM, &["--listen"], "--listen needs a value"),
        (ATM, &["demo", "now"], "`demo` takes no arguments"),
        (BANK, &["--balance", "Jane Doe"], "expected NAME=AMOUNT"),
        (BANK, &["--balance", "Jane Doe=lots"], "got `lots`"),
        (
            CUSTOMER,
            &["borrow", "Jane Doe", "1"],
            "expected `deposit` or `withdraw`, got `borrow`",
        ),
        (CUSTOMER, &["withdraw", "Jane Doe"], "got 2 arguments"),
        (
            CUSTOMER,
            &["withdraw", "Jane Doe", "NaN"],
            "expected a number, got `NaN`",
        ),
    ] {
        let (status, out, err) = run_program(program, args);
        assert_eq!(status.code(), Some(2), "{program} {args:?}: {err}");
        assert!(out.is_empty(), "{program} {args:?}: {out}");
        assert!(
            err.contains(says),
            "{program} {args:?}: expected `{says}` in {err}"
        );
        assert!(err.contains("usage:"), "{program} {args:?}: {err}");
    }
}

#[test]
fn an_atm_that_cannot_listen_says_so() {
    // Listen where the bank listens: the port is taken.
    let rig = Rig::start();
    let bank = rig.ctx().bank.local_addr().to_string();
    let out = rig.run(move |cx| async move {
        let args = ["--bank", bank.as_str(), "--listen", bank.as_str()];
        let p =
            cx.h.create_subprocess_exec(
                ATM,
                args,
                protoloop::SubprocessOptions::default().kill_on_drop(true),
            )
            .unwrap();
        p.communicate(None).await.unwrap()
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("atm: could not listen for customers on"),
        "{err}"
    );
    rig.finish_ok();
}

#[test]
fn the_bank_program_serves_an_atm() {
    use protoloop::EventLoop;
    use protoloop::demo::child::atm;
    use protoloop::testing::{Program, Ready, Stream};

    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (zoe, jane, status, stdout) = lp
        .run_until_complete(async move {
            let bank = Program::new(BANK)
                .args(["--listen", "127.0.0.1:0", "--balance", "Zoë=12.5"])
                .ready(Ready::line(Stream::Stdout, "bank: listening on "))
                .start(&h)
                .await
                .unwrap();
            let addr = bank.addr().unwrap().to_string();
            let args = ["--bank", addr.as_str(), "--listen", "127.0.0.1:0"];
            let atm = atm(ATM, args).start(&h).await.unwrap();
            let customer = protoloop::demo::customer::Customer::new(&h, atm.addr().unwrap());
            let zoe = customer.withdraw("Zoë", 2.5).await.unwrap();
            let jane = customer.withdraw("Jane Doe", 1.0).await.unwrap();
            assert!(atm.stop().await.unwrap().success(), "{}", atm.stderr());
            let status = bank.stop().await.unwrap();
            (zoe, jane, status, bank.stdout())
        })
        .unwrap();
    assert_eq!((zoe.success, zoe.balance), (true, 10.0));
    // --balance replaces the demo's balances.
    assert_eq!((jane.success, jane.balance), (false, 0.0));
    assert!(status.success(), "{status}");
    assert!(stdout.contains("bank: Zoë has 12.5\n"), "{stdout}");
    assert!(stdout.contains("bank: Jane Doe has 0\n"), "{stdout}");
}

#[test]
fn the_demo_says_why_when_the_atm_cannot_be_started() {
    use protoloop::EventLoop;
    use protoloop::demo::tour::{self, TourError};
    use protoloop::testing::ProgramError;

    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let r = lp
        .run_until_complete(async move { tour::run(&h, "/nonexistent/atm", |_| {}).await })
        .unwrap();
    match r {
        Err(e @ TourError::Atm(ProgramError::Spawn { .. })) => {
            assert!(e.to_string().contains("/nonexistent/atm"), "{e}")
        }
        other => panic!("expected a spawn error, got {other:?}"),
    }
}

#[test]
fn a_child_that_never_says_it_listens_is_killed_after_the_deadline() {
    use protoloop::EventLoop;
    use protoloop::demo::child::atm;
    use protoloop::testing::ProgramError;
    use std::time::Duration;

    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let args = ["-c", "echo warming up; echo 'not ready' >&2; exec sleep 30"];
    let r = lp
        .run_until_complete(
            atm("/bin/sh", args)
                .ready_within(Duration::from_millis(300))
                .start(&h),
        )
        .unwrap();
    match r {
        Err(e @ ProgramError::Timeout { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("print a line containing `atm: listening on ` on stdout within 300ms"),
                "{msg}"
            );
            assert!(msg.ends_with("--- its stderr ---\nnot ready"), "{msg}");
        }
        other => panic!("expected a silent child, got {other:?}"),
    }
}
