//! Command-line tools around the processor: publish points, tail alerts, the demo, the benchmark,
//! and a local `nats-server` for the demo, tests and benchmarks.

pub mod bench;
pub mod clock;
pub mod demo;
pub mod detect;
pub mod publish;
pub mod server;
pub mod tail;
