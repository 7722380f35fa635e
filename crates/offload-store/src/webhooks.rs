//! Webhooks as a store keeps them: subscriptions, the dispatcher's place
//! in the event log, and the durable queue of deliveries with every
//! attempt.
//!
//! The dispatcher (in `offload serve`) reads the event log after
//! [`Store::webhook_cursor`](crate::Store::webhook_cursor), turns matching
//! events into deliveries, and stores them together with its new cursor in
//! one call ([`WebhookEnqueueParams`]); a second dispatcher that read the
//! same events finds the cursor moved and stores nothing. Senders claim
//! due deliveries (with a lease, so several processes can send), POST them
//! and record each attempt.

use chrono::{DateTime, Utc};
use offload_types::TaskId;
use serde::{Deserialize, Serialize};

use crate::EventKind;

/// A global subscription: every event of the listed kinds (and, when
/// given, of the listed task names and queues) is POSTed to `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    /// `wh_…`, unique in the store.
    pub id: String,
    /// Where deliveries go (`http://` or `https://`).
    pub url: String,
    /// The signing secret (`whsec_` + base64 of random bytes).
    pub secret: String,
    /// The event kinds delivered (at least one).
    pub events: Vec<EventKind>,
    /// Only tasks with these names (empty: any).
    pub names: Vec<String>,
    /// Only tasks in these queues (empty: any).
    pub queues: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// One delivery to store: an event's message for one target.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// `msg_…`: the `webhook-id` header of every attempt, unique in the store.
    pub id: String,
    /// The subscription it is for; `None` for a task's own `webhook` option.
    pub webhook_id: Option<String>,
    /// Where it goes.
    pub url: String,
    /// The event it carries.
    pub event: EventKind,
    /// The task the event is about.
    pub task_id: TaskId,
    /// The body to POST, as built when the event was read (every attempt
    /// sends the same bytes).
    pub payload: String,
    /// When it was made (the first attempt is due then).
    pub created_at: DateTime<Utc>,
}

/// Store deliveries and move the dispatcher's cursor, in one transaction,
/// only if the cursor is still where the caller read it.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEnqueueParams {
    /// The cursor the caller read events after (`None`: it had none).
    pub expected_cursor: Option<String>,
    /// The cursor after the events the caller read.
    pub new_cursor: String,
    /// The deliveries those events made (may be empty).
    pub deliveries: Vec<NewDelivery>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (or being attempted).
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Every attempt failed; no more will be made.
    Failed,
}

impl DeliveryStatus {
    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

/// One attempt at a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When it was sent.
    pub at: DateTime<Utc>,
    /// The HTTP status received, if any answer came.
    pub status_code: Option<u16>,
    /// From sending to the end of the answer (or the failure), in milliseconds.
    pub latency_ms: u64,
    /// What went wrong (a non-2xx status, a refused address, a time-out…).
    pub error: Option<String>,
}

/// A delivery with its attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// `msg_…`.
    pub id: String,
    /// The subscription; `None` for a task's own webhook.
    pub webhook_id: Option<String>,
    /// Where it goes.
    pub url: String,
    /// The event.
    pub event: EventKind,
    /// The task.
    pub task_id: TaskId,
    /// The body.
    pub payload: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When the next attempt is due (`pending` only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Its attempts, oldest first.
    pub attempts: Vec<DeliveryAttempt>,
}

/// Claim due deliveries: `pending` ones whose `next_attempt_at` has come,
/// oldest first. Each claimed delivery's `next_attempt_at` moves to
/// `now + lease`, so no other sender takes it meanwhile (and it is sent
/// again if this sender dies before recording the attempt).
#[derive(Debug, Clone)]
pub struct DeliveryClaimParams {
    /// At most this many (1 to 1000).
    pub limit: u32,
    /// Claim time.
    pub now: DateTime<Utc>,
    /// How long a claim holds.
    pub lease: std::time::Duration,
}

/// Record one attempt of a delivery and what follows.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecordParams {
    /// The delivery.
    pub id: String,
    /// The attempt (its number is the count of recorded attempts + 1).
    pub attempt: DeliveryAttempt,
    /// `Pending` with `retry_at` set, `Delivered` or `Failed`.
    pub status: DeliveryStatus,
    /// When to try again (`Pending` only).
    pub retry_at: Option<DateTime<Utc>>,
}

/// List deliveries, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryListParams {
    /// Only for this subscription.
    pub webhook_id: Option<String>,
    /// Only about this task.
    pub task_id: Option<TaskId>,
    /// Page size (1 to 1000).
    pub limit: u32,
}
