//! AMQP short and long strings, kept as the octets received.
//!
//! AMQP strings are octet sequences; RabbitMQ treats most of them as UTF-8 but the wire does
//! not promise it. Both types wrap [`Bytes`], so decoding a string out of a frame is a
//! reference-count increment, not a copy.

use bytes::Bytes;
use std::fmt;

macro_rules! string_type {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Bytes);

        impl $name {
            /// The longest string this type holds, in octets.
            pub const MAX_LEN: usize = $max;

            /// An empty string.
            pub const fn new() -> Self {
                Self(Bytes::new())
            }

            /// Wraps a static string (no allocation). Panics if it is longer than
            /// [`Self::MAX_LEN`]; meant for constants in code, not for input.
            pub const fn from_static(s: &'static str) -> Self {
                assert!(s.len() <= $max, "string too long");
                Self(Bytes::from_static(s.as_bytes()))
            }

            /// Wraps octets, or gives them back if they are longer than [`Self::MAX_LEN`].
            pub fn from_bytes(b: impl Into<Bytes>) -> Result<Self, Bytes> {
                let b = b.into();
                if b.len() <= $max { Ok(Self(b)) } else { Err(b) }
            }

            /// The octets.
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }

            /// The underlying shared buffer.
            pub fn as_shared(&self) -> &Bytes {
                &self.0
            }

            /// The octets as UTF-8, if they are.
            pub fn as_str(&self) -> Option<&str> {
                std::str::from_utf8(&self.0).ok()
            }

            /// Length in octets.
            pub fn len(&self) -> usize {
                self.0.len()
            }

            /// Whether the string is empty.
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }

            /// A copy in an allocation of its own, so that a long-lived string does not pin
            /// the (larger) read buffer it was decoded from.
            pub fn detached(&self) -> Self {
                Self(Bytes::copy_from_slice(&self.0))
            }

            pub(crate) fn from_unchecked(b: Bytes) -> Self {
                Self(b)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&String::from_utf8_lossy(&self.0), f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&String::from_utf8_lossy(&self.0))
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other.as_bytes()
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == other.as_bytes()
            }
        }

        /// Lets maps keyed by this type be searched with plain octets; hashes agree because
        /// the octets are all that is hashed.
        impl std::borrow::Borrow<[u8]> for $name {
            fn borrow(&self) -> &[u8] {
                &self.0
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl From<$name> for Bytes {
            fn from(s: $name) -> Bytes {
                s.0
            }
        }
    };
}

string_type!(
    /// An AMQP `shortstr`: at most 255 octets.
    ShortStr,
    255
);
string_type!(
    /// An AMQP `longstr`: at most `u32::MAX` octets.
    LongStr,
    u32::MAX as usize
);

impl From<&'static str> for ShortStr {
    /// Panics if longer than 255 octets; for literals in code.
    fn from(s: &'static str) -> Self {
        Self::from_static(s)
    }
}

impl From<String> for ShortStr {
    /// Cuts the string to 255 octets (on a character boundary) if it is longer.
    fn from(mut s: String) -> Self {
        if s.len() > Self::MAX_LEN {
            let mut end = Self::MAX_LEN;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        Self(Bytes::from(s))
    }
}

impl From<&'static str> for LongStr {
    fn from(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }
}

impl From<String> for LongStr {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<Vec<u8>> for LongStr {
    fn from(v: Vec<u8>) -> Self {
        Self(Bytes::from(v))
    }
}

impl From<Bytes> for LongStr {
    fn from(b: Bytes) -> Self {
        Self(b)
    }
}
