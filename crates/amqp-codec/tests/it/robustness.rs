//! Robustness: a bounded storm of random and mutated input at every decoder and at the server
//! connection state machine.
//!
//! About a million inputs, all derived from one constant seed (set `WARREN_ROBUSTNESS_SEED` to
//! explore another; a failing case prints its seed, index and input in hex). Three kinds:
//! raw random bytes; valid frames and tables from the crate's own encoders, mutated (bit flips,
//! truncation, length fields set to `0xFFFFFFFF` and friends, splices, framing repaired so the
//! damage reaches the payload decoders); and pathological shapes (tables and arrays nested
//! thousands deep, thousands of one-octet values).
//!
//! What must hold for every input:
//! - nothing panics;
//! - every error is a hard (connection) error with the reply code its kind calls for;
//! - memory stays proportional to the input: a counting global allocator (per thread, so the
//!   other tests of this binary do not disturb it) bounds the bytes live at the peak of one
//!   decode, and the connection's buffers and pending events stay bounded, so that a 4 GiB
//!   length field never makes anything reserve 4 GiB;
//! - whatever the server writes is itself well-formed AMQP.
//!
//! `fuzz/` has coverage-guided versions of the same targets; every crash input they find is
//! pinned below as a regression case.

use bytes::{BufMut, Bytes, BytesMut};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::{Duration, Instant};
use warren_amqp_codec::connection::{
    ChannelCloseReason, CloseReason, Event, FRAME_MIN_SIZE, ServerConfig, ServerConnection,
};
use warren_amqp_codec::frame::{self, FRAME_END, ProtocolHeader};
use warren_amqp_codec::table::MAX_NESTING;
use warren_amqp_codec::{
    BasicAck, BasicCancel, BasicConsume, BasicDeliver, BasicGet, BasicNack, BasicProperties,
    BasicPublish, BasicQos, BasicReject, ChannelClose, ChannelCloseOk, ChannelFlow, ChannelOpen,
    CodecError, ConfirmSelect, ConnectionClose, ConnectionCloseOk, ConnectionOpen,
    ConnectionStartOk, ConnectionTuneOk, ConnectionUpdateSecret, ContentHeader, Decimal,
    ExchangeBind, ExchangeDeclare, FieldArray, FieldTable, FieldValue, Frame, LongStr, Method,
    QueueBind, QueueDeclare, QueueDelete, QueuePurge, ReplyCode, TxSelect,
};

/// Inputs for `frame::decode_frame` (and `Frame::parse`).
const FRAME_CASES: usize = 600_000;
/// Inputs for `FieldTable::decode_entries`.
const TABLE_CASES: usize = 300_000;
/// Whole client connections, each a handshake followed by random and mutated frames.
const CONNECTION_SESSIONS: usize = 20_000;

/// Bytes a decode may have live beyond its input's multiple (small fixed structures).
const SLACK: usize = 64 * 1024;
/// Bytes a decode may have live per input octet. The worst case is a field array of one-octet
/// `V` values: each becomes a 40-octet `FieldValue` in a `Vec` that doubles as it grows (and
/// briefly holds old and new storage while it moves).
const PER_INPUT_OCTET: usize = 128;

// ---------------------------------------------------------------------------------------------
// The counting allocator.

