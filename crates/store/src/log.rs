//! A segmented append-only log of checksummed records, with recovery.
//!
//! Byte layout (all integers little-endian; `docs/design/store.md`):
//!
//! ```text
//! segment  := header record*
//! header   := "WRNSEG" version:u16 reserved:u64          (16 octets)
//! record   := length:u32 crc:u32 version:u8 kind:u8 payload[length]
//! crc      := CRC32C over version, kind and payload
//! ```
//!
//! Appends are positional writes at the end of the active segment; [`Log::sync`] makes them
//! durable with one `fdatasync` (group commit: one sync covers every append since the last).
//! A segment that would grow past the size limit is closed and a new one started.
//!
//! Recovery ([`Log::open`]) reads every segment: a record cut short at the end of a segment
//! (a torn write) is cut off; a record whose checksum fails is reported and skipped, the scan
//! resuming at the next record that checks out; everything else is recovered. Nothing is
//! refused silently: every cut and skip is reported with its segment and offset.

use crate::backend::{Backend, BackendFile};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The record format version written.
pub const RECORD_VERSION: u8 = 1;
/// Octets before a record's payload.
pub const RECORD_HEADER: usize = 10;
/// The segment header.
pub const SEGMENT_MAGIC: &[u8; 6] = b"WRNSEG";
/// The segment format version written.
pub const SEGMENT_VERSION: u16 = 1;
/// Octets of the segment header.
pub const SEGMENT_HEADER: u64 = 16;
/// The largest payload a record may carry: RabbitMQ's largest message (512 MiB) and room
/// for what goes with it.
pub const MAX_RECORD: usize = 513 * 1024 * 1024;

/// Errors of the store.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, and on which file.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// An earlier write or sync failed: the log accepts nothing more (an fsync error is fatal,
    /// never retried: the kernel may have dropped the dirty pages).
    #[error("the log stopped after an earlier failure: {0}")]
    Poisoned(String),
    /// A payload larger than [`MAX_RECORD`].
    #[error("record of {0} octets is larger than the limit")]
    TooLarge(usize),
    /// A position that names no record.
    #[error("no record at segment {segment} offset {offset}")]
    NoRecord {
        /// Segment id.
        segment: u64,
        /// Offset.
        offset: u64,
    },
    /// A message id the store does not hold.
    #[error("no message {0} in the store")]
    UnknownMessage(u64),
    /// A segment whose header is not ours.
    #[error("segment {name}: not a Warren log segment (bad header)")]
    BadSegment {
        /// The file.
        name: String,
    },
}

/// Where a record is: its segment and the offset of its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Segment id.
    pub segment: u64,
    /// Offset of the record's header in the segment.
    pub offset: u64,
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Where it is.
    pub position: Position,
    /// The caller's record kind.
    pub kind: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Something recovery cut or skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// An incomplete record at the end of a segment, cut off.
    TornTail {
        /// Segment id.
        segment: u64,
        /// Where the cut was made.
        offset: u64,
        /// Octets removed.
        len: u64,
    },
    /// Octets that are no valid record (a checksum failed), skipped.
    Skipped {
        /// Segment id.
        segment: u64,
        /// Where the bad octets start.
        offset: u64,
        /// How many were skipped.
        len: u64,
    },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::TornTail {
                segment,
                offset,
                len,
            } => write!(
                f,
                "segment {segment:016x}: torn tail of {len} octets cut at offset {offset}"
            ),
            Damage::Skipped {
                segment,
                offset,
                len,
            } => write!(
                f,
                "segment {segment:016x}: {len} damaged octets skipped at offset {offset} (checksum failed)"
            ),
        }
    }
}

/// What [`Log::open`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records recovered, in log order.
    pub records: Vec<Record>,
    /// What was cut or skipped.
    pub damage: Vec<Damage>,
}

/// Settings of a log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// File name prefix of the segments (`<prefix>/<id>.seg`).
    pub prefix: String,
    /// Size past which a segment is closed and a new one started.
    pub segment_size: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            prefix: "log".into(),
            segment_size: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug)]
struct Segment {
    file: Arc<dyn BackendFile>,
    len: u64,
}

