//! Decoding and validating metric messages: bytes in, keyed points (or a reject reason) out.
//! Pure and synchronous; never panics on hostile input.

use crate::model::{SeriesKey, WirePoint};

use super::IngestConfig;

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

/// A valid point with its canonical series key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedPoint {
    pub key: String,
    pub ts: i64,
    pub value: f64,
}

/// What a message decoded to: its valid points, and why each other point was rejected.
#[derive(Debug, Default)]
pub struct Decoded {
    pub points: Vec<KeyedPoint>,
    /// One entry per rejected point, in message order.
    pub rejects: Vec<Reject>,
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

/// Decodes and validates one message. `published_ms` is the server's receive time of the message:
/// the future-timestamp check uses it (not the wall clock) so replay decides exactly as live did.
pub fn decode_message(
    payload: &[u8],
    content_type: Option<&str>,
    published_ms: i64,
    limits: &IngestConfig,
) -> Result<Decoded, Reject> {
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
    let wire = parse(payload, Encoding::detect(content_type, payload))?;
    if wire.is_empty() {
        return Err(reject(RejectReason::Empty, "empty batch"));
    }
    if wire.len() > limits.max_points_per_message {
        return Err(reject(
            RejectReason::TooManyPoints,
            format!(
                "{} points > max_points_per_message {}",
                wire.len(),
                limits.max_points_per_message
            ),
        ));
    }
    let mut out = Decoded {
        points: Vec::with_capacity(wire.len()),
        ..Default::default()
    };
    for mut p in wire {
        match validate(&mut p, published_ms, limits) {
            Ok(()) => {
                let mut key = String::with_capacity(p.name.len() + 24 * p.labels.0.len());
                SeriesKey::write_canonical(
                    &mut key,
                    &p.name,
                    p.labels.0.iter().map(|(k, v)| (&**k, &**v)),
                );
                out.points.push(KeyedPoint {
                    key,
                    ts: p.timestamp,
                    value: p.value,
                });
            }
            Err(r) => out.rejects.push(r),
        }
    }
    Ok(out)
}

fn parse(payload: &[u8], encoding: Encoding) -> Result<Vec<WirePoint<'_>>, Reject> {
    let decode_err = |e: String| reject(RejectReason::DecodeError, e);
    match encoding {
        Encoding::Json => {
            let first = payload.iter().find(|b| !b.is_ascii_whitespace());
            if first == Some(&b'[') {
                serde_json::from_slice(payload).map_err(|e| decode_err(format!("json: {e}")))
            } else {
                serde_json::from_slice(payload)
                    .map(|p| vec![p])
                    .map_err(|e| decode_err(format!("json: {e}")))
            }
        }
        Encoding::MsgPack => {
            if let Some(points) = super::msgpack::points(payload) {
                return Ok(points);
            }
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
                    .map_err(|e| decode_err(format!("msgpack: {e}")))
            } else {
                rmp_serde::from_slice(payload)
                    .map(|p| vec![p])
                    .map_err(|e| decode_err(format!("msgpack: {e}")))
            }
        }
    }
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
    let mut w = WirePoint {
        name: std::borrow::Cow::Borrowed(&p.name),
        labels: crate::model::LabelPairs(
            p.labels
                .iter()
                .map(|(k, v)| {
                    (
                        std::borrow::Cow::Borrowed(k.as_str()),
                        std::borrow::Cow::Borrowed(v.as_str()),
                    )
                })
                .collect(),
        ),
        value: p.value,
        timestamp: p.timestamp,
    };
    validate(&mut w, now_ms, limits)
}

fn validate(p: &mut WirePoint<'_>, published_ms: i64, limits: &IngestConfig) -> Result<(), Reject> {
    if p.name.len() > limits.max_name_bytes || !is_metric_name(&p.name) {
        return Err(reject(
            RejectReason::InvalidName,
            format!("invalid metric name {:?}", truncate(&p.name)),
        ));
    }
    if !p.value.is_finite() {
        return Err(reject(
            RejectReason::NonFiniteValue,
            format!("{} = {}", p.name, p.value),
        ));
    }
    if p.timestamp <= 0 {
        return Err(reject(
            RejectReason::InvalidTimestamp,
            format!("timestamp {} is not ms since the epoch", p.timestamp),
        ));
    }
    if p.timestamp > published_ms.saturating_add(limits.max_future_ms) {
        return Err(reject(
            RejectReason::FutureTimestamp,
            format!(
                "timestamp {} is {} ms after publish time",
                p.timestamp,
                p.timestamp - published_ms
            ),
        ));
    }
    let labels = &mut p.labels.0;
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

    fn reason(payload: &[u8]) -> RejectReason {
        match decode_message(payload, None, NOW, &limits()) {
            Err(r) => r.reason,
            Ok(d) => d.rejects.first().expect("expected a rejection").reason,
        }
    }

    #[test]
    fn json_point_and_batch() {
        let one = serde_json::to_vec(&point("cpu", 1.5, NOW)).unwrap();
        let d = decode_message(&one, None, NOW, &limits()).unwrap();
        assert_eq!(d.points.len(), 1);
        assert_eq!(d.points[0].value, 1.5);
        let batch =
            serde_json::to_vec(&vec![point("cpu", 1.0, NOW), point("mem", 2.0, NOW)]).unwrap();
        let d = decode_message(&batch, Some("application/json"), NOW, &limits()).unwrap();
        assert_eq!(d.points.len(), 2);
        assert!(d.rejects.is_empty());
    }

    #[test]
    fn msgpack_named_positional_and_batch() {
        let named = rmp_serde::to_vec_named(&point("cpu", 3.0, NOW)).unwrap();
        let positional = rmp_serde::to_vec(&point("cpu", 3.0, NOW)).unwrap();
        let batch =
            rmp_serde::to_vec_named(&vec![point("a", 1.0, NOW), point("b", 2.0, NOW)]).unwrap();
        let a = decode_message(&named, Some("application/msgpack"), NOW, &limits()).unwrap();
        let b = decode_message(&positional, None, NOW, &limits()).unwrap();
        assert_eq!(a.points, b.points);
        assert_eq!(
            decode_message(&batch, None, NOW, &limits())
                .unwrap()
                .points
                .len(),
            2
        );
    }

    #[test]
    fn key_sorts_labels() {
        let d = decode_message(
            br#"{"name":"x","labels":{"b":"2","a":"1"},"value":1,"timestamp":5}"#,
            None,
            NOW,
            &limits(),
        )
        .unwrap();
        let key = SeriesKey(d.points[0].key.as_str().into());
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
        let d = decode_message(&batch, None, NOW, &limits()).unwrap();
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
        let d = decode_message(&batch, None, NOW, &limits()).unwrap();
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

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode_message(&bytes, None, NOW, &limits());
            let _ = decode_message(&bytes, Some("application/json"), NOW, &limits());
        }
    }
}
