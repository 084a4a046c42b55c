//! The message store: messages written once for all their queues, acks that retire them,
//! recovery from summaries and scans, disk use that follows the live data, and crashes at
//! any point losing nothing synced and bringing back nothing acked and synced.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use warren_store::{
    Backend, CrashBackend, Fault, MemoryBackend, MessageRef, MessageStore, MessageStoreOptions,
    StoreError,
};

fn opts(segment_size: u64) -> MessageStoreOptions {
    MessageStoreOptions {
        segment_size,
        ..MessageStoreOptions::default()
    }
}

fn open(b: &Arc<dyn Backend>, segment_size: u64) -> (MessageStore, warren_store::Recovered) {
    MessageStore::open(b.clone(), opts(segment_size), |_| true).expect("open")
}

/// Each queue's message ids, as recovered.
fn ids(r: &warren_store::Recovered) -> BTreeMap<u64, Vec<u64>> {
    r.queues
        .iter()
        .map(|(q, m)| (*q, m.iter().map(|m| m.at.id).collect()))
        .collect()
}

#[test]
fn messages_come_back_in_order_for_each_queue_with_their_data() {
    let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let (mut s, rec) = open(&b, 1 << 20);
    assert!(rec.queues.is_empty());
    let a = put(&mut s, &[1], b"first").unwrap();
    let f = put(&mut s, &[1, 2, 3], b"fanout").unwrap();
    let c = put(&mut s, &[2], b"").unwrap();
    assert!(a.id < f.id && f.id < c.id, "ids grow in publish order");
    s.sync().unwrap();
    drop(s);
    let (s, rec) = open(&b, 1 << 20);
    assert_eq!(
        ids(&rec),
        BTreeMap::from([
            (1, vec![a.id, f.id]),
            (2, vec![f.id, c.id]),
            (3, vec![f.id])
        ])
    );
    let lens: Vec<u32> = rec.queues[&1].iter().map(|m| m.len).collect();
    assert_eq!(lens, vec![5, 6]);
    assert_eq!(s.read(&f).unwrap(), b"fanout");
    assert_eq!(s.read(&c).unwrap(), b"");
    assert!(rec.damage.is_empty());
    // Ids are never reused after a restart.
    let mut s = s;
    assert!(put(&mut s, &[1], b"next").unwrap().id > c.id);
}

#[test]
fn a_message_for_many_queues_is_written_once() {
    let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let (mut s, _) = open(&b, 1 << 20);
    let body = vec![7u8; 10_000];
    let before = s.stats().disk_bytes;
    put(&mut s, &(1..=10).collect::<Vec<u64>>(), &body).unwrap();
    let grew = s.stats().disk_bytes - before;
    assert!(
        grew < 10_000 + 200,
        "ten queues, one copy of the body: {grew} octets"
    );
    assert_eq!(s.stats().messages, 1);
}

#[test]
fn acks_retire_references_one_queue_at_a_time() {
    let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let (mut s, _) = open(&b, 1 << 20);
    let m = put(&mut s, &[1, 2], b"both").unwrap();
    let n = put(&mut s, &[1], b"one").unwrap();
    s.ack(1, &m).unwrap();
    s.sync().unwrap();
    assert_eq!(s.stats().messages, 2, "queue 2 still holds it");
    drop(s);
    let (mut s, rec) = open(&b, 1 << 20);
    assert_eq!(
        ids(&rec),
        BTreeMap::from([(1, vec![n.id]), (2, vec![m.id])])
    );
    s.ack(2, &m).unwrap();
    s.ack(1, &n).unwrap();
    assert_eq!(s.stats().messages, 0);
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(&b, 1 << 20);
    assert!(rec.queues.is_empty(), "{:?}", ids(&rec));
}

