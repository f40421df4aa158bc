//! Dedup: publishers are at-least-once, so the same (series, timestamp) can arrive twice.
//! Keeps the last `window_points` timestamps of the series (a ring); a point whose timestamp is
//! in the ring is a duplicate, a point older than the newest is out of order. Both are dropped.

use serde::{Deserialize, Serialize};

/// Most timestamps a dedup window can remember (bounds the state at 8 bytes each).
pub const MAX_WINDOW_POINTS: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// How many recent timestamps per series are remembered (1 to 64).
    pub window_points: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self { window_points: 8 }
    }
}

impl DedupConfig {
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        if (1..=MAX_WINDOW_POINTS).contains(&self.window_points) {
            Vec::new()
        } else {
            vec![("window_points", format!("must be 1 to {MAX_WINDOW_POINTS}"))]
        }
    }
}

/// Why a point was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Same (series, timestamp) seen before.
    Duplicate,
    /// Older than the series' latest point.
    OutOfOrder,
}

/// Recent timestamps of one series, newest last.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DedupState {
    recent: Vec<i64>,
}

impl DedupState {
    /// Bytes the ring allocates.
    pub fn heap_bytes(&self) -> usize {
        self.recent.capacity() * std::mem::size_of::<i64>()
    }

    /// Remembers `ts`, or says why a point at `ts` is dropped.
    pub fn admit(&mut self, cfg: &DedupConfig, ts: i64) -> Result<(), DropReason> {
        if self.recent.contains(&ts) {
            return Err(DropReason::Duplicate);
        }
        if matches!(self.recent.last(), Some(&newest) if ts < newest) {
            return Err(DropReason::OutOfOrder);
        }
        if self.recent.len() >= cfg.window_points {
            let excess = self.recent.len() + 1 - cfg.window_points;
            self.recent.drain(..excess);
        }
        self.recent.push(ts);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_repeats_within_window_and_older_points() {
        let cfg = DedupConfig { window_points: 3 };
        let mut st = DedupState::default();
        let mut feed = |ts| st.admit(&cfg, ts);
        assert_eq!(feed(10), Ok(()));
        assert_eq!(feed(20), Ok(()));
        assert_eq!(feed(10), Err(DropReason::Duplicate));
        assert_eq!(feed(20), Err(DropReason::Duplicate));
        assert_eq!(feed(15), Err(DropReason::OutOfOrder));
        assert_eq!(feed(30), Ok(()));
        assert_eq!(feed(40), Ok(()));
        // 10 fell out of the 3-point window: now it is merely old.
        assert_eq!(feed(10), Err(DropReason::OutOfOrder));
        assert_eq!(st.recent, vec![20, 30, 40]);
    }
}
