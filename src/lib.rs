//! # PrismWatch
//!
//! Streaming monitoring and alerting for market-data platforms: metrics in from NATS JetStream,
//! event-time operators and rules per series, alert events out to NATS JetStream.
//!
//! # Layout
//!
//! | module | its job |
//! |---|---|
//! | [`config`] | typed config: defaults → YAML → `PRISMWATCH__*` env; validation naming file and key |
//! | [`model`] | plain data: metric point, series key, alert event, priority, status |
//! | [`subjects`] | every subject, stream and bucket name (the contract is `subjects/catalog.yaml`) |
//! | [`bus`] | NATS connection with server version check; stream declaration |
//! | [`ingest`] | message decoding and validation, reject reasons |
//! | [`pipeline`] | watermark, shards, keyed per-series state, operators, checkpoints (sync) |
//! | [`detect`] | pure detector maths (z-score, ...) |
//! | [`rules`] | rule files, matchers, conditions, templates, lifecycle state machine |
//! | [`runner`] | the async processor loop: consume, process, publish, ack, checkpoint, replay |
//! | [`telemetry`] | logs and every Prometheus metric |
//! | [`tools`] | CLI tools: publish, tail, demo, detect (offline scoring), bench, local nats-server |

pub mod bus;
pub mod config;
pub mod detect;
pub mod ingest;
pub mod model;
pub mod pipeline;
pub mod rules;
pub mod runner;
pub mod subjects;
pub mod telemetry;
pub mod tools;
