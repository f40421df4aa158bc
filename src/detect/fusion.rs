//! Fusion: every detector on one series, combined into one anomaly score in [0, 1] per point, an
//! alert decision that fires once per anomaly, and an explanation for alert annotations.
//!
//! Per point, in order: z-score (global level), seasonal baseline, Holt trend, volatility/flatline,
//! the isolation forest over the standardised deviations of the others, the slope-change test and
//! the shape (fuzzy ART) detector. Each detector's score is first *calibrated* to the series: it is
//! discounted by how often this series produced such a score recently (a per-detector decaying
//! histogram over at least `calibration_window_points` and `calibration_window_secs`, so "recently"
//! means days at any resolution), so a series whose normal life is spiky does not alert on every
//! spike while a calm series alerts on its first.
//!
//! The calibrated scores combine as a noisy-OR (`1 - prod(1 - w_i s_i)`): one strong detector
//! suffices and agreement adds up. Where the detectors that score one residual (z-score, seasonal
//! baseline, trend) should not add up, `combine: grouped` counts only the strongest of them and
//! noisy-ORs that with the detectors that look at something else (volatility, the forest, slope,
//! shape); `max` lets the strongest detector decide. Which one ships is chosen by the validation
//! protocol (`benches/protocol.py`, README).
//!
//! Known rhythms are not news: when the fused score starts an event (crosses
//! `recurrence_event_score`) at the same interval as the events before it (a nightly job, a spike
//! every N points), the event is discounted by `recurrence_discount`; an event off the rhythm is not.
//!
//! One anomaly, one detection: after an alert the output score is damped for `refractory_points`
//! points (and `refractory_secs`; quadratically recovering), unless the raw score rises
//! `rearm_ratio` above the alert's raw score — a worse anomaly alerts again. Per metric, an
//! anomaly can be made to last (`confirm_points`: a blip is not an incident) and a series can be
//! given a false-alarm budget (`false_alarm_points` / `false_alarm_secs`: at most about one
//! anomaly per that many points or that long, a strong one excepted).
//!
//! # Memory bound
//! Sum of the detectors' bounds (z-score 24 B, seasonal ≤ 1 KiB, trend 128 B, variance 64 B,
//! slope change 88 B, shape ≤ 0.6 KiB) + fusion ~0.6 KiB (7 × 16 histogram bins, 16 remembered
//! event times): **≤ 3 KiB per series with the defaults**, and ≤ 12 KiB with the isolation forest
//! on (≤ 8.2 KiB more; it is off by default and then not allocated). `AnomalyState::state_bytes`
//! measures it.

use serde::{Deserialize, Serialize};

use super::art::{ArtConfig, ArtState};
use super::drift::{DriftConfig, DriftState};
use super::iforest::{IForestConfig, IForestState, FEATURES};
use super::seasonal::{SeasonalConfig, SeasonalState};
use super::trend::{TrendConfig, TrendState};
use super::variance::{VarianceConfig, VarianceState};
use super::zscore::{ZScoreConfig, ZScoreState};
use super::{ge, gt, DetectorOutput};

/// The detectors the fusion runs, in a fixed order (the index of `per_detector`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// Rolling z-score against the global level.
    #[default]
    ZScore,
    /// Seasonal baseline residual.
    Seasonal,
    /// Holt forecast residual, CUSUM and trend acceleration.
    Trend,
    /// Volatility change and flatline.
    Variance,
    /// Isolation forest over the other detectors' deviations.
    IForest,
    /// Page-Hinkley test on the rate of change (trend acceleration, slowing feeds).
    Drift,
    /// Fuzzy ART over windows of the series (a shape it has not seen).
    Art,
}

/// Number of detectors the fusion runs.
pub const DETECTORS: usize = 7;

impl DetectorKind {
    /// All detectors, in `per_detector` order.
    pub const ALL: [DetectorKind; DETECTORS] = [
        DetectorKind::ZScore,
        DetectorKind::Seasonal,
        DetectorKind::Trend,
        DetectorKind::Variance,
        DetectorKind::IForest,
        DetectorKind::Drift,
        DetectorKind::Art,
    ];

    /// Stable lower-case name (config keys, CSV columns, annotations).
    pub fn name(self) -> &'static str {
        match self {
            DetectorKind::ZScore => "zscore",
            DetectorKind::Seasonal => "seasonal",
            DetectorKind::Trend => "trend",
            DetectorKind::Variance => "variance",
            DetectorKind::IForest => "iforest",
            DetectorKind::Drift => "drift",
            DetectorKind::Art => "art",
        }
    }
}

/// Weight of each detector in the fused score, in [0, 1]; 0 switches a detector off (it is then
/// not run at all, unless the isolation forest needs its deviation as a feature).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorWeights {
    /// Weight of the rolling z-score.
    pub zscore: f64,
    /// Weight of the seasonal baseline.
    pub seasonal: f64,
    /// Weight of the Holt trend detector.
    pub trend: f64,
    /// Weight of the volatility / flatline detector.
    pub variance: f64,
    /// Weight of the isolation forest.
    pub iforest: f64,
    /// Weight of the slope-change test.
    pub drift: f64,
    /// Weight of the fuzzy-ART shape detector.
    pub art: f64,
}

impl Default for DetectorWeights {
    fn default() -> Self {
        Self {
            zscore: 0.0,
            seasonal: 1.0,
            trend: 1.0,
            variance: 1.0,
            // Off by default: the validation protocol measured it worse than without (README).
            iforest: 0.0,
            drift: 1.0,
            art: 1.0,
        }
    }
}

impl DetectorWeights {
    /// Weights in `DetectorKind::ALL` order.
    pub fn as_array(&self) -> [f64; DETECTORS] {
        [
            self.zscore,
            self.seasonal,
            self.trend,
            self.variance,
            self.iforest,
            self.drift,
            self.art,
        ]
    }
}

