//! Ingest: decoding and validation of metric messages (pure), and the JetStream consumer side.

mod config;
mod decode;

pub use config::IngestConfig;
pub use decode::{decode_message, Decoded, Encoding, KeyedPoint, Reject, RejectReason};