/// A global allocator that forwards to [`System`](std::alloc::System) and counts, per thread,
/// the bytes live and their high-water mark. The counters are const-initialised thread-locals
/// of `Cell`s without destructors: reading them never allocates and never fails.
#[allow(unsafe_code)]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Counting;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn grew(n: usize) {
        let _ = LIVE.try_with(|live| {
            let now = live.get().wrapping_add(n as isize);
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    fn shrank(n: usize) {
        let _ = LIVE.try_with(|live| live.set(live.get().wrapping_sub(n as isize)));
    }

    // SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
    // `GlobalAlloc` contract; the bookkeeping only touches thread-local integers and neither
    // allocates nor unwinds. See UNSAFE.md.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller upholds `alloc`'s contract (non-zero size), passed on as is.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                grew(layout.size());
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as for `alloc`.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                grew(layout.size());
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`.
            unsafe { System.dealloc(ptr, layout) };
            shrank(layout.size());
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: `ptr` came from `System` with `layout`; the caller upholds the rest.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                // Counted as if old and new blocks were both live for a moment, as they are
                // when the block moves.
                grew(new_size);
                shrank(layout.size());
            }
            p
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Bytes currently allocated by this thread (and not freed by it).
    fn live() -> isize {
        LIVE.try_with(Cell::get).unwrap_or(0)
    }

    /// Runs `f` and returns its result with the most bytes this thread had live at once while
    /// it ran, beyond what was live when it started (the result itself included). Not
    /// reentrant: a nested call resets the high-water mark of the outer one.
    pub(super) fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
        let base = live();
        let _ = PEAK.try_with(|peak| peak.set(base));
        let r = f();
        let peak = PEAK.try_with(Cell::get).unwrap_or(base);
        (r, usize::try_from(peak - base).unwrap_or(0))
    }
}

use counting::peak_during;

// ---------------------------------------------------------------------------------------------
// A deterministic PRNG (splitmix64).

struct Rng(u64);

impl Rng {
    fn new(stream: u64) -> Self {
        Self(seed() ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn fill(&mut self, out: &mut Vec<u8>, n: usize) {
        out.extend((0..n).map(|_| self.byte()));
    }
}

/// The constant seed, unless `WARREN_ROBUSTNESS_SEED` names another.
fn seed() -> u64 {
    std::env::var("WARREN_ROBUSTNESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5741_5252_454E_0091)
}

/// Runs one case; if it panics, says which input did it before passing the panic on.
fn case(what: &str, index: usize, input: &[u8], f: impl FnOnce()) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(f)) {
        eprintln!(
            "{what} case {index} (seed {}) failed on {} octets: {}",
            seed(),
            input.len(),
            hex(input)
        );
        resume_unwind(panic);
    }
}

fn hex(bytes: &[u8]) -> String {
    const SHOWN: usize = 4096;
    let mut s: String = bytes
        .iter()
        .take(SHOWN)
        .map(|b| format!("{b:02x}"))
        .collect();
    if bytes.len() > SHOWN {
        s.push_str(&format!("... ({} more)", bytes.len() - SHOWN));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Valid input from the crate's encoders.

fn rich_table() -> FieldTable {
    let mut inner = FieldTable::new();
    inner.insert("publisher_confirms", true);
    inner.insert("x", FieldValue::I64(-1));
    let mut t = FieldTable::new();
    t.insert("bool", true);
    t.insert("i8", FieldValue::I8(-8));
    t.insert("u8", FieldValue::U8(8));
    t.insert("i16", FieldValue::I16(-16));
    t.insert("u16", FieldValue::U16(16));
    t.insert("i32", FieldValue::I32(-32));
    t.insert("u32", FieldValue::U32(32));
    t.insert("i64", FieldValue::I64(-64));
    t.insert("f32", FieldValue::F32(1.5));
    t.insert("f64", FieldValue::F64(-2.25));
    t.insert(
        "dec",
        FieldValue::Decimal(Decimal {
            scale: 2,
            value: 314,
        }),
    );
    t.insert("str", "hello");
    t.insert(
        "bytes",
        FieldValue::Bytes(Bytes::from_static(b"\x00\xff\xce")),
    );
    t.insert(
        "arr",
        FieldValue::Array(FieldArray(vec![
            FieldValue::I32(1),
            "two".into(),
            FieldValue::Table(inner.clone()),
            FieldValue::Array(FieldArray(vec![FieldValue::Void])),
        ])),
    );
    t.insert("ts", FieldValue::Timestamp(1_700_000_000));
    t.insert("capabilities", FieldValue::Table(inner));
    t.insert("void", FieldValue::Void);
    t
}

fn sample_tables() -> Vec<FieldTable> {
    let mut small = FieldTable::new();
    small.insert("x-max-length", FieldValue::I32(10));
    let mut login = FieldTable::new();
    login.insert("LOGIN", "guest");
    login.insert("PASSWORD", "guest");
    vec![FieldTable::new(), small, login, rich_table()]
}

fn full_properties() -> BasicProperties {
    BasicProperties {
        content_type: Some("text/plain".into()),
        content_encoding: Some("utf-8".into()),
        headers: Some(rich_table()),
        delivery_mode: Some(2),
        priority: Some(5),
        correlation_id: Some("c".into()),
        reply_to: Some("r".into()),
        expiration: Some("60000".into()),
        message_id: Some("m".into()),
        timestamp: Some(1),
        kind: Some("k".into()),
        user_id: Some("guest".into()),
        app_id: Some("a".into()),
        cluster_id: Some("".into()),
    }
}

/// Methods a client sends, with arguments that exercise every argument type.
fn client_methods() -> Vec<Method> {
    let args = rich_table();
    vec![
        ConnectionStartOk {
            client_properties: args.clone(),
            response: LongStr::from_static("\0guest\0guest"),
            ..Default::default()
        }
        .into(),
        ConnectionTuneOk {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        }
        .into(),
        ConnectionOpen {
            virtual_host: "/".into(),
            ..Default::default()
        }
        .into(),
        ConnectionClose {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        }
        .into(),
        ConnectionCloseOk::default().into(),
        ConnectionUpdateSecret {
            new_secret: "s".into(),
            reason: "r".into(),
        }
        .into(),
        ChannelOpen::default().into(),
        ChannelFlow { active: true }.into(),
        ChannelClose {
            reply_code: 200,
            reply_text: "ok".into(),
            class_id: 60,
            method_id: 40,
        }
        .into(),
        ChannelCloseOk::default().into(),
        ExchangeDeclare {
            exchange: "ex".into(),
            kind: "topic".into(),
            durable: true,
            arguments: args.clone(),
            ..Default::default()
        }
        .into(),
        ExchangeBind {
            destination: "d".into(),
            source: "s".into(),
            routing_key: "a.#".into(),
            ..Default::default()
        }
        .into(),
        QueueDeclare {
            queue: "q".into(),
            durable: true,
            exclusive: true,
            arguments: args.clone(),
            ..Default::default()
        }
        .into(),
        QueueBind {
            queue: "q".into(),
            exchange: "ex".into(),
            routing_key: "k".into(),
            arguments: args.clone(),
            ..Default::default()
        }
        .into(),
        QueuePurge {
            queue: "q".into(),
            ..Default::default()
        }
        .into(),
        QueueDelete {
            queue: "q".into(),
            if_empty: true,
            ..Default::default()
        }
        .into(),
        BasicQos {
            prefetch_size: 0,
            prefetch_count: 10,
            global: false,
        }
        .into(),
        BasicConsume {
            queue: "q".into(),
            consumer_tag: "ctag".into(),
            no_ack: true,
            arguments: args,
            ..Default::default()
        }
        .into(),
        BasicCancel {
            consumer_tag: "ctag".into(),
            nowait: false,
        }
        .into(),
        BasicGet {
            queue: "q".into(),
            ..Default::default()
        }
        .into(),
        BasicAck {
            delivery_tag: u64::MAX,
            multiple: true,
        }
        .into(),
        BasicNack {
            delivery_tag: 7,
            multiple: false,
            requeue: true,
        }
        .into(),
        BasicReject {
            delivery_tag: 3,
            requeue: false,
        }
        .into(),
        ConfirmSelect { nowait: false }.into(),
        TxSelect::default().into(),
        publish(),
    ]
}

fn publish() -> Method {
    BasicPublish {
        exchange: "ex".into(),
        routing_key: "k".into(),
        ..Default::default()
    }
    .into()
}

/// Every kind of frame, encoded, with the frame each decodes to.
fn frame_corpus() -> Vec<(Vec<u8>, Frame)> {
    let mut frames: Vec<Frame> = client_methods()
        .into_iter()
        .enumerate()
        .map(|(i, method)| Frame::Method {
            channel: (i % 3) as u16,
            method,
        })
        .collect();
    frames.push(Frame::Header {
        channel: 1,
        header: ContentHeader::basic(5, full_properties()),
    });
    frames.push(Frame::Header {
        channel: 1,
        header: ContentHeader::basic(0, BasicProperties::default()),
    });
    frames.push(Frame::Body {
        channel: 1,
        payload: Bytes::from_static(b"hello"),
    });
    frames.push(Frame::Body {
        channel: 2,
        payload: Bytes::new(),
    });
    frames.push(Frame::Heartbeat);
    frames
        .into_iter()
        .map(|f| {
            let mut buf = BytesMut::new();
            f.encode(&mut buf);
            (buf.to_vec(), f)
        })
        .collect()
}

/// Encoded field tables without their length prefix (the form `decode_entries` reads).
fn table_corpus() -> Vec<Vec<u8>> {
    sample_tables()
        .iter()
        .map(|t| {
            let mut buf = BytesMut::new();
            t.encode_entries(&mut buf);
            buf.to_vec()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Hostile shapes.

/// A single value nested `depth` deep in tables (`F`), arrays (`A`) or both, around a `V`.
/// Built inside out, backwards, so that thousands of levels cost linear time.
fn nested_value(depth: usize, rng: &mut Rng, kinds: &[u8]) -> Vec<u8> {
    let mut rev = vec![b'V'];
    for _ in 0..depth {
        let kind = *rng.pick(kinds);
        if kind == b'F' {
            rev.push(0); // the inner entry's empty key
            let len = rev.len() as u32;
            rev.extend(len.to_le_bytes()); // big-endian once reversed
        } else {
            let len = rev.len() as u32;
            rev.extend(len.to_le_bytes());
        }
        rev.push(kind);
    }
    rev.reverse();
    rev
}

/// Table entries (no length prefix) holding one value nested `depth` deep.
fn nested_entries(depth: usize, rng: &mut Rng, kinds: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend(nested_value(depth, rng, kinds));
    out
}

/// Table entries of `n` tiny values: empty-keyed voids, or one array of voids.
fn dense_entries(n: usize, array: bool) -> Vec<u8> {
    if array {
        let mut out = vec![0, b'A'];
        out.extend((n as u32).to_be_bytes());
        out.extend(std::iter::repeat_n(b'V', n));
        out
    } else {
        [0, b'V'].repeat(n)
    }
}

/// A `queue.declare` frame whose `arguments` are the given table entries.
fn declare_with_arguments(entries: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    frame::encode_method(
        &mut buf,
        1,
        &QueueDeclare {
            queue: "q".into(),
            ..Default::default()
        }
        .into(),
    );
    // The empty arguments table (four zero octets) and the frame end close the frame.
    let mut f = buf.to_vec();
    f.truncate(f.len() - 5);
    f.extend((entries.len() as u32).to_be_bytes());
    f.extend_from_slice(entries);
    f.push(FRAME_END);
    fix_framing(&mut f);
    f
}

/// Makes the frame header's size and the frame end agree with the buffer's length, so that
/// damage inside the payload reaches the payload decoders.
fn fix_framing(f: &mut [u8]) {
    if f.len() >= frame::FRAME_OVERHEAD {
        let size = (f.len() - frame::FRAME_OVERHEAD) as u32;
        f[3..7].copy_from_slice(&size.to_be_bytes());
        let last = f.len() - 1;
        f[last] = FRAME_END;
    }
}

const INTERESTING_U32: [u32; 12] = [
    0xFFFF_FFFF,
    0xFFFF_FFF7,
    0xFFFF_FFF8,
    0x7FFF_FFFF,
    0x8000_0000,
    0x0001_0000,
    131_072,
    131_064,
    4096,
    4088,
    1,
    0,
];

const INTERESTING_U8: [u8; 14] = [
    0, 1, 0x7F, 0x80, 0xFF, 0xCE, b'F', b'A', b'S', b'x', b'V', b'D', b't', 8,
];

/// Damages `input` in one to four ways.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, donors: &[Vec<u8>]) {
    for _ in 0..rng.range(1, 4) {
        let len = input.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = *rng.pick(&INTERESTING_U8);
            }
            2 => input.truncate(rng.below(len + 1)),
            3 if len >= 4 => {
                // A length field (or anything else) set to a hostile 32-bit value.
                let i = rng.below(len - 3);
                let v = *rng.pick(&INTERESTING_U32);
                input[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
            4 if len >= 7 => {
                // The frame size field itself.
                let v = *rng.pick(&INTERESTING_U32);
                input[3..7].copy_from_slice(&v.to_be_bytes());
            }
            5 => {
                let i = rng.below(len + 1);
                let mut extra = Vec::new();
                let n = rng.range(1, 8);
                rng.fill(&mut extra, n);
                input.splice(i..i, extra);
            }
            6 if len > 0 => {
                let a = rng.below(len);
                let b = rng.range(a, len.min(a + 16));
                input.drain(a..b);
            }
            7 if len > 0 => {
                let a = rng.below(len);
                let b = rng.range(a, len.min(a + 16));
                let piece = input[a..b].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, piece);
            }
            8 if !donors.is_empty() => {
                let donor = rng.pick(donors);
                let a = rng.below(donor.len() + 1);
                let b = rng.range(a, donor.len());
                input.extend_from_slice(&donor[a..b]);
            }
            _ if len > 0 => {
                // Shift a multi-octet field by one: a classic off-by-one in lengths.
                let i = rng.below(len);
                input[i] = input[i].wrapping_add(if rng.one_in(2) { 1 } else { 0xFF });
            }
            _ => {}
        }
    }
}

/// Random octets that look a little like a frame: a plausible type, small channel and a size
/// that is often exact.
fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    let payload = rng.below(40);
    if rng.one_in(4) {
        let n = payload + rng.below(8);
        rng.fill(&mut out, n);
        return out;
    }
    out.push(*rng.pick(&[1, 2, 3, 8, 0, 4, 0xCE]));
    out.extend((rng.below(4) as u16).to_be_bytes());
    let size = if rng.one_in(3) {
        *rng.pick(&INTERESTING_U32)
    } else {
        payload as u32
    };
    out.extend(size.to_be_bytes());
    if rng.one_in(2) {
        // class and method ids that exist
        out.extend(*rng.pick(&[
            [0, 10, 0, 11],
            [0, 20, 0, 10],
            [0, 50, 0, 10],
            [0, 60, 0, 40],
            [0, 40, 0, 10],
            [0, 60, 0, 0],
        ]));
    }
    rng.fill(&mut out, payload);
    out.push(if rng.one_in(8) { rng.byte() } else { FRAME_END });
    out
}

/// Random octets that look a little like table entries.
fn random_entries(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.one_in(4) {
        let n = rng.below(48);
        rng.fill(&mut out, n);
        return out;
    }
    for _ in 0..rng.range(1, 4) {
        let key = rng.below(4);
        out.push(key as u8);
        rng.fill(&mut out, key);
        out.push(*rng.pick(b"tbBsuIilfdDSxATFVZ\0"));
        if rng.one_in(3) {
            out.extend(rng.pick(&INTERESTING_U32).to_be_bytes());
        }
        let n = rng.below(10);
        rng.fill(&mut out, n);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// An error from a decoder is a hard error with one of the codes RabbitMQ uses for malformed
/// input, and says what is wrong.
fn check_error(e: &CodecError) {
    let code = e.reply_code();
    assert!(code.is_hard_error(), "{e}: {code:?} is not a hard error");
    assert!(
        matches!(
            code,
            ReplyCode::FrameError
                | ReplyCode::SyntaxError
                | ReplyCode::CommandInvalid
                | ReplyCode::UnexpectedFrame
        ),
        "{e}: {code:?}"
    );
    assert!(!e.to_string().is_empty());
}

thread_local! {
    /// The most bytes live per input octet seen on this thread, for inputs of 1 KiB or more
    /// (below that the fixed slack dominates).
    static WORST_RATIO: Cell<f64> = const { Cell::new(0.0) };
}

fn check_peak(what: &str, input_len: usize, peak: usize) {
    if input_len >= 1024 {
        let ratio = peak as f64 / input_len as f64;
        WORST_RATIO.with(|w| w.set(w.get().max(ratio)));
    }
    assert!(
        peak <= PER_INPUT_OCTET * input_len + SLACK,
        "{what}: {peak} bytes live at the peak for {input_len} octets of input"
    );
}

/// Decodes frames from `input` until it runs out or fails; returns the frames decoded.
fn decode_all(input: &[u8], frame_max: u32) -> Vec<Frame> {
    let mut buf = BytesMut::from(input);
    let (frames, peak) = peak_during(|| {
        let mut frames = Vec::new();
        loop {
            let before = buf.len();
            match frame::decode_frame(&mut buf, frame_max) {
                Ok(Some(f)) => {
                    assert!(buf.len() < before, "a decoded frame consumed nothing");
                    if let Frame::Body { payload, .. } = &f {
                        assert!(payload.len() + frame::FRAME_OVERHEAD <= before - buf.len());
                    }
                    frames.push(f);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) consumed input");
                    if let Some(size) = buf.get(3..7) {
                        let size = u32::from_be_bytes(size.try_into().unwrap());
                        let total = u64::from(size) + frame::FRAME_OVERHEAD as u64;
                        assert!(
                            (buf.len() as u64) < total,
                            "a whole frame was left undecoded"
                        );
                        assert!(
                            frame_max == 0 || size <= frame_max,
                            "waiting for a frame larger than frame_max"
                        );
                    }
                    break;
                }
                Err(e) => {
                    check_error(&e);
                    break;
                }
            }
        }
        frames
    });
    check_peak("decode_frame", input.len(), peak);
    frames
}

fn check_parse(kind: u8, channel: u16, payload: &[u8]) {
    let payload = Bytes::copy_from_slice(payload);
    let len = payload.len();
    let (result, peak) = peak_during(|| Frame::parse(kind, channel, payload));
    check_peak("Frame::parse", len, peak);
    match result {
        Ok(f) => assert!(kind == 8 || f.channel() == channel),
        Err(e) => check_error(&e),
    }
}

fn check_entries(input: &[u8]) -> Option<FieldTable> {
    let bytes = Bytes::copy_from_slice(input);
    let (result, peak) = peak_during(|| FieldTable::decode_entries(&bytes));
    check_peak("decode_entries", input.len(), peak);
    match result {
        Ok(t) => {
            // Every octet is accounted for: re-encoding gives back as many.
            assert_eq!(t.encoded_len(), input.len());
            Some(t)
        }
        Err(e) => {
            check_error(&e);
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The storms.

#[test]
fn decode_frame_survives_random_and_mutated_input() {
    let mut rng = Rng::new(1);
    let corpus = frame_corpus();
    let donors: Vec<Vec<u8>> = corpus.iter().map(|(bytes, _)| bytes.clone()).collect();
    let frame_maxes = [0, 1, 8, 4096, 8192, 131_072, u32::MAX];
    let (mut ok, mut err_or_partial, mut largest) = (0usize, 0usize, 0usize);
    for i in 0..FRAME_CASES {
        let frame_max = *rng.pick(&frame_maxes);
        let mut input = match rng.below(100) {
            0..=29 => random_frame(&mut rng),
            30..=89 => {
                let mut f = rng.pick(&donors).clone();
                mutate(&mut rng, &mut f, &donors);
                if rng.one_in(2) {
                    fix_framing(&mut f);
                }
                f
            }
            90..=94 => {
                // Several valid frames back to back, the last one possibly damaged.
                let mut f = Vec::new();
                for _ in 0..rng.range(1, 4) {
                    let donor: &Vec<u8> = rng.pick(&donors);
                    f.extend_from_slice(donor);
                }
                if rng.one_in(2) {
                    mutate(&mut rng, &mut f, &donors);
                }
                f
            }
            95..=97 => {
                let (shallow, deep) = (rng.range(1, 200), rng.range(200, 3000));
                let depth =
                    *rng.pick(&[MAX_NESTING - 1, MAX_NESTING, MAX_NESTING + 1, shallow, deep]);
                let entries = nested_entries(depth, &mut rng, b"FA");
                declare_with_arguments(&entries)
            }
            _ => {
                let entries = dense_entries(rng.range(1, 2000), rng.one_in(2));
                declare_with_arguments(&entries)
            }
        };
        if rng.one_in(50) {
            input.clear();
        }
        largest = largest.max(input.len());
        case("decode_frame", i, &input, || {
            if decode_all(&input, frame_max).is_empty() {
                err_or_partial += 1;
            } else {
                ok += 1;
            }
            if rng.one_in(8) && !input.is_empty() {
                // Frame::parse straight on the octets, framing skipped.
                let kind = *rng.pick(&[1, 2, 3, 8, input[0]]);
                check_parse(kind, rng.below(3) as u16, &input[1..]);
            }
        });
    }
    // The storm reached past the framing, and also broke things.
    assert!(ok > FRAME_CASES / 10, "only {ok} inputs decoded to a frame");
    assert!(err_or_partial > FRAME_CASES / 10);
    eprintln!(
        "decode_frame: {FRAME_CASES} inputs, {ok} gave frames, largest {largest} octets, \
         at worst {:.1} bytes live per input octet",
        WORST_RATIO.with(Cell::get)
    );
}

#[test]
fn decode_entries_survives_random_and_mutated_input() {
    let mut rng = Rng::new(2);
    let corpus = table_corpus();
    let (mut ok, mut largest) = (0usize, 0usize);
    for i in 0..TABLE_CASES {
        let input = match rng.below(100) {
            0..=29 => random_entries(&mut rng),
            30..=89 => {
                let mut t = rng.pick(&corpus).clone();
                mutate(&mut rng, &mut t, &corpus);
                t
            }
            90..=94 => rng.pick(&corpus).clone(),
            95..=97 => {
                let (shallow, deep) = (rng.range(1, 200), rng.range(200, 5000));
                let depth = *rng.pick(&[MAX_NESTING, MAX_NESTING + 1, shallow, deep]);
                let kinds: &&[u8] = rng.pick(&[b"F", b"A", b"FA"]);
                let mut t = nested_entries(depth, &mut rng, kinds);
                if rng.one_in(3) {
                    mutate(&mut rng, &mut t, &corpus);
                }
                t
            }
            _ => dense_entries(rng.range(1, 4000), rng.one_in(2)),
        };
        largest = largest.max(input.len());
        case("decode_entries", i, &input, || {
            if check_entries(&input).is_some() {
                ok += 1;
            }
        });
    }
    assert!(ok > TABLE_CASES / 10, "only {ok} inputs decoded to a table");
    eprintln!(
        "decode_entries: {TABLE_CASES} inputs, {ok} decoded, largest {largest} octets, \
         at worst {:.1} bytes live per input octet",
        WORST_RATIO.with(Cell::get)
    );
}

// ---------------------------------------------------------------------------------------------
// The connection state machine.

/// What one session of the connection storm did, for the final tally.
#[derive(Default)]
struct Tally {
    sessions: usize,
    frames: usize,
    octets: usize,
    opened: usize,
    commands: usize,
    closed_by_server: usize,
    /// Every event, when wanted.
    log: Option<Vec<Event>>,
}

/// A client's half of the handshake: header, start-ok, tune-ok, open; and the `frame_max` it
/// agrees to.
fn handshake(rng: &mut Rng, config: &ServerConfig) -> (Vec<u8>, u32) {
    let mut buf = BytesMut::new();
    buf.put_slice(&frame::PROTOCOL_HEADER);
    let mut caps = FieldTable::new();
    caps.insert("authentication_failure_close", true);
    caps.insert("connection.blocked", true);
    let mut props = FieldTable::new();
    props.insert("product", "robustness");
    props.insert("capabilities", FieldValue::Table(caps));
    let (mechanism, response) = if rng.one_in(2) {
        ("PLAIN", LongStr::from_static("\0guest\0guest"))
    } else {
        let mut login = BytesMut::new();
        let mut t = FieldTable::new();
        t.insert("LOGIN", "guest");
        t.insert("PASSWORD", "guest");
        t.encode_entries(&mut login);
        ("AMQPLAIN", LongStr::from(login.freeze()))
    };
    let start_ok = ConnectionStartOk {
        client_properties: props,
        mechanism: mechanism.into(),
        response,
        locale: "en_US".into(),
    };
    frame::encode_method(&mut buf, 0, &start_ok.into());
    // Values RabbitMQ accepts: at least the minimum, at most the server's limit, and 0 ("no
    // limit") only when the server has none.
    let frame_max = match config.frame_max {
        0 => *rng.pick(&[0, FRAME_MIN_SIZE, u32::MAX]),
        max => *rng.pick(&[FRAME_MIN_SIZE, max]),
    };
    let agreed = frame_max;
    let tune_ok = ConnectionTuneOk {
        channel_max: *rng.pick(&[config.channel_max, config.channel_max.min(4)]),
        frame_max,
        heartbeat: *rng.pick(&[0, 1, 60]),
    };
    frame::encode_method(&mut buf, 0, &tune_ok.into());
    let open = ConnectionOpen {
        virtual_host: "/".into(),
        ..Default::default()
    };
    frame::encode_method(&mut buf, 0, &open.into());
    (buf.to_vec(), agreed)
}

/// A client after the handshake: it mostly follows the protocol (opens channels before using
/// them, completes the content it starts) and now and then does something wrong or damages
/// what it sends, at a rate chosen per session.
struct Client<'a> {
    corpus: &'a [Vec<u8>],
    /// Encoded commands that are valid on any open channel (channel 0 in the encoding).
    commands: &'a [Vec<u8>],
    open: Vec<u16>,
    frame_max: u32,
    /// One move in `damage` is damaged or out of protocol.
    damage: usize,
}

impl Client<'_> {
    /// Appends one move to `out`.
    fn next_move(&mut self, rng: &mut Rng, out: &mut Vec<u8>) {
        let mut buf = BytesMut::new();
        let wrong = rng.one_in(self.damage);
        let channel = if wrong || self.open.is_empty() {
            *rng.pick(&[1, 2, 3, 4, 2047, 0, 5])
        } else {
            *rng.pick(&self.open)
        };
        let kind = if self.open.is_empty() && !wrong {
            0
        } else {
            rng.below(16)
        };
        match kind {
            0..=1 => {
                let channel = match (1..=3).find(|c| !self.open.contains(c)) {
                    Some(_) if wrong => channel,
                    Some(free) => free,
                    None => channel,
                };
                frame::encode_method(&mut buf, channel, &ChannelOpen::default().into());
                if !self.open.contains(&channel) {
                    self.open.push(channel);
                }
            }
            2..=7 => {
                let body_len = if rng.one_in(20) {
                    5000
                } else {
                    *rng.pick(&[0, 1, 5, 100, 300])
                };
                let body = vec![0xAB; body_len];
                let props = if rng.one_in(8) {
                    full_properties()
                } else {
                    BasicProperties::default()
                };
                let fm = match self.frame_max {
                    0 => 0,
                    max => max.min(*rng.pick(&[max, 4096, 100])),
                };
                frame::encode_content(&mut buf, channel, &publish(), &props, &body, fm);
            }
            8..=11 => {
                let command: &Vec<u8> = rng.pick(self.commands);
                buf.put_slice(command);
                buf[1..3].copy_from_slice(&channel.to_be_bytes());
            }
            12 => {
                let close = ChannelClose {
                    reply_code: 200,
                    reply_text: "".into(),
                    class_id: 0,
                    method_id: 0,
                };
                frame::encode_method(&mut buf, channel, &close.into());
                self.open.retain(|&c| c != channel);
            }
            13 => frame::encode_heartbeat(&mut buf),
            14 if wrong => {
                let mut f = Vec::new();
                let n = rng.below(24);
                rng.fill(&mut f, n);
                buf.put_slice(&f);
            }
            _ if wrong => {
                let donor: &Vec<u8> = rng.pick(self.corpus);
                buf.put_slice(donor);
            }
            _ => frame::encode_heartbeat(&mut buf),
        }
        let mut bytes = buf.to_vec();
        if wrong {
            mutate(rng, &mut bytes, self.corpus);
            if rng.one_in(2) {
                fix_framing(&mut bytes);
            }
        }
        out.extend_from_slice(&bytes);
    }
}

/// Encoded commands valid on an open channel, without content (channel 0 in the encoding).
fn channel_commands() -> Vec<Vec<u8>> {
    client_methods()
        .into_iter()
        .filter(|m| m.class_id() > 20 && !m.has_content())
        .map(|m| {
            let mut buf = BytesMut::new();
            frame::encode_method(&mut buf, 0, &m);
            buf.to_vec()
        })
        .collect()
}

/// The driver: reads, then answers events the way a broker would, until nothing changes.
/// Returns the number of events drained.
fn pump(conn: &mut ServerConnection, now: Instant, tally: &mut Tally, closed: &mut usize) -> usize {
    let mut events = 0;
    loop {
        conn.handle_read(now);
        let mut again = false;
        while let Some(event) = conn.poll_event() {
            events += 1;
            if let Some(log) = &mut tally.log {
                log.push(event.clone());
            }
            match event {
                Event::Authenticate { .. } => {
                    conn.accept_login(now);
                    // Frames pipelined behind start-ok waited in the buffer.
                    again = true;
                }
                Event::OpenVhost { .. } => conn.accept_vhost(now),
                Event::Opened { tuning } => {
                    tally.opened += 1;
                    assert!(tuning.frame_max == 0 || tuning.frame_max >= FRAME_MIN_SIZE);
                }
                Event::Command {
                    channel,
                    method,
                    content,
                } => {
                    tally.commands += 1;
                    assert!(channel != 0);
                    assert_ne!(method.class_id(), 10);
                    match content {
                        Some(content) => {
                            assert!(method.has_content());
                            assert_eq!(content.body.len() as u64, content.header.body_size);
                            // Deliver it straight back, as a consumer on the same channel.
                            let deliver = BasicDeliver {
                                consumer_tag: "c".into(),
                                delivery_tag: 1,
                                redelivered: false,
                                exchange: "ex".into(),
                                routing_key: "k".into(),
                            };
                            conn.send_content(
                                channel,
                                &deliver.into(),
                                &content.header.properties,
                                &content.body,
                            );
                        }
                        None => assert!(!method.has_content()),
                    }
                }
                Event::ChannelClosed {
                    reason: ChannelCloseReason::ByServer(e),
                    ..
                } => {
                    assert_eq!(e.scope, warren_amqp_codec::Scope::Channel);
                    assert!(!e.code.is_hard_error(), "{e}");
                }
                Event::Closed { reason } => {
                    *closed += 1;
                    if let CloseReason::ByServer(e) = reason {
                        tally.closed_by_server += 1;
                        assert_eq!(e.scope, warren_amqp_codec::Scope::Connection);
                        // A refused login is a soft code used as a hard close, as RabbitMQ does.
                        assert!(
                            e.code.is_hard_error() || e.code == ReplyCode::AccessRefused,
                            "{e}"
                        );
                    }
                }
                Event::ChannelOpened { channel } => assert!(channel != 0),
                Event::ChannelClosed { .. } | Event::UpdateSecret { .. } => {}
            }
        }
        if !again {
            return events;
        }
    }
}

/// Checks that what the server wrote is a sequence of well-formed frames, then "writes" it.
fn drain_output(conn: &mut ServerConnection, header_only_ok: bool) -> usize {
    let out = conn.write_buffer();
    let written = out.len();
    if header_only_ok && out.starts_with(&frame::PROTOCOL_HEADER) {
        // The answer to a bad protocol header is the header itself.
        assert_eq!(out.len(), frame::PROTOCOL_HEADER.len());
    } else {
        let mut copy = out.clone();
        while !copy.is_empty() {
            match frame::decode_frame(&mut copy, 0) {
                Ok(Some(_)) => {}
                other => panic!("server wrote a malformed frame: {other:?}"),
            }
        }
    }
    out.clear();
    written
}

/// Plays one client `stream` into a fresh connection with random split points and timeouts.
fn play_session(rng: &mut Rng, config: ServerConfig, stream: &[u8], tally: &mut Tally) {
    let mut now = Instant::now();
    let mut conn = ServerConnection::new(config, now);
    let mut closed = 0;
    let (mut fed, mut consumed, mut written, mut timeouts) = (0, 0, 0, 0);
    // Split points anywhere; feeding every octet alone is costly in a debug build, so it is
    // rare here (a test below does it thoroughly).
    let max_chunk = if rng.one_in(50) {
        1
    } else {
        *rng.pick(&[7, 64, 512, usize::MAX])
    };
    let mut rest = stream;
    while !rest.is_empty() {
        let n = rng.range(1, max_chunk.min(rest.len()));
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        fed += n;
        if rng.one_in(16) {
            // Mostly short pauses; now and then, once open, one past every deadline.
            let ms = if conn.is_open() && rng.one_in(8) {
                150_000
            } else {
                200
            };
            now += Duration::from_millis(rng.below(ms) as u64);
            conn.handle_timeout(now);
            timeouts += 1;
        }
        let pending_before = conn.read_buffer().len();
        conn.read_buffer().extend_from_slice(chunk);
        let available = pending_before + n;
        let events = pump(&mut conn, now, tally, &mut closed);
        // Events are bounded by the frames the input can hold (a frame is at least 8 octets).
        assert!(
            events <= available / 8 + 4,
            "{events} events from {available} octets"
        );
        let frame_max = conn.tuning().frame_max as usize;
        if frame_max != 0 {
            assert!(
                // At most one frame short of complete: a payload of frame_max plus framing.
                conn.read_buffer().len() < frame_max + frame::FRAME_OVERHEAD,
                "{} octets pending with frame_max {frame_max}",
                conn.read_buffer().len()
            );
        }
        assert!(
            conn.read_buffer().capacity() <= 2 * fed.max(frame_max) + SLACK,
            "read buffer capacity {} after {fed} octets",
            conn.read_buffer().capacity()
        );
        consumed += available - conn.read_buffer().len();
        written += drain_output(&mut conn, true);
        // Replies are proportional to requests (deliveries echo bodies once), plus the
        // handshake's fixed frames, a close, and a heartbeat per timeout.
        assert!(
            written <= 2 * consumed + 2048 + 8 * timeouts,
            "{written} octets written for {consumed} read"
        );
        if conn.is_finished() {
            assert!(conn.read_buffer().is_empty());
        }
    }
    // Silence: heartbeats go out, then the connection gives up on the client.
    for _ in 0..rng.below(4) {
        now += Duration::from_secs(rng.range(1, 200) as u64);
        conn.handle_timeout(now);
        pump(&mut conn, now, tally, &mut closed);
        drain_output(&mut conn, true);
    }
    assert!(closed <= 1, "connection closed {closed} times");
    if conn.is_finished() {
        assert_eq!(closed, 1, "finished without a Closed event");
    }
    tally.octets += fed;
}

fn random_config(rng: &mut Rng) -> ServerConfig {
    ServerConfig {
        channel_max: *rng.pick(&[2047, 16, 3]),
        frame_max: *rng.pick(&[131_072, FRAME_MIN_SIZE, 0]),
        heartbeat: *rng.pick(&[0, 1, 60]),
        max_message_size: *rng.pick(&[128 * 1024 * 1024, 100]),
        ..ServerConfig::default()
    }
}

#[test]
fn server_connection_survives_random_and_mutated_input() {
    let mut rng = Rng::new(3);
    let corpus: Vec<Vec<u8>> = frame_corpus().into_iter().map(|(b, _)| b).collect();
    let commands = channel_commands();
    let mut tally = Tally::default();
    for i in 0..CONNECTION_SESSIONS {
        let config = random_config(&mut rng);
        let (mut stream, frame_max) = handshake(&mut rng, &config);
        match rng.below(20) {
            // No valid protocol header at all.
            0 => {
                stream.clear();
                let n = rng.below(32);
                rng.fill(&mut stream, n);
            }
            // A damaged handshake.
            1..=3 => mutate(&mut rng, &mut stream, &corpus),
            _ => {}
        }
        let mut client = Client {
            corpus: &corpus,
            commands: &commands,
            open: Vec::new(),
            frame_max,
            damage: *rng.pick(&[3, 10, 50, 1000]),
        };
        let frames = rng.range(1, 24);
        for _ in 0..frames {
            client.next_move(&mut rng, &mut stream);
        }
        if rng.one_in(40) {
            // A hostile size field on an otherwise ordinary frame.
            stream.extend([1, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0, 20, 0, 10]);
        }
        tally.frames += frames;
        case("connection", i, &stream, || {
            let seed = rng.next_u64();
            let (_, peak) = peak_during(|| {
                play_session(&mut Rng(seed), config, &stream, &mut tally);
            });
            check_peak("connection", stream.len(), peak);
        });
        tally.sessions += 1;
    }
    eprintln!(
        "connection: {} sessions, {} client moves, {} octets, {} opened, {} commands, \
         {} closed by the server, at worst {:.1} bytes live per input octet",
        tally.sessions,
        tally.frames,
        tally.octets,
        tally.opened,
        tally.commands,
        tally.closed_by_server,
        WORST_RATIO.with(Cell::get)
    );
    assert!(
        tally.opened > CONNECTION_SESSIONS / 2,
        "{} opened",
        tally.opened
    );
    assert!(
        tally.commands > CONNECTION_SESSIONS,
        "{} commands",
        tally.commands
    );
    assert!(tally.closed_by_server > CONNECTION_SESSIONS / 10);
}

// ---------------------------------------------------------------------------------------------
// Targeted cases.

#[test]
fn nesting_deeper_than_the_limit_is_a_syntax_error_not_a_stack_overflow() {
    let mut rng = Rng::new(4);
    for kinds in [&b"F"[..], b"A", b"FA"] {
        let at_limit = nested_entries(MAX_NESTING, &mut rng, kinds);
        assert!(FieldTable::decode_entries(&Bytes::from(at_limit)).is_ok());
        for depth in [MAX_NESTING + 1, 1000, 10_000, 100_000] {
            let input = Bytes::from(nested_entries(depth, &mut rng, kinds));
            let len = input.len();
            let (result, peak) = peak_during(|| FieldTable::decode_entries(&input));
            let e = result.expect_err("too deep");
            assert_eq!(e, CodecError::NestingTooDeep(MAX_NESTING));
            assert_eq!(e.reply_code(), ReplyCode::SyntaxError);
            assert_eq!(e.reply_code().code(), 502);
            check_peak("deep table", len, peak);
        }
    }
    // Through a whole frame, and through a connection's handshake (client-properties).
    let deep = nested_entries(10_000, &mut rng, b"F");
    let mut buf = BytesMut::from(&declare_with_arguments(&deep)[..]);
    let e = frame::decode_frame(&mut buf, 0).expect_err("too deep");
    // In method arguments it is RabbitMQ's "cannot decode": 501 FRAME_ERROR.
    assert!(
        matches!(
            e,
            CodecError::MethodArgs {
                class_id: 50,
                method_id: 10,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.reply_code(), ReplyCode::FrameError);

    let mut stream = frame::PROTOCOL_HEADER.to_vec();
    stream.extend(start_ok_with_client_properties(&deep));
    let now = Instant::now();
    let config = ServerConfig {
        frame_max: 0,
        ..ServerConfig::default()
    };
    let mut conn = ServerConnection::new(config, now);
    conn.read_buffer().extend_from_slice(&stream);
    conn.handle_read(now);
    match conn.poll_event() {
        Some(Event::Closed {
            reason: CloseReason::ByServer(e),
        }) => assert_eq!(e.code, ReplyCode::FrameError, "{e}"), // larger than 4096 pre-tune
        other => panic!("{other:?}"),
    }
    // Within the pre-tune frame limit the nesting itself is what is refused.
    let deep = nested_entries(600, &mut rng, b"F");
    let start_ok = start_ok_with_client_properties(&deep);
    let mut conn = ServerConnection::new(ServerConfig::default(), now);
    conn.read_buffer()
        .extend_from_slice(&frame::PROTOCOL_HEADER);
    conn.read_buffer().extend_from_slice(&start_ok);
    conn.handle_read(now);
    match conn.poll_event() {
        Some(Event::Closed {
            reason: CloseReason::ByServer(e),
        }) => assert_eq!(
            (e.code, e.class_id, e.method_id),
            (ReplyCode::FrameError, 10, 11),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
}

/// A `connection.start-ok` frame whose client-properties table holds `entries` (raw octets).
fn start_ok_with_client_properties(entries: &[u8]) -> Vec<u8> {
    let mut start_ok = BytesMut::new();
    frame::encode_method(&mut start_ok, 0, &ConnectionStartOk::default().into());
    let mut start_ok = start_ok.to_vec();
    // client-properties is the first argument: replace its empty table.
    start_ok.splice(11..15, (entries.len() as u32).to_be_bytes());
    start_ok.splice(15..15, entries.iter().copied());
    fix_framing(&mut start_ok);
    start_ok
}

#[test]
fn frames_fed_one_octet_at_a_time_decode_as_when_fed_whole() {
    let corpus = frame_corpus();
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for (bytes, f) in &corpus {
        stream.extend_from_slice(bytes);
        expected.push(f.clone());
    }
    // Whole.
    assert_eq!(decode_all(&stream, 0), expected);
    // One octet at a time: nothing is decoded early, nothing is lost.
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for &b in &stream {
        buf.put_u8(b);
        while let Some(f) = frame::decode_frame(&mut buf, 131_072).expect("valid stream") {
            got.push(f);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(got, expected);
    // The protocol header, one octet at a time.
    for n in 0..frame::PROTOCOL_HEADER.len() {
        assert_eq!(
            frame::check_protocol_header(&frame::PROTOCOL_HEADER[..n]),
            ProtocolHeader::Incomplete
        );
    }
    assert_eq!(
        frame::check_protocol_header(&frame::PROTOCOL_HEADER),
        ProtocolHeader::Amqp091
    );
    assert_eq!(
        frame::check_protocol_header(b"AMQP\x00\x00\x09\x02"),
        ProtocolHeader::Unsupported
    );
}

#[test]
fn a_connection_fed_one_octet_at_a_time_behaves_as_when_fed_whole() {
    let mut rng = Rng::new(5);
    let config = ServerConfig::default();
    let (mut stream, _) = handshake(&mut rng, &config);
    for ch in [1u16, 2] {
        let mut buf = BytesMut::new();
        frame::encode_method(&mut buf, ch, &ChannelOpen::default().into());
        frame::encode_content(
            &mut buf,
            ch,
            &publish(),
            &full_properties(),
            &[7; 10_000],
            4096,
        );
        stream.extend_from_slice(&buf);
    }
    let run = |chunk: usize| {
        let now = Instant::now();
        let mut conn = ServerConnection::new(config.clone(), now);
        let mut tally = Tally {
            log: Some(Vec::new()),
            ..Tally::default()
        };
        let mut closed = 0;
        for part in stream.chunks(chunk) {
            conn.read_buffer().extend_from_slice(part);
            pump(&mut conn, now, &mut tally, &mut closed);
        }
        // Replies on one channel keep their order; across channels they may interleave
        // differently, since whole input is handled in one batch.
        let mut out = BytesMut::from(&conn.write_buffer()[..]);
        let mut per_channel: BTreeMap<u16, Vec<Frame>> = BTreeMap::new();
        while let Some(f) = frame::decode_frame(&mut out, 0).expect("server output") {
            per_channel.entry(f.channel()).or_default().push(f);
        }
        assert!(out.is_empty());
        (tally.log.unwrap_or_default(), closed, per_channel)
    };
    let (events, closed, replies) = run(stream.len());
    // Authenticate, OpenVhost, Opened, and per channel ChannelOpened and a publish.
    assert_eq!(events.len(), 7, "{events:?}");
    assert_eq!(closed, 0);
    assert_eq!(replies.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
    for chunk in [1, 13, 4096] {
        let split = run(chunk);
        assert!(split.0 == events, "chunks of {chunk}: other events");
        assert_eq!(split.1, closed);
        assert!(split.2 == replies, "chunks of {chunk}: other replies");
    }
}

#[test]
fn a_four_gib_size_field_reserves_nothing() {
    for frame_max in [0, u32::MAX] {
        // The largest size that `frame_max` allows.
        let size = frame_max
            .saturating_sub(8)
            .max(0xFFFF_FFFF * u32::from(frame_max == 0));
        let mut buf = BytesMut::from(&[1u8, 0, 1][..]);
        buf.put_u32(size);
        buf.put_slice(&[0, 10, 0, 11]);
        let (r, peak) = peak_during(|| frame::decode_frame(&mut buf, frame_max));
        assert_eq!(r, Ok(None), "size {size:#x}, frame_max {frame_max}");
        assert!(peak < 1024, "{peak}");
    }
    let mut buf = BytesMut::from(&[1u8, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF][..]);
    let e = frame::decode_frame(&mut buf, 131_072).expect_err("too large");
    assert_eq!(e.reply_code(), ReplyCode::FrameError);
    // A longstr, a table and a byte array claiming 4 GiB inside a small frame.
    for entries in [
        &[0u8, b'S', 0xFF, 0xFF, 0xFF, 0xFF, b'a'][..],
        &[0, b'F', 0xFF, 0xFF, 0xFF, 0xFF],
        &[0, b'x', 0xFF, 0xFF, 0xFF, 0xFF, 0, 0],
        &[0, b'A', 0xFF, 0xFF, 0xFF, 0xFF, b'V'],
    ] {
        let (r, peak) = peak_during(|| FieldTable::decode_entries(&Bytes::from_static(entries)));
        assert_eq!(
            r.expect_err("truncated").reply_code(),
            ReplyCode::SyntaxError
        );
        assert!(peak < 1024, "{peak}");
    }
    // A connection that allows any frame size still only buffers what it was given.
    let now = Instant::now();
    let config = ServerConfig {
        frame_max: 0,
        ..ServerConfig::default()
    };
    let mut rng = Rng::new(6);
    let (mut stream, _) = handshake(&mut rng, &config);
    stream.extend([3, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]);
    let (_, peak) = peak_during(|| {
        let mut conn = ServerConnection::new(config, now);
        conn.read_buffer().extend_from_slice(&stream);
        let mut tally = Tally::default();
        let mut closed = 0;
        pump(&mut conn, now, &mut tally, &mut closed);
        assert!(conn.read_buffer().capacity() < 64 * 1024);
    });
    check_peak("connection", stream.len(), peak);
}

// ---------------------------------------------------------------------------------------------
// Regressions: inputs that once broke something, found by the storms above or by `fuzz/`.

/// A connection through the whole handshake, its output drained.
fn open_connection(now: Instant) -> ServerConnection {
    let config = ServerConfig::default();
    let (stream, _) = handshake(&mut Rng::new(7), &config);
    let mut conn = ServerConnection::new(config, now);
    conn.read_buffer().extend_from_slice(&stream);
    pump(&mut conn, now, &mut Tally::default(), &mut 0);
    assert!(conn.is_open());
    conn.write_buffer().clear();
    conn
}

/// Found by the connection storm: after a framing error the connection kept the bad frame and
/// everything the client sent after it in its read buffer, until the close handshake timed
/// out; a client could fill memory for three seconds at line rate.
#[test]
fn regression_input_after_a_framing_error_is_not_buffered() {
    let now = Instant::now();
    let mut conn = open_connection(now);
    // channel.open with a bad frame-end octet.
    conn.read_buffer()
        .extend_from_slice(&[1, 0, 1, 0, 0, 0, 5, 0, 20, 0, 10, 0, 0xAB]);
    let mut closed = 0;
    pump(&mut conn, now, &mut Tally::default(), &mut closed);
    assert_eq!(closed, 1);
    assert!(!conn.is_finished(), "waits for close-ok");
    for i in 0..256u32 {
        conn.read_buffer().extend_from_slice(&[0x5A; 1024]);
        conn.handle_read(now);
        assert!(
            conn.read_buffer().len() <= 1024,
            "{} octets buffered after {} KiB of junk",
            conn.read_buffer().len(),
            i + 1
        );
    }
}

/// Found by the connection storm: `channel.open` on channel 2047 (13 octets) made the channel
/// table hold 2048 channel states inline, over 1 MiB for one connection.
#[test]
fn regression_opening_the_highest_channel_costs_little() {
    let now = Instant::now();
    let mut conn = open_connection(now);
    let mut open = BytesMut::new();
    frame::encode_method(&mut open, 2047, &ChannelOpen::default().into());
    let (_, peak) = peak_during(|| {
        conn.read_buffer().extend_from_slice(&open);
        pump(&mut conn, now, &mut Tally::default(), &mut 0);
    });
    assert!(conn.is_channel_open(2047));
    assert!(peak <= 32 * 1024, "{peak} bytes to open channel 2047");
}

/// Inputs the fuzz targets (`fuzz/`) found, replayed through every decoder and a connection.
/// None so far: add each `fuzz/artifacts/*/crash-*` here as a byte string.
#[test]
fn fuzz_regressions() {
    let found: &[&[u8]] = &[];
    // Always replayed too: the smallest inputs.
    let trivial: &[&[u8]] = &[b"", b"\x01", b"\xce", b"AMQP"];
    for input in found.iter().chain(trivial) {
        for frame_max in [0, 4096, 131_072] {
            decode_all(input, frame_max);
        }
        check_entries(input);
        let now = Instant::now();
        let mut conn = open_connection(now);
        conn.read_buffer().extend_from_slice(input);
        pump(&mut conn, now, &mut Tally::default(), &mut 0);
        drain_output(&mut conn, false);
    }
    assert!(decode_all(b"", 0).is_empty());
    assert!(check_entries(b"").is_some_and(|t| t.is_empty()));
}
