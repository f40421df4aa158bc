//! Series a decoder has seen, by their encoded name and labels: the MessagePack bytes of a
//! point's `name` and `labels` values map to the canonical key and its hash. A point of a known
//! series skips UTF-8 checks, validation of its name and labels, sorting and keying: only its
//! value and timestamp are read. Only series that passed validation are remembered, so a hit
//! gives what the full path would.
//!
//! Bounded in bytes, not in series (keys can be long: up to 32 labels of 200 + 256 bytes by
//! default): once the entries would take more than the budget, the memory is forgotten and fills
//! again, so a flood of new series costs a re-parse, never unbounded memory.

use std::hash::{BuildHasher, Hasher};

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use super::prefetch::prefetch;

/// Bytes a decoder (one per partition pipeline, or per chunk) may spend on remembered series:
/// about 90,000 series with keys of 60 bytes.
pub const DEFAULT_BUDGET_BYTES: usize = 16 << 20;

/// One remembered series. Its bytes are one allocation, so a hit touches the table's slot and
/// one more cache line or two: with thousands of series per decoder, every pointer followed per
/// point is a likely cache miss.
#[derive(Debug)]
struct Known {
    /// The encoded name, then the encoded labels, then the canonical key (UTF-8).
    bytes: Box<[u8]>,
    name_len: u32,
    encoded_len: u32,
    /// Hash of the encoded bytes (for the table's growth).
    encoded_hash: u64,
    /// The canonical key's hash under the pipeline's series hasher.
    key_hash: u64,
}

impl Known {
    fn key(&self) -> &str {
        let key = &self.bytes[self.encoded_len as usize..];
        // SAFETY: these bytes were copied from a `&str` in `KnownSeries::insert` and are never
        // changed.
        unsafe { std::str::from_utf8_unchecked(key) }
    }
}

#[derive(Debug)]
pub struct KnownSeries {
    table: HashTable<Known>,
    hasher: RandomState,
    budget_bytes: usize,
    /// What the entries take: their bytes, their struct and a table slot each.
    bytes: usize,
}

impl Known {
    /// Bytes an entry takes, its table slot included.
    fn cost(encoded: usize, key: usize) -> usize {
        encoded + key + std::mem::size_of::<Known>() + 1
    }
}

impl KnownSeries {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            table: HashTable::new(),
            hasher: RandomState::default(),
            budget_bytes,
            bytes: 0,
        }
    }

    /// The hash [`KnownSeries::find_hashed`] takes.
    pub fn hash(&self, name: &[u8], labels: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(name);
        h.write(labels);
        h.finish()
    }

    /// The canonical key and its hash of the series encoded as `name` and `labels`.
    #[cfg(test)]
    pub fn find(&self, name: &[u8], labels: &[u8]) -> Option<(&str, u64)> {
        self.find_hashed(self.hash(name, labels), name, labels)
    }

    /// The canonical key and its hash of the series encoded as `name` and `labels`, with
    /// `hash` = [`KnownSeries::hash`] of them.
    pub fn find_hashed(&self, hash: u64, name: &[u8], labels: &[u8]) -> Option<(&str, u64)> {
        self.table
            .find(hash, |k| {
                k.name_len as usize == name.len()
                    && k.encoded_len as usize == name.len() + labels.len()
                    && k.bytes[..name.len()] == *name
                    && k.bytes[name.len()..k.encoded_len as usize] == *labels
            })
            .map(|k| (k.key(), k.key_hash))
    }

    /// Prefetches for the points ahead of point `i` (`hashes` by point): the table slot of the
    /// one `2 * AHEAD` ahead (its probe reads only control bytes), the bytes of the one `AHEAD`
    /// ahead. A slot whose control byte matches by chance only prefetches the wrong lines.
    #[inline]
    pub fn prefetch_ahead(&self, hashes: &[u64], i: usize) {
        const AHEAD: usize = 4;
        if let Some(&h) = hashes.get(i + 2 * AHEAD) {
            if let Some(k) = self.table.find(h, |_| true) {
                prefetch(k);
            }
        }
        if let Some(&h) = hashes.get(i + AHEAD) {
            if let Some(k) = self.table.find(h, |_| true) {
                prefetch(k.bytes.as_ptr());
                prefetch(k.bytes.as_ptr().wrapping_add(64));
            }
        }
    }

    /// Remembers a validated series (not found by [`KnownSeries::find_hashed`] just before).
    pub fn insert(&mut self, name: &[u8], labels: &[u8], key: &str, key_hash: u64) {
        let cost = Known::cost(name.len() + labels.len(), key.len());
        if cost > self.budget_bytes / 4 {
            return; // a giant series is not worth a quarter of the memory
        }
        if self.bytes + cost > self.budget_bytes {
            // The table's own allocation goes too: a flood must not leave a huge empty table.
            self.table = HashTable::new();
            self.bytes = 0;
        }
        self.bytes += cost;
        let encoded_hash = self.hash(name, labels);
        let known = Known {
            bytes: [name, labels, key.as_bytes()].concat().into_boxed_slice(),
            // Within the budget, so far below u32::MAX.
            name_len: name.len() as u32,
            encoded_len: (name.len() + labels.len()) as u32,
            encoded_hash,
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
    fn finds_what_it_was_given_and_forgets_everything_past_its_budget() {
        let mut k = KnownSeries::new(1000);
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
        // More series than the budget holds: all are forgotten at once, then it fills again.
        let mut spent = Known::cost(5, 3) + Known::cost(10, 7);
        let mut n = 0u8;
        while spent + Known::cost(9, 3) <= 1000 {
            k.insert(
                b"\xa3mem",
                &[0x81, 0xa1, b'n', 0xa1, n],
                "mem",
                u64::from(n),
            );
            spent += Known::cost(9, 3);
            n += 1;
        }
        assert_eq!(k.len(), 2 + n as usize);
        assert_eq!(k.find(b"\xa3cpu", b"\x80"), Some(("cpu", 1)));
        k.insert(b"\xa3mem", &[0x81, 0xa1, b'n', 0xa1, n], "mem", 99);
        assert_eq!(k.len(), 1);
        assert_eq!(k.find(b"\xa3cpu", b"\x80"), None);
        assert_eq!(
            k.find(b"\xa3mem", &[0x81, 0xa1, b'n', 0xa1, n]),
            Some(("mem", 99))
        );
        // A series that would take over a quarter of the budget is not remembered.
        k.insert(b"\xa3cpu", &[b'x'; 300], "cpu", 5);
        assert_eq!(k.find(b"\xa3cpu", &[b'x'; 300]), None);
        assert_eq!(k.len(), 1);
    }
}
