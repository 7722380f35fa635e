//! `GET /v1/events` of the real `offload serve` over HTTP, on SQLite and on
//! PostgreSQL: a live Server-Sent Events stream with filters, resuming
//! with `Last-Event-ID`, the JSON form with paging, and bad input.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Env, sh_runner};
use offload_test_support::PgSchema;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

/// One Server-Sent Event.
#[derive(Debug, Clone)]
struct Sse {
    id: String,
    event: String,
    data: Value,
}

/// Reads a `text/event-stream` answer event by event.
struct Stream {
    response: Response,
    buffer: String,
}

impl Stream {
    async fn open(http: &Client, url: &str, last_event_id: Option<&str>) -> Self {
        let mut req = http.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let response = req.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (comments and keep-alives skipped), within 20 s.
    async fn next(&mut self) -> Sse {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let (mut id, mut event, mut data) =
                        (String::new(), String::new(), String::new());
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            id = v.trim().to_owned();
                        } else if let Some(v) = line.strip_prefix("event:") {
                            event = v.trim().to_owned();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim_start());
                        }
                    }
                    if data.is_empty() {
                        continue;
                    }
                    return Sse {
                        id,
                        event,
                        data: serde_json::from_str(&data).unwrap(),
                    };
                }
                let chunk = self
                    .response
                    .chunk()
                    .await
                    .unwrap()
                    .expect("the stream ended");
                self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        })
        .await
        .expect("no event within 20 s")
    }

    /// Events until one of `task` with type `last` (inclusive).
    async fn until(&mut self, task: &str, last: &str) -> Vec<Sse> {
        let mut seen = Vec::new();
        loop {
            let e = self.next().await;
            let done = e.data["task_id"] == json!(task) && e.event == last;
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
}

async fn enqueue(http: &Client, base: &str, body: Value) -> String {
    let r = http
        .post(format!("{base}/v1/tasks"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn events(env: &Env) {
    let (_server, base) = env.serve(&["--concurrency", "2"]);
    let http = Client::new();
    let url = format!("{base}/v1/events");

    // a live stream of everything, and one of failures only
    let mut all = Stream::open(&http, &url, None).await;
    let mut failures = Stream::open(&http, &format!("{url}?type=task.failed"), None).await;

    let ok = enqueue(&http, &base, json!({"name": "echo", "input": {"n": 1}})).await;
    let seen = all.until(&ok, "task.succeeded").await;
    let mine: Vec<&Sse> = seen
        .iter()
        .filter(|e| e.data["task_id"] == json!(ok))
        .collect();
    let kinds: Vec<&str> = mine.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "task.created",
            "task.started",
            "task.progress",
            "task.succeeded"
        ],
        "{mine:?}"
    );
    for e in &mine {
        assert_eq!(e.data["type"], json!(e.event));
        assert_eq!(e.data["cursor"], json!(e.id));
        assert_eq!(e.data["name"], json!("echo"));
        assert_eq!(e.data["queue"], json!("default"));
    }
    assert_eq!(mine[0].data["data"]["status"], json!("pending"));
    assert_eq!(mine[1].data["attempt"], json!(1));
    assert_eq!(mine[2].data["data"]["percent"], json!(50));

    let bad = enqueue(
        &http,
        &base,
        json!({"name": "fail", "input": null, "max_attempts": 2, "retry": {"initial": "10ms", "max": "10ms", "multiplier": 1.0, "jitter": 0.0}}),
    )
    .await;
    let seen = all.until(&bad, "task.failed").await;
    let kinds: Vec<&str> = seen
        .iter()
        .filter(|e| e.data["task_id"] == json!(bad))
        .map(|e| e.event.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "task.created",
            "task.started",
            "task.retrying",
            "task.started",
            "task.failed"
        ]
    );
    let failed = failures.next().await;
    assert_eq!(failed.event, "task.failed");
    assert_eq!(failed.data["task_id"], json!(bad));
    assert_eq!(failed.data["attempt"], json!(2));
    assert!(
        failed.data["data"]["error"]["message"].is_string(),
        "{failed:?}"
    );

    // resume after the first event of `ok`: everything after it comes again, in order
    let mut resumed = Stream::open(&http, &format!("{url}?task_id={ok}"), Some(&mine[0].id)).await;
    for expected in &mine[1..] {
        let e = resumed.next().await;
        assert_eq!(e.id, expected.id);
        assert_eq!(e.event, expected.event);
    }

    // the JSON form pages through the log from its start
    let mut cursor: Option<String> = None;
    let mut paged = Vec::new();
    for _ in 0..100 {
        let q = match &cursor {
            Some(c) => format!("{url}?limit=2&after={c}"),
            None => format!("{url}?limit=2"),
        };
        let page: Value = http.get(&q).send().await.unwrap().json().await.unwrap();
        let events = page["events"].as_array().unwrap().clone();
        if events.is_empty() {
            break;
        }
        cursor = page["cursor"].as_str().map(str::to_owned);
        paged.extend(events);
    }
    let ids: Vec<&Value> = paged.iter().map(|e| &e["task_id"]).collect();
    assert_eq!(ids.iter().filter(|i| ***i == json!(ok)).count(), 4);
    assert_eq!(ids.iter().filter(|i| ***i == json!(bad)).count(), 5);
    let cursors: Vec<&Value> = paged.iter().map(|e| &e["cursor"]).collect();
    let mut unique = cursors.clone();
    unique.dedup();
    assert_eq!(unique.len(), cursors.len(), "no event twice");

    // bad input: 422 naming the field, before any stream starts
    for (query, field) in [
        ("type=task.exploded", "type"),
        ("task_id=nope", "task_id"),
        ("after=not-a-cursor", "cursor"),
        ("limit=0", "limit"),
    ] {
        let r = http.get(format!("{url}?{query}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["field"], json!(field), "{query}: {v}");
    }
    let r = http
        .get(&url)
        .header("accept", "text/event-stream")
        .header("last-event-id", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = http.get(format!("{url}?bogus=1")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

/// `echo` reports 50 % progress, then (once the report is surely stored)
/// prints its input; `fail` exits 1.
fn config() -> String {
    format!(
        "{}{}",
        sh_runner("echo", "echo 'progress: 50' >&2; sleep 0.5; cat", ""),
        sh_runner("fail", "exit 1", "")
    )
}

#[tokio::test]
async fn events_stream_resume_and_pages_on_sqlite() {
    let env = Env::with_config(&config());
    events(&env).await;
}

#[tokio::test]
async fn events_stream_resume_and_pages_on_postgres() {
    let schema = PgSchema::new().await;
    let mut env = Env::with_config(&config());
    env.database = Some(schema.url());
    events(&env).await;
}