#[test]
fn references_to_unknown_queues_are_dropped_at_recovery() {
    let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let (mut s, _) = open(&b, 1 << 20);
    let m = put(&mut s, &[1, 9], b"x").unwrap();
    put(&mut s, &[9], b"y").unwrap();
    s.sync().unwrap();
    drop(s);
    let (s, rec) = MessageStore::open(b, opts(1 << 20), |q| q != 9).unwrap();
    assert_eq!(ids(&rec), BTreeMap::from([(1, vec![m.id])]));
    assert_eq!(s.stats().messages, 1);
}

#[test]
fn sealed_segments_are_recovered_from_their_summaries_and_a_bad_summary_is_scanned() {
    let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let (mut s, _) = open(&b, 4096);
    let mut expected = Vec::new();
    for i in 0..100u32 {
        expected.push(put(&mut s, &[1], &i.to_le_bytes().repeat(50)).unwrap());
    }
    s.sync().unwrap();
    let segments = s.stats().segments;
    assert!(segments > 5, "{segments} segments");
    drop(s);
    let (s, rec) = open(&b, 4096);
    let expected: Vec<u64> = expected.iter().map(|m: &MessageRef| m.id).collect();
    assert_eq!(
        rec.queues[&1].iter().map(|m| m.at.id).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(rec.scanned, 1, "only the last segment is read");
    assert_eq!(rec.summarized as u64, segments - 1);
    assert_eq!(
        s.read(&rec.queues[&1][3].at).unwrap(),
        3u32.to_le_bytes().repeat(50)
    );
    drop(s);
    // Damage one summary: that segment is scanned instead, nothing is lost.
    let name = b
        .list()
        .unwrap()
        .into_iter()
        .find(|n| n.ends_with(".idx"))
        .unwrap();
    let f = b.open(&name).unwrap();
    f.write_at(&[0xff], 20).unwrap();
    let (_, rec) = open(&b, 4096);
    assert_eq!(
        rec.queues[&1].iter().map(|m| m.at.id).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(rec.scanned, 2);
}

#[test]
fn disk_use_follows_the_live_data() {
    let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let (mut s, _) = open(&b, 8192);
    let body = vec![1u8; 500];
    let ids: Vec<MessageRef> = (0..200)
        .map(|_| put(&mut s, &[1], &body).unwrap())
        .collect();
    s.sync().unwrap();
    let full = s.stats().disk_bytes;
    assert!(full > 100_000);
    // Everything acked: every sealed segment goes.
    for id in &ids {
        s.ack(1, id).unwrap();
    }
    while s.compact().unwrap() {}
    let drained = s.stats();
    assert!(
        drained.disk_bytes <= 8192 + 1024,
        "after the drain: {drained:?}"
    );
    // A large active segment with nothing live is sealed and goes too.
    let fresh: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let (mut big, _) = open(&fresh, 1 << 20);
    let many: Vec<MessageRef> = (0..300)
        .map(|_| put(&mut big, &[1], &body).unwrap())
        .collect();
    for m in &many {
        big.ack(1, m).unwrap();
    }
    while big.compact().unwrap() {}
    let st = big.stats();
    assert!(st.disk_bytes < 1024, "a drained store shrinks: {st:?}");
    // Keep one message in ten: compaction moves the survivors and frees the rest.
    let ids: Vec<MessageRef> = (0..200)
        .map(|_| put(&mut s, &[1], &body).unwrap())
        .collect();
    let keep: Vec<MessageRef> = ids.iter().copied().step_by(10).collect();
    for id in ids.iter().filter(|i| !keep.contains(i)) {
        s.ack(1, id).unwrap();
    }
    while s.compact().unwrap() {}
    let st = s.stats();
    assert!(st.moved > 0, "{st:?}");
    assert!(
        st.disk_bytes < 3 * st.live_bytes + 2 * 8192,
        "disk {} for {} live octets",
        st.disk_bytes,
        st.live_bytes
    );
    // Read through the references the queue kept, from before the move.
    for id in &keep {
        assert_eq!(s.read(id).unwrap(), body);
    }
    drop(s);
    let (_, rec) = open(&b, 8192);
    assert_eq!(
        rec.queues[&1].iter().map(|m| m.at.id).collect::<Vec<_>>(),
        keep.iter().map(|m| m.id).collect::<Vec<_>>()
    );
}

#[test]
fn a_partly_acked_fanout_message_is_moved_with_only_the_queues_that_hold_it() {
    let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let (mut s, _) = open(&b, 4096);
    let m = put(&mut s, &[1, 2], &[5u8; 300]).unwrap();
    let filler: Vec<MessageRef> = (0..40)
        .map(|_| put(&mut s, &[3], &[0u8; 300]).unwrap())
        .collect();
    s.ack(1, &m).unwrap();
    for id in filler {
        s.ack(3, &id).unwrap();
    }
    while s.compact().unwrap() {}
    assert!(s.stats().moved >= 1);
    drop(s);
    let (_, rec) = open(&b, 4096);
    assert_eq!(ids(&rec), BTreeMap::from([(2, vec![m.id])]));
}

#[test]
fn a_failed_sync_stops_the_store_and_confirms_nothing() {
    let crash = CrashBackend::new();
    let b: Arc<dyn Backend> = Arc::new(crash.clone());
    let (mut s, _) = open(&b, 1 << 20);
    put(&mut s, &[1], b"a").unwrap();
    s.sync().unwrap();
    put(&mut s, &[1], b"b").unwrap();
    crash.inject(Fault::Sync);
    let ticket = s.begin_sync().unwrap().expect("something to sync");
    let err = ticket.run().expect_err("the sync fails");
    s.fail(&err);
    assert!(s.failure().is_some());
    assert!(matches!(
        put(&mut s, &[1], b"c"),
        Err(StoreError::Poisoned(_))
    ));
    assert!(matches!(s.sync(), Err(StoreError::Poisoned(_))));
}

#[derive(Debug, Clone)]
enum Op {
    Publish(Vec<u64>),
    Ack(usize, u64),
    Sync,
    Compact,
    /// A compaction whose n-th sync or directory sync fails: the store stops, as after an
    /// fsync error, and the machine crashes next.
    FailingCompact(Fault),
    /// A power cut (with this many octets of torn writes), then a restart.
    Crash(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::btree_set(1u64..4, 1..3)
            .prop_map(|s| Op::Publish(s.into_iter().collect())),
        6 => (any::<usize>(), 1u64..4).prop_map(|(i, q)| Op::Ack(i, q)),
        2 => Just(Op::Sync),
        2 => Just(Op::Compact),
        1 => prop_oneof![Just(Fault::Sync), Just(Fault::SyncDir)].prop_map(Op::FailingCompact),
        1 => (0usize..300).prop_map(Op::Crash),
    ]
}

/// The model of the property test: which references exist, and what a crash may do to them.
#[derive(Default)]
struct Model {
    /// Held now.
    live: BTreeSet<(u64, u64)>,
    /// Ever published.
    all: BTreeSet<(u64, u64)>,
    /// Acked since the last sync (a crash may bring them back).
    acked: BTreeSet<(u64, u64)>,
    /// Held at the last sync: a crash must keep them (unless acked since).
    durable_live: BTreeSet<(u64, u64)>,
    /// Gone for good: acked before a sync, or not recovered by a crash. Must never come back.
    gone: BTreeSet<(u64, u64)>,
    refs: BTreeMap<u64, MessageRef>,
    bodies: BTreeMap<u64, Vec<u8>>,
    /// Publishes so far (each body is unique).
    published: u64,
}

proptest! {
    #![proptest_config(warren_testkit::proptest_config(96))]

    /// Crashes anywhere (with any torn tail, also in the middle of a compaction that failed
    /// to sync), any number of times: every reference synced and not acked survives, a
    /// reference whose ack was synced (or that a crash already dropped) never comes back,
    /// nothing is invented, and every recovered message reads back its own body.
    #[test]
    fn crashes_lose_nothing_synced_and_revive_nothing_acked(
        ops in prop::collection::vec(op(), 1..160),
        segment_size in 300u64..3000,
    ) {
        let mut crash = CrashBackend::new();
        let b: Arc<dyn Backend> = Arc::new(crash.clone());
        let (mut s, _) = MessageStore::open(b, opts(segment_size), |_| true).unwrap();
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Publish(queues) => {
                    m.published += 1;
                    let body = id_body(m.published);
                    let at = put(&mut s, &queues, &body).unwrap();
                    m.refs.insert(at.id, at);
                    // An id nothing on disk names any more may be given again after a crash:
                    // a new message (its body tells it from the old one).
                    m.bodies.insert(at.id, body);
                    m.gone.retain(|r| r.1 != at.id);
                    for q in queues {
                        m.live.insert((q, at.id));
                        m.all.insert((q, at.id));
                    }
                }
                Op::Ack(i, q) => {
                    let held: Vec<(u64, u64)> = m.live.iter().copied().filter(|r| r.0 == q).collect();
                    if !held.is_empty() {
                        let r = held[i % held.len()];
                        s.ack(r.0, &m.refs[&r.1]).unwrap();
                        m.live.remove(&r);
                        m.acked.insert(r);
                    }
                }
                // Compaction syncs what it needs, but promises no sync of the rest. The
                // references queues keep still read their messages after a move.
                Op::Compact => {
                    while s.compact().unwrap() {}
                    for (_, id) in &m.live {
                        prop_assert_eq!(&s.read(&m.refs[id]).unwrap(), &m.bodies[id]);
                    }
                }
                Op::FailingCompact(fault) => {
                    crash.inject(fault);
                    loop {
                        match s.compact() {
                            Ok(true) => {}
                            Ok(false) => break,
                            Err(_) => {
                                prop_assert!(s.failure().is_some(), "an fsync error stops the store");
                                break;
                            }
                        }
                    }
                    // Then the machine crashes (a fault not reached goes with it).
                    crash = crash.restarted(0);
                    let b: Arc<dyn Backend> = Arc::new(crash.clone());
                    let (reopened, rec) = MessageStore::open(b, opts(segment_size), |_| true).unwrap();
                    s = reopened;
                    let got = rec_refs(&rec, &mut m);
                    check(&mut m, got)?;
                }
                Op::Sync => {
                    s.sync().unwrap();
                    m.durable_live = m.live.clone();
                    m.gone.extend(std::mem::take(&mut m.acked));
                }
                Op::Crash(torn) => {
                    crash = crash.restarted(torn);
                    let b: Arc<dyn Backend> = Arc::new(crash.clone());
                    let (reopened, rec) = MessageStore::open(b, opts(segment_size), |_| true).unwrap();
                    s = reopened;
                    let got = rec_refs(&rec, &mut m);
                    for (q, id) in &got {
                        prop_assert_eq!(&s.read(&m.refs[id]).unwrap(), &m.bodies[id], "queue {}", q);
                    }
                    check(&mut m, got)?;
                }
            }
        }
    }
}

