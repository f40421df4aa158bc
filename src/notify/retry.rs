//! When to try again: exponential backoff with jitter, a service's `Retry-After` honoured, a
//! deadline after which the notification is dead-lettered.

use std::time::Duration;

/// The wait before attempt `attempt + 1` (after `attempt` failures, from 1): doubling from
/// `initial` up to `max`, half of it fixed and half random ("equal jitter", so workers that
/// failed together do not retry together, and no wait is near zero).
pub fn backoff(attempt: u32, initial: Duration, max: Duration, unit_random: f64) -> Duration {
    let exp = initial
        .saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1).min(20))
                .unwrap_or(u32::MAX),
        )
        .min(max);
    let half = exp / 2;
    half + half.mul_f64(unit_random.clamp(0.0, 1.0))
}

/// The wait after a failure: the service's `Retry-After` if longer than the backoff.
pub fn next_wait(
    attempt: u32,
    retry_after: Option<Duration>,
    initial: Duration,
    max: Duration,
    unit_random: f64,
) -> Duration {
    let b = backoff(attempt, initial, max, unit_random);
    retry_after.map_or(b, |r| r.max(b))
}

/// Whether another attempt fits: `elapsed` since the first attempt plus `wait` within
/// `deadline`.
pub fn within(elapsed: Duration, wait: Duration, deadline: Duration) -> bool {
    elapsed + wait <= deadline
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_maximum_with_half_of_it_random() {
        let (i, m) = (500 * MS, 60_000 * MS);
        assert_eq!(backoff(1, i, m, 0.0), 250 * MS);
        assert_eq!(backoff(1, i, m, 1.0), 500 * MS);
        assert_eq!(backoff(2, i, m, 1.0), 1_000 * MS);
        assert_eq!(backoff(4, i, m, 0.5), 3_000 * MS);
        assert_eq!(backoff(30, i, m, 1.0), 60_000 * MS);
        assert_eq!(backoff(30, i, m, 0.0), 30_000 * MS);
    }

    #[test]
    fn retry_after_is_honoured_and_the_deadline_holds() {
        let (i, m) = (500 * MS, 60_000 * MS);
        assert_eq!(
            next_wait(1, Some(Duration::from_secs(7)), i, m, 1.0),
            Duration::from_secs(7)
        );
        assert_eq!(next_wait(3, Some(MS), i, m, 1.0), 2_000 * MS);
        assert!(within(
            Duration::from_secs(590),
            Duration::from_secs(10),
            Duration::from_secs(600)
        ));
        assert!(!within(
            Duration::from_secs(591),
            Duration::from_secs(10),
            Duration::from_secs(600)
        ));
    }
}