/// How detector scores become one score and an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FusionConfig {
    /// Weight per detector (0 = off), its weight in the combination.
    pub weights: DetectorWeights,
    /// The false-alarm budget: a series raises about one anomaly per this many points at most
    /// (each anomaly spends a token, tokens come back at one per this many points, up to
    /// `false_alarm_burst`; without a token only a score of `instant_score` alerts). 0 = no
    /// budget. Per metric: raise it where a page costs more than a miss.
    pub false_alarm_points: u32,
    /// ...and at least this long in event time (at the series' step).
    pub false_alarm_secs: u64,
    /// Tokens of the false-alarm budget a quiet series has saved up, at most.
    pub false_alarm_burst: f64,
    /// A point alerts when its (damped) score is at least this.
    pub alert_threshold: f64,
    /// Points an anomaly must last beyond its first before it alerts (0 = alert on the first):
    /// a single-point blip is not an incident where this is 1.
    pub confirm_points: u32,
    /// A score this high alerts at once, unconfirmed and over budget.
    pub instant_score: f64,
    /// Points after an alert during which the score is damped (one anomaly, one alert).
    pub refractory_points: u32,
    /// ...and at least this long in event time (at the series' step): at a one-minute resolution
    /// 24 points are only 24 minutes, while the anomaly an alert was raised for still lasts.
    pub refractory_secs: u64,
    /// During the refractory period, a raw score this much above the alert's raw score (ratio)
    /// alerts again.
    pub rearm_ratio: f64,
    /// Points a series must have seen before it can score or alert.
    pub warmup_points: u32,
    /// Effective window of the per-detector score histograms used for calibration, in points
    /// (0 disables calibration).
    pub calibration_window_points: u32,
    /// ...and at least this long in event time (at the series' step): "how often did this series
    /// do this in the last few days", whatever its resolution.
    pub calibration_window_secs: u64,
    /// A score this series reached `k` times within the calibration window keeps a fraction
    /// `1 / (1 + k / calibration_tolerated_repeats)` of itself (novelty, per detector).
    pub calibration_tolerated_repeats: f64,
    /// Weight with which a point one detector alone would alert on is learnt by its histogram
    /// (below 1, a repeated real anomaly keeps more of its score; 1 = like any point).
    pub calibration_anomaly_weight: f64,
    /// Band half-width of the explanation, in the seasonal spread's standard deviations.
    pub band_sd: f64,
    /// How weighted, calibrated detector scores combine: `grouped` (the detectors of one residual,
    /// z-score, seasonal and trend, count once: their maximum, then a noisy-OR with the others),
    /// `noisy_or` (`1 - prod(1 - w s)`: correlated detectors add up) or `max`.
    pub combine: Combine,
    /// During the refractory period the score is multiplied by `(elapsed / refractory)^power`.
    pub refractory_recovery_power: f64,
    /// Fused score at which a point starts an *event* for the recurrence check.
    pub recurrence_event_score: f64,
    /// Events remembered for the recurrence check (their start times).
    pub recurrence_events: u32,
    /// An event is *recurring* (part of a rhythm, e.g. a nightly job) when events also started
    /// one, two, ... `recurrence_min_repeats + 1` intervals before it (0 disables the check).
    pub recurrence_min_repeats: u32,
    /// Timing tolerance of a repeat, as a fraction of its distance in time.
    pub recurrence_tolerance_ratio: f64,
    /// Timing tolerance of a repeat, at least, in data steps.
    pub recurrence_tolerance_steps: f64,
    /// Shortest interval of a rhythm, in data steps (closer events are one burst, not a rhythm).
    pub recurrence_min_interval_steps: f64,
    /// A recurring event's fused score is multiplied by this.
    pub recurrence_discount: f64,
}

impl Default for FusionConfig {
    fn default() -> Self {
        Self {
            weights: DetectorWeights::default(),
            false_alarm_points: 0,
            false_alarm_secs: 0,
            false_alarm_burst: 2.0,
            alert_threshold: 0.62,
            confirm_points: 0,
            instant_score: 0.9,
            refractory_points: 24,
            refractory_secs: 14_400,
            rearm_ratio: 1.5,
            warmup_points: 150,
            calibration_window_points: 1000,
            calibration_window_secs: 302_400,
            calibration_tolerated_repeats: 5.0,
            calibration_anomaly_weight: 1.0,
            band_sd: 3.0,
            combine: Combine::NoisyOr,
            refractory_recovery_power: 2.0,
            recurrence_event_score: 0.5,
            recurrence_events: 16,
            recurrence_min_repeats: 2,
            recurrence_tolerance_ratio: 0.01,
            recurrence_tolerance_steps: 2.0,
            recurrence_min_interval_steps: 6.0,
            recurrence_discount: 0.2,
        }
    }
}

/// Everything that detects anomalies on one series: the detectors' configs and the fusion's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyConfig {
    /// Rolling z-score.
    pub zscore: ZScoreConfig,
    /// Seasonal baseline.
    pub seasonal: SeasonalConfig,
    /// Holt trend / forecast.
    pub trend: TrendConfig,
    /// Volatility change and flatline.
    pub variance: VarianceConfig,
    /// Isolation forest.
    pub iforest: IForestConfig,
    /// Slope change (Page-Hinkley).
    pub drift: DriftConfig,
    /// Shape novelty (fuzzy ART).
    pub art: ArtConfig,
    /// Fusion and alerting.
    pub fusion: FusionConfig,
}

/// How weighted detector scores combine into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The residual detectors' maximum, then a noisy-OR with the independent ones.
    Grouped,
    /// `1 - prod(1 - w_i s_i)`: one strong detector suffices, agreement adds up.
    NoisyOr,
    /// `max(w_i s_i)`: the strongest detector decides.
    Max,
}

/// An anomaly began where its score first reached this share of the alert threshold.
const ONSET_RATIO: f64 = 0.75;

/// Lower edges of the calibration histogram bins, in score units (finer where scores are high).
const CAL_EDGES: [f64; 16] = [
    0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99,
];
/// Bins of the calibration histograms.
const CAL_BINS: usize = CAL_EDGES.len();

/// The calibration histograms' gain is folded back into their bins above this (the bins are
/// `f32`: a bin holds at most about a window's points times this, far below `f32::MAX`).
const MAX_HIST_GAIN: f64 = 1e9;

