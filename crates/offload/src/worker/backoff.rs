//! [`Backoff`]: how the worker's loops wait between tries of a store call
//! that failed (the database restarted, a connection was cut). Every loop
//! logs the failure, waits, and tries again; none of them ends or panics
//! because the store is away.

use std::time::Duration;

/// First wait after a failed store call.
pub(crate) const RETRY_INITIAL: Duration = Duration::from_millis(50);
/// Longest wait between two tries of a failing store call.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(2);

/// Exponential back-off: `initial`, doubling after each failure up to
/// `max`, back to `initial` after a success.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    failures: u32,
}

impl Backoff {
    /// Back-off from `initial` up to `max` (`max` is raised to `initial`
    /// if it is shorter).
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        let max = max.max(initial);
        Self {
            initial,
            max,
            next: initial,
            failures: 0,
        }
    }

    /// The worker's usual back-off: 50 ms doubling up to 2 s.
    pub(crate) fn standard() -> Self {
        Self::new(RETRY_INITIAL, RETRY_MAX)
    }

    /// The usual back-off, waiting never longer than `cap` (a loop that
    /// normally runs every `cap` retries at least that often).
    pub(crate) fn capped(cap: Duration) -> Self {
        Self::new(RETRY_INITIAL.min(cap), RETRY_MAX.min(cap))
    }

    /// Records a failure; returns how long to wait before the next try.
    pub(crate) fn fail(&mut self) -> Duration {
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    /// Records a success; returns how many failures came right before it.
    pub(crate) fn succeed(&mut self) -> u32 {
        self.next = self.initial;
        std::mem::take(&mut self.failures)
    }

    /// Failures in a row so far.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(list: &[u64]) -> Vec<Duration> {
        list.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn doubles_up_to_the_cap_and_resets_on_success() {
        let mut b = Backoff::standard();
        let waits: Vec<Duration> = (0..8).map(|_| b.fail()).collect();
        assert_eq!(waits, ms(&[50, 100, 200, 400, 800, 1600, 2000, 2000]));
        assert_eq!(b.failures(), 8);
        assert_eq!(b.succeed(), 8);
        assert_eq!(b.failures(), 0);
        assert_eq!(b.fail(), RETRY_INITIAL);
    }

    #[test]
    fn a_capped_backoff_never_waits_longer_than_its_cap() {
        let mut b = Backoff::capped(Duration::from_millis(120));
        let waits: Vec<Duration> = (0..4).map(|_| b.fail()).collect();
        assert_eq!(waits, ms(&[50, 100, 120, 120]));
        let mut tiny = Backoff::capped(Duration::from_millis(10));
        assert_eq!(tiny.fail(), Duration::from_millis(10));
        assert_eq!(tiny.fail(), Duration::from_millis(10));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::MAX);
        for _ in 0..200 {
            b.fail();
        }
        assert!(b.fail() >= Duration::from_secs(1));
    }
}
