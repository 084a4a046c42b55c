//! The message store: persistent messages written once, whatever the number of queues they
//! reach, with the acknowledgements that retire them, in one segmented journal.
//!
//! Records (the log's `kind` says which; `docs/design/store.md`):
//!
//! ```text
//! publish (kind 1) := id:u64 size:u32 count:u16 queue:u64*count data
//!                     the message, the size its owner counts it as, and its queues
//! ack     (kind 2) := count:u32 (queue:u64 id:u64 segment:u64)*count
//! ```
//!
//! A message has an id (increasing in publish order, never reused) and one reference per queue
//! that holds it; an acknowledgement (or a purge, a delete, ...) drops one reference. The ack
//! record names the segment the message was in, so that a segment holding acks is kept as long
//! as the segment whose publishes they cancel: otherwise a restart would bring the acked
//! messages back.
//!
//! Disk use follows the live data: a segment whose messages are all gone is removed, and a
//! sealed segment that is mostly dead is compacted: its live messages are written again at the
//! head of the journal (with only the queues that still hold them, under the same id), synced,
//! and the segment removed.
//!
//! When a segment is sealed, a summary of its records without their data is written beside it
//! (`<id>.idx`), so that recovery rebuilds every queue from the summaries and reads only the
//! last segment's bodies. A summary that is missing or does not check out is no loss: that
//! segment is scanned instead.
//!
//! Group commit: [`MessageStore::publish`] writes (to the page cache) and returns the message's
//! id; [`MessageStore::begin_sync`] hands out a job that makes everything written so far durable
//! with one `fdatasync`, run outside the caller's lock; once it completed, every id up to
//! [`SyncTicket::upto`] is on disk and may be confirmed.

use crate::backend::Backend;
use crate::log::{Damage, Log, LogOptions, Position, StoreError, SyncJob};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

const KIND_PUBLISH: u8 = 1;
const KIND_ACK: u8 = 2;
const SUMMARY_MAGIC: &[u8; 6] = b"WRNIDX";
const SUMMARY_VERSION: u16 = 1;
/// An active segment with nothing live in it is sealed (so that it can be removed) once it
/// is larger than this.
const SEAL_IDLE_ABOVE: u64 = 64 * 1024;
/// Acks buffered before they are written without waiting for a sync.
const ACK_BATCH: usize = 4096;

/// Settings of a message store.
#[derive(Debug, Clone)]
pub struct MessageStoreOptions {
    /// File name prefix of the journal's segments and summaries.
    pub prefix: String,
    /// Size past which a segment is sealed and a new one started.
    pub segment_size: u64,
    /// A sealed segment whose live octets fall below this share of its size is compacted.
    pub compact_below: f64,
}

impl Default for MessageStoreOptions {
    fn default() -> Self {
        Self {
            prefix: "msgs".into(),
            segment_size: 16 * 1024 * 1024,
            compact_below: 0.5,
        }
    }
}

/// Where a message is: what its owner keeps to read it back and to ack it. The store keeps no
/// table of its messages: a queue's reference is all it needs (a message moved by compaction
/// is found through a small table of moved messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MessageRef {
    /// The message's id (grows with every publish, never reused).
    pub id: u64,
    /// The segment its record was written to.
    pub segment: u64,
    /// The record's offset in that segment.
    pub offset: u64,
    /// Octets of the record (header included).
    pub record: u32,
}

impl MessageRef {
    fn position(&self) -> Position {
        Position {
            segment: self.segment,
            offset: self.offset,
        }
    }
}

/// A message as recovered: where it is, and the size its owner gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredMessage {
    /// Where it is.
    pub at: MessageRef,
    /// The size given to [`MessageStore::publish`] (the broker: the body's).
    pub len: u32,
}

/// What [`MessageStore::open`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The messages each queue holds, in publish order.
    pub queues: BTreeMap<u64, Vec<StoredMessage>>,
    /// What recovery cut or skipped (a skipped publish is a lost message: report it).
    pub damage: Vec<Damage>,
    /// Segments read whole because they had no valid summary.
    pub scanned: usize,
    /// Segments rebuilt from their summaries.
    pub summarized: usize,
    /// Every queue reference a surviving publish record names (known or not): a queue number
    /// still named on disk must not be given to a new queue.
    pub queues_named: BTreeSet<u64>,
}

