//! Paging: the part of a queue's backlog that lives only on disk.
//!
//! Past the broker's paging budget (message memory), a queue keeps a bounded head in memory;
//! newer messages are written to the message store (persistent ones already are; transient
//! ones get a reference that recovery ignores) and only their ids go into the queue's spill,
//! a FIFO file of fixed-size entries. When the head runs low, the next batch is read back
//! from the store ahead of the consumers. Everything in the spill is newer than everything in
//! the head, so the queue's order holds.
//!
//! Spill files are scratch: never synced, removed at start (recovery rebuilds durable queues
//! from the message store, into fresh spills).
//!
//! ```text
//! entry := id:u64 segment:u64 offset:u64 record:u32 len:u32 flags:u32 reserved:u32
//!          (40 octets: where the message is in the store, its body size; flags bit 0:
//!          redelivered, bit 1: held under the queue's transient reference)
//! ```

use std::sync::Arc;
use warren_store::{Backend, BackendFile, MessageRef};

/// The top bit marks a queue reference that recovery drops: a transient message (or a
/// message of a non-durable queue) written only to be paged out.
pub(crate) const TRANSIENT_REF: u64 = 1 << 63;
/// File name prefix of the spill files.
pub(crate) const SPILL_PREFIX: &str = "spill";
const ENTRY: usize = 40;
/// Entries buffered before they are written.
const WRITE_BATCH: usize = 4096;
/// The head is refilled when fewer messages than this are ready in memory...
pub(crate) const REFILL_LOW: u64 = 1024;
/// ... with this many at a time.
pub(crate) const REFILL_BATCH: usize = 2048;
/// A queue starts paging out only past this many ready messages in memory.
pub(crate) const HEAD_MIN: u64 = 2048;

/// One spilled message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spilled {
    /// Where it is in the store.
    pub(crate) at: MessageRef,
    /// Its body's size.
    pub(crate) len: u32,
    pub(crate) redelivered: bool,
    /// Written under the queue's transient reference (not a durable one).
    pub(crate) transient: bool,
}

/// A queue's spill: ids of messages that live only in the message store, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Spill {
    file: Option<Arc<dyn BackendFile>>,
    /// Next entry to read (octet offset in the file).
    head: u64,
    /// Where the buffered entries go.
    written: u64,
    /// Entries not yet written.
    buffer: Vec<u8>,
    count: u64,
    bytes: u64,
}

impl Spill {
    /// Messages spilled.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Octets of their bodies (as the queue counts them).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends a message.
    pub(crate) fn push(
        &mut self,
        backend: &Arc<dyn Backend>,
        name: &str,
        m: Spilled,
    ) -> std::io::Result<()> {
        let before = self.buffer.len();
        self.buffer.extend_from_slice(&m.at.id.to_le_bytes());
        self.buffer.extend_from_slice(&m.at.segment.to_le_bytes());
        self.buffer.extend_from_slice(&m.at.offset.to_le_bytes());
        self.buffer.extend_from_slice(&m.at.record.to_le_bytes());
        self.buffer.extend_from_slice(&m.len.to_le_bytes());
        let flags = u32::from(m.redelivered) | (u32::from(m.transient) << 1);
        self.buffer.extend_from_slice(&flags.to_le_bytes());
        self.buffer.extend_from_slice(&0u32.to_le_bytes());
        if self.buffer.len() >= WRITE_BATCH * ENTRY {
            if let Err(e) = self.flush(backend, name) {
                // Not in the spill: the caller keeps the message in memory.
                self.buffer.truncate(before);
                return Err(e);
            }
        }
        self.count += 1;
        self.bytes += u64::from(m.len);
        Ok(())
    }

