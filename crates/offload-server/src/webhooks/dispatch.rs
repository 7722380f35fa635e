//! The dispatcher: new events of the log become deliveries, stored with
//! the dispatcher's new cursor in one call (compare-and-set: if another
//! process moved the stored cursor first, this batch is dropped and the
//! log is read again from there).
//!
//! Events that make no delivery (the usual case) cost no write: the
//! dispatcher keeps its place in memory and stores it with the next
//! deliveries, or after [`PERSIST_EVERY`]. Re-reading such events after a
//! restart makes no delivery either (subscriptions only take events after
//! their creation), so nothing is sent twice. Rounds are at most one per
//! [`MIN_ROUND_GAP`], so a burst of enqueues costs a few reads, not one
//! per task.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use offload::{
    Client, EventKind, EventListParams, NewDelivery, Task, TaskEvent, WebhookEnqueueParams,
    WebhookRecord,
};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Events read per round.
const BATCH: u32 = 500;
/// Without a notification, the log is read again this often.
const SAFETY_POLL: Duration = Duration::from_secs(1);
/// Shortest time between two rounds (the delay a webhook may gain).
const MIN_ROUND_GAP: Duration = Duration::from_millis(20);
/// A place in the log that made no delivery is stored at most this often.
const PERSIST_EVERY: Duration = Duration::from_secs(5);
/// A task's own webhook gets these events.
const TASK_WEBHOOK_EVENTS: [EventKind; 3] =
    [EventKind::Succeeded, EventKind::Failed, EventKind::Aborted];

/// Where this dispatcher is: the stored cursor it last saw, and how far it
/// has read past it without making a delivery.
#[derive(Default)]
struct Place {
    /// `None` until the stored cursor was read.
    stored: Option<Option<String>>,
    /// Read up to here (`None`: not past `stored`).
    read: Option<String>,
    since_persist: Option<Instant>,
}

pub(crate) async fn run(client: Client, wake_sender: Arc<Notify>, stop: CancellationToken) {
    let mut changes = client.store().notifier().subscribe();
    let mut failures = 0u32;
    let mut place = Place::default();
    loop {
        let started = Instant::now();
        match round(&client, &mut place).await {
            Ok(Round { made, more }) => {
                failures = 0;
                if made > 0 {
                    wake_sender.notify_one();
                }
                if more {
                    continue;
                }
            }
            Err(e) => {
                failures += 1;
                place = Place::default();
                tracing::warn!(error = %e, "webhook dispatch failed; trying again");
                let wait = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    () = stop.cancelled() => return,
                }
            }
        }
        tokio::select! {
            _ = changes.recv() => {}
            () = tokio::time::sleep(SAFETY_POLL) => {}
            () = stop.cancelled() => return,
        }
        // later notifications of this burst are taken by the next round
        tokio::select! {
            () = tokio::time::sleep_until(started + MIN_ROUND_GAP) => {}
            () = stop.cancelled() => return,
        }
        while changes.try_recv().is_ok() {}
    }
}

struct Round {
    made: usize,
    more: bool,
}

async fn round(client: &Client, place: &mut Place) -> offload::Result<Round> {
    let store = client.store();
    let stored = match &place.stored {
        Some(c) => c.clone(),
        None => {
            let c = store.webhook_cursor().await?;
            place.stored = Some(c.clone());
            c
        }
    };
    let after = place.read.clone().or_else(|| stored.clone());
    let page = client
        .events(&EventListParams {
            // the first time, from the oldest kept event: subscriptions only
            // take events after their creation, tasks' own webhooks were asked for
            after: after.clone(),
            filter: Default::default(),
            limit: BATCH,
        })
        .await?;
    let Some(new_cursor) = page.cursor.clone() else {
        return Ok(Round {
            made: 0,
            more: false,
        });
    };
    if Some(&new_cursor) == after.as_ref() {
        return Ok(Round {
            made: 0,
            more: false,
        });
    }
    let subscriptions = store.webhook_list().await?;
    let mut deliveries = Vec::new();
    for event in &page.events {
        deliveries.extend(deliveries_for(client, event, &subscriptions).await?);
    }
    let more = page.events.len() >= BATCH as usize;
    let due = place
        .since_persist
        .is_none_or(|t| t.elapsed() >= PERSIST_EVERY);
    if deliveries.is_empty() && !due {
        place.read = Some(new_cursor);
        return Ok(Round { made: 0, more });
    }
    let made = deliveries.len();
    let stored_now = store
        .webhook_enqueue(&WebhookEnqueueParams {
            expected_cursor: stored,
            new_cursor: new_cursor.clone(),
            deliveries,
        })
        .await?;
    place.since_persist = Some(Instant::now());
    if stored_now {
        place.stored = Some(Some(new_cursor));
        place.read = None;
        Ok(Round { made, more })
    } else {
        // another dispatcher moved the cursor: read on from where it is
        *place = Place::default();
        Ok(Round {
            made: 0,
            more: true,
        })
    }
}

fn matches(sub: &WebhookRecord, event: &TaskEvent) -> bool {
    sub.events.contains(&event.kind)
        && event.at >= sub.created_at
        && (sub.names.is_empty() || sub.names.contains(&event.name))
        && (sub.queues.is_empty() || sub.queues.contains(&event.queue))
}

async fn deliveries_for(
    client: &Client,
    event: &TaskEvent,
    subscriptions: &[WebhookRecord],
) -> offload::Result<Vec<NewDelivery>> {
    let mut targets: Vec<(Option<String>, String)> = subscriptions
        .iter()
        .filter(|s| matches(s, event))
        .map(|s| (Some(s.id.clone()), s.url.clone()))
        .collect();
    // the store puts a task's own webhook into its end events
    if TASK_WEBHOOK_EVENTS.contains(&event.kind)
        && let Some(url) = event.data.get("webhook").and_then(Value::as_str)
    {
        targets.push((None, url.to_owned()));
    }
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let task = match client.get(event.task_id).await {
        Ok(t) => Some(t),
        Err(offload::Error::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let payload = payload(event, task.as_ref()).to_string();
    let now = Utc::now();
    Ok(targets
        .into_iter()
        .map(|(webhook_id, url)| NewDelivery {
            id: format!(
                "msg_{}",
                offload::TaskId::new().to_string().replace('-', "")
            ),
            webhook_id,
            url,
            event: event.kind,
            task_id: event.task_id,
            payload: payload.clone(),
            created_at: now,
        })
        .collect())
}

/// The body of a delivery: `{"type", "timestamp", "data"}` where `data` is
/// the task as it is when the delivery is made (without its input; only
/// the event's fields if the task was deleted by then) and the event's own
/// data.
fn payload(event: &TaskEvent, task: Option<&Task>) -> Value {
    // the task's own webhook URL stays out of what subscribers receive
    let mut own = event.data.clone();
    if let Value::Object(fields) = &mut own {
        fields.remove("webhook");
    }
    let mut data = json!({
        "id": event.task_id,
        "name": event.name,
        "queue": event.queue,
        "attempt": event.attempt,
        "event": own,
    });
    if let Some(t) = task {
        data["status"] = json!(t.status);
        data["max_attempts"] = json!(t.max_attempts);
        data["output"] = t.output.clone().unwrap_or(Value::Null);
        data["error"] = json!(t.error);
        data["progress"] = json!(t.progress);
        data["tags"] = json!(t.tags);
        data["metadata"] = t.metadata.clone();
    }
    json!({
        "type": event.kind,
        "timestamp": event.at,
        "data": data,
    })
}
