//! Decoding and validating metric messages: bytes in, keyed points (or a reject reason) out.
//! Synchronous and deterministic (what it remembers of known series never changes a result);
//! never panics on hostile input.

use std::borrow::Cow;
use std::hash::BuildHasher;
use std::ops::Range;

use foldhash::fast::RandomState;

use super::known::{self, KnownSeries};
use super::raw::{Label, RawPoint, RawSeries, Scratch};
use super::IngestConfig;
use crate::model::{SeriesKey, WirePoint};

/// Why a message or point was rejected. The string form is the counter label and dead-letter
/// subject token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    DecodeError,
    Oversized,
    TooManyPoints,
    Empty,
    InvalidName,
    InvalidLabel,
    TooManyLabels,
    LabelTooLong,
    DuplicateLabel,
    NonFiniteValue,
    InvalidTimestamp,
    FutureTimestamp,
    /// Older than its source's watermark (see `pipeline::time`).
    Late,
    /// Older than its series' latest point (but not a repeat of a recent timestamp).
    OutOfOrder,
    /// The series already comes from another source (subject `<domain>.<source>`).
    SeriesConflict,
    /// Processing the series panicked: it is quarantined.
    Panic,
    /// A point of a quarantined series.
    Quarantined,
}

impl RejectReason {
    pub const ALL: [RejectReason; 17] = [
        RejectReason::DecodeError,
        RejectReason::Oversized,
        RejectReason::TooManyPoints,
        RejectReason::Empty,
        RejectReason::InvalidName,
        RejectReason::InvalidLabel,
        RejectReason::TooManyLabels,
        RejectReason::LabelTooLong,
        RejectReason::DuplicateLabel,
        RejectReason::NonFiniteValue,
        RejectReason::InvalidTimestamp,
        RejectReason::FutureTimestamp,
        RejectReason::Late,
        RejectReason::OutOfOrder,
        RejectReason::SeriesConflict,
        RejectReason::Panic,
        RejectReason::Quarantined,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::DecodeError => "decode_error",
            RejectReason::Oversized => "oversized",
            RejectReason::TooManyPoints => "too_many_points",
            RejectReason::Empty => "empty",
            RejectReason::InvalidName => "invalid_name",
            RejectReason::InvalidLabel => "invalid_label",
            RejectReason::TooManyLabels => "too_many_labels",
            RejectReason::LabelTooLong => "label_too_long",
            RejectReason::DuplicateLabel => "duplicate_label",
            RejectReason::NonFiniteValue => "non_finite_value",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::Late => "late",
            RejectReason::OutOfOrder => "out_of_order",
            RejectReason::SeriesConflict => "series_conflict",
            RejectReason::Panic => "panic",
            RejectReason::Quarantined => "quarantined",
        }
    }
}

/// A rejection: reason plus a human-readable detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub reason: RejectReason,
    pub detail: String,
}

fn reject(reason: RejectReason, detail: impl Into<String>) -> Reject {
    Reject {
        reason,
        detail: detail.into(),
    }
}

/// A valid point: where its canonical series key is in [`Decoded::keys`], the key's hash under
/// the pipeline's series hasher, its time and value.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedPoint {
    pub key: Range<usize>,
    pub hash: u64,
    pub ts: i64,
    pub value: f64,
}

/// What messages decoded to: their valid points, and why each other point was rejected, in
/// message order. The keys of the points share one buffer. It grows until the caller clears it
/// (the pipeline does once per batch): decoding a point allocates nothing once the buffers have
/// grown.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Canonical series keys, one after the other.
    pub keys: String,
    pub points: Vec<KeyedPoint>,
    /// One entry per rejected point.
    pub rejects: Vec<Reject>,
}

impl Decoded {
    /// The canonical series key of one of the points.
    pub fn key(&self, p: &KeyedPoint) -> &str {
        &self.keys[p.key.clone()]
    }
}

/// Payload encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    MsgPack,
}

