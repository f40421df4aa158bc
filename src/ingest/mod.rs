//! Ingest: what a stored metric message is, and decoding and validating it (pure).

mod config;
mod decode;
mod msgpack;

use bytes::Bytes;

pub use config::IngestConfig;
pub use decode::{
    check_point, decode_message, Decoded, Encoding, KeyedPoint, Reject, RejectReason,
};

/// One stored message of `PRISM_METRICS`, as the pipeline needs it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub subject: async_nats::Subject,
    pub payload: Bytes,
    pub content_type: Option<String>,
    pub stream_seq: u64,
    /// When JetStream stored it, ms since the epoch (the pipeline's stream time).
    pub published_ms: i64,
}
