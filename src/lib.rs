//! # PrismWatch
//!
//! Streaming monitoring and alerting for market-data platforms: metrics in from NATS JetStream,
//! event-time operators and rules per series, alert events out to NATS JetStream.
//!
//! # Layout
//!
//! | module | its job |
//! |---|---|
//! | [`app`] | a process: its components under one shutdown token, status, `/healthz` `/readyz` `/metrics` |
//! | [`config`] | typed config: defaults → YAML → `PRISMWATCH__*` env; validation naming file and key |
//! | [`model`] | plain data: metric point, series key, alert event, priority, status |
//! | [`subjects`] | every subject, stream and bucket name (the contract is `subjects/catalog.yaml`) |
//! | [`bus`] | NATS connection (waiting for the server, version check); stream declaration |
//! | [`ingest`] | the stored message, decoding and validation, reject reasons |
//! | [`pipeline`] | per-source timelines, shards, keyed per-series state, operators, checkpoint format (sync) |
//! | [`capacity`] | capacity planning: per metric family, growth, 30-day projection, headroom, recommendation |
//! | [`health`] | exchange health: per-exchange and platform scores, cross-exchange outliers, published as metrics |
//! | [`detect`] | pure detector maths (z-score, seasonal, trend, variance, forest, fusion) |
//! | [`rules`] | rule files, matchers, conditions, templates, lifecycle state machine |
//! | [`slo`] | SLOs on event time: per-minute good/total events, burn rates, error budget, scores (sync) |
//! | [`processor`] | the async side: partition leases, consume, publish, ack, checkpoint, replay |
//! | [`alerting`] | the alert manager: alert state, acks, silences, inhibition, routing and grouping, storms, flapping |
//! | [`notify`] | notifier workers: channels (email, Slack, DingTalk, webhook, PagerDuty, Telegram), templates, rate limits, retries, dead letters |
//! | [`api`] | the HTTP API (`/api/v1`): authentication and roles, alerts, silences, status, reload |
//! | [`trace`] | OpenTelemetry spans from metric to notification, W3C traceparent on NATS headers, OTLP export (feature `otlp`) |
//! | [`telemetry`] | logs and every Prometheus metric |
//! | [`tools`] | CLI tools: publish, tail, demo, detect (offline scoring), the demo's nats-server |

pub mod alerting;
pub mod api;
pub mod app;
pub mod backtest;
pub mod bus;
pub mod capacity;
pub mod config;
pub mod detect;
pub mod health;
pub mod ingest;
pub mod model;
pub mod notify;
pub mod pipeline;
pub mod processor;
pub mod rules;
pub mod slo;
pub mod subjects;
pub mod telemetry;
pub mod tools;
pub mod trace;
