//! The segmented log: round trips, segment rolls, and recovery from every kind of damage a
//! crash or a bad disk leaves: torn tails at any length, flipped bits in payloads and length
//! fields, missing segment headers; failed writes and syncs stop the log.

use proptest::prelude::*;
use std::sync::Arc;
use warren_store::log::{RECORD_HEADER, SEGMENT_HEADER};
use warren_store::{
    Backend, CrashBackend, Damage, Fault, Log, LogOptions, MemoryBackend, Position, StoreError,
};

fn opts(segment_size: u64) -> LogOptions {
    LogOptions {
        prefix: "msgs".into(),
        segment_size,
    }
}

fn open(b: &Arc<dyn Backend>, segment_size: u64) -> (Log, warren_store::Recovery) {
    Log::open(b.clone(), opts(segment_size)).expect("open")
}

fn payloads(r: &warren_store::Recovery) -> Vec<Vec<u8>> {
    r.records.iter().map(|r| r.payload.clone()).collect()
}

#[test]
fn records_round_trip_across_reopen_and_segments() {
    let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let (mut log, rec) = open(&b, 100);
    assert!(rec.records.is_empty() && rec.damage.is_empty());
    let mut positions = Vec::new();
    for i in 0..20u8 {
        positions.push(log.append(i % 3, &vec![i; usize::from(i) * 3]).unwrap());
    }
    log.sync().unwrap();
    assert!(
        log.segments().len() > 3,
        "small segments roll: {:?}",
        log.segments()
    );
    for (i, p) in positions.iter().enumerate() {
        let r = log.read(*p).unwrap();
        assert_eq!(r.payload, vec![i as u8; i * 3]);
        assert_eq!(r.kind, i as u8 % 3);
    }
    drop(log);
    let (log, rec) = open(&b, 100);
    assert!(rec.damage.is_empty());
    assert_eq!(rec.records.len(), 20);
    for (i, r) in rec.records.iter().enumerate() {
        assert_eq!(r.payload, vec![i as u8; i * 3]);
        assert_eq!(r.position, positions[i]);
    }
    // Appending goes on in the last segment.
    drop(log);
    let (mut log, _) = open(&b, 100);
    let p = log.append(9, b"after").unwrap();
    assert!(p > positions[19]);
    assert!(matches!(
        log.read(Position {
            segment: 999,
            offset: 16
        }),
        Err(StoreError::NoRecord { .. })
    ));
}

#[test]
fn an_unsynced_tail_is_lost_and_a_torn_one_is_cut_and_reported() {
    let crash = CrashBackend::new();
    let b: Arc<dyn Backend> = Arc::new(crash.clone());
    let (mut log, _) = open(&b, 1 << 20);
    for i in 0..3u8 {
        log.append(1, &[i; 10]).unwrap();
    }
    log.sync().unwrap();
    log.append(1, &[9; 10]).unwrap();
    // Nothing of the unsynced record survived: exactly the three.
    let after: Arc<dyn Backend> = Arc::new(crash.crash(0));
    let (_, rec) = open(&after, 1 << 20);
    assert_eq!(payloads(&rec), vec![vec![0; 10], vec![1; 10], vec![2; 10]]);
    assert!(rec.damage.is_empty());
    // Part of it reached the disk: cut off, and said so.
    let after: Arc<dyn Backend> = Arc::new(crash.crash(7));
    let (mut log2, rec) = open(&after, 1 << 20);
    assert_eq!(rec.records.len(), 3);
    let end = SEGMENT_HEADER + 3 * (RECORD_HEADER as u64 + 10);
    assert_eq!(
        rec.damage,
        [Damage::TornTail {
            segment: 1,
            offset: end,
            len: 7
        }]
    );
    assert_eq!(
        rec.damage[0].to_string(),
        format!("segment 0000000000000001: torn tail of 7 octets cut at offset {end}")
    );
    // The log goes on where the valid data ended.
    assert_eq!(log2.append(1, b"next").unwrap().offset, end);
}