/// Counts of the store, for reports and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageStoreStats {
    /// Messages held by at least one queue.
    pub messages: u64,
    /// Segments on disk.
    pub segments: u64,
    /// Octets on disk (segments).
    pub disk_bytes: u64,
    /// Octets of the records of live messages.
    pub live_bytes: u64,
    /// Segments removed since the store was opened.
    pub removed_segments: u64,
    /// Messages written again by compaction since the store was opened.
    pub moved: u64,
}

/// A sync to run outside the store's lock; see [`MessageStore::begin_sync`].
#[derive(Debug)]
pub struct SyncTicket {
    job: SyncJob,
    upto: u64,
}

impl SyncTicket {
    /// Every message id up to this one is durable once the job has run.
    pub fn upto(&self) -> u64 {
        self.upto
    }

    /// Runs the sync. A failure is fatal: hand it to [`MessageStore::fail`].
    pub fn run(self) -> Result<u64, StoreError> {
        let upto = self.upto;
        self.job.run()?;
        Ok(upto)
    }
}

#[derive(Debug, Default)]
struct SegmentInfo {
    /// Live messages whose current record is here.
    live: u64,
    /// Octets of their records.
    live_bytes: u64,
    /// Messages whose record is here that no queue holds any more (compaction skips them;
    /// an ack for one of them again is ignored).
    dead: HashSet<u64>,
    /// References dropped from messages whose record is here while others remain (for
    /// compaction: only the queues that still hold a message are written again).
    dropped: HashSet<(u64, u64)>,
    /// Older segments whose publishes this segment's acks cancel.
    cancels: BTreeSet<u64>,
    /// Octets of ack records written here (a segment of little but acks still needed gains
    /// nothing from being compacted: the acks would only be written again).
    ack_bytes: u64,
}

/// A live message of a segment being compacted, to be written again.
struct Live {
    id: u64,
    len: u32,
    queues: Vec<u64>,
    data: Vec<u8>,
    record: u32,
}

/// The message store.
#[derive(Debug)]
pub struct MessageStore {
    log: Log,
    options: MessageStoreOptions,
    /// Remaining references of the live messages that more than one queue holds.
    shared: HashMap<u64, u32>,
    /// Where live messages moved by compaction are now, and their record's size.
    moved: HashMap<u64, (Position, u32)>,
    segments: BTreeMap<u64, SegmentInfo>,
    next_id: u64,
    /// The last id written (covered by the next sync).
    written: u64,
    /// Acks not yet written: (queue, id, segment of the message).
    acks: Vec<(u64, u64, u64)>,
    /// The summary of the active segment, built as its records are written.
    summary: Vec<u8>,
    removed: u64,
    moved_count: u64,
    scratch: Vec<u8>,
}

fn get_u64(b: &[u8], at: &mut usize) -> Option<u64> {
    let v = u64::from_le_bytes(b.get(*at..*at + 8)?.try_into().ok()?);
    *at += 8;
    Some(v)
}

fn get_u32(b: &[u8], at: &mut usize) -> Option<u32> {
    let v = u32::from_le_bytes(b.get(*at..*at + 4)?.try_into().ok()?);
    *at += 4;
    Some(v)
}

fn get_u16(b: &[u8], at: &mut usize) -> Option<u16> {
    let v = u16::from_le_bytes(b.get(*at..*at + 2)?.try_into().ok()?);
    *at += 2;
    Some(v)
}

/// A publish record's head: id, size, queues, and where its data starts.
fn parse_publish(payload: &[u8]) -> Option<(u64, u32, Vec<u64>, usize)> {
    let mut at = 0;
    let id = get_u64(payload, &mut at).filter(|id| valid_id(*id))?;
    let size = get_u32(payload, &mut at)?;
    let n = get_u16(payload, &mut at)?;
    let mut queues = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        queues.push(get_u64(payload, &mut at)?);
    }
    Some((id, size, queues, at))
}

