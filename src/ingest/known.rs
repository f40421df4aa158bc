//! Series a decoder has seen, by their encoded name and labels: the MessagePack bytes of a
//! point's `name` and `labels` values map to the canonical key and its hash. A point of a known
//! series skips UTF-8 checks, validation of its name and labels, sorting and keying: only its
//! value and timestamp are read. Only series that passed validation are remembered, so a hit
//! gives what the full path would.
//!
//! Bounded: past `capacity` series the memory is forgotten and fills again, so a flood of new
//! series costs a re-parse, never unbounded memory.

use std::hash::{BuildHasher, Hasher};

use foldhash::fast::RandomState;
use hashbrown::HashTable;

/// Series remembered per decoder (per partition pipeline): about 10 MB at most with keys of
/// 60 bytes.
pub const DEFAULT_CAPACITY: usize = 1 << 16;

#[derive(Debug)]
struct Known {
    /// The encoded name, then the encoded labels.
    encoded: Box<[u8]>,
    name_len: usize,
    /// Hash of the encoded bytes (for the table's growth).
    encoded_hash: u64,
    key: Box<str>,
    /// The canonical key's hash under the pipeline's series hasher.
    key_hash: u64,
}

#[derive(Debug)]
pub struct KnownSeries {
    table: HashTable<Known>,
    hasher: RandomState,
    capacity: usize,
}

impl KnownSeries {
    pub fn new(capacity: usize) -> Self {
        Self {
            table: HashTable::new(),
            hasher: RandomState::default(),
            capacity: capacity.max(1),
        }
    }

    fn hash(&self, name: &[u8], labels: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(name);
        h.write(labels);
        h.finish()
    }

    /// The canonical key and its hash of the series encoded as `name` and `labels`.
    pub fn find(&self, name: &[u8], labels: &[u8]) -> Option<(&str, u64)> {
        self.table
            .find(self.hash(name, labels), |k| {
                k.name_len == name.len()
                    && k.encoded.len() == name.len() + labels.len()
                    && k.encoded[..name.len()] == *name
                    && k.encoded[name.len()..] == *labels
            })
            .map(|k| (&*k.key, k.key_hash))
    }

    /// Remembers a validated series (not found by [`KnownSeries::find`] just before).
    pub fn insert(&mut self, name: &[u8], labels: &[u8], key: &str, key_hash: u64) {
        if self.table.len() >= self.capacity {
            self.table.clear();
        }
        let encoded_hash = self.hash(name, labels);
        let known = Known {
            encoded: [name, labels].concat().into_boxed_slice(),
            name_len: name.len(),
            encoded_hash,
            key: key.into(),
            key_hash,
        };
        self.table
            .insert_unique(encoded_hash, known, |k| k.encoded_hash);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_it_was_given_and_forgets_everything_past_its_capacity() {
        let mut k = KnownSeries::new(3);
        k.insert(b"\xa3cpu", b"\x80", "cpu", 1);
        k.insert(b"\xa3cpu", b"\x81\xa1a\xa11", "cpu\x1fa\x1e1", 2);
        assert_eq!(k.find(b"\xa3cpu", b"\x80"), Some(("cpu", 1)));
        assert_eq!(
            k.find(b"\xa3cpu", b"\x81\xa1a\xa11"),
            Some(("cpu\x1fa\x1e1", 2))
        );
        // The same bytes split differently are another series.
        assert_eq!(k.find(b"\xa3cpu\x80", b""), None);
        assert_eq!(k.find(b"\xa3mem", b"\x80"), None);
        k.insert(b"\xa3mem", b"\x80", "mem", 3);
        assert_eq!(k.len(), 3);
        k.insert(b"\xa2up", b"\xc0", "up", 4);
        assert_eq!(k.len(), 1);
        assert_eq!(k.find(b"\xa3cpu", b"\x80"), None);
        assert_eq!(k.find(b"\xa2up", b"\xc0"), Some(("up", 4)));
    }
}
