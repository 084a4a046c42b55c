//! Codec throughput, side by side with lapin's codec (`amq-protocol`).
//!
//! Every case is one message: a content-carrying method (`basic.publish` or `basic.deliver`),
//! its content header and one body frame. Both codecs see the same octets: the wire image is
//! encoded once by each side at start-up and the two must be identical, or the bench panics.
//!
//! - `decode/<case>`: from a read buffer holding the three frames to three fully parsed frames,
//!   moved out of the results as a connection's read loop would. Warren:
//!   [`frame::decode_frame`] three times on the `BytesMut` (bodies and strings become shared
//!   slices of it); amq-protocol: `frame::parse_frame` three times on the `&[u8]` of a `Vec<u8>`
//!   (its cheapest input; strings, tables and the body are copied into owned values). Each
//!   iteration gets its own freshly built buffer; building it and dropping the parsed frames
//!   happen outside the timed region, on both sides alike (`iter_batched_ref`, small batches).
//! - `encode/<case>`: from a method, properties and body to the wire image, appended to a
//!   reused buffer. Warren: [`frame::encode_content`]; amq-protocol: `frame::gen_frame` on the
//!   three prebuilt `AMQPFrame`s into a reused `Vec<u8>` (building those frames, which copies
//!   the body, is not timed).
//!
//! Throughput is reported both in messages (elements) and in wire octets.
//!
//! Run with `cargo bench -p warren-amqp-codec --bench codec`; see `docs/benchmarks.md`.

use std::hint::black_box;
use std::time::Duration;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, BasicProperties as AmqProperties, basic as amq_basic};
use amq_protocol::types::{AMQPValue, FieldTable as AmqTable, LongString, ShortString};
use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use warren_amqp_codec::{
    BasicDeliver, BasicProperties, BasicPublish, FieldTable, FieldValue, Frame, Method, frame,
};

/// The negotiated `frame_max` both sides use (RabbitMQ's default).
const FRAME_MAX: u32 = 131_072;
const CHANNEL: u16 = 1;
/// Read buffers prepared per timed batch in the decode benchmarks.
const DECODE_BATCH: u64 = 64;

/// One benchmark case: the same message in both codecs' types.
struct Case {
    name: &'static str,
    method: Method,
    properties: BasicProperties,
    body: Vec<u8>,
    amq_frames: [AMQPFrame; 3],
}

impl Case {
    fn new(name: &'static str, deliver: bool, headers: bool, body_len: usize) -> Self {
        let body: Vec<u8> = (0..body_len).map(|i| (i % 251) as u8).collect();

        let (method, amq_method) = if deliver {
            (
                Method::from(BasicDeliver {
                    consumer_tag: "amq.ctag-Vd2nLq8cT0b5XgqzJ7Y3aA".into(),
                    delivery_tag: 4_711,
                    redelivered: false,
                    exchange: "amq.topic".into(),
                    routing_key: "orders.eu.created".into(),
                }),
                amq_basic::AMQPMethod::Deliver(amq_basic::Deliver {
                    consumer_tag: "amq.ctag-Vd2nLq8cT0b5XgqzJ7Y3aA".into(),
                    delivery_tag: 4_711,
                    redelivered: false,
                    exchange: "amq.topic".into(),
                    routing_key: "orders.eu.created".into(),
                }),
            )
        } else {
            (
                Method::from(BasicPublish {
                    ticket: 0,
                    exchange: "amq.topic".into(),
                    routing_key: "orders.eu.created".into(),
                    mandatory: false,
                    immediate: false,
                }),
                amq_basic::AMQPMethod::Publish(amq_basic::Publish {
                    exchange: "amq.topic".into(),
                    routing_key: "orders.eu.created".into(),
                    mandatory: false,
                    immediate: false,
                }),
            )
        };

        let mut properties = BasicProperties {
            content_type: Some("application/json".into()),
            delivery_mode: Some(2),
            ..Default::default()
        };
        let mut amq_properties = AmqProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(2);
        if headers {
            // amq-protocol keeps tables in a BTreeMap, so keys are listed in sorted order here
            // to give both sides the same octets.
            let mut table = FieldTable::new();
            table.push("retries".into(), FieldValue::I32(3));
            table.push("sent-at".into(), FieldValue::I64(1_700_000_000_123));
            table.push("source".into(), FieldValue::from("billing-service"));
            table.push("traced".into(), FieldValue::Bool(true));
            properties.headers = Some(table);
            let mut amq_table = AmqTable::default();
            amq_table.insert("retries".into(), AMQPValue::LongInt(3));
            amq_table.insert("sent-at".into(), AMQPValue::LongLongInt(1_700_000_000_123));
            amq_table.insert(
                "source".into(),
                AMQPValue::LongString(LongString::from("billing-service")),
            );
            amq_table.insert("traced".into(), AMQPValue::Boolean(true));
            amq_properties = amq_properties.with_headers(amq_table);
        }

        let amq_frames = [
            AMQPFrame::Method(CHANNEL, AMQPClass::Basic(amq_method)),
            AMQPFrame::Header(
                CHANNEL,
                AMQPContentHeader {
                    class_id: 60,
                    body_size: body.len() as u64,
                    properties: amq_properties,
                },
            ),
            AMQPFrame::Body(CHANNEL, body.clone()),
        ];
        Self {
            name,
            method,
            properties,
            body,
            amq_frames,
        }
    }

