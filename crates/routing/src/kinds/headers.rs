//! `headers`: a message goes to the bindings whose arguments match its headers; routing keys
//! are ignored.
//!
//! The rules are RabbitMQ's, including its merge over key-sorted lists:
//! - `x-match` is `all` (the default), `any`, `all-with-x` or `any-with-x`;
//! - binding arguments whose key starts with `x-` take no part in matching, except in the
//!   `-with-x` forms (where `x-match` itself still does not);
//! - a binding argument of type void matches on the header's presence alone;
//! - other values compare as Erlang's `==` compares the terms RabbitMQ decodes them to: any
//!   two integers (and timestamps) by value, an integer equal to a float of the same value,
//!   long strings equal to byte arrays with the same octets, nested tables and arrays
//!   element by element *with* their types.
//! - `all` with no arguments left to match matches every message; `any` matches none.

use crate::hash::SeededState;
use crate::{BindingRef, Destination, ExchangeType, RouteMessage, Router, RoutingError};
use std::cmp::Ordering;
use warren_amqp_codec::erlang::{erlang_value, loose_eq, type_name};
use warren_amqp_codec::{ErlangBinary, FieldTable, FieldValue, ShortStr};

/// The `headers` exchange type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Headers;

impl ExchangeType for Headers {
    fn name(&self) -> &str {
        "headers"
    }

    fn validate_binding(&self, _key: &[u8], arguments: &FieldTable) -> Result<(), RoutingError> {
        match arguments.get("x-match") {
            None => Ok(()),
            Some(FieldValue::LongStr(s)) => match MatchKind::parse(s.as_bytes()) {
                Some(_) => Ok(()),
                None => Err(RoutingError::InvalidBinding(format!(
                    "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x",
                    ErlangBinary::new(s.as_bytes())
                ))),
            },
            Some(other) => Err(RoutingError::InvalidBinding(format!(
                "Invalid x-match field type {} (value {}); expected longstr",
                type_name(other),
                erlang_value(other)
            ))),
        }
    }

    fn router(&self, _arguments: &FieldTable, _hasher: SeededState) -> Box<dyn Router> {
        Box::new(HeadersRouter {
            bindings: Vec::new(),
        })
    }
}

/// How a headers binding combines its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// Every argument must match; `x-` arguments are ignored.
    All,
    /// One argument must match; `x-` arguments are ignored.
    Any,
    /// Every argument, `x-` ones included, must match.
    AllWithX,
    /// One argument, `x-` ones included, must match.
    AnyWithX,
}

impl MatchKind {
    /// The kind named by an `x-match` value.
    pub fn parse(value: &[u8]) -> Option<Self> {
        match value {
            b"all" => Some(Self::All),
            b"any" => Some(Self::Any),
            b"all-with-x" => Some(Self::AllWithX),
            b"any-with-x" => Some(Self::AnyWithX),
            _ => None,
        }
    }

    /// The kind a binding's arguments ask for (`all` when absent or unrecognised, as RabbitMQ
    /// treats bindings made before it validated the value).
    pub fn of(arguments: &FieldTable) -> Self {
        match arguments.get("x-match") {
            Some(FieldValue::LongStr(s)) => Self::parse(s.as_bytes()).unwrap_or(Self::All),
            _ => Self::All,
        }
    }

    fn is_all(self) -> bool {
        matches!(self, Self::All | Self::AllWithX)
    }

    /// Whether a binding argument named `key` takes part in matching.
    fn considers(self, key: &[u8]) -> bool {
        if key == b"x-match" {
            return false;
        }
        match self {
            Self::All | Self::Any => !key.starts_with(b"x-"),
            Self::AllWithX | Self::AnyWithX => true,
        }
    }
}

/// Whether a binding with `arguments` matches a message with `headers`, by RabbitMQ's rules.
/// `arguments` need not be sorted.
pub fn headers_match(arguments: &FieldTable, headers: Option<&FieldTable>) -> bool {
    Pattern::new(arguments).matches(&sorted_headers(headers))
}

/// A message's headers stably sorted by key, the form the merge walks.
fn sorted_headers(headers: Option<&FieldTable>) -> Vec<(&[u8], &FieldValue)> {
    let mut data: Vec<(&[u8], &FieldValue)> = headers
        .map(|h| h.iter().map(|(k, v)| (k.as_bytes(), v)).collect())
        .unwrap_or_default();
    data.sort_by(|a, b| a.0.cmp(b.0));
    data
}

/// A binding's arguments prepared for matching: the kind, and the arguments that take part,
/// stably sorted by key.
#[derive(Debug, Clone)]
struct Pattern {
    kind: MatchKind,
    entries: Vec<(ShortStr, FieldValue)>,
}

impl Pattern {
    fn new(arguments: &FieldTable) -> Self {
        let kind = MatchKind::of(arguments);
        let mut entries: Vec<(ShortStr, FieldValue)> = arguments
            .iter()
            .filter(|(k, _)| kind.considers(k.as_bytes()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Self { kind, entries }
    }

    /// RabbitMQ's merge of two key-sorted lists. With duplicate keys the n-th binding entry
    /// meets the n-th header of that name, as in RabbitMQ.
    fn matches(&self, data: &[(&[u8], &FieldValue)]) -> bool {
        let all_kind = self.kind.is_all();
        let (mut all, mut any) = (true, false);
        let mut d = 0;
        for (pk, pv) in &self.entries {
            if all_kind && !all {
                return false;
            }
            if !all_kind && any {
                return true;
            }
            loop {
                let Some((dk, dv)) = data.get(d) else {
                    // Headers exhausted while arguments remain.
                    all = false;
                    break;
                };
                match pk.as_bytes().cmp(dk) {
                    Ordering::Greater => d += 1,
                    Ordering::Less => {
                        all = false;
                        break;
                    }
                    Ordering::Equal => {
                        if matches!(pv, FieldValue::Void) || loose_eq(pv, dv) {
                            any = true;
                        } else {
                            all = false;
                        }
                        d += 1;
                        break;
                    }
                }
            }
        }
        if all_kind { all } else { any }
    }
}

#[derive(Debug)]
struct HeadersRouter {
    bindings: Vec<(Destination, FieldTable, Pattern)>,
}

impl Router for HeadersRouter {
    fn bind(&mut self, b: BindingRef<'_>) {
        self.bindings.push((
            b.destination,
            b.arguments.clone(),
            Pattern::new(b.arguments),
        ));
    }

    fn unbind(&mut self, b: BindingRef<'_>) {
        if let Some(pos) = self.bindings.iter().position(|(d, a, _)| {
            *d == b.destination && warren_amqp_codec::erlang::args_identical(a, b.arguments)
        }) {
            self.bindings.swap_remove(pos);
        }
    }

    fn route(&self, m: &RouteMessage<'_>, out: &mut Vec<Destination>) {
        if self.bindings.is_empty() {
            return;
        }
        let data = sorted_headers(m.properties.headers.as_ref());
        for (dest, _, pattern) in &self.bindings {
            if pattern.matches(&data) {
                out.push(*dest);
            }
        }
    }

    fn len(&self) -> usize {
        self.bindings.len()
    }
}
