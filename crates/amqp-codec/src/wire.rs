//! Primitive AMQP types on the wire: a bounds-checked reader over [`Bytes`] and writers into
//! [`BytesMut`]. All integers are big-endian (network order).

use crate::{CodecError, FieldTable, LongStr, ShortStr};
use bytes::{Bytes, BytesMut};

/// Reads AMQP primitives from a shared buffer; strings and byte arrays are zero-copy slices.
///
/// The reader keeps the unread octets as a plain slice, so reading a fixed-size primitive is one
/// length check and one load; only strings, tables and byte arrays touch the shared [`Bytes`]
/// (to take a reference-counted slice of it). Every method is `#[inline]`: they are called from
/// generated code in other codegen units, and each is only a few instructions.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline]
    pub(crate) fn new(buf: &'a Bytes) -> Self {
        Self { buf, rest: buf }
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Fails unless every octet was consumed.
    #[inline]
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), CodecError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(CodecError::TrailingBytes { what, count }),
        }
    }

    #[inline]
    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CodecError> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| CodecError::Truncated { what })?;
        self.rest = tail;
        Ok(*head)
    }

    #[inline]
    pub(crate) fn slice(&mut self, len: usize, what: &'static str) -> Result<Bytes, CodecError> {
        let (_, tail) = self
            .rest
            .split_at_checked(len)
            .ok_or_else(|| CodecError::Truncated { what })?;
        let start = self.buf.len() - self.rest.len();
        self.rest = tail;
        Ok(self.buf.slice(start..start + len))
    }

    #[inline]
    pub(crate) fn octet(&mut self) -> Result<u8, CodecError> {
        let [b] = self.take::<1>("octet")?;
        Ok(b)
    }

    #[inline]
    pub(crate) fn short(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.take("short")?))
    }

    #[inline]
    pub(crate) fn long(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.take("long")?))
    }

    #[inline]
    pub(crate) fn longlong(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.take("longlong")?))
    }

    #[inline]
    pub(crate) fn timestamp(&mut self) -> Result<u64, CodecError> {
        self.longlong()
    }

    #[inline]
    pub(crate) fn bytes8<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], CodecError> {
        self.take(what)
    }

    #[inline]
    pub(crate) fn shortstr(&mut self) -> Result<ShortStr, CodecError> {
        let len = usize::from(self.octet()?);
        Ok(ShortStr::from_unchecked(self.slice(len, "shortstr")?))
    }

    /// A short string that must be UTF-8 (RabbitMQ's check on methods without content).
    #[inline]
    pub(crate) fn shortstr_utf8(&mut self) -> Result<ShortStr, CodecError> {
        let s = self.shortstr()?;
        match s.as_str() {
            Some(_) => Ok(s),
            None => Err(CodecError::MalformedUtf8),
        }
    }

    #[inline]
    pub(crate) fn longstr(&mut self) -> Result<LongStr, CodecError> {
        let len = self.long()? as usize;
        Ok(LongStr::from_unchecked(self.slice(len, "longstr")?))
    }

    #[inline]
    pub(crate) fn table(&mut self) -> Result<FieldTable, CodecError> {
        crate::table::read_table(self, 0)
    }
}

// The writers append with `BytesMut::extend_from_slice`, which inlines to a capacity check and
// a copy. `BufMut::put_u16` and friends go through `BytesMut`'s `put_slice`, which is not
// `#[inline]` and so costs a call (and a `memcpy` call) per integer across the crate boundary.

#[inline]
pub(crate) fn put_octet(buf: &mut BytesMut, v: u8) {
    buf.extend_from_slice(&[v]);
}

#[inline]
pub(crate) fn put_short(buf: &mut BytesMut, v: u16) {
    buf.extend_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put_long(buf: &mut BytesMut, v: u32) {
    buf.extend_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put_longlong(buf: &mut BytesMut, v: u64) {
    buf.extend_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put_shortstr(buf: &mut BytesMut, s: &ShortStr) {
    // ShortStr guarantees len <= 255.
    buf.reserve(1 + s.len());
    put_octet(buf, s.len() as u8);
    buf.extend_from_slice(s.as_bytes());
}

#[inline]
pub(crate) fn put_longstr(buf: &mut BytesMut, s: &LongStr) {
    buf.reserve(4 + s.len());
    put_long(buf, s.len() as u32);
    buf.extend_from_slice(s.as_bytes());
}

#[inline]
pub(crate) fn put_table(buf: &mut BytesMut, t: &FieldTable) {
    crate::table::write_table(buf, t);
}