    #[inline(never)] // a fixed unit of work per iteration (and for profilers)
    fn encode_warren(&self, buf: &mut BytesMut) {
        frame::encode_content(
            buf,
            CHANNEL,
            &self.method,
            &self.properties,
            &self.body,
            FRAME_MAX,
        );
    }

    #[inline(never)] // a fixed unit of work per iteration (and for profilers)
    fn encode_amq(&self, mut buf: Vec<u8>) -> Vec<u8> {
        for f in &self.amq_frames {
            let ctx = gen_frame(f)(WriteContext::from(buf)).expect("amq-protocol encodes");
            buf = ctx.write;
        }
        buf
    }
}

/// Decodes the three frames off the front of the read buffer, as a connection's read loop does.
#[inline(never)] // a fixed unit of work per iteration (and for profilers)
fn decode_warren(buf: &mut BytesMut) -> [Frame; 3] {
    let mut next = || {
        let Ok(Some(frame)) = frame::decode_frame(buf, FRAME_MAX) else {
            panic!("not a valid, complete frame");
        };
        frame
    };
    [next(), next(), next()]
}

/// The same with amq-protocol: each parse continues where the previous one ended.
#[inline(never)] // a fixed unit of work per iteration (and for profilers)
fn decode_amq(buf: &[u8]) -> [AMQPFrame; 3] {
    let mut rest = buf;
    let mut next = || {
        let Ok((tail, frame)) = parse_frame(rest) else {
            panic!("not a valid frame");
        };
        rest = tail;
        frame
    };
    [next(), next(), next()]
}

fn cases() -> Vec<Case> {
    vec![
        Case::new("publish_16B", false, false, 16),
        Case::new("publish_1KiB", false, false, 1024),
        Case::new("publish_16B_headers", false, true, 16),
        Case::new("deliver_16B", true, false, 16),
        Case::new("deliver_1KiB", true, false, 1024),
        Case::new("deliver_16B_headers", true, true, 16),
    ]
}

fn bench(c: &mut Criterion) {
    for case in cases() {
        // The wire image, and a check that both sides really do the same work.
        let mut wire = BytesMut::new();
        case.encode_warren(&mut wire);
        let wire = wire.freeze();
        assert_eq!(
            case.encode_amq(Vec::new()),
            wire[..],
            "{}: amq-protocol encodes different octets",
            case.name
        );
        let ours = decode_warren(&mut BytesMut::from(&wire[..]));
        assert!(matches!(&ours, [
            Frame::Method { method, .. },
            Frame::Header { header, .. },
            Frame::Body { payload, .. },
        ] if *method == case.method
            && header.properties == case.properties
            && payload[..] == case.body[..]));
        assert_eq!(decode_amq(&wire), case.amq_frames, "{}", case.name);

        let throughput = Throughput::ElementsAndBytes {
            elements: 1,
            bytes: wire.len() as u64,
        };

        let mut group = c.benchmark_group(format!("decode/{}", case.name));
        group.throughput(throughput.clone());
        // Each iteration gets its own freshly filled read buffer (built outside the timed
        // region); batches are small so those buffers are still in cache, as a buffer the
        // kernel just filled would be. The parsed frames are dropped outside the timed region.
        group.bench_function("warren", |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                decode_warren,
                BatchSize::NumIterations(DECODE_BATCH),
            )
        });
        group.bench_function("amq-protocol", |b| {
            b.iter_batched_ref(
                || wire.to_vec(),
                |buf| decode_amq(buf),
                BatchSize::NumIterations(DECODE_BATCH),
            )
        });
        group.finish();

        let mut group = c.benchmark_group(format!("encode/{}", case.name));
        group.throughput(throughput);
        group.bench_function("warren", |b| {
            let mut buf = BytesMut::with_capacity(4096);
            b.iter(|| {
                buf.clear();
                case.encode_warren(&mut buf);
                black_box(&buf);
            })
        });
        group.bench_function("amq-protocol", |b| {
            let mut buf = Some(Vec::with_capacity(4096));
            b.iter(|| {
                let mut v = buf.take().unwrap_or_default();
                v.clear();
                let v = case.encode_amq(v);
                black_box(&v);
                buf = Some(v);
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    // Modest times so the whole bench (24 benchmarks) runs in about two minutes.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = bench
}
criterion_main!(benches);
