//! Property tests of the codec (STYLE.md, practice 7):
//!
//! 1. every method round-trips through a method frame with every field random (one strategy per
//!    method, generated from the spec into `gen_strategies.rs` by `cargo xtask codegen`);
//! 2. every field value round-trips, in nested tables and arrays, and so does every combination
//!    of present basic properties in a content header;
//! 3. a stream of frames decodes the same whether it arrives whole, in random pieces or octet by
//!    octet; incomplete input gives `Ok(None)` and is left untouched; `frame_max` is enforced as
//!    soon as a frame header is complete; bodies are split to respect `frame_max`;
//! 4. a naive reference decoder (module [`naive`], written from the specification and RabbitMQ's
//!    parser, sharing no code with the crate) agrees with [`frame::decode_frame`] on random frames
//!    and on randomly mutated ones: same accept / reject / incomplete, same reply code class, same
//!    decoded structure.
//!
//! Floats are generated from random bit patterns, NaNs included, so values are compared with
//! floats by their bits ([`same_value`]) and frames by their encoding plus their `Debug` text
//! ([`check_same_frame`]), never with `==`.

use crate::gen_strategies::{any_method, method_strategies, queue_declare};
use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::{Union, ValueTree};
use proptest::test_runner::TestRunner;
use std::collections::BTreeSet;
use warren_amqp_codec::{
    BasicProperties, CodecError, ContentHeader, Decimal, FieldArray, FieldTable, FieldValue, Frame,
    LongStr, Method, QueueDeclare, ShortStr, frame,
};

// ---------------------------------------------------------------------------------------------
// Strategies for strings and tables (the generated method strategies use these too)
// ---------------------------------------------------------------------------------------------

/// A short string of up to 255 random octets: often short, sometimes any length, sometimes
/// exactly the maximum.
pub(crate) fn shortstr() -> impl Strategy<Value = ShortStr> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..12),
        2 => vec(any::<u8>(), 0..=ShortStr::MAX_LEN),
        1 => vec(any::<u8>(), ShortStr::MAX_LEN),
    ]
    .prop_map(|octets| ShortStr::from_bytes(octets).expect("at most 255 octets"))
}

/// A short string of random UTF-8 text (the arguments of methods without content must be
/// UTF-8): often ASCII, sometimes any characters, up to the 255-octet limit.
pub(crate) fn shortstr_utf8() -> impl Strategy<Value = ShortStr> {
    prop_oneof![
        3 => vec(any::<u8>().prop_map(|b| char::from(b & 0x7f)), 0..12),
        2 => vec(any::<char>(), 0..100),
    ]
    .prop_map(|chars| {
        let mut s = String::new();
        for c in chars {
            if s.len() + c.len_utf8() > ShortStr::MAX_LEN {
                break;
            }
            s.push(c);
        }
        ShortStr::from(s)
    })
}

/// A long string of random octets.
pub(crate) fn longstr() -> impl Strategy<Value = LongStr> {
    prop_oneof![3 => vec(any::<u8>(), 0..16), 1 => vec(any::<u8>(), 0..600)].prop_map(LongStr::from)
}

/// Any value that is not a table or an array. Floats come from random bit patterns, so every
/// NaN, infinity, subnormal and negative zero can appear.
fn scalar_value() -> impl Strategy<Value = FieldValue> {
    Union::new(vec![
        any::<bool>().prop_map(FieldValue::Bool).boxed(),
        any::<i8>().prop_map(FieldValue::I8).boxed(),
        any::<u8>().prop_map(FieldValue::U8).boxed(),
        any::<i16>().prop_map(FieldValue::I16).boxed(),
        any::<u16>().prop_map(FieldValue::U16).boxed(),
        any::<i32>().prop_map(FieldValue::I32).boxed(),
        any::<u32>().prop_map(FieldValue::U32).boxed(),
        any::<i64>().prop_map(FieldValue::I64).boxed(),
        any::<u32>()
            .prop_map(|bits| FieldValue::F32(f32::from_bits(bits)))
            .boxed(),
        any::<u64>()
            .prop_map(|bits| FieldValue::F64(f64::from_bits(bits)))
            .boxed(),
        (any::<u8>(), any::<u32>())
            .prop_map(|(scale, value)| FieldValue::Decimal(Decimal { scale, value }))
            .boxed(),
        longstr().prop_map(FieldValue::LongStr).boxed(),
        vec(any::<u8>(), 0..40)
            .prop_map(|octets| FieldValue::Bytes(octets.into()))
            .boxed(),
        any::<u64>().prop_map(FieldValue::Timestamp).boxed(),
        Just(FieldValue::Void).boxed(),
    ])
}

/// Any field value: tables and arrays nest up to 4 levels deep.
pub(crate) fn field_value() -> impl Strategy<Value = FieldValue> {
    scalar_value().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(|values| FieldValue::Array(FieldArray(values))),
            vec((shortstr(), inner), 0..6).prop_map(|entries| FieldValue::Table(table_of(entries))),
        ]
    })
}

/// A field table of random entries (duplicate keys included: they are legal on the wire).
pub(crate) fn field_table() -> impl Strategy<Value = FieldTable> {
    vec((shortstr(), field_value()), 0..6).prop_map(table_of)
}

fn table_of(entries: Vec<(ShortStr, FieldValue)>) -> FieldTable {
    let mut table = FieldTable::new();
    for (key, value) in entries {
        table.push(key, value);
    }
    table
}

/// Basic properties, each of the 14 present or not (every combination equally likely).
fn basic_properties() -> impl Strategy<Value = BasicProperties> {
    use proptest::option::of;
    (
        (
            of(shortstr()),
            of(shortstr()),
            of(field_table()),
            of(any::<u8>()),
            of(any::<u8>()),
            of(shortstr()),
            of(shortstr()),
        ),
        (
            of(shortstr()),
            of(shortstr()),
            of(any::<u64>()),
            of(shortstr()),
            of(shortstr()),
            of(shortstr()),
            of(shortstr()),
        ),
    )
        .prop_map(
            |((a, b, c, d, e, f, g), (h, i, j, k, l, m, n))| BasicProperties {
                content_type: a,
                content_encoding: b,
                headers: c,
                delivery_mode: d,
                priority: e,
                correlation_id: f,
                reply_to: g,
                expiration: h,
                message_id: i,
                timestamp: j,
                kind: k,
                user_id: l,
                app_id: m,
                cluster_id: n,
            },
        )
}

/// A `basic` content header with random body size and properties.
fn content_header() -> impl Strategy<Value = ContentHeader> {
    (any::<u64>(), basic_properties())
        .prop_map(|(body_size, properties)| ContentHeader::basic(body_size, properties))
}

/// Any frame: a method, a content header, a body or a heartbeat.
fn any_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        3 => (any::<u16>(), any_method()).prop_map(|(channel, method)| Frame::Method { channel, method }),
        2 => (any::<u16>(), content_header()).prop_map(|(channel, header)| Frame::Header { channel, header }),
        2 => (any::<u16>(), vec(any::<u8>(), 0..200))
            .prop_map(|(channel, payload)| Frame::Body { channel, payload: payload.into() }),
        1 => Just(Frame::Heartbeat),
    ]
}

// ---------------------------------------------------------------------------------------------
// Comparisons
// ---------------------------------------------------------------------------------------------

/// Field values equal, floats compared by their bits (so a NaN equals itself, 0.0 is not -0.0).
fn same_value(a: &FieldValue, b: &FieldValue) -> bool {
    match (a, b) {
        (FieldValue::F32(x), FieldValue::F32(y)) => x.to_bits() == y.to_bits(),
        (FieldValue::F64(x), FieldValue::F64(y)) => x.to_bits() == y.to_bits(),
        (FieldValue::Array(x), FieldValue::Array(y)) => {
            x.0.len() == y.0.len() && x.0.iter().zip(&y.0).all(|(x, y)| same_value(x, y))
        }
        (FieldValue::Table(x), FieldValue::Table(y)) => same_table(x, y),
        _ => a == b,
    }
}

/// Tables equal entry by entry, in order, floats compared by their bits.
fn same_table(a: &FieldTable, b: &FieldTable) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
}

