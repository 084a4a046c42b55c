//! What survives a restart: the durable definitions (in the store's metadata store) and the
//! persistent messages of durable queues (in its message store), with the group-commit thread
//! that syncs them.
//!
//! Definitions are keys and values: a tag octet and length-prefixed name parts as the key,
//! an AMQP field table (after a version octet) as the value (`docs/design/store.md`).
//!
//! Messages: a connection writes the persistent messages of a batch under one lock (to the page
//! cache), asks for a sync, and holds their confirms. The sync thread takes everything written
//! so far, runs one `fdatasync` without the lock, records how far it reached, and wakes the
//! connections waiting for it. A failed sync stops the store for good: nothing more is
//! confirmed (waiting publishers get `basic.nack`), and new persistent publishes are refused.

use crate::auth::{PasswordHash, User};
use crate::message::{MemoryGauge, Message};
use crate::outbox::Outbox;
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;
use warren_amqp_codec::{FieldTable, FieldValue, LongStr, ShortStr};
use warren_queue::policy::PolicyKind;
use warren_routing::{BindingSpec, DestinationName, ExchangeSpec};
use warren_store::{
    Backend, Change, MessageRef, MessageStore, MessageStoreOptions, MetaStore, StoreError,
};

const VALUE_VERSION: u8 = 1;
const TAG_VHOST: u8 = b'v';
const TAG_USER: u8 = b'u';
const TAG_PERMISSION: u8 = b'p';
const TAG_EXCHANGE: u8 = b'x';
const TAG_QUEUE: u8 = b'q';
const TAG_BINDING: u8 = b'b';
const TAG_COUNTER: u8 = b'c';
/// Policies (pOlicy: `p` is taken).
const TAG_POLICY: u8 = b'o';
/// Operator policies.
const TAG_OPERATOR_POLICY: u8 = b'O';
/// How long the sync thread waits for work before it compacts.
const IDLE: Duration = Duration::from_millis(200);
/// Under load, a compaction step at least this often.
const COMPACT_EVERY: Duration = Duration::from_secs(1);