fn parse_acks(payload: &[u8]) -> Option<Vec<(u64, u64, u64)>> {
    let mut at = 0;
    let n = get_u32(payload, &mut at)?;
    let mut out = Vec::with_capacity((n as usize).min(payload.len() / 24));
    for _ in 0..n {
        out.push((
            get_u64(payload, &mut at)?,
            get_u64(payload, &mut at).filter(|id| valid_id(*id))?,
            get_u64(payload, &mut at)?,
        ));
    }
    (at == payload.len()).then_some(out)
}

/// Ids the store gives out: from 1, far below where adding to them could overflow. A record
/// naming another (it passed its checksum but was not written by the store) is malformed.
fn valid_id(id: u64) -> bool {
    id != 0 && id < 1 << 62
}

/// One record as recovery sees it.
enum Seen {
    Publish {
        id: u64,
        len: u32,
        queues: Vec<u64>,
        position: Position,
        size: u32,
    },
    /// The acks of one record, and the segment it is in.
    Acks(u64, Vec<(u64, u64, u64)>),
}

fn summary_entry(out: &mut Vec<u8>, offset: u64, size: u32, kind: u8, head: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(head);
}

/// Records that passed their checksum but are not the store's: reported, skipped.
#[derive(Default)]
struct Malformed(Vec<Damage>);

impl Malformed {
    fn push(&mut self, at: Position, size: u32) {
        self.0.push(Damage::Skipped {
            segment: at.segment,
            offset: at.offset,
            len: u64::from(size),
        });
    }
}

/// Parses a summary file: the records of its segment without their data.
/// `segment_len`: the segment file's length; a summary naming records past it (the segment
/// lost a tail its summary had seen) is not trusted.
fn parse_summary(segment: u64, segment_len: u64, file: &[u8], out: &mut Vec<Seen>) -> Option<()> {
    let mut at = 0;
    if file.get(..6)? != SUMMARY_MAGIC {
        return None;
    }
    at += 6;
    if get_u16(file, &mut at)? != SUMMARY_VERSION {
        return None;
    }
    let sum = get_u32(file, &mut at)?;
    let len = get_u32(file, &mut at)? as usize;
    let body = file.get(at..at.checked_add(len)?)?;
    if crc32c::crc32c(body) != sum || at + len != file.len() {
        return None;
    }
    let mut seen = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let kind = *body.get(at)?;
        at += 1;
        let offset = get_u64(body, &mut at)?;
        let size = get_u32(body, &mut at)?;
        let hlen = get_u32(body, &mut at)? as usize;
        let head = body.get(at..at.checked_add(hlen)?)?;
        at += hlen;
        if offset.checked_add(u64::from(size))? > segment_len {
            return None;
        }
        match kind {
            KIND_PUBLISH => {
                let (id, len, queues, _) = parse_publish(head)?;
                seen.push(Seen::Publish {
                    id,
                    len,
                    queues,
                    position: Position { segment, offset },
                    size,
                });
            }
            KIND_ACK => seen.push(Seen::Acks(segment, parse_acks(head)?)),
            _ => return None,
        }
    }
    out.extend(seen);
    Some(())
}

impl MessageStore {
    fn summary_name(&self, segment: u64) -> String {
        format!("{}/{segment:016x}.idx", self.options.prefix)
    }