impl Encoding {
    /// From a `Content-Type` header when present, else by sniffing the first byte: JSON starts
    /// with `{` or `[` (after whitespace); anything else is taken as MessagePack.
    pub fn detect(content_type: Option<&str>, payload: &[u8]) -> Encoding {
        if let Some(ct) = content_type {
            // The two usual values first: this runs on every message.
            if ct == "application/msgpack" {
                return Encoding::MsgPack;
            }
            if ct == "application/json" {
                return Encoding::Json;
            }
            let ct = ct.to_ascii_lowercase();
            if ct.contains("json") {
                return Encoding::Json;
            }
            if ct.contains("msgpack") || ct.contains("messagepack") {
                return Encoding::MsgPack;
            }
        }
        match payload.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') | Some(b'[') => Encoding::Json,
            _ => Encoding::MsgPack,
        }
    }
}

/// Decodes and validates the messages of one pipeline. It remembers the series it has seen by
/// their encoded name and labels ([`KnownSeries`]): a point of a known MessagePack series is
/// neither read as text nor validated nor keyed again.
#[derive(Debug)]
pub struct Decoder {
    limits: IngestConfig,
    /// The pipeline's series hasher: each point leaves with its key's hash.
    series_hasher: RandomState,
    known: KnownSeries,
    /// The [`KnownSeries`] hash of each point of the message at hand (reused).
    known_hashes: Vec<u64>,
}

impl Decoder {
    pub fn new(limits: &IngestConfig, series_hasher: RandomState) -> Self {
        Self::with_known_budget(limits, series_hasher, known::DEFAULT_BUDGET_BYTES)
    }

    /// A decoder that spends at most `budget_bytes` on remembered series.
    pub fn with_known_budget(
        limits: &IngestConfig,
        series_hasher: RandomState,
        budget_bytes: usize,
    ) -> Self {
        Self {
            limits: limits.clone(),
            series_hasher,
            known: KnownSeries::new(budget_bytes),
            known_hashes: Vec::new(),
        }
    }

    /// Decodes and validates one message, appending its points, their keys and its rejected
    /// points to `out` (nothing when the message is refused whole). `scratch` is working space
    /// borrowed from the payload. `published_ms` is the server's receive time of the message: the
    /// future-timestamp check uses it (not the wall clock) so replay decides exactly as live
    /// did.
    pub fn decode<'a>(
        &mut self,
        payload: &'a [u8],
        content_type: Option<&str>,
        published_ms: i64,
        scratch: &mut Scratch<'a>,
        out: &mut Decoded,
    ) -> Result<(), Reject> {
        let limits = &self.limits;
        if payload.len() > limits.max_message_bytes {
            return Err(reject(
                RejectReason::Oversized,
                format!(
                    "{} bytes > max_message_bytes {}",
                    payload.len(),
                    limits.max_message_bytes
                ),
            ));
        }
        if payload.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(reject(RejectReason::Empty, "empty payload"));
        }
        let encoding = Encoding::detect(content_type, payload);
        if !(encoding == Encoding::MsgPack && super::msgpack::points(payload, scratch)) {
            parse_with_serde(payload, encoding, scratch)?;
        }
        if scratch.points.is_empty() {
            return Err(reject(RejectReason::Empty, "empty batch"));
        }
        if scratch.points.len() > limits.max_points_per_message {
            return Err(reject(
                RejectReason::TooManyPoints,
                format!(
                    "{} points > max_points_per_message {}",
                    scratch.points.len(),
                    limits.max_points_per_message
                ),
            ));
        }
        let before = (out.keys.len(), out.points.len(), out.rejects.len());
        if self.key_points(scratch, published_ms, out).is_none() {
            // A name or label the fast path framed is not UTF-8: serde decides, as it would
            // have without the fast path.
            out.keys.truncate(before.0);
            out.points.truncate(before.1);
            out.rejects.truncate(before.2);
            parse_with_serde(payload, encoding, scratch)?;
            self.key_points(scratch, published_ms, out)
                .expect("points read by serde are text");
        }
        Ok(())
    }

    /// Validates and keys the parsed points into `out`; `None` when a framed name or label is
    /// not UTF-8.
    fn key_points<'a>(
        &mut self,
        scratch: &mut Scratch<'a>,
        published_ms: i64,
        out: &mut Decoded,
    ) -> Option<()> {
        let Scratch { points, labels } = scratch;
        let limits = &self.limits;
        out.points.reserve(points.len());
        // Hashed first, so the remembered series of the points ahead can be prefetched.
        let hashes = &mut self.known_hashes;
        hashes.clear();
        hashes.extend(points.iter().map(|p| match &p.series {
            RawSeries::Encoded { name, labels } => self.known.hash(name, labels),
            RawSeries::Read { .. } => 0,
        }));
        for (i, p) in points.iter().enumerate() {
            self.known.prefetch_ahead(hashes, i);
            let (name, span, encoded) = match &p.series {
                RawSeries::Encoded {
                    name,
                    labels: encoded,
                } => {
                    if let Some((key, hash)) = self.known.find_hashed(hashes[i], name, encoded) {
                        // The name only for a reject's message: no search through the key
                        // for every point.
                        let series_name = || key.split('\u{1f}').next().unwrap_or(key);
                        match check_sample(series_name, p.value, p.timestamp, published_ms, limits)
                        {
                            Ok(()) => out.push(key, hash, p),
                            Err(r) => out.rejects.push(r),
                        }
                        continue;
                    }
                    let start = labels.len();
                    let text = super::msgpack::read_series(name, encoded, labels)?;
                    (
                        Cow::Borrowed(text),
                        start..labels.len(),
                        Some((*name, *encoded)),
                    )
                }
                RawSeries::Read { name, labels: l } => (name.clone(), l.clone(), None),
            };
            let labels = &mut labels[span];
            match validate(&name, labels, p.value, p.timestamp, published_ms, limits) {
                Ok(()) => {
                    let start = out.keys.len();
                    SeriesKey::append_canonical(
                        &mut out.keys,
                        &name,
                        labels.iter().map(|(k, v)| (&**k, &**v)),
                    );
                    let key = &out.keys[start..];
                    let hash = self.series_hasher.hash_one(key);
                    if let Some((name, encoded)) = encoded {
                        self.known.insert(name, encoded, key, hash);
                    }
                    out.points.push(KeyedPoint {
                        key: start..out.keys.len(),
                        hash,
                        ts: p.timestamp,
                        value: p.value,
                    });
                }
                Err(r) => out.rejects.push(r),
            }
        }
        Some(())
    }
}