    fn flush(&mut self, backend: &Arc<dyn Backend>, name: &str) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let file = match &self.file {
            Some(f) => f.clone(),
            None => {
                let f = backend.open(name)?;
                f.set_len(0)?;
                self.file = Some(f.clone());
                f
            }
        };
        file.write_at(&self.buffer, self.written)?;
        self.written += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Takes up to `n` of the oldest messages.
    pub(crate) fn pop(&mut self, n: usize) -> std::io::Result<Vec<Spilled>> {
        let mut out = Vec::with_capacity(n.min(self.count as usize));
        let on_disk = ((self.written - self.head) as usize / ENTRY).min(n);
        if on_disk > 0 {
            if let Some(f) = &self.file {
                let mut buf = vec![0u8; on_disk * ENTRY];
                let got = f.read_at(&mut buf, self.head)?;
                if got < buf.len() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "spill file shorter than written",
                    ));
                }
                self.head += buf.len() as u64;
                out.extend(buf.chunks_exact(ENTRY).filter_map(parse));
            }
        }
        if out.len() < n && self.head >= self.written {
            // The rest comes from the buffer.
            let take = ((n - out.len()) * ENTRY).min(self.buffer.len());
            out.extend(
                self.buffer
                    .drain(..take)
                    .as_slice()
                    .chunks_exact(ENTRY)
                    .filter_map(parse),
            );
        }
        for m in &out {
            self.count -= 1;
            self.bytes = self.bytes.saturating_sub(u64::from(m.len));
        }
        if self.count == 0 {
            self.reset();
        }
        Ok(out)
    }

    /// Empties the spill (the file is truncated, kept for reuse; if truncating fails, the
    /// next entries overwrite it from the start all the same).
    fn reset(&mut self) {
        self.head = 0;
        self.written = 0;
        self.buffer.clear();
        self.count = 0;
        self.bytes = 0;
        if let Some(f) = &self.file {
            let _ = f.set_len(0);
        }
    }

    /// Takes everything (a purge or a delete).
    pub(crate) fn drain(&mut self) -> std::io::Result<Vec<Spilled>> {
        let n = self.count as usize;
        self.pop(n)
    }

    /// Drops the file (the queue is gone).
    pub(crate) fn remove(&mut self, backend: &Arc<dyn Backend>, name: &str) {
        self.file = None;
        let _ = backend.remove(name);
    }
}

fn parse(e: &[u8]) -> Option<Spilled> {
    let u64_at =
        |i: usize| -> Option<u64> { Some(u64::from_le_bytes(e.get(i..i + 8)?.try_into().ok()?)) };
    let u32_at =
        |i: usize| -> Option<u32> { Some(u32::from_le_bytes(e.get(i..i + 4)?.try_into().ok()?)) };
    let flags = u32_at(32)?;
    Some(Spilled {
        at: MessageRef {
            id: u64_at(0)?,
            segment: u64_at(8)?,
            offset: u64_at(16)?,
            record: u32_at(24)?,
        },
        len: u32_at(28)?,
        redelivered: flags & 1 == 1,
        transient: flags & 2 == 2,
    })
}

/// The spill file name of a queue.
pub(crate) fn spill_name(queue_ref: u64) -> String {
    format!("{SPILL_PREFIX}/{:016x}.spl", queue_ref & !TRANSIENT_REF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_store::MemoryBackend;

    #[test]
    fn entries_come_back_in_order_across_buffer_and_file() {
        let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let mut s = Spill::default();
        let n = WRITE_BATCH as u64 * 2 + 10;
        for id in 0..n {
            s.push(
                &b,
                "spill/1.spl",
                Spilled {
                    at: MessageRef {
                        id,
                        segment: id / 7,
                        offset: id * 3,
                        record: 99,
                    },
                    len: 3,
                    redelivered: id % 2 == 0,
                    transient: id % 3 == 0,
                },
            )
            .unwrap();
        }
        assert_eq!((s.count(), s.bytes()), (n, 3 * n));
        let mut got = Vec::new();
        while !s.is_empty() {
            got.extend(s.pop(1000).unwrap());
        }
        assert_eq!(got.len() as u64, n);
        assert!(got.iter().enumerate().all(|(i, m)| m.at.id == i as u64
            && m.at.segment == i as u64 / 7
            && m.at.offset == i as u64 * 3
            && m.redelivered == (i % 2 == 0)
            && m.transient == (i % 3 == 0)));
        // Reused after it emptied.
        let one = Spilled {
            at: MessageRef {
                id: 9,
                ..MessageRef::default()
            },
            len: 1,
            redelivered: false,
            transient: true,
        };
        s.push(&b, "spill/1.spl", one).unwrap();
        assert_eq!(s.drain().unwrap()[0].at.id, 9);
        assert_eq!(s.bytes(), 0);
    }
}
