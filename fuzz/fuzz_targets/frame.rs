//! `frame::decode_frame` over arbitrary octets, decoding frame after frame until it needs more
//! input or fails. The first octet picks `frame_max`; the rest is the stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use warren_amqp_codec::frame::{self, FRAME_OVERHEAD};
use warren_amqp_codec::{Frame, ReplyCode};

const FRAME_MAXES: [u32; 6] = [0, 8, 4096, 8192, 131_072, u32::MAX];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let frame_max = FRAME_MAXES[usize::from(pick) % FRAME_MAXES.len()];
    let mut buf = BytesMut::from(stream);
    loop {
        let before = buf.len();
        match frame::decode_frame(&mut buf, frame_max) {
            Ok(Some(f)) => {
                let used = before - buf.len();
                assert!(used >= FRAME_OVERHEAD);
                // `frame_max` limits the payload; framing comes on top.
                assert!(frame_max == 0 || used <= frame_max as usize + FRAME_OVERHEAD);
                if let Frame::Body { payload, .. } = &f {
                    assert_eq!(payload.len() + FRAME_OVERHEAD, used);
                }
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) consumed input");
                break;
            }
            Err(e) => {
                let code = e.reply_code();
                assert!(code.is_hard_error());
                assert!(matches!(
                    code,
                    ReplyCode::FrameError
                        | ReplyCode::SyntaxError
                        | ReplyCode::CommandInvalid
                        | ReplyCode::UnexpectedFrame
                ));
                break;
            }
        }
    }
    // The payload decoders straight on the octets, framing skipped.
    if let Some((&kind, payload)) = stream.split_first() {
        let _ = Frame::parse(kind, 1, bytes::Bytes::copy_from_slice(payload));
    }
});