impl Decoded {
    fn push(&mut self, key: &str, hash: u64, p: &RawPoint<'_>) {
        let start = self.keys.len();
        self.keys.push_str(key);
        self.points.push(KeyedPoint {
            key: start..self.keys.len(),
            hash,
            ts: p.timestamp,
            value: p.value,
        });
    }
}

/// Parses a payload with serde into `out` (cleared first).
fn parse_with_serde<'a>(
    payload: &'a [u8],
    encoding: Encoding,
    out: &mut Scratch<'a>,
) -> Result<(), Reject> {
    out.clear();
    let decode_err = |e: String| reject(RejectReason::DecodeError, e);
    let wire: Vec<WirePoint<'a>> = match encoding {
        Encoding::Json => {
            let first = payload.iter().find(|b| !b.is_ascii_whitespace());
            if first == Some(&b'[') {
                serde_json::from_slice(payload).map_err(|e| decode_err(format!("json: {e}")))?
            } else {
                serde_json::from_slice(payload)
                    .map(|p| vec![p])
                    .map_err(|e| decode_err(format!("json: {e}")))?
            }
        }
        Encoding::MsgPack => {
            let is_array = matches!(payload[0], 0x90..=0x9f | 0xdc | 0xdd);
            if is_array {
                // An array is a batch of points, unless it is one point encoded positionally
                // (rmp-serde's default struct encoding): try that before giving up.
                rmp_serde::from_slice::<Vec<WirePoint>>(payload)
                    .or_else(|e| {
                        rmp_serde::from_slice::<WirePoint>(payload)
                            .map(|p| vec![p])
                            .map_err(|_| e)
                    })
                    .map_err(|e| decode_err(format!("msgpack: {e}")))?
            } else {
                rmp_serde::from_slice(payload)
                    .map(|p| vec![p])
                    .map_err(|e| decode_err(format!("msgpack: {e}")))?
            }
        }
    };
    for p in wire {
        out.push_wire(p);
    }
    Ok(())
}

