//! Cases for `task_insert_idempotent` and `idempotency_purge`: the first
//! request inserts and keeps its key, the same request again replays the
//! first ids without inserting, another request with a live key is a
//! conflict, an expired key is replaced, two requests racing with one key
//! insert once, a failing insert keeps no key, and purges respect expiry
//! and their limit.

use std::time::Duration;

use chrono::{DateTime, Utc};
use offload_store::{
    IdempotencyKey, IdempotentInsert, Notification, PurgeBeforeParams, Store, StoreError,
    StoreResult, TaskInsertParams,
};
use offload_types::{Enqueued, NewTask, TaskId, TaskOptions};
use serde_json::json;
use tokio::time::Instant;

use crate::Harness;
use crate::harness::ok;

/// How long keys live in these cases.
const TTL: Duration = Duration::from_secs(3600);

/// `n` fresh tasks named `name` (new ids on every call).
fn tasks(name: &str, n: usize) -> Vec<NewTask> {
    (0..n)
        .map(|i| NewTask::new(name, json!({ "i": i })))
        .collect()
}

/// The ids of an idempotent insert's answer, in order.
fn ids(answer: &IdempotentInsert) -> Vec<TaskId> {
    answer.tasks.iter().map(|t| t.id).collect()
}

/// The answer for freshly created tasks `ids`.
fn created(ids: Vec<TaskId>) -> Vec<Enqueued> {
    ids.into_iter().map(Enqueued::created).collect()
}

/// A key living [`TTL`] from the harness clock.
fn key(h: &Harness, key: &str, fingerprint: &str) -> IdempotencyKey {
    IdempotencyKey {
        key: key.to_owned(),
        fingerprint: fingerprint.to_owned(),
        expires_at: h.later(TTL),
    }
}

/// Runs `task_insert_idempotent` through `store` at the harness time.
async fn try_insert(
    h: &Harness,
    store: &dyn Store,
    tasks: Vec<NewTask>,
    key: &IdempotencyKey,
) -> StoreResult<IdempotentInsert> {
    let params = TaskInsertParams {
        tasks,
        now: h.now(),
    };
    store.task_insert_idempotent(&params, key).await
}

/// Like [`try_insert`] through the main store, which must succeed.
async fn insert(h: &Harness, tasks: Vec<NewTask>, key: &IdempotencyKey) -> IdempotentInsert {
    ok(
        "task_insert_idempotent",
        try_insert(h, h.store.as_ref(), tasks, key).await,
    )
}

async fn purge(h: &Harness, before: DateTime<Utc>, limit: u32) -> u64 {
    ok(
        "idempotency_purge",
        h.store
            .idempotency_purge(&PurgeBeforeParams { before, limit })
            .await,
    )
}

#[track_caller]
fn expect_conflict(result: StoreResult<IdempotentInsert>, what: &str) {
    match result {
        Err(StoreError::Conflict(message)) => assert!(
            message.contains("idempotency key") && message.contains("different request"),
            "the conflict says what happened, got {message:?}"
        ),
        other => panic!("{what} must be Conflict, got {other:?}"),
    }
}

#[track_caller]
fn expect_invalid<T: std::fmt::Debug>(result: StoreResult<T>, field: &str) {
    match result {
        Err(StoreError::Invalid(e)) => assert_eq!(e.field, field, "the error names {field}: {e}"),
        other => panic!("a bad {field} must be Invalid, got {other:?}"),
    }
}

/// The first request with a key inserts its tasks like
/// `task_insert_many` and answers their ids in order, not replayed.
pub async fn idempotent_first_insert_inserts(h: &Harness) {
    let mut batch = tasks("job", 3);
    batch.reverse();
    let given: Vec<TaskId> = batch.iter().map(|t| t.id).collect();
    let answer = insert(h, batch.clone(), &key(h, "k1", "fp-a")).await;
    assert_eq!(
        answer,
        IdempotentInsert {
            tasks: created(given),
            replayed: false
        }
    );
    for task in &batch {
        let stored = h.get(task.id).await;
        assert_eq!(stored.name, task.name);
        assert_eq!(stored.input, task.input);
        assert_eq!(stored.created_at, h.now());
    }
    assert_eq!(h.count_all().await, 3);
}

