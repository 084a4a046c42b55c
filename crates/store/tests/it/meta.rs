//! The metadata store: atomic durable batches, prefix scans, compaction, and consistency after
//! a crash at any point, compaction included.

use std::collections::BTreeMap;
use std::sync::Arc;
use warren_store::{Backend, Change, CrashBackend, Damage, Fault, MemoryBackend, MetaStore};

fn put(k: &str, v: &str) -> Change {
    Change::Put(k.as_bytes().to_vec(), v.as_bytes().to_vec())
}

fn del(k: &str) -> Change {
    Change::Delete(k.as_bytes().to_vec())
}

fn contents(m: &MetaStore) -> BTreeMap<Vec<u8>, Vec<u8>> {
    m.scan(b"").map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

fn reopen(b: Arc<dyn Backend>) -> (MetaStore, Vec<Damage>) {
    MetaStore::open(b, "meta").expect("open")
}

#[test]
fn batches_survive_a_reopen_and_scans_follow_prefixes() {
    let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let (mut m, damage) = reopen(b.clone());
    assert!(damage.is_empty() && m.is_empty());
    m.apply(&[
        put("vhost/a", "1"),
        put("vhost/b", "2"),
        put("user/guest", "x"),
    ])
    .unwrap();
    m.apply(&[del("vhost/a"), put("vhost/c", "3")]).unwrap();
    let scanned: Vec<_> = m.scan(b"vhost/").map(|(k, _)| k.to_vec()).collect();
    assert_eq!(scanned, [b"vhost/b".to_vec(), b"vhost/c".to_vec()]);
    let before = contents(&m);
    drop(m);
    let (m, damage) = reopen(b);
    assert!(damage.is_empty());
    assert_eq!(contents(&m), before);
    assert_eq!(m.get(b"user/guest"), Some(&b"x"[..]));
    assert_eq!(m.len(), 3);
}

#[test]
fn a_batch_is_all_or_nothing_across_a_crash() {
    let crash = CrashBackend::new();
    let (mut m, _) = reopen(Arc::new(crash.clone()));
    m.apply(&[put("a", "1")]).unwrap();
    crash.inject(Fault::Sync);
    assert!(m.apply(&[put("b", "2"), put("c", "3"), del("a")]).is_err());
    // Whatever part of the unsynced batch reached the disk, none of it is applied.
    for torn in [0, 1, 5, 12, 20, 1000] {
        let (after, _) = reopen(Arc::new(crash.crash(torn)));
        let got = contents(&after);
        let full: BTreeMap<_, _> = [
            (b"b".to_vec(), b"2".to_vec()),
            (b"c".to_vec(), b"3".to_vec()),
        ]
        .into_iter()
        .collect();
        let before: BTreeMap<_, _> = [(b"a".to_vec(), b"1".to_vec())].into_iter().collect();
        assert!(got == before || got == full, "torn {torn}: {got:?}");
    }
}

#[test]
fn compaction_keeps_the_state_and_drops_old_segments() {
    let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let (mut m, _) = reopen(b.clone());
    let big = "v".repeat(20_000);
    for i in 0..200 {
        m.apply(&[
            put("key", &format!("{i}{big}")),
            put(&format!("k{}", i % 5), "x"),
        ])
        .unwrap();
    }
    // 4 MB written for 20 KB of live data: compacted along the way.
    let size: u64 = b
        .list()
        .unwrap()
        .iter()
        .map(|n| b.open(n).unwrap().len().unwrap())
        .sum();
    assert!(
        size < 3 * 1024 * 1024,
        "the log was compacted: {size} octets"
    );
    let expected = contents(&m);
    drop(m);
    let (m, damage) = reopen(b);
    assert!(damage.is_empty());
    assert_eq!(contents(&m), expected);
    assert!(m.get(b"key").unwrap().starts_with(b"199"));
}

#[test]
fn a_crash_anywhere_in_a_compaction_leaves_the_same_state() {
    // Fail the compaction's data sync (0), its directory sync (1), or nothing (2), then crash
    // with various torn tails: the state is always the one before the compaction (which
    // changes nothing).
    for failing in 0..3 {
        let crash = CrashBackend::new();
        let (mut m, _) = reopen(Arc::new(crash.clone()));
        m.apply(&[put("a", "1"), put("b", "2")]).unwrap();
        m.apply(&[del("a"), put("c", "3")]).unwrap();
        let expected = contents(&m);
        if failing == 0 {
            crash.inject(Fault::Sync);
        } else if failing == 1 {
            crash.inject(Fault::SyncDir);
        }
        let result = m.compact();
        if failing < 2 {
            assert!(result.is_err(), "compaction fails at step {failing}");
        } else {
            result.unwrap();
        }
        for torn in [0, 3, 1000] {
            let (after, _) = reopen(Arc::new(crash.crash(torn)));
            assert_eq!(contents(&after), expected, "failing {failing}, torn {torn}");
        }
    }
}

#[test]
fn a_damaged_batch_is_reported_and_the_others_applied() {
    let mem = MemoryBackend::new();
    let b: Arc<dyn Backend> = Arc::new(mem.clone());
    let (mut m, _) = reopen(b.clone());
    m.apply(&[put("a", "1")]).unwrap();
    m.apply(&[put("b", "2")]).unwrap();
    m.apply(&[put("c", "3")]).unwrap();
    drop(m);
    let name = mem.list().unwrap().into_iter().next().unwrap();
    let f = mem.open(&name).unwrap();
    let mut v = vec![0; f.len().unwrap() as usize];
    f.read_at(&mut v, 0).unwrap();
    // Inside the second record's payload: after the segment header (16) and the first record
    // (a 10-octet header and a 15-octet batch: count 4, op 1, key length 4, key 1, value
    // length 4, value 1).
    let second = 16 + (10 + 15) + 10 + 5;
    v[second] ^= 1;
    f.write_at(&v, 0).unwrap();
    let (m, damage) = reopen(b);
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert!(matches!(damage[0], Damage::Skipped { .. }));
    assert_eq!(m.get(b"a"), Some(&b"1"[..]));
    assert_eq!(m.get(b"b"), None);
    assert_eq!(m.get(b"c"), Some(&b"3"[..]));
}
