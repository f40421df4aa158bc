//! Series identity: metric name plus sorted labels, in one canonical string.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::sync::Arc;

/// Separates label pairs in the canonical key. Validation forbids control characters in names
/// and labels, so the key is unambiguous and can be split back into labels.
const PAIR_SEP: char = '\u{1f}';
/// Separates a label name from its value in the canonical key.
const KV_SEP: char = '\u{1e}';

/// Canonical series key: `name` then, for each label in name order, `\x1f name \x1e value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey(pub Arc<str>);

impl SeriesKey {
    /// Appends the canonical key of `name` + `labels` to `buf`. `labels` must be sorted by name
    /// and free of duplicates.
    pub fn append_canonical<'l>(
        buf: &mut String,
        name: &str,
        labels: impl IntoIterator<Item = (&'l str, &'l str)>,
    ) {
        buf.push_str(name);
        for (k, v) in labels {
            buf.push(PAIR_SEP);
            buf.push_str(k);
            buf.push(KV_SEP);
            buf.push_str(v);
        }
    }

    pub fn from_parts(name: &str, labels: &BTreeMap<String, String>) -> Self {
        let mut buf = String::new();
        Self::append_canonical(
            &mut buf,
            name,
            labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        SeriesKey(buf.into())
    }

    pub fn name(&self) -> &str {
        self.0.split(PAIR_SEP).next().unwrap_or_default()
    }

    /// The label pairs, in name order.
    pub fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .split(PAIR_SEP)
            .skip(1)
            .filter_map(|pair| pair.split_once(KV_SEP))
    }

    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Prometheus-style rendering for humans: `name{a="1",b="2"}`.
    pub fn display(&self) -> String {
        let mut s = self.name().to_string();
        let mut first = true;
        for (k, v) in self.labels() {
            s.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(s, "{k}={v:?}");
        }
        if !first {
            s.push('}');
        }
        s
    }

    /// Stable shard index for a canonical key string.
    pub fn shard_of(key: &str, shards: usize) -> usize {
        // A fixed seed: stable within a build, which is all sharding needs (checkpoints store
        // series, not shard numbers).
        let h = foldhash::fast::FixedState::with_seed(0x5052_4953_4d57_4154).hash_one(key);
        (h % shards.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_key_is_order_independent_and_round_trips() {
        let mut a = BTreeMap::new();
        a.insert("b".to_string(), "2".to_string());
        a.insert("a".to_string(), "1".to_string());
        let k = SeriesKey::from_parts("cpu", &a);
        assert_eq!(k.name(), "cpu");
        assert_eq!(k.labels().collect::<Vec<_>>(), vec![("a", "1"), ("b", "2")]);
        assert_eq!(k.label("b"), Some("2"));
        assert_eq!(k.display(), "cpu{a=\"1\",b=\"2\"}");
        let bare = SeriesKey::from_parts("up", &BTreeMap::new());
        assert_eq!(bare.display(), "up");
        assert_eq!(bare.labels().count(), 0);
    }
}
