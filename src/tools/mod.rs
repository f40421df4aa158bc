//! Command-line tools around the processor: publish points, tail alerts, the demo (with a
//! throw-away local `nats-server` when none answers), offline detection.

pub mod clock;
pub mod demo;
pub mod detect;
pub mod publish;
pub mod server;
pub mod tail;