/// `Σ bins[from..]`, in four running sums: one chain of 16 dependent additions per detector per
/// point was a good part of the fusion's cost.
fn sum_from(bins: &[f32], from: usize) -> f64 {
    let mut lanes = [0.0f64; 4];
    for (k, v) in bins.iter().enumerate() {
        lanes[k % 4] += if k >= from { f64::from(*v) } else { 0.0 };
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
}

fn cal_bin(s: f64) -> usize {
    CAL_EDGES.iter().rposition(|e| s >= *e).unwrap_or(0)
}

/// Per-series state of the fusion itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FusionState {
    /// Points seen, saturating.
    pub count: u32,
    /// Points left in the refractory period.
    pub refractory_left: u32,
    /// Raw score of the last alert.
    pub last_alert_raw: f64,
    /// Decaying histograms of each detector's score (`DETECTORS × 16` bins, `ALL` order), each
    /// bin stored multiplied by `hist_gain`.
    pub hist: Vec<f32>,
    /// What the stored bins are multiplied by: decay is applied to this one number instead of to
    /// every bin at every point (0, as in a state from before it existed, means 1).
    #[serde(default)]
    pub hist_gain: f64,
    /// Consecutive points at or above the alert threshold (for `confirm_points`).
    pub run: u32,
    /// First point (ms) of the current run of scores above `ONSET_RATIO` of the threshold; 0 = none.
    pub onset_ms: i64,
    /// Tokens of the false-alarm budget spent (0 = a full budget).
    pub spent: f32,
    /// Start times of the last `recurrence_events` events, in ms, oldest first.
    pub events_ms: Vec<i64>,
    /// Fused score of the previous point (event starts are upward crossings).
    pub prev_raw: f64,
    /// Whether the event in progress was found recurring.
    pub recurring: bool,
}

/// Per-series state of all detectors (serde, `Default`; bounded, see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnomalyState {
    /// Rolling z-score.
    pub zscore: ZScoreState,
    /// Seasonal baseline.
    pub seasonal: SeasonalState,
    /// Holt trend.
    pub trend: TrendState,
    /// Volatility / flatline.
    pub variance: VarianceState,
    /// Isolation forest (boxed on first use: off by default, and 120 bytes inline).
    pub iforest: Option<Box<IForestState>>,
    /// Slope change.
    pub drift: DriftState,
    /// Shape novelty.
    pub art: ArtState,
    /// Fusion.
    pub fusion: FusionState,
}

impl AnomalyState {
    /// Calls `f` with each heap block every point reads (its address and length in bytes): the
    /// fusion's histograms and the shape detector's window, weights and recycling times. They
    /// hang one pointer off this state, so their cache misses come after the state's own; the
    /// shards ask for them a point ahead, to overlap them with the point before.
    pub fn hot_blocks(&self, mut f: impl FnMut(*const u8, usize)) {
        f(
            self.fusion.hist.as_ptr().cast(),
            std::mem::size_of_val(self.fusion.hist.as_slice()),
        );
        f(self.art.window.as_ptr(), self.art.window.len());
        f(self.art.weights.as_ptr(), self.art.weights.len());
        f(
            self.art.last_used.as_ptr().cast(),
            std::mem::size_of_val(self.art.last_used.as_slice()),
        );
    }

    /// Bytes this state occupies (inline + heap), for the per-series budget.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<AnomalyState>()
            - std::mem::size_of::<SeasonalState>()
            - std::mem::size_of::<ArtState>()
            + SeasonalConfig::state_bytes(&self.seasonal)
            + self
                .iforest
                .as_deref()
                .map_or(0, IForestConfig::state_bytes)
            + ArtConfig::state_bytes(&self.art)
            + self.fusion.hist.capacity() * 4
            + self.fusion.events_ms.capacity() * 8
    }

    /// The Holt state, for forecasts and `TrendConfig::time_until_crossing`.
    pub fn trend(&self) -> &TrendState {
        &self.trend
    }
}

/// Why a point scored what it did, for alert annotations.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct AnomalyExplanation {
    /// The detector that contributed most (None when nothing scored).
    pub top: Option<DetectorKind>,
    /// Weighted, calibrated score per detector (0 when off), in `DetectorKind::ALL` order.
    pub contributions: [f64; DETECTORS],
    /// Expected value (seasonal baseline, else Holt forecast, else z-score mean).
    pub expected: Option<f64>,
    /// Normal band `(low, high)` around the expected value.
    pub band: Option<(f64, f64)>,
    /// Deviation from the expected value, in the baseline's standard deviations (signed).
    pub deviation_sd: f64,
    /// When the anomaly in progress began: the first point of the run of high scores (ms).
    #[serde(default)]
    pub since_ms: Option<i64>,
}

/// The fused verdict on one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyOutput {
    /// Fused anomaly score in [0, 1], damped after an alert (what thresholds compare with).
    pub score: f64,
    /// Fused score before refractory damping (after calibration and the recurrence discount).
    pub raw_score: f64,
    /// Whether this point raises an alert under the configured threshold (once per anomaly).
    pub alert: bool,
    /// Each detector's own output, in `DetectorKind::ALL` order (default when switched off).
    /// Indexed rather than paired with its kind: pairing a one-byte kind with each output made
    /// every point shuffle the array through misaligned stack copies (a fifth of the fused
    /// operator's time in a profile).
    pub per_detector: [DetectorOutput; DETECTORS],
    /// Explanation for annotations.
    pub explanation: AnomalyExplanation,
}

