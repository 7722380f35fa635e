//! Cases for webhooks: subscriptions (`webhook_insert`, `webhook_list`,
//! `webhook_delete`), the dispatcher's cursor compare-and-set
//! (`webhook_cursor`, `webhook_enqueue`), the durable queue of deliveries
//! (`webhook_delivery_claim`, `_record`, `_list`, `_purge`), the secret of
//! tasks' own webhooks (`webhook_task_secret`), and the task option
//! `webhook` kept through every way a task is written and read.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use offload_store::{
    Delivery, DeliveryAttempt, DeliveryClaimParams, DeliveryListParams, DeliveryRecordParams,
    DeliveryStatus, EventKind, FinishOutcome, IdempotencyKey, NewDelivery, PurgeBeforeParams,
    Store, StoreError, StoreResult, TaskDeleteParams, TaskExportParams, TaskImportParams,
    TaskInsertParams, TaskListParams, WebhookEnqueueParams, WebhookRecord,
};
use offload_types::{NewTask, TaskId, TaskOptions};
use serde_json::json;

use crate::harness::{lease_of, ok};
use crate::{Harness, WORKER};

/// How long a delivery claim holds in these cases.
const SEND_LEASE: Duration = Duration::from_secs(60);

#[track_caller]
fn expect_invalid<T: std::fmt::Debug>(result: StoreResult<T>, field: &str) {
    match result {
        Err(StoreError::Invalid(e)) => assert_eq!(e.field, field, "the error names {field}: {e}"),
        other => panic!("a bad {field} must be Invalid, got {other:?}"),
    }
}