/// The same key and fingerprint again (even with other task ids, through
/// either handle) inserts nothing and answers the first request's ids in
/// their original order.
pub async fn idempotent_same_request_replays_first_ids(h: &Harness) {
    let k = key(h, "k-replay", "fp-a");
    let mut first = tasks("job", 4);
    first.reverse();
    let first_ids: Vec<TaskId> = first.iter().map(|t| t.id).collect();
    assert!(!insert(h, first, &k).await.replayed);
    h.advance(Duration::from_secs(60));
    let again = tasks("job", 4);
    let again_ids: Vec<TaskId> = again.iter().map(|t| t.id).collect();
    let answer = insert(h, again, &k).await;
    assert_eq!(
        answer,
        IdempotentInsert {
            tasks: created(first_ids.clone()),
            replayed: true
        },
        "a replay answers the first ids in order"
    );
    let through_second = ok(
        "task_insert_idempotent (second handle)",
        try_insert(h, h.second.as_ref(), tasks("job", 4), &k).await,
    );
    assert_eq!(ids(&through_second), first_ids);
    assert!(through_second.replayed);
    assert_eq!(h.count_all().await, 4, "replays insert nothing");
    for id in again_ids {
        assert_eq!(
            h.try_get(id).await,
            None,
            "the replayed request's tasks are not stored"
        );
    }
}

/// A live key used with another fingerprint is a conflict, and nothing is
/// inserted; the first request still replays.
pub async fn idempotent_other_request_conflicts(h: &Harness) {
    let first = insert(h, tasks("job", 2), &key(h, "k-conflict", "fp-a")).await;
    let other = tasks("other", 2);
    let other_ids: Vec<TaskId> = other.iter().map(|t| t.id).collect();
    expect_conflict(
        try_insert(h, h.store.as_ref(), other, &key(h, "k-conflict", "fp-b")).await,
        "another request with a live key",
    );
    for id in other_ids {
        assert_eq!(h.try_get(id).await, None, "nothing inserted on conflict");
    }
    assert_eq!(h.count_all().await, 2);
    let again = insert(h, tasks("job", 2), &key(h, "k-conflict", "fp-a")).await;
    assert_eq!(again.tasks, first.tasks);
    assert!(again.replayed);
}

/// Keys are independent of each other.
pub async fn idempotent_keys_are_independent(h: &Harness) {
    let a = insert(h, tasks("job", 1), &key(h, "k-a", "fp")).await;
    let b = insert(h, tasks("job", 1), &key(h, "k-b", "fp")).await;
    assert!(!a.replayed && !b.replayed);
    assert_ne!(ids(&a), ids(&b));
    assert_eq!(h.count_all().await, 2);
}

/// Once its `expires_at` is reached a key no longer holds: the next
/// request inserts anew (whatever its fingerprint) and takes the key over.
pub async fn idempotent_expired_key_inserts_again(h: &Harness) {
    let short = IdempotencyKey {
        key: "k-expiring".to_owned(),
        fingerprint: "fp-a".to_owned(),
        expires_at: h.later(Duration::from_secs(60)),
    };
    let first = insert(h, tasks("job", 2), &short).await;
    h.advance(Duration::from_secs(59));
    assert!(
        insert(h, tasks("job", 2), &short).await.replayed,
        "live until expires_at"
    );
    // Exactly at expires_at the key has expired.
    h.advance(Duration::from_secs(1));
    let fresh = tasks("job", 2);
    let fresh_ids: Vec<TaskId> = fresh.iter().map(|t| t.id).collect();
    let second = insert(h, fresh, &key(h, "k-expiring", "fp-b")).await;
    assert_eq!(
        second,
        IdempotentInsert {
            tasks: created(fresh_ids.clone()),
            replayed: false
        }
    );
    assert_ne!(ids(&second), ids(&first));
    assert_eq!(h.count_all().await, 4);
    // The key now holds the new request.
    let again = insert(h, tasks("job", 2), &key(h, "k-expiring", "fp-b")).await;
    assert_eq!(ids(&again), fresh_ids);
    assert!(again.replayed);
    expect_conflict(
        try_insert(h, h.store.as_ref(), tasks("job", 2), &short).await,
        "the old request after the key was taken over",
    );
}

