//! Exchange health on event time: points are averaged per exchange and minute; when a minute
//! closes, each exchange gets a score, the platform the mean of them, and every exchange its
//! deviation from its peers on each compared metric. Synchronous and deterministic: the same
//! points in the same order give the same output.

use std::collections::{BTreeMap, VecDeque};

use super::config::{HealthConfig, RATE_SHARE};
use super::peers;
use super::score::{score, MinuteInputs};
use crate::model::MetricPoint;

const MINUTE: i64 = 60_000;
const DAY_MINUTES: i64 = 1440;
/// Days of message rates kept for the seasonal baseline.
const BASELINE_DAYS: i64 = 7;

/// Series the component writes.
pub mod series {
    /// 0-100 per exchange (see `score`).
    pub const EXCHANGE: &str = "exchange_health_score";
    /// 0-1 per exchange and `component` (connection, rate, latency, errors, delay).
    pub const COMPONENT: &str = "exchange_health_component";
    /// The mean of the exchanges' scores.
    pub const PLATFORM: &str = "platform_health_score";
    /// Robust deviation from the peers, per exchange, `signal` (the metric compared) and the
    /// points' other labels (not `metric`: alerts use that label for the series' name).
    pub const PEER_DEVIATION: &str = "exchange_peer_deviation";
}

/// Sum and count of one input in one minute.
#[derive(Debug, Clone, Copy, Default)]
struct Mean {
    sum: f64,
    n: u32,
}