fn encoded(frame: &Frame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    buf.to_vec()
}

/// Two frames are the same: same encoding (every field, floats by bits) and same `Debug` text
/// (which would notice a field that the encoder and the decoder both forgot).
fn check_same_frame(got: &Frame, want: &Frame) -> Result<(), TestCaseError> {
    prop_assert_eq!(hex(&encoded(got)), hex(&encoded(want)));
    prop_assert_eq!(format!("{got:?}"), format!("{want:?}"));
    Ok(())
}

fn check_same_frames(got: &[Frame], want: &[Frame]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (got, want) in got.iter().zip(want) {
        check_same_frame(got, want)?;
    }
    Ok(())
}

fn hex(octets: &[u8]) -> String {
    octets.iter().map(|b| format!("{b:02x}")).collect()
}

fn codec_failure(what: &str, e: CodecError) -> TestCaseError {
    TestCaseError::fail(format!("{what}: {e:?}"))
}

/// Decodes exactly one frame that fills `buf`.
fn decode_one(buf: &mut BytesMut, frame_max: u32) -> Result<Frame, TestCaseError> {
    let len = buf.len();
    match frame::decode_frame(buf, frame_max) {
        Ok(Some(frame)) => {
            prop_assert!(buf.is_empty(), "{} of {len} octets left over", buf.len());
            Ok(frame)
        }
        Ok(None) => Err(TestCaseError::fail("a whole frame decoded as incomplete")),
        Err(e) => Err(codec_failure("a valid frame was rejected", e)),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Every method round-trips
// ---------------------------------------------------------------------------------------------

/// Encodes `method` on `channel`, decodes it back and compares; also checks that `frame_max`
/// equal to the frame's size is accepted and one octet less refused.
fn check_method_round_trip(channel: u16, method: &Method) -> Result<(), TestCaseError> {
    let original = Frame::Method {
        channel,
        method: method.clone(),
    };
    let mut buf = BytesMut::new();
    frame::encode_method(&mut buf, channel, method);
    let octets = buf.clone().freeze();
    prop_assert_eq!(hex(&octets), hex(&encoded(&original)));
    let size = u32::try_from(octets.len()).expect("small frame");

    // `frame_max` limits the payload: the 8 octets of framing come on top, as in RabbitMQ.
    let payload = size - 8;
    let decoded = decode_one(&mut buf, payload)?;
    check_same_frame(&decoded, &original)?;

    let mut buf = BytesMut::from(&octets[..]);
    let refused = frame::decode_frame(&mut buf, payload - 1);
    prop_assert!(
        matches!(refused, Err(CodecError::FrameTooLarge { kind: 1, size: s, frame_max }) if s == payload && frame_max == payload - 1),
        "frame_max one below the payload size: {:?}",
        refused
    );
    Ok(())
}

/// Every method, one after the other, with random values of every field.
#[test]
fn every_method_round_trips() {
    for (name, strategy) in method_strategies() {
        let mut runner = TestRunner::new(warren_testkit::proptest_config(24));
        let result = runner.run(&(any::<u16>(), strategy), |(channel, method)| {
            prop_assert_eq!(method.name(), name);
            check_method_round_trip(channel, &method)
        });
        if let Err(e) = result {
            panic!("{name}: {e}");
        }
    }
}

/// The generated strategies cover exactly the methods of the naive decoder's signature table
/// (written by hand from the spec), with the same ids.
#[test]
fn generated_strategies_cover_every_method() {
    let mut runner = TestRunner::deterministic();
    let mut generated = BTreeSet::new();
    for (name, strategy) in method_strategies() {
        let method = strategy.new_tree(&mut runner).expect("a value").current();
        assert_eq!(method.name(), name);
        assert!(
            generated.insert((method.class_id(), method.method_id(), name)),
            "{name} twice"
        );
    }
    let spec: BTreeSet<(u16, u16, &str)> = naive::METHODS
        .iter()
        .map(|&(class_id, method_id, name, _)| (class_id, method_id, name))
        .collect();
    assert_eq!(generated, spec);
}

proptest! {
    #![proptest_config(warren_testkit::proptest_config(256))]

    /// `any_method()` round-trips on its own too (the strategy the other tests build on).
    #[test]
    fn any_method_round_trips(channel in any::<u16>(), method in any_method()) {
        check_method_round_trip(channel, &method)?;
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Every field value and every property combination round-trips
// ---------------------------------------------------------------------------------------------

/// Type codes in a value, recursively.
fn collect_type_codes(value: &FieldValue, codes: &mut BTreeSet<u8>) {
    codes.insert(value.type_code());
    match value {
        FieldValue::Array(array) => array.0.iter().for_each(|v| collect_type_codes(v, codes)),
        FieldValue::Table(table) => table.iter().for_each(|(_, v)| collect_type_codes(v, codes)),
        _ => {}
    }
}

/// The value strategy produces every variant (RabbitMQ's errata list), at every depth.
#[test]
fn field_value_strategy_covers_every_type_code() {
    let mut runner = TestRunner::deterministic();
    let strategy = field_value();
    let mut codes = BTreeSet::new();
    let mut deepest = 0;
    for _ in 0..500 {
        let value = strategy.new_tree(&mut runner).expect("a value").current();
        collect_type_codes(&value, &mut codes);
        deepest = deepest.max(depth(&value));
    }
    let errata: BTreeSet<u8> = b"tbBsuIilfdDSxATFV".iter().copied().collect();
    assert_eq!(codes, errata);
    assert!(deepest >= 3, "nesting depth reached: {deepest}");
}

fn depth(value: &FieldValue) -> usize {
    match value {
        FieldValue::Array(a) => 1 + a.0.iter().map(depth).max().unwrap_or(0),
        FieldValue::Table(t) => 1 + t.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

proptest! {
    #![proptest_config(warren_testkit::proptest_config(256))]

    /// A table's entries round-trip, `encoded_len` is exact, and the naive parser reads the
    /// same tree from the octets as the table holds.
    #[test]
    fn field_tables_round_trip(table in field_table()) {
        let mut buf = BytesMut::new();
        table.encode_entries(&mut buf);
        prop_assert_eq!(buf.len(), table.encoded_len());
        let octets = buf.freeze();
        let decoded = FieldTable::decode_entries(&octets)
            .map_err(|e| codec_failure("table rejected", e))?;
        prop_assert!(same_table(&decoded, &table), "{:?} != {:?}", decoded, table);
        let mut again = BytesMut::new();
        decoded.encode_entries(&mut again);
        prop_assert_eq!(hex(&again), hex(&octets));
        prop_assert_eq!(naive::table_entries(&octets), Ok(naive::table_from_crate(&table)));
    }

    /// One value of any kind, alone in a table, twice in an array, inside a method argument
    /// and inside message headers: decoded back the same everywhere.
    #[test]
    fn every_field_value_round_trips(key in shortstr(), value in field_value()) {
        let array = FieldValue::Array(FieldArray(vec![value.clone(), FieldValue::Void, value.clone()]));
        let table = table_of(vec![(key.clone(), value), (key, array)]);

        let declare = Method::QueueDeclare(QueueDeclare { arguments: table.clone(), ..QueueDeclare::default() });
        let frame = Frame::Method { channel: 1, method: declare };
        let decoded = decode_one(&mut BytesMut::from(&encoded(&frame)[..]), 0)?;
        match &decoded {
            Frame::Method { method: Method::QueueDeclare(m), .. } => {
                prop_assert!(same_table(&m.arguments, &table), "{:?} != {:?}", m.arguments, table);
            }
            other => return Err(TestCaseError::fail(format!("decoded as {other:?}"))),
        }
        check_same_frame(&decoded, &frame)?;

        let properties = BasicProperties { headers: Some(table.clone()), ..BasicProperties::default() };
        let frame = Frame::Header { channel: 1, header: ContentHeader::basic(0, properties) };
        let decoded = decode_one(&mut BytesMut::from(&encoded(&frame)[..]), 0)?;
        match &decoded {
            Frame::Header { header, .. } => {
                let headers = header.properties.headers.as_ref();
                prop_assert!(headers.is_some_and(|h| same_table(h, &table)), "{:?}", headers);
            }
            other => return Err(TestCaseError::fail(format!("decoded as {other:?}"))),
        }
        check_same_frame(&decoded, &frame)?;
    }

    /// Content headers with random properties (each present or absent) round-trip, and their
    /// property flags say exactly which are present, in the order of the spec.
    #[test]
    fn content_headers_round_trip(channel in any::<u16>(), header in content_header()) {
        let frame = Frame::Header { channel, header: header.clone() };
        let octets = encoded(&frame);
        let flags = u16::from_be_bytes([octets[19], octets[20]]);
        prop_assert_eq!(flags, naive::properties_from_crate(&header.properties).0);
        prop_assert_eq!(flags, header.properties.flags());
        let decoded = decode_one(&mut BytesMut::from(&octets[..]), 0)?;
        check_same_frame(&decoded, &frame)?;
    }
}

/// Keeps the properties whose bit is set in `mask` (bit 0: content-type, ..., bit 13:
/// cluster-id), removes the others.
fn only_properties(all: &BasicProperties, mask: u16) -> BasicProperties {
    let keep = |i: u32| mask & (1 << i) != 0;
    let mut p = all.clone();
    if !keep(0) {
        p.content_type = None;
    }
    if !keep(1) {
        p.content_encoding = None;
    }
    if !keep(2) {
        p.headers = None;
    }
    if !keep(3) {
        p.delivery_mode = None;
    }
    if !keep(4) {
        p.priority = None;
    }
    if !keep(5) {
        p.correlation_id = None;
    }
    if !keep(6) {
        p.reply_to = None;
    }
    if !keep(7) {
        p.expiration = None;
    }
    if !keep(8) {
        p.message_id = None;
    }
    if !keep(9) {
        p.timestamp = None;
    }
    if !keep(10) {
        p.kind = None;
    }
    if !keep(11) {
        p.user_id = None;
    }
    if !keep(12) {
        p.app_id = None;
    }
    if !keep(13) {
        p.cluster_id = None;
    }
    p
}

/// All 2^14 combinations of present properties, each with distinct values, round-trip through
/// a content header frame, and the flags name exactly the present ones (property `i` of the
/// spec's list is flag bit `15 - i`).
#[test]
fn every_combination_of_properties_round_trips() {
    let headers: FieldTable = [("x-match", FieldValue::from("all")), ("n", 7.into())]
        .into_iter()
        .collect();
    let all = BasicProperties {
        content_type: Some("application/json".into()),
        content_encoding: Some("gzip".into()),
        headers: Some(headers),
        delivery_mode: Some(2),
        priority: Some(9),
        correlation_id: Some("corr".into()),
        reply_to: Some("amq.rabbitmq.reply-to".into()),
        expiration: Some("60000".into()),
        message_id: Some("m-1".into()),
        timestamp: Some(1_700_000_000),
        kind: Some("kind".into()),
        user_id: Some("guest".into()),
        app_id: Some("warren".into()),
        cluster_id: Some("c".into()),
    };
    for mask in 0..(1u16 << 14) {
        let properties = only_properties(&all, mask);
        let want_flags = (0..14)
            .filter(|i| mask & (1 << i) != 0)
            .fold(0u16, |flags, i| flags | 1 << (15 - i));
        assert_eq!(properties.flags(), want_flags, "mask {mask:#06x}");
        let header = ContentHeader::basic(u64::from(mask), properties);
        let mut buf = BytesMut::new();
        frame::encode_header(&mut buf, 3, &header);
        assert_eq!(
            buf.get(19..21),
            Some(&want_flags.to_be_bytes()[..]),
            "mask {mask:#06x}"
        );
        match frame::decode_frame(&mut buf, 0) {
            Ok(Some(Frame::Header {
                channel: 3,
                header: decoded,
            })) => {
                assert_eq!(decoded, header, "mask {mask:#06x}");
            }
            other => panic!("mask {mask:#06x}: {other:?}"),
        }
        assert!(buf.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Split points
// ---------------------------------------------------------------------------------------------

/// What feeding a stream in pieces gave: the frames decoded, and the error that stopped it with
/// how many octets had been fed by then.
struct Fed {
    frames: Vec<Frame>,
    error: Option<(CodecError, usize)>,
}

/// Feeds `stream` to `decode_frame` in the pieces between consecutive `cuts` (sorted, from 0 to
/// the length), decoding every complete frame after each piece. Checks on the way that
/// `Ok(None)` leaves the buffer exactly as it was: the octets not yet consumed.
fn feed(stream: &[u8], cuts: &[usize], frame_max: u32) -> Result<Fed, TestCaseError> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut consumed = 0;
    for piece in cuts.windows(2) {
        let (from, to) = (piece[0], piece[1]);
        buf.extend_from_slice(&stream[from..to]);
        loop {
            match frame::decode_frame(&mut buf, frame_max) {
                Ok(Some(frame)) => {
                    consumed = to - buf.len();
                    frames.push(frame);
                }
                Ok(None) => {
                    prop_assert_eq!(&buf[..], &stream[consumed..to], "Ok(None) consumed input");
                    break;
                }
                Err(e) => {
                    return Ok(Fed {
                        frames,
                        error: Some((e, to)),
                    });
                }
            }
        }
    }
    prop_assert!(buf.is_empty(), "{} octets left over", buf.len());
    Ok(Fed {
        frames,
        error: None,
    })
}

/// Sorted, deduplicated cut positions in `0..=len`, always including both ends.
fn cut_points(len: usize, cuts: &[Index]) -> Vec<usize> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
    points.extend([0, len]);
    points.sort_unstable();
    points.dedup();
    points
}

fn encode_all(frames: &[Frame]) -> Bytes {
    let mut buf = BytesMut::new();
    for frame in frames {
        frame.encode(&mut buf);
    }
    buf.freeze()
}

proptest! {
    #![proptest_config(warren_testkit::proptest_config(256))]

    /// Decoding a stream whole, or cut at random points, gives the frames that were encoded.
    #[test]
    fn split_points_do_not_matter(
        frames in vec(any_frame(), 1..8),
        cuts in vec(any::<Index>(), 0..24),
    ) {
        let stream = encode_all(&frames);
        let whole = feed(&stream, &[0, stream.len()], 0)?;
        prop_assert!(whole.error.is_none(), "{:?}", whole.error);
        check_same_frames(&whole.frames, &frames)?;

        let pieces = feed(&stream, &cut_points(stream.len(), &cuts), 0)?;
        prop_assert!(pieces.error.is_none(), "{:?}", pieces.error);
        check_same_frames(&pieces.frames, &whole.frames)?;
    }

    /// The same, one octet at a time.
    #[test]
    fn octet_by_octet(frames in vec(any_frame(), 1..4)) {
        let stream = encode_all(&frames);
        let every: Vec<usize> = (0..=stream.len()).collect();
        let fed = feed(&stream, &every, 0)?;
        prop_assert!(fed.error.is_none(), "{:?}", fed.error);
        check_same_frames(&fed.frames, &frames)?;
    }

    /// With `frame_max` one below the largest frame, the frames before the first frame that is
    /// too large decode, and that frame is refused as soon as its 7 header octets are in, before
    /// its payload arrives.
    #[test]
    fn frame_max_is_enforced_before_the_payload(
        frames in vec(any_frame(), 1..6),
        cuts in vec(any::<Index>(), 0..24),
    ) {
        let sizes: Vec<usize> = frames.iter().map(|f| encoded(f).len()).collect();
        let largest = sizes.iter().copied().max().unwrap_or(0);
        // A payload one octet larger than `frame_max` is refused (0 would mean no limit).
        prop_assume!(largest > 9);
        let frame_max = u32::try_from(largest - 9).expect("small frames");
        let first_big = sizes.iter().position(|&s| s == largest).unwrap_or(0);
        let big_starts_at: usize = sizes[..first_big].iter().sum();

        let stream = encode_all(&frames);
        let cuts = cut_points(stream.len(), &cuts);
        let fed = feed(&stream, &cuts, frame_max)?;
        check_same_frames(&fed.frames, &frames[..first_big])?;
        let header_complete = cuts.iter().copied().find(|&c| c >= big_starts_at + 7);
        match fed.error {
            Some((CodecError::FrameTooLarge { size, frame_max: max, .. }, at)) => {
                prop_assert_eq!(size as usize, largest - 8);
                prop_assert_eq!(max, frame_max);
                prop_assert_eq!(Some(at), header_complete);
            }
            other => return Err(TestCaseError::fail(format!("expected FrameTooLarge, got {other:?}"))),
        }
    }

    /// `encode_content` splits a body into frames that respect `frame_max`, and the frames
    /// decode under that `frame_max` to the method, a header with the body's size, and the
    /// body in order (no body frame for an empty body).
    #[test]
    fn content_is_split_to_respect_frame_max(
        channel in any::<u16>(),
        properties in basic_properties(),
        body in prop_oneof![Just(Vec::new()), vec(any::<u8>(), 1..3000)],
        extra in 1u32..600,
    ) {
        let method = Method::BasicPublish(Default::default());
        let header = ContentHeader::basic(body.len() as u64, properties.clone());
        let fixed = [
            encoded(&Frame::Method { channel, method: method.clone() }).len(),
            encoded(&Frame::Header { channel, header: header.clone() }).len(),
        ];
        let frame_max = u32::try_from(fixed[0].max(fixed[1])).expect("small") + extra;
        let mut buf = BytesMut::new();
        frame::encode_content(&mut buf, channel, &method, &properties, &body, frame_max);
        let stream = buf.freeze();
        let fed = feed(&stream, &[0, stream.len()], frame_max)?;
        prop_assert!(fed.error.is_none(), "{:?}", fed.error);
        let chunk = frame_max as usize - 8;
        let mut want = vec![Frame::Method { channel, method }, Frame::Header { channel, header }];
        want.extend(body.chunks(chunk).map(|part| Frame::Body { channel, payload: Bytes::copy_from_slice(part) }));
        check_same_frames(&fed.frames, &want)?;
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Agreement with a naive reference decoder
// ---------------------------------------------------------------------------------------------

/// What to do to a frame's octets.
#[derive(Debug, Clone)]
enum Mutation {
    /// Change an octet the naive decoder marked as worth mutating: a type code becomes another
    /// of the same size (half the time) or any of [`TYPE_CODES`]; other marked octets get some
    /// bits flipped (often only the two low ones, which matters for property flags).
    Targeted(Index, Index, u8),
    /// Flip some bits of one octet.
    Xor(Index, u8),
    /// Set one octet to a field type code, known or not (and a few near misses).
    TypeCode(Index, u8),
    /// Set one octet to a small number (lengths, bits, flags, ids).
    Small(Index, u8),
    /// Cut everything from a position on.
    Truncate(Index),
    /// Insert octets at a position.
    Insert(Index, Vec<u8>),
    /// Remove up to 8 octets from a position.
    Remove(Index, usize),
    /// Append octets.
    Extend(Vec<u8>),
}

/// Field type codes RabbitMQ knows, 'L' (which RabbitMQ's parser also takes, but the errata do
/// not list), and codes of other AMQP dialects that must be refused.
const TYPE_CODES: &[u8] = b"tbBsuIilfdDSxATFVLUcCOo\x00";

fn targeted_mutation() -> impl Strategy<Value = Mutation> {
    (any::<Index>(), any::<Index>(), any::<u8>()).prop_map(|(m, c, x)| Mutation::Targeted(m, c, x))
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => targeted_mutation(),
        3 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::Xor(i, x)),
        2 => (any::<Index>(), proptest::sample::select(TYPE_CODES)).prop_map(|(i, c)| Mutation::TypeCode(i, c)),
        2 => (any::<Index>(), 0u8..4).prop_map(|(i, v)| Mutation::Small(i, v)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), vec(any::<u8>(), 1..6)).prop_map(|(i, v)| Mutation::Insert(i, v)),
        1 => (any::<Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => vec(any::<u8>(), 1..10).prop_map(Mutation::Extend),
    ]
}

/// Type codes whose values have the same size.
const SAME_SIZE: &[&[u8]] = &[b"V", b"tbB", b"su", b"Iif", b"D", b"lLdT", b"SxFA"];

/// Applies a targeted mutation at one of `marks` (see [`naive::marks`]).
fn mutate_marked(octets: &mut [u8], marks: &[(usize, naive::Mark)], mutation: &Mutation) {
    let &Mutation::Targeted(which, choice, x) = mutation else {
        return;
    };
    if marks.is_empty() {
        return;
    }
    let (at, kind) = marks[which.index(marks.len())];
    let octet = &mut octets[at];
    match kind {
        naive::Mark::TypeCode => {
            let group = SAME_SIZE
                .iter()
                .find(|g| g.contains(&*octet))
                .copied()
                .unwrap_or_default();
            let candidates = if x & 1 == 0 && !group.is_empty() {
                group
            } else {
                TYPE_CODES
            };
            *octet = candidates[choice.index(candidates.len())];
        }
        naive::Mark::Octet if x & 0x80 != 0 => *octet ^= (x & 0b11).max(1),
        naive::Mark::Octet => *octet ^= x.max(1),
    }
}

fn mutate(octets: &mut Vec<u8>, mutation: &Mutation) {
    let len = octets.len();
    match mutation {
        Mutation::Xor(i, x) if len > 0 => octets[i.index(len)] ^= x,
        Mutation::TypeCode(i, c) if len > 0 => octets[i.index(len)] = *c,
        Mutation::Small(i, v) if len > 0 => octets[i.index(len)] = *v,
        Mutation::Truncate(i) => octets.truncate(i.index(len + 1)),
        Mutation::Insert(i, v) => {
            let at = i.index(len + 1);
            octets.splice(at..at, v.iter().copied());
        }
        Mutation::Remove(i, n) if len > 0 => {
            let at = i.index(len);
            octets.drain(at..(at + n).min(len));
        }
        Mutation::Extend(v) => octets.extend_from_slice(v),
        _ => {}
    }
}

/// A table of many scalar values under short keys: many type codes to mutate.
fn dense_table() -> impl Strategy<Value = FieldTable> {
    let key = vec(any::<u8>(), 0..3).prop_map(|k| ShortStr::from_bytes(k).expect("short"));
    vec((key, scalar_value()), 1..24).prop_map(table_of)
}

/// Frames for the agreement tests: methods (queue.declare often, with a random table or a
/// dense one), headers, bodies, heartbeats.
fn naive_test_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        3 => (any::<u16>(), any_method()).prop_map(|(channel, method)| Frame::Method { channel, method }),
        1 => (any::<u16>(), queue_declare())
            .prop_map(|(channel, m)| Frame::Method { channel, method: Method::QueueDeclare(m) }),
        2 => (any::<u16>(), queue_declare(), dense_table()).prop_map(|(channel, m, arguments)| {
            Frame::Method { channel, method: Method::QueueDeclare(QueueDeclare { arguments, ..m }) }
        }),
        3 => (any::<u16>(), content_header()).prop_map(|(channel, header)| Frame::Header { channel, header }),
        1 => (any::<u16>(), vec(any::<u8>(), 0..64))
            .prop_map(|(channel, payload)| Frame::Body { channel, payload: payload.into() }),
        1 => Just(Frame::Heartbeat),
    ]
}

fn frame_max() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), Just(4096), Just(131_072)]
}

/// Decodes `input` with the crate and with the naive decoder and checks that they agree.
fn check_against_naive(input: &[u8], frame_max: u32) -> Result<(), TestCaseError> {
    let theirs = naive::decode(input, frame_max);
    let mut buf = BytesMut::from(input);
    let ours = frame::decode_frame(&mut buf, frame_max);
    match (&ours, &theirs) {
        (Ok(None), naive::Outcome::Incomplete) => {
            prop_assert_eq!(&buf[..], input, "Ok(None) consumed input");
        }
        (Ok(Some(frame)), naive::Outcome::Frame(naive_frame, len)) => {
            prop_assert_eq!(input.len() - buf.len(), *len, "octets consumed");
            prop_assert_eq!(
                &naive::frame_from_crate(frame)?,
                naive_frame,
                "on {}",
                hex(input)
            );
        }
        (Err(e), naive::Outcome::Reject(why)) => {
            prop_assert_eq!(
                e.reply_code().code(),
                why.code(),
                "crate: {:?}, naive: {:?} on {}",
                e,
                why,
                hex(input)
            );
        }
        _ => {
            return Err(TestCaseError::fail(format!(
                "crate: {ours:?}\nnaive: {theirs:?}\non {}",
                hex(input)
            )));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(warren_testkit::proptest_config(512))]

    /// Frames as the crate encodes them: both accept, with the same structure.
    #[test]
    fn naive_decoder_agrees_on_random_frames(frame in naive_test_frame()) {
        let octets = encoded(&frame);
        prop_assert!(matches!(naive::decode(&octets, 0), naive::Outcome::Frame(..)));
        check_against_naive(&octets, 0)?;
    }

    /// Mutated frames: targeted mutations first (type codes, booleans, bits, flags, class),
    /// then blind ones, either to the raw frame (framing broken too) or to the payload, framed
    /// again (so that the payload parsers see the damage). Both decoders accept or both refuse
    /// (with the same reply code), and agree on the structure when they accept.
    #[test]
    fn naive_decoder_agrees_on_mutated_frames(
        frame in naive_test_frame(),
        reframe in any::<bool>(),
        mutations in vec(mutation(), 1..4),
        frame_max in frame_max(),
    ) {
        let mut octets = encoded(&frame);
        let marks = naive::marks(&octets);
        for m in &mutations {
            mutate_marked(&mut octets, &marks, m);
        }
        if reframe {
            let mut payload = octets[7..octets.len() - 1].to_vec();
            for m in &mutations {
                mutate(&mut payload, m);
            }
            let size = u32::try_from(payload.len()).expect("small").to_be_bytes();
            octets.truncate(3);
            octets.extend_from_slice(&size);
            octets.extend_from_slice(&payload);
            octets.push(0xCE);
        } else {
            for m in &mutations {
                mutate(&mut octets, m);
            }
        }
        check_against_naive(&octets, frame_max)?;
    }

    /// Only targeted mutations, which keep the framing intact, so that most inputs reach the
    /// payload parsers and many are still accepted and compared.
    #[test]
    fn naive_decoder_agrees_on_targeted_mutations(
        frame in naive_test_frame(),
        mutations in vec(targeted_mutation(), 1..3),
    ) {
        let mut octets = encoded(&frame);
        let marks = naive::marks(&octets);
        for m in &mutations {
            mutate_marked(&mut octets, &marks, m);
        }
        check_against_naive(&octets, 0)?;
    }

    /// Arbitrary octets behind a valid-looking frame header, for every frame type.
    #[test]
    fn naive_decoder_agrees_on_arbitrary_payloads(
        kind in prop_oneof![Just(1u8), Just(2), Just(3), Just(8), any::<u8>()],
        channel in prop_oneof![Just(0u16), any::<u16>()],
        ids in prop_oneof![
            proptest::sample::select(naive::METHODS).prop_map(|m| [m.0, m.1]),
            Just([60, 0]),
            any::<[u16; 2]>(),
        ],
        rest in vec(any::<u8>(), 0..40),
    ) {
        let mut payload = Vec::new();
        payload.extend_from_slice(&ids[0].to_be_bytes());
        payload.extend_from_slice(&ids[1].to_be_bytes());
        payload.extend_from_slice(&rest);
        let mut octets = vec![kind];
        octets.extend_from_slice(&channel.to_be_bytes());
        octets.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        octets.extend_from_slice(&payload);
        octets.push(0xCE);
        check_against_naive(&octets, 0)?;
    }
}

/// Tables nested as deep as the crate allows are accepted by both decoders, one level more is
/// refused by both (the limit is the crate's, [`warren_amqp_codec::table::MAX_NESTING`]; the
/// naive decoder copies it on purpose, RabbitMQ has none).
#[test]
fn naive_decoder_agrees_on_nesting_limit() {
    for (levels, accepted) in [
        (warren_amqp_codec::table::MAX_NESTING, true),
        (warren_amqp_codec::table::MAX_NESTING + 1, false),
    ] {
        for container in [b'F', b'A'] {
            let mut value = FieldValue::Void;
            for _ in 0..levels {
                value = if container == b'F' {
                    FieldValue::Table(table_of(vec![(ShortStr::from("k"), value)]))
                } else {
                    FieldValue::Array(FieldArray(vec![value]))
                };
            }
            let declare = QueueDeclare {
                arguments: table_of(vec![(ShortStr::from("deep"), value)]),
                ..QueueDeclare::default()
            };
            let octets = encoded(&Frame::Method {
                channel: 1,
                method: Method::QueueDeclare(declare),
            });
            let ours = frame::decode_frame(&mut BytesMut::from(&octets[..]), 0);
            assert_eq!(
                matches!(ours, Ok(Some(_))),
                accepted,
                "{levels} levels of {}: {ours:?}",
                container as char
            );
            let theirs = naive::decode(&octets, 0);
            assert_eq!(
                matches!(theirs, naive::Outcome::Frame(..)),
                accepted,
                "naive, {levels} levels of {}: {theirs:?}",
                container as char
            );
            check_against_naive(&octets, 0).expect("agreement");
        }
    }
}

/// The naive decoder, by hand: a few frames whose decoding is known.
#[test]
fn naive_decoder_reads_known_frames() {
    use naive::{Arg, Frame as N, Outcome, Reject, Value};
    // basic.qos prefetch-size 0, prefetch-count 10, global: bit 0 of the bit octet, the other
    // bits ignored (as RabbitMQ does).
    let qos = b"\x01\x00\x01\x00\x00\x00\x0b\x00\x3c\x00\x0a\x00\x00\x00\x00\x00\x0a\xfd\xce";
    assert_eq!(
        naive::decode(qos, 0),
        Outcome::Frame(
            N::Method {
                channel: 1,
                class_id: 60,
                method_id: 10,
                args: vec![Arg::Long(0), Arg::Short(10), Arg::Bit(true)],
            },
            qos.len()
        )
    );
    check_against_naive(qos, 0).expect("agreement");
    assert_eq!(naive::decode(&qos[..18], 0), Outcome::Incomplete);
    // The payload is 11 octets: `frame_max` 11 holds it (framing comes on top), 10 does not.
    assert!(matches!(naive::decode(qos, 11), Outcome::Frame(..)));
    assert_eq!(naive::decode(qos, 10), Outcome::Reject(Reject::Frame));
    // a table {"a": s(-2), "b": t(2)}: `s` is a signed 16-bit integer (errata), booleans are
    // any non-zero octet.
    assert_eq!(
        naive::table_entries(b"\x01as\xff\xfe\x01bt\x02"),
        Ok(vec![
            (b"a".to_vec(), Value::I16(-2)),
            (b"b".to_vec(), Value::Bool(true))
        ])
    );
    // `L` is read as a signed 64-bit integer, as RabbitMQ's parser does.
    assert_eq!(
        naive::table_entries(b"\x01aL\0\0\0\0\0\0\0\x05"),
        Ok(vec![(b"a".to_vec(), Value::I64(5))])
    );
    assert_eq!(naive::table_entries(b"\x01a"), Err(Reject::Syntax));
}

/// The known disagreement on property flags, pinned down: flags with bit 1 (unnamed) or bit 0
/// (continuation) set are read by RabbitMQ (and the naive decoder) as if those bits were clear;
/// the crate refuses them. `check_against_naive` accepts exactly this disagreement, and would
/// also accept the crate reading them as RabbitMQ does.
#[test]
fn property_flag_low_bits_are_ignored_as_by_rabbitmq() {
    for low_bits in [0b01u16, 0b10, 0b11] {
        let mut octets = encoded(&Frame::Header {
            channel: 1,
            header: ContentHeader::basic(
                5,
                BasicProperties {
                    delivery_mode: Some(2),
                    ..BasicProperties::default()
                },
            ),
        });
        octets[20] |= low_bits as u8;
        let naive::Outcome::Frame(
            naive::Frame::Header {
                flags, properties, ..
            },
            _,
        ) = naive::decode(&octets, 0)
        else {
            panic!("the naive decoder refused flags {low_bits:#b}");
        };
        assert_eq!((flags, properties), (0x1000, vec![naive::Arg::Octet(2)]));
        check_against_naive(&octets, 0).expect("agreement");
        let mut buf = BytesMut::from(&octets[..]);
        let Ok(Some(Frame::Header { header, .. })) = frame::decode_frame(&mut buf, 0) else {
            panic!("the crate refused flags {low_bits:#b}");
        };
        assert_eq!(header.properties.delivery_mode, Some(2));
    }
}

mod naive {
    //! A reference decoder, deliberately naive: plain slices, recursive descent, its own table
    //! parser producing a simple tree, and the method signatures written out by hand from the
    //! specification. It shares no code with the crate. Its rules:
    //!
    //! - framing (RabbitMQ's `rabbit_reader`): type, channel, size, payload, `0xCE`; fewer than
    //!   7 octets or a partial frame is incomplete; a payload larger than a non-zero
    //!   `frame_max` is refused (501) as soon as the header is in; a bad frame end is 501;
    //!   frame types 1, 2, 3, 8 only, else 501; a heartbeat with a payload is 501, an empty one
    //!   on a channel other than 0 is 505 UNEXPECTED_FRAME.
    //! - methods: a payload shorter than the two ids is 501; unknown class/method ids are 503
    //!   COMMAND_INVALID (where RabbitMQ drops the socket); arguments as the signature says,
    //!   consecutive bits packed into octets low bit first, unused bits ignored (as RabbitMQ's
    //!   `FBits band N`), nothing may follow the last argument; short strings of methods
    //!   without content must be UTF-8. Any argument that does not decode is 501 FRAME_ERROR
    //!   ("cannot decode", as RabbitMQ).
    //! - content headers: fewer than 12 octets is 501; a class other than 60 is 505;
    //!   properties present as the flags say, property `i` being bit `15 - i`; the two low
    //!   bits ignored (and left out of the tree), as RabbitMQ's `<<P0:1, ..., P13:1, _:2,
    //!   R0/binary>>` does; properties that do not decode are 502 SYNTAX_ERROR.
    //! - field tables: RabbitMQ's parser's codes `t b B s u I i l L f d D S x A T F V`
    //!   (`L` read as signed 64-bit, like `l`), nothing else; `t` is true for any non-zero
    //!   octet; tables and arrays nest at most 64 deep (the crate's limit, copied on purpose).

    use proptest::test_runner::TestCaseError;
    use std::cell::RefCell;
    use warren_amqp_codec::{BasicProperties, FieldTable, FieldValue};

    /// Every method: class id, method id, name, argument types. Types: `o` octet, `h` short,
    /// `l` long, `q` longlong, `b` bit, `s` shortstr, `S` longstr, `F` table.
    pub(super) const METHODS: &[(u16, u16, &str, &str)] = &[
        (10, 10, "connection.start", "ooFSS"),
        (10, 11, "connection.start-ok", "FsSs"),
        (10, 20, "connection.secure", "S"),
        (10, 21, "connection.secure-ok", "S"),
        (10, 30, "connection.tune", "hlh"),
        (10, 31, "connection.tune-ok", "hlh"),
        (10, 40, "connection.open", "ssb"),
        (10, 41, "connection.open-ok", "s"),
        (10, 50, "connection.close", "hshh"),
        (10, 51, "connection.close-ok", ""),
        (10, 60, "connection.blocked", "s"),
        (10, 61, "connection.unblocked", ""),
        (10, 70, "connection.update-secret", "Ss"),
        (10, 71, "connection.update-secret-ok", ""),
        (20, 10, "channel.open", "s"),
        (20, 11, "channel.open-ok", "S"),
        (20, 20, "channel.flow", "b"),
        (20, 21, "channel.flow-ok", "b"),
        (20, 40, "channel.close", "hshh"),
        (20, 41, "channel.close-ok", ""),
        (30, 10, "access.request", "sbbbbb"),
        (30, 11, "access.request-ok", "h"),
        (40, 10, "exchange.declare", "hssbbbbbF"),
        (40, 11, "exchange.declare-ok", ""),
        (40, 20, "exchange.delete", "hsbb"),
        (40, 21, "exchange.delete-ok", ""),
        (40, 30, "exchange.bind", "hsssbF"),
        (40, 31, "exchange.bind-ok", ""),
        (40, 40, "exchange.unbind", "hsssbF"),
        // RabbitMQ's spec numbers exchange.unbind-ok 51, not 41.
        (40, 51, "exchange.unbind-ok", ""),
        (50, 10, "queue.declare", "hsbbbbbF"),
        (50, 11, "queue.declare-ok", "sll"),
        (50, 20, "queue.bind", "hsssbF"),
        (50, 21, "queue.bind-ok", ""),
        (50, 30, "queue.purge", "hsb"),
        (50, 31, "queue.purge-ok", "l"),
        (50, 40, "queue.delete", "hsbbb"),
        (50, 41, "queue.delete-ok", "l"),
        (50, 50, "queue.unbind", "hsssF"),
        (50, 51, "queue.unbind-ok", ""),
        (60, 10, "basic.qos", "lhb"),
        (60, 11, "basic.qos-ok", ""),
        (60, 20, "basic.consume", "hssbbbbF"),
        (60, 21, "basic.consume-ok", "s"),
        (60, 30, "basic.cancel", "sb"),
        (60, 31, "basic.cancel-ok", "s"),
        (60, 40, "basic.publish", "hssbb"),
        (60, 50, "basic.return", "hsss"),
        (60, 60, "basic.deliver", "sqbss"),
        (60, 70, "basic.get", "hsb"),
        (60, 71, "basic.get-ok", "qbssl"),
        (60, 72, "basic.get-empty", "s"),
        (60, 80, "basic.ack", "qb"),
        (60, 90, "basic.reject", "qb"),
        (60, 100, "basic.recover-async", "b"),
        (60, 110, "basic.recover", "b"),
        (60, 111, "basic.recover-ok", ""),
        (60, 120, "basic.nack", "qbb"),
        (85, 10, "confirm.select", "b"),
        (85, 11, "confirm.select-ok", ""),
        (90, 10, "tx.select", ""),
        (90, 11, "tx.select-ok", ""),
        (90, 20, "tx.commit", ""),
        (90, 21, "tx.commit-ok", ""),
        (90, 30, "tx.rollback", ""),
        (90, 31, "tx.rollback-ok", ""),
    ];

    /// The properties of class `basic`, in flag order (first is bit 15), with their types.
    const PROPERTIES: &[(&str, char)] = &[
        ("content-type", 's'),
        ("content-encoding", 's'),
        ("headers", 'F'),
        ("delivery-mode", 'o'),
        ("priority", 'o'),
        ("correlation-id", 's'),
        ("reply-to", 's'),
        ("expiration", 's'),
        ("message-id", 's'),
        ("timestamp", 'q'),
        ("type", 's'),
        ("user-id", 's'),
        ("app-id", 's'),
        ("cluster-id", 's'),
    ];

    const MAX_NESTING: usize = 64;

    /// A method argument or property.
    #[derive(Debug, Clone, PartialEq)]
    pub(super) enum Arg {
        Bit(bool),
        Octet(u8),
        Short(u16),
        Long(u32),
        LongLong(u64),
        ShortStr(Vec<u8>),
        LongStr(Vec<u8>),
        Table(Table),
    }

    pub(super) type Table = Vec<(Vec<u8>, Value)>;

    /// A field value; floats as their bits.
    #[derive(Debug, Clone, PartialEq)]
    pub(super) enum Value {
        Bool(bool),
        I8(i8),
        U8(u8),
        I16(i16),
        U16(u16),
        I32(i32),
        U32(u32),
        I64(i64),
        F32(u32),
        F64(u64),
        Decimal(u8, u32),
        LongStr(Vec<u8>),
        Bytes(Vec<u8>),
        Array(Vec<Value>),
        Timestamp(u64),
        Table(Table),
        Void,
    }

    #[derive(Debug, Clone, PartialEq)]
    pub(super) enum Frame {
        Method {
            channel: u16,
            class_id: u16,
            method_id: u16,
            args: Vec<Arg>,
        },
        Header {
            channel: u16,
            class_id: u16,
            weight: u16,
            body_size: u64,
            flags: u16,
            properties: Vec<Arg>,
        },
        Body {
            channel: u16,
            payload: Vec<u8>,
        },
        Heartbeat,
    }

    /// Why input is refused, as the class of reply code that closes the connection.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Reject {
        /// 501 FRAME_ERROR: the framing is wrong.
        Frame,
        /// 502 SYNTAX_ERROR: the content of a frame is malformed.
        Syntax,
        /// 503 COMMAND_INVALID: no such method.
        CommandInvalid,
        /// 505 UNEXPECTED_FRAME: a frame where none of its kind may be.
        Unexpected,
    }

    impl Reject {
        pub(super) fn code(self) -> u16 {
            match self {
                Reject::Frame => 501,
                Reject::Syntax => 502,
                Reject::CommandInvalid => 503,
                Reject::Unexpected => 505,
            }
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    pub(super) enum Outcome {
        /// Not a whole frame yet.
        Incomplete,
        /// A frame, and how many octets it took.
        Frame(Frame, usize),
        Reject(Reject),
    }

    /// An octet worth mutating: where [`marks`] found it, and what it holds.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Mark {
        /// A field value's type code.
        TypeCode,
        /// A boolean's octet, an octet of method bits, a property-flags octet, or the low
        /// octet of a content header's class id.
        Octet,
    }

    thread_local! {
        /// While [`marks`] runs: the addresses of the octets worth mutating.
        static MARKS: RefCell<Option<Vec<(usize, Mark)>>> = const { RefCell::new(None) };
    }

    fn mark(at: &[u8], kind: Mark) {
        MARKS.with(|marks| {
            if let (Some(marks), false) = (marks.borrow_mut().as_mut(), at.is_empty()) {
                marks.push((at.as_ptr() as usize, kind));
            }
        });
    }

    /// Decodes a frame and gives the offsets, in `frame`, of the octets worth mutating: type
    /// codes, booleans, bits, property flags, the content class.
    pub(super) fn marks(frame: &[u8]) -> Vec<(usize, Mark)> {
        MARKS.with(|marks| *marks.borrow_mut() = Some(Vec::new()));
        let _ = decode(frame, 0);
        let found = MARKS.with(|marks| marks.borrow_mut().take());
        let base = frame.as_ptr() as usize;
        found
            .unwrap_or_default()
            .into_iter()
            .map(|(at, kind)| (at - base, kind))
            .collect()
    }

    /// The input not read yet.
    struct Input<'a>(&'a [u8]);

    impl<'a> Input<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], Reject> {
            if self.0.len() < n {
                return Err(Reject::Syntax);
            }
            let (head, tail) = self.0.split_at(n);
            self.0 = tail;
            Ok(head)
        }

        fn array<const N: usize>(&mut self) -> Result<[u8; N], Reject> {
            let mut out = [0; N];
            out.copy_from_slice(self.take(N)?);
            Ok(out)
        }

        fn u8(&mut self) -> Result<u8, Reject> {
            Ok(self.array::<1>()?[0])
        }

        fn u16(&mut self) -> Result<u16, Reject> {
            Ok(u16::from_be_bytes(self.array()?))
        }

        fn u32(&mut self) -> Result<u32, Reject> {
            Ok(u32::from_be_bytes(self.array()?))
        }

        fn u64(&mut self) -> Result<u64, Reject> {
            Ok(u64::from_be_bytes(self.array()?))
        }

        fn shortstr(&mut self) -> Result<Vec<u8>, Reject> {
            let len = self.u8()?;
            Ok(self.take(usize::from(len))?.to_vec())
        }

        /// A long string, or the octets of a table or array: a 32-bit length, then octets.
        fn long_slice(&mut self) -> Result<&'a [u8], Reject> {
            let len = self.u32()?;
            self.take(len as usize)
        }

        fn longstr(&mut self) -> Result<Vec<u8>, Reject> {
            Ok(self.long_slice()?.to_vec())
        }

        fn end(&self) -> Result<(), Reject> {
            if self.0.is_empty() {
                Ok(())
            } else {
                Err(Reject::Syntax)
            }
        }
    }

    /// Decodes the frame at the start of `input`.
    pub(super) fn decode(input: &[u8], frame_max: u32) -> Outcome {
        if input.len() < 7 {
            return Outcome::Incomplete;
        }
        let kind = input[0];
        let channel = u16::from_be_bytes([input[1], input[2]]);
        let size = u32::from_be_bytes([input[3], input[4], input[5], input[6]]) as usize;
        let total = 7 + size + 1;
        if frame_max != 0 && size > frame_max as usize {
            return Outcome::Reject(Reject::Frame);
        }
        if input.len() < total {
            return Outcome::Incomplete;
        }
        if input[total - 1] != 0xCE {
            return Outcome::Reject(Reject::Frame);
        }
        let payload = &input[7..total - 1];
        let frame = match kind {
            1 => method(channel, payload),
            2 => header(channel, payload),
            3 => Ok(Frame::Body {
                channel,
                payload: payload.to_vec(),
            }),
            8 if channel == 0 && payload.is_empty() => Ok(Frame::Heartbeat),
            8 if payload.is_empty() => Err(Reject::Unexpected),
            _ => Err(Reject::Frame),
        };
        match frame {
            Ok(frame) => Outcome::Frame(frame, total),
            Err(why) => Outcome::Reject(why),
        }
    }

    fn method(channel: u16, payload: &[u8]) -> Result<Frame, Reject> {
        let mut input = Input(payload);
        let (Ok(class_id), Ok(method_id)) = (input.u16(), input.u16()) else {
            return Err(Reject::Frame);
        };
        let signature = METHODS
            .iter()
            .find(|m| m.0 == class_id && m.1 == method_id)
            .ok_or(Reject::CommandInvalid)?
            .3;
        let content = matches!(
            (class_id, method_id),
            (60, 40) | (60, 50) | (60, 60) | (60, 71)
        );
        let args = method_args(&mut input, signature, content).map_err(|_| Reject::Frame)?;
        Ok(Frame::Method {
            channel,
            class_id,
            method_id,
            args,
        })
    }

    fn method_args(
        input: &mut Input<'_>,
        signature: &str,
        content: bool,
    ) -> Result<Vec<Arg>, Reject> {
        let mut args = Vec::new();
        // The octet holding the current run of bits, and how many of its bits are used.
        let mut bits: Option<(u8, u32)> = None;
        for t in signature.chars() {
            if t == 'b' {
                let (octet, used) = match bits {
                    Some((octet, used)) if used < 8 => (octet, used),
                    _ => {
                        mark(input.0, Mark::Octet);
                        (input.u8()?, 0)
                    }
                };
                args.push(Arg::Bit(octet >> used & 1 == 1));
                bits = Some((octet, used + 1));
            } else {
                bits = None;
                let a = arg(input, t)?;
                if let (Arg::ShortStr(s), false) = (&a, content) {
                    std::str::from_utf8(s).map_err(|_| Reject::Frame)?;
                }
                args.push(a);
            }
        }
        input.end()?;
        Ok(args)
    }

    fn arg(input: &mut Input<'_>, t: char) -> Result<Arg, Reject> {
        Ok(match t {
            'o' => Arg::Octet(input.u8()?),
            'h' => Arg::Short(input.u16()?),
            'l' => Arg::Long(input.u32()?),
            'q' => Arg::LongLong(input.u64()?),
            's' => Arg::ShortStr(input.shortstr()?),
            'S' => Arg::LongStr(input.longstr()?),
            'F' => Arg::Table(table_entries(input.long_slice()?)?),
            other => unreachable!("type {other} in a signature"),
        })
    }

    fn header(channel: u16, payload: &[u8]) -> Result<Frame, Reject> {
        let mut input = Input(payload);
        mark(payload.get(1..).unwrap_or_default(), Mark::Octet);
        let (Ok(class_id), Ok(weight), Ok(body_size)) = (input.u16(), input.u16(), input.u64())
        else {
            return Err(Reject::Frame);
        };
        if class_id != 60 {
            return Err(Reject::Unexpected);
        }
        mark(input.0, Mark::Octet);
        mark(input.0.get(1..).unwrap_or_default(), Mark::Octet);
        let flags = input.u16()?;
        let mut properties = Vec::new();
        for (i, &(_, t)) in PROPERTIES.iter().enumerate() {
            if flags & (1 << (15 - i)) != 0 {
                properties.push(arg(&mut input, t)?);
            }
        }
        input.end()?;
        Ok(Frame::Header {
            channel,
            class_id,
            weight,
            body_size,
            flags: flags & !0b11,
            properties,
        })
    }

    /// A table's entries (the octets after its length).
    pub(super) fn table_entries(octets: &[u8]) -> Result<Table, Reject> {
        entries(octets, 0)
    }

    fn entries(octets: &[u8], depth: usize) -> Result<Table, Reject> {
        let mut input = Input(octets);
        let mut table = Vec::new();
        while !input.0.is_empty() {
            let key = input.shortstr()?;
            let value = value(&mut input, depth)?;
            table.push((key, value));
        }
        Ok(table)
    }

    fn value(input: &mut Input<'_>, depth: usize) -> Result<Value, Reject> {
        mark(input.0, Mark::TypeCode);
        Ok(match input.u8()? {
            b't' => {
                mark(input.0, Mark::Octet);
                Value::Bool(input.u8()? != 0)
            }
            b'b' => Value::I8(i8::from_be_bytes(input.array()?)),
            b'B' => Value::U8(input.u8()?),
            b's' => Value::I16(i16::from_be_bytes(input.array()?)),
            b'u' => Value::U16(input.u16()?),
            b'I' => Value::I32(i32::from_be_bytes(input.array()?)),
            b'i' => Value::U32(input.u32()?),
            b'l' | b'L' => Value::I64(i64::from_be_bytes(input.array()?)),
            b'f' => Value::F32(input.u32()?),
            b'd' => Value::F64(input.u64()?),
            b'D' => Value::Decimal(input.u8()?, input.u32()?),
            b'S' => Value::LongStr(input.longstr()?),
            b'x' => Value::Bytes(input.longstr()?),
            b'T' => Value::Timestamp(input.u64()?),
            b'V' => Value::Void,
            b'F' if depth < MAX_NESTING => Value::Table(entries(input.long_slice()?, depth + 1)?),
            b'A' if depth < MAX_NESTING => {
                let mut inner = Input(input.long_slice()?);
                let mut values = Vec::new();
                while !inner.0.is_empty() {
                    values.push(value(&mut inner, depth + 1)?);
                }
                Value::Array(values)
            }
            _ => return Err(Reject::Syntax),
        })
    }

    // -----------------------------------------------------------------------------------------
    // From the crate's types to the tree, for comparison
    // -----------------------------------------------------------------------------------------

    /// The tree for a frame the crate decoded. Header, body and heartbeat frames are converted
    /// field by field; a method, whose fields only the generated code knows, is encoded again by
    /// the crate and read back here.
    pub(super) fn frame_from_crate(
        frame: &warren_amqp_codec::Frame,
    ) -> Result<Frame, TestCaseError> {
        use warren_amqp_codec::Frame as C;
        Ok(match frame {
            C::Method { method, .. } => {
                let octets = super::encoded(frame);
                match decode(&octets, 0) {
                    Outcome::Frame(
                        tree @ Frame::Method {
                            class_id,
                            method_id,
                            ..
                        },
                        len,
                    ) if len == octets.len()
                        && class_id == method.class_id()
                        && method_id == method.method_id() =>
                    {
                        tree
                    }
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "the crate encoded {method:?} as {}, read back as {other:?}",
                            super::hex(&octets)
                        )));
                    }
                }
            }
            C::Header { channel, header } => {
                let (flags, properties) = properties_from_crate(&header.properties);
                Frame::Header {
                    channel: *channel,
                    class_id: header.class_id,
                    weight: header.weight,
                    body_size: header.body_size,
                    flags,
                    properties,
                }
            }
            C::Body { channel, payload } => Frame::Body {
                channel: *channel,
                payload: payload.to_vec(),
            },
            C::Heartbeat => Frame::Heartbeat,
        })
    }

    /// Property flags and the present properties, in the order of [`PROPERTIES`].
    pub(super) fn properties_from_crate(p: &BasicProperties) -> (u16, Vec<Arg>) {
        let shortstr = |s: &Option<warren_amqp_codec::ShortStr>| {
            s.as_ref().map(|s| Arg::ShortStr(s.as_bytes().to_vec()))
        };
        let all = [
            shortstr(&p.content_type),
            shortstr(&p.content_encoding),
            p.headers.as_ref().map(|t| Arg::Table(table_from_crate(t))),
            p.delivery_mode.map(Arg::Octet),
            p.priority.map(Arg::Octet),
            shortstr(&p.correlation_id),
            shortstr(&p.reply_to),
            shortstr(&p.expiration),
            shortstr(&p.message_id),
            p.timestamp.map(Arg::LongLong),
            shortstr(&p.kind),
            shortstr(&p.user_id),
            shortstr(&p.app_id),
            shortstr(&p.cluster_id),
        ];
        assert_eq!(all.len(), PROPERTIES.len());
        let mut flags = 0;
        let mut present = Vec::new();
        for (i, property) in all.into_iter().enumerate() {
            if let Some(property) = property {
                flags |= 1 << (15 - i);
                present.push(property);
            }
        }
        (flags, present)
    }

    pub(super) fn table_from_crate(table: &FieldTable) -> Table {
        table
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), value_from_crate(v)))
            .collect()
    }

    fn value_from_crate(value: &FieldValue) -> Value {
        match value {
            FieldValue::Bool(b) => Value::Bool(*b),
            FieldValue::I8(v) => Value::I8(*v),
            FieldValue::U8(v) => Value::U8(*v),
            FieldValue::I16(v) => Value::I16(*v),
            FieldValue::U16(v) => Value::U16(*v),
            FieldValue::I32(v) => Value::I32(*v),
            FieldValue::U32(v) => Value::U32(*v),
            FieldValue::I64(v) => Value::I64(*v),
            FieldValue::F32(v) => Value::F32(v.to_bits()),
            FieldValue::F64(v) => Value::F64(v.to_bits()),
            FieldValue::Decimal(d) => Value::Decimal(d.scale, d.value),
            FieldValue::LongStr(s) => Value::LongStr(s.as_bytes().to_vec()),
            FieldValue::Bytes(b) => Value::Bytes(b.to_vec()),
            FieldValue::Array(a) => Value::Array(a.0.iter().map(value_from_crate).collect()),
            FieldValue::Timestamp(t) => Value::Timestamp(*t),
            FieldValue::Table(t) => Value::Table(table_from_crate(t)),
            FieldValue::Void => Value::Void,
        }
    }
}

