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
use offload_types::{TaskId, ValidationError, check_webhook_url};
use serde::{Deserialize, Serialize};

use crate::{EventKind, StoreError, StoreResult};

/// A global subscription: every event of the listed kinds (and, when
/// given, of the listed task names and queues) is POSTed to `url`.
/// `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
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

impl std::fmt::Debug for WebhookRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRecord")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("secret", &"whsec_…(hidden)")
            .field("events", &self.events)
            .field("names", &self.names)
            .field("queues", &self.queues)
            .field("created_at", &self.created_at)
            .finish()
    }
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

// ---------------------------------------------------------------- checks
//
// What every store refuses to keep, checked the same way by each backend
// before it writes (so both answer a bad value with the same field).

/// Largest page or claim of deliveries.
pub const MAX_DELIVERY_PAGE: u32 = 1000;

/// Refuses text that is empty (unless `allow_empty`), longer than `max`
/// characters (`None`: no bound) or holding NUL (PostgreSQL text cannot).
fn check_text(
    field: &str,
    value: &str,
    max: Option<usize>,
    allow_empty: bool,
) -> Result<(), ValidationError> {
    if !allow_empty && value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if let Some(max) = max {
        let len = value.chars().count();
        if len > max {
            return Err(ValidationError::new(
                field,
                format!("must be at most {max} characters, got {len} characters"),
            ));
        }
    }
    if value.contains('\0') {
        return Err(ValidationError::new(
            field,
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

/// Checks a page size or claim size (1 to [`MAX_DELIVERY_PAGE`]).
fn check_limit(limit: u32) -> Result<(), ValidationError> {
    if !(1..=MAX_DELIVERY_PAGE).contains(&limit) {
        return Err(ValidationError::new(
            "limit",
            format!("must be between 1 and {MAX_DELIVERY_PAGE}, got {limit}"),
        ));
    }
    Ok(())
}

impl WebhookRecord {
    /// Longest subscription id, in characters.
    pub const MAX_ID_LEN: usize = 64;

    /// Checks what a store refuses to keep: an empty or over-long id
    /// ([`MAX_ID_LEN`](Self::MAX_ID_LEN)), a URL that
    /// [`check_webhook_url`] refuses, an empty secret, no event kinds, an
    /// empty task name or queue in the filters, NUL characters.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_text("id", &self.id, Some(Self::MAX_ID_LEN), false)?;
        check_webhook_url("url", &self.url)?;
        check_text("secret", &self.secret, None, false)?;
        if self.events.is_empty() {
            return Err(ValidationError::new(
                "events",
                "must name at least one event type",
            ));
        }
        for (field, values) in [("names", &self.names), ("queues", &self.queues)] {
            for v in values {
                check_text(field, v, None, false).map_err(|e| {
                    ValidationError::new(field, format!("each entry {}", e.message))
                })?;
            }
        }
        Ok(())
    }
}

impl NewDelivery {
    /// Largest payload, in bytes (1 MiB).
    pub const MAX_PAYLOAD_LEN: usize = 1 << 20;

    /// Checks what a store refuses to keep: an empty id, a `webhook_id`
    /// that could not name a subscription, a URL that
    /// [`check_webhook_url`] refuses, a payload over
    /// [`MAX_PAYLOAD_LEN`](Self::MAX_PAYLOAD_LEN) bytes, NUL characters.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_text("id", &self.id, None, false)?;
        if let Some(webhook_id) = &self.webhook_id {
            check_text(
                "webhook_id",
                webhook_id,
                Some(WebhookRecord::MAX_ID_LEN),
                false,
            )?;
        }
        check_webhook_url("url", &self.url)?;
        if self.payload.len() > Self::MAX_PAYLOAD_LEN {
            return Err(ValidationError::new(
                "payload",
                format!(
                    "must be at most {} bytes, got {} bytes",
                    Self::MAX_PAYLOAD_LEN,
                    self.payload.len()
                ),
            ));
        }
        check_text("payload", &self.payload, None, true)
    }
}

impl WebhookEnqueueParams {
    /// Checks the call before a store writes anything: the cursors (the new
    /// one not empty, neither holding NUL) and every delivery
    /// ([`NewDelivery::validate`]; the message names the delivery) are
    /// `Invalid`; an id given twice is a `Conflict`.
    pub fn check(&self) -> StoreResult<()> {
        check_text("new_cursor", &self.new_cursor, None, false)?;
        if let Some(expected) = &self.expected_cursor {
            check_text("expected_cursor", expected, None, true)?;
        }
        let many = self.deliveries.len() > 1;
        let mut seen = std::collections::HashSet::with_capacity(self.deliveries.len());
        for (i, d) in self.deliveries.iter().enumerate() {
            d.validate().map_err(|e| {
                if many {
                    ValidationError::new(
                        e.field,
                        format!(
                            "{} (delivery {i} of the batch; nothing was stored)",
                            e.message
                        ),
                    )
                } else {
                    e
                }
            })?;
            if !seen.insert(d.id.as_str()) {
                return Err(StoreError::Conflict(format!(
                    "delivery id {:?} appears twice in the batch; nothing was stored",
                    d.id
                )));
            }
        }
        Ok(())
    }
}

impl DeliveryClaimParams {
    /// Checks the claim size (1 to [`MAX_DELIVERY_PAGE`]).
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_limit(self.limit)
    }
}

impl DeliveryListParams {
    /// Checks the page size (1 to [`MAX_DELIVERY_PAGE`]) and that the
    /// subscription filter holds no NUL.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(webhook_id) = &self.webhook_id {
            check_text("webhook_id", webhook_id, None, true)?;
        }
        check_limit(self.limit)
    }
}

impl DeliveryRecordParams {
    /// Checks what a store refuses to record: an empty id, an error
    /// holding NUL, a `Pending` status without `retry_at`. (A `retry_at`
    /// given with another status is ignored: only a pending delivery has a
    /// next attempt.)
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_text("id", &self.id, None, false)?;
        if let Some(error) = &self.attempt.error {
            check_text("error", error, None, true)?;
        }
        if self.status == DeliveryStatus::Pending && self.retry_at.is_none() {
            return Err(ValidationError::new(
                "retry_at",
                "a delivery that stays pending needs the time of its next attempt",
            ));
        }
        Ok(())
    }
}

/// Checks a candidate secret for tasks' own webhooks
/// ([`Store::webhook_task_secret`](crate::Store::webhook_task_secret)):
/// not empty, no NUL.
pub fn check_task_secret(candidate: &str) -> Result<(), ValidationError> {
    check_text("secret", candidate, None, false)
}

impl std::str::FromStr for DeliveryStatus {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
        .ok_or_else(|| {
            ValidationError::new(
                "status",
                format!("unknown delivery status {s:?}: expected pending, delivered or failed"),
            )
        })
    }
}
