//! `TempDir`: a private directory for a test's files, removed (with its contents) on drop.
//!
//! The one temporary-directory type of the whole test suite: the integration tests reach it as
//! `common::TempDir`, and the library's unit tests compile this same file (`src/lib.rs` includes
//! it under `cfg(test)`), so it must need nothing but `std`.

// Each test binary, and the library's unit tests, use a different subset of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

static TEMP_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A private directory under the system temp dir, removed (with its contents) on drop.
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub(crate) fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "imdstun-test-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|error| panic!("creating {}: {error}", path.display()));
        TempDir { path }
    }

    /// The directory itself.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Writes `contents` to `name` inside the directory and returns its path as a string.
    pub(crate) fn file(&self, name: &str, contents: &[u8]) -> String {
        let path = self.path.join(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        path.to_str().expect("temp paths are UTF-8").to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
