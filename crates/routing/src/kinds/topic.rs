//! `topic`: keys are words separated by `.`; in a binding key `*` matches exactly one word and
//! `#` matches zero or more. Empty words are words (`a..b` has three), and the empty key has no
//! words at all, so `#` matches it and `*` does not — RabbitMQ's rules.
//!
//! Bindings live in a trie whose edges sit in one hash table keyed by (parent node, word), the
//! layout RabbitMQ's own topic trie uses. Routing runs the trie as an NFA: the set of live nodes
//! advances one word at a time, so the cost depends on the key's length and the number of
//! partial matches, never on the number of bindings, and patterns full of `#` cannot make it
//! explode (each node is live at most once per word).

use crate::hash::{Map, SeededState};
use crate::{BindingRef, Destination, ExchangeType, RouteMessage, Router};
use std::collections::BTreeMap;
use warren_amqp_codec::FieldTable;

/// The `topic` exchange type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Topic;

impl ExchangeType for Topic {
    fn name(&self) -> &str {
        "topic"
    }

    fn router(&self, _arguments: &FieldTable, hasher: SeededState) -> Box<dyn Router> {
        Box::new(TopicTrie::new(hasher))
    }
}

/// Splits a topic key into words as RabbitMQ does: the empty key has no words, otherwise
/// every `.` separates two (possibly empty) words.
pub fn split_words(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    let empty = key.is_empty();
    key.split(|b| *b == b'.').filter(move |_| !empty)
}

/// The reference rule, word by word: whether binding `pattern` matches routing `key`. Simple
/// and exponential in the worst case; the trie must agree with it.
pub fn topic_matches(pattern: &[u8], key: &[u8]) -> bool {
    fn go(p: &[&[u8]], k: &[&[u8]]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&b"#", rest)) => (0..=k.len()).any(|i| go(rest, k.get(i..).unwrap_or(&[]))),
            Some((&b"*", rest)) => !k.is_empty() && go(rest, k.get(1..).unwrap_or(&[])),
            Some((w, rest)) => k.first() == Some(w) && go(rest, k.get(1..).unwrap_or(&[])),
        }
    }
    let p: Vec<&[u8]> = split_words(pattern).collect();
    let k: Vec<&[u8]> = split_words(key).collect();
    go(&p, &k)
}

const NONE: u32 = u32::MAX;

fn has_long_word(pattern: &[u8]) -> bool {
    split_words(pattern).any(|w| w.len() > 255)
}
/// A key is at most 255 octets, so a word is too; edge keys are 4 octets of parent id first.
const EDGE_KEY_MAX: usize = 4 + 255;

#[derive(Debug, Clone)]
struct Node {
    /// Child reached by `*`, or NONE.
    star: u32,
    /// Child reached by `#`, or NONE.
    hash: u32,
    /// Number of children reached by literal words (they live in `edges`).
    words: u32,
    /// Whether this node was reached by a `#` edge: it may consume further words itself.
    is_hash: bool,
    /// Destinations of the bindings whose pattern ends here, once per binding.
    dests: Vec<Destination>,
}

impl Node {
    fn new(is_hash: bool) -> Self {
        Self {
            star: NONE,
            hash: NONE,
            words: 0,
            is_hash,
            dests: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.star == NONE && self.hash == NONE && self.words == 0 && self.dests.is_empty()
    }
}

/// One step of a path through the trie, for [`TopicTrie::canonical`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Segment {
    /// A literal word.
    Word(Box<[u8]>),
    /// `*`.
    Star,
    /// `#`.
    Hash,
}

/// A topic-binding trie, usable on its own.
#[derive(Debug, Clone)]
pub struct TopicTrie {
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// Literal-word edges: (parent id as 4 little-endian octets ++ word) → child id.
    edges: Map<Box<[u8]>, u32>,
    len: usize,
}

impl TopicTrie {
    /// An empty trie whose edge table uses `hasher`.
    pub fn new(hasher: SeededState) -> Self {
        Self {
            nodes: vec![Node::new(false)],
            free: Vec::new(),
            edges: Map::with_hasher(hasher),
            len: 0,
        }
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bindings.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of live nodes, the root included. A trie from which every binding was removed
    /// has exactly one.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    fn node(&self, id: u32) -> Option<&Node> {
        self.nodes.get(id as usize)
    }

    fn node_mut(&mut self, id: u32) -> Option<&mut Node> {
        self.nodes.get_mut(id as usize)
    }

    fn alloc(&mut self, is_hash: bool) -> u32 {
        match self.free.pop() {
            Some(id) => {
                if let Some(n) = self.node_mut(id) {
                    *n = Node::new(is_hash);
                }
                id
            }
            None => {
                self.nodes.push(Node::new(is_hash));
                u32::try_from(self.nodes.len() - 1).unwrap_or(NONE)
            }
        }
    }

