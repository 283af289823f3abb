//! When to refresh and how long to wait after a failure: plain functions of times.
//!
//! EC2 makes new instance-profile credentials available at least five minutes before the old
//! ones expire, and SDKs count on it. imds-tun refreshes once less than the refresh margin
//! (15 minutes by default, never less than five) remains. A set that lives shorter than the
//! margin is refreshed halfway through its life instead, so a source that keeps handing out
//! short-lived credentials (a `credential_process` with its own cache) slows down rather than
//! looping.

use std::time::Duration;

use time::OffsetDateTime;

/// EC2's guarantee: new credentials at least this long before the old ones expire.
pub const EC2_MIN_MARGIN: Duration = Duration::from_secs(5 * 60);

/// The default refresh margin (`--refresh-margin`).
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(15 * 60);

/// Never refresh sooner than this after the last call.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// When a set issued at `issued` and expiring at `expires` should be replaced.
pub fn refresh_at(
    issued: OffsetDateTime,
    expires: OffsetDateTime,
    margin: Duration,
) -> OffsetDateTime {
    let margin = margin.max(EC2_MIN_MARGIN);
    let lifetime = expires - issued;
    if lifetime > margin {
        expires - margin
    } else {
        let half: time::Duration = (lifetime / 2_i32).max(time::Duration::ZERO);
        let floor =
            time::Duration::try_from(MIN_REFRESH_INTERVAL).unwrap_or(time::Duration::SECOND);
        issued + half.max(floor)
    }
}

/// Exponential back-off with jitter: `base`, doubling on every failure up to `max`, each delay
/// shortened by up to a fifth at random so several instances do not retry in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// First delay `base`, never more than `max` (a `max` below `base` counts as `base`).
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max: max.max(base),
            failures: 0,
        }
    }

    /// The delay before the next attempt; `jitter` in `[0, 1)` (0 = no shortening).
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(30));
        let full = self.base.saturating_mul(factor).min(self.max);
        self.failures = self.failures.saturating_add(1);
        full.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
    }

    /// After a success the next failure starts again from `base`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A uniformly random jitter in `[0, 1)` from the OS (0 if it has none).
pub fn random_jitter() -> f64 {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.0;
    }
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn refreshes_fifteen_minutes_before_expiry_by_default() {
        let issued = datetime!(2025-01-01 00:00:00 UTC);
        let expires = issued + Duration::from_secs(3600);
        assert_eq!(
            refresh_at(issued, expires, DEFAULT_REFRESH_MARGIN),
            expires - 15 * MIN
        );
    }

    #[test]
    fn margin_is_never_less_than_five_minutes() {
        let issued = datetime!(2025-01-01 00:00:00 UTC);
        let expires = issued + Duration::from_secs(3600);
        assert_eq!(refresh_at(issued, expires, MIN), expires - 5 * MIN);
        assert_eq!(
            refresh_at(issued, expires, Duration::ZERO),
            expires - 5 * MIN
        );
    }

    #[test]
    fn a_margin_just_below_the_lifetime_refreshes_almost_at_once() {
        let issued = datetime!(2025-01-01 00:00:00 UTC);
        let expires = issued + Duration::from_secs(900);
        assert_eq!(
            refresh_at(issued, expires, Duration::from_secs(899)),
            issued + Duration::from_secs(1)
        );
    }

    #[test]
    fn short_lived_credentials_refresh_halfway() {
        let issued = datetime!(2025-01-01 00:00:00 UTC);
        // Fifteen minutes with the default margin: halfway, still 7.5 minutes before expiry.
        let expires = issued + 15 * MIN;
        let at = refresh_at(issued, expires, DEFAULT_REFRESH_MARGIN);
        assert_eq!(at, issued + Duration::from_secs(450));
        assert!(expires - at >= EC2_MIN_MARGIN);
        // Twenty seconds (the test-only lifetime cap): after ten.
        let expires = issued + Duration::from_secs(20);
        assert_eq!(
            refresh_at(issued, expires, DEFAULT_REFRESH_MARGIN),
            issued + Duration::from_secs(10)
        );
    }

    #[test]
    fn expired_or_tiny_lifetimes_wait_at_least_a_second() {
        let issued = datetime!(2025-01-01 00:00:00 UTC);
        assert_eq!(
            refresh_at(issued, issued, DEFAULT_REFRESH_MARGIN),
            issued + MIN_REFRESH_INTERVAL
        );
        assert_eq!(
            refresh_at(issued, issued - MIN, DEFAULT_REFRESH_MARGIN),
            issued + MIN_REFRESH_INTERVAL
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let delays: Vec<u64> = (0..9).map(|_| backoff.next_delay(0.0).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        backoff.reset();
        assert_eq!(backoff.next_delay(0.0), Duration::from_secs(1));
    }

    #[test]
    fn jitter_shortens_by_at_most_a_fifth() {
        let mut backoff = Backoff::new(Duration::from_secs(10), Duration::from_secs(60));
        let delay = backoff.next_delay(0.999_999);
        assert!(delay >= Duration::from_secs(8) && delay <= Duration::from_secs(10));
        for _ in 0..100 {
            let jitter = random_jitter();
            assert!((0.0..1.0).contains(&jitter));
        }
    }

    #[test]
    fn backoff_survives_many_failures() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(60));
        for _ in 0..1000 {
            assert!(backoff.next_delay(0.5) <= Duration::from_secs(60));
        }
    }
}
