//! `GET /v1/events`: the event log, as Server-Sent Events (live, with
//! resume through `Last-Event-ID`) or as JSON pages.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use offload::{Client, EventFilter, EventKind, EventListParams, MAX_EVENT_PAGE, TaskId};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::IntoParams;

use crate::ApiError;
use crate::auth::Caller;
use crate::error::QueryArgs;
use crate::schema::{ErrorBody, EventPage};

/// Page size of the JSON form unless `limit` says otherwise.
const DEFAULT_PAGE: u32 = 100;
/// Events read per store call while streaming.
const STREAM_BATCH: u32 = 500;
/// A stream also looks for new events this often without a notification
/// (notifications are hints and can be lost across processes).
const SAFETY_POLL: Duration = Duration::from_secs(1);
/// Comment lines keep idle connections open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The query of `GET /v1/events`. Lists are comma-separated.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Only these event types (`task.succeeded,task.failed`).
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Only tasks with these names.
    name: Option<String>,
    /// Only tasks in these queues.
    queue: Option<String>,
    /// Only these tasks.
    task_id: Option<String>,
    /// Only events after this cursor. A stream without it (and without a
    /// `Last-Event-ID` header) starts with the next event; a JSON page
    /// without it starts at the oldest kept event.
    after: Option<String>,
    /// JSON form: page size, 1 to 1000 (default 100).
    limit: Option<u32>,
}

fn list(value: Option<&str>) -> Vec<String> {
    value
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn filter(query: &EventsQuery) -> Result<EventFilter, ApiError> {
    let kinds = list(query.kind.as_deref())
        .iter()
        .map(|k| k.parse::<EventKind>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::invalid("type", e.to_string()))?;
    let task_ids = list(query.task_id.as_deref())
        .iter()
        .map(|id| id.parse::<TaskId>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::invalid("task_id", e.to_string()))?;
    Ok(EventFilter {
        kinds,
        names: list(query.name.as_deref()),
        queues: list(query.queue.as_deref()),
        task_ids,
    })
}

/// `GET /v1/events` → with `Accept: text/event-stream`, a live stream of
/// task events (`id` is the event's cursor, `event` its type, `data` the
/// event as JSON; reconnecting with `Last-Event-ID` resumes without a gap
/// while the event is kept, 24 hours by default); otherwise one JSON page
/// `{"events", "cursor"}`.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume a stream after this event")),
    responses((status = 200, description = "A page of events (application/json), or a stream of them (text/event-stream)", content(
        (EventPage = "application/json"),
        (String = "text/event-stream")
    )), (status = 422, description = "Invalid input (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn events(
    State(client): State<Client>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    QueryArgs(query): QueryArgs<EventsQuery>,
) -> Result<Response, ApiError> {
    let filter = filter(&query)?;
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::invalid("Last-Event-ID", "is not text"))
        })
        .transpose()?;
    let after = last_event_id.or(query.after);
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !streaming {
        let page = client
            .events(&EventListParams {
                after,
                filter,
                limit: query.limit.unwrap_or(DEFAULT_PAGE),
            })
            .await?;
        return Ok(Json(json!({ "events": page.events, "cursor": page.cursor })).into_response());
    }
    if query.limit.is_some() {
        return Err(ApiError::invalid(
            "limit",
            "is for the JSON form, not for streams",
        ));
    }
    // Check the cursor before answering 200 (a bad one is a 422, not a
    // stream that ends at once).
    let start = match after {
        Some(cursor) => {
            client
                .events(&EventListParams {
                    after: Some(cursor.clone()),
                    filter: EventFilter::default(),
                    limit: 1,
                })
                .await?;
            Some(cursor)
        }
        None => client.event_cursor_latest().await?,
    };
    let (tx, rx) = mpsc::channel(STREAM_BATCH as usize);
    let token_id = caller.token.map(|t| t.id);
    tokio::spawn(follow(client, filter, start, token_id, tx));
    let stream = ReceiverStream::new(rx);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// Reads the log after `cursor` and sends each event until the client goes.
async fn follow(
    client: Client,
    filter: EventFilter,
    mut cursor: Option<String>,
    token_id: Option<String>,
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
) {
    let mut changes = client.store().notifier().subscribe();
    let mut failures = 0u32;
    let mut token_checked = tokio::time::Instant::now();
    loop {
        // a stream lasts only as long as the token it was opened with
        if let Some(id) = &token_id
            && token_checked.elapsed() >= crate::auth::CACHE_TTL
        {
            if let Ok(None) = client.store().token_get(id).await {
                return;
            }
            token_checked = tokio::time::Instant::now();
        }
        let page = client
            .events(&EventListParams {
                after: cursor.clone(),
                filter: filter.clone(),
                limit: STREAM_BATCH.min(MAX_EVENT_PAGE),
            })
            .await;
        let page = match page {
            Ok(p) => {
                failures = 0;
                p
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "reading the event log failed; the stream waits");
                let wait = Duration::from_millis(100 * 2u64.pow(failures.min(5)));
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    () = tx.closed() => return,
                }
            }
        };
        // the cursor moved: there may be more right behind it (a filtered
        // read scans a bounded window), so read again at once
        let moved = page.cursor.is_some() && page.cursor != cursor;
        for event in page.events {
            let data = match serde_json::to_string(&event) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "an event could not be written as JSON");
                    continue;
                }
            };
            let sse = SseEvent::default()
                .id(event.cursor.clone())
                .event(event.kind.as_str())
                .data(data);
            if tx.send(Ok(sse)).await.is_err() {
                return;
            }
        }
        if moved {
            cursor = page.cursor;
            continue;
        }
        tokio::select! {
            _ = changes.recv() => {}
            () = tokio::time::sleep(SAFETY_POLL) => {}
            () = tx.closed() => return,
        }
    }
}