/// A key: its tag, then each part with a 16-bit length. A key made of the first parts of
/// another is a prefix of it, so scans by vhost (or by source exchange) are prefix scans.
fn key(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![tag];
    for p in parts {
        k.extend_from_slice(&(p.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        k.extend_from_slice(p);
    }
    k
}

fn key_parts(k: &[u8]) -> Option<(u8, Vec<&[u8]>)> {
    let (&tag, mut rest) = k.split_first()?;
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let len = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        parts.push(rest.get(2..2 + len)?);
        rest = rest.get(2 + len..)?;
    }
    Some((tag, parts))
}

fn value(table: &FieldTable) -> Vec<u8> {
    let mut b = BytesMut::with_capacity(table.encoded_len() + 1);
    b.extend_from_slice(&[VALUE_VERSION]);
    table.encode_entries(&mut b);
    b.to_vec()
}

fn parse_value(v: &[u8]) -> Option<FieldTable> {
    let (&version, rest) = v.split_first()?;
    if version != VALUE_VERSION {
        return None;
    }
    FieldTable::decode_entries(&Bytes::copy_from_slice(rest)).ok()
}

fn text(s: &str) -> FieldValue {
    FieldValue::LongStr(LongStr::from(s.to_string()))
}

fn get_text(t: &FieldTable, k: &str) -> String {
    match t.get(k) {
        Some(FieldValue::LongStr(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        _ => String::new(),
    }
}

fn get_bool(t: &FieldTable, k: &str) -> bool {
    t.get(k).and_then(FieldValue::as_bool).unwrap_or(false)
}

fn short(b: &[u8]) -> ShortStr {
    ShortStr::from_bytes(Bytes::copy_from_slice(b)).unwrap_or_default()
}

/// A durable queue as recorded.
#[derive(Debug, Clone)]
pub(crate) struct StoredQueue {
    pub(crate) vhost: String,
    pub(crate) name: ShortStr,
    /// Its number in the message store.
    pub(crate) id: u64,
    pub(crate) auto_delete: bool,
    pub(crate) arguments: FieldTable,
}

/// Every durable definition, as read back at start.
#[derive(Debug, Default)]
pub(crate) struct Definitions {
    pub(crate) vhosts: Vec<String>,
    /// Users, and whether each may connect only from loopback addresses.
    pub(crate) users: Vec<(User, bool)>,
    /// (user, vhost, configure, write, read).
    pub(crate) permissions: Vec<(String, String, String, String, String)>,
    pub(crate) exchanges: Vec<(String, ExchangeSpec)>,
    pub(crate) queues: Vec<StoredQueue>,
    pub(crate) bindings: Vec<(String, BindingSpec)>,
    pub(crate) policies: Vec<(PolicyKind, crate::policy::PolicyInfo)>,
}

impl Definitions {
    pub(crate) fn is_empty(&self) -> bool {
        self.vhosts.is_empty() && self.users.is_empty()
    }
}

/// The definition records, built by their owners' changes.
pub(crate) mod record {
    use super::*;

    pub(crate) fn vhost(name: &str) -> Change {
        Change::Put(
            key(TAG_VHOST, &[name.as_bytes()]),
            value(&FieldTable::new()),
        )
    }

    pub(crate) fn user(user: &User, loopback_only: bool) -> Change {
        let mut t = FieldTable::new();
        if let Some(h) = &user.password_hash {
            t.insert("password_hash", text(&h.to_base64()));
        }
        t.insert("tags", text(&user.tags.join(",")));
        t.insert("loopback_only", FieldValue::Bool(loopback_only));
        Change::Put(key(TAG_USER, &[user.name.as_bytes()]), value(&t))
    }

    pub(crate) fn user_deleted(name: &str) -> Change {
        Change::Delete(key(TAG_USER, &[name.as_bytes()]))
    }

    pub(crate) fn permissions(user: &str, vhost: &str, c: &str, w: &str, r: &str) -> Change {
        let mut t = FieldTable::new();
        t.insert("configure", text(c));
        t.insert("write", text(w));
        t.insert("read", text(r));
        Change::Put(
            key(TAG_PERMISSION, &[user.as_bytes(), vhost.as_bytes()]),
            value(&t),
        )
    }

    pub(crate) fn exchange(vhost: &str, spec: &ExchangeSpec) -> Change {
        let mut t = FieldTable::new();
        t.insert("type", text(&String::from_utf8_lossy(spec.kind.as_bytes())));
        t.insert("auto_delete", FieldValue::Bool(spec.auto_delete));
        t.insert("internal", FieldValue::Bool(spec.internal));
        t.insert("arguments", FieldValue::Table(spec.arguments.detached()));
        Change::Put(
            key(TAG_EXCHANGE, &[vhost.as_bytes(), spec.name.as_bytes()]),
            value(&t),
        )
    }

    pub(crate) fn queue(q: &StoredQueue) -> Change {
        let mut t = FieldTable::new();
        t.insert("id", FieldValue::I64(q.id as i64));
        t.insert("auto_delete", FieldValue::Bool(q.auto_delete));
        t.insert("arguments", FieldValue::Table(q.arguments.detached()));
        Change::Put(
            key(TAG_QUEUE, &[q.vhost.as_bytes(), q.name.as_bytes()]),
            value(&t),
        )
    }

    pub(crate) fn binding_key(vhost: &str, spec: &BindingSpec) -> Vec<u8> {
        let (kind, dest): (&[u8], &[u8]) = match &spec.destination {
            DestinationName::Queue(q) => (b"q", q.as_bytes()),
            DestinationName::Exchange(x) => (b"x", x.as_bytes()),
        };
        let mut args = BytesMut::new();
        spec.arguments.encode_entries(&mut args);
        key(
            TAG_BINDING,
            &[
                vhost.as_bytes(),
                spec.source.as_bytes(),
                kind,
                dest,
                spec.key.as_bytes(),
                &args,
            ],
        )
    }

    pub(crate) fn binding(vhost: &str, spec: &BindingSpec) -> Change {
        Change::Put(binding_key(vhost, spec), value(&FieldTable::new()))
    }

    pub(crate) fn binding_deleted(vhost: &str, spec: &BindingSpec) -> Change {
        Change::Delete(binding_key(vhost, spec))
    }

    fn policy_tag(kind: PolicyKind) -> u8 {
        match kind {
            PolicyKind::Policy => TAG_POLICY,
            PolicyKind::Operator => TAG_OPERATOR_POLICY,
        }
    }

    pub(crate) fn policy(p: &crate::policy::Policy) -> Change {
        let mut t = FieldTable::new();
        t.insert("pattern", text(&p.pattern));
        t.insert("apply_to", text(p.apply_to.as_str()));
        t.insert("priority", FieldValue::I64(p.priority));
        t.insert("definition", text(&p.definition));
        Change::Put(
            key(policy_tag(p.kind), &[p.vhost.as_bytes(), p.name.as_bytes()]),
            value(&t),
        )
    }

    pub(crate) fn policy_cleared(vhost: &str, kind: PolicyKind, name: &str) -> Change {
        Change::Delete(key(policy_tag(kind), &[vhost.as_bytes(), name.as_bytes()]))
    }
}

fn parse_binding(parts: &[&[u8]]) -> Option<(String, BindingSpec)> {
    let [vhost, source, kind, dest, rk, args] = parts else {
        return None;
    };
    let destination = match *kind {
        b"q" => DestinationName::Queue(short(dest)),
        b"x" => DestinationName::Exchange(short(dest)),
        _ => return None,
    };
    let arguments = FieldTable::decode_entries(&Bytes::copy_from_slice(args)).ok()?;
    Some((
        String::from_utf8_lossy(vhost).into_owned(),
        BindingSpec {
            source: short(source),
            destination,
            key: short(rk),
            arguments,
        },
    ))
}

/// Why the durable state could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// The sync thread could not be started.
    #[error("cannot start the store's sync thread: {0}")]
    Thread(std::io::Error),
    /// The data directory could not be used.
    #[error("data directory {path}: {source}")]
    Directory {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Default)]
struct SyncSignal {
    wanted: bool,
    stop: bool,
}

/// The broker's durable state.
#[derive(Debug)]
pub(crate) struct Durable {
    meta: Mutex<MetaStore>,
    store: Mutex<MessageStore>,
    backend: Arc<dyn Backend>,
    gauge: Arc<MemoryGauge>,
    /// Numbers of the transient references of queues (paging), from 1.
    next_transient: AtomicU64,
    /// Every message id up to this one is on disk.
    synced: AtomicU64,
    /// Syncs completed.
    syncs: AtomicU64,
    /// An online backup is copying segments: compaction must not remove any.
    backup_running: std::sync::atomic::AtomicBool,
    signal: Mutex<SyncSignal>,
    wake: Condvar,
    /// Connections waiting for the next sync.
    waiters: Mutex<Vec<Weak<Outbox>>>,
    /// Why the store stopped, once it did.
    failure: OnceLock<String>,
    next_queue: AtomicU64,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The messages recovered for one queue, in order (read back when consumers reach them).
pub(crate) type RecoveredQueue = Vec<warren_store::StoredMessage>;

/// The durable state opened: the store, the definitions, and each queue's messages by the
/// queue's store number.
pub(crate) type Opened = (Arc<Durable>, Definitions, BTreeMap<u64, RecoveredQueue>);

impl Durable {
    /// Opens the data directory: reads the definitions and rebuilds the durable queues'
    /// messages. Damage found on the way is logged with where it was.
    pub(crate) fn open(
        backend: Arc<dyn Backend>,
        gauge: &Arc<MemoryGauge>,
    ) -> Result<Opened, DurableError> {
        let (meta, damage) = MetaStore::open(backend.clone(), "meta")?;
        for d in &damage {
            tracing::error!(store = "definitions", damage = %d, "recovery skipped damaged data");
        }
        let defs = read_definitions(&meta);
        let next_queue = meta
            .get(&key(TAG_COUNTER, &[b"queue"]))
            .and_then(parse_value)
            .and_then(|t| t.get("next").and_then(FieldValue::as_i64))
            .unwrap_or(1)
            .max(1) as u64;
        let known: std::collections::HashSet<u64> = defs.queues.iter().map(|q| q.id).collect();
        let (store, recovered) =
            MessageStore::open(backend.clone(), MessageStoreOptions::default(), |q| {
                known.contains(&q)
            })?;
        for d in &recovered.damage {
            tracing::error!(store = "messages", damage = %d, "recovery skipped damaged data");
        }
        // A queue number still named by a definition or on disk is never given again (the
        // stored counter alone could lag: declarations in two vhosts record it in either order).
        let named = defs
            .queues
            .iter()
            .map(|q| q.id)
            .chain(
                recovered
                    .queues_named
                    .iter()
                    .copied()
                    .filter(|q| q & crate::paging::TRANSIENT_REF == 0),
            )
            .max()
            .unwrap_or(0);
        let next_queue = next_queue.max(named + 1);
        // Paging scratch from the last run.
        if let Ok(names) = backend.list() {
            let prefix = format!("{}/", crate::paging::SPILL_PREFIX);
            for n in names.iter().filter(|n| n.starts_with(&prefix)) {
                let _ = backend.remove(n);
            }
        }
        let messages = recovered.queues;
        let written = store.stats();
        // Everything recovered is on disk; ids written from now on are above it.
        let last_id = store.last_id();
        tracing::info!(
            queues = defs.queues.len(),
            messages = written.messages,
            disk_bytes = written.disk_bytes,
            "durable state recovered"
        );
        let durable = Arc::new(Self {
            meta: Mutex::new(meta),
            store: Mutex::new(store),
            backend: backend.clone(),
            gauge: gauge.clone(),
            next_transient: AtomicU64::new(1),
            synced: AtomicU64::new(last_id),
            syncs: AtomicU64::new(0),
            backup_running: std::sync::atomic::AtomicBool::new(false),
            signal: Mutex::new(SyncSignal::default()),
            wake: Condvar::new(),
            waiters: Mutex::new(Vec::new()),
            failure: OnceLock::new(),
            next_queue: AtomicU64::new(next_queue),
            thread: Mutex::new(None),
        });
        let worker = durable.clone();
        let handle = std::thread::Builder::new()
            .name("warren-sync".into())
            .spawn(move || worker.sync_loop())
            .map_err(DurableError::Thread)?;
        *lock(&durable.thread) = Some(handle);
        Ok((durable, defs, messages))
    }

    /// Applies definition changes atomically and durably.
    pub(crate) fn apply(&self, changes: &[Change]) -> Result<(), String> {
        let mut meta = lock(&self.meta);
        // Deleting what is not there costs no sync.
        let needed: Vec<Change> = changes
            .iter()
            .filter(|c| match c {
                Change::Delete(k) => meta.get(k).is_some(),
                Change::Put(..) => true,
            })
            .cloned()
            .collect();
        if needed.is_empty() {
            return Ok(());
        }
        meta.apply(&needed).map_err(|e| {
            tracing::error!(error = %e, "definitions could not be written");
            e.to_string()
        })
    }

    /// The changes that delete a vhost and everything in it.
    pub(crate) fn vhost_deleted(&self, vhost: &str) -> Vec<Change> {
        let meta = lock(&self.meta);
        let mut out = vec![Change::Delete(key(TAG_VHOST, &[vhost.as_bytes()]))];
        for tag in [
            TAG_EXCHANGE,
            TAG_QUEUE,
            TAG_BINDING,
            TAG_POLICY,
            TAG_OPERATOR_POLICY,
        ] {
            let prefix = key(tag, &[vhost.as_bytes()]);
            out.extend(meta.scan(&prefix).map(|(k, _)| Change::Delete(k.to_vec())));
        }
        out.extend(
            meta.scan(&[TAG_PERMISSION])
                .filter(|(k, _)| {
                    key_parts(k).is_some_and(|(_, p)| p.get(1) == Some(&vhost.as_bytes()))
                })
                .map(|(k, _)| Change::Delete(k.to_vec())),
        );
        out
    }

    /// The changes that delete a user and its permissions.
    pub(crate) fn user_deleted(&self, user: &str) -> Vec<Change> {
        let meta = lock(&self.meta);
        let mut out = vec![record::user_deleted(user)];
        let prefix = key(TAG_PERMISSION, &[user.as_bytes()]);
        out.extend(meta.scan(&prefix).map(|(k, _)| Change::Delete(k.to_vec())));
        out
    }

    /// The changes that delete exchanges or queues (by name) and every binding to or from
    /// them.
    pub(crate) fn deleted(
        &self,
        vhost: &str,
        exchanges: &[ShortStr],
        queue: Option<&ShortStr>,
    ) -> Vec<Change> {
        let meta = lock(&self.meta);
        let mut out: Vec<Change> = exchanges
            .iter()
            .map(|x| Change::Delete(key(TAG_EXCHANGE, &[vhost.as_bytes(), x.as_bytes()])))
            .collect();
        if let Some(q) = queue {
            out.push(Change::Delete(key(
                TAG_QUEUE,
                &[vhost.as_bytes(), q.as_bytes()],
            )));
        }
        let prefix = key(TAG_BINDING, &[vhost.as_bytes()]);
        for (k, _) in meta.scan(&prefix) {
            let Some((_, parts)) = key_parts(k) else {
                continue;
            };
            let (Some(source), Some(kind), Some(dest)) = (parts.get(1), parts.get(2), parts.get(3))
            else {
                continue;
            };
            let gone = exchanges
                .iter()
                .any(|x| *source == x.as_bytes() || (*kind == b"x" && *dest == x.as_bytes()))
                || queue.is_some_and(|q| *kind == b"q" && *dest == q.as_bytes());
            if gone {
                out.push(Change::Delete(k.to_vec()));
            }
        }
        out
    }

    /// A number for a new durable queue (never reused), and the change that records it.
    pub(crate) fn new_queue_id(&self) -> (u64, Change) {
        let id = self.next_queue.fetch_add(1, Ordering::AcqRel);
        let mut t = FieldTable::new();
        t.insert("next", FieldValue::I64((id + 1) as i64));
        (id, Change::Put(key(TAG_COUNTER, &[b"queue"]), value(&t)))
    }

    /// Why the store stopped, if it did.
    pub(crate) fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// The highest message id known to be on disk.
    pub(crate) fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// Writes messages (each with the store numbers of its durable queues) and sets their
    /// ids. Durable after the next sync; see [`Durable::wait_sync`].
    pub(crate) fn write(&self, items: &[(Arc<Message>, std::ops::Range<usize>)], queues: &[u64]) {
        if self.failure().is_some() {
            return;
        }
        let mut store = lock(&self.store);
        let mut buf = Vec::new();
        for (m, range) in items {
            let Some(qs) = queues.get(range.clone()) else {
                continue;
            };
            buf.clear();
            m.encode_stored(&mut buf);
            match store.publish(qs, &buf, m.body.len() as u32) {
                Ok(at) => m.set_stored(at),
                // This message only: it stays in memory and its publisher gets a nack.
                Err(StoreError::TooLarge(n)) => {
                    tracing::warn!(
                        octets = n,
                        "a persistent message too large for the store is not kept"
                    );
                    m.set_refused();
                }
                Err(e) => {
                    drop(store);
                    self.fail(&e);
                    return;
                }
            }
        }
    }

    /// Writes one message for one queue reference, at once (a queue that started paging
    /// while the message was on its way); its id, or `None` if the store failed.
    pub(crate) fn write_one(&self, queue_ref: u64, m: &Message) -> Option<MessageRef> {
        if self.failure().is_some() {
            return None;
        }
        let mut buf = Vec::new();
        m.encode_stored(&mut buf);
        let r = lock(&self.store).publish(&[queue_ref], &buf, m.body.len() as u32);
        match r {
            Ok(at) => Some(at),
            // Too large to page out: it stays in memory.
            Err(StoreError::TooLarge(_)) => None,
            Err(e) => {
                self.fail(&e);
                None
            }
        }
    }

    /// Reads a message back (paging); `None` (logged) if it cannot be read: its reference is
    /// kept (the message comes back after a restart if the disk allows), never dropped here.
    pub(crate) fn read_message(
        &self,
        at: &MessageRef,
        gauge: &Arc<MemoryGauge>,
    ) -> Option<Arc<Message>> {
        let id = at.id;
        let data = lock(&self.store).read(at);
        match data {
            Ok(d) => {
                let m = Message::from_stored(&d, *at, gauge);
                if m.is_none() {
                    tracing::error!(message = id, "a stored message is malformed: skipped");
                }
                m
            }
            Err(e) => {
                tracing::error!(message = id, error = %e, "a stored message cannot be read: skipped");
                None
            }
        }
    }

    /// A new transient queue reference (for a queue's paged-out messages).
    pub(crate) fn new_transient_ref(&self) -> u64 {
        crate::paging::TRANSIENT_REF | self.next_transient.fetch_add(1, Ordering::Relaxed)
    }

    /// The gauge messages read back count against.
    pub(crate) fn gauge(&self) -> Arc<MemoryGauge> {
        self.gauge.clone()
    }

    /// The storage everything goes through.
    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Drops queues' references to messages: `(queue reference, message)`.
    pub(crate) fn ack(&self, acks: &[(u64, MessageRef)]) {
        if acks.is_empty() || self.failure().is_some() {
            return;
        }
        let mut store = lock(&self.store);
        for (q, at) in acks {
            if let Err(e) = store.ack(*q, at) {
                drop(store);
                self.fail(&e);
                return;
            }
        }
    }

    fn fail(&self, e: &StoreError) {
        lock(&self.store).fail(e);
        if self.failure.set(e.to_string()).is_ok() {
            tracing::error!(error = %e, "the message store failed: persistent messages are refused from now on");
        }
        self.wake_waiters();
    }

    /// Asks for a sync and for `outbox` to be woken when it completes.
    pub(crate) fn wait_sync(&self, outbox: &Arc<Outbox>) {
        {
            let mut w = lock(&self.waiters);
            if !w
                .iter()
                .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(outbox)))
            {
                w.push(Arc::downgrade(outbox));
            }
        }
        let mut s = lock(&self.signal);
        s.wanted = true;
        self.wake.notify_one();
    }

    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *lock(&self.waiters));
        for w in waiters {
            if let Some(o) = w.upgrade() {
                o.notify.notify_one();
            }
        }
    }

    fn sync_loop(self: Arc<Self>) {
        let mut compacted = std::time::Instant::now();
        loop {
            let (wanted, stop) = {
                let mut s = lock(&self.signal);
                if !s.wanted && !s.stop {
                    s = self
                        .wake
                        .wait_timeout(s, IDLE)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
                let r = (s.wanted, s.stop);
                s.wanted = false;
                r
            };
            if self.failure().is_some() {
                self.wake_waiters();
                if stop {
                    return;
                }
                continue;
            }
            if wanted || stop {
                self.sync_now();
            }
            // Give disk space back, one step at a time: when idle, and at least every
            // second under load (a busy store must not grow without bound).
            if !stop && (!wanted || compacted.elapsed() >= COMPACT_EVERY) {
                compacted = std::time::Instant::now();
                let r = {
                    // The backup sets its flag under this lock: a compaction never removes
                    // a segment a backup is copying.
                    let mut store = lock(&self.store);
                    if self.backup_running.load(Ordering::Acquire) {
                        Ok(false)
                    } else {
                        store.compact()
                    }
                };
                if let Err(e) = r {
                    self.fail(&e);
                }
            }
            if stop {
                return;
            }
        }
    }

    /// One group commit: everything written so far, synced without holding the store.
    fn sync_now(&self) {
        let (ticket, written) = {
            let mut store = lock(&self.store);
            let t = store.begin_sync();
            (t, store.last_written())
        };
        match ticket {
            Ok(Some(t)) => match t.run() {
                Ok(upto) => {
                    // Under the store's lock, and only if no other sync of the same file
                    // failed meanwhile (the kernel reports a writeback error once).
                    let store = lock(&self.store);
                    if store.failure().is_none() {
                        self.synced.fetch_max(upto, Ordering::AcqRel);
                        self.syncs.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    self.fail(&e);
                    return;
                }
            },
            // Nothing unsynced: a sync made elsewhere (compaction, a backup) covered it all.
            Ok(None) => {
                let store = lock(&self.store);
                if store.failure().is_none() {
                    self.synced.fetch_max(written, Ordering::AcqRel);
                }
            }
            Err(e) => {
                self.fail(&e);
                return;
            }
        }
        self.wake_waiters();
    }

    /// An online backup: everything durable (definitions and messages) as it is at one
    /// instant, copied into the empty directory `target`, synced there. Publishing pauses only
    /// while the files' lengths are taken (and the definitions copied); the messages are copied
    /// afterwards, compaction paused meanwhile (segments are append-only). The backup is a
    /// data directory: a broker started on it (or on a copy) recovers that instant.
    pub(crate) fn backup(&self, target: &std::path::Path) -> Result<BackupReport, DurableError> {
        let started = std::time::Instant::now();
        let dir_err = |source| DurableError::Directory {
            path: target.display().to_string(),
            source,
        };
        std::fs::create_dir_all(target).map_err(dir_err)?;
        if std::fs::read_dir(target).map_err(dir_err)?.next().is_some() {
            return Err(dir_err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the backup directory must be empty",
            )));
        }
        let out = warren_store::FileBackend::new(target).map_err(dir_err)?;
        {
            let _store = lock(&self.store);
            self.backup_running.store(true, Ordering::Release);
        }
        let result: Result<BackupReport, DurableError> = (|| {
            let meta = lock(&self.meta);
            let files = {
                let mut store = lock(&self.store);
                // Acks still buffered are part of this instant; the sync makes the copy's
                // source durable too.
                store.sync()?;
                self.listing(&["msgs/"])?
            };
            // Definitions are small: copied under their lock (their compaction removes files).
            let meta_files = self.listing(&["meta/"])?;
            let mut report = BackupReport::default();
            copy_files(&self.backend, &out, &meta_files, &mut report)?;
            drop(meta);
            copy_files(&self.backend, &out, &files, &mut report)?;
            out.sync_dir().map_err(dir_err)?;
            Ok(report)
        })();
        self.backup_running.store(false, Ordering::Release);
        let mut report = result?;
        report.elapsed = started.elapsed();
        tracing::info!(
            target = %target.display(),
            files = report.files,
            bytes = report.bytes,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "online backup written"
        );
        Ok(report)
    }

    /// The files under these prefixes and their lengths now.
    fn listing(&self, prefixes: &[&str]) -> Result<Vec<(String, u64)>, DurableError> {
        let io = |source| StoreError::Io {
            what: "listing the data directory".into(),
            source,
        };
        let mut out = Vec::new();
        for name in self.backend.list().map_err(io)? {
            if prefixes.iter().any(|p| name.starts_with(p)) {
                let len = self.backend.open(&name).and_then(|f| f.len()).map_err(io)?;
                out.push((name, len));
            }
        }
        Ok(out)
    }

    /// Syncs what is left and stops the sync thread (a clean shutdown).
    pub(crate) fn close(&self) {
        {
            let mut s = lock(&self.signal);
            s.stop = true;
            self.wake.notify_one();
        }
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }

    /// Syncs completed since start.
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Counts of the message store.
    pub(crate) fn stats(&self) -> warren_store::MessageStoreStats {
        lock(&self.store).stats()
    }
}

