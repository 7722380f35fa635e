//! Webhooks: global subscriptions and each task's own `webhook` option,
//! delivered by `offload serve` from the event log through a durable
//! queue with retries, signed per Standard Webhooks.
//!
//! Two loops run in every serving process: the dispatcher turns new events
//! into deliveries (one dispatcher wins each batch: the store moves its
//! cursor only if nobody else did), and the sender claims due deliveries,
//! POSTs them and records every attempt. A failed attempt (non-2xx, error,
//! time-out, refused address) is retried with doubling back-off until
//! `max_attempts`.

mod deliver;
mod dispatch;
mod guard;
pub(crate) mod routes;
mod sign;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use offload::{Client, EventKind, WebhookRecord};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use sign::{SECRET_PREFIX, new_secret, signature};

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Let targets be loopback, private or link-local addresses.
    pub allow_private_targets: bool,
    /// Wait before the second attempt; doubles for each later one (capped
    /// at one hour).
    pub retry_initial: Duration,
    /// Attempts per delivery, the first included.
    pub max_attempts: u32,
    /// Time limit of one attempt.
    pub timeout: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            retry_initial: Duration::from_secs(5),
            max_attempts: 8,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why a subscription was not made.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The input is wrong (the field named).
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] offload::Error),
}

/// What a new subscription receives.
#[derive(Debug, Clone, Default)]
pub struct NewWebhook {
    /// The target URL.
    pub url: String,
    /// Event types (at least one).
    pub events: Vec<EventKind>,
    /// Only these task names (empty: any).
    pub names: Vec<String>,
    /// Only these queues (empty: any).
    pub queues: Vec<String>,
}

/// Makes a subscription after checking its URL and target; returns it
/// with its new secret.
pub async fn add(
    client: &Client,
    new: NewWebhook,
    settings: &WebhookSettings,
) -> Result<WebhookRecord, WebhookError> {
    offload::check_webhook_url("url", &new.url).map_err(|e| WebhookError::Invalid {
        field: "url",
        message: e.message,
    })?;
    if new.events.is_empty() {
        return Err(WebhookError::Invalid {
            field: "events",
            message: "name at least one event type, e.g. task.succeeded,task.failed".into(),
        });
    }
    guard::check(&new.url, settings.allow_private_targets)
        .await
        .map_err(|message| WebhookError::Invalid {
            field: "url",
            message,
        })?;
    let record = WebhookRecord {
        id: format!("wh_{:016x}", rand::random::<u64>()),
        url: new.url,
        secret: new_secret(),
        events: new.events,
        names: new.names,
        queues: new.queues,
        created_at: Utc::now(),
    };
    client
        .store()
        .webhook_insert(&record)
        .await
        .map_err(offload::Error::from)?;
    Ok(record)
}

/// A subscription as lists show it (without its secret).
pub fn webhook_json(w: &offload::WebhookRecord) -> Value {
    json!({
        "id": w.id,
        "url": w.url,
        "events": w.events,
        "names": w.names,
        "queues": w.queues,
        "created_at": w.created_at,
    })
}

/// A delivery with its attempts, as the API shows it.
pub fn delivery_json(d: &offload::Delivery) -> Value {
    json!({
        "id": d.id,
        "webhook_id": d.webhook_id,
        "url": d.url,
        "event": d.event,
        "task_id": d.task_id,
        "status": d.status,
        "created_at": d.created_at,
        "next_attempt_at": d.next_attempt_at,
        "attempts": d.attempts,
        "payload": serde_json::from_str::<Value>(&d.payload).unwrap_or(Value::String(d.payload.clone())),
    })
}

/// The running dispatcher and sender; stop them with [`stop`](Self::stop).
#[derive(Debug)]
pub struct WebhookLoops {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl WebhookLoops {
    /// Starts both loops on `client`'s store.
    pub fn start(client: Client, settings: WebhookSettings) -> Result<Self, reqwest::Error> {
        let stop = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let http = deliver::http_client(&settings)?;
        let tasks = vec![
            tokio::spawn(dispatch::run(client.clone(), wake.clone(), stop.clone())),
            tokio::spawn(deliver::run(client, http, settings, wake, stop.clone())),
        ];
        Ok(Self { stop, tasks })
    }

    /// Stops both loops (an attempt in flight is abandoned; its delivery
    /// is sent again once its claim lapses).
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