/// Requests with one key racing through both handles insert once: those
/// with the winner's fingerprint replay its ids, the others get a
/// conflict. The same holds when they race to replace an expired key.
pub async fn idempotent_concurrent_requests_insert_once(h: &Harness) {
    let mut expected = 0;
    for round in 0..12 {
        if round == 8 {
            // Rounds 8.. race for the keys of rounds 0.., now expired.
            h.advance(TTL);
        }
        let name = format!("k-race-{}", round % 8);
        let mixed = round % 2 == 1;
        let fingerprints: Vec<&str> = (0..4)
            .map(|i| if mixed && i % 2 == 1 { "fp-b" } else { "fp-a" })
            .collect();
        let keys: Vec<IdempotencyKey> = fingerprints.iter().map(|fp| key(h, &name, fp)).collect();
        let (r0, r1, r2, r3) = tokio::join!(
            try_insert(h, h.store.as_ref(), tasks("a", 3), &keys[0]),
            try_insert(h, h.second.as_ref(), tasks("b", 3), &keys[1]),
            try_insert(h, h.second.as_ref(), tasks("c", 3), &keys[2]),
            try_insert(h, h.store.as_ref(), tasks("d", 3), &keys[3]),
        );
        let answers = [r0, r1, r2, r3];
        let winners: Vec<usize> = (0..4)
            .filter(|&i| matches!(&answers[i], Ok(a) if !a.replayed))
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one request inserts, got {answers:?}"
        );
        let winner = winners[0];
        let won_ids = match &answers[winner] {
            Ok(a) => ids(a),
            Err(e) => panic!("round {round}: the winner failed: {e}"),
        };
        for (i, answer) in answers.into_iter().enumerate() {
            if fingerprints[i] == fingerprints[winner] {
                let a = ok("a racing request with the winner's fingerprint", answer);
                assert_eq!(
                    ids(&a),
                    won_ids,
                    "round {round}: the same request replays the winner's ids"
                );
            } else {
                expect_conflict(answer, "a racing request with another fingerprint");
            }
        }
        expected += 3;
        assert_eq!(
            h.count_all().await,
            expected,
            "round {round}: exactly one set of tasks inserted"
        );
    }
}

/// A request whose insert fails (an invalid task, an id that exists)
/// stores no key: the key is free for the next request.
pub async fn idempotent_failed_insert_stores_no_key(h: &Harness) {
    let k = key(h, "k-failing", "fp-bad");
    let bad = vec![
        NewTask::new("valid", json!(1)),
        NewTask::new("ok", json!(null)).options(TaskOptions::new().max_attempts(0)),
    ];
    expect_invalid(
        try_insert(h, h.store.as_ref(), bad, &k).await,
        "max_attempts",
    );
    assert_eq!(h.count_all().await, 0, "nothing inserted");

    let existing = h.insert_one(NewTask::new("existing", json!(1))).await;
    let mut clash = NewTask::new("clash", json!(2));
    clash.id = existing;
    match try_insert(
        h,
        h.store.as_ref(),
        vec![NewTask::new("fresh", json!(3)), clash],
        &k,
    )
    .await
    {
        Err(StoreError::Conflict(m)) => {
            assert!(
                !m.contains("idempotency key"),
                "the task id is the conflict: {m}"
            )
        }
        other => panic!("an existing task id must be Conflict, got {other:?}"),
    }
    assert_eq!(h.count_all().await, 1);

    // Another fingerprint is no conflict: no key was kept.
    let good = tasks("good", 2);
    let good_ids: Vec<TaskId> = good.iter().map(|t| t.id).collect();
    let answer = insert(h, good, &key(h, "k-failing", "fp-good")).await;
    assert_eq!(
        answer,
        IdempotentInsert {
            tasks: created(good_ids),
            replayed: false
        }
    );
    assert_eq!(h.count_all().await, 3);
}