impl AnomalyConfig {
    /// Problems with this configuration, as `(key, message)` pairs; keys are dotted paths.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut add = |prefix: &str, v: Vec<(&'static str, String)>| {
            out.extend(v.into_iter().map(|(k, m)| (format!("{prefix}.{k}"), m)));
        };
        add("zscore", self.zscore.problems());
        add("seasonal", self.seasonal.problems());
        add("trend", self.trend.problems());
        add("variance", self.variance.problems());
        add("iforest", self.iforest.problems());
        add("drift", self.drift.problems());
        add("art", self.art.problems());
        let f = &self.fusion;
        let w = f.weights.as_array();
        for (k, v) in DetectorKind::ALL.iter().zip(w) {
            if !(0.0..=1.0).contains(&v) {
                out.push((
                    format!("fusion.weights.{}", k.name()),
                    "must be in [0, 1]".to_string(),
                ));
            }
        }
        if w.iter().all(|v| *v == 0.0) {
            out.push((
                "fusion.weights".to_string(),
                "at least one detector must have a weight > 0".to_string(),
            ));
        }
        if !ge(f.false_alarm_burst, 1.0) {
            out.push((
                "fusion.false_alarm_burst".to_string(),
                "must be >= 1 (one anomaly at least)".to_string(),
            ));
        }
        if !(f.instant_score > 0.0 && f.instant_score <= 1.0) {
            out.push((
                "fusion.instant_score".to_string(),
                "must be in (0, 1]".to_string(),
            ));
        }
        if !(0.0..=1.0).contains(&f.calibration_anomaly_weight) {
            out.push((
                "fusion.calibration_anomaly_weight".to_string(),
                "must be in [0, 1]".to_string(),
            ));
        }
        if !(f.alert_threshold > 0.0 && f.alert_threshold <= 1.0) {
            out.push((
                "fusion.alert_threshold".to_string(),
                "must be in (0, 1]".to_string(),
            ));
        }
        if !ge(f.rearm_ratio, 1.0) {
            out.push(("fusion.rearm_ratio".to_string(), "must be >= 1".to_string()));
        }
        if !(0.0..=1.0).contains(&f.recurrence_event_score) || f.recurrence_event_score == 0.0 {
            out.push((
                "fusion.recurrence_event_score".to_string(),
                "must be in (0, 1]".to_string(),
            ));
        }
        if f.recurrence_events > 256 {
            out.push((
                "fusion.recurrence_events".to_string(),
                "must be <= 256".to_string(),
            ));
        }
        if !ge(f.recurrence_tolerance_ratio, 0.0)
            || !ge(f.recurrence_tolerance_steps, 0.0)
            || !ge(f.recurrence_min_interval_steps, 0.0)
        {
            out.push((
                "fusion.recurrence_tolerance_ratio".to_string(),
                "recurrence tolerances and min interval must be >= 0".to_string(),
            ));
        }
        if !(0.0..=1.0).contains(&f.recurrence_discount) {
            out.push((
                "fusion.recurrence_discount".to_string(),
                "must be in [0, 1]".to_string(),
            ));
        }
        if !gt(f.band_sd, 0.0) {
            out.push(("fusion.band_sd".to_string(), "must be > 0".to_string()));
        }
        if !(gt(f.calibration_tolerated_repeats, 0.0)
            && f.calibration_tolerated_repeats.is_finite())
        {
            // At 0 (or infinity) a score would calibrate to 0 / 0 (or ∞ / ∞).
            out.push((
                "fusion.calibration_tolerated_repeats".to_string(),
                "must be a finite number > 0".to_string(),
            ));
        }
        out
    }

    /// Scores one point of a series (event time `ts_ms`), then lets every detector learn it.
    pub fn update(&self, st: &mut AnomalyState, ts_ms: i64, value: f64) -> AnomalyOutput {
        let f = &self.fusion;
        let w = f.weights.as_array();
        let need_all = w[4] > 0.0;
        let mut outs = [DetectorOutput::default(); DETECTORS];
        if !value.is_finite() {
            return AnomalyOutput {
                score: 0.0,
                raw_score: 0.0,
                alert: false,
                per_detector: outs,
                explanation: AnomalyExplanation::default(),
            };
        }
        if w[0] > 0.0 || need_all {
            outs[0] = self.zscore.update(&mut st.zscore, value);
        }
        // The seasonal baseline always runs: the others see the deseasonalised value.
        let phased = self.seasonal.update_phased(&mut st.seasonal, ts_ms, value);
        outs[1] = phased.output;
        let (component, seasonal_sd) = (phased.component, phased.spread_sd);
        let adjusted = value - component;
        if w[2] > 0.0 || need_all {
            outs[2] = self.trend.update(&mut st.trend, ts_ms, adjusted);
            if let Some(e) = outs[2].expected.as_mut() {
                *e += component;
            }
        }
        if w[3] > 0.0 || need_all {
            outs[3] = self
                .variance
                .update_split(&mut st.variance, adjusted, value);
        }
        if need_all {
            let feats: [f32; FEATURES] = [
                outs[1].deviation.clamp(-12.0, 12.0) as f32,
                outs[2].deviation.clamp(-12.0, 12.0) as f32,
                outs[3].deviation.clamp(-12.0, 12.0) as f32,
                outs[0].deviation.clamp(-12.0, 12.0) as f32,
            ];
            let forest = st.iforest.get_or_insert_with(Box::default);
            outs[4] = self.iforest.update(forest, &feats);
        }
        if w[5] > 0.0 {
            let step_ms = st.seasonal.step.step_ms();
            outs[5] = self.drift.update(&mut st.drift, adjusted, step_ms);
        }
        // The shape detector's score without the echo of an earlier novel window.
        let mut art_fresh = 0.0;
        if w[6] > 0.0 {
            (outs[6], art_fresh) = self.art.update(&mut st.art, adjusted);
        }

        let fs = &mut st.fusion;
        fs.count = fs.count.saturating_add(1);
        let warm = fs.count > f.warmup_points;

        // Calibrate each detector against this series' own recent scores (novelty): a score the
        // series reached `k` times recently keeps `1 / (1 + k / tolerated)` of itself. A point the
        // detector alone would alert on is learnt with a small weight, so a real anomaly that
        // repeats is not discounted as usual after a few occurrences.
        let mut contrib = [0.0f64; DETECTORS];
        if f.calibration_window_points > 0 && fs.hist.len() != DETECTORS * CAL_BINS {
            fs.hist = vec![0.0; DETECTORS * CAL_BINS];
            fs.hist_gain = 1.0;
        }
        let step_ms = st.seasonal.step.step_ms();
        let in_points = |points: u32, secs: u64| -> f64 {
            let by_time = if step_ms > 0 {
                secs as f64 * 1000.0 / step_ms as f64
            } else {
                0.0
            };
            f64::from(points).max(by_time).max(1.0)
        };
        let cal_window = in_points(f.calibration_window_points, f.calibration_window_secs);
        let refractory = in_points(f.refractory_points, f.refractory_secs).min(1e6) as u32;
        // Every bin decays by `decay` per point: the stored bins are the true ones times a gain,
        // so the decay divides the gain once instead of multiplying 16 bins per detector.
        let decay = (1.0 - 1.0 / cal_window).max(1.0 / MAX_HIST_GAIN);
        let gain_before = if fs.hist_gain > 0.0 {
            fs.hist_gain
        } else {
            1.0
        };
        let gain_after = gain_before / decay;
        // `s / (1 + above / tolerated)` with `above = Σ bins / gain`, in one division.
        let tolerated_scaled = gain_before * f.calibration_tolerated_repeats;
        for i in 0..DETECTORS {
            if w[i] == 0.0 {
                continue;
            }
            let s = outs[i].score.clamp(0.0, 1.0);
            let mut c = s;
            if f.calibration_window_points > 0 {
                let h = &mut fs.hist[i * CAL_BINS..(i + 1) * CAL_BINS];
                let bin = cal_bin(s);
                let above_scaled = sum_from(h, bin);
                c = s * tolerated_scaled / (tolerated_scaled + above_scaled);
                let weight = if w[i] * c >= f.alert_threshold {
                    f.calibration_anomaly_weight
                } else {
                    1.0
                };
                h[bin] = (f64::from(h[bin]) + weight * gain_after) as f32;
            }
            contrib[i] = w[i] * c;
        }
        if f.calibration_window_points > 0 {
            fs.hist_gain = gain_after;
            if gain_after > MAX_HIST_GAIN {
                // Fold the gain back into the bins (about once per 20 windows of points).
                let k = 1.0 / gain_after;
                for v in &mut fs.hist {
                    *v = (f64::from(*v) * k) as f32;
                }
                fs.hist_gain = 1.0;
            }
        }
        let mut raw = combine(f.combine, &contrib);
        // What confirms an anomaly: the same score with only the shape detector's fresh novelty.
        let mut fresh_raw = raw;
        if outs[6].score > art_fresh {
            let mut c = contrib;
            c[6] *= art_fresh / outs[6].score;
            fresh_raw = combine(f.combine, &c);
        }

        if !warm {
            raw = 0.0;
            fresh_raw = 0.0;
        }
        if recurrence(f, fs, ts_ms, raw, step_ms) {
            raw *= f.recurrence_discount;
            fresh_raw *= f.recurrence_discount;
        }

        // A blip is not an incident: unless it is strong, an anomaly must last `confirm_points`
        // more points before it alerts (on the last of them). A point counts towards that only
        // with evidence of its own, not the echo of the blip in the windows that still hold it.
        fs.run = if fresh_raw >= f.alert_threshold {
            fs.run.saturating_add(1)
        } else {
            0
        };
        // Since when: the anomaly began where the score first rose most of the way to the line.
        if raw < ONSET_RATIO * f.alert_threshold {
            fs.onset_ms = 0;
        } else if fs.onset_ms == 0 {
            fs.onset_ms = ts_ms;
        }
        let confirmed =
            f.confirm_points == 0 || fs.run > f.confirm_points || raw >= f.instant_score;
        // The false-alarm budget: about one anomaly per `budget` points per series.
        let budget = in_points(f.false_alarm_points, f.false_alarm_secs);
        if f.false_alarm_points > 0 {
            fs.spent = (f64::from(fs.spent) - 1.0 / budget).max(0.0) as f32;
        }
        let affordable = f.false_alarm_points == 0
            || f64::from(fs.spent) + 1.0 <= f.false_alarm_burst
            || raw >= f.instant_score;

        // One anomaly, one alert.
        let mut score = raw;
        let mut alert = false;
        if fs.refractory_left > 0 {
            let n = f64::from(refractory.max(fs.refractory_left).max(1));
            let elapsed = n - f64::from(fs.refractory_left);
            fs.refractory_left -= 1;
            if raw >= f.alert_threshold && raw > fs.last_alert_raw * f.rearm_ratio && affordable {
                alert = true;
            } else {
                score = raw * (elapsed / n).powf(f.refractory_recovery_power);
            }
        } else if raw >= f.alert_threshold && confirmed && affordable {
            alert = true;
        }
        if alert {
            fs.refractory_left = if f.refractory_points == 0 {
                0
            } else {
                refractory
            };
            fs.last_alert_raw = raw;
            if f.false_alarm_points > 0 {
                fs.spent += 1.0;
            }
        }

        // Explanation.
        let mut top = None;
        let mut best = 0.0;
        for (k, c) in DetectorKind::ALL.iter().zip(contrib) {
            if c > best {
                best = c;
                top = Some(*k);
            }
        }
        let (expected, sd, dev) = if let Some(e) = outs[1].expected {
            (Some(e), Some(seasonal_sd), outs[1].deviation)
        } else if let Some(e) = outs[2].expected {
            (Some(e), None, outs[2].deviation)
        } else {
            (outs[0].expected, None, outs[0].deviation)
        };
        let band = match (expected, sd) {
            (Some(e), Some(sd)) => Some((e - f.band_sd * sd, e + f.band_sd * sd)),
            _ => None,
        };
        AnomalyOutput {
            score,
            raw_score: raw,
            alert,
            per_detector: outs,
            explanation: AnomalyExplanation {
                top,
                contributions: contrib,
                expected,
                band,
                deviation_sd: dev,
                since_ms: (fs.onset_ms != 0).then_some(fs.onset_ms),
            },
        }
    }
}