impl Mean {
    fn add(&mut self, v: f64) {
        self.sum += v;
        self.n += 1;
    }
    fn get(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Minute {
    connected: Mean,
    rate: Mean,
    latency: Mean,
    errors: Mean,
    delay: Mean,
}

/// Per exchange: the message rate of each past minute, for the seasonal baseline.
#[derive(Debug, Default)]
struct RateHistory {
    /// (minute index, mean rate), oldest first, over [`BASELINE_DAYS`].
    minutes: VecDeque<(i64, f64)>,
}

impl RateHistory {
    fn push(&mut self, minute: i64, rate: f64) {
        self.minutes.push_back((minute, rate));
        while self
            .minutes
            .front()
            .is_some_and(|(m, _)| *m <= minute - BASELINE_DAYS * DAY_MINUTES)
        {
            self.minutes.pop_front();
        }
    }

    /// The usual rate at `minute`: the median of the same time of day (± 2 minutes) on the
    /// previous days when at least two days have it, else the median of the last hour; `None`
    /// with fewer than 10 minutes of history.
    fn baseline(&self, minute: i64) -> Option<f64> {
        let mut seasonal = Vec::new();
        let mut days = 0;
        for d in 1..=BASELINE_DAYS {
            let at = minute - d * DAY_MINUTES;
            let before = seasonal.len();
            let from = self.minutes.partition_point(|(m, _)| *m < at - 2);
            seasonal.extend(
                self.minutes
                    .range(from..)
                    .take_while(|(m, _)| *m <= at + 2)
                    .map(|(_, r)| *r),
            );
            days += usize::from(seasonal.len() > before);
        }
        let values = if days >= 2 {
            seasonal
        } else {
            let recent: Vec<f64> = self
                .minutes
                .iter()
                .rev()
                .take_while(|(m, _)| *m >= minute - 60)
                .map(|(_, r)| *r)
                .collect();
            if recent.len() < 10 {
                return None;
            }
            recent
        };
        let mut v = values;
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    }
}

/// One minute of the compared metrics: (metric, other labels) → exchange → mean.
type PeerMinute = BTreeMap<(String, String), BTreeMap<String, Mean>>;

/// The exchange-health engine.
pub struct HealthEngine {
    cfg: HealthConfig,
    /// Open minutes: minute index → exchange → inputs.
    open: BTreeMap<i64, BTreeMap<String, Minute>>,
    /// Open minutes of the compared metrics: minute → (metric, other labels) → exchange → mean.
    peers: BTreeMap<i64, PeerMinute>,
    rates: BTreeMap<String, RateHistory>,
    /// Per exchange: the last closed minute it sent anything in.
    last_seen: BTreeMap<String, i64>,
    /// End of the last closed minute.
    closed_until: Option<i64>,
    /// The newest event time read.
    pub newest: i64,
    /// Points for minutes already closed (not counted).
    pub late_points: u64,
}

impl HealthEngine {
    pub fn new(cfg: HealthConfig) -> Self {
        Self {
            cfg,
            open: BTreeMap::new(),
            peers: BTreeMap::new(),
            rates: BTreeMap::new(),
            last_seen: BTreeMap::new(),
            closed_until: None,
            newest: i64::MIN,
            late_points: 0,
        }
    }

    /// Takes one point (points of other metrics or without an exchange are ignored).
    pub fn observe(&mut self, p: &MetricPoint) {
        let Some(exchange) = p.labels.get(&self.cfg.exchange_label) else {
            return;
        };
        if !p.value.is_finite() {
            return;
        }
        let minute = p.timestamp.div_euclid(MINUTE);
        if self.closed_until.is_some_and(|c| p.timestamp < c) {
            self.late_points += 1;
            return;
        }
        self.newest = self.newest.max(p.timestamp);
        let m = &self.cfg.metrics;
        let name = p.name.as_str();
        let by_exchange = self.open.entry(minute).or_default();
        if !by_exchange.contains_key(exchange.as_str()) {
            by_exchange.insert(exchange.clone(), Minute::default());
        }
        let slot = by_exchange.get_mut(exchange.as_str()).expect("inserted");
        let input = if name == m.connection {
            Some(&mut slot.connected)
        } else if name == m.message_rate {
            Some(&mut slot.rate)
        } else if name == m.latency_ms {
            Some(&mut slot.latency)
        } else if name == m.error_percent {
            Some(&mut slot.errors)
        } else if name == m.delay_secs {
            Some(&mut slot.delay)
        } else {
            None
        };
        if let Some(input) = input {
            input.add(p.value);
        }
        if self.cfg.peer_metrics.iter().any(|pm| pm.metric == p.name) {
            // The points' other labels (a symbol...): most exchange metrics have none.
            let mut others = String::new();
            for (k, v) in p
                .labels
                .iter()
                .filter(|(k, _)| **k != self.cfg.exchange_label)
            {
                if !others.is_empty() {
                    others.push(',');
                }
                others.push_str(k);
                others.push('=');
                others.push_str(v);
            }
            let groups = self.peers.entry(minute).or_default();
            let key = (p.name.clone(), others);
            let by_exchange = groups.entry(key).or_default();
            if !by_exchange.contains_key(exchange.as_str()) {
                by_exchange.insert(exchange.clone(), Mean::default());
            }
            by_exchange
                .get_mut(exchange.as_str())
                .expect("inserted")
                .add(p.value);
        }
    }

    /// Closes the minutes that end at or before `watermark` (the newest time read less the
    /// grace, or a clock when live) and returns their points, time-ordered.
    pub fn close(&mut self, watermark: i64) -> Vec<MetricPoint> {
        let mut out = Vec::new();
        let target = watermark.div_euclid(MINUTE);
        let first = match self.closed_until {
            Some(c) => c / MINUTE,
            None => match self.open.keys().next() {
                Some(&m) => m,
                None => return out,
            },
        };
        for minute in first..target {
            let inputs = self.open.remove(&minute).unwrap_or_default();
            let peers = self.peers.remove(&minute).unwrap_or_default();
            self.close_minute(minute, inputs, peers, &mut out);
        }
        if target > first {
            self.closed_until = Some(target * MINUTE);
        }
        out
    }

    fn close_minute(
        &mut self,
        minute: i64,
        inputs: BTreeMap<String, Minute>,
        mut peers: PeerMinute,
        out: &mut Vec<MetricPoint>,
    ) {
        let end = (minute + 1) * MINUTE;
        let label = &self.cfg.exchange_label;
        let point = |name: &str, labels: &[(&str, &str)], value: f64| MetricPoint {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
            timestamp: end,
        };
        for exchange in inputs.keys() {
            self.last_seen.insert(exchange.clone(), minute);
        }
        let mut scores = Vec::new();
        let exchanges: Vec<String> = self.last_seen.keys().cloned().collect();
        for exchange in exchanges {
            let ex = exchange.as_str();
            let Some(m) = inputs.get(&exchange) else {
                // Silent: no point at all from its collector.
                let silent = minute - self.last_seen[&exchange];
                if silent >= self.cfg.silent_after_minutes as i64 {
                    out.push(point(series::EXCHANGE, &[(label, ex)], 0.0));
                    scores.push(0.0);
                }
                if silent > 60 {
                    // Gone for an hour: forgotten (its baseline stays for its return).
                    self.last_seen.remove(&exchange);
                }
                continue;
            };
            let rates = self.rates.entry(exchange.clone()).or_default();
            let rate = m.rate.get();
            let rate_share =
                rate.and_then(|r| rates.baseline(minute).filter(|b| *b > 0.0).map(|b| r / b));
            if let Some(r) = rate {
                rates.push(minute, r);
            }
            let mi = MinuteInputs {
                connected: m.connected.get(),
                rate_share,
                latency_ms: m.latency.get(),
                error_percent: m.errors.get(),
                delay_secs: m.delay.get(),
            };
            let l = &self.cfg.levels;
            for (component, value) in [
                ("connection", mi.connected.map(|c| c.clamp(0.0, 1.0))),
                ("rate", mi.rate_share.map(|x| l.rate.score(x))),
                ("latency", mi.latency_ms.map(|x| l.latency_ms.score(x))),
                ("errors", mi.error_percent.map(|x| l.error_percent.score(x))),
                ("delay", mi.delay_secs.map(|x| l.delay_secs.score(x))),
            ] {
                if let Some(v) = value {
                    out.push(point(
                        series::COMPONENT,
                        &[("component", component), (label, ex)],
                        v,
                    ));
                }
            }
            if let Some(s) = score(l, &mi) {
                out.push(point(series::EXCHANGE, &[(label, ex)], s));
                scores.push(s);
            }
            if let Some(share) = rate_share {
                if self.cfg.peer_metrics.iter().any(|p| p.metric == RATE_SHARE) {
                    peers
                        .entry((RATE_SHARE.to_string(), String::new()))
                        .or_default()
                        .entry(exchange.clone())
                        .or_default()
                        .add(share);
                }
            }
        }
        if !scores.is_empty() {
            let mean = scores.iter().sum::<f64>() / scores.len() as f64;
            out.push(point(series::PLATFORM, &[], mean));
        }
        for ((metric, others), by_exchange) in peers {
            let Some(pm) = self.cfg.peer_metrics.iter().find(|p| p.metric == metric) else {
                continue;
            };
            let names: Vec<&String> = by_exchange.keys().collect();
            let values: Vec<f64> = by_exchange.values().filter_map(Mean::get).collect();
            let Some(devs) = peers::deviations(&values, self.cfg.min_peers, pm.min_scale) else {
                continue;
            };
            for (exchange, dev) in names.into_iter().zip(devs) {
                let mut p = point(
                    series::PEER_DEVIATION,
                    &[("signal", &metric), (label, exchange)],
                    dev,
                );
                for pair in others.split(',').filter(|s| !s.is_empty()) {
                    if let Some((k, v)) = pair.split_once('=') {
                        p.labels.insert(k.into(), v.into());
                    }
                }
                out.push(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, exchange: &str, ts: i64, value: f64) -> MetricPoint {
        MetricPoint {
            name: name.into(),
            labels: [("exchange".to_string(), exchange.to_string())].into(),
            value,
            timestamp: ts,
        }
    }

    /// One point of each input a minute for three exchanges; okx lags from minute `from` on.
    fn feed(
        e: &mut HealthEngine,
        minutes: std::ops::Range<i64>,
        lag_from: i64,
    ) -> Vec<MetricPoint> {
        let mut out = Vec::new();
        for m in minutes {
            let ts = m * MINUTE;
            for (k, ex) in ["binance", "okx", "deribit"].iter().enumerate() {
                let lag = *ex == "okx" && m >= lag_from;
                e.observe(&p("exchange_connection_status", ex, ts, 1.0));
                e.observe(&p(
                    "exchange_message_rate",
                    ex,
                    ts,
                    [1200.0, 900.0, 400.0][k] * if lag { 0.5 } else { 1.0 },
                ));
                e.observe(&p("exchange_latency_ms", ex, ts, 45.0 + k as f64));
                e.observe(&p("exchange_error_rate_percent", ex, ts, 0.1));
                e.observe(&p(
                    "market_data_delay_seconds",
                    ex,
                    ts,
                    if lag { 8.0 } else { 0.3 },
                ));
            }
            out.extend(e.close(ts - 30_000));
        }
        out
    }

    fn last(out: &[MetricPoint], name: &str, labels: &[(&str, &str)]) -> f64 {
        out.iter()
            .rev()
            .find(|p| {
                p.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| p.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .unwrap_or_else(|| panic!("no {name} {labels:?}"))
            .value
    }

    #[test]
    fn a_lagging_exchange_loses_health_and_stands_out_from_its_peers() {
        let mut e = HealthEngine::new(HealthConfig::default());
        let out = feed(&mut e, 0..120, 100);
        // Before the lag (minute 99, written at 100 and read back here): all healthy.
        let at = |m: i64| {
            out.iter()
                .filter(move |p| p.timestamp == (m + 1) * MINUTE)
                .cloned()
                .collect::<Vec<_>>()
        };
        let before = at(98);
        for ex in ["binance", "okx", "deribit"] {
            assert_eq!(last(&before, series::EXCHANGE, &[("exchange", ex)]), 100.0);
        }
        assert_eq!(last(&before, series::PLATFORM, &[]), 100.0);
        // During it: okx's delay (8 s: 0.222) and rate (half its last hour's median: 0.375) cut
        // its score; the others stay at 100.
        let during = at(105);
        let okx = last(&during, series::EXCHANGE, &[("exchange", "okx")]);
        let expected = 100.0 * (0.3 * 0.375 + 0.2 + 0.2 + 0.3 * 2.0 / 9.0);
        assert!((okx - expected).abs() < 1e-9, "{okx} vs {expected}");
        assert_eq!(
            last(&during, series::EXCHANGE, &[("exchange", "binance")]),
            100.0
        );
        let platform = last(&during, series::PLATFORM, &[]);
        assert!((platform - (200.0 + expected) / 3.0).abs() < 1e-9);
        // Its delay is far from its peers'; theirs are not.
        let dev = |ex| {
            last(
                &during,
                series::PEER_DEVIATION,
                &[("exchange", ex), ("signal", "market_data_delay_seconds")],
            )
        };
        assert!(dev("okx") > 10.0, "{}", dev("okx"));
        assert!(dev("binance").abs() < 1.0 && dev("deribit").abs() < 1.0);
        let share = |ex| {
            last(
                &during,
                series::PEER_DEVIATION,
                &[("exchange", ex), ("signal", RATE_SHARE)],
            )
        };
        assert!(share("okx") < -3.0, "{}", share("okx"));
    }

    #[test]
    fn a_silent_exchange_scores_zero_and_late_points_are_not_counted() {
        let mut e = HealthEngine::new(HealthConfig::default());
        let mut out = feed(&mut e, 0..20, i64::MAX);
        // okx stops sending; the others go on.
        for m in 20..30 {
            let ts = m * MINUTE;
            for ex in ["binance", "deribit"] {
                e.observe(&p("market_data_delay_seconds", ex, ts, 0.3));
            }
            out.extend(e.close(ts - 30_000));
        }
        let okx: Vec<f64> = out
            .iter()
            .filter(|p| p.name == series::EXCHANGE && p.labels["exchange"] == "okx")
            .map(|p| p.value)
            .collect();
        assert_eq!(okx.last(), Some(&0.0));
        e.observe(&p("market_data_delay_seconds", "okx", 5 * MINUTE, 9.0));
        assert_eq!(e.late_points, 1);
    }

    #[test]
    fn the_baseline_is_seasonal_once_two_days_have_the_time_of_day() {
        let mut r = RateHistory::default();
        // Two days: 100/s by night (minutes 0-719 of the day), 1000/s by day.
        for m in 0..2 * DAY_MINUTES {
            r.push(m, if m % DAY_MINUTES < 720 { 100.0 } else { 1000.0 });
        }
        assert_eq!(r.baseline(2 * DAY_MINUTES + 100), Some(100.0));
        assert_eq!(r.baseline(2 * DAY_MINUTES + 800), Some(1000.0));
        // One day only: the last hour's median.
        let mut r = RateHistory::default();
        for m in 0..30 {
            r.push(m, m as f64);
        }
        assert_eq!(r.baseline(30), Some(14.5));
        assert_eq!(RateHistory::default().baseline(5), None);
    }
}
