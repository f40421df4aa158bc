//! Ingest: what a stored metric message is, and decoding and validating it (pure).

mod config;
mod decode;
mod known;
mod msgpack;
mod raw;

use std::borrow::Cow;

use bytes::Bytes;

pub use config::IngestConfig;
pub use decode::{check_point, Decoded, Decoder, Encoding, KeyedPoint, Reject, RejectReason};
pub use raw::Scratch;

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
