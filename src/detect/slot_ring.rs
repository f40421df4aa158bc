//! The seasonal baseline's history: a ring of slot means at one byte a slot.
//!
//! The ring is the largest part of a series' detector state (576 slots by default), and it is
//! only read in whole: by the period test, which winsorises it at 5 MADs, removes a line and looks
//! for a periodogram peak and an autocorrelation, and when a season is installed, which averages it
//! per phase. Neither needs more than a few hundred levels across the ring's normal range, so each
//! slot is an 8-bit code on a range fitted to the ring: `slot = lo + code · quantum`. The range is
//! the values' own with an eighth of room on each side, leaving out values beyond the median ± 8
//! normalised MADs (the bound): a spike is kept at the range's edge (the period test would clip
//! it anyway) and costs the other slots no precision. Slots beyond the bound for [`LEVEL_SLOTS`] slots in a row
//! are a new level, not a spike: the range is widened to hold them, and stays wide while the ring
//! holds that many slots beyond the bound (coarser, until the old level has left the ring). The
//! range is refitted when the ring is read in whole (every period test), at 1, 2, 4, ... slots
//! while the ring is young, and when a slot falls outside it; each refit re-rounds every slot.
//!
//! A slot is within two code steps of its mean (half a step when it is rounded, and what the
//! refits of a young ring add while its range grows): 1/100 of the range or better. A season
//! smaller than that (a level that drifts a hundredfold more than it cycles within the ring's
//! days) no longer shows.
//!
//! The ring grows in steps of [`GROW_SLOTS`] instead of being allocated in full at the first slot:
//! a series that stops within its first days holds only the slots it saw.

use serde::{Deserialize, Serialize};

/// Slots added to the ring's allocation at a time (a day of 15-minute slots).
const GROW_SLOTS: usize = 96;
/// Half-width of the widest range, in normalised MADs around the median.
const RANGE_MADS: f64 = 8.0;
/// Slots beyond the bound (in a row, or in the ring) that make a level rather than spikes.
const LEVEL_SLOTS: u32 = 16;
/// MAD to standard deviation, for normal data.
const MAD_TO_SD: f64 = 1.4826;

/// A ring of up to `cap` slot means, oldest first once full (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlotRing {
    /// Value of code 0.
    lo: f64,
    /// Value of one code step (0: every slot is `lo`).
    quantum: f64,
    /// Slots in a row that fell outside the range.
    outside_run: u32,
    #[serde(with = "serde_bytes")]
    codes: Vec<u8>,
    /// Next write position once the ring is full.
    head: u32,
}

