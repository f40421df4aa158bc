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
///
/// The table grows incrementally: when it is full, a table twice the size takes the new series
/// and the old one's move over a few buckets at every insert (and one at every lookup). Growing
/// at once moved every series in one insert, a pause that grows with the table (1.5-5 ms at
/// 28,672 series and 12-24 ms at 114,688 on the benchmark machine, a tenth of a second or more
/// at a million), and every point queued behind it waited.
#[derive(Debug)]
pub struct SeriesTable<V> {
    table: HashTable<V>,
    /// While the table grows: the previous table, emptied into `table` bucket by bucket.
    old: HashTable<V>,
    /// The next bucket of `old` to move.
    moved_to: usize,
    hasher: RandomState,
}

/// Buckets of the old table moved at every insert while the table grows. The new table holds
/// twice the old one's series, so the old one (at most 8 buckets per 7 series) is empty well
/// before the new one is full.
const MOVE_PER_INSERT: usize = 8;

/// The smallest table that grows incrementally: smaller ones grow at once (a few microseconds).
const MIN_INCREMENTAL: usize = 1024;

impl<V: Keyed> SeriesTable<V> {
    /// An empty table hashing with `hasher` (the pipeline's: see [`SeriesTable::hash`]).
    pub fn new(hasher: RandomState) -> Self {
        Self {
            table: HashTable::new(),
            old: HashTable::new(),
            moved_to: 0,
            hasher,
        }
    }