#[test]
fn a_crash_before_the_segment_header_was_synced_leaves_an_empty_usable_log() {
    let crash = CrashBackend::new();
    let b: Arc<dyn Backend> = Arc::new(crash.clone());
    let (mut log, _) = open(&b, 1 << 20);
    log.sync().unwrap();
    // The header is durable, a record not: the log reopens empty.
    log.append(1, b"lost").unwrap();
    let (_, rec) = open(&(Arc::new(crash.crash(0)) as Arc<dyn Backend>), 1 << 20);
    assert!(rec.records.is_empty() && rec.damage.is_empty());
    // A segment whose header itself is torn.
    let mem = MemoryBackend::new();
    let f = mem.open("msgs/0000000000000001.seg").unwrap();
    f.write_at(b"WRN", 0).unwrap();
    let (mut log, rec) = Log::open(Arc::new(mem), opts(1 << 20)).unwrap();
    assert_eq!(
        rec.damage,
        [Damage::TornTail {
            segment: 1,
            offset: 0,
            len: 3
        }]
    );
    log.append(1, b"fine").unwrap();
}

fn segment_bytes(b: &dyn Backend) -> (Arc<dyn warren_store::BackendFile>, Vec<u8>) {
    let f = b.open("msgs/0000000000000001.seg").unwrap();
    let mut v = vec![0; f.len().unwrap() as usize];
    f.read_at(&mut v, 0).unwrap();
    (f, v)
}

#[test]
fn a_flipped_bit_in_a_payload_skips_that_record_only() {
    let mem = MemoryBackend::new();
    let b: Arc<dyn Backend> = Arc::new(mem.clone());
    let (mut log, _) = open(&b, 1 << 20);
    let p: Vec<Position> = (0..5u8).map(|i| log.append(2, &[i; 20]).unwrap()).collect();
    log.sync().unwrap();
    drop(log);
    let (f, mut v) = segment_bytes(&mem);
    let at = p[2].offset as usize + RECORD_HEADER + 5;
    v[at] ^= 0x10;
    f.write_at(&v, 0).unwrap();
    let (log, rec) = open(&b, 1 << 20);
    assert_eq!(
        payloads(&rec),
        vec![vec![0; 20], vec![1; 20], vec![3; 20], vec![4; 20]]
    );
    assert_eq!(
        rec.damage,
        [Damage::Skipped {
            segment: 1,
            offset: p[2].offset,
            len: (RECORD_HEADER + 20) as u64
        }]
    );
    assert!(rec.damage[0].to_string().contains("checksum failed"));
    assert!(matches!(log.read(p[2]), Err(StoreError::NoRecord { .. })));
    assert_eq!(log.read(p[3]).unwrap().payload, vec![3; 20]);
}

#[test]
fn a_damaged_length_field_is_skipped_up_to_the_next_valid_record() {
    let mem = MemoryBackend::new();
    let b: Arc<dyn Backend> = Arc::new(mem.clone());
    let (mut log, _) = open(&b, 1 << 20);
    let p: Vec<Position> = (0..4u8).map(|i| log.append(2, &[i; 30]).unwrap()).collect();
    log.sync().unwrap();
    drop(log);
    let (f, mut v) = segment_bytes(&mem);
    v[p[1].offset as usize + 1] ^= 0x40; // the length now points far beyond the file
    f.write_at(&v, 0).unwrap();
    let (_, rec) = open(&b, 1 << 20);
    assert_eq!(payloads(&rec), vec![vec![0; 30], vec![2; 30], vec![3; 30]]);
    assert_eq!(
        rec.damage,
        [Damage::Skipped {
            segment: 1,
            offset: p[1].offset,
            len: p[2].offset - p[1].offset
        }]
    );
}

#[test]
fn a_foreign_file_is_refused_with_its_name() {
    let mem = MemoryBackend::new();
    let f = mem.open("msgs/0000000000000003.seg").unwrap();
    f.write_at(b"this is not a segment header", 0).unwrap();
    let e = Log::open(Arc::new(mem), opts(1 << 20)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "segment msgs/0000000000000003.seg: not a Warren log segment (bad header)"
    );
}

