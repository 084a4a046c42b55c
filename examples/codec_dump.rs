//! `codec-dump`: prints the frames of a captured AMQP 0-9-1 byte stream, one line per frame,
//! using nothing but `warren-amqp-codec` (and `bytes`).
//!
//! ```sh
//! cargo run -p warren-examples --example codec-dump -- FILE [FILE...]
//! # e.g. one direction of a golden capture:
//! cargo run -p warren-examples --example codec-dump -- \
//!     crates/amqp-codec/tests/golden/publish_consume.c2s.bin
//! ```
//!
//! Each `FILE` holds one direction of one connection, byte for byte: what a client sent
//! (starting with the 8-octet protocol header, which is detected and printed) or what a server
//! sent (frames only; a server that refuses the protocol sends just a protocol header, which is
//! printed too). Frames are decoded with `frame::decode_frame` and no `frame_max` limit.
//! Every line starts with the frame's offset in the file and its channel:
//!
//! ```text
//!      0  -     protocol-header AMQP 0-9-1
//!    336  ch 0   method    connection.tune-ok ConnectionTuneOk { channel_max: 2047, frame_max: 4096, heartbeat: 1 }
//!   1750  ch 1   method    basic.publish BasicPublish { ticket: 0, exchange: "", routing_key: "golden.q", mandatory: false, immediate: false }
//!   1775  ch 1   header    body-size 10240, class 60, flags 0x8000 { content_type: "application/octet-stream" }
//!   1822  ch 1   body      4088 octets "\x00\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f"...
//!  13173  ch 0   heartbeat
//! ```
//!
//! A method's arguments are its struct in `Debug` form; a header shows the body size, class,
//! property flags and the properties that are set; a body shows its length and its first
//! 32 octets, escaped.
//!
//! Malformed input stops the dump with the codec's error, the AMQP reply code a broker would
//! close the connection with, and exit status 1; so does a stream that ends inside a frame.
//! With several files, each is introduced by a `==> FILE <==` line and the exit status is 1 if
//! any of them failed.

use bytes::BytesMut;
use std::fmt::Write as _;
use std::process::ExitCode;
use warren_amqp_codec::frame::{self, PROTOCOL_HEADER, ProtocolHeader};
use warren_amqp_codec::{BasicProperties, ContentHeader, Frame, Method};

/// How many body octets are shown (escaped) after a body frame's length.
const BODY_PREVIEW: usize = 32;

fn main() -> ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() || paths.iter().any(|p| p == "-h" || p == "--help") {
        eprintln!("usage: codec-dump FILE [FILE...]");
        eprintln!("prints every AMQP 0-9-1 frame of each captured byte stream, one per line");
        return ExitCode::from(2);
    }
    let mut status = ExitCode::SUCCESS;
    for (i, path) in paths.iter().enumerate() {
        if paths.len() > 1 {
            if i > 0 {
                println!();
            }
            println!("==> {path} <==");
        }
        let input = match std::fs::read(path) {
            Ok(input) => input,
            Err(e) => {
                eprintln!("codec-dump: {path}: {e}");
                status = ExitCode::FAILURE;
                continue;
            }
        };
        if let Err(message) = dump(&input) {
            eprintln!("codec-dump: {path}: {message}");
            status = ExitCode::FAILURE;
        }
    }
    status
}

/// Prints every frame of `input`; the error is the message for a malformed or cut stream.
fn dump(input: &[u8]) -> Result<(), String> {
    let mut buf = BytesMut::from(input);
    if input.starts_with(b"AMQP") {
        let header = input.get(..PROTOCOL_HEADER.len()).unwrap_or(input);
        match frame::check_protocol_header(header) {
            ProtocolHeader::Amqp091 => println!("{:>6}  -     protocol-header AMQP 0-9-1", 0),
            ProtocolHeader::Unsupported if header.len() == PROTOCOL_HEADER.len() => {
                // Most likely another AMQP version; a 0-9-1 server answers with its own header
                // and closes. Show the octets and go on: whatever follows is not 0-9-1 either.
                println!(
                    "{:>6}  -     protocol-header \"{}\" (not AMQP 0-9-1)",
                    0,
                    header.escape_ascii()
                );
            }
            ProtocolHeader::Unsupported | ProtocolHeader::Incomplete => {
                return Err(format!(
                    "offset 0: the stream ends inside the protocol header ({} octets)",
                    header.len()
                ));
            }
        }
        let _ = buf.split_to(PROTOCOL_HEADER.len());
    }
    loop {
        let offset = input.len() - buf.len();
        match frame::decode_frame(&mut buf, 0) {
            Ok(Some(frame)) => println!("{offset:>6}  {}", describe(&frame)),
            Ok(None) if buf.is_empty() => return Ok(()),
            Ok(None) => {
                return Err(format!(
                    "offset {offset}: the stream ends inside a frame ({} octets left)",
                    buf.len()
                ));
            }
            Err(e) => {
                let code = e.reply_code();
                return Err(format!(
                    "offset {offset}: malformed frame: {e} (reply code {} {})",
                    code.code(),
                    code.name()
                ));
            }
        }
    }
}

/// The line for one frame, after its offset.
fn describe(frame: &Frame) -> String {
    match frame {
        Frame::Method { channel, method } => {
            format!(
                "ch {channel:<3} method    {} {}",
                method.name(),
                method_args(method)
            )
        }
        Frame::Header { channel, header } => {
            format!("ch {channel:<3} header    {}", header_line(header))
        }
        Frame::Body { channel, payload } => {
            let shown = payload.get(..BODY_PREVIEW).unwrap_or(payload);
            let more = if payload.len() > BODY_PREVIEW {
                "..."
            } else {
                ""
            };
            format!(
                "ch {channel:<3} body      {} octets \"{}\"{more}",
                payload.len(),
                shown.escape_ascii()
            )
        }
        Frame::Heartbeat => format!("ch {:<3} heartbeat", frame.channel()),
    }
}

/// The method's arguments: its struct in Debug form, without the enum variant around it.
fn method_args(method: &Method) -> String {
    let debug = format!("{method:?}");
    match debug.split_once('(') {
        Some((_, inner)) => inner.strip_suffix(')').unwrap_or(inner).to_owned(),
        None => debug,
    }
}

/// Body size, class, property flags and the properties that are present.
fn header_line(header: &ContentHeader) -> String {
    let p = &header.properties;
    let mut line = format!(
        "body-size {}, class {}, flags {:#06x}",
        header.body_size,
        header.class_id,
        p.flags()
    );
    if header.weight != 0 {
        let _ = write!(line, ", weight {}", header.weight);
    }
    let props = present_properties(p);
    if !props.is_empty() {
        let _ = write!(line, " {{ {} }}", props.join(", "));
    }
    line
}

/// `name: value` (value in Debug form) for each property that is set.
fn present_properties(p: &BasicProperties) -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! each {
        ($($field:ident),* $(,)?) => {
            $(if let Some(v) = &p.$field {
                out.push(format!("{}: {v:?}", stringify!($field)));
            })*
        };
    }
    each!(
        content_type,
        content_encoding,
        headers,
        delivery_mode,
        priority,
        correlation_id,
        reply_to,
        expiration,
        message_id,
        timestamp,
        kind,
        user_id,
        app_id,
        cluster_id,
    );
    out
}
