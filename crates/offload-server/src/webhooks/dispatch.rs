//! The dispatcher: new events of the log become deliveries, stored with
//! the dispatcher's new cursor in one call (compare-and-set: if another
//! process moved the cursor first, this batch is dropped and read again).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use offload::{
    Client, EventKind, EventListParams, NewDelivery, Task, TaskEvent, WebhookEnqueueParams,
    WebhookRecord,
};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Events read per round.
const BATCH: u32 = 500;
/// Without a notification, the log is read again this often.
const SAFETY_POLL: Duration = Duration::from_secs(1);
/// A task's own webhook gets these events.
const TASK_WEBHOOK_EVENTS: [EventKind; 3] =
    [EventKind::Succeeded, EventKind::Failed, EventKind::Aborted];

pub(crate) async fn run(client: Client, wake_sender: Arc<Notify>, stop: CancellationToken) {
    let mut changes = client.store().notifier().subscribe();
    let mut failures = 0u32;
    loop {
        match round(&client).await {
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
    }
}

struct Round {
    made: usize,
    more: bool,
}

async fn round(client: &Client) -> offload::Result<Round> {
    let store = client.store();
    let cursor = store.webhook_cursor().await?;
    let page = client
        .events(&EventListParams {
            // the first time, from the oldest kept event: subscriptions only
            // take events after their creation, tasks' own webhooks were asked for
            after: cursor.clone(),
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
    if new_cursor == *cursor.as_deref().unwrap_or("") {
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
    let made = deliveries.len();
    let stored = store
        .webhook_enqueue(&WebhookEnqueueParams {
            expected_cursor: cursor,
            new_cursor,
            deliveries,
        })
        .await?;
    Ok(Round {
        made: if stored { made } else { 0 },
        more: page.events.len() >= BATCH as usize || !stored,
    })
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
    let targets: Vec<(Option<String>, String)> = subscriptions
        .iter()
        .filter(|s| matches(s, event))
        .map(|s| (Some(s.id.clone()), s.url.clone()))
        .collect();
    let wants_task = TASK_WEBHOOK_EVENTS.contains(&event.kind);
    if targets.is_empty() && !wants_task {
        return Ok(Vec::new());
    }
    let task = match client.get(event.task_id).await {
        Ok(t) => Some(t),
        Err(offload::Error::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let mut targets = targets;
    if wants_task && let Some(url) = task.as_ref().and_then(|t| t.webhook.clone()) {
        targets.push((None, url));
    }
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
/// the task as it is now (without its input) and the event's own data.
fn payload(event: &TaskEvent, task: Option<&Task>) -> Value {
    let mut data = json!({
        "id": event.task_id,
        "name": event.name,
        "queue": event.queue,
        "attempt": event.attempt,
        "event": event.data,
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