impl SlotRing {
    /// Slots held.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// Whether no slot is held yet.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.codes.capacity()
    }

    /// Appends a slot mean, overwriting the oldest once `cap` slots are held. A non-finite mean
    /// is stored as the newest slot's value (it must not poison the period test).
    pub fn push(&mut self, cap: usize, v: f64) {
        let v = if v.is_finite() {
            v
        } else if let Some(last) = self.newest() {
            last
        } else {
            return;
        };
        let outside = v < self.lo || v > self.hi();
        self.outside_run = if outside {
            self.outside_run.saturating_add(1)
        } else {
            0
        };
        if self.codes.is_empty() || self.codes.len().is_power_of_two() || outside {
            self.refit(Some(v));
            if self.outside_run >= LEVEL_SLOTS && (v < self.lo || v > self.hi()) {
                let (lo, hi) = (self.lo.min(v), self.hi().max(v));
                self.set_range(lo, hi);
            }
        }
        let code = self.encode(v);
        if self.codes.len() < cap {
            if self.codes.len() == self.codes.capacity() {
                self.codes
                    .reserve_exact(GROW_SLOTS.min(cap - self.codes.len()));
            }
            self.codes.push(code);
        } else {
            let h = self.head as usize % cap;
            self.codes[h] = code;
            self.head = ((h + 1) % cap) as u32;
        }
    }

    /// The slots in chronological order, decoded; refits the range first.
    pub fn chronological(&mut self, cap: usize) -> Vec<f64> {
        self.refit(None);
        let h = self.head as usize;
        let (newer, older) = if self.codes.len() < cap {
            (&self.codes[..], &self.codes[..0])
        } else {
            (&self.codes[..h], &self.codes[h..])
        };
        older.iter().chain(newer).map(|c| self.decode(*c)).collect()
    }

    fn hi(&self) -> f64 {
        self.lo + 255.0 * self.quantum
    }

    fn newest(&self) -> Option<f64> {
        if self.codes.is_empty() {
            return None;
        }
        let i = (self.head as usize + self.codes.len() - 1) % self.codes.len();
        Some(self.decode(self.codes[i]))
    }

    fn encode(&self, v: f64) -> u8 {
        if self.quantum > 0.0 {
            ((v - self.lo) / self.quantum).round().clamp(0.0, 255.0) as u8
        } else {
            0
        }
    }

    fn decode(&self, c: u8) -> f64 {
        self.lo + f64::from(c) * self.quantum
    }

    /// Fits the range to the slots (and `extra`, a slot about to be pushed) and re-rounds them.
    /// The slots are codes, so their order statistics come from a histogram of 256 bins.
    fn refit(&mut self, extra: Option<f64>) {
        let mut counts = [0u32; 256];
        for c in &self.codes {
            counts[usize::from(*c)] += 1;
        }
        let n = self.codes.len() as u32;
        let (median, mad) = if n == 0 {
            match extra {
                Some(v) => (v, 0.0),
                None => return,
            }
        } else {
            let mid = nth_code(&counts, n / 2);
            let mut dev = [0u32; 256];
            for (c, k) in counts.iter().enumerate() {
                dev[c.abs_diff(usize::from(mid))] += k;
            }
            let mad = f64::from(nth_code(&dev, n / 2)) * self.quantum;
            (self.decode(mid), mad)
        };
        // The data's extent, without spikes: values beyond the bound, unless there are as many
        // as a level would leave. A MAD of 0 (a mostly constant series) gives no bound.
        let half = if mad > 0.0 {
            RANGE_MADS * MAD_TO_SD * mad
        } else {
            f64::INFINITY
        };
        let values = (0..=255u8)
            .filter(|c| counts[usize::from(*c)] > 0)
            .map(|c| (self.decode(c), counts[usize::from(c)]))
            .chain(extra.map(|v| (v, 1)));
        let (mut below, mut above) = (0u32, 0u32);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut in_min, mut in_max) = (f64::INFINITY, f64::NEG_INFINITY);
        for (v, k) in values {
            (min, max) = (min.min(v), max.max(v));
            if v < median - half {
                below += k;
            } else if v > median + half {
                above += k;
            } else {
                (in_min, in_max) = (in_min.min(v), in_max.max(v));
            }
        }
        let lo = if below < LEVEL_SLOTS { in_min } else { min };
        let hi = if above < LEVEL_SLOTS { in_max } else { max };
        // A little room on both sides, so a season still filling its range does not refit at
        // every new extreme.
        let room = (hi - lo) / 8.0;
        self.set_range(lo - room, hi + room);
    }

    /// Moves the range to cover `[lo, hi]`, re-rounding every slot. The code step is a power of
    /// 2^(1/4) and `lo` a multiple of it, so a refit that keeps the step moves every code by a
    /// whole number of steps: exactly, without adding rounding error.
    fn set_range(&mut self, lo: f64, hi: f64) {
        let values: Vec<f64> = self.codes.iter().map(|c| self.decode(*c)).collect();
        let raw = (hi - lo) / 254.0;
        if raw > 0.0 && raw.is_finite() {
            self.quantum = 2f64.powf((4.0 * raw.log2()).ceil() / 4.0);
            self.lo = (lo / self.quantum).floor() * self.quantum;
        } else {
            self.quantum = 0.0;
            self.lo = lo;
        }
        let lo = self.lo;
        for (c, v) in self.codes.iter_mut().zip(&values) {
            *c = if self.quantum > 0.0 {
                ((v - lo) / self.quantum).round().clamp(0.0, 255.0) as u8
            } else {
                0
            };
        }
    }
}

