//! Field tables and arrays with RabbitMQ's type codes.
//!
//! RabbitMQ follows its published errata to the 0-9-1 specification, not the specification's
//! own table: `s` is a signed 16-bit integer (not a short string), `l` a signed 64-bit integer,
//! and `x` a byte array. The codes, as RabbitMQ's parser accepts them:
//!
//! | code | value | Rust |
//! |---|---|---|
//! | `t` | boolean | [`FieldValue::Bool`] |
//! | `b` / `B` | signed / unsigned 8-bit | [`FieldValue::I8`] / [`FieldValue::U8`] |
//! | `s` / `u` | signed / unsigned 16-bit | [`FieldValue::I16`] / [`FieldValue::U16`] |
//! | `I` / `i` | signed / unsigned 32-bit | [`FieldValue::I32`] / [`FieldValue::U32`] |
//! | `l` (and `L` on input) | signed 64-bit | [`FieldValue::I64`] |
//! | `f` / `d` | IEEE 754 single / double | [`FieldValue::F32`] / [`FieldValue::F64`] |
//! | `D` | decimal: scale octet, 32-bit value | [`FieldValue::Decimal`] |
//! | `S` | long string | [`FieldValue::LongStr`] |
//! | `x` | byte array (long length) | [`FieldValue::Bytes`] |
//! | `A` | array (long byte length, then values) | [`FieldValue::Array`] |
//! | `T` | timestamp, 64-bit seconds | [`FieldValue::Timestamp`] |
//! | `F` | nested table | [`FieldValue::Table`] |
//! | `V` | void (no value) | [`FieldValue::Void`] |
//!
//! Tables keep their entries in the order received, so a table re-encodes to the same octets.

use crate::CodecError;
use crate::wire::{
    Reader, put_long, put_longlong, put_longstr, put_octet, put_short, put_shortstr,
};
use crate::{LongStr, ShortStr};
use bytes::{Bytes, BytesMut};

/// How deeply tables and arrays may nest. Deeper input is refused rather than risking the
/// decoder's stack (502 SYNTAX_ERROR for a table on its own, RabbitMQ's 501 "cannot decode"
/// inside method arguments). RabbitMQ itself has no fixed limit; no client nests this deep.
pub const MAX_NESTING: usize = 64;

/// An AMQP decimal: `value / 10^scale`, as the octets say (RabbitMQ reads the value unsigned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Decimal {
    /// Number of decimal digits after the point.
    pub scale: u8,
    /// The unscaled value.
    pub value: u32,
}

/// One value in a field table or array.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `t`
    Bool(bool),
    /// `b`
    I8(i8),
    /// `B`
    U8(u8),
    /// `s`
    I16(i16),
    /// `u`
    U16(u16),
    /// `I`
    I32(i32),
    /// `i`
    U32(u32),
    /// `l`
    I64(i64),
    /// `f`
    F32(f32),
    /// `d`
    F64(f64),
    /// `D`
    Decimal(Decimal),
    /// `S`
    LongStr(LongStr),
    /// `x`
    Bytes(Bytes),
    /// `A`
    Array(FieldArray),
    /// `T`
    Timestamp(u64),
    /// `F`
    Table(FieldTable),
    /// `V`
    Void,
}

impl FieldValue {
    /// The type code octet.
    pub fn type_code(&self) -> u8 {
        match self {
            FieldValue::Bool(_) => b't',
            FieldValue::I8(_) => b'b',
            FieldValue::U8(_) => b'B',
            FieldValue::I16(_) => b's',
            FieldValue::U16(_) => b'u',
            FieldValue::I32(_) => b'I',
            FieldValue::U32(_) => b'i',
            FieldValue::I64(_) => b'l',
            FieldValue::F32(_) => b'f',
            FieldValue::F64(_) => b'd',
            FieldValue::Decimal(_) => b'D',
            FieldValue::LongStr(_) => b'S',
            FieldValue::Bytes(_) => b'x',
            FieldValue::Array(_) => b'A',
            FieldValue::Timestamp(_) => b'T',
            FieldValue::Table(_) => b'F',
            FieldValue::Void => b'V',
        }
    }

    /// The value as a string, for `S` values that are UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::LongStr(s) => s.as_str(),
            _ => None,
        }
    }

    /// The value as a signed integer, for every integer type that fits.
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            FieldValue::I8(v) => v.into(),
            FieldValue::U8(v) => v.into(),
            FieldValue::I16(v) => v.into(),
            FieldValue::U16(v) => v.into(),
            FieldValue::I32(v) => v.into(),
            FieldValue::U32(v) => v.into(),
            FieldValue::I64(v) => v,
            _ => return None,
        })
    }

    /// The value as a boolean, for `t` values.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            FieldValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The nested table, for `F` values.
    pub fn as_table(&self) -> Option<&FieldTable> {
        match self {
            FieldValue::Table(t) => Some(t),
            _ => None,
        }
    }
}

