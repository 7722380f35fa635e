//! Every default of the task model, as named constants in one place.

use std::time::Duration;

/// The queue a task goes to when none is given.
pub const DEFAULT_QUEUE: &str = "default";
/// Attempts allowed when neither the task nor its runner says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Priority of a task that names none; higher runs first.
pub const DEFAULT_PRIORITY: i32 = 0;
/// How long a claim is leased before another worker may rescue the task.
/// Workers renew it with heartbeats, so only a dead worker lets it lapse.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Terminal tasks older than this are pruned.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest task name accepted.
pub const MAX_NAME_LEN: usize = 200;
/// Longest queue name accepted.
pub const MAX_QUEUE_LEN: usize = 100;
/// Upper bound of `max_attempts`.
pub const MAX_ATTEMPTS_LIMIT: u32 = 1000;
/// Longest duration accepted anywhere (delays, timeouts, back-off, waits):
/// 100 years. Longer values are refused, so time arithmetic never overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86400);

/// How long the event log keeps an event (24 hours): a `GET /v1/events`
/// reader or the webhook dispatcher that falls further behind misses events.
pub const DEFAULT_EVENT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// How long an `Idempotency-Key` holds (24 hours).
pub const IDEMPOTENCY_KEY_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