#[test]
fn a_failed_sync_or_write_stops_the_log_for_good() {
    let crash = CrashBackend::new();
    let b: Arc<dyn Backend> = Arc::new(crash.clone());
    let (mut log, _) = open(&b, 1 << 20);
    log.append(1, b"a").unwrap();
    log.sync().unwrap();
    log.append(1, b"b").unwrap();
    crash.inject(Fault::Sync);
    let e = log.sync().unwrap_err();
    assert!(e.to_string().contains("injected fdatasync failure"), "{e}");
    // Never retried: everything after fails, saying why.
    assert!(matches!(log.append(1, b"c"), Err(StoreError::Poisoned(_))));
    assert!(matches!(log.sync(), Err(StoreError::Poisoned(_))));
    let (_, rec) = open(&(Arc::new(crash.crash(0)) as Arc<dyn Backend>), 1 << 20);
    assert_eq!(
        payloads(&rec),
        vec![b"a".to_vec()],
        "only the synced record"
    );

    let crash = CrashBackend::new();
    let (mut log, _) = open(&(Arc::new(crash.clone()) as Arc<dyn Backend>), 1 << 20);
    crash.inject(Fault::Write);
    assert!(matches!(log.append(1, b"x"), Err(StoreError::Io { .. })));
    assert!(matches!(log.append(1, b"y"), Err(StoreError::Poisoned(_))));
}

#[test]
fn a_new_segment_is_durable_only_with_its_directory_entry() {
    let crash = CrashBackend::new();
    let b: Arc<dyn Backend> = Arc::new(crash.clone());
    let (mut log, _) = open(&b, 64);
    log.append(1, &[1; 30]).unwrap();
    log.append(1, &[2; 30]).unwrap(); // rolls to segment 2
    assert_eq!(log.segments(), [1, 2]);
    crash.inject(Fault::SyncDir);
    assert!(
        log.sync().is_err(),
        "the directory sync failed: nothing confirmed"
    );
    let (_, rec) = open(&(Arc::new(crash.crash(0)) as Arc<dyn Backend>), 64);
    // The first segment was synced before the roll; the second is not on disk.
    assert_eq!(payloads(&rec), vec![vec![1; 30]]);
}

proptest! {
    #![proptest_config(warren_testkit::proptest_config(128))]

    /// Whatever the crash point and however much of the unsynced tail reached the disk, the
    /// log recovers every synced record, then a prefix of the rest, in order, and invents
    /// nothing.
    #[test]
    fn recovery_after_any_crash_is_a_prefix_holding_everything_synced(
        records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..40),
        sync_every in 1usize..8,
        crash_after in 0usize..40,
        torn in 0usize..400,
        segment_size in 64u64..2048,
    ) {
        let crash = CrashBackend::new();
        let b: Arc<dyn Backend> = Arc::new(crash.clone());
        let (mut log, _) = Log::open(b, opts(segment_size)).unwrap();
        let mut synced = 0;
        let n = crash_after.min(records.len());
        for (i, r) in records.iter().take(n).enumerate() {
            log.append(7, r).unwrap();
            if (i + 1) % sync_every == 0 {
                log.sync().unwrap();
                synced = i + 1;
            }
        }
        let after: Arc<dyn Backend> = Arc::new(crash.crash(torn));
        let (mut reopened, rec) = Log::open(after, opts(segment_size)).unwrap();
        let got = payloads(&rec);
        prop_assert!(got.len() >= synced, "lost synced records: {} < {}", got.len(), synced);
        prop_assert!(got.len() <= n);
        prop_assert_eq!(&got[..], &records[..got.len()]);
        // And the recovered log takes appends.
        reopened.append(7, b"more").unwrap();
        reopened.sync().unwrap();
    }
}

#[test]
fn an_empty_segment_file_gets_its_header_back() {
    let mem = MemoryBackend::new();
    mem.open("msgs/0000000000000001.seg").unwrap();
    let b: Arc<dyn Backend> = Arc::new(mem);
    let (mut log, rec) = open(&b, 1 << 20);
    assert!(rec.damage.is_empty(), "nothing was lost: {:?}", rec.damage);
    log.append(1, b"x").unwrap();
    log.sync().unwrap();
    drop(log);
    let (_, rec) = open(&b, 1 << 20);
    assert_eq!(payloads(&rec), vec![b"x".to_vec()]);
}