impl From<&'static str> for FieldValue {
    fn from(s: &'static str) -> Self {
        FieldValue::LongStr(s.into())
    }
}
impl From<String> for FieldValue {
    fn from(s: String) -> Self {
        FieldValue::LongStr(s.into())
    }
}
impl From<bool> for FieldValue {
    fn from(b: bool) -> Self {
        FieldValue::Bool(b)
    }
}
impl From<i32> for FieldValue {
    fn from(v: i32) -> Self {
        FieldValue::I32(v)
    }
}
impl From<i64> for FieldValue {
    fn from(v: i64) -> Self {
        FieldValue::I64(v)
    }
}
impl From<FieldTable> for FieldValue {
    fn from(t: FieldTable) -> Self {
        FieldValue::Table(t)
    }
}
impl From<FieldArray> for FieldValue {
    fn from(a: FieldArray) -> Self {
        FieldValue::Array(a)
    }
}

/// A field table: named values in the order they were inserted or received.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldTable(Vec<(ShortStr, FieldValue)>);

impl FieldTable {
    /// An empty table (no allocation).
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`, replacing the first existing entry of that name in place, or
    /// appending.
    pub fn insert(&mut self, key: impl Into<ShortStr>, value: impl Into<FieldValue>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Appends an entry without looking for an existing one (duplicates are legal on the wire).
    pub fn push(&mut self, key: ShortStr, value: FieldValue) {
        self.0.push((key, value));
    }

    /// Removes every entry named `key`, returning the first value removed.
    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        let pos = self.0.iter().position(|(k, _)| k == key)?;
        let (_, v) = self.0.remove(pos);
        self.0.retain(|(k, _)| k != key);
        Some(v)
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&ShortStr, &FieldValue)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Encoded size in octets, without the 4-octet length prefix.
    pub fn encoded_len(&self) -> usize {
        self.0.iter().map(|(k, v)| 1 + k.len() + value_len(v)).sum()
    }

    /// Decodes a table from its octets *without* the 4-octet length prefix (the form of an
    /// AMQPLAIN response).
    pub fn decode_entries(bytes: &Bytes) -> Result<FieldTable, CodecError> {
        let mut r = Reader::new(bytes);
        read_entries(&mut r, 0)
    }

    /// A deep copy in one allocation of its own, so that a long-lived table does not pin the
    /// read buffer it was decoded from.
    pub fn detached(&self) -> Self {
        if self.is_empty() {
            return Self::new();
        }
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode_entries(&mut buf);
        Self::decode_entries(&buf.freeze()).unwrap_or_else(|_| self.clone())
    }

    /// Encodes the entries without the 4-octet length prefix.
    pub fn encode_entries(&self, buf: &mut BytesMut) {
        for (k, v) in &self.0 {
            put_shortstr(buf, k);
            write_value(buf, v);
        }
    }
}

impl<K: Into<ShortStr>, V: Into<FieldValue>> FromIterator<(K, V)> for FieldTable {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// A field array (`A`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldArray(pub Vec<FieldValue>);

impl FieldArray {
    /// Encoded size in octets, without the 4-octet length prefix.
    pub fn encoded_len(&self) -> usize {
        self.0.iter().map(value_len).sum()
    }
}

fn value_len(v: &FieldValue) -> usize {
    1 + match v {
        FieldValue::Bool(_) | FieldValue::I8(_) | FieldValue::U8(_) => 1,
        FieldValue::I16(_) | FieldValue::U16(_) => 2,
        FieldValue::I32(_) | FieldValue::U32(_) | FieldValue::F32(_) => 4,
        FieldValue::I64(_) | FieldValue::F64(_) | FieldValue::Timestamp(_) => 8,
        FieldValue::Decimal(_) => 5,
        FieldValue::LongStr(s) => 4 + s.len(),
        FieldValue::Bytes(b) => 4 + b.len(),
        FieldValue::Array(a) => 4 + a.encoded_len(),
        FieldValue::Table(t) => 4 + t.encoded_len(),
        FieldValue::Void => 0,
    }
}

pub(crate) fn read_table(r: &mut Reader<'_>, depth: usize) -> Result<FieldTable, CodecError> {
    let len = r.long()? as usize;
    let body = r.slice(len, "field table")?;
    let mut inner = Reader::new(&body);
    read_entries(&mut inner, depth)
}

fn read_entries(r: &mut Reader<'_>, depth: usize) -> Result<FieldTable, CodecError> {
    let mut entries = Vec::new();
    while r.remaining() > 0 {
        let key = r.shortstr()?;
        let value = read_value(r, depth)?;
        entries.push((key, value));
    }
    Ok(FieldTable(entries))
}

fn read_value(r: &mut Reader<'_>, depth: usize) -> Result<FieldValue, CodecError> {
    let code = r.octet()?;
    Ok(match code {
        b't' => FieldValue::Bool(r.octet()? != 0),
        b'b' => FieldValue::I8(i8::from_be_bytes(r.bytes8("field value")?)),
        b'B' => FieldValue::U8(r.octet()?),
        b's' => FieldValue::I16(i16::from_be_bytes(r.bytes8("field value")?)),
        b'u' => FieldValue::U16(r.short()?),
        b'I' => FieldValue::I32(i32::from_be_bytes(r.bytes8("field value")?)),
        b'i' => FieldValue::U32(r.long()?),
        // RabbitMQ reads `L` as a signed 64-bit integer too, and writes it back as `l`.
        b'l' | b'L' => FieldValue::I64(i64::from_be_bytes(r.bytes8("field value")?)),
        b'f' => FieldValue::F32(f32::from_be_bytes(r.bytes8("field value")?)),
        b'd' => FieldValue::F64(f64::from_be_bytes(r.bytes8("field value")?)),
        b'D' => {
            let scale = r.octet()?;
            FieldValue::Decimal(Decimal {
                scale,
                value: r.long()?,
            })
        }
        b'S' => FieldValue::LongStr(r.longstr()?),
        b'x' => {
            let len = r.long()? as usize;
            FieldValue::Bytes(r.slice(len, "byte array")?)
        }
        b'T' => FieldValue::Timestamp(r.longlong()?),
        b'V' => FieldValue::Void,
        b'F' | b'A' => {
            let depth = depth + 1;
            if depth > MAX_NESTING {
                return Err(CodecError::NestingTooDeep(MAX_NESTING));
            }
            if code == b'F' {
                FieldValue::Table(read_table(r, depth)?)
            } else {
                let len = r.long()? as usize;
                let body = r.slice(len, "field array")?;
                let mut inner = Reader::new(&body);
                let mut values = Vec::new();
                while inner.remaining() > 0 {
                    values.push(read_value(&mut inner, depth)?);
                }
                FieldValue::Array(FieldArray(values))
            }
        }
        other => return Err(CodecError::UnknownFieldType(other)),
    })
}

/// Writes a 4-octet length placeholder, then `body`, then patches in the body's length: one
/// pass, however deeply tables nest.
fn with_length_prefix(buf: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let at = buf.len();
    put_long(buf, 0);
    body(buf);
    let len = (buf.len() - at - 4) as u32;
    if let Some(slot) = buf.get_mut(at..at + 4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

pub(crate) fn write_table(buf: &mut BytesMut, t: &FieldTable) {
    with_length_prefix(buf, |buf| t.encode_entries(buf));
}

fn write_value(buf: &mut BytesMut, v: &FieldValue) {
    put_octet(buf, v.type_code());
    match v {
        FieldValue::Bool(b) => put_octet(buf, u8::from(*b)),
        FieldValue::I8(x) => buf.extend_from_slice(&x.to_be_bytes()),
        FieldValue::U8(x) => put_octet(buf, *x),
        FieldValue::I16(x) => buf.extend_from_slice(&x.to_be_bytes()),
        FieldValue::U16(x) => put_short(buf, *x),
        FieldValue::I32(x) => buf.extend_from_slice(&x.to_be_bytes()),
        FieldValue::U32(x) => put_long(buf, *x),
        FieldValue::I64(x) => buf.extend_from_slice(&x.to_be_bytes()),
        FieldValue::F32(x) => buf.extend_from_slice(&x.to_be_bytes()),
        FieldValue::F64(x) => buf.extend_from_slice(&x.to_be_bytes()),
        FieldValue::Decimal(d) => {
            put_octet(buf, d.scale);
            put_long(buf, d.value);
        }
        FieldValue::LongStr(s) => put_longstr(buf, s),
        FieldValue::Bytes(b) => {
            put_long(buf, b.len() as u32);
            buf.extend_from_slice(b);
        }
        FieldValue::Array(a) => with_length_prefix(buf, |buf| {
            for v in &a.0 {
                write_value(buf, v);
            }
        }),
        FieldValue::Timestamp(t) => put_longlong(buf, *t),
        FieldValue::Table(t) => write_table(buf, t),
        FieldValue::Void => {}
    }
}