/// What an online backup copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupReport {
    /// Files written.
    pub files: u64,
    /// Octets written.
    pub bytes: u64,
    /// How long it took.
    pub elapsed: std::time::Duration,
}

/// Copies files (each up to the given length) from one backend to another, then syncs each.
fn copy_files(
    from: &Arc<dyn Backend>,
    to: &warren_store::FileBackend,
    files: &[(String, u64)],
    report: &mut BackupReport,
) -> Result<(), StoreError> {
    let mut buf = vec![0u8; 1 << 20];
    for (name, len) in files {
        let io = |what: &str| {
            let what = format!("{what} {name}");
            move |source| StoreError::Io { what, source }
        };
        let src = from.open(name).map_err(io("reading"))?;
        let dst = to.open(name).map_err(io("writing the backup of"))?;
        dst.set_len(0).map_err(io("writing the backup of"))?;
        let mut at = 0u64;
        while at < *len {
            let want = ((*len - at) as usize).min(buf.len());
            let chunk = buf.get_mut(..want).unwrap_or_default();
            let n = src.read_at(chunk, at).map_err(io("reading"))?;
            if n == 0 {
                break;
            }
            dst.write_at(chunk.get(..n).unwrap_or_default(), at)
                .map_err(io("writing the backup of"))?;
            at += n as u64;
        }
        dst.sync_data().map_err(io("syncing the backup of"))?;
        report.files += 1;
        report.bytes += at;
    }
    Ok(())
}