    /// Opens (or creates) the store and rebuilds every queue's messages. References to queues
    /// for which `known` answers false (queues deleted, or never durable) are dropped.
    /// Progress is logged for large stores.
    pub fn open(
        backend: Arc<dyn Backend>,
        options: MessageStoreOptions,
        known: impl Fn(u64) -> bool,
    ) -> Result<(Self, Recovered), StoreError> {
        let started = std::time::Instant::now();
        let log_options = LogOptions {
            prefix: options.prefix.clone(),
            segment_size: options.segment_size,
        };
        let mut seen: Vec<Seen> = Vec::new();
        let mut recovered = Recovered::default();
        // Segments with a valid summary are not read.
        let summaries: BTreeSet<u64> = {
            let prefix = format!("{}/", options.prefix);
            let names = backend.list().map_err(|source| StoreError::Io {
                what: "listing the message store".into(),
                source,
            })?;
            names
                .iter()
                .filter_map(|n| n.strip_prefix(&prefix)?.strip_suffix(".idx"))
                .filter_map(|n| u64::from_str_radix(n, 16).ok())
                .collect()
        };
        let mut summarized = BTreeSet::new();
        let mut use_summary = |segment: u64, seen: &mut Vec<Seen>| -> bool {
            if !summaries.contains(&segment) {
                return false;
            }
            let name = format!("{}/{segment:016x}.idx", options.prefix);
            let Ok(file) = backend.open(&name) else {
                return false;
            };
            let Ok(len) = file.len() else { return false };
            let mut data = vec![0u8; len as usize];
            match file.read_at(&mut data, 0) {
                Ok(n) if n == data.len() => {}
                _ => return false,
            }
            let seg_len = backend
                .open(&format!("{}/{segment:016x}.seg", options.prefix))
                .and_then(|f| f.len())
                .unwrap_or(0);
            let ok = parse_summary(segment, seg_len, &data, seen).is_some();
            if ok {
                summarized.insert(segment);
            } else {
                tracing::warn!(file = %name, "segment summary does not check out: scanning the segment");
            }
            ok
        };
        let mut segments_done = 0u64;
        let mut last_report = std::time::Instant::now();
        let seen_cell = std::cell::RefCell::new(&mut seen);
        let mut malformed = Malformed::default();
        let (log, damage) = Log::open_with(
            backend.clone(),
            log_options,
            |segment| {
                segments_done += 1;
                if last_report.elapsed().as_secs() >= 2 {
                    last_report = std::time::Instant::now();
                    tracing::info!(segments = segments_done, "recovering the message store");
                }
                !use_summary(segment, &mut seen_cell.borrow_mut())
            },
            |position, kind, payload| {
                let size = (payload.len() + crate::log::RECORD_HEADER) as u32;
                match kind {
                    KIND_PUBLISH => match parse_publish(payload) {
                        Some((id, len, queues, _)) => seen_cell.borrow_mut().push(Seen::Publish {
                            id,
                            len,
                            queues,
                            position,
                            size,
                        }),
                        None => malformed.push(position, size),
                    },
                    KIND_ACK => match parse_acks(payload) {
                        Some(acks) => seen_cell
                            .borrow_mut()
                            .push(Seen::Acks(position.segment, acks)),
                        None => malformed.push(position, size),
                    },
                    _ => malformed.push(position, size),
                }
            },
        )?;
        recovered.damage = damage;
        recovered.damage.extend(malformed.0);
        let mut store = Self {
            options,
            segments: log
                .segments()
                .into_iter()
                .map(|s| (s, SegmentInfo::default()))
                .collect(),
            log,
            shared: HashMap::new(),
            moved: HashMap::new(),
            next_id: 1,
            written: 0,
            acks: Vec::new(),
            summary: Vec::new(),
            removed: 0,
            moved_count: 0,
            scratch: Vec::new(),
        };
        recovered.summarized = summarized.len();
        recovered.scanned = store.segments.len().saturating_sub(summarized.len());
        // The latest record of each message wins (compaction writes live messages again, with
        // the queues that still held them); an ack anywhere cancels its reference.
        let mut latest: HashMap<u64, (Vec<u64>, Position, u32, u32)> = HashMap::new();
        let mut interrupted: BTreeSet<u64> = BTreeSet::new();
        let mut acked: HashSet<(u64, u64)> = HashSet::new();
        for s in seen {
            match s {
                Seen::Publish {
                    id,
                    len,
                    queues,
                    position,
                    size,
                } => {
                    store.next_id = store.next_id.max(id + 1);
                    recovered.queues_named.extend(queues.iter().copied());
                    // An older record of the same message (compaction was cut short) is
                    // stale: its segment must not copy it again, and it must go before the
                    // segment of the newer copy can (see the end of `open`).
                    if let Some((_, old, _, _)) = latest.insert(id, (queues, position, size, len)) {
                        interrupted.insert(old.segment);
                        store
                            .segments
                            .entry(old.segment)
                            .or_default()
                            .dead
                            .insert(id);
                    }
                }
                Seen::Acks(at, acks) => {
                    let info = store.segments.entry(at).or_default();
                    for (queue, id, segment) in acks {
                        // Ids are never reused, not even those only acks still mention.
                        store.next_id = store.next_id.max(id + 1);
                        acked.insert((queue, id));
                        if segment != at {
                            info.cancels.insert(segment);
                        }
                    }
                }
            }
        }
        let mut live_messages = 0u64;
        for (id, (queues, position, size, len)) in latest {
            let live: Vec<u64> = queues
                .iter()
                .copied()
                .filter(|q| known(*q) && !acked.contains(&(*q, id)))
                .collect();
            let info = store.segments.entry(position.segment).or_default();
            if live.is_empty() {
                info.dead.insert(id);
                continue;
            }
            live_messages += 1;
            let at = MessageRef {
                id,
                segment: position.segment,
                offset: position.offset,
                record: size,
            };
            for q in &live {
                recovered
                    .queues
                    .entry(*q)
                    .or_default()
                    .push(StoredMessage { at, len });
            }
            info.live += 1;
            info.live_bytes += u64::from(size);
            for q in queues.iter().filter(|q| !live.contains(q)) {
                info.dropped.insert((*q, id));
            }
            if live.len() > 1 {
                store.shared.insert(id, live.len() as u32);
            }
        }
        for list in recovered.queues.values_mut() {
            list.sort_unstable_by_key(|m| m.at.id);
        }
        store.written = store.next_id - 1;
        // The active segment gets its summary rebuilt from its records.
        store.rebuild_active_summary()?;
        // A compaction a crash cut short left older copies behind: finish it now, so that no
        // segment holding the newer copy (and the acks that follow it) can go while an older
        // copy, naming more queues, stays.
        let active = store.log.active_segment();
        for segment in interrupted.into_iter().filter(|s| *s != active) {
            if store.segments.contains_key(&segment) {
                tracing::info!(segment, "finishing a compaction a crash cut short");
                store.compact_segment(segment)?;
            }
        }
        // A store that recovery found inconsistent in a way that matters is reported by the
        // caller from `damage`; a crash between compaction steps leaves duplicates, which the
        // latest-record rule above resolved.
        let total: usize = recovered.queues.values().map(Vec::len).sum();
        tracing::info!(
            messages = live_messages,
            references = total,
            segments = store.segments.len(),
            summarized = recovered.summarized,
            scanned = recovered.scanned,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "message store recovered"
        );
        Ok((store, recovered))
    }