/// A sync taken from the log by [`Log::begin_sync`], run without the log.
#[derive(Debug)]
pub struct SyncJob {
    file: Arc<dyn BackendFile>,
    dir: Option<Arc<dyn Backend>>,
    name: String,
    gate: Arc<std::sync::Mutex<()>>,
}

impl SyncJob {
    /// `fdatasync` of the active segment (and a directory sync if segments were created or
    /// removed). On failure, pass the error to [`Log::poison`]: it is fatal.
    pub fn run(self) -> Result<(), StoreError> {
        // One `fdatasync` of the log at a time: the kernel reports a writeback error to one
        // caller only, and the one that gets it must be the one that stops the log.
        let _gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        self.file
            .sync_data()
            .map_err(io_err(format!("fdatasync of {}", self.name)))?;
        if let Some(dir) = self.dir {
            dir.sync_dir()
                .map_err(io_err("syncing the log's directory"))?;
        }
        Ok(())
    }
}

/// The log.
#[derive(Debug)]
pub struct Log {
    backend: Arc<dyn Backend>,
    options: LogOptions,
    segments: BTreeMap<u64, Segment>,
    active: u64,
    /// Segments created since the last directory sync.
    new_segments: bool,
    /// Appends since the last sync.
    dirty: bool,
    poisoned: Option<String>,
    /// Held by every `fdatasync` of the log's files (see [`SyncJob::run`]).
    gate: Arc<std::sync::Mutex<()>>,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let what = what.into();
    move |source| StoreError::Io { what, source }
}

fn crc(version: u8, kind: u8, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&[version, kind]), payload)
}

fn header_bytes() -> [u8; SEGMENT_HEADER as usize] {
    let mut h = [0u8; SEGMENT_HEADER as usize];
    let version = SEGMENT_VERSION.to_le_bytes();
    for (d, s) in h.iter_mut().zip(SEGMENT_MAGIC.iter().chain(version.iter())) {
        *d = *s;
    }
    h
}

/// Reads exactly `len` octets at `offset`, or fewer at the end of the file.
fn read_exact_at(file: &dyn BackendFile, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = file.read_at(&mut buf, offset)?;
    buf.truncate(n);
    Ok(buf)
}

/// A record that checks out at `offset` of `data` (the whole segment): its kind, payload
/// range and total length.
fn record_at(data: &[u8], offset: usize) -> Option<(u8, std::ops::Range<usize>)> {
    let h = data.get(offset..offset.checked_add(RECORD_HEADER)?)?;
    let len = u32::from_le_bytes(h.get(0..4)?.try_into().ok()?) as usize;
    let sum = u32::from_le_bytes(h.get(4..8)?.try_into().ok()?);
    let (version, kind) = (*h.get(8)?, *h.get(9)?);
    if len > MAX_RECORD || version != RECORD_VERSION {
        return None;
    }
    let start = offset + RECORD_HEADER;
    let payload = data.get(start..start.checked_add(len)?)?;
    (crc(version, kind, payload) == sum).then_some((kind, start..start + len))
}

impl Log {
    fn segment_name(&self, id: u64) -> String {
        format!("{}/{id:016x}.seg", self.options.prefix)
    }

    /// Opens (or creates) the log: recovers every record, cutting torn tails and skipping
    /// damaged records, and reports what it found.
    pub fn open(
        backend: Arc<dyn Backend>,
        options: LogOptions,
    ) -> Result<(Self, Recovery), StoreError> {
        let mut records = Vec::new();
        let (log, damage) = Self::open_with(
            backend,
            options,
            |_| true,
            |position, kind, payload| {
                records.push(Record {
                    position,
                    kind,
                    payload: payload.to_vec(),
                })
            },
        )?;
        Ok((log, Recovery { records, damage }))
    }

