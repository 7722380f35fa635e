//! [`RetryPolicy`]: how long to wait before the next attempt.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Exponential back-off with jitter: attempt `n` (1-based) that failed waits
/// `min(initial * multiplier^(n-1), max)`, then ± `jitter` of that.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Wait after the first failed attempt.
    #[serde(with = "crate::duration::serde_duration::required")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "1s"))]
    pub initial: Duration,
    /// Longest wait between attempts.
    #[serde(with = "crate::duration::serde_duration::required")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "10m"))]
    pub max: Duration,
    /// Growth per attempt.
    pub multiplier: f64,
    /// Fraction (0..=1) of random spread around each wait, so failed tasks
    /// do not all come back at the same instant.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(600),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// No wait at all between attempts (useful in tests).
    pub fn immediate() -> Self {
        Self {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            multiplier: 1.0,
            jitter: 0.0,
        }
    }

    /// The wait before the attempt after `attempt` (1-based) failed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use offload_types::RetryPolicy;
    /// let p = RetryPolicy { jitter: 0.0, ..RetryPolicy::default() };
    /// assert_eq!(p.backoff(1), Duration::from_secs(1));
    /// assert_eq!(p.backoff(3), Duration::from_secs(4));
    /// assert_eq!(p.backoff(60), Duration::from_secs(600));
    /// ```
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exp);
        let capped = base.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 {
            1.0 + rand::random_range(-jitter..=jitter)
        } else {
            1.0
        };
        Duration::try_from_secs_f64((capped * factor).max(0.0)).unwrap_or(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn backoff_stays_within_jittered_cap(attempt in 1u32..200, jitter in 0.0f64..1.0) {
            let p = RetryPolicy { jitter, ..RetryPolicy::default() };
            let wait = p.backoff(attempt).as_secs_f64();
            prop_assert!(wait >= 0.0);
            prop_assert!(wait <= p.max.as_secs_f64() * (1.0 + jitter) + 1e-9);
        }
    }
}