fn is_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.'))
}

fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks a point as the processor will when it is published at `now_ms` (what `publish`
/// does before sending, so a refused point is named instead of silently dead-lettered).
pub fn check_point(
    p: &crate::model::MetricPoint,
    now_ms: i64,
    limits: &IngestConfig,
) -> Result<(), Reject> {
    let mut labels: Vec<Label<'_>> = p
        .labels
        .iter()
        .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
        .collect();
    validate(&p.name, &mut labels, p.value, p.timestamp, now_ms, limits)
}

/// Checks one point, and sorts its labels by name (the canonical key's order).
fn validate(
    name: &str,
    labels: &mut [Label<'_>],
    value: f64,
    timestamp: i64,
    published_ms: i64,
    limits: &IngestConfig,
) -> Result<(), Reject> {
    if name.len() > limits.max_name_bytes || !is_metric_name(name) {
        return Err(reject(
            RejectReason::InvalidName,
            format!("invalid metric name {:?}", truncate(name)),
        ));
    }
    check_sample(|| name, value, timestamp, published_ms, limits)?;
    check_labels(labels, limits)
}

/// Checks a point's value and timestamp (what a point of a known series still needs).
fn check_sample<'a>(
    name: impl FnOnce() -> &'a str,
    value: f64,
    timestamp: i64,
    published_ms: i64,
    limits: &IngestConfig,
) -> Result<(), Reject> {
    if !value.is_finite() {
        return Err(reject(
            RejectReason::NonFiniteValue,
            format!("{} = {value}", name()),
        ));
    }
    if timestamp <= 0 {
        return Err(reject(
            RejectReason::InvalidTimestamp,
            format!("timestamp {timestamp} is not ms since the epoch"),
        ));
    }
    if timestamp > published_ms.saturating_add(limits.max_future_ms) {
        return Err(reject(
            RejectReason::FutureTimestamp,
            format!(
                "timestamp {timestamp} is {} ms after publish time",
                timestamp - published_ms
            ),
        ));
    }
    Ok(())
}

/// Checks a point's labels and sorts them by name.
fn check_labels(labels: &mut [Label<'_>], limits: &IngestConfig) -> Result<(), Reject> {
    if labels.len() > limits.max_labels {
        return Err(reject(
            RejectReason::TooManyLabels,
            format!("{} labels > max_labels {}", labels.len(), limits.max_labels),
        ));
    }
    for (k, v) in labels.iter() {
        if k.len() > limits.max_name_bytes || v.len() > limits.max_label_value_bytes {
            return Err(reject(
                RejectReason::LabelTooLong,
                format!("label {:?} too long", truncate(k)),
            ));
        }
        if !is_label_name(k) || has_control(v) {
            return Err(reject(
                RejectReason::InvalidLabel,
                format!("invalid label {:?}={:?}", truncate(k), truncate(v)),
            ));
        }
    }
    labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = labels.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(reject(
            RejectReason::DuplicateLabel,
            format!("label {:?} given twice", w[0].0),
        ));
    }
    Ok(())
}

/// Whether `s` holds a control character (C0, DEL or C1). Label values are mostly ASCII: those
/// are checked byte by byte.
fn has_control(s: &str) -> bool {
    if s.is_ascii() {
        s.bytes().any(|b| b < 0x20 || b == 0x7f)
    } else {
        s.chars().any(char::is_control)
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MetricPoint;

    const NOW: i64 = 1_764_000_000_000;

    #[test]
    fn control_characters_are_found_in_ascii_and_beyond() {
        assert!(has_control("a\x07b") && has_control("a\x7f") && has_control("a\u{85}b"));
        assert!(!has_control("binance") && !has_control("東京 ü") && !has_control(""));
    }

    fn limits() -> IngestConfig {
        IngestConfig::default()
    }

    fn point(name: &str, value: f64, ts: i64) -> MetricPoint {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("exchange".to_string(), "binance".to_string());
        MetricPoint {
            name: name.into(),
            labels,
            value,
            timestamp: ts,
        }
    }

    /// One message decoded on its own.
    fn decode(payload: &[u8], content_type: Option<&str>) -> Result<Decoded, Reject> {
        let mut out = Decoded::default();
        Decoder::new(&limits(), HASHER.clone())
            .decode(
                payload,
                content_type,
                NOW,
                &mut Scratch::default(),
                &mut out,
            )
            .map(|()| out)
    }

    /// One hasher for all tests (so keys' hashes compare).
    static HASHER: std::sync::LazyLock<RandomState> =
        std::sync::LazyLock::new(RandomState::default);

    fn reason(payload: &[u8]) -> RejectReason {
        match decode(payload, None) {
            Err(r) => r.reason,
            Ok(d) => d.rejects.first().expect("expected a rejection").reason,
        }
    }

    #[test]
    fn json_point_and_batch() {
        let one = serde_json::to_vec(&point("cpu", 1.5, NOW)).unwrap();
        let d = decode(&one, None).unwrap();
        assert_eq!(d.points.len(), 1);
        assert_eq!(d.points[0].value, 1.5);
        let batch =
            serde_json::to_vec(&vec![point("cpu", 1.0, NOW), point("mem", 2.0, NOW)]).unwrap();
        let d = decode(&batch, Some("application/json")).unwrap();
        assert_eq!(d.points.len(), 2);
        assert!(d.rejects.is_empty());
    }

    #[test]
    fn msgpack_named_positional_and_batch() {
        let named = rmp_serde::to_vec_named(&point("cpu", 3.0, NOW)).unwrap();
        let positional = rmp_serde::to_vec(&point("cpu", 3.0, NOW)).unwrap();
        let batch =
            rmp_serde::to_vec_named(&vec![point("a", 1.0, NOW), point("b", 2.0, NOW)]).unwrap();
        let a = decode(&named, Some("application/msgpack")).unwrap();
        let b = decode(&positional, None).unwrap();
        assert_eq!((a.points, a.keys), (b.points, b.keys));
        assert_eq!(decode(&batch, None).unwrap().points.len(), 2);
    }

    #[test]
    fn messages_append_their_points_and_keys() {
        let (mut scratch, mut out) = (Scratch::default(), Decoded::default());
        let mut decoder = Decoder::new(&limits(), HASHER.clone());
        let first =
            rmp_serde::to_vec_named(&vec![point("a", 1.0, NOW), point("b", 2.0, NOW)]).unwrap();
        let second = serde_json::to_vec(&point("c", 3.0, NOW)).unwrap();
        decoder
            .decode(&first, None, NOW, &mut scratch, &mut out)
            .unwrap();
        let keys: Vec<String> = out.points.iter().map(|p| out.key(p).to_string()).collect();
        assert_eq!(
            keys,
            [
                "a\u{1f}exchange\u{1e}binance",
                "b\u{1f}exchange\u{1e}binance"
            ]
        );
        decoder
            .decode(&second, None, NOW, &mut scratch, &mut out)
            .unwrap();
        assert_eq!(out.points.len(), 3);
        assert_eq!(out.key(&out.points[2]), "c\u{1f}exchange\u{1e}binance");
        assert!(out.keys.starts_with(&keys.concat()));
        // A refused message adds nothing.
        let lens = (out.keys.len(), out.points.len(), out.rejects.len());
        assert!(decoder
            .decode(b"[]", None, NOW, &mut scratch, &mut out)
            .is_err());
        assert_eq!(lens, (out.keys.len(), out.points.len(), out.rejects.len()));
    }

    #[test]
    fn a_known_series_is_found_by_its_bytes_and_a_bad_string_still_goes_to_serde() {
        let mut decoder = Decoder::new(&limits(), HASHER.clone());
        let p = rmp_serde::to_vec_named(&point("cpu", 1.0, NOW)).unwrap();
        let first = outcome(&mut decoder, &p, NOW).unwrap();
        assert_eq!(decoder.known.len(), 1);
        assert_eq!(outcome(&mut decoder, &p, NOW).unwrap(), first);
        let nan = rmp_serde::to_vec_named(&point("cpu", f64::NAN, NOW)).unwrap();
        let (points, rejects) = outcome(&mut decoder, &nan, NOW).unwrap();
        assert!(points.is_empty());
        assert_eq!(rejects[0].reason, RejectReason::NonFiniteValue);
        assert_eq!(rejects[0].detail, "cpu = NaN");
        // A label value that is not UTF-8: the message is refused whole, as serde refuses it.
        let mut bad =
            rmp_serde::to_vec_named(&vec![point("cpu", 1.0, NOW), point("mem", 1.0, NOW)]).unwrap();
        let at = bad.len() - bad.windows(7).rev().position(|w| w == b"binance").unwrap() - 7;
        bad[at] = 0xff;
        let refused = outcome(&mut decoder, &bad, NOW).unwrap_err();
        assert_eq!(refused.reason, RejectReason::DecodeError);
        assert_eq!(
            outcome(&mut Decoder::new(&limits(), HASHER.clone()), &bad, NOW).unwrap_err(),
            refused
        );
    }

    #[test]
    fn key_sorts_labels() {
        let d = decode(
            br#"{"name":"x","labels":{"b":"2","a":"1"},"value":1,"timestamp":5}"#,
            None,
        )
        .unwrap();
        let key = SeriesKey(d.key(&d.points[0]).into());
        assert_eq!(key.display(), "x{a=\"1\",b=\"2\"}");
    }

    #[test]
    fn rejects_with_reasons() {
        assert_eq!(reason(b"\xc1\xc1garbage"), RejectReason::DecodeError);
        assert_eq!(reason(b"{\"name\": 5}"), RejectReason::DecodeError);
        assert_eq!(reason(b"   "), RejectReason::Empty);
        assert_eq!(reason(b"[]"), RejectReason::Empty);
        let nan = rmp_serde::to_vec_named(&point("cpu", f64::NAN, NOW)).unwrap();
        assert_eq!(reason(&nan), RejectReason::NonFiniteValue);
        let inf = rmp_serde::to_vec_named(&point("cpu", f64::INFINITY, NOW)).unwrap();
        assert_eq!(reason(&inf), RejectReason::NonFiniteValue);
        let future = serde_json::to_vec(&point("cpu", 1.0, NOW + 3_600_000)).unwrap();
        assert_eq!(reason(&future), RejectReason::FutureTimestamp);
        let zero = serde_json::to_vec(&point("cpu", 1.0, 0)).unwrap();
        assert_eq!(reason(&zero), RejectReason::InvalidTimestamp);
        assert_eq!(
            reason(&serde_json::to_vec(&point("9bad", 1.0, NOW)).unwrap()),
            RejectReason::InvalidName
        );
        assert_eq!(
            reason(&serde_json::to_vec(&point("a b", 1.0, NOW)).unwrap()),
            RejectReason::InvalidName
        );
        let mut many = point("cpu", 1.0, NOW);
        for i in 0..40 {
            many.labels.insert(format!("l{i}"), "v".into());
        }
        assert_eq!(
            reason(&serde_json::to_vec(&many).unwrap()),
            RejectReason::TooManyLabels
        );
        let mut long = point("cpu", 1.0, NOW);
        long.labels.insert("l".into(), "v".repeat(10_000));
        assert_eq!(
            reason(&serde_json::to_vec(&long).unwrap()),
            RejectReason::LabelTooLong
        );
        let mut ctl = point("cpu", 1.0, NOW);
        ctl.labels.insert("l".into(), "a\u{1f}b".into());
        assert_eq!(
            reason(&serde_json::to_vec(&ctl).unwrap()),
            RejectReason::InvalidLabel
        );
        assert_eq!(
            reason(br#"{"name":"x","labels":{"a":"1","a":"2"},"value":1,"timestamp":5}"#),
            RejectReason::DuplicateLabel
        );
        let big = vec![b' '; 2 << 20];
        assert_eq!(reason(&big), RejectReason::Oversized);
        let lots: Vec<MetricPoint> = (0..10_001).map(|i| point("c", 1.0, i + 1)).collect();
        assert_eq!(
            reason(&rmp_serde::to_vec_named(&lots).unwrap()),
            RejectReason::TooManyPoints
        );
    }

    #[test]
    fn batch_keeps_valid_points_and_counts_bad_ones() {
        let batch = rmp_serde::to_vec_named(&vec![
            point("ok", 1.0, NOW),
            point("bad", f64::NAN, NOW),
            point("ok2", 2.0, NOW),
        ])
        .unwrap();
        let d = decode(&batch, None).unwrap();
        assert_eq!(d.points.len(), 2);
        assert_eq!(d.rejects.len(), 1);
        assert_eq!(d.rejects[0].reason, RejectReason::NonFiniteValue);
    }

    #[test]
    fn each_bad_point_keeps_its_own_reason() {
        let batch = rmp_serde::to_vec_named(&vec![
            point("bad", f64::NAN, NOW),
            point("ok", 1.0, NOW),
            point("9bad", 1.0, NOW),
            point("late", 1.0, 0),
        ])
        .unwrap();
        let d = decode(&batch, None).unwrap();
        let reasons: Vec<_> = d.rejects.iter().map(|r| r.reason).collect();
        assert_eq!(
            reasons,
            [
                RejectReason::NonFiniteValue,
                RejectReason::InvalidName,
                RejectReason::InvalidTimestamp
            ]
        );
    }

    /// A message's points and rejects as comparable values.
    type Outcome = Result<(Vec<(String, u64, i64, u64)>, Vec<Reject>), Reject>;

    fn outcome(decoder: &mut Decoder, payload: &[u8], published_ms: i64) -> Outcome {
        let mut out = Decoded::default();
        decoder.decode(
            payload,
            None,
            published_ms,
            &mut Scratch::default(),
            &mut out,
        )?;
        let points = out
            .points
            .iter()
            .map(|p| (out.key(p).to_string(), p.hash, p.ts, p.value.to_bits()))
            .collect();
        Ok((points, out.rejects))
    }

    /// Points of a few series, some of them bad in one way or another.
    fn message() -> impl proptest::strategy::Strategy<Value = (Vec<u8>, i64)> {
        use proptest::prelude::*;
        let point = (
            prop::sample::select(vec!["cpu", "mem", "9bad", "up"]),
            prop::collection::btree_map(
                prop::sample::select(vec!["host", "exchange", "bad label", "z"]),
                prop::sample::select(vec!["a", "b", "c\u{7}", "東京"]),
                0..3,
            ),
            prop::sample::select(vec![1.5, -2.0, f64::NAN, f64::INFINITY]),
            prop::sample::select(vec![NOW - 5, NOW, NOW + 3_600_000, 0]),
        )
            .prop_map(|(name, labels, value, timestamp)| MetricPoint {
                name: name.into(),
                labels: labels
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                value,
                timestamp,
            });
        (
            prop::collection::vec(point, 1..4),
            any::<bool>(),
            prop::sample::select(vec![NOW, NOW - 3_600_000]),
        )
            .prop_map(|(points, null_labels, published)| {
                let mut bytes = rmp_serde::to_vec_named(&points).unwrap();
                if null_labels && points[0].labels.is_empty() {
                    // `labels: nil` instead of an empty map: the same series, other bytes.
                    let empty = [0xa6, b'l', b'a', b'b', b'e', b'l', b's', 0x80];
                    if let Some(i) = bytes.windows(8).position(|w| w == empty) {
                        bytes[i + 7] = 0xc0;
                    }
                }
                (bytes, published)
            })
    }

    proptest::proptest! {
        #[test]
        fn known_series_decode_as_a_fresh_decoder_does(
            messages in proptest::collection::vec(message(), 1..12),
            budget in 0usize..1200,
        ) {
            let mut remembering = Decoder::with_known_budget(&limits(), HASHER.clone(), budget);
            for (bytes, published) in &messages {
                let fresh = outcome(&mut Decoder::new(&limits(), HASHER.clone()), bytes, *published);
                proptest::prop_assert_eq!(outcome(&mut remembering, bytes, *published), fresh);
            }
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode(&bytes, None);
            let _ = decode(&bytes, Some("application/json"));
        }
    }
}
