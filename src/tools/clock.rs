//! The wall clock, in one place. Operators and rules never call it (they run on event time);
//! clippy.toml forbids `SystemTime::now` elsewhere.

/// Milliseconds since the Unix epoch, now.
#[allow(clippy::disallowed_methods)]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