/// The references a recovery found, remembering where each message is now.
fn rec_refs(rec: &warren_store::Recovered, m: &mut Model) -> BTreeSet<(u64, u64)> {
    let mut got = BTreeSet::new();
    for (q, ms) in &rec.queues {
        for sm in ms {
            m.refs.insert(sm.at.id, sm.at);
            got.insert((*q, sm.at.id));
        }
    }
    got
}

/// Checks a recovery against the model, then makes what it found the new truth.
fn check(m: &mut Model, got: BTreeSet<(u64, u64)>) -> Result<(), TestCaseError> {
    for r in &m.durable_live {
        prop_assert!(got.contains(r) || m.acked.contains(r), "lost {:?}", r);
    }
    for r in &got {
        prop_assert!(m.all.contains(r), "invented {:?}", r);
        prop_assert!(!m.gone.contains(r), "{:?} came back", r);
    }
    // What did not come back is gone for good; what came back is held (and durable).
    m.gone
        .extend(m.all.iter().filter(|r| !got.contains(r)).copied());
    m.live = got.clone();
    m.durable_live = got;
    m.acked.clear();
    Ok(())
}

fn id_body(n: u64) -> Vec<u8> {
    n.to_le_bytes().repeat(20)
}

/// Publishes with the data's length as the size recovery gives back.
fn put(s: &mut MessageStore, queues: &[u64], data: &[u8]) -> Result<MessageRef, StoreError> {
    s.publish(queues, data, data.len() as u32)
}

