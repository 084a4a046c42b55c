//! The metadata store: keys and values (durable definitions: vhosts, users, permissions,
//! exchanges, queues, bindings, policies, each encoded by its owner), changed in atomic
//! batches.
//!
//! Each batch is one log record, so it is applied whole or not at all, and is durable when
//! [`MetaStore::apply`] returns. When the log holds much more than the live data, a snapshot of
//! every entry is written to a fresh segment and the older segments are removed; a crash at any
//! point of that leaves either the old segments (the snapshot torn or missing) or the
//! snapshot, which replaces everything before it.
//!
//! Record payloads (the log's `kind` says which):
//!
//! ```text
//! batch    (kind 1) := count:u32 change*
//! snapshot (kind 2) := count:u32 change*          (puts only; replaces all earlier state)
//! change            := op:u8 (1 put, 0 delete) key_len:u32 key [value_len:u32 value]
//! ```

use crate::backend::Backend;
use crate::log::{Damage, Log, LogOptions, StoreError};
use std::collections::BTreeMap;
use std::sync::Arc;

const KIND_BATCH: u8 = 1;
const KIND_SNAPSHOT: u8 = 2;

/// One change of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Sets a key.
    Put(Vec<u8>, Vec<u8>),
    /// Removes a key.
    Delete(Vec<u8>),
}

/// The metadata store.
#[derive(Debug)]
pub struct MetaStore {
    log: Log,
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn encode<'a>(changes: impl ExactSizeIterator<Item = (&'a [u8], Option<&'a [u8]>)>) -> Vec<u8> {
    let mut out = Vec::new();
    put_u32(&mut out, changes.len());
    for (k, v) in changes {
        out.push(u8::from(v.is_some()));
        put_u32(&mut out, k.len());
        out.extend_from_slice(k);
        if let Some(v) = v {
            put_u32(&mut out, v.len());
            out.extend_from_slice(v);
        }
    }
    out
}

/// Decodes a batch or snapshot; `None` if it is malformed (a record that passed its checksum
/// but was not written by us).
fn decode(payload: &[u8]) -> Option<Vec<Change>> {
    let mut at = 0usize;
    let u32_at = |at: &mut usize| -> Option<usize> {
        let b: [u8; 4] = payload.get(*at..*at + 4)?.try_into().ok()?;
        *at += 4;
        Some(u32::from_le_bytes(b) as usize)
    };
    let count = u32_at(&mut at)?;
    let mut out = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let op = *payload.get(at)?;
        at += 1;
        let klen = u32_at(&mut at)?;
        let key = payload.get(at..at.checked_add(klen)?)?.to_vec();
        at += klen;
        match op {
            1 => {
                let vlen = u32_at(&mut at)?;
                let value = payload.get(at..at.checked_add(vlen)?)?.to_vec();
                at += vlen;
                out.push(Change::Put(key, value));
            }
            0 => out.push(Change::Delete(key)),
            _ => return None,
        }
    }
    (at == payload.len()).then_some(out)
}

impl MetaStore {
    /// Opens (or creates) the store under `prefix`; returns it with whatever recovery cut or
    /// skipped (a skipped batch is a lost change: the caller must report it).
    pub fn open(
        backend: Arc<dyn Backend>,
        prefix: &str,
    ) -> Result<(Self, Vec<Damage>), StoreError> {
        let (log, recovery) = Log::open(
            backend,
            LogOptions {
                prefix: prefix.to_string(),
                segment_size: 16 * 1024 * 1024,
            },
        )?;
        let mut map = BTreeMap::new();
        let mut damage = recovery.damage;
        for r in recovery.records {
            let Some(changes) = decode(&r.payload) else {
                damage.push(Damage::Skipped {
                    segment: r.position.segment,
                    offset: r.position.offset,
                    len: r.payload.len() as u64,
                });
                continue;
            };
            if r.kind == KIND_SNAPSHOT {
                map.clear();
            }
            for c in changes {
                match c {
                    Change::Put(k, v) => {
                        map.insert(k, v);
                    }
                    Change::Delete(k) => {
                        map.remove(&k);
                    }
                }
            }
        }
        Ok((Self { log, map }, damage))
    }

    /// The value of a key.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn scan<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        self.map
            .range(prefix.to_vec()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Applies a batch atomically and durably (one record, one sync); compacts the log when
    /// it has grown well past the live data.
    pub fn apply(&mut self, batch: &[Change]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let payload = encode(batch.iter().map(|c| match c {
            Change::Put(k, v) => (k.as_slice(), Some(v.as_slice())),
            Change::Delete(k) => (k.as_slice(), None),
        }));
        self.log.append(KIND_BATCH, &payload)?;
        self.log.sync()?;
        for c in batch {
            match c {
                Change::Put(k, v) => {
                    self.map.insert(k.clone(), v.clone());
                }
                Change::Delete(k) => {
                    self.map.remove(k);
                }
            }
        }
        let live: usize = self.map.iter().map(|(k, v)| k.len() + v.len() + 9).sum();
        if self.log.size() > 2 * live as u64 + 1024 * 1024 {
            self.compact()?;
        }
        Ok(())
    }

    /// Writes a snapshot of every entry to a fresh segment and removes the older ones.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        let fresh = self.log.roll()?;
        let payload = encode(
            self.map
                .iter()
                .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
                .collect::<Vec<_>>()
                .into_iter(),
        );
        self.log.append(KIND_SNAPSHOT, &payload)?;
        self.log.sync()?;
        for id in self.log.segments() {
            if id < fresh {
                self.log.remove_segment(id)?;
            }
        }
        self.log.sync()
    }

    /// Log segments (for tests and reports).
    pub fn segments(&self) -> Vec<u64> {
        self.log.segments()
    }
}
