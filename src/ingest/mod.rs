//! Ingest: what a stored metric message is, and decoding and validating it (pure).

mod config;
mod decode;
mod known;
mod msgpack;
pub mod prefetch;
mod raw;

use std::borrow::Cow;

use bytes::Bytes;

pub use config::IngestConfig;
pub use decode::{check_point, Decoded, Decoder, Encoding, KeyedPoint, Reject, RejectReason};
pub use raw::Scratch;

/// The valid points of a stored message as owned points (invalid ones are left out: the
/// processor dead-letters them). For readers of the stream other than the pipeline, which
/// need points, not speed.
pub fn owned_points(decoder: &mut Decoder, m: &Incoming) -> Vec<crate::model::MetricPoint> {
    let mut out = Decoded::default();
    let mut scratch = Scratch::default();
    if decoder
        .decode(
            &m.payload,
            m.content_type.as_deref(),
            m.published_ms,
            &mut scratch,
            &mut out,
        )
        .is_err()
    {
        return Vec::new();
    }
    out.points
        .iter()
        .map(|p| {
            let key = crate::model::SeriesKey(out.key(p).into());
            crate::model::MetricPoint {
                name: key.name().to_string(),
                labels: key
                    .labels()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                value: p.value,
                timestamp: p.ts,
            }
        })
        .collect()
}

/// One stored message of `PRISM_METRICS`, as the pipeline needs it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub subject: async_nats::Subject,
    pub payload: Bytes,
    /// The `Content-Type` header; the usual values are not allocated per message.
    pub content_type: Option<Cow<'static, str>>,
    pub stream_seq: u64,
    /// When JetStream stored it, ms since the epoch (the pipeline's stream time).
    pub published_ms: i64,
}