/// Found by the `store_recovery` fuzz target: a record that passes its checksum but names an
/// id the store never gives out (here the largest) made recovery overflow. It is reported and
/// skipped; the store goes on.
#[test]
fn a_checked_record_the_store_did_not_write_is_reported_and_skipped() {
    let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    {
        let (mut log, _) = warren_store::Log::open(
            b.clone(),
            warren_store::LogOptions {
                prefix: "msgs".into(),
                segment_size: 1 << 20,
            },
        )
        .unwrap();
        let mut publish = u64::MAX.to_le_bytes().to_vec();
        publish.extend_from_slice(&1u32.to_le_bytes());
        publish.extend_from_slice(&1u16.to_le_bytes());
        publish.extend_from_slice(&1u64.to_le_bytes());
        publish.push(b'x');
        log.append(1, &publish).unwrap();
        log.append(2, &[1, 0, 0]).unwrap();
        log.append(9, b"unknown kind").unwrap();
        log.sync().unwrap();
    }
    let (mut s, rec) = open(&b, 1 << 20);
    assert!(rec.queues.is_empty());
    assert_eq!(rec.damage.len(), 3, "{:?}", rec.damage);
    let m = put(&mut s, &[1], b"after").unwrap();
    assert_eq!(m.id, 1);
    assert_eq!(s.read(&m).unwrap(), b"after");
}