    /// Opens (or creates) the log, handing each recovered record to `visit` instead of
    /// collecting them. Segments for which `scan` answers false are not read at all (the
    /// caller knows their contents from elsewhere, such as a summary written when the segment
    /// was sealed); they are taken as they are. The last segment is always scanned.
    pub fn open_with(
        backend: Arc<dyn Backend>,
        options: LogOptions,
        mut scan: impl FnMut(u64) -> bool,
        mut visit: impl FnMut(Position, u8, &[u8]),
    ) -> Result<(Self, Vec<Damage>), StoreError> {
        let mut log = Self {
            backend,
            options,
            segments: BTreeMap::new(),
            active: 0,
            new_segments: false,
            dirty: false,
            poisoned: None,
            gate: Arc::default(),
        };
        let ids = log.segment_ids()?;
        let last = ids.last().copied();
        let mut damage = Vec::new();
        for id in ids {
            let name = log.segment_name(id);
            let file = log
                .backend
                .open(&name)
                .map_err(io_err(format!("opening {name}")))?;
            let len = file.len().map_err(io_err(format!("reading {name}")))?;
            if Some(id) != last && !scan(id) {
                let head = read_exact_at(file.as_ref(), 0, SEGMENT_HEADER as usize)
                    .map_err(io_err(format!("reading {name}")))?;
                if head.get(..6) != Some(&SEGMENT_MAGIC[..]) {
                    return Err(StoreError::BadSegment { name });
                }
                log.segments.insert(id, Segment { file, len });
                continue;
            }
            let data = read_exact_at(file.as_ref(), 0, len as usize)
                .map_err(io_err(format!("reading {name}")))?;
            // A segment whose header never made it to disk holds nothing: it is reset to an
            // empty segment. Otherwise everything after the last valid record is a torn tail.
            let short = data.len() < SEGMENT_HEADER as usize;
            if !short && data.get(..6) != Some(&SEGMENT_MAGIC[..]) {
                return Err(StoreError::BadSegment { name });
            }
            let (cut, end) = if short {
                (0, SEGMENT_HEADER)
            } else {
                let end = Self::scan(id, &data, &mut damage, &mut visit) as u64;
                (end, end)
            };
            if cut < data.len() as u64 {
                damage.push(Damage::TornTail {
                    segment: id,
                    offset: cut,
                    len: data.len() as u64 - cut,
                });
            }
            if short || cut < data.len() as u64 {
                file.set_len(cut)
                    .map_err(io_err(format!("truncating {name}")))?;
                if short {
                    file.write_at(&header_bytes(), 0)
                        .map_err(io_err(format!("writing {name}")))?;
                }
                file.sync_data()
                    .map_err(io_err(format!("syncing {name}")))?;
            }
            log.segments.insert(id, Segment { file, len: end });
        }
        match log.segments.keys().next_back() {
            Some(&id) => log.active = id,
            None => log.start_segment(1)?,
        }
        Ok((log, damage))
    }