/// Keys longer than 255 characters, empty keys and empty fingerprints are
/// refused before anything is written.
pub async fn idempotent_invalid_key_is_refused(h: &Harness) {
    let long = key(h, &"k".repeat(256), "fp");
    expect_invalid(
        try_insert(h, h.store.as_ref(), tasks("job", 1), &long).await,
        "idempotency_key",
    );
    let empty = key(h, "", "fp");
    expect_invalid(
        try_insert(h, h.store.as_ref(), tasks("job", 1), &empty).await,
        "idempotency_key",
    );
    let no_fingerprint = key(h, "k", "");
    expect_invalid(
        try_insert(h, h.store.as_ref(), tasks("job", 1), &no_fingerprint).await,
        "fingerprint",
    );
    assert_eq!(h.count_all().await, 0);
    // 255 characters (not bytes) is fine.
    let longest = key(h, &"é".repeat(255), "fp");
    assert!(!insert(h, tasks("job", 1), &longest).await.replayed);
    assert!(insert(h, tasks("job", 1), &longest).await.replayed);
}

/// An idempotent insert wakes waiters like any insert.
pub async fn idempotent_insert_notifies_available(h: &Harness) {
    let mut rx = h.store.notifier().subscribe();
    let batch = vec![NewTask::new("job", json!(1)).options(TaskOptions::new().queue("idemq"))];
    insert(h, batch, &key(h, "k-notify", "fp")).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(Notification::Available { queue }))
                if queue.as_deref().is_none_or(|q| q == "idemq") =>
            {
                break;
            }
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            other => panic!("no Available notification after an idempotent insert: {other:?}"),
        }
    }
}

/// A purge deletes only keys that expired before its cut-off, at most
/// `limit` per call; live keys keep holding.
pub async fn idempotency_purge_respects_expiry_and_limit(h: &Harness) {
    for i in 0..3 {
        let k = IdempotencyKey {
            key: format!("short-{i}"),
            fingerprint: "fp".to_owned(),
            expires_at: h.later(Duration::from_secs(10 + i)),
        };
        insert(h, tasks("job", 1), &k).await;
    }
    for i in 0..2 {
        insert(h, tasks("job", 1), &key(h, &format!("long-{i}"), "fp")).await;
    }
    // The cut-off is exclusive: a key expiring exactly at it stays.
    assert_eq!(purge(h, h.later(Duration::from_secs(10)), 100).await, 0);
    assert_eq!(purge(h, h.later(Duration::from_secs(60)), 0).await, 0);
    assert_eq!(purge(h, h.later(Duration::from_secs(60)), 2).await, 2);
    assert_eq!(purge(h, h.later(Duration::from_secs(60)), 100).await, 1);
    assert_eq!(purge(h, h.later(Duration::from_secs(60)), 100).await, 0);
    // The live keys still hold.
    for i in 0..2 {
        expect_conflict(
            try_insert(
                h,
                h.store.as_ref(),
                tasks("job", 1),
                &key(h, &format!("long-{i}"), "fp-other"),
            )
            .await,
            "a live key after a purge",
        );
    }
    assert_eq!(h.count_all().await, 5, "purging keys leaves tasks alone");
    // And a purge past them takes them too.
    assert_eq!(purge(h, h.later(TTL * 2), 100).await, 2);
    let fresh = insert(h, tasks("job", 1), &key(h, "long-0", "fp-other")).await;
    assert!(!fresh.replayed, "a purged key is free");
}
