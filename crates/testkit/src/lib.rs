//! # warren-testkit
//!
//! Test support, a dev-dependency only.
//!
//! It holds the one proptest configuration every crate's property tests use
//! ([`proptest_config`]) and a scripted AMQP client ([`peer::Peer`]: frame builders over any
//! byte stream, an in-memory duplex or TCP) for exact protocol tests against the broker. It
//! will hold the deterministic multi-node simulation harness and fault-injecting storage
//! backends. (The codec's own state-machine tests script frames directly.)

pub mod peer;

use proptest::test_runner::{Config, RngSeed};

/// The seed property tests run from unless `WARREN_PROPTEST_SEED` says otherwise.
pub const DEFAULT_PROPTEST_SEED: u64 = 0x5741_5252_454e;

/// A proptest configuration with `cases` cases and a fixed seed, so that a failure in CI
/// reproduces exactly. `PROPTEST_RNG_SEED` is not read; set `WARREN_PROPTEST_SEED` to explore
/// other seeds. Nothing is persisted between runs.
pub fn proptest_config(cases: u32) -> Config {
    let seed = std::env::var("WARREN_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_PROPTEST_SEED);
    Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    }
}

/// A fresh, empty directory under the system's temporary directory (unique per process and
/// call), removed with everything in it when dropped.
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// A new directory named after `tag`, not created yet (whoever uses it creates it).
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "warren-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