#[track_caller]
fn expect_conflict<T: std::fmt::Debug>(result: StoreResult<T>, mentions: &str) -> String {
    match result {
        Err(StoreError::Conflict(m)) => {
            assert!(
                m.contains(mentions),
                "the conflict mentions {mentions}: {m}"
            );
            m
        }
        other => panic!("expected a Conflict mentioning {mentions}, got {other:?}"),
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A subscription created at `created_at`.
fn webhook(id: &str, created_at: DateTime<Utc>) -> WebhookRecord {
    WebhookRecord {
        id: id.to_owned(),
        url: format!("https://hooks.example.com/{id}?x=1"),
        secret: format!("whsec_secret-of-{id}"),
        events: vec![EventKind::Succeeded, EventKind::Failed],
        names: Vec::new(),
        queues: Vec::new(),
        created_at,
    }
}

/// A delivery of `event` about `task_id`, for `webhook_id`, made at
/// `created_at`.
fn delivery(
    id: &str,
    webhook_id: Option<&str>,
    task_id: TaskId,
    created_at: DateTime<Utc>,
) -> NewDelivery {
    NewDelivery {
        id: id.to_owned(),
        webhook_id: webhook_id.map(str::to_owned),
        url: format!(
            "https://receiver.example.com/{}",
            webhook_id.unwrap_or("task")
        ),
        event: EventKind::Succeeded,
        task_id,
        payload: json!({"type": "task.succeeded", "delivery": id}).to_string(),
        created_at,
    }
}

/// What a freshly stored delivery reads back as.
fn stored(d: &NewDelivery) -> Delivery {
    Delivery {
        id: d.id.clone(),
        webhook_id: d.webhook_id.clone(),
        url: d.url.clone(),
        event: d.event,
        task_id: d.task_id,
        payload: d.payload.clone(),
        status: DeliveryStatus::Pending,
        created_at: d.created_at,
        next_attempt_at: Some(d.created_at),
        attempts: Vec::new(),
    }
}

fn ids(deliveries: &[Delivery]) -> Vec<&str> {
    deliveries.iter().map(|d| d.id.as_str()).collect()
}

async fn add_webhook(h: &Harness, w: &WebhookRecord) {
    ok("webhook_insert", h.store.webhook_insert(w).await);
}

async fn webhooks(h: &Harness) -> Vec<WebhookRecord> {
    ok("webhook_list", h.store.webhook_list().await)
}

async fn try_enqueue(
    store: &dyn Store,
    expected: Option<&str>,
    new_cursor: &str,
    deliveries: Vec<NewDelivery>,
) -> StoreResult<bool> {
    store
        .webhook_enqueue(&WebhookEnqueueParams {
            expected_cursor: expected.map(str::to_owned),
            new_cursor: new_cursor.to_owned(),
            deliveries,
        })
        .await
}

/// Enqueues `deliveries` after the current cursor and moves it to
/// `new_cursor`; the compare-and-set must succeed.
async fn enqueue(h: &Harness, new_cursor: &str, deliveries: Vec<NewDelivery>) {
    let current = cursor(h).await;
    let moved = ok(
        "webhook_enqueue",
        try_enqueue(h.store.as_ref(), current.as_deref(), new_cursor, deliveries).await,
    );
    assert!(moved, "the enqueue after the current cursor moves it");
}

async fn cursor(h: &Harness) -> Option<String> {
    ok("webhook_cursor", h.store.webhook_cursor().await)
}

fn claim_params(h: &Harness, limit: u32) -> DeliveryClaimParams {
    DeliveryClaimParams {
        limit,
        now: h.now(),
        lease: SEND_LEASE,
    }
}

async fn claim_on(h: &Harness, store: &dyn Store, limit: u32) -> Vec<Delivery> {
    ok(
        "webhook_delivery_claim",
        store.webhook_delivery_claim(&claim_params(h, limit)).await,
    )
}

async fn claim(h: &Harness, limit: u32) -> Vec<Delivery> {
    claim_on(h, h.store.as_ref(), limit).await
}

async fn list(h: &Harness, webhook_id: Option<&str>, task_id: Option<TaskId>) -> Vec<Delivery> {
    let params = DeliveryListParams {
        webhook_id: webhook_id.map(str::to_owned),
        task_id,
        limit: 1000,
    };
    ok(
        "webhook_delivery_list",
        h.store.webhook_delivery_list(&params).await,
    )
}

/// The delivery `id` as listed.
async fn find(h: &Harness, id: &str) -> Delivery {
    match list(h, None, None).await.into_iter().find(|d| d.id == id) {
        Some(d) => d,
        None => panic!("delivery {id} should be listed"),
    }
}

/// An attempt numbered `n` at `now`.
fn attempt(h: &Harness, n: u32, status_code: Option<u16>, error: Option<&str>) -> DeliveryAttempt {
    DeliveryAttempt {
        attempt: n,
        at: h.now(),
        status_code,
        latency_ms: 40 + u64::from(n),
        error: error.map(str::to_owned),
    }
}

fn record_params(
    id: &str,
    attempt: DeliveryAttempt,
    status: DeliveryStatus,
    retry_at: Option<DateTime<Utc>>,
) -> DeliveryRecordParams {
    DeliveryRecordParams {
        id: id.to_owned(),
        attempt,
        status,
        retry_at,
    }
}

async fn try_record(
    h: &Harness,
    id: &str,
    attempt: DeliveryAttempt,
    status: DeliveryStatus,
    retry_at: Option<DateTime<Utc>>,
) -> StoreResult<()> {
    h.store
        .webhook_delivery_record(&record_params(id, attempt, status, retry_at))
        .await
}

async fn record(
    h: &Harness,
    id: &str,
    attempt: DeliveryAttempt,
    status: DeliveryStatus,
    retry_at: Option<DateTime<Utc>>,
) {
    ok(
        "webhook_delivery_record",
        try_record(h, id, attempt, status, retry_at).await,
    );
}

async fn purge(h: &Harness, before: DateTime<Utc>, limit: u32) -> u64 {
    ok(
        "webhook_delivery_purge",
        h.store
            .webhook_delivery_purge(&PurgeBeforeParams { before, limit })
            .await,
    )
}

// ---------------------------------------------------------------- subscriptions

/// Subscriptions read back exactly, oldest first (ties by id), through
/// either handle.
pub async fn webhook_round_trip_and_list_oldest_first(h: &Harness) {
    let newest = WebhookRecord {
        names: vec!["send_email".to_owned(), "report".to_owned()],
        ..webhook("wh_b", h.now())
    };
    let oldest = WebhookRecord {
        events: EventKind::ALL.to_vec(),
        queues: vec!["mail".to_owned()],
        ..webhook("wh_c", h.earlier(secs(60)))
    };
    let tie = WebhookRecord {
        events: vec![EventKind::Aborted],
        ..webhook("wh_a", h.now())
    };
    add_webhook(h, &newest).await;
    add_webhook(h, &oldest).await;
    add_webhook(h, &tie).await;
    let expected = vec![oldest, tie, newest];
    assert_eq!(webhooks(h).await, expected);
    assert_eq!(ok("webhook_list", h.second.webhook_list().await), expected);
}

/// A second subscription with a taken id is a conflict and changes nothing.
pub async fn webhook_duplicate_id_conflicts(h: &Harness) {
    let first = webhook("wh_dup", h.now());
    add_webhook(h, &first).await;
    let again = WebhookRecord {
        url: "https://other.example.com/".to_owned(),
        ..webhook("wh_dup", h.later(secs(1)))
    };
    expect_conflict(h.store.webhook_insert(&again).await, "wh_dup");
    expect_conflict(h.second.webhook_insert(&again).await, "wh_dup");
    assert_eq!(webhooks(h).await, vec![first]);
}

/// Bad ids, URLs, secrets, event lists and filters are refused, naming
/// the field, and nothing is stored; the longest id is fine.
pub async fn webhook_invalid_fields_are_refused(h: &Harness) {
    let base = webhook("wh_v", h.now());
    for id in [String::new(), "w".repeat(65)] {
        let bad = WebhookRecord { id, ..base.clone() };
        expect_invalid(h.store.webhook_insert(&bad).await, "id");
    }
    for url in [
        "ftp://example.com/",
        "https://",
        "https://user:pw@example.com/",
        "https://example.com/a b",
        "example.com",
    ] {
        let bad = WebhookRecord {
            url: url.to_owned(),
            ..base.clone()
        };
        expect_invalid(h.store.webhook_insert(&bad).await, "url");
    }
    let bad = WebhookRecord {
        secret: String::new(),
        ..base.clone()
    };
    expect_invalid(h.store.webhook_insert(&bad).await, "secret");
    let bad = WebhookRecord {
        events: Vec::new(),
        ..base.clone()
    };
    expect_invalid(h.store.webhook_insert(&bad).await, "events");
    let bad = WebhookRecord {
        names: vec!["ok".to_owned(), String::new()],
        ..base.clone()
    };
    expect_invalid(h.store.webhook_insert(&bad).await, "names");
    let bad = WebhookRecord {
        queues: vec![String::new()],
        ..base.clone()
    };
    expect_invalid(h.store.webhook_insert(&bad).await, "queues");
    assert!(webhooks(h).await.is_empty(), "nothing stored");

    let longest = WebhookRecord {
        id: "w".repeat(64),
        ..base
    };
    add_webhook(h, &longest).await;
    assert_eq!(webhooks(h).await, vec![longest]);
}

/// Deleting a subscription deletes its deliveries and their attempts,
/// and nothing else; deleting it again reports there was none.
pub async fn webhook_delete_cascades_to_deliveries(h: &Harness) {
    add_webhook(h, &webhook("wh_1", h.earlier(secs(1)))).await;
    add_webhook(h, &webhook("wh_2", h.now())).await;
    let task = TaskId::new();
    enqueue(
        h,
        "c1",
        vec![
            delivery("msg_1", Some("wh_1"), task, h.earlier(secs(3))),
            delivery("msg_2", Some("wh_2"), task, h.earlier(secs(2))),
            delivery("msg_3", None, task, h.earlier(secs(1))),
        ],
    )
    .await;
    assert_eq!(ids(&claim(h, 1).await), vec!["msg_1"]);
    record(
        h,
        "msg_1",
        attempt(h, 1, Some(503), Some("HTTP 503")),
        DeliveryStatus::Pending,
        Some(h.later(secs(10))),
    )
    .await;

    assert!(ok("webhook_delete", h.store.webhook_delete("wh_1").await));
    assert!(!ok("webhook_delete", h.second.webhook_delete("wh_1").await));
    assert!(!ok(
        "webhook_delete",
        h.store.webhook_delete("wh_none").await
    ));
    assert_eq!(
        webhooks(h)
            .await
            .iter()
            .map(|w| w.id.as_str())
            .collect::<Vec<_>>(),
        vec!["wh_2"]
    );
    assert_eq!(ids(&list(h, None, None).await), vec!["msg_3", "msg_2"]);
    assert!(list(h, Some("wh_1"), None).await.is_empty());

    // The delivery's attempts went too: the id starts afresh at attempt 1.
    enqueue(
        h,
        "c2",
        vec![delivery("msg_1", Some("wh_2"), task, h.now())],
    )
    .await;
    assert_eq!(find(h, "msg_1").await.attempts, Vec::new());
    record(
        h,
        "msg_1",
        attempt(h, 1, Some(200), None),
        DeliveryStatus::Delivered,
        None,
    )
    .await;
}

// ---------------------------------------------------------------- enqueue

/// No cursor at first; an enqueue expecting none stores its deliveries
/// (pending, due at their creation, no attempts) and sets the cursor;
/// the next one expecting that cursor moves it, even with no deliveries.
pub async fn webhook_enqueue_moves_cursor_compare_and_set(h: &Harness) {
    assert_eq!(cursor(h).await, None);
    let task = TaskId::new();
    let first = delivery("msg_a", Some("wh_x"), task, h.earlier(secs(5)));
    let own = delivery("msg_b", None, task, h.now());
    let moved = ok(
        "webhook_enqueue",
        try_enqueue(
            h.store.as_ref(),
            None,
            "c1",
            vec![first.clone(), own.clone()],
        )
        .await,
    );
    assert!(
        moved,
        "no cursor expected and none stored: the enqueue applies"
    );
    assert_eq!(cursor(h).await.as_deref(), Some("c1"));
    assert_eq!(
        ok("webhook_cursor", h.second.webhook_cursor().await).as_deref(),
        Some("c1")
    );
    assert_eq!(
        list(h, None, None).await,
        vec![stored(&own), stored(&first)]
    );

    let moved = ok(
        "webhook_enqueue",
        try_enqueue(h.second.as_ref(), Some("c1"), "c2", Vec::new()).await,
    );
    assert!(moved, "the expected cursor is stored: the enqueue applies");
    assert_eq!(cursor(h).await.as_deref(), Some("c2"));
    assert_eq!(list(h, None, None).await.len(), 2);
}

/// An enqueue whose expected cursor is not the stored one (none when
/// there is one, another one, one when there is none) answers `false`
/// and stores nothing.
pub async fn webhook_enqueue_stale_cursor_stores_nothing(h: &Harness) {
    let task = TaskId::new();
    let stale = ok(
        "webhook_enqueue",
        try_enqueue(
            h.store.as_ref(),
            Some("c0"),
            "c1",
            vec![delivery("msg_1", None, task, h.now())],
        )
        .await,
    );
    assert!(!stale, "a cursor expected where none is stored");
    assert_eq!(cursor(h).await, None);

    enqueue(h, "c1", Vec::new()).await;
    for expected in [None, Some("c0"), Some("c2"), Some("")] {
        let moved = ok(
            "webhook_enqueue",
            try_enqueue(
                h.store.as_ref(),
                expected,
                "c9",
                vec![delivery("msg_1", None, task, h.now())],
            )
            .await,
        );
        assert!(!moved, "expected {expected:?} while c1 is stored");
    }
    assert_eq!(cursor(h).await.as_deref(), Some("c1"));
    assert!(list(h, None, None).await.is_empty(), "nothing stored");
}

/// Two dispatchers that read the same cursor enqueue at once through two
/// handles: exactly one succeeds, and only its deliveries and cursor are
/// stored.
pub async fn webhook_enqueue_concurrent_only_one_wins(h: &Harness) {
    let task = TaskId::new();
    let mut expected: Option<String> = None;
    let mut kept = Vec::new();
    for round in 0..8 {
        let (cursor_a, cursor_b) = (format!("r{round}-a"), format!("r{round}-b"));
        let (a, b) = tokio::join!(
            try_enqueue(
                h.store.as_ref(),
                expected.as_deref(),
                &cursor_a,
                vec![
                    delivery(&format!("msg_{round}_a1"), None, task, h.now()),
                    delivery(&format!("msg_{round}_a2"), None, task, h.now()),
                ],
            ),
            try_enqueue(
                h.second.as_ref(),
                expected.as_deref(),
                &cursor_b,
                vec![delivery(&format!("msg_{round}_b1"), None, task, h.now())],
            ),
        );
        let (a, b) = (
            ok("a racing webhook_enqueue", a),
            ok("a racing webhook_enqueue", b),
        );
        assert!(
            a != b,
            "round {round}: exactly one enqueue wins, got {a} and {b}"
        );
        let winner = if a { "a" } else { "b" };
        let now_cursor = format!("r{round}-{winner}");
        assert_eq!(cursor(h).await.as_deref(), Some(now_cursor.as_str()));
        if a {
            kept.extend([format!("msg_{round}_a1"), format!("msg_{round}_a2")]);
        } else {
            kept.push(format!("msg_{round}_b1"));
        }
        let listed: HashSet<String> = list(h, None, None)
            .await
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(
            listed,
            kept.iter().cloned().collect::<HashSet<_>>(),
            "round {round}: only the winners' deliveries are stored"
        );
        expected = Some(now_cursor);
    }
}

/// A delivery id that exists, or one given twice, is a conflict: neither
/// the batch's deliveries nor its cursor are stored.
pub async fn webhook_enqueue_duplicate_delivery_conflicts(h: &Harness) {
    let task = TaskId::new();
    enqueue(h, "c1", vec![delivery("msg_1", None, task, h.now())]).await;
    expect_conflict(
        try_enqueue(
            h.store.as_ref(),
            Some("c1"),
            "c2",
            vec![
                delivery("msg_2", None, task, h.now()),
                delivery("msg_1", None, task, h.now()),
            ],
        )
        .await,
        "msg_1",
    );
    expect_conflict(
        try_enqueue(
            h.second.as_ref(),
            Some("c1"),
            "c2",
            vec![
                delivery("msg_3", None, task, h.now()),
                delivery("msg_3", None, task, h.now()),
            ],
        )
        .await,
        "msg_3",
    );
    assert_eq!(cursor(h).await.as_deref(), Some("c1"));
    assert_eq!(ids(&list(h, None, None).await), vec!["msg_1"]);
}

/// Bad deliveries and cursors are refused, naming the field, and nothing
/// is stored; a payload of exactly 1 MiB is fine.
pub async fn webhook_enqueue_invalid_delivery_is_refused(h: &Harness) {
    let task = TaskId::new();
    let good = delivery("msg_ok", None, task, h.now());
    let cases: Vec<(&str, NewDelivery)> = vec![
        (
            "id",
            NewDelivery {
                id: String::new(),
                ..good.clone()
            },
        ),
        (
            "url",
            NewDelivery {
                url: "gopher://example.com/".to_owned(),
                ..good.clone()
            },
        ),
        (
            "payload",
            NewDelivery {
                payload: "x".repeat(NewDelivery::MAX_PAYLOAD_LEN + 1),
                ..good.clone()
            },
        ),
        (
            "webhook_id",
            NewDelivery {
                webhook_id: Some(String::new()),
                ..good.clone()
            },
        ),
    ];
    for (field, bad) in cases {
        expect_invalid(
            try_enqueue(h.store.as_ref(), None, "c1", vec![good.clone(), bad]).await,
            field,
        );
    }
    expect_invalid(
        try_enqueue(h.store.as_ref(), None, "", vec![good.clone()]).await,
        "new_cursor",
    );
    assert_eq!(cursor(h).await, None);
    assert!(list(h, None, None).await.is_empty(), "nothing stored");

    let largest = NewDelivery {
        payload: "y".repeat(NewDelivery::MAX_PAYLOAD_LEN),
        ..good
    };
    enqueue(h, "c1", vec![largest.clone()]).await;
    assert_eq!(list(h, None, None).await, vec![stored(&largest)]);
}

// ---------------------------------------------------------------- claim

/// A claim takes only pending deliveries whose time has come, oldest due
/// first, at most `limit`, and returns them due at the end of the lease.
pub async fn webhook_claim_only_due_oldest_first(h: &Harness) {
    let task = TaskId::new();
    enqueue(
        h,
        "c1",
        vec![
            delivery("msg_a", None, task, h.earlier(secs(3))),
            delivery("msg_b", None, task, h.earlier(secs(1))),
            delivery("msg_future", None, task, h.later(secs(10))),
            delivery("msg_c", None, task, h.earlier(secs(2))),
        ],
    )
    .await;
    let first = claim(h, 2).await;
    assert_eq!(ids(&first), vec!["msg_a", "msg_c"]);
    for d in &first {
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(d.next_attempt_at, Some(h.later(SEND_LEASE)));
        assert!(d.attempts.is_empty());
    }
    assert_eq!(first[0].payload, find(h, "msg_a").await.payload);
    assert_eq!(ids(&claim(h, 10).await), vec!["msg_b"]);
    assert!(claim(h, 10).await.is_empty(), "nothing else is due");

    h.advance(secs(10));
    assert_eq!(ids(&claim(h, 10).await), vec!["msg_future"]);
}

/// A claimed delivery is hidden from every claimer, through either
/// handle, until its lease lapses; then it is claimed again.
pub async fn webhook_claim_lease_hides_until_it_lapses(h: &Harness) {
    enqueue(
        h,
        "c1",
        vec![delivery("msg_1", None, TaskId::new(), h.now())],
    )
    .await;
    assert_eq!(ids(&claim(h, 10).await), vec!["msg_1"]);
    assert!(claim(h, 10).await.is_empty());
    assert!(claim_on(h, h.second.as_ref(), 10).await.is_empty());
    assert_eq!(
        find(h, "msg_1").await.next_attempt_at,
        Some(h.later(SEND_LEASE))
    );

    h.advance(SEND_LEASE - secs(1));
    assert!(claim_on(h, h.second.as_ref(), 10).await.is_empty());
    h.advance(secs(1));
    let again = claim_on(h, h.second.as_ref(), 10).await;
    assert_eq!(ids(&again), vec!["msg_1"]);
    assert_eq!(again[0].next_attempt_at, Some(h.later(SEND_LEASE)));
}

/// Concurrent claimers on both handles never receive the same delivery,
/// and together with a last claim take each due one exactly once.
pub async fn webhook_claim_concurrent_claimers_never_share(h: &Harness) {
    let task = TaskId::new();
    let all: Vec<NewDelivery> = (0..40)
        .map(|i| delivery(&format!("msg_{i:02}"), None, task, h.earlier(secs(100 - i))))
        .collect();
    enqueue(h, "c1", all).await;
    let (a, b, c) = tokio::join!(
        claim_on(h, h.store.as_ref(), 9),
        claim_on(h, h.second.as_ref(), 9),
        claim_on(h, h.store.as_ref(), 9),
    );
    let rest = claim(h, 1000).await;
    let mut seen = HashSet::new();
    for d in a.iter().chain(&b).chain(&c).chain(&rest) {
        assert!(seen.insert(d.id.clone()), "{} was claimed twice", d.id);
    }
    assert_eq!(seen.len(), 40, "every due delivery is claimed once");
    for batch in [&a, &b, &c] {
        assert!(batch.len() <= 9, "a claim respects its limit");
    }
}

// ---------------------------------------------------------------- record

/// Attempts are recorded in order and come back with claims and lists;
/// a pending record moves the next attempt to `retry_at`; a delivered
/// one is no longer due.
pub async fn webhook_record_attempts_and_return_them(h: &Harness) {
    let d = delivery("msg_1", Some("wh_1"), TaskId::new(), h.now());
    enqueue(h, "c1", vec![d.clone()]).await;
    assert_eq!(ids(&claim(h, 10).await), vec!["msg_1"]);
    let first = attempt(h, 1, Some(500), Some("HTTP 500"));
    let retry_at = h.later(secs(5));
    record(
        h,
        "msg_1",
        first.clone(),
        DeliveryStatus::Pending,
        Some(retry_at),
    )
    .await;
    assert_eq!(
        find(h, "msg_1").await,
        Delivery {
            next_attempt_at: Some(retry_at),
            attempts: vec![first.clone()],
            ..stored(&d)
        }
    );
    assert!(claim(h, 10).await.is_empty(), "not due before retry_at");

    h.advance(secs(5));
    let again = claim_on(h, h.second.as_ref(), 10).await;
    assert_eq!(ids(&again), vec!["msg_1"]);
    assert_eq!(again[0].attempts, vec![first.clone()]);

    let second = DeliveryAttempt {
        latency_ms: 0,
        ..attempt(h, 2, None, Some("connection refused"))
    };
    record(
        h,
        "msg_1",
        second.clone(),
        DeliveryStatus::Pending,
        Some(h.later(secs(30))),
    )
    .await;
    h.advance(secs(30));
    assert_eq!(ids(&claim(h, 10).await), vec!["msg_1"]);
    let third = attempt(h, 3, Some(204), None);
    record(
        h,
        "msg_1",
        third.clone(),
        DeliveryStatus::Delivered,
        Some(h.later(secs(60))),
    )
    .await;
    assert_eq!(
        find(h, "msg_1").await,
        Delivery {
            status: DeliveryStatus::Delivered,
            next_attempt_at: None,
            attempts: vec![first, second, third],
            ..stored(&d)
        }
    );
    h.advance(secs(3600));
    assert!(
        claim(h, 10).await.is_empty(),
        "a delivered delivery is done"
    );
}

/// An attempt number that is not the next one (a sender whose claim
/// lapsed and was taken over) is a conflict and records nothing.
pub async fn webhook_record_stale_attempt_conflicts(h: &Harness) {
    enqueue(
        h,
        "c1",
        vec![delivery("msg_1", None, TaskId::new(), h.now())],
    )
    .await;
    assert_eq!(ids(&claim(h, 10).await), vec!["msg_1"]);
    for n in [0, 2, 7] {
        expect_conflict(
            try_record(
                h,
                "msg_1",
                attempt(h, n, Some(200), None),
                DeliveryStatus::Delivered,
                None,
            )
            .await,
            "msg_1",
        );
    }
    assert!(find(h, "msg_1").await.attempts.is_empty());
    let retry_at = h.later(secs(1));
    record(
        h,
        "msg_1",
        attempt(h, 1, Some(502), None),
        DeliveryStatus::Pending,
        Some(retry_at),
    )
    .await;
    // The stale sender reports its attempt 1 too late.
    expect_conflict(
        h.second
            .webhook_delivery_record(&record_params(
                "msg_1",
                attempt(h, 1, Some(200), None),
                DeliveryStatus::Delivered,
                None,
            ))
            .await,
        "msg_1",
    );
    let now = find(h, "msg_1").await;
    assert_eq!(now.status, DeliveryStatus::Pending);
    assert_eq!(now.next_attempt_at, Some(retry_at));
    assert_eq!(now.attempts, vec![attempt(h, 1, Some(502), None)]);
}

/// A delivery that stays pending needs `retry_at`; without one the record
/// is refused and writes nothing.
pub async fn webhook_record_pending_needs_retry_at(h: &Harness) {
    enqueue(
        h,
        "c1",
        vec![delivery("msg_1", None, TaskId::new(), h.now())],
    )
    .await;
    claim(h, 10).await;
    expect_invalid(
        try_record(
            h,
            "msg_1",
            attempt(h, 1, Some(500), None),
            DeliveryStatus::Pending,
            None,
        )
        .await,
        "retry_at",
    );
    let d = find(h, "msg_1").await;
    assert!(d.attempts.is_empty());
    assert_eq!(d.status, DeliveryStatus::Pending);
}

/// Recording for an unknown delivery, or one that is delivered or failed,
/// is a conflict; delivered and failed deliveries are never claimed.
pub async fn webhook_record_unknown_or_finished_conflicts(h: &Harness) {
    let task = TaskId::new();
    enqueue(
        h,
        "c1",
        vec![
            delivery("msg_ok", None, task, h.earlier(secs(2))),
            delivery("msg_bad", None, task, h.earlier(secs(1))),
        ],
    )
    .await;
    expect_conflict(
        try_record(
            h,
            "msg_none",
            attempt(h, 1, Some(200), None),
            DeliveryStatus::Delivered,
            None,
        )
        .await,
        "msg_none",
    );
    assert_eq!(ids(&claim(h, 10).await), vec!["msg_ok", "msg_bad"]);
    record(
        h,
        "msg_ok",
        attempt(h, 1, Some(200), None),
        DeliveryStatus::Delivered,
        None,
    )
    .await;
    record(
        h,
        "msg_bad",
        attempt(h, 1, Some(410), Some("HTTP 410")),
        DeliveryStatus::Failed,
        None,
    )
    .await;
    let m = expect_conflict(
        try_record(
            h,
            "msg_ok",
            attempt(h, 2, Some(200), None),
            DeliveryStatus::Delivered,
            None,
        )
        .await,
        "msg_ok",
    );
    assert!(m.contains("delivered"), "says why: {m}");
    let m = expect_conflict(
        try_record(
            h,
            "msg_bad",
            attempt(h, 2, Some(500), None),
            DeliveryStatus::Pending,
            Some(h.later(secs(1))),
        )
        .await,
        "msg_bad",
    );
    assert!(m.contains("failed"), "says why: {m}");
    let failed = find(h, "msg_bad").await;
    assert_eq!(failed.status, DeliveryStatus::Failed);
    assert_eq!(failed.next_attempt_at, None);
    assert_eq!(failed.attempts.len(), 1);
    h.advance(secs(86_400));
    assert!(claim(h, 10).await.is_empty());
}

// ---------------------------------------------------------------- list

/// Lists are newest first (ties by id, descending), filtered by
/// subscription and task, bounded by `limit`, each delivery whole.
pub async fn webhook_delivery_list_filters_and_order(h: &Harness) {
    let (t1, t2) = (TaskId::new(), TaskId::new());
    let d1 = delivery("msg_1", Some("wh_1"), t1, h.earlier(secs(3)));
    let d2 = NewDelivery {
        event: EventKind::Failed,
        ..delivery("msg_2", Some("wh_2"), t1, h.earlier(secs(2)))
    };
    let d3 = NewDelivery {
        event: EventKind::Aborted,
        ..delivery("msg_3", None, t2, h.earlier(secs(1)))
    };
    let d4 = delivery("msg_4", Some("wh_1"), t2, h.earlier(secs(1)));
    enqueue(
        h,
        "c1",
        vec![d1.clone(), d2.clone(), d3.clone(), d4.clone()],
    )
    .await;

    assert_eq!(
        list(h, None, None).await,
        vec![stored(&d4), stored(&d3), stored(&d2), stored(&d1)]
    );
    let page = ok(
        "webhook_delivery_list",
        h.second
            .webhook_delivery_list(&DeliveryListParams {
                limit: 2,
                ..Default::default()
            })
            .await,
    );
    assert_eq!(ids(&page), vec!["msg_4", "msg_3"]);
    assert_eq!(
        ids(&list(h, Some("wh_1"), None).await),
        vec!["msg_4", "msg_1"]
    );
    assert_eq!(ids(&list(h, None, Some(t1)).await), vec!["msg_2", "msg_1"]);
    assert_eq!(ids(&list(h, Some("wh_1"), Some(t2)).await), vec!["msg_4"]);
    assert!(list(h, Some("wh_9"), None).await.is_empty());
    assert!(list(h, None, Some(TaskId::new())).await.is_empty());
}

/// Claim and list sizes outside 1..=1000 are refused.
pub async fn webhook_delivery_limits_are_checked(h: &Harness) {
    for limit in [0, 1001] {
        expect_invalid(
            h.store
                .webhook_delivery_claim(&claim_params(h, limit))
                .await,
            "limit",
        );
        expect_invalid(
            h.store
                .webhook_delivery_list(&DeliveryListParams {
                    limit,
                    ..Default::default()
                })
                .await,
            "limit",
        );
    }
    assert!(claim(h, 1000).await.is_empty());
}

// ---------------------------------------------------------------- purge

/// A purge deletes delivered and failed deliveries made before the
/// cut-off, with their attempts, at most `limit`; pending and newer ones
/// stay.
pub async fn webhook_delivery_purge_only_finished_and_old(h: &Harness) {
    let task = TaskId::new();
    let old = h.earlier(secs(7200));
    let mut batch: Vec<NewDelivery> = ["msg_done", "msg_failed", "msg_pending"]
        .iter()
        .map(|id| delivery(id, None, task, old))
        .collect();
    batch.push(delivery("msg_new", None, task, h.now()));
    batch.extend((0..3).map(|i| delivery(&format!("msg_more_{i}"), None, task, old)));
    enqueue(h, "c1", batch).await;
    assert_eq!(claim(h, 1000).await.len(), 7);
    for id in [
        "msg_done",
        "msg_new",
        "msg_more_0",
        "msg_more_1",
        "msg_more_2",
    ] {
        record(
            h,
            id,
            attempt(h, 1, Some(200), None),
            DeliveryStatus::Delivered,
            None,
        )
        .await;
    }
    record(
        h,
        "msg_failed",
        attempt(h, 1, None, Some("timed out")),
        DeliveryStatus::Failed,
        None,
    )
    .await;
    record(
        h,
        "msg_pending",
        attempt(h, 1, Some(500), None),
        DeliveryStatus::Pending,
        Some(h.later(secs(60))),
    )
    .await;

    let cut = h.earlier(secs(3600));
    assert_eq!(purge(h, cut, 0).await, 0);
    assert_eq!(purge(h, cut, 3).await, 3);
    assert_eq!(purge(h, cut, 1000).await, 2);
    assert_eq!(purge(h, cut, 1000).await, 0);
    let mut left = ids(&list(h, None, None).await)
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    left.sort();
    assert_eq!(left, vec!["msg_new", "msg_pending"]);

    // The purged deliveries' attempts went too: an id starts afresh.
    enqueue(h, "c2", vec![delivery("msg_done", None, task, h.now())]).await;
    assert_eq!(ids(&claim(h, 10).await), vec!["msg_done"]);
    record(
        h,
        "msg_done",
        attempt(h, 1, Some(200), None),
        DeliveryStatus::Delivered,
        None,
    )
    .await;
}

// ---------------------------------------------------------------- task secret

/// The first candidate stored is the secret for good, whoever asks and
/// however many ask at once; an empty candidate is refused.
pub async fn webhook_task_secret_first_writer_wins(h: &Harness) {
    expect_invalid(h.store.webhook_task_secret("").await, "secret");
    let (a, b) = tokio::join!(
        h.store.webhook_task_secret("whsec_a"),
        h.second.webhook_task_secret("whsec_b"),
    );
    let (a, b) = (ok("webhook_task_secret", a), ok("webhook_task_secret", b));
    assert_eq!(a, b, "both callers get the one stored secret");
    assert!(
        a == "whsec_a" || a == "whsec_b",
        "a candidate was stored: {a}"
    );
    for candidate in ["whsec_c", "whsec_a", "whsec_b"] {
        assert_eq!(
            ok(
                "webhook_task_secret",
                h.second.webhook_task_secret(candidate).await
            ),
            a
        );
    }
    assert_eq!(
        ok("webhook_cursor", h.store.webhook_cursor().await),
        None,
        "the secret is not the cursor"
    );
}

// ---------------------------------------------------------------- task option

/// A task's `webhook` option is stored by every insert (plain and
/// idempotent) and returned by get, list, claim and export, and an
/// import writes it back.
pub async fn task_webhook_option_round_trips(h: &Harness) {
    let url = "https://app.example.com/hooks/offload?task=1";
    let claimed = h
        .insert_and_claim("with_hook", TaskOptions::new().webhook(url))
        .await;
    assert_eq!(claimed.webhook.as_deref(), Some(url), "from the claim");
    let plain = h.insert_one(NewTask::new("no_hook", json!({}))).await;
    let key = IdempotencyKey {
        key: "k-webhook".to_owned(),
        fingerprint: "fp".to_owned(),
        expires_at: h.later(secs(3600)),
    };
    let idem = ok(
        "task_insert_idempotent",
        h.store
            .task_insert_idempotent(
                &TaskInsertParams {
                    tasks: vec![
                        NewTask::new("idem_hook", json!({}))
                            .options(TaskOptions::new().webhook("http://10.0.0.1:8080/x")),
                    ],
                    now: h.now(),
                },
                &key,
            )
            .await,
    )
    .tasks[0]
        .id;
    let expect = [
        (claimed.id, Some(url)),
        (plain, None),
        (idem, Some("http://10.0.0.1:8080/x")),
    ];

    for (id, hook) in expect {
        assert_eq!(h.get(id).await.webhook.as_deref(), hook, "from get");
        let again = ok("task_get", h.second.task_get(id).await);
        assert_eq!(again.and_then(|t| t.webhook).as_deref(), hook);
    }
    let page = ok(
        "task_list",
        h.store
            .task_list(&TaskListParams {
                limit: 100,
                ..Default::default()
            })
            .await,
    );
    for (id, hook) in expect {
        let listed = page.tasks.iter().find(|t| t.id == id);
        assert_eq!(listed.and_then(|t| t.webhook.as_deref()), hook, "from list");
    }

    // Finish the running one, then copy everything out and back in.
    h.finish(
        lease_of(&claimed),
        FinishOutcome::Success { output: json!(1) },
    )
    .await;
    let records = ok(
        "task_export",
        h.store
            .task_export(&TaskExportParams {
                after: None,
                limit: 100,
            })
            .await,
    );
    assert_eq!(records.len(), 3);
    for (id, hook) in expect {
        let r = records.iter().find(|r| r.task.id == id);
        assert_eq!(
            r.and_then(|r| r.task.webhook.as_deref()),
            hook,
            "from export"
        );
        ok(
            "task_delete",
            h.store
                .task_delete(&TaskDeleteParams { id, now: h.now() })
                .await,
        );
    }
    let imported = ok(
        "task_import",
        h.second
            .task_import(&TaskImportParams {
                records: records.clone(),
            })
            .await,
    );
    assert_eq!(imported.inserted, 3);
    for (id, hook) in expect {
        assert_eq!(h.get(id).await.webhook.as_deref(), hook, "after import");
    }
    // A waiting imported task keeps it through its next claim.
    let reclaimed = h.claim(offload_types::DEFAULT_QUEUE, 10).await;
    assert_eq!(reclaimed.len(), 2, "the two waiting tasks");
    for t in &reclaimed {
        assert_eq!(t.worker_id.as_deref(), Some(WORKER));
        let hook = expect.iter().find(|(id, _)| *id == t.id).and_then(|e| e.1);
        assert_eq!(t.webhook.as_deref(), hook, "claim after import");
    }
}