proptest! {
    #![proptest_config(warren_testkit::proptest_config(128))]

    /// Properties kept in encoded form decode back to themselves, and a content encoded from
    /// them is octet for octet the content encoded from the decoded value.
    #[test]
    fn encoded_properties_round_trip(
        props in basic_properties(),
        body in vec(any::<u8>(), 0..300),
        frame_max in 4096u32..5000,
    ) {
        let mut enc = BytesMut::new();
        props.encode(&mut enc);
        let enc = enc.freeze();
        let back = BasicProperties::decode_encoded(&enc).unwrap();
        let mut again = BytesMut::new();
        back.encode(&mut again);
        prop_assert_eq!(&again[..], &enc[..]);
        let method = Method::from(warren_amqp_codec::BasicDeliver::default());
        let mut a = BytesMut::new();
        frame::encode_content(&mut a, 3, &method, &props, &body, frame_max);
        let mut b = BytesMut::new();
        frame::encode_content_raw(&mut b, 3, &method, &enc, &body, frame_max);
        prop_assert_eq!(hex(&a), hex(&b));
    }
}

#[test]
fn truncated_encoded_properties_are_an_error() {
    let props = BasicProperties {
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    let mut enc = BytesMut::new();
    props.encode(&mut enc);
    let cut = enc.freeze().slice(..5);
    assert!(BasicProperties::decode_encoded(&cut).is_err());
}