    fn rebuild_active_summary(&mut self) -> Result<(), StoreError> {
        let active = self.log.active_segment();
        let mut summary = Vec::new();
        self.log.read_segment(active, |position, kind, payload| {
            let size = (payload.len() + crate::log::RECORD_HEADER) as u32;
            let head = match kind {
                KIND_PUBLISH => match parse_publish(payload) {
                    Some((_, _, _, data_at)) => payload.get(..data_at).unwrap_or_default(),
                    None => return,
                },
                KIND_ACK => payload,
                _ => return,
            };
            summary_entry(&mut summary, position.offset, size, kind, head);
        })?;
        self.summary = summary;
        Ok(())
    }

    /// Writes a message for `queues` (durable after the next sync); returns where it is.
    /// `size` is the caller's count for it, given back by recovery.
    pub fn publish(
        &mut self,
        queues: &[u64],
        data: &[u8],
        size: u32,
    ) -> Result<MessageRef, StoreError> {
        self.publish_with_id(None, queues, data, size)
    }

    fn publish_with_id(
        &mut self,
        id: Option<u64>,
        queues: &[u64],
        data: &[u8],
        size: u32,
    ) -> Result<MessageRef, StoreError> {
        let id = id.unwrap_or(self.next_id);
        let mut payload = std::mem::take(&mut self.scratch);
        payload.clear();
        payload.extend_from_slice(&id.to_le_bytes());
        payload.extend_from_slice(&size.to_le_bytes());
        payload.extend_from_slice(&(queues.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        for q in queues.iter().take(usize::from(u16::MAX)) {
            payload.extend_from_slice(&q.to_le_bytes());
        }
        let head_len = payload.len();
        payload.extend_from_slice(data);
        let result = self.append(KIND_PUBLISH, &payload, head_len);
        self.scratch = payload;
        let (position, record) = result?;
        if id >= self.next_id {
            self.next_id = id + 1;
        }
        self.written = self.written.max(id);
        let info = self.segments.entry(position.segment).or_default();
        info.live += 1;
        info.live_bytes += u64::from(record);
        if queues.len() > 1 {
            self.shared.insert(id, queues.len() as u32);
        }
        Ok(MessageRef {
            id,
            segment: position.segment,
            offset: position.offset,
            record,
        })
    }

    /// Appends a record, sealing the active segment (with its summary) when it rolls.
    fn append(
        &mut self,
        kind: u8,
        payload: &[u8],
        head_len: usize,
    ) -> Result<(Position, u32), StoreError> {
        let before = self.log.active_segment();
        let position = self.log.append(kind, payload)?;
        if position.segment != before {
            let summary = std::mem::take(&mut self.summary);
            self.write_summary(before, &summary)?;
            self.segments.entry(position.segment).or_default();
        }
        let size = (payload.len() + crate::log::RECORD_HEADER) as u32;
        summary_entry(
            &mut self.summary,
            position.offset,
            size,
            kind,
            payload.get(..head_len).unwrap_or_default(),
        );
        Ok((position, size))
    }

    fn write_summary(&mut self, segment: u64, summary: &[u8]) -> Result<(), StoreError> {
        let name = self.summary_name(segment);
        let mut out = Vec::with_capacity(summary.len() + 16);
        out.extend_from_slice(SUMMARY_MAGIC);
        out.extend_from_slice(&SUMMARY_VERSION.to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(summary).to_le_bytes());
        out.extend_from_slice(&(summary.len() as u32).to_le_bytes());
        out.extend_from_slice(summary);
        // Not synced: a summary that did not reach the disk whole fails its checksum, and the
        // segment is scanned instead.
        let io = |source| StoreError::Io {
            what: format!("writing {name}"),
            source,
        };
        let file = self.log.backend().open(&name).map_err(io)?;
        file.set_len(0).map_err(io)?;
        file.write_at(&out, 0).map_err(io)?;
        Ok(())
    }

    /// Drops `queue`'s reference to a message (an ack, a purge, a queue deleted). Written
    /// with the next sync or the next batch of acks; an ack lost in a crash means the message
    /// is delivered again (marked redelivered), never that a message is lost. An ack for a
    /// reference already dropped is ignored.
    pub fn ack(&mut self, queue: u64, m: &MessageRef) -> Result<(), StoreError> {
        let (position, record) = self
            .moved
            .get(&m.id)
            .copied()
            .unwrap_or((m.position(), m.record));
        let Some(info) = self.segments.get_mut(&position.segment) else {
            return Ok(());
        };
        if info.dead.contains(&m.id) || info.dropped.contains(&(queue, m.id)) {
            return Ok(());
        }
        let last = match self.shared.get_mut(&m.id) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => true,
        };
        if last {
            self.shared.remove(&m.id);
            self.moved.remove(&m.id);
            info.live = info.live.saturating_sub(1);
            info.live_bytes = info.live_bytes.saturating_sub(u64::from(record));
            info.dead.insert(m.id);
        } else {
            info.dropped.insert((queue, m.id));
        }
        self.acks.push((queue, m.id, position.segment));
        if self.acks.len() >= ACK_BATCH {
            self.write_acks()?;
        }
        Ok(())
    }

    fn write_acks(&mut self) -> Result<(), StoreError> {
        if self.acks.is_empty() {
            return Ok(());
        }
        let acks = std::mem::take(&mut self.acks);
        let mut payload = Vec::with_capacity(4 + acks.len() * 24);
        payload.extend_from_slice(&(acks.len() as u32).to_le_bytes());
        for (q, id, seg) in &acks {
            payload.extend_from_slice(&q.to_le_bytes());
            payload.extend_from_slice(&id.to_le_bytes());
            payload.extend_from_slice(&seg.to_le_bytes());
        }
        let len = payload.len();
        let (position, size) = self.append(KIND_ACK, &payload, len)?;
        let info = self.segments.entry(position.segment).or_default();
        info.ack_bytes += u64::from(size);
        for (_, _, seg) in acks {
            if seg != position.segment {
                info.cancels.insert(seg);
            }
        }
        Ok(())
    }

    /// Reads a message's data back.
    pub fn read(&self, m: &MessageRef) -> Result<Vec<u8>, StoreError> {
        let position = self.moved.get(&m.id).map_or(m.position(), |(p, _)| *p);
        let record = self.log.read(position)?;
        let not_it = StoreError::NoRecord {
            segment: position.segment,
            offset: position.offset,
        };
        let (id, _, _, data_at) = parse_publish(&record.payload).ok_or(not_it)?;
        if id != m.id {
            return Err(StoreError::UnknownMessage(m.id));
        }
        let mut payload = record.payload;
        payload.drain(..data_at);
        Ok(payload)
    }

    /// The highest id written so far (durable once a sync made after this call completed;
    /// all durable already when [`MessageStore::begin_sync`] finds nothing to sync).
    pub fn last_written(&self) -> u64 {
        self.written
    }

    /// The last id given out (ids only grow, across restarts too).
    pub fn last_id(&self) -> u64 {
        self.next_id - 1
    }

    /// Takes a sync of everything written so far (acks included), to run outside the caller's
    /// lock; `None` if nothing is waiting for one.
    pub fn begin_sync(&mut self) -> Result<Option<SyncTicket>, StoreError> {
        self.write_acks()?;
        let upto = self.written;
        Ok(self.log.begin_sync()?.map(|job| SyncTicket { job, upto }))
    }

    /// Records a failed sync: the store accepts nothing more (an fsync error is fatal).
    pub fn fail(&mut self, why: &StoreError) {
        self.log.poison(why);
    }

    /// The failure that stopped the store, if any.
    pub fn failure(&self) -> Option<&str> {
        self.log.failure()
    }

    /// Writes and syncs everything now (a sync under the caller's lock).
    pub fn sync(&mut self) -> Result<u64, StoreError> {
        let upto = self.written;
        if let Some(t) = self.begin_sync()? {
            if let Err(e) = t.run() {
                self.fail(&e);
                return Err(e);
            }
        }
        Ok(upto)
    }

    /// Gives disk space back: removes the sealed segments none of whose messages are held any
    /// more (and whose acks cancel nothing still on disk), then compacts at most one sealed
    /// segment whose live share fell below the threshold. Returns whether there is more to
    /// do. Call it when the store is idle, or every so often.
    pub fn compact(&mut self) -> Result<bool, StoreError> {
        // An active segment that holds nothing live but takes room is sealed, so that it can
        // go too: a drained store shrinks to an empty segment.
        self.write_acks()?;
        let active = self.log.active_segment();
        let len = self.log.segment_len(active).unwrap_or(0);
        let idle_active = self
            .segments
            .get(&active)
            .is_some_and(|i| i.live == 0 && len.saturating_sub(i.ack_bytes) > SEAL_IDLE_ABOVE);
        if idle_active {
            self.seal()?;
        }
        let active = self.log.active_segment();
        let present: BTreeSet<u64> = self.segments.keys().copied().collect();
        let dead: Vec<u64> = self
            .segments
            .iter()
            .filter(|(id, info)| {
                **id != active
                    && info.live == 0
                    && info.cancels.iter().all(|c| !present.contains(c))
            })
            .map(|(id, _)| *id)
            .collect();
        if !dead.is_empty() {
            // The acks that made them dead must be durable before the publishes go.
            self.sync()?;
            for id in &dead {
                self.remove(*id)?;
            }
            self.sync_dir()?;
        }
        // Then the oldest mostly dead segment: its live messages, and the acks that still
        // cancel publishes on disk, are written again at the head and it goes. (The sync above
        // may have started a new segment.)
        let active = self.log.active_segment();
        let present: BTreeSet<u64> = self.segments.keys().copied().collect();
        let target = self.segments.iter().find_map(|(id, info)| {
            let len = self.log.segment_len(*id)?;
            let sparse = (info.live_bytes as f64) < self.options.compact_below * len as f64;
            let blocked = info.live == 0
                && info.ack_bytes < len / 2
                && info.cancels.iter().any(|c| present.contains(c));
            (*id != active && sparse && (info.live > 0 || blocked)).then_some(*id)
        });
        if let Some(segment) = target {
            self.compact_segment(segment)?;
        }
        Ok(!dead.is_empty() || target.is_some())
    }

    /// Closes the active segment (synced, with its summary) and starts a new one.
    fn seal(&mut self) -> Result<(), StoreError> {
        let before = self.log.active_segment();
        let next = self.log.roll()?;
        let summary = std::mem::take(&mut self.summary);
        self.write_summary(before, &summary)?;
        self.segments.entry(next).or_default();
        Ok(())
    }

    fn sync_dir(&mut self) -> Result<(), StoreError> {
        self.log.backend().sync_dir().map_err(|source| {
            let e = StoreError::Io {
                what: "syncing the message store's directory".into(),
                source,
            };
            self.log.poison(&e);
            e
        })
    }

    fn remove(&mut self, segment: u64) -> Result<(), StoreError> {
        if !self.log.remove_segment(segment)? {
            return Ok(());
        }
        let name = self.summary_name(segment);
        self.log
            .backend()
            .remove(&name)
            .map_err(|source| StoreError::Io {
                what: format!("removing {name}"),
                source,
            })?;
        self.segments.remove(&segment);
        self.removed += 1;
        Ok(())
    }

    /// Writes a segment's live messages (with the queues that still hold them, under the same
    /// ids) and its still needed acks again at the head, syncs, and removes the segment.
    fn compact_segment(&mut self, segment: u64) -> Result<(), StoreError> {
        let (dead, mut dropped) = self
            .segments
            .get_mut(&segment)
            .map(|i| (std::mem::take(&mut i.dead), std::mem::take(&mut i.dropped)))
            .unwrap_or_default();
        let mut live: Vec<Live> = Vec::new();
        let mut acks: Vec<(u64, u64, u64)> = Vec::new();
        // References already dropped from messages written again: a repeated ack for one of
        // them must still be ignored where the message goes.
        let mut carried: Vec<(u64, u64)> = Vec::new();
        let moved = &self.moved;
        let segments = &self.segments;
        self.log
            .read_segment(segment, |position, kind, payload| match kind {
                KIND_PUBLISH => {
                    let Some((id, len, queues, data_at)) = parse_publish(payload) else {
                        return;
                    };
                    // Dead, or a stale copy of a message that lives elsewhere now.
                    if dead.contains(&id) || moved.get(&id).is_some_and(|(p, _)| *p != position) {
                        return;
                    }
                    let (gone, queues): (Vec<u64>, Vec<u64>) =
                        queues.into_iter().partition(|q| dropped.remove(&(*q, id)));
                    carried.extend(gone.into_iter().map(|q| (q, id)));
                    let record = (payload.len() + crate::log::RECORD_HEADER) as u32;
                    live.push(Live {
                        id,
                        len,
                        queues,
                        data: payload.get(data_at..).unwrap_or_default().to_vec(),
                        record,
                    });
                }
                KIND_ACK => {
                    // Acks that cancel publishes in older segments still on disk.
                    acks.extend(
                        parse_acks(payload)
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|(_, _, s)| *s != segment && segments.contains_key(s)),
                    );
                }
                _ => {}
            })?;
        for Live {
            id,
            len,
            queues,
            data,
            record,
        } in live
        {
            if let Some(info) = self.segments.get_mut(&segment) {
                info.live = info.live.saturating_sub(1);
                info.live_bytes = info.live_bytes.saturating_sub(u64::from(record));
            }
            let remaining = self.shared.get(&id).copied();
            let at = self.publish_with_id(Some(id), &queues, &data, len)?;
            // Still the same references (the copy lists exactly the queues that hold it).
            match remaining {
                Some(n) => {
                    self.shared.insert(id, n);
                }
                None => {
                    self.shared.remove(&id);
                }
            }
            self.moved.insert(id, (at.position(), at.record));
            self.moved_count += 1;
        }
        for (q, id) in carried {
            if let Some((p, _)) = self.moved.get(&id) {
                self.segments
                    .entry(p.segment)
                    .or_default()
                    .dropped
                    .insert((q, id));
            }
        }
        self.acks.extend(acks);
        // The copies must be durable before the originals go.
        self.sync()?;
        self.remove(segment)?;
        self.sync_dir()
    }

    /// Counts for reports.
    pub fn stats(&self) -> MessageStoreStats {
        MessageStoreStats {
            messages: self.segments.values().map(|i| i.live).sum(),
            segments: self.segments.len() as u64,
            disk_bytes: self.log.size(),
            live_bytes: self.segments.values().map(|i| i.live_bytes).sum(),
            removed_segments: self.removed,
            moved: self.moved_count,
        }
    }
}