/// Combines weighted, calibrated detector scores into one (see [`Combine`]).
fn combine(how: Combine, c: &[f64; DETECTORS]) -> f64 {
    let noisy_or = |it: &mut dyn Iterator<Item = f64>| {
        1.0 - it.fold(1.0, |k, x| k * (1.0 - x.clamp(0.0, 1.0)))
    };
    match how {
        Combine::NoisyOr => noisy_or(&mut c.iter().copied()),
        Combine::Max => c.iter().fold(0.0f64, |m, x| m.max(*x)),
        Combine::Grouped => {
            // z-score, seasonal and trend score one residual: the strongest of them counts once.
            let residual = c[0].max(c[1]).max(c[2]);
            noisy_or(&mut std::iter::once(residual).chain(c[3..].iter().copied()))
        }
    }
}

/// Tracks event starts (upward crossings of `recurrence_event_score` by the fused score) and says
/// whether the event in progress is part of a rhythm: events also started `d`, `2d`, ...
/// `(min_repeats + 1) d` earlier, for the interval `d` to one of the remembered events. A regular
/// job (a nightly batch, a spike every 100 points) is then known behaviour, while an event that
/// breaks the rhythm (earlier, denser, or after a long pause) still scores in full.
fn recurrence(f: &FusionConfig, fs: &mut FusionState, ts_ms: i64, raw: f64, step_ms: i64) -> bool {
    if f.recurrence_min_repeats == 0 || f.recurrence_events == 0 {
        return false;
    }
    let level = f.recurrence_event_score;
    if raw < level {
        fs.recurring = false;
    } else if fs.prev_raw < level {
        // An event starts here.
        let step = step_ms.max(1) as f64;
        let tol_abs = f.recurrence_tolerance_steps * step;
        let min_d = f.recurrence_min_interval_steps * step;
        let near = |events: &[i64], target: f64, tol: f64| {
            events.iter().any(|e| (*e as f64 - target).abs() <= tol)
        };
        let t = ts_ms as f64;
        let oldest = fs.events_ms.first().map_or(t, |e| *e as f64);
        fs.recurring = fs.events_ms.iter().any(|e| {
            let d = t - *e as f64;
            if d < min_d.max(1.0) {
                return false;
            }
            (2..=f.recurrence_min_repeats + 1).all(|m| {
                let md = f64::from(m) * d;
                let tol = tol_abs.max(f.recurrence_tolerance_ratio * md);
                t - md >= oldest - tol && near(&fs.events_ms, t - md, tol)
            })
        });
        let cap = f.recurrence_events as usize;
        if fs.events_ms.len() >= cap {
            fs.events_ms.remove(0);
        }
        fs.events_ms.push(ts_ms);
    }
    fs.prev_raw = raw;
    fs.recurring
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testdata::{daily, Noise, DAY, STEP_MS};

    /// Normal part: 6 days of a noisy daily cycle; the anomaly starts at `ONSET`.
    const ONSET: usize = 6 * DAY;

    fn base(seed: u64) -> Vec<(i64, f64)> {
        daily(7 * DAY, 100.0, 30.0, 2.0, seed)
    }

    /// Every point of `pts` through a fresh state.
    fn run(cfg: &AnomalyConfig, pts: &[(i64, f64)]) -> Vec<AnomalyOutput> {
        let mut st = AnomalyState::default();
        pts.iter()
            .map(|(t, v)| cfg.update(&mut st, *t, *v))
            .collect()
    }

    /// Alerts in the normal part (after warm-up) and whether one fired within `within` points of onset.
    fn check(pts: &[(i64, f64)], within: usize) -> (usize, bool) {
        let out = run(&AnomalyConfig::default(), pts);
        let false_alerts = out[2 * DAY..ONSET].iter().filter(|o| o.alert).count();
        let hit = out[ONSET..(ONSET + within).min(out.len())]
            .iter()
            .any(|o| o.alert);
        (false_alerts, hit)
    }

    fn assert_detected(name: &str, pts: &[(i64, f64)], within: usize) {
        let (fa, hit) = check(pts, within);
        assert!(hit, "{name}: not detected within {within} points");
        assert!(fa <= 2, "{name}: {fa} false alerts in 4 normal days");
    }

    #[test]
    fn spike() {
        let mut p = base(1);
        p[ONSET].1 += 40.0;
        assert_detected("spike", &p, 1);
    }

    #[test]
    fn level_shift() {
        let mut p = base(2);
        p[ONSET..].iter_mut().for_each(|x| x.1 += 25.0);
        assert_detected("level shift", &p, 6);
    }

    #[test]
    fn seasonal_break() {
        // The day's cycle runs half a day out of phase: values stay in the normal range.
        let mut p = base(3);
        let shifted = daily(7 * DAY + DAY / 2, 100.0, 30.0, 2.0, 3);
        for i in ONSET..p.len() {
            p[i].1 = shifted[i + DAY / 2].1;
        }
        assert_detected("seasonal break", &p, DAY / 4);
    }

    #[test]
    fn variance_change() {
        let mut p = base(4);
        let mut z = Noise::new(44);
        p[ONSET..].iter_mut().for_each(|x| x.1 += 12.0 * z.normal());
        assert_detected("variance change", &p, 24);
    }

    #[test]
    fn flatline() {
        let mut p = base(5);
        let v = p[ONSET].1;
        p[ONSET..].iter_mut().for_each(|x| x.1 = v);
        assert_detected("flatline", &p, 36);
    }

    #[test]
    fn dropout_to_zero() {
        let mut p = base(6);
        p[ONSET..ONSET + 12].iter_mut().for_each(|x| x.1 = 0.0);
        assert_detected("dropout", &p, 1);
    }

    #[test]
    fn trend_acceleration() {
        // A slow steady growth, then it accelerates.
        let mut z = Noise::new(7);
        let p: Vec<(i64, f64)> = (0..7 * DAY)
            .map(|i| {
                let extra = if i >= ONSET {
                    0.002 * ((i - ONSET) as f64).powi(2)
                } else {
                    0.0
                };
                (
                    i as i64 * STEP_MS,
                    50.0 + 0.01 * i as f64 + extra + z.normal(),
                )
            })
            .collect();
        assert_detected("trend acceleration", &p, 72);
    }

    #[test]
    fn clean_series_bounded_false_alerts_and_state_budget() {
        let cfg = AnomalyConfig::default();
        let mut st = AnomalyState::default();
        let mut alerts = 0;
        for (t, v) in daily(20 * DAY, 100.0, 30.0, 2.0, 8).into_iter() {
            alerts += usize::from(cfg.update(&mut st, t, v).alert);
        }
        assert!(alerts <= 6, "{alerts} alerts in 20 clean days");
        assert!(
            st.state_bytes() <= 3 * 1024,
            "state {} bytes",
            st.state_bytes()
        );
        // With the isolation forest on too, within the bound of the module docs.
        let all = AnomalyConfig {
            fusion: FusionConfig {
                weights: DetectorWeights {
                    iforest: 0.2,
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        };
        let mut st = AnomalyState::default();
        for (t, v) in daily(20 * DAY, 100.0, 30.0, 2.0, 8).into_iter() {
            all.update(&mut st, t, v);
        }
        assert!(st.iforest.is_some() && st.state_bytes() <= 12 * 1024);
    }

    #[test]
    fn recurring_spikes_are_discounted_off_rhythm_spike_is_not() {
        // A daily job: a spike at the same time every day is known behaviour; one at another
        // hour of the day is not.
        let mut p = daily(10 * DAY, 100.0, 30.0, 2.0, 12);
        for d in 1..10 {
            p[d * DAY + 100].1 += 40.0;
        }
        p[8 * DAY + 200].1 += 40.0;
        let cfg = AnomalyConfig::default();
        let mut st = AnomalyState::default();
        let out: Vec<AnomalyOutput> = p.iter().map(|(t, v)| cfg.update(&mut st, *t, *v)).collect();
        // Control: without the recurrence check the same spikes do score.
        let off = AnomalyConfig {
            fusion: FusionConfig {
                recurrence_min_repeats: 0,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut st_off = AnomalyState::default();
        let out_off: Vec<AnomalyOutput> = p
            .iter()
            .map(|(t, v)| off.update(&mut st_off, *t, *v))
            .collect();
        assert!((6..10).any(|d| out_off[d * DAY + 100].score >= 0.5));
        let late: Vec<f64> = (6..10).map(|d| out[d * DAY + 100].score).collect();
        assert!(
            late.iter().all(|s| *s < 0.5),
            "recurring spikes still score {late:?}"
        );
        assert!(out[8 * DAY + 200].alert, "off-rhythm spike missed");
        assert!(
            st.fusion.events_ms.len() <= cfg.fusion.recurrence_events as usize,
            "event memory unbounded"
        );
    }

    /// One-minute points of an error rate: 0.2 % with noise, a benign blip of 2-3x every ~150
    /// points; from `onset` on, a sustained rise to 1.2 % for an hour.
    fn error_rate(days: usize, onset: Option<usize>, seed: u64) -> Vec<(i64, f64)> {
        let mut z = Noise::new(seed);
        (0..days * 1440)
            .map(|i| {
                let mut v = (0.2 * (1.0 + 0.3 * z.normal())).max(0.0);
                if (i * 7919 + seed as usize).is_multiple_of(150) {
                    v = 0.2 * (2.0 + (i % 3) as f64 * 0.5);
                }
                if onset.is_some_and(|o| (o..o + 60).contains(&i)) {
                    v = 1.2 * (1.0 + 0.3 * z.normal());
                }
                (i as i64 * 60_000, v)
            })
            .collect()
    }

    #[test]
    fn benign_blips_do_not_page_where_a_blip_is_not_an_incident() {
        let blips = AnomalyConfig {
            fusion: FusionConfig {
                confirm_points: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        let onset = 5 * 1440 + 300;
        let pts = error_rate(6, Some(onset), 21);
        let out = run(&blips, &pts);
        let false_alarms = out[1440..onset].iter().filter(|o| o.alert).count();
        // 6,060 points with ~40 blips: at most one page (0.17 per 1,000 points).
        assert!(false_alarms <= 1, "{false_alarms} false alarms on blips");
        let first = (onset..onset + 60).find(|i| out[*i].alert);
        assert!(
            first.is_some_and(|i| i <= onset + 2),
            "sustained rise not paged at once: {first:?}"
        );
    }

    #[test]
    fn confirmation_waits_for_a_second_point_unless_the_score_is_instant() {
        let confirm = AnomalyConfig {
            fusion: FusionConfig {
                confirm_points: 1,
                instant_score: 1.0,
                ..Default::default()
            },
            ..Default::default()
        };
        // Over 40 series, a one-point blip pages at once without confirmation and at most one
        // time in ten with it, though the blip stays for a while in the windows of the detectors that see
        // windows (the shape detector's echo once made 39 of 40 blips page).
        let blip_of = |seed: u64| {
            let mut b = base(seed);
            b[ONSET].1 += 40.0;
            b
        };
        let paged = |cfg: &AnomalyConfig| {
            (40..80)
                .filter(|seed| {
                    run(cfg, &blip_of(*seed))[ONSET..ONSET + 12]
                        .iter()
                        .any(|o| o.alert)
                })
                .count()
        };
        assert_eq!(paged(&AnomalyConfig::default()), 40);
        let confirmed = paged(&confirm);
        assert!(confirmed <= 4, "{confirmed} of 40 one-point blips paged");
        let blip = blip_of(50);
        let mut lasting = base(50);
        lasting[ONSET].1 += 40.0;
        lasting[ONSET + 1].1 += 40.0;
        let out = run(&confirm, &lasting);
        assert!(
            !out[ONSET].alert && out[ONSET + 1].alert,
            "a two-point anomaly not paged on its second point"
        );
        // An instant score pages on the first point, confirmed or not.
        let instant = AnomalyConfig {
            fusion: FusionConfig {
                instant_score: 0.62,
                ..confirm.fusion.clone()
            },
            ..confirm.clone()
        };
        assert!(run(&instant, &blip)[ONSET].alert);
    }

    #[test]
    fn a_season_is_blended_in_not_switched_on() {
        // Clean daily cycles: the season is installed after two days. Switched on at once, the
        // de-seasonalised input jumps and the install raises an alert on some seeds.
        let blended = AnomalyConfig::default();
        let mut alerts = 0;
        for seed in 30..36 {
            let mut st = AnomalyState::default();
            for (i, (t, v)) in daily(5 * DAY, 100.0, 30.0, 2.0, seed).iter().enumerate() {
                let o = blended.update(&mut st, *t, *v);
                if i >= DAY && o.alert {
                    alerts += 1;
                }
            }
            assert!(st.seasonal.period_ms > 0, "seed {seed}: no season found");
        }
        assert!(alerts <= 1, "{alerts} alerts over 6 clean series");
    }

    #[test]
    fn time_windows_scale_with_the_resolution() {
        // One-minute points: a level shift alerts once, not every 24 minutes of the refractory
        // period as 24 points would allow.
        let mut z = Noise::new(40);
        let pts: Vec<(i64, f64)> = (0..4 * 1440)
            .map(|i| {
                let shift = if i >= 3 * 1440 { 30.0 } else { 0.0 };
                (i as i64 * 60_000, 100.0 + shift + 2.0 * z.normal())
            })
            .collect();
        let out = run(&AnomalyConfig::default(), &pts);
        let after: Vec<usize> = (3 * 1440..3 * 1440 + 240)
            .filter(|i| out[*i].alert)
            .collect();
        assert_eq!(after.len(), 1, "alerts at {after:?}");
        // The explanation says since when: the first point of the run of high scores.
        let e = out[after[0]].explanation;
        let since = e.since_ms.expect("since");
        assert!(
            since <= pts[after[0]].0 && since >= pts[3 * 1440].0,
            "{since}"
        );
    }

    #[test]
    fn deterministic_and_restorable() {
        let cfg = AnomalyConfig::default();
        let pts = base(9);
        let mut a = AnomalyState::default();
        let mut b = AnomalyState::default();
        for (i, (t, v)) in pts.iter().enumerate() {
            if i == 3 * DAY {
                // Snapshot/restore through serde (MessagePack, bit-exact) mid-stream changes nothing.
                b = rmp_serde::from_slice(&rmp_serde::to_vec(&b).unwrap()).unwrap();
            }
            let x = cfg.update(&mut a, *t, *v);
            let y = cfg.update(&mut b, *t, *v);
            assert_eq!(x.score.to_bits(), y.score.to_bits(), "point {i}");
            assert_eq!(x.alert, y.alert);
        }
        assert_eq!(a, b);
    }

    /// The calibration as it was first written, every bin decayed at every point, against the
    /// histograms kept under one gain: the same contributions, across many folds of the gain, and
    /// from a state saved before the gain existed.
    #[test]
    fn calibration_under_one_gain_matches_decaying_every_bin() {
        let mut cfg = AnomalyConfig::default();
        // A short window: the gain passes `MAX_HIST_GAIN` every ~70 points.
        cfg.fusion.calibration_window_points = 4;
        cfg.fusion.calibration_window_secs = 0;
        let f = &cfg.fusion;
        let w = f.weights.as_array();
        let decay = 1.0 - 1.0 / 4.0;
        let mut pts = base(4);
        pts.truncate(3 * DAY);
        let mut eager = vec![0.0f32; DETECTORS * CAL_BINS];
        let mut st = AnomalyState::default();
        let mut folds = 0;
        for (n, (t, v)) in pts.iter().enumerate() {
            if n == DAY {
                // A state from before the gain: true bins, no gain.
                let k = 1.0 / st.fusion.hist_gain;
                for b in &mut st.fusion.hist {
                    *b = (f64::from(*b) * k) as f32;
                }
                st.fusion.hist_gain = 0.0;
            }
            let gain = st.fusion.hist_gain;
            let out = cfg.update(&mut st, *t, *v);
            folds += usize::from(st.fusion.hist_gain < gain);
            for i in (0..DETECTORS).filter(|i| w[*i] > 0.0) {
                let s = out.per_detector[i].score.clamp(0.0, 1.0);
                let h = &mut eager[i * CAL_BINS..(i + 1) * CAL_BINS];
                let bin = cal_bin(s);
                let above: f64 = h[bin..].iter().map(|v| f64::from(*v)).sum();
                let c = s / (1.0 + above / f.calibration_tolerated_repeats);
                for v in h.iter_mut() {
                    *v = (f64::from(*v) * decay) as f32;
                }
                let weight = if w[i] * c >= f.alert_threshold {
                    f.calibration_anomaly_weight
                } else {
                    1.0
                };
                h[bin] += weight as f32;
                let got = out.explanation.contributions[i];
                assert!(
                    (got - w[i] * c).abs() <= 1e-5 * (w[i] * c).max(1e-3),
                    "point {n}, {}: {got} against {}",
                    DetectorKind::ALL[i].name(),
                    w[i] * c
                );
            }
        }
        assert!(folds >= 8, "the gain was folded {folds} times");
    }

    #[test]
    fn config_validation_and_unknown_keys() {
        assert!(AnomalyConfig::default().problems().is_empty());
        let bad = AnomalyConfig {
            fusion: FusionConfig {
                alert_threshold: 0.0,
                calibration_tolerated_repeats: 0.0,
                ..Default::default()
            },
            iforest: IForestConfig {
                trees: 0,
                ..Default::default()
            },
            ..Default::default()
        };
        let keys: Vec<String> = bad.problems().into_iter().map(|(k, _)| k).collect();
        assert!(keys.contains(&"fusion.alert_threshold".to_string()));
        assert!(keys.contains(&"iforest.trees".to_string()));
        assert!(keys.contains(&"fusion.calibration_tolerated_repeats".to_string()));
        assert!(
            serde_json::from_str::<AnomalyConfig>(r#"{"fusion":{"alert_treshold":0.5}}"#).is_err()
        );
        let c: AnomalyConfig =
            serde_json::from_str(r#"{"fusion":{"weights":{"iforest":0}}}"#).unwrap();
        assert_eq!(c.fusion.weights.iforest, 0.0);
        assert_eq!(c.fusion.weights.seasonal, 1.0);
    }

    #[test]
    fn explanation_names_a_detector_and_a_band() {
        let cfg = AnomalyConfig::default();
        let mut st = AnomalyState::default();
        let mut p = base(10);
        p[ONSET].1 += 40.0;
        let mut last = None;
        for (i, (t, v)) in p.iter().enumerate() {
            let o = cfg.update(&mut st, *t, *v);
            if i == ONSET {
                last = Some(o);
            }
        }
        let o = last.unwrap();
        assert!(o.alert);
        let (lo, hi) = o.explanation.band.unwrap();
        assert!(lo < o.explanation.expected.unwrap() && hi < p[ONSET].1);
        assert!(o.explanation.top.is_some());
        assert!(o.explanation.deviation_sd > 5.0);
    }
}
