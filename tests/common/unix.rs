//! Unique Unix socket names for the socket suites: paths in the temp
//! dir that clean up after themselves, and abstract names.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use protoloop::UnixAddr;

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
