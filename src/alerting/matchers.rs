//! Label matchers: `name=value`, `name!=value`, `name=~regex`, `name!~regex` (regexes anchored,
//! an absent label matching like the empty string, as in Prometheus and Alertmanager).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rules::Matcher;

/// A matcher as written: Alertmanager API v2's shape (`isRegex`, `isEqual`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct MatcherDef {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub is_regex: bool,
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl MatcherDef {
    /// Parses `name=value`, `name!=value`, `name=~regex` or `name!~regex`; the value may be
    /// quoted (`name="a b"`).
    pub fn parse(s: &str) -> Result<MatcherDef, String> {
        let s = s.trim();
        let at = s.find(['=', '!']).ok_or_else(|| {
            format!("{s:?}: expected name=value, name!=value, name=~regex or name!~regex")
        })?;
        let name = s[..at].trim();
        let rest = &s[at..];
        let (is_equal, is_regex, value) = if let Some(v) = rest.strip_prefix("=~") {
            (true, true, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (false, true, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (false, false, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (true, false, v)
        } else {
            return Err(format!(
                "{s:?}: expected name=value, name!=value, name=~regex or name!~regex"
            ));
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        let def = MatcherDef {
            name: name.to_string(),
            value: value.to_string(),
            is_regex,
            is_equal,
        };
        def.compile()?;
        Ok(def)
    }

    pub fn compile(&self) -> Result<LabelMatcher, String> {
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(format!("{:?} is not a label name", self.name));
        }
        let op = match (self.is_equal, self.is_regex) {
            (true, false) => "",
            (false, false) => "!=",
            (true, true) => "=~",
            (false, true) => "!~",
        };
        let matcher = Matcher::parse(&format!("{op}{}", self.value))
            .map_err(|e| format!("matcher on {}: {e}", self.name))?;
        Ok(LabelMatcher {
            name: self.name.clone(),
            matcher,
        })
    }

    /// `name="value"`-style text, for people.
    pub fn display(&self) -> String {
        let op = match (self.is_equal, self.is_regex) {
            (true, false) => "=",
            (false, false) => "!=",
            (true, true) => "=~",
            (false, true) => "!~",
        };
        format!("{}{op}{:?}", self.name, self.value)
    }

    /// True when the matcher matches a missing label (Alertmanager refuses silences made only of
    /// such matchers: they would silence everything).
    pub fn matches_empty(&self) -> bool {
        self.compile()
            .map(|m| m.matches(&BTreeMap::new()))
            .unwrap_or(false)
    }
}

/// A compiled matcher on one label.
#[derive(Debug, Clone)]
pub struct LabelMatcher {
    pub name: String,
    matcher: Matcher,
}

impl LabelMatcher {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matcher
            .matches(labels.get(&self.name).map(String::as_str))
    }

    /// The value an equality matcher requires (for indexes), if it is one.
    pub fn equals(&self) -> Option<&str> {
        match &self.matcher {
            Matcher::Eq(v) => Some(v),
            _ => None,
        }
    }
}

/// True when every matcher matches.
pub fn matches_all(matchers: &[LabelMatcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// Compiles the `label: "<matcher>"` map form of route and inhibition configs (the same syntax
/// as rule files: `binance`, `=~binance|okx`, `!=x`, `!~re`).
pub fn from_map(map: &BTreeMap<String, String>) -> Result<Vec<LabelMatcher>, (String, String)> {
    map.iter()
        .map(|(name, v)| {
            Matcher::parse(v)
                .map(|matcher| LabelMatcher {
                    name: name.clone(),
                    matcher,
                })
                .map_err(|e| (name.clone(), e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_the_four_operators_and_quotes() {
        let l = labels(&[("exchange", "binance"), ("priority", "P1")]);
        for (s, hit) in [
            ("exchange=binance", true),
            ("exchange=\"binance\"", true),
            ("exchange!=binance", false),
            ("exchange=~bin.*", true),
            ("exchange=~bin", false), // anchored
            ("exchange!~okx|deribit", true),
            ("missing=", true), // absent = empty
            ("missing!=", false),
        ] {
            let m = MatcherDef::parse(s).unwrap();
            assert_eq!(m.compile().unwrap().matches(&l), hit, "{s}");
        }
        assert!(MatcherDef::parse("exchange").is_err());
        assert!(MatcherDef::parse("exchange=~(").is_err());
        assert!(MatcherDef::parse("bad name=x").is_err());
        assert!(MatcherDef::parse("missing=").unwrap().matches_empty());
        assert!(!MatcherDef::parse("a=b").unwrap().matches_empty());
        assert_eq!(
            MatcherDef::parse("a =~ \"x|y\"").unwrap().display(),
            "a=~\"x|y\""
        );
    }

    #[test]
    fn the_api_shape_round_trips() {
        let m = MatcherDef::parse("exchange!~okx").unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"name":"exchange","value":"okx","isRegex":true,"isEqual":false}"#
        );
        let back: MatcherDef =
            serde_json::from_str(r#"{"name":"a","value":"b","isRegex":false}"#).unwrap();
        assert!(back.is_equal);
    }
}