    fn edge_key(buf: &mut [u8; EDGE_KEY_MAX], parent: u32, word: &[u8]) -> usize {
        let n = word.len().min(255);
        buf[..4].copy_from_slice(&parent.to_le_bytes());
        buf[4..4 + n].copy_from_slice(&word[..n]);
        4 + n
    }

    fn child(&self, parent: u32, word: &[u8], buf: &mut [u8; EDGE_KEY_MAX]) -> Option<u32> {
        let n = Self::edge_key(buf, parent, word);
        self.edges.get(&buf[..n]).copied()
    }

    /// Adds a binding of `pattern` to `dest`. A pattern with a word longer than 255 octets
    /// (which no binding key, a short string, can have) is refused: returns false and changes
    /// nothing.
    pub fn insert(&mut self, pattern: &[u8], dest: Destination) -> bool {
        if has_long_word(pattern) {
            return false;
        }
        let mut buf = [0u8; EDGE_KEY_MAX];
        let mut at = 0u32;
        for word in split_words(pattern) {
            at = match word {
                b"*" | b"#" => {
                    let hash = word == b"#";
                    let existing = self
                        .node(at)
                        .map(|n| if hash { n.hash } else { n.star })
                        .unwrap_or(NONE);
                    if existing != NONE {
                        existing
                    } else {
                        let id = self.alloc(hash);
                        if let Some(n) = self.node_mut(at) {
                            if hash {
                                n.hash = id;
                            } else {
                                n.star = id;
                            }
                        }
                        id
                    }
                }
                _ => match self.child(at, word, &mut buf) {
                    Some(id) => id,
                    None => {
                        let id = self.alloc(false);
                        let n = Self::edge_key(&mut buf, at, word);
                        self.edges.insert(buf[..n].into(), id);
                        if let Some(p) = self.node_mut(at) {
                            p.words += 1;
                        }
                        id
                    }
                },
            };
        }
        if let Some(n) = self.node_mut(at) {
            n.dests.push(dest);
            self.len += 1;
        }
        true
    }

    /// Removes one binding of `pattern` to `dest`, pruning nodes left empty. Returns whether
    /// it was there.
    pub fn remove(&mut self, pattern: &[u8], dest: Destination) -> bool {
        if has_long_word(pattern) {
            return false;
        }
        let mut buf = [0u8; EDGE_KEY_MAX];
        // The path: (node, how it hangs off its parent).
        let mut path: Vec<(u32, Option<&[u8]>)> = vec![(0, None)];
        let mut at = 0u32;
        for word in split_words(pattern) {
            let next = match word {
                b"*" => self.node(at).map(|n| n.star).unwrap_or(NONE),
                b"#" => self.node(at).map(|n| n.hash).unwrap_or(NONE),
                _ => self.child(at, word, &mut buf).unwrap_or(NONE),
            };
            if next == NONE {
                return false;
            }
            path.push((next, Some(word)));
            at = next;
        }
        let Some(leaf) = self.node_mut(at) else {
            return false;
        };
        let Some(pos) = leaf.dests.iter().position(|d| *d == dest) else {
            return false;
        };
        leaf.dests.swap_remove(pos);
        self.len -= 1;
        // Prune from the leaf up while nodes are empty.
        while path.len() > 1 {
            let Some(&(id, word)) = path.last() else {
                break;
            };
            if !self.node(id).is_some_and(Node::is_empty) {
                break;
            }
            path.pop();
            let parent = path.last().map(|p| p.0).unwrap_or(0);
            match word {
                Some(b"*") => {
                    if let Some(p) = self.node_mut(parent) {
                        p.star = NONE;
                    }
                }
                Some(b"#") => {
                    if let Some(p) = self.node_mut(parent) {
                        p.hash = NONE;
                    }
                }
                Some(w) => {
                    let n = Self::edge_key(&mut buf, parent, w);
                    self.edges.remove(&buf[..n]);
                    if let Some(p) = self.node_mut(parent) {
                        p.words -= 1;
                    }
                }
                None => {}
            }
            self.free.push(id);
            if let Some(n) = self.node_mut(id) {
                n.dests = Vec::new();
            }
        }
        true
    }

