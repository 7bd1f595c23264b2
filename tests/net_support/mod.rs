//! Helpers shared by the socket tests (`udp`, `unix`, `unix_datagram`):
//! bounded waits and unique socket names that clean up after themselves.
//!
//! Every wait has a deadline, so a broken transport fails a test instead
//! of hanging it.

#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use protoloop::testing::{Checked, LifecycleChecker};
use protoloop::{EventLoop, Handle, UnixAddr};

/// How long any one wait may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// A unique socket path in the temp dir, removed on drop.
pub struct TempPath(PathBuf);

impl TempPath {
    pub fn new(what: &str) -> TempPath {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("protoloop-{}-{what}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TempPath(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A unique abstract name.
pub fn abstract_name(what: &str) -> UnixAddr {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    UnixAddr::abstract_name(format!("protoloop-{}-{what}-{n}", std::process::id()))
}

/// Run `fut` on `lp`, failing the test if it takes longer than three
/// [`WAIT`]s.
pub fn run<F>(lp: &EventLoop, fut: F) -> F::Output
where
    F: Future + 'static,
    F::Output: 'static,
{
    let h = lp.handle();
    let out = lp
        .run_until_complete(async move { h.timeout(WAIT * 3, fut).await })
        .expect("loop stopped before the test finished")
        .unwrap_or_else(|_| panic!("test body did not finish within {:?}", WAIT * 3));
    CHECKER.with(|c| c.assert_ok());
    out
}

thread_local! {
    /// The lifecycle checker of the test running on this thread: protocols
    /// wrapped with [`checked`] are checked, and [`run`] fails the test on
    /// any breach of the callback contract.
    pub static CHECKER: LifecycleChecker = LifecycleChecker::new();
}

/// `protocol` under this test's lifecycle checker.
pub fn checked<P>(protocol: P) -> Checked<P> {
    CHECKER.with(|c| c.wrap(protocol))
}

/// Poll `cond` every millisecond until it holds; panic after [`WAIT`].
pub async fn wait_until(h: &Handle, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        h.sleep(Duration::from_millis(1)).await;
    }
}
