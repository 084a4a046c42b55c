//! Hashing for routing tables: seeded, so that whoever declares bindings cannot aim collisions
//! at a table, and deterministic, so that a seed reproduces a run (this crate reads no random
//! source; the embedder passes the seed in). See ADR 0006.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

/// The hash builder every routing table uses: foldhash with a per-topology seed.
#[derive(Debug, Clone, Copy)]
pub struct SeededState(u64);

impl SeededState {
    /// A builder for `seed`. Pass a random seed in production; any constant in tests.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }
}

impl BuildHasher for SeededState {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        foldhash::fast::FixedState::with_seed(self.0).build_hasher()
    }
}

/// A hash map with the seeded hasher.
pub type Map<K, V> = HashMap<K, V, SeededState>;
/// A hash set with the seeded hasher.
pub type Set<K> = HashSet<K, SeededState>;

/// A 64-bit hash of `octets` that is the same on every node, build and run: FNV-1a followed by
/// the splitmix64 finaliser, so that nearby inputs land far apart. Used where a hash decides
/// placement that must not move across restarts (the consistent-hash exchange), never for
/// tables an attacker can fill.
pub fn stable_hash(octets: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in octets {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_is_fixed() {
        // Pinned values: changing the function would move every consistent-hash placement.
        assert_eq!(stable_hash(b"hello"), 1_656_767_905_311_477_007);
        assert_ne!(stable_hash(b"a"), stable_hash(b"b"));
    }
}