    /// The ids of the segments present, sorted.
    fn segment_ids(&self) -> Result<Vec<u64>, StoreError> {
        let prefix = format!("{}/", self.options.prefix);
        let names = self.backend.list().map_err(io_err("listing segments"))?;
        let mut ids: Vec<u64> = names
            .iter()
            .filter_map(|n| n.strip_prefix(&prefix))
            .filter_map(|n| n.strip_suffix(".seg"))
            .filter_map(|n| u64::from_str_radix(n, 16).ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Reads the records of one segment; returns where the valid data ends.
    fn scan(
        segment: u64,
        data: &[u8],
        damage: &mut Vec<Damage>,
        visit: &mut impl FnMut(Position, u8, &[u8]),
    ) -> usize {
        let mut at = SEGMENT_HEADER as usize;
        while at < data.len() {
            if let Some((kind, payload)) = record_at(data, at) {
                let position = Position {
                    segment,
                    offset: at as u64,
                };
                visit(
                    position,
                    kind,
                    data.get(payload.clone()).unwrap_or_default(),
                );
                at = payload.end;
                continue;
            }
            // Not a valid record here. If its length field still leads to a valid record (or
            // exactly to the end), only this record is damaged; otherwise look for the next
            // record that checks out. Octets in between are skipped; if no valid record
            // follows at all, this is the torn tail.
            let by_length = data
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(|b| u32::from_le_bytes(b) as usize)
                .map(|len| at + RECORD_HEADER + len)
                .filter(|&next| {
                    next > at && (next == data.len() || record_at(data, next).is_some())
                });
            let next = by_length
                .filter(|&n| n < data.len())
                .or_else(|| (at + 1..data.len()).find(|&o| record_at(data, o).is_some()));
            match next {
                Some(next) => {
                    damage.push(Damage::Skipped {
                        segment,
                        offset: at as u64,
                        len: (next - at) as u64,
                    });
                    at = next;
                }
                None => return at,
            }
        }
        at
    }

    fn start_segment(&mut self, id: u64) -> Result<(), StoreError> {
        let name = self.segment_name(id);
        let file = self
            .backend
            .open(&name)
            .map_err(io_err(format!("creating {name}")))?;
        file.set_len(0)
            .map_err(io_err(format!("creating {name}")))?;
        self.write(file.as_ref(), &header_bytes(), 0, &name)?;
        self.segments.insert(
            id,
            Segment {
                file,
                len: SEGMENT_HEADER,
            },
        );
        self.active = id;
        self.new_segments = true;
        self.dirty = true;
        Ok(())
    }

    fn check(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(why) => Err(StoreError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn write(
        &mut self,
        file: &dyn BackendFile,
        buf: &[u8],
        at: u64,
        name: &str,
    ) -> Result<(), StoreError> {
        file.write_at(buf, at).map_err(|source| {
            let e = StoreError::Io {
                what: format!("writing {name}"),
                source,
            };
            self.poisoned = Some(e.to_string());
            e
        })
    }

    /// Appends a record; durable after the next [`Log::sync`].
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> Result<Position, StoreError> {
        self.check()?;
        if payload.len() > MAX_RECORD {
            return Err(StoreError::TooLarge(payload.len()));
        }
        let size = (RECORD_HEADER + payload.len()) as u64;
        let active_len = self.segments.get(&self.active).map_or(0, |s| s.len);
        if active_len > SEGMENT_HEADER && active_len + size > self.options.segment_size {
            // The old segment's appends must be durable before the next segment's are (also
            // those a sync job in flight covers: waiting for the gate waits for it).
            self.dirty = true;
            self.sync_active()?;
            self.start_segment(self.active + 1)?;
        }
        let mut buf = Vec::with_capacity(size as usize);
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc(RECORD_VERSION, kind, payload).to_le_bytes());
        buf.push(RECORD_VERSION);
        buf.push(kind);
        buf.extend_from_slice(payload);
        let id = self.active;
        let name = self.segment_name(id);
        let Some(seg) = self.segments.get(&id) else {
            return Err(StoreError::Poisoned("no active segment".into()));
        };
        let (file, at) = (seg.file.clone(), seg.len);
        self.write(file.as_ref(), &buf, at, &name)?;
        if let Some(seg) = self.segments.get_mut(&id) {
            seg.len = at + size;
        }
        self.dirty = true;
        Ok(Position {
            segment: id,
            offset: at,
        })
    }

    fn sync_active(&mut self) -> Result<(), StoreError> {
        if !self.dirty {
            return Ok(());
        }
        let name = self.segment_name(self.active);
        let gate = self.gate.clone();
        let _gate = gate.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(seg) = self.segments.get(&self.active) {
            let file = seg.file.clone();
            file.sync_data().map_err(|source| {
                let e = StoreError::Io {
                    what: format!("fdatasync of {name}"),
                    source,
                };
                self.poisoned = Some(e.to_string());
                e
            })?;
        }
        if self.new_segments {
            self.backend.sync_dir().map_err(|source| {
                let e = StoreError::Io {
                    what: "syncing the log's directory".into(),
                    source,
                };
                self.poisoned = Some(e.to_string());
                e
            })?;
            self.new_segments = false;
        }
        self.dirty = false;
        Ok(())
    }

    /// Makes every append so far durable: one `fdatasync` (and a directory sync if a segment
    /// was started). A failure is fatal: the log accepts nothing more.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.check()?;
        self.sync_active()
    }

    /// Group commit without holding the log: takes what the next sync must cover and returns
    /// it as a [`SyncJob`] to run outside the caller's lock while appends go on; `None` if
    /// nothing was appended since the last sync. Report a failed job with [`Log::poison`].
    pub fn begin_sync(&mut self) -> Result<Option<SyncJob>, StoreError> {
        self.check()?;
        if !self.dirty {
            return Ok(None);
        }
        let file = self
            .segments
            .get(&self.active)
            .map(|s| s.file.clone())
            .ok_or_else(|| StoreError::Poisoned("no active segment".into()))?;
        let dir = std::mem::take(&mut self.new_segments).then(|| self.backend.clone());
        self.dirty = false;
        Ok(Some(SyncJob {
            file,
            dir,
            name: self.segment_name(self.active),
            gate: self.gate.clone(),
        }))
    }

    /// Stops the log after a failure reported from outside (a [`SyncJob`] that failed).
    pub fn poison(&mut self, why: &StoreError) {
        if self.poisoned.is_none() {
            self.poisoned = Some(why.to_string());
        }
    }

    /// The first failure that stopped the log, if any.
    pub fn failure(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// The segment appends go to.
    pub fn active_segment(&self) -> u64 {
        self.active
    }

    /// Octets in one segment.
    pub fn segment_len(&self, id: u64) -> Option<u64> {
        self.segments.get(&id).map(|s| s.len)
    }

    /// The backend the log writes through.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The file name of a segment.
    pub fn segment_file_name(&self, id: u64) -> String {
        self.segment_name(id)
    }

    /// Every valid record of a (sealed) segment, read back: its position, kind and payload.
    pub fn read_segment(
        &self,
        id: u64,
        mut visit: impl FnMut(Position, u8, &[u8]),
    ) -> Result<(), StoreError> {
        let Some(seg) = self.segments.get(&id) else {
            return Ok(());
        };
        let name = self.segment_name(id);
        let data = read_exact_at(seg.file.as_ref(), 0, seg.len as usize)
            .map_err(io_err(format!("reading {name}")))?;
        // Damage here was reported when the segment was recovered.
        Self::scan(id, &data, &mut Vec::new(), &mut visit);
        Ok(())
    }

    /// Reads the record at `position`.
    pub fn read(&self, position: Position) -> Result<Record, StoreError> {
        let seg = self
            .segments
            .get(&position.segment)
            .ok_or(StoreError::NoRecord {
                segment: position.segment,
                offset: position.offset,
            })?;
        let name = self.segment_name(position.segment);
        let head = read_exact_at(seg.file.as_ref(), position.offset, RECORD_HEADER)
            .map_err(io_err(format!("reading {name}")))?;
        let no = || StoreError::NoRecord {
            segment: position.segment,
            offset: position.offset,
        };
        let len = head
            .get(0..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(no)? as usize;
        if len > MAX_RECORD || position.offset + (RECORD_HEADER + len) as u64 > seg.len {
            return Err(no());
        }
        let mut whole = head;
        whole.extend(
            read_exact_at(
                seg.file.as_ref(),
                position.offset + RECORD_HEADER as u64,
                len,
            )
            .map_err(io_err(format!("reading {name}")))?,
        );
        let (kind, payload) = record_at(&whole, 0).ok_or_else(no)?;
        Ok(Record {
            position,
            kind,
            payload: whole.get(payload).unwrap_or_default().to_vec(),
        })
    }

    /// Closes the active segment (after syncing it) and starts a new one; returns its id.
    /// Compaction writes its snapshot there, then removes the older segments.
    pub fn roll(&mut self) -> Result<u64, StoreError> {
        self.check()?;
        self.dirty = true;
        self.sync_active()?;
        self.start_segment(self.active + 1)?;
        Ok(self.active)
    }

    /// Octets in all segments.
    pub fn size(&self) -> u64 {
        self.segments.values().map(|s| s.len).sum()
    }

    /// Segment ids, oldest first.
    pub fn segments(&self) -> Vec<u64> {
        self.segments.keys().copied().collect()
    }

    /// Deletes a segment that is no longer needed (never the active one).
    pub fn remove_segment(&mut self, id: u64) -> Result<bool, StoreError> {
        if id == self.active || !self.segments.contains_key(&id) {
            return Ok(false);
        }
        let name = self.segment_name(id);
        self.backend
            .remove(&name)
            .map_err(io_err(format!("removing {name}")))?;
        self.segments.remove(&id);
        self.new_segments = true;
        self.dirty = true;
        Ok(true)
    }
}
