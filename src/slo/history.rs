//! Good and total events of one objective, per minute over its longest alert window and per
//! hour over its budget period: what burn rates and the budget left are summed from.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Events counted in some span: good ones and all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub good: f64,
    pub total: f64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.good += other.good;
        self.total += other.total;
    }

    /// The share of bad events (0 with no event).
    pub fn bad_share(&self) -> f64 {
        if self.total > 0.0 {
            ((self.total - self.good) / self.total).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// Closed minutes and hours of one objective, newest last.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventHistory {
    minutes: VecDeque<Counts>,
    max_minutes: usize,
    /// Closed hours and how many of their minutes were closed (fewer in the first one).
    hours: VecDeque<(Counts, u32)>,
    max_hours: usize,
    /// The minutes closed so far of the hour being filled, and how many.
    hour: Counts,
    hour_minutes: u32,
    /// Running sums of the newest minutes, per window length (minutes) asked for with
    /// [`EventHistory::track`]: a minute's close updates each in O(1), not O(window). They are
    /// added up afresh at every full hour (of the epoch, so every run agrees), so rounding does
    /// not drift; checkpointed, so a restart goes on with the very same sums.
    #[serde(default)]
    sums: Vec<(usize, Counts)>,
}

impl EventHistory {
    /// Keeps `max_minutes` minutes and a period of `period_hours` hours.
    pub fn new(max_minutes: usize, period_hours: usize) -> Self {
        Self {
            minutes: VecDeque::with_capacity(max_minutes.max(1)),
            max_minutes: max_minutes.max(1),
            hours: VecDeque::new(),
            max_hours: period_hours.max(1),
            hour: Counts::default(),
            hour_minutes: 0,
            sums: Vec::new(),
        }
    }

    /// Keeps a running sum of the newest `minutes` minutes (a window read every minute).
    pub fn track(&mut self, minutes: usize) {
        if !self.sums.iter().any(|(m, _)| *m == minutes) {
            let sum = self.sum_of(minutes);
            self.sums.push((minutes, sum));
        }
    }

    fn sum_of(&self, minutes: usize) -> Counts {
        let mut c = Counts::default();
        for m in self.minutes.iter().rev().take(minutes) {
            c.add(*m);
        }
        c
    }

    /// Resized to other windows or another period (a reloaded SLO), newest kept.
    pub fn resize(&mut self, max_minutes: usize, period_hours: usize) {
        if self.max_minutes == max_minutes.max(1) && self.max_hours == period_hours.max(1) {
            return;
        }
        self.max_minutes = max_minutes.max(1);
        self.max_hours = period_hours.max(1);
        while self.minutes.len() > self.max_minutes {
            self.minutes.pop_front();
        }
        while self.hours.len() > self.max_hours {
            self.hours.pop_front();
        }
        // The windows may have changed: the new ones are tracked by their SLO.
        self.sums.clear();
    }

    /// Closes the minute with index `minute` (ms since the epoch / 60,000) with its counts.
    pub fn close_minute(&mut self, minute: i64, counts: Counts) {
        let popped = if self.minutes.len() == self.max_minutes {
            self.minutes.pop_front()
        } else {
            None
        };
        self.minutes.push_back(counts);
        if (minute + 1).rem_euclid(60) == 0 {
            for i in 0..self.sums.len() {
                self.sums[i].1 = self.sum_of(self.sums[i].0);
            }
        } else {
            let len = self.minutes.len();
            let max = self.max_minutes;
            for (w, sum) in &mut self.sums {
                sum.add(counts);
                // The minute that just left the window: still held, or the one dropped.
                let gone = if len > *w {
                    Some(self.minutes[len - 1 - *w])
                } else if *w >= max {
                    popped
                } else {
                    None
                };
                if let Some(gone) = gone {
                    sum.good -= gone.good;
                    sum.total -= gone.total;
                }
            }
        }
        self.hour.add(counts);
        self.hour_minutes += 1;
        if (minute + 1).rem_euclid(60) == 0 {
            if self.hours.len() == self.max_hours {
                self.hours.pop_front();
            }
            self.hours.push_back((self.hour, self.hour_minutes));
            self.hour = Counts::default();
            self.hour_minutes = 0;
        }
    }

    /// Events of the last `minutes` closed minutes, and how many minutes the history had of
    /// them (fewer while it is shorter than the window).
    pub fn last_minutes(&self, minutes: usize) -> (Counts, usize) {
        let covered = minutes.min(self.minutes.len());
        match self.sums.iter().find(|(m, _)| *m == minutes) {
            Some((_, sum)) => (*sum, covered),
            None => (self.sum_of(minutes), covered),
        }
    }

    /// Events of the budget period (the hour being filled and the newest closed hours, the
    /// period's length in all), and how many minutes of it the history covers.
    pub fn period(&self) -> (Counts, usize) {
        let mut c = self.hour;
        let mut covered = self.hour_minutes as usize;
        let closed = self.max_hours - usize::from(self.hour_minutes > 0);
        for (h, minutes) in self.hours.iter().rev().take(closed) {
            c.add(*h);
            covered += *minutes as usize;
        }
        (c, covered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(good: f64, total: f64) -> Counts {
        Counts { good, total }
    }

    #[test]
    fn windows_sum_the_newest_minutes_and_the_period_rolls_by_hours() {
        let mut h = EventHistory::new(5, 2);
        for m in 0..120 {
            h.close_minute(m, c(if m < 60 { 1.0 } else { 0.0 }, 1.0));
        }
        assert_eq!(h.last_minutes(5), (c(0.0, 5.0), 5));
        assert_eq!(h.last_minutes(500), (c(0.0, 5.0), 5), "only 5 minutes kept");
        // Hours 0 (all good) and 1 (all bad): a two-hour period holds both.
        assert_eq!(h.period(), (c(60.0, 120.0), 120));
        for m in 120..150 {
            h.close_minute(m, c(1.0, 1.0));
        }
        // Hour 0 left the period; hour 1 and half of hour 2 are in it.
        assert_eq!(h.period(), (c(30.0, 90.0), 90));
        // A history that starts mid-hour covers only its minutes.
        let mut h = EventHistory::new(5, 2);
        for m in 50..70 {
            h.close_minute(m, c(1.0, 1.0));
        }
        assert_eq!(h.period(), (c(20.0, 20.0), 20));
        assert_eq!(h.last_minutes(3).1, 3);
        assert_eq!(c(1.0, 4.0).bad_share(), 0.75);
        assert_eq!(Counts::default().bad_share(), 0.0);
    }

    #[test]
    fn running_window_sums_equal_sums_added_up_afresh() {
        let mut tracked = EventHistory::new(100, 24);
        for w in [5, 30, 100] {
            tracked.track(w);
        }
        let mut plain = EventHistory::new(100, 24);
        for m in 0..500 {
            let c = Counts {
                good: (m * 7 % 13) as f64 * 0.37,
                total: (m * 7 % 13) as f64 * 0.5 + 1.0,
            };
            tracked.close_minute(m, c);
            plain.close_minute(m, c);
            for w in [5, 30, 100, 7] {
                let (a, ca) = tracked.last_minutes(w);
                let (b, cb) = plain.last_minutes(w);
                assert_eq!(ca, cb);
                assert!(
                    (a.good - b.good).abs() < 1e-9 && (a.total - b.total).abs() < 1e-9,
                    "minute {m}, window {w}"
                );
            }
        }
    }
}
