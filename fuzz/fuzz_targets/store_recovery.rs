//! `warren-store` recovery over arbitrary files: a message-store segment, its summary and a
//! metadata segment made of fuzzer octets, opened as a store must be after a crash or a bad
//! disk. Opening may refuse a foreign file with an error, never panic; whatever it recovers
//! must read back, and the store must take new work.
//!
//! Input layout: a mode octet, two little-endian u16 lengths, then the segment, the summary
//! and the metadata segment (the rest). Even mode: the parts are the files' octets (valid
//! headers are prepended to the segments when their first octet is even). Odd mode: the parts
//! are turned into records with valid checksums (`kind len payload`, appended through the log)
//! and the summary gets a valid checksum, so that the fuzzer reaches the record parsers: a
//! record that checks out but was not written by the store must be refused, not trusted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use warren_store::{
    Backend, Log, LogOptions, MemoryBackend, MessageStore, MessageStoreOptions, MetaStore,
};

const SEGMENT_HEADER: [u8; 16] = *b"WRNSEG\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00";

fn with_header(part: &[u8]) -> Vec<u8> {
    match part.first() {
        Some(b) if b % 2 == 0 => {
            let mut v = SEGMENT_HEADER.to_vec();
            v.extend_from_slice(part);
            v
        }
        _ => part.to_vec(),
    }
}

/// Appends `kind len payload` chunks as records with valid checksums.
fn records(backend: &Arc<dyn Backend>, prefix: &str, mut chunks: &[u8]) {
    let options = LogOptions {
        prefix: prefix.into(),
        segment_size: 1 << 20,
    };
    let (mut log, _) = Log::open(backend.clone(), options).unwrap();
    while let [kind, len, rest @ ..] = chunks {
        let n = usize::from(*len).min(rest.len());
        log.append(*kind, &rest[..n]).unwrap();
        chunks = &rest[n..];
    }
    log.sync().unwrap();
}

/// A summary file with a valid checksum around fuzzed entries.
fn summary_file(body: &[u8]) -> Vec<u8> {
    let mut out = b"WRNIDX\x01\x00".to_vec();
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let structured = data[0] % 2 == 1;
    let a = usize::from(u16::from_le_bytes([data[1], data[2]]));
    let b = usize::from(u16::from_le_bytes([data[3], data[4]]));
    let rest = &data[5..];
    let a = a.min(rest.len());
    let (segment, rest) = rest.split_at(a);
    let b = b.min(rest.len());
    let (summary, meta) = rest.split_at(b);
    let mem = MemoryBackend::new();
    let backend: Arc<dyn Backend> = Arc::new(mem.clone());
    if structured {
        records(&backend, "msgs", segment);
        records(&backend, "meta", meta);
        let f = mem.open("msgs/0000000000000001.idx").unwrap();
        f.write_at(&summary_file(summary), 0).unwrap();
    } else {
        for (name, bytes) in [
            ("msgs/0000000000000001.seg", with_header(segment)),
            ("msgs/0000000000000001.idx", summary.to_vec()),
            ("meta/0000000000000001.seg", with_header(meta)),
        ] {
            let f = mem.open(name).unwrap();
            f.write_at(&bytes, 0).unwrap();
        }
    }
    // A second segment so that the first counts as sealed (its summary is used).
    let f = mem.open("msgs/0000000000000002.seg").unwrap();
    f.write_at(&SEGMENT_HEADER, 0).unwrap();
    if let Ok((mut store, recovered)) =
        MessageStore::open(backend.clone(), MessageStoreOptions::default(), |_| true)
    {
        for list in recovered.queues.values() {
            for m in list {
                // A summary may name records the segment does not hold: an error, no panic.
                let _ = store.read(&m.at);
            }
        }
        let at = store.publish(&[1], b"after", 5).unwrap();
        assert_eq!(store.read(&at).unwrap(), b"after");
        store.ack(1, &at).unwrap();
        store.sync().unwrap();
        while store.compact().unwrap() {}
    }
    if let Ok((mut meta, _)) = MetaStore::open(backend, "meta") {
        meta.apply(&[warren_store::Change::Put(b"k".to_vec(), b"v".to_vec())])
            .unwrap();
        assert_eq!(meta.get(b"k"), Some(&b"v"[..]));
    }
});