/// A compaction cut short after its copies were synced but before the old segment's removal
/// was durable leaves two copies of a message; the older one names queues whose acks may go
/// later. Opening the store finishes that compaction first: the old segment is gone before
/// anything else happens (else, once the segment of the newer copy and its acks were removed,
/// a later crash would revive the message for a queue that had acked it).
#[test]
fn a_compaction_cut_short_is_finished_when_the_store_opens() {
    let crash = CrashBackend::new();
    let b: Arc<dyn Backend> = Arc::new(crash.clone());
    let (mut s, _) = open(&b, 700);
    let body = [7u8; 150];
    let m = put(&mut s, &[1, 2], &body).unwrap();
    let dead: Vec<MessageRef> = (0..2).map(|_| put(&mut s, &[9], &body).unwrap()).collect();
    // Fillers, leaving room in the active segment for the copy (so that the sync after the
    // copy needs no directory sync: the failure hits the removal).
    for _ in 0..5 {
        put(&mut s, &[8], &body).unwrap();
    }
    s.ack(1, &m).unwrap();
    for d in &dead {
        s.ack(9, d).unwrap();
    }
    s.sync().unwrap();
    let old = m.segment;
    assert!(
        crash
            .crash(0)
            .list()
            .unwrap()
            .iter()
            .any(|n| n.contains(&format!("{old:016x}.seg")))
    );
    // The copy is synced, then the directory sync that makes the removal durable fails.
    crash.inject(Fault::SyncDir);
    let mut failed = false;
    for _ in 0..10 {
        match s.compact() {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the injected directory sync failure was reached");
    let after = crash.restarted(0);
    let seg = format!("msgs/{old:016x}.seg");
    assert!(
        after.crash(0).list().unwrap().contains(&seg),
        "the old copy survived the crash"
    );
    let b: Arc<dyn Backend> = Arc::new(after.clone());
    let (s, rec) = MessageStore::open(b, opts(700), |_| true).unwrap();
    assert!(!after.list().unwrap().contains(&seg), "finished at open");
    assert_eq!(ids(&rec).get(&2), Some(&vec![m.id]));
    assert_eq!(ids(&rec).get(&1), None, "queue 1 acked it");
    let at = rec.queues[&2][0].at;
    assert_eq!(s.read(&at).unwrap(), body);
}
