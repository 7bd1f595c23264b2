//! The `Process` convenience: communicate, read_line, stop, options.

use super::*;

#[test]
fn env_cwd_and_null_streams() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let p = h
        .create_subprocess_shell(
            "echo \"$PROTOLOOP_X\"; pwd; cat; echo \"${HOME-unset}\"",
            SubprocessOptions::default()
                .stdin(Stdio::Null)
                .stderr(Stdio::Null)
                .env("PROTOLOOP_X", "hello")
                .env_remove("HOME")
                .current_dir("/"),
        )
        .unwrap();
    assert!(p.stdin().is_none());
    let out = run(&lp, DEADLINE, p.communicate(None)).unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"hello\n/\nunset\n");
    // Input for a stdin that is not a pipe is an error, not dropped.
    let e = run(&lp, DEADLINE, p.communicate(Some(b"x"))).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)));
}

#[test]
fn communicate_read_line_and_stop() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let p = h
        .create_subprocess_exec(
            "cat",
            std::iter::empty::<&str>(),
            SubprocessOptions::default(),
        )
        .unwrap();
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let inp = input.clone();
    let out = run(
        &lp,
        DEADLINE,
        async move { p.communicate(Some(&inp)).await },
    )
    .unwrap();
    assert!(out.status.success());
    assert!(out.stdout == input);

    // A server-like child: read its first line, then stop it; it ignores
    // SIGTERM, so stop must fall back to SIGKILL after the grace period.
    let p = h
        .create_subprocess_shell(
            "trap '' TERM; echo ready; exec sleep 30",
            SubprocessOptions::default().kill_on_drop(true),
        )
        .unwrap();
    let (line, st) = run(&lp, DEADLINE, async move {
        let line = p.read_line(1).await.unwrap();
        let st = p.stop(Duration::from_millis(200)).await.unwrap();
        (line, st)
    });
    assert_eq!(line.as_deref(), Some(&b"ready\n"[..]));
    assert_eq!(st.signal(), Some(9));

    let p = h
        .create_subprocess_shell("printf 'a\\nb'; printf e >&2", SubprocessOptions::default())
        .unwrap();
    assert!(
        run(&lp, DEADLINE, p.read_line(0)).is_err(),
        "fd 0 is not collected"
    );
    let got = run(&lp, DEADLINE, async move {
        let a = p.read_line(1).await.unwrap();
        let b = p.read_line(1).await.unwrap();
        let c = p.read_line(1).await.unwrap();
        let e = p.read_line(2).await.unwrap();
        (a, b, c, e, p.take_output(2).unwrap())
    });
    assert_eq!(got.0.as_deref(), Some(&b"a\n"[..]));
    assert_eq!(got.1.as_deref(), Some(&b"b"[..]));
    assert_eq!(got.2, None);
    assert_eq!(got.3.as_deref(), Some(&b"e"[..]));
    assert!(got.4.is_empty());
}
