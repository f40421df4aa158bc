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

/// The UTC day of a time in ms since the epoch, `2026-11-30`.
pub fn day_of(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map(|t| format!("{:04}-{:02}-{:02}", t.year(), t.month() as u8, t.day()))
        .unwrap_or_else(|_| "?".into())
}
