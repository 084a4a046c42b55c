//! The built-in exchange types.

mod consistent_hash;
mod direct;
mod fanout;
mod headers;
pub mod topic;

pub use consistent_hash::ConsistentHash;
pub use direct::Direct;
pub use fanout::Fanout;
pub use headers::{Headers, MatchKind, headers_match};
pub use topic::Topic;
