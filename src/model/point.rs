//! The metric point, as published on `prism.metrics.>` and as decoded (borrowing) by ingest.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// An owned metric point: what publishers send (one per message, or an array as a batch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// Metric name, e.g. `cpu_usage_percent`.
    pub name: String,
    /// Label set; order does not matter.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Sample value.
    pub value: f64,
    /// Event time, milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// A point decoded without copying strings out of the message where the format allows it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WirePoint<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(default, borrow)]
    pub labels: LabelPairs<'a>,
    pub value: f64,
    pub timestamp: i64,
}

/// Labels as decoded: a flat list of pairs (a map on the wire), so decoding allocates one vector
/// instead of a tree node per label.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelPairs<'a>(pub Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de: 'a, 'a> Deserialize<'de> for LabelPairs<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for PairsVisitor<'a> {
            type Value = LabelPairs<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of label names to string values")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(4).min(64));
                while let Some((k, v)) = map.next_entry::<CowStr<'a>, CowStr<'a>>()? {
                    pairs.push((k.0, v.0));
                }
                Ok(LabelPairs(pairs))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(LabelPairs::default())
            }
        }
        deserializer.deserialize_map(PairsVisitor(std::marker::PhantomData))
    }
}

/// `Cow<str>` that borrows when the deserializer can lend the bytes (serde's own `Cow` impl
/// always copies unless the field is marked `borrow`, which does not reach map entries).
struct CowStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
            type Value = CowStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                v: &'de [u8],
            ) -> Result<Self::Value, E> {
                std::str::from_utf8(v)
                    .map(|s| CowStr(Cow::Borrowed(s)))
                    .map_err(E::custom)
            }
        }
        deserializer.deserialize_str(StrVisitor(std::marker::PhantomData))
    }
}
