//! `<field> <op> <number>` conditions, e.g. `value > 85` or `score >= 0.8`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a condition looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Field {
    /// The sample value.
    Value,
    /// The anomaly score in [0, 1] from the detectors.
    Score,
    /// The signed rolling z-score.
    Zscore,
    /// 1 on the point where the fused detectors raise an anomaly, else 0.
    Anomaly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

/// A compiled condition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    pub field: Field,
    pub op: Op,
    pub threshold: f64,
}

impl Condition {
    pub fn parse(s: &str) -> Result<Condition, String> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [field, op, threshold] = parts[..] else {
            return Err(format!(
                "{s:?}: expected `<value|score|zscore|anomaly> <op> <number>`, e.g. `value > 85`"
            ));
        };
        let field = match field {
            "value" => Field::Value,
            "score" => Field::Score,
            "zscore" => Field::Zscore,
            "anomaly" => Field::Anomaly,
            other => {
                return Err(format!(
                    "unknown field {other:?}: expected value, score, zscore or anomaly"
                ))
            }
        };
        let op = match op {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            other => {
                return Err(format!(
                    "unknown operator {other:?}: expected > >= < <= == !="
                ))
            }
        };
        let threshold: f64 = threshold
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite())
            .ok_or_else(|| format!("{threshold:?} is not a finite number"))?;
        Ok(Condition {
            field,
            op,
            threshold,
        })
    }

    /// Evaluates against a point's value, anomaly score and z-score.
    #[inline]
    pub fn holds(&self, value: f64, score: f64, zscore: f64) -> bool {
        self.holds_with(value, score, zscore, 0.0)
    }

    /// Evaluates with the fused detectors' anomaly flag too.
    #[inline]
    pub fn holds_with(&self, value: f64, score: f64, zscore: f64, anomaly: f64) -> bool {
        let x = match self.field {
            Field::Value => value,
            Field::Score => score,
            Field::Zscore => zscore,
            Field::Anomaly => anomaly,
        };
        match self.op {
            Op::Gt => x > self.threshold,
            Op::Ge => x >= self.threshold,
            Op::Lt => x < self.threshold,
            Op::Le => x <= self.threshold,
            Op::Eq => x == self.threshold,
            Op::Ne => x != self.threshold,
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = match self.field {
            Field::Value => "value",
            Field::Score => "score",
            Field::Zscore => "zscore",
            Field::Anomaly => "anomaly",
        };
        let op = match self.op {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        };
        write!(f, "{field} {op} {}", self.threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_evaluates() {
        let c = Condition::parse("value > 85").unwrap();
        assert!(c.holds(85.5, 0.0, 0.0));
        assert!(!c.holds(85.0, 0.0, 0.0));
        assert!(Condition::parse("value == 0").unwrap().holds(0.0, 0.0, 0.0));
        assert!(Condition::parse("value != 0").unwrap().holds(1.0, 0.0, 0.0));
        assert!(Condition::parse("score >= 0.8")
            .unwrap()
            .holds(0.0, 0.8, 0.0));
        assert!(Condition::parse("zscore < -4")
            .unwrap()
            .holds(0.0, 0.0, -5.0));
        assert!(Condition::parse("value <= 1").unwrap().holds(1.0, 0.0, 0.0));
        assert!(Condition::parse("anomaly == 1")
            .unwrap()
            .holds_with(0.0, 0.0, 0.0, 1.0));
        assert!(!Condition::parse("anomaly == 1")
            .unwrap()
            .holds(0.0, 1.0, 9.0));
        assert_eq!(
            Condition::parse("value >= 2.5").unwrap().to_string(),
            "value >= 2.5"
        );
        assert!(Condition::parse("value >").is_err());
        assert!(Condition::parse("cpu > 1").is_err());
        assert!(Condition::parse("value => 1").is_err());
        assert!(Condition::parse("value > NaN").is_err());
    }
}
