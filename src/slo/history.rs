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
        }
    }

    /// Resized to other windows or another period (a reloaded SLO), newest kept.
    pub fn resize(&mut self, max_minutes: usize, period_hours: usize) {
        self.max_minutes = max_minutes.max(1);
        self.max_hours = period_hours.max(1);
        while self.minutes.len() > self.max_minutes {
            self.minutes.pop_front();
        }
        while self.hours.len() > self.max_hours {
            self.hours.pop_front();
        }
    }

    /// Closes the minute with index `minute` (ms since the epoch / 60,000) with its counts.
    pub fn close_minute(&mut self, minute: i64, counts: Counts) {
        if self.minutes.len() == self.max_minutes {
            self.minutes.pop_front();
        }
        self.minutes.push_back(counts);
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
        let mut c = Counts::default();
        let mut covered = 0;
        for m in self.minutes.iter().rev().take(minutes) {
            c.add(*m);
            covered += 1;
        }
        (c, covered)
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
}
