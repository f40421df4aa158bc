//! The processor's errors, each saying whether trying again can help.

/// What to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Passing (server restarting, connection lost, timeout): retry with backoff.
    Transient,
    /// Retrying gives the same result: count, log, dead-letter or reference, and move on.
    Permanent,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// The partition's lease went to another process: stop at once, publish and ack nothing.
    #[error("partition {0}'s lease was lost")]
    LeaseLost(u32),
    /// Shutdown was requested.
    #[error("stopped")]
    Stopped,
    /// A NATS operation failed in a way that may pass.
    #[error("{0}")]
    Nats(String),
    /// A setup or contract problem that retrying cannot fix.
    #[error("{0}")]
    Permanent(String),
}

impl ProcessorError {
    pub fn retry(&self) -> Retry {
        match self {
            ProcessorError::Nats(_) | ProcessorError::LeaseLost(_) => Retry::Transient,
            ProcessorError::Stopped | ProcessorError::Permanent(_) => Retry::Permanent,
        }
    }

    /// Maps a displayable NATS error to a transient error naming what was being done.
    pub fn nats<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> ProcessorError {
        move |e: E| ProcessorError::Nats(format!("{what}: {e}"))
    }
}

/// Whether a JetStream publish error can pass.
pub fn publish_retry(kind: async_nats::jetstream::context::PublishErrorKind) -> Retry {
    use async_nats::jetstream::context::PublishErrorKind as K;
    match kind {
        // The message will never fit, nor will expectations on the stream's state change.
        K::MaxPayloadExceeded | K::WrongLastMessageId | K::WrongLastSequence => Retry::Permanent,
        // "No stream" is what a publish gets while a restarted server recovers its streams.
        K::StreamNotFound | K::TimedOut | K::BrokenPipe | K::MaxAckPending | K::Other => {
            Retry::Transient
        }
    }
}

impl From<crate::bus::lease::Lapse> for ProcessorError {
    fn from(l: crate::bus::lease::Lapse) -> Self {
        match l {
            crate::bus::lease::Lapse::Lost(p) => ProcessorError::LeaseLost(p),
            crate::bus::lease::Lapse::Stopped => ProcessorError::Stopped,
        }
    }
}

impl From<crate::bus::lease::LeaseError> for ProcessorError {
    fn from(e: crate::bus::lease::LeaseError) -> Self {
        ProcessorError::Nats(e.0)
    }
}
