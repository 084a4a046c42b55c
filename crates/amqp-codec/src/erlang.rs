//! How RabbitMQ sees field values: the Erlang terms its parser decodes them to, the two
//! equalities it applies (`==` for matching, `=:=` for identity), and how its error texts print
//! them. One owner for rules the headers exchange, the equivalence checks and the error texts
//! all use.

use crate::{ErlangBinary, FieldArray, FieldTable, FieldValue};

/// The term RabbitMQ decodes a top-level field value to, for `==`.
enum Term<'a> {
    Int(i128),
    Float(f64),
    Binary(&'a [u8]),
    Atom(&'static str),
    Decimal(u8, u32),
    Table(&'a FieldTable),
    Array(&'a FieldArray),
}

fn term(v: &FieldValue) -> Term<'_> {
    match v {
        FieldValue::Bool(b) => Term::Atom(if *b { "true" } else { "false" }),
        FieldValue::I8(x) => Term::Int((*x).into()),
        FieldValue::U8(x) => Term::Int((*x).into()),
        FieldValue::I16(x) => Term::Int((*x).into()),
        FieldValue::U16(x) => Term::Int((*x).into()),
        FieldValue::I32(x) => Term::Int((*x).into()),
        FieldValue::U32(x) => Term::Int((*x).into()),
        FieldValue::I64(x) => Term::Int((*x).into()),
        FieldValue::Timestamp(x) => Term::Int((*x).into()),
        FieldValue::F32(x) => Term::Float((*x).into()),
        FieldValue::F64(x) => Term::Float(*x),
        FieldValue::Decimal(d) => Term::Decimal(d.scale, d.value),
        FieldValue::LongStr(s) => Term::Binary(s.as_bytes()),
        FieldValue::Bytes(b) => Term::Binary(b),
        FieldValue::Table(t) => Term::Table(t),
        FieldValue::Array(a) => Term::Array(a),
        FieldValue::Void => Term::Atom("undefined"),
    }
}

/// Erlang's `==` on the decoded terms (RabbitMQ's header matching and argument equivalence).
pub fn loose_eq(a: &FieldValue, b: &FieldValue) -> bool {
    match (term(a), term(b)) {
        (Term::Int(x), Term::Int(y)) => x == y,
        (Term::Float(x), Term::Float(y)) => x == y,
        (Term::Int(i), Term::Float(f)) | (Term::Float(f), Term::Int(i)) => int_eq_float(i, f),
        (Term::Binary(x), Term::Binary(y)) => x == y,
        (Term::Atom(x), Term::Atom(y)) => x == y,
        (Term::Decimal(s1, v1), Term::Decimal(s2, v2)) => s1 == s2 && v1 == v2,
        (Term::Table(x), Term::Table(y)) => {
            x.len() == y.len()
                && x.iter().zip(y.iter()).all(|((k1, v1), (k2, v2))| {
                    k1 == k2 && v1.type_code() == v2.type_code() && loose_eq(v1, v2)
                })
        }
        (Term::Array(x), Term::Array(y)) => {
            x.0.len() == y.0.len()
                && x.0
                    .iter()
                    .zip(y.0.iter())
                    .all(|(v1, v2)| v1.type_code() == v2.type_code() && loose_eq(v1, v2))
        }
        // Both decode to the empty list.
        (Term::Table(t), Term::Array(a)) | (Term::Array(a), Term::Table(t)) => {
            t.is_empty() && a.0.is_empty()
        }
        _ => false,
    }
}

fn int_eq_float(i: i128, f: f64) -> bool {
    // Exact: the float must be integral and within range, then compare as integers.
    f.is_finite() && f.fract() == 0.0 && f.abs() < 1.7e38 && (f as i128) == i
}

/// RabbitMQ's name for a field value's type, as its error texts print it.
pub fn type_name(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::Bool(_) => "bool",
        FieldValue::I8(_) => "byte",
        FieldValue::U8(_) => "unsignedbyte",
        FieldValue::I16(_) => "short",
        FieldValue::U16(_) => "unsignedshort",
        FieldValue::I32(_) => "signedint",
        FieldValue::U32(_) => "unsignedint",
        FieldValue::I64(_) => "long",
        FieldValue::F32(_) => "float",
        FieldValue::F64(_) => "double",
        FieldValue::Decimal(_) => "decimal",
        FieldValue::LongStr(_) => "longstr",
        FieldValue::Bytes(_) => "binary",
        FieldValue::Array(_) => "array",
        FieldValue::Timestamp(_) => "timestamp",
        FieldValue::Table(_) => "table",
        FieldValue::Void => "void",
    }
}

/// A value printed roughly as Erlang's `~tp` prints the decoded term (scalars exactly).
pub fn erlang_value(v: &FieldValue) -> String {
    match v {
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::I8(x) => x.to_string(),
        FieldValue::U8(x) => x.to_string(),
        FieldValue::I16(x) => x.to_string(),
        FieldValue::U16(x) => x.to_string(),
        FieldValue::I32(x) => x.to_string(),
        FieldValue::U32(x) => x.to_string(),
        FieldValue::I64(x) => x.to_string(),
        FieldValue::Timestamp(x) => x.to_string(),
        FieldValue::F32(x) => format!("{:?}", f64::from(*x)),
        FieldValue::F64(x) => format!("{x:?}"),
        FieldValue::Decimal(d) => format!("{{{},{}}}", d.scale, d.value),
        FieldValue::LongStr(s) => ErlangBinary::new(s.as_bytes()).to_string(),
        FieldValue::Bytes(b) => ErlangBinary::new(b).to_string(),
        FieldValue::Void => "undefined".to_owned(),
        FieldValue::Table(_) | FieldValue::Array(_) => "[...]".to_owned(),
    }
}

/// Exact equality of argument tables, as Erlang's `=:=` on the decoded terms: same keys in the
/// same order, same types, same values (floats by bits, so that a NaN binding can be removed).
pub fn args_identical(a: &FieldTable, b: &FieldTable) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((k1, v1), (k2, v2))| k1 == k2 && values_identical(v1, v2))
}

fn values_identical(a: &FieldValue, b: &FieldValue) -> bool {
    match (a, b) {
        (FieldValue::F32(x), FieldValue::F32(y)) => x.to_bits() == y.to_bits(),
        (FieldValue::F64(x), FieldValue::F64(y)) => x.to_bits() == y.to_bits(),
        (FieldValue::Table(x), FieldValue::Table(y)) => args_identical(x, y),
        (FieldValue::Array(x), FieldValue::Array(y)) => {
            x.0.len() == y.0.len() && x.0.iter().zip(&y.0).all(|(p, q)| values_identical(p, q))
        }
        _ => a == b,
    }
}

/// A value as RabbitMQ's `~ts`/`~tp` prints it inside quotes: strings raw, others as terms.
pub fn plain_value(v: &FieldValue) -> String {
    match value_octets(v) {
        Some(o) => String::from_utf8_lossy(o).into_owned(),
        None => erlang_value(v),
    }
}

/// The octets of a string value (long string or byte array).
pub fn value_octets(v: &FieldValue) -> Option<&[u8]> {
    match v {
        FieldValue::LongStr(s) => Some(s.as_bytes()),
        FieldValue::Bytes(b) => Some(b),
        _ => None,
    }
}
