//! The integration tests that can share a process, one module per file of this folder, built as
//! one test binary (one link instead of one per file). The files of `tests/` beside this folder
//! are binaries of their own: they assert on process-wide state, the Prometheus recorder's
//! counters (`/metrics`) or the OpenTelemetry tracer provider, which the other tests' apps would
//! change. One file's tests: `cargo test --test integration api::`.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod api_security;
mod backbone;
mod backtest;
mod capacity;
mod cli_manager;
mod contract;
mod demo;
mod detect;
mod first_hour;
mod health;
mod manager;
mod manager_failover;
mod manager_store;
mod notify_workers;
mod old_server;
mod openapi;
mod reload;
mod restart;
mod scaleout;
mod timelines;
