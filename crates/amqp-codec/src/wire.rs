//! Primitive AMQP types on the wire: a bounds-checked reader over [`Bytes`] and writers into
//! [`BytesMut`]. All integers are big-endian (network order).

use crate::{CodecError, FieldTable, LongStr, ShortStr};
use bytes::{BufMut, Bytes, BytesMut};

/// Reads AMQP primitives from a shared buffer; strings and byte arrays are zero-copy slices.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails unless every octet was consumed.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), CodecError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(CodecError::TrailingBytes { what, count }),
        }
    }

    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CodecError> {
        let end = self.pos + N;
        let arr = self
            .buf
            .get(self.pos..end)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or(CodecError::Truncated { what })?;
        self.pos = end;
        Ok(arr)
    }

    pub(crate) fn slice(&mut self, len: usize, what: &'static str) -> Result<Bytes, CodecError> {
        if len > self.remaining() {
            return Err(CodecError::Truncated { what });
        }
        let s = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(s)
    }

    pub(crate) fn octet(&mut self) -> Result<u8, CodecError> {
        Ok(self.take::<1>("octet")?[0])
    }

    pub(crate) fn short(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.take("short")?))
    }

    pub(crate) fn long(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.take("long")?))
    }

    pub(crate) fn longlong(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.take("longlong")?))
    }

    pub(crate) fn timestamp(&mut self) -> Result<u64, CodecError> {
        self.longlong()
    }

    pub(crate) fn bytes8<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], CodecError> {
        self.take(what)
    }

    pub(crate) fn shortstr(&mut self) -> Result<ShortStr, CodecError> {
        let len = usize::from(self.octet()?);
        Ok(ShortStr::from_unchecked(self.slice(len, "shortstr")?))
    }

    pub(crate) fn longstr(&mut self) -> Result<LongStr, CodecError> {
        let len = self.long()? as usize;
        Ok(LongStr::from_unchecked(self.slice(len, "longstr")?))
    }

    pub(crate) fn table(&mut self) -> Result<FieldTable, CodecError> {
        crate::table::read_table(self, 0)
    }
}

pub(crate) fn put_shortstr(buf: &mut BytesMut, s: &ShortStr) {
    // ShortStr guarantees len <= 255.
    buf.put_u8(s.len() as u8);
    buf.put_slice(s.as_bytes());
}

pub(crate) fn put_longstr(buf: &mut BytesMut, s: &LongStr) {
    buf.put_u32(s.len() as u32);
    buf.put_slice(s.as_bytes());
}

pub(crate) fn put_table(buf: &mut BytesMut, t: &FieldTable) {
    crate::table::write_table(buf, t);
}
