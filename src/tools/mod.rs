//! Command-line tools: publish points, tail alerts, the alert manager's commands (silences,
//! acks, reload), the demo (with a throw-away local `nats-server` when none answers), offline
//! detection.

pub mod clock;
pub mod demo;
pub mod detect;
pub mod manage;
pub mod notify;
pub mod publish;
pub mod server;
pub mod tail;
