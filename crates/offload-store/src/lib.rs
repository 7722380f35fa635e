//! The storage contract of offload. One object-safe [`Store`] trait that
//! every backend implements (SQLite, PostgreSQL), a [`Notifier`] for
//! "something changed" wake-ups, one params struct per method, the portable
//! [`StoreError`], and the [`Clock`] that passes `now` into every
//! time-dependent call (SQL never reads the clock itself, so tests can drive
//! retries and leases with a [`ManualClock`]).
//!
//! Methods are grouped by noun and built for batches: insert, claim,
//! heartbeat, progress and finish take and return slices, so a worker pays
//! one round-trip (and one commit) for many tasks.

mod access;
mod clock;
mod error;
mod events;
mod limits;
mod notify;
mod params;
mod rules;
mod schedules;
mod store;
mod webhooks;

pub use access::{AuditListParams, AuditPage, AuditRecord, NewAuditRecord, TokenRecord};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{StoreError, StoreResult};
pub use events::{
    EventData, EventFilter, EventKind, EventKindParseError, EventListParams, EventPage,
    MAX_EVENT_PAGE, TaskEvent, finish_event, rescue_event,
};
pub use limits::{LIMIT_CACHE_TTL, LimitDeleteParams, LimitPutParams, LimitRecord};
pub use notify::{Notification, Notifier, NotifyHub};
pub use params::*;
pub use rules::{
    AttemptEnd, EdgeKind, MAX_CLAIM_NAMES, abort_record, attempt_end, check_claim_names,
    dependency_record, dependency_unmet, rescue_outcome, unblocked_status,
};
pub use schedules::{
    MAX_UPCOMING, ScheduleDueParams, ScheduleFireParams, ScheduleFired, SchedulePauseParams,
    SchedulePutParams, ScheduleRecord,
};
pub use store::{Capabilities, Store};
pub use webhooks::{
    Delivery, DeliveryAttempt, DeliveryClaimParams, DeliveryListParams, DeliveryRecordParams,
    DeliveryStatus, MAX_DELIVERY_PAGE, NewDelivery, WebhookEnqueueParams, WebhookRecord,
    check_task_secret,
};