    /// Appends the destinations of every binding whose pattern matches `key`, once per
    /// binding.
    pub fn matches(&self, key: &[u8], out: &mut Vec<Destination>) {
        let mut cur = NodeSet::default();
        let mut next = NodeSet::default();
        self.enter(&mut cur, 0);
        let mut buf = [0u8; EDGE_KEY_MAX];
        for word in split_words(key) {
            if cur.is_empty() {
                return;
            }
            // A word longer than 255 octets (possible in a CC/BCC key, never in a binding key)
            // matches no literal edge; `*` and `#` still match it.
            let literal = word.len() <= 255;
            let n = if literal { word.len() } else { 0 };
            buf[4..4 + n].copy_from_slice(&word[..n]);
            for &id in cur.as_slice() {
                let Some(node) = self.node(id) else { continue };
                if literal && node.words > 0 {
                    buf[..4].copy_from_slice(&id.to_le_bytes());
                    if let Some(&c) = self.edges.get(&buf[..4 + n]) {
                        self.enter(&mut next, c);
                    }
                }
                if node.star != NONE {
                    self.enter(&mut next, node.star);
                }
                if node.is_hash {
                    self.enter(&mut next, id);
                }
            }
            next.normalize();
            std::mem::swap(&mut cur, &mut next);
            next.clear();
        }
        for &id in cur.as_slice() {
            if let Some(node) = self.node(id) {
                out.extend_from_slice(&node.dests);
            }
        }
    }

    /// Adds `id` and, since `#` may match nothing, the chain of `#` children below it.
    fn enter(&self, set: &mut NodeSet, mut id: u32) {
        loop {
            if !set.insert(id) {
                return;
            }
            match self.node(id) {
                Some(n) if n.hash != NONE => id = n.hash,
                _ => return,
            }
        }
    }

    /// Every node as its path from the root, with its destinations sorted: two tries are
    /// structurally equal when these agree, whatever order they were built in.
    pub fn canonical(&self) -> BTreeMap<Vec<Segment>, Vec<Destination>> {
        let mut word_children: BTreeMap<u32, Vec<(&[u8], u32)>> = BTreeMap::new();
        for (k, &child) in &self.edges {
            let (p, w) = k.split_at(4.min(k.len()));
            let Ok(parent) = <[u8; 4]>::try_from(p) else {
                continue;
            };
            word_children
                .entry(u32::from_le_bytes(parent))
                .or_default()
                .push((w, child));
        }
        let mut out = BTreeMap::new();
        let mut stack: Vec<(u32, Vec<Segment>)> = vec![(0, Vec::new())];
        while let Some((id, path)) = stack.pop() {
            let Some(node) = self.node(id) else { continue };
            let mut dests = node.dests.clone();
            dests.sort_unstable();
            if node.star != NONE {
                let mut p = path.clone();
                p.push(Segment::Star);
                stack.push((node.star, p));
            }
            if node.hash != NONE {
                let mut p = path.clone();
                p.push(Segment::Hash);
                stack.push((node.hash, p));
            }
            for &(w, child) in word_children.get(&id).map(Vec::as_slice).unwrap_or(&[]) {
                let mut p = path.clone();
                p.push(Segment::Word(w.into()));
                stack.push((child, p));
            }
            out.insert(path, dests);
        }
        out
    }
}

impl PartialEq for TopicTrie {
    /// Structural equality: the same nodes at the same paths with the same bindings.
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self.node_count() == other.node_count()
            && self.canonical() == other.canonical()
    }
}

impl Router for TopicTrie {
    fn bind(&mut self, b: BindingRef<'_>) {
        // Binding keys are short strings (at most 255 octets), so this always inserts.
        self.insert(b.key, b.destination);
    }

    fn unbind(&mut self, b: BindingRef<'_>) {
        self.remove(b.key, b.destination);
    }

    fn route(&self, m: &RouteMessage<'_>, out: &mut Vec<Destination>) {
        for key in m.routing_keys {
            self.matches(key, out);
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// A small set of node ids: inline and deduplicated on insert up to 16; beyond that on the
/// heap, where inserts append and [`NodeSet::normalize`] sorts and deduplicates once per word,
/// so a step costs O(n log n), never O(n²).
#[derive(Debug, Default)]
struct NodeSet {
    inline: [u32; 16],
    inline_len: usize,
    heap: Vec<u32>,
}

impl NodeSet {
    fn as_slice(&self) -> &[u32] {
        if self.heap.is_empty() {
            &self.inline[..self.inline_len]
        } else {
            &self.heap
        }
    }

    fn is_empty(&self) -> bool {
        self.inline_len == 0 && self.heap.is_empty()
    }

    fn clear(&mut self) {
        self.inline_len = 0;
        self.heap.clear();
    }

    /// Inserts `id`; false if it is known to be there already. On the heap, duplicates are
    /// kept until [`NodeSet::normalize`] (true is returned), which only makes `enter` walk a
    /// `#` chain again.
    fn insert(&mut self, id: u32) -> bool {
        if self.heap.is_empty() {
            if self.inline[..self.inline_len].contains(&id) {
                return false;
            }
            if self.inline_len < self.inline.len() {
                self.inline[self.inline_len] = id;
                self.inline_len += 1;
                return true;
            }
            self.heap.reserve(64);
            self.heap.extend_from_slice(&self.inline);
        }
        self.heap.push(id);
        true
    }

    fn normalize(&mut self) {
        if !self.heap.is_empty() {
            self.heap.sort_unstable();
            self.heap.dedup();
        }
    }
}