    /// The hash the table files `key` under.
    pub fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        let hash = self.hash(key);
        let eq = |v: &V| v.key() == key;
        self.table
            .find(hash, eq)
            .or_else(|| self.old.find(hash, eq))
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let hash = self.hash(key);
        self.get_mut_hashed(key, hash)
    }

    /// As [`SeriesTable::get_mut`], with `hash` = `self.hash(key)` computed by the caller.
    pub fn get_mut_hashed(&mut self, key: &str, hash: u64) -> Option<&mut V> {
        debug_assert_eq!(hash, self.hash(key));
        if !self.old.is_empty() {
            // Points of known series finish a growth too: when new series stop coming, the old
            // table (its memory, and a second probe for the series still in it) does not stay.
            self.move_buckets(1);
        }
        let eq = |v: &V| v.key() == key;
        match self.table.find_mut(hash, eq) {
            Some(v) => Some(v),
            None if self.old.is_empty() => None,
            None => self.old.find_mut(hash, eq),
        }
    }

    /// The first value whose slot's control byte matches `hash`, without comparing keys (so
    /// without reading the value's memory): for prefetching only, it may be another series.
    pub fn probe(&self, hash: u64) -> Option<&V> {
        match self.table.find(hash, |_| true) {
            None if !self.old.is_empty() => self.old.find(hash, |_| true),
            found => found,
        }
    }

    /// Adds a series the table does not hold (`hash` as for [`SeriesTable::get_mut_hashed`]).
    pub fn insert_new(&mut self, hash: u64, value: V) -> &mut V {
        debug_assert!(self.get(value.key()).is_none());
        if !self.old.is_empty() {
            self.move_buckets(MOVE_PER_INSERT);
        }
        if self.table.len() == self.table.capacity() && self.table.len() >= MIN_INCREMENTAL {
            // Full: finish an unfinished move (not reached: see MOVE_PER_INSERT), then start
            // one into a table twice the size.
            self.move_buckets(usize::MAX);
            let bigger = HashTable::with_capacity(self.table.len() * 2);
            self.old = std::mem::replace(&mut self.table, bigger);
            self.moved_to = 0;
        }
        let hasher = &self.hasher;
        self.table
            .insert_unique(hash, value, |v| hasher.hash_one(v.key()))
            .into_mut()
    }

    /// Moves up to `buckets` buckets of the old table into the new one; frees the old table
    /// once it is empty.
    fn move_buckets(&mut self, buckets: usize) {
        let end = self
            .moved_to
            .saturating_add(buckets)
            .min(self.old.num_buckets());
        let hasher = &self.hasher;
        for i in self.moved_to..end {
            if let Ok(entry) = self.old.get_bucket_entry(i) {
                let (value, _) = entry.remove();
                let hash = hasher.hash_one(value.key());
                self.table
                    .insert_unique(hash, value, |v| hasher.hash_one(v.key()));
            }
        }
        self.moved_to = end;
        self.free_old_once_empty();
    }

    /// Ends a growth whose old table is empty (moved, removed or evicted): frees its memory.
    fn free_old_once_empty(&mut self) {
        if self.old.is_empty() && self.old.num_buckets() > 1 {
            self.old = HashTable::new();
            self.moved_to = 0;
        }
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
        let eq = |v: &V| v.key() == key;
        if let Ok(entry) = self.table.find_entry(hash, eq) {
            return Some(entry.remove().0);
        }
        let removed = self.old.find_entry(hash, eq).ok().map(|e| e.remove().0);
        self.free_old_once_empty();
        removed
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&mut V) -> bool) {
        self.table.retain(&mut keep);
        self.old.retain(keep);
        self.free_old_once_empty();
    }

    pub fn iter(&self) -> impl Iterator<Item = &V> {
        self.table.iter().chain(self.old.iter())
    }

    /// Buckets of the table (of both tables while it grows): a value's bucket stays the same
    /// until the table grows, or until the value moves while it grows.
    pub fn buckets(&self) -> usize {
        match self.old.is_empty() {
            true => self.table.num_buckets(),
            false => self.table.num_buckets() + self.old.num_buckets(),
        }
    }

    /// The value in bucket `i`, if the bucket is full (a cursor over the table that survives
    /// changes to it, unlike an iterator). The new table's buckets come first, so a value that
    /// moves during a walk is not met twice (it may be missed: see `Shard::cut_step`).
    pub fn bucket_mut(&mut self, i: usize) -> Option<&mut V> {
        match i.checked_sub(self.table.num_buckets()) {
            None => self.table.get_bucket_mut(i),
            Some(i) => self.old.get_bucket_mut(i),
        }
    }

    pub fn len(&self) -> usize {
        self.table.len() + self.old.len()
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
    fn a_full_table_grows_a_few_buckets_at_an_insert_and_finds_every_series_meanwhile() {
        let mut t = SeriesTable::new(RandomState::default());
        let key = |i: u32| format!("cpu\u{1f}host\u{1e}{i}");
        let add = |t: &mut SeriesTable<S>, i: u32| {
            let k = key(i);
            let h = t.hash(&k);
            t.insert_new(h, S(k, i));
        };
        let mut n = 0;
        while t.len() < MIN_INCREMENTAL || t.table.len() < t.table.capacity() {
            add(&mut t, n);
            n += 1;
        }
        let full = t.len();
        let old_buckets = t.table.num_buckets();
        let mut growing_inserts = 0;
        // Two growths: every insert moves at most MOVE_PER_INSERT buckets of the old table.
        for _ in 0..2 {
            add(&mut t, n);
            n += 1;
            assert!(!t.old.is_empty(), "the full table grows incrementally");
            while !t.old.is_empty() {
                let (left, new_buckets) = (t.old.len(), t.table.num_buckets());
                add(&mut t, n);
                n += 1;
                growing_inserts += 1;
                assert!(
                    left - t.old.len() <= MOVE_PER_INSERT,
                    "{left} -> {}",
                    t.old.len()
                );
                assert_eq!(
                    t.table.num_buckets(),
                    new_buckets,
                    "the new table never regrows at once"
                );
                // While it grows, lookups, removals and bucket walks see both tables.
                if n % 97 == 0 {
                    for i in (0..n).step_by(7) {
                        assert_eq!(t.get(&key(i)).map(|s| s.1), Some(i));
                    }
                    let walked = (0..t.buckets())
                        .filter(|&i| t.bucket_mut(i).is_some())
                        .count();
                    assert_eq!(walked, t.len());
                    assert_eq!(t.iter().count(), t.len());
                }
            }
            while t.table.len() < t.table.capacity() {
                add(&mut t, n);
                n += 1;
            }
        }
        assert!(t.table.num_buckets() >= 4 * old_buckets);
        assert!(growing_inserts >= old_buckets / MOVE_PER_INSERT);
        assert_eq!(t.len(), n as usize);
        // Series in the old table are removed and evicted there.
        add(&mut t, n);
        n += 1;
        assert!(!t.old.is_empty());
        let in_old = t.old.iter().map(|s| s.1).take(2).collect::<Vec<_>>();
        assert_eq!(t.remove(&key(in_old[0])).map(|s| s.1), Some(in_old[0]));
        t.retain(|s| s.1 != in_old[1]);
        assert!(t.get(&key(in_old[0])).is_none() && t.get(&key(in_old[1])).is_none());
        assert_eq!(t.len(), n as usize - 2);
        assert!(full >= MIN_INCREMENTAL);
        // Points of known series alone finish the growth: a bucket at each.
        let old_buckets = t.old.num_buckets();
        let kept = (0..n).filter(|i| !in_old.contains(i));
        for i in kept.cycle().take(old_buckets) {
            let (k, h) = (key(i), t.hash(&key(i)));
            assert_eq!(t.get_mut_hashed(&k, h).map(|s| s.1), Some(i));
        }
        assert!(t.old.is_empty());
        assert_eq!(t.buckets(), t.table.num_buckets());
        assert_eq!(t.len(), n as usize - 2);
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