fn read_definitions(meta: &MetaStore) -> Definitions {
    let mut d = Definitions::default();
    for (k, v) in meta.scan(&[]) {
        let (Some((tag, parts)), Some(t)) = (key_parts(k), parse_value(v)) else {
            tracing::error!(key = ?k, "a stored definition is malformed: skipped");
            continue;
        };
        let s = |i: usize| {
            parts
                .get(i)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default()
        };
        match tag {
            TAG_VHOST => d.vhosts.push(s(0)),
            TAG_USER => {
                let hash = get_text(&t, "password_hash");
                let tags = get_text(&t, "tags");
                d.users.push((
                    User {
                        name: s(0),
                        password_hash: PasswordHash::from_base64(&hash),
                        tags: tags
                            .split(',')
                            .filter(|t| !t.is_empty())
                            .map(str::to_string)
                            .collect(),
                    },
                    get_bool(&t, "loopback_only"),
                ));
            }
            TAG_PERMISSION => d.permissions.push((
                s(0),
                s(1),
                get_text(&t, "configure"),
                get_text(&t, "write"),
                get_text(&t, "read"),
            )),
            TAG_EXCHANGE => {
                let name = parts.get(1).map(|p| short(p)).unwrap_or_default();
                let kind = ShortStr::from(get_text(&t, "type"));
                d.exchanges.push((
                    s(0),
                    ExchangeSpec {
                        name,
                        kind,
                        durable: true,
                        auto_delete: get_bool(&t, "auto_delete"),
                        internal: get_bool(&t, "internal"),
                        arguments: t
                            .get("arguments")
                            .and_then(FieldValue::as_table)
                            .cloned()
                            .unwrap_or_default(),
                    },
                ));
            }
            TAG_QUEUE => d.queues.push(StoredQueue {
                vhost: s(0),
                name: parts.get(1).map(|p| short(p)).unwrap_or_default(),
                id: t.get("id").and_then(FieldValue::as_i64).unwrap_or(0) as u64,
                auto_delete: get_bool(&t, "auto_delete"),
                arguments: t
                    .get("arguments")
                    .and_then(FieldValue::as_table)
                    .cloned()
                    .unwrap_or_default(),
            }),
            TAG_BINDING => match parse_binding(&parts) {
                Some(b) => d.bindings.push(b),
                None => tracing::error!("a stored binding is malformed: skipped"),
            },
            TAG_POLICY | TAG_OPERATOR_POLICY => d.policies.push((
                if tag == TAG_POLICY {
                    PolicyKind::Policy
                } else {
                    PolicyKind::Operator
                },
                crate::policy::PolicyInfo {
                    vhost: s(0),
                    name: s(1),
                    pattern: get_text(&t, "pattern"),
                    apply_to: get_text(&t, "apply_to"),
                    priority: t.get("priority").and_then(FieldValue::as_i64).unwrap_or(0),
                    definition: get_text(&t, "definition"),
                },
            )),
            _ => {}
        }
    }
    d
}
