//! Silences: matchers, a time span, who and why. Pending before `starts_at`, active until
//! `ends_at`, expired after (expiring one sets `ends_at` to now). A silenced alert is recorded,
//! not notified; when the silence ends on a still-firing alert, the alert is notified.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::matchers::{LabelMatcher, MatcherDef};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<MatcherDef>,
    /// ms since the epoch.
    pub starts_at: i64,
    pub ends_at: i64,
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl SilenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceState::Pending => "pending",
            SilenceState::Active => "active",
            SilenceState::Expired => "expired",
        }
    }
}

/// A silence's id from the request that creates it: a UUID (version 4 layout, as
/// Alertmanager's), the same for the request's retries.
pub fn new_id(request_id: &str) -> String {
    use sha2::Digest;
    let mut b: [u8; 16] = sha2::Sha256::digest(request_id.as_bytes())[..16]
        .try_into()
        .expect("16 bytes");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

impl Silence {
    pub fn state(&self, now: i64) -> SilenceState {
        if now < self.starts_at {
            SilenceState::Pending
        } else if now < self.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }

    /// What is wrong with a new silence, if anything (Alertmanager's rules).
    pub fn validate(&self) -> Result<(), String> {
        if self.matchers.is_empty() {
            return Err("a silence needs at least one matcher".into());
        }
        for m in &self.matchers {
            m.compile()?;
        }
        if self.matchers.iter().all(MatcherDef::matches_empty) {
            return Err(
                "every matcher matches an empty label: the silence would mute every alert".into(),
            );
        }
        if self.ends_at <= self.starts_at {
            return Err("ends_at must be after starts_at".into());
        }
        if self.created_by.trim().is_empty() {
            return Err("a silence needs its creator (created_by)".into());
        }
        Ok(())
    }
}

/// The silences, compiled, with the alerts' lookups kept cheap: silences whose matchers include
/// an equality are found through that label's value; the others are checked one by one.
#[derive(Debug, Default)]
pub struct Silences {
    all: BTreeMap<String, (Silence, Vec<LabelMatcher>)>,
    /// (label, value) of an equality matcher → silence ids.
    by_label: HashMap<(String, String), Vec<String>>,
    /// Silences without an equality matcher.
    scan: Vec<String>,
}

impl Silences {
    pub fn insert(&mut self, s: Silence) -> Result<(), String> {
        let compiled: Vec<LabelMatcher> = s
            .matchers
            .iter()
            .map(MatcherDef::compile)
            .collect::<Result<_, _>>()?;
        self.remove(&s.id);
        match compiled
            .iter()
            .find_map(|m| m.equals().map(|v| (m.name.clone(), v.to_string())))
        {
            Some(key) => self.by_label.entry(key).or_default().push(s.id.clone()),
            None => self.scan.push(s.id.clone()),
        }
        self.all.insert(s.id.clone(), (s, compiled));
        Ok(())
    }

    pub fn remove(&mut self, id: &str) -> Option<Silence> {
        let (s, compiled) = self.all.remove(id)?;
        match compiled
            .iter()
            .find_map(|m| m.equals().map(|v| (m.name.clone(), v.to_string())))
        {
            Some(key) => {
                if let Some(ids) = self.by_label.get_mut(&key) {
                    ids.retain(|i| i != id);
                    if ids.is_empty() {
                        self.by_label.remove(&key);
                    }
                }
            }
            None => self.scan.retain(|i| i != id),
        }
        Some(s)
    }

    pub fn get(&self, id: &str) -> Option<&Silence> {
        self.all.get(id).map(|(s, _)| s)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Silence> {
        self.all.values().map(|(s, _)| s)
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Ids of the active silences that match these labels, sorted.
    pub fn silencing(&self, labels: &BTreeMap<String, String>, now: i64) -> Vec<String> {
        let mut out: Vec<String> = labels
            .iter()
            .filter_map(|(k, v)| self.by_label.get(&(k.clone(), v.clone())))
            .flatten()
            .chain(self.scan.iter())
            .filter(|id| {
                self.all.get(*id).is_some_and(|(s, m)| {
                    s.state(now) == SilenceState::Active && m.iter().all(|m| m.matches(labels))
                })
            })
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The next time a silence starts or ends after `now`.
    pub fn next_change(&self, now: i64) -> Option<i64> {
        self.all
            .values()
            .flat_map(|(s, _)| [s.starts_at, s.ends_at])
            .filter(|t| *t > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silence(id: &str, matchers: &[&str], starts: i64, ends: i64) -> Silence {
        Silence {
            id: id.into(),
            matchers: matchers
                .iter()
                .map(|m| MatcherDef::parse(m).unwrap())
                .collect(),
            starts_at: starts,
            ends_at: ends,
            created_by: "ops".into(),
            comment: String::new(),
            updated_at: starts,
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn states_follow_the_time_span() {
        let s = silence("a", &["exchange=binance"], 100, 200);
        assert_eq!(s.state(99), SilenceState::Pending);
        assert_eq!(s.state(100), SilenceState::Active);
        assert_eq!(s.state(200), SilenceState::Expired);
    }

    #[test]
    fn matching_uses_the_index_and_the_scan_list_alike() {
        let mut all = Silences::default();
        all.insert(silence(
            "eq",
            &["exchange=binance", "alertname=~md_.*"],
            0,
            1000,
        ))
        .unwrap();
        all.insert(silence("re", &["exchange=~okx|deribit"], 0, 1000))
            .unwrap();
        all.insert(silence("later", &["exchange=binance"], 500, 1000))
            .unwrap();
        let b = labels(&[("exchange", "binance"), ("alertname", "md_delay")]);
        assert_eq!(all.silencing(&b, 10), ["eq"]);
        assert_eq!(all.silencing(&b, 600), ["eq", "later"]);
        assert_eq!(all.silencing(&labels(&[("exchange", "okx")]), 10), ["re"]);
        assert!(all.silencing(&b, 1000).is_empty());
        assert_eq!(all.next_change(10), Some(500));
        all.remove("eq");
        assert_eq!(all.silencing(&b, 600), ["later"]);
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn validation_refuses_what_alertmanager_refuses() {
        assert!(silence("x", &["a=b"], 0, 10).validate().is_ok());
        assert!(silence("x", &[], 0, 10).validate().is_err());
        assert!(silence("x", &["a=~.*"], 0, 10).validate().is_err());
        assert!(silence("x", &["a=b"], 10, 10).validate().is_err());
        let mut s = silence("x", &["a=b"], 0, 10);
        s.created_by = " ".into();
        assert!(s.validate().is_err());
    }
}
