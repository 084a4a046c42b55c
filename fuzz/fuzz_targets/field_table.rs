//! `FieldTable::decode_entries` (a table without its length prefix, as in an AMQPLAIN
//! response) over arbitrary octets. A table that decodes must account for every octet and
//! re-encode to octets that decode to the same encoding again.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use warren_amqp_codec::{FieldTable, ReplyCode};

fuzz_target!(|data: &[u8]| {
    match FieldTable::decode_entries(&Bytes::copy_from_slice(data)) {
        Ok(table) => {
            assert_eq!(table.encoded_len(), data.len());
            let mut once = BytesMut::new();
            table.encode_entries(&mut once);
            assert_eq!(once.len(), data.len());
            let again = FieldTable::decode_entries(&once.clone().freeze()).expect("re-decode");
            let mut twice = BytesMut::new();
            again.encode_entries(&mut twice);
            assert_eq!(once, twice);
        }
        Err(e) => assert_eq!(e.reply_code(), ReplyCode::SyntaxError, "{e}"),
    }
});
