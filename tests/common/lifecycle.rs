//! One lifecycle checker per test thread, and a bounded `run` that fails
//! the test on any breach of the callback contract by a protocol wrapped
//! with [`checked`]. Shared by the pipe, subprocess and socket suites.

use std::future::Future;
use std::time::Duration;

use protoloop::EventLoop;
use protoloop::testing::{Checked, LifecycleChecker};

thread_local! {
    /// The lifecycle checker of the test running on this thread:
    /// protocols wrapped with [`checked`] are checked, and [`run`] fails
    /// the test on any breach of the callback contract.
    pub static CHECKER: LifecycleChecker = LifecycleChecker::new();
}

/// `protocol` under this test's lifecycle checker.
pub fn checked<P>(protocol: P) -> Checked<P> {
    CHECKER.with(|c| c.wrap(protocol))
}

/// Run `fut` on `lp`, failing the test if it takes longer than `limit`
/// or if a protocol under [`CHECKER`] saw its callback contract broken.
pub fn run<F>(lp: &EventLoop, limit: Duration, fut: F) -> F::Output
where
    F: Future + 'static,
    F::Output: 'static,
{
    let out = super::run(lp, limit, fut);
    CHECKER.with(|c| c.assert_ok());
    out
}
