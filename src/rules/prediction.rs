//! Predictions graded and scored: a predictive rule's firing is a prediction that its
//! threshold will be crossed at a time, within its horizon. When the series' value crosses it
//! (its condition starts to hold), the predictions that covered that moment are hits, with the
//! error of their predicted time; when a prediction's horizon passes without a crossing, it was a
//! false alarm; a crossing no rule of the family predicted is a miss. Event time only.

use serde::{Deserialize, Serialize};

/// One prediction on one series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prediction {
    /// When the predictive alert fired.
    pub made_at: i64,
    /// When it said the threshold would be crossed.
    pub predicted_at: i64,
    /// The end of its horizon.
    pub until: i64,
}

/// How a prediction turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Crossed within the horizon; `error_ms` = actual − predicted crossing time.
    Hit { error_ms: i64 },
    /// The horizon passed without a crossing.
    FalseAlarm,
    /// A crossing nothing predicted.
    Miss,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Hit { .. } => "hit",
            Outcome::FalseAlarm => "false_alarm",
            Outcome::Miss => "miss",
        }
    }
}

/// Predictions waiting for their outcome, at most this many per (series, rule): a rule that
/// fires again and again before its horizon passes keeps its newest.
pub const MAX_PENDING: usize = 8;

/// The predictions of one predictive rule on one series, and whether its condition held at
/// the last point. Every series of a predictive rule holds one (a graded rule: one per grade),
/// and most never have a prediction waiting: the list is allocated only while one waits, so
/// the log is 16 bytes that live in the series' rule slot (no pointer to follow per point).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PredictionLog {
    /// Written as a plain list (empty when `None`). Boxed so that the empty case is one word
    /// (a `Vec` is three).
    #[allow(clippy::box_collection)]
    #[serde(with = "pending_list")]
    pending: Option<Box<Vec<Prediction>>>,
    pub crossed: bool,
}

/// `PredictionLog::pending` in checkpoints: a list, as before it was allocated lazily.
#[allow(clippy::box_collection)]
mod pending_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Prediction;

    pub fn serialize<S: Serializer>(
        v: &Option<Box<Vec<Prediction>>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.as_deref().map_or(&[][..], Vec::as_slice).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Box<Vec<Prediction>>>, D::Error> {
        let v = Vec::<Prediction>::deserialize(d)?;
        Ok((!v.is_empty()).then(|| Box::new(v)))
    }
}

impl PredictionLog {
    /// The predictions waiting for their outcome, oldest first.
    pub fn pending(&self) -> &[Prediction] {
        self.pending.as_deref().map_or(&[], Vec::as_slice)
    }

    pub fn predicted(&mut self, p: Prediction) {
        let pending = self.pending.get_or_insert_with(Box::default);
        if pending.len() == MAX_PENDING {
            pending.remove(0);
        }
        pending.push(p);
    }

    /// A point at `ts` whose condition holds (`crossed`) or not: the outcomes it settles go to
    /// `out` as (outcome, time). Returns whether a new crossing happened at `ts` and whether a
    /// pending prediction of this log covered it.
    pub fn on_point(
        &mut self,
        ts: i64,
        crossed: bool,
        out: &mut Vec<(Outcome, i64)>,
    ) -> (bool, bool) {
        let edge = crossed && !self.crossed;
        self.crossed = crossed;
        // Most points find nothing waiting.
        let Some(pending) = self.pending.as_deref_mut() else {
            return (edge, false);
        };
        pending.retain(|p| {
            let gone = p.until < ts;
            if gone {
                out.push((Outcome::FalseAlarm, p.until));
            }
            !gone
        });
        let covered = edge && !pending.is_empty();
        if edge {
            for p in pending.drain(..) {
                out.push((
                    Outcome::Hit {
                        error_ms: ts - p.predicted_at,
                    },
                    ts,
                ));
            }
        }
        if pending.is_empty() {
            self.pending = None;
        }
        (edge, covered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn hits_false_alarms_and_uncovered_crossings() {
        let mut log = PredictionLog::default();
        let mut out = Vec::new();
        // Predicted at 0 for 3h, within 6h; crosses at 4h: a hit, 1h late.
        log.predicted(Prediction {
            made_at: 0,
            predicted_at: 3 * H,
            until: 6 * H,
        });
        assert_eq!(log.on_point(H, false, &mut out), (false, false));
        assert_eq!(log.on_point(4 * H, true, &mut out), (true, true));
        assert_eq!(out, [(Outcome::Hit { error_ms: H }, 4 * H)]);
        // Still above: no new crossing. Back below, then a prediction that never comes true.
        out.clear();
        assert_eq!(log.on_point(5 * H, true, &mut out), (false, false));
        log.on_point(6 * H, false, &mut out);
        log.predicted(Prediction {
            made_at: 6 * H,
            predicted_at: 8 * H,
            until: 9 * H,
        });
        log.on_point(10 * H, false, &mut out);
        assert_eq!(out, [(Outcome::FalseAlarm, 9 * H)]);
        // A crossing with nothing pending: the log says so (its family counts the miss).
        out.clear();
        assert_eq!(log.on_point(11 * H, true, &mut out), (true, false));
        assert!(out.is_empty());
    }

    #[test]
    fn the_list_exists_only_while_a_prediction_waits_and_is_written_as_a_list() {
        /// The log as checkpoints wrote it before the list was allocated lazily.
        #[derive(Serialize)]
        struct Before {
            pending: Vec<Prediction>,
            crossed: bool,
        }
        let mut log = PredictionLog::default();
        let mut out = Vec::new();
        log.on_point(0, false, &mut out);
        assert!(log.pending.is_none());
        log.predicted(Prediction {
            made_at: 0,
            predicted_at: H,
            until: 2 * H,
        });
        assert_eq!(log.pending().len(), 1);
        let before = Before {
            pending: log.pending().to_vec(),
            crossed: false,
        };
        let written = rmp_serde::to_vec(&log).unwrap();
        assert_eq!(written, rmp_serde::to_vec(&before).unwrap());
        assert_eq!(
            rmp_serde::from_slice::<PredictionLog>(&written).unwrap(),
            log
        );
        // Its horizon passes: a false alarm, and the list is gone.
        log.on_point(3 * H, false, &mut out);
        assert_eq!(out, [(Outcome::FalseAlarm, 2 * H)]);
        assert!(log.pending.is_none());
        let empty = Before {
            pending: Vec::new(),
            crossed: true,
        };
        let read: PredictionLog =
            rmp_serde::from_slice(&rmp_serde::to_vec(&empty).unwrap()).unwrap();
        assert!(read.pending.is_none() && read.crossed);
    }
}
