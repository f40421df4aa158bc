//! The series of one shard, found by their key's hash and then by comparing keys. The pipeline
//! hashes each point's key once, when it picks the shard; the shard's lookup reuses that hash,
//! and a known series is found without building or allocating a key.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

/// A value that carries its own series key.
pub trait Keyed {
    fn key(&self) -> &str;
}

/// Series by canonical key. The hasher is randomly seeded per pipeline, which resists hash
/// flooding from hostile label values; nothing iterates the table where order would show
/// (snapshots sort, eviction only removes).
#[derive(Debug)]
pub struct SeriesTable<V> {
    table: HashTable<V>,
    hasher: RandomState,
}

impl<V: Keyed> SeriesTable<V> {
    /// An empty table hashing with `hasher` (the pipeline's: see [`SeriesTable::hash`]).
    pub fn new(hasher: RandomState) -> Self {
        Self {
            table: HashTable::new(),
            hasher,
        }
    }

    /// The hash the table files `key` under.
    pub fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.table.find(self.hash(key), |v| v.key() == key)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let hash = self.hash(key);
        self.get_mut_hashed(key, hash)
    }

    /// As [`SeriesTable::get_mut`], with `hash` = `self.hash(key)` computed by the caller.
    pub fn get_mut_hashed(&mut self, key: &str, hash: u64) -> Option<&mut V> {
        debug_assert_eq!(hash, self.hash(key));
        self.table.find_mut(hash, |v| v.key() == key)
    }

    /// The first value whose slot's control byte matches `hash`, without comparing keys (so
    /// without reading the value's memory): for prefetching only, it may be another series.
    pub fn probe(&self, hash: u64) -> Option<&V> {
        self.table.find(hash, |_| true)
    }

    /// Adds a series the table does not hold (`hash` as for [`SeriesTable::get_mut_hashed`]).
    pub fn insert_new(&mut self, hash: u64, value: V) -> &mut V {
        debug_assert!(self.get(value.key()).is_none());
        let hasher = &self.hasher;
        self.table
            .insert_unique(hash, value, |v| hasher.hash_one(v.key()))
            .into_mut()
    }

    /// Adds or replaces a series.
    pub fn insert(&mut self, value: V) {
        let hash = self.hash(value.key());
        match self.get_mut_hashed(value.key(), hash) {
            Some(old) => *old = value,
            None => {
                self.insert_new(hash, value);
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let hash = self.hash(key);
        self.table
            .find_entry(hash, |v| v.key() == key)
            .ok()
            .map(|e| e.remove().0)
    }

    pub fn retain(&mut self, keep: impl FnMut(&mut V) -> bool) {
        self.table.retain(keep);
    }

    pub fn iter(&self) -> impl Iterator<Item = &V> {
        self.table.iter()
    }

    /// Buckets of the table: a value's bucket stays the same until the table grows.
    pub fn buckets(&self) -> usize {
        self.table.num_buckets()
    }

    /// The value in bucket `i`, if the bucket is full (a cursor over the table that survives
    /// changes to it, unlike an iterator).
    pub fn bucket_mut(&mut self, i: usize) -> Option<&mut V> {
        self.table.get_bucket_mut(i)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct S(String, u32);

    impl Keyed for S {
        fn key(&self) -> &str {
            &self.0
        }
    }

    #[test]
    fn finds_by_hash_then_key_and_keeps_finding_after_growth_and_removal() {
        let mut t = SeriesTable::new(RandomState::default());
        for i in 0..1000 {
            let key = format!("cpu\u{1f}host\u{1e}{i}");
            let h = t.hash(&key);
            assert!(t.get_mut_hashed(&key, h).is_none());
            t.insert_new(h, S(key, i));
        }
        assert_eq!(t.len(), 1000);
        for i in (0..1000).step_by(2) {
            assert_eq!(t.remove(&format!("cpu\u{1f}host\u{1e}{i}")).unwrap().1, i);
        }
        t.retain(|s| s.1 % 3 != 0);
        for i in 0..1000 {
            let key = format!("cpu\u{1f}host\u{1e}{i}");
            let present = i % 2 == 1 && i % 3 != 0;
            assert_eq!(t.get(&key).map(|s| s.1), present.then_some(i), "{key}");
        }
        t.insert(S("cpu\u{1f}host\u{1e}1".into(), 7));
        assert_eq!(t.get("cpu\u{1f}host\u{1e}1").unwrap().1, 7);
        assert_eq!(t.iter().count(), t.len());
        let by_bucket = (0..t.buckets())
            .filter(|&i| t.bucket_mut(i).is_some())
            .count();
        assert_eq!(by_bucket, t.len());
    }

    #[test]
    fn two_tables_of_one_hasher_agree_and_others_differ() {
        let h = RandomState::default();
        let (a, b) = (
            SeriesTable::<S>::new(h.clone()),
            SeriesTable::<S>::new(h.clone()),
        );
        assert_eq!(a.hash("up"), b.hash("up"));
        // Seeds differ between pipelines (flooding resistance): 8 tries all equal would mean not.
        let differs = (0..8)
            .any(|_| SeriesTable::<S>::new(RandomState::default()).hash("up") != a.hash("up"));
        assert!(differs);
    }
}