/// The code at rank `k` (0-based) of a histogram of codes.
fn nth_code(counts: &[u32; 256], k: u32) -> u8 {
    let mut seen = 0;
    for (c, n) in counts.iter().enumerate() {
        seen += n;
        if seen > k {
            return c as u8;
        }
    }
    255
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_of(cap: usize, values: &[f64]) -> SlotRing {
        let mut r = SlotRing::default();
        for v in values {
            r.push(cap, *v);
        }
        r
    }

    fn daily(i: usize) -> f64 {
        (i as f64 / 96.0 * std::f64::consts::TAU).sin()
    }

    #[test]
    fn keeps_a_season_on_a_large_level_and_the_order_of_a_full_ring() {
        // A level of a million that cycles by ±10: f16 alone could not even hold the level.
        let values: Vec<f64> = (0..1000).map(|i| 1e6 + 10.0 * daily(i)).collect();
        let mut r = ring_of(576, &values);
        let got = r.chronological(576);
        assert_eq!(got.len(), 576);
        for (g, want) in got.iter().zip(&values[1000 - 576..]) {
            // Within a code step of a range a little wider than the ±10 swing.
            assert!((g - want).abs() <= 30.0 / 255.0, "{g} vs {want}");
        }
        assert_eq!(r.heap_bytes(), 576);
    }

    #[test]
    fn a_spike_is_clipped_without_costing_the_others_their_precision() {
        let mut values: Vec<f64> = (0..500).map(|i| 50.0 + 5.0 * daily(i)).collect();
        values[300] = 1e9;
        let got = ring_of(576, &values).chronological(576);
        for (i, (g, want)) in got.iter().zip(&values).enumerate() {
            if i == 300 {
                assert!(
                    *g > 55.0 && *g < 200.0,
                    "the spike is kept at the range's edge: {g}"
                );
            } else {
                // Two code steps of a range a little wider than the ±5 swing.
                assert!(
                    (g - want).abs() <= 2.0 * 13.0 / 254.0,
                    "slot {i}: {g} vs {want}"
                );
            }
        }
    }

    #[test]
    fn a_new_level_is_in_range_after_a_refit_and_a_constant_series_is_exact() {
        // A step of 1000 MADs: clipped at first, in range once refitted.
        let values: Vec<f64> = (0..400)
            .map(|i| daily(i) + if i >= 300 { 1000.0 } else { 0.0 })
            .collect();
        let mut r = ring_of(576, &values);
        let got = r.chronological(576);
        assert!((got[399] - values[399]).abs() < 5.0, "{}", got[399]);
        assert!((got[100] - values[100]).abs() < 5.0, "{}", got[100]);
        // Mostly constant, with a rare other value: both exact enough.
        let mut flat = vec![7.0; 300];
        flat[150] = 9.0;
        let got = ring_of(576, &flat).chronological(576);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, g)| (g - flat[i]).abs() < 0.01));
    }

    #[test]
    fn grows_in_steps_and_stores_non_finite_means_as_the_newest_slot() {
        let mut r = ring_of(576, &[1.0, 2.0, 3.0]);
        assert_eq!(r.heap_bytes(), GROW_SLOTS);
        r.push(576, f64::NAN);
        r.push(576, f64::INFINITY);
        let got = r.chronological(576);
        assert_eq!(got.len(), 5);
        assert!((got[4] - 3.0).abs() < 0.01, "{got:?}");
        // A ring shorter than the step is never allocated beyond its capacity.
        let small = ring_of(16, &[1.0; 40]);
        assert_eq!((small.len(), small.heap_bytes()), (16, 16));
    }
}
