//! Cases for `task_claim` and `task_next_run_at`: claim order, limits,
//! queue and name filters, delayed tasks, the lease and attempt row a claim
//! opens, and concurrent claimers on two handles never sharing a task.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use offload_store::{
    Clock, FinishOutcome, Store, TaskClaimParams, TaskCountParams, TaskFilter, TaskNextRunAtParams,
};
use offload_types::{AttemptOutcome, DEFAULT_QUEUE, NewTask, Status, TaskId, TaskOptions};
use serde_json::json;

use crate::harness::{ok, span};
use crate::{Harness, LEASE, lease_of};

fn ids_of(tasks: &[offload_types::Task]) -> Vec<TaskId> {
    tasks.iter().map(|t| t.id).collect()
}

/// Inserts the six tasks of the ordering case into `queue` and returns
/// their ids in the order a claim must hand them out.
async fn insert_ordering_set(h: &Harness, queue: &str) -> Vec<TaskId> {
    let opts = |priority: i32, secs_ago: u64| {
        TaskOptions::new()
            .queue(queue)
            .priority(priority)
            .run_at(h.earlier(Duration::from_secs(secs_ago)))
    };
    let a = NewTask::new("a", json!(null)).options(opts(0, 10));
    let b = NewTask::new("b", json!(null)).options(opts(5, 0));
    let c = NewTask::new("c", json!(null)).options(opts(0, 20));
    let d = NewTask::new("d", json!(null)).options(opts(0, 10));
    let e = NewTask::new("e", json!(null)).options(opts(-1, 100));
    let f = NewTask::new("f", json!(null)).options(opts(5, 1));
    assert!(a.id < d.id, "ids are time-ordered: a was made before d");
    let expected = vec![f.id, b.id, c.id, a.id, d.id, e.id];
    // Inserted in a scrambled order so insertion order decides nothing.
    h.insert(vec![d, e, a, f, c, b]).await;
    expected
}

/// Higher priority first, then earlier `run_at`, then lower id — both one
/// at a time and within one batch.
pub async fn claim_orders_by_priority_then_run_at_then_id(h: &Harness) {
    let expected = insert_ordering_set(h, "one-by-one").await;
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        got.extend(ids_of(&h.claim("one-by-one", 1).await));
    }
    assert_eq!(got, expected, "claims one at a time follow the order");
    assert!(h.claim("one-by-one", 1).await.is_empty());

    let expected = insert_ordering_set(h, "batch").await;
    let got = ids_of(&h.claim("batch", 100).await);
    assert_eq!(got, expected, "one batch claim returns tasks in order");

    let expected = insert_ordering_set(h, "partial").await;
    let got = ids_of(&h.claim("partial", 3).await);
    assert_eq!(got, expected[..3], "a limited claim takes the first ones");
}

/// A claim never returns more than `limit` tasks.
pub async fn claim_respects_limit(h: &Harness) {
    let ids = h.insert_n("job", DEFAULT_QUEUE, 5).await;
    assert!(
        h.claim(DEFAULT_QUEUE, 0).await.is_empty(),
        "limit 0 claims nothing"
    );
    let mut seen = HashSet::new();
    for want in [2, 2, 1, 0] {
        let got = h.claim(DEFAULT_QUEUE, 2).await;
        assert_eq!(got.len(), want, "limit 2 with {} left", 5 - seen.len());
        for t in got {
            assert!(seen.insert(t.id), "task {} claimed twice", t.id);
        }
    }
    assert_eq!(seen, ids.into_iter().collect());
}

/// A claim takes only from the queue it names.
pub async fn claim_only_from_named_queue(h: &Harness) {
    let mail = h.insert_n("send", "mail", 3).await;
    let other = h.insert_n("send", "reports", 2).await;
    let got = h.claim("mail", 10).await;
    assert_eq!(
        ids_of(&got).into_iter().collect::<HashSet<_>>(),
        mail.iter().copied().collect()
    );
    for id in other {
        assert_eq!(h.get(id).await.status, Status::Pending);
    }
    assert!(h.claim("nowhere", 10).await.is_empty());
}

/// `names` restricts a claim to those task names.
pub async fn claim_names_filter(h: &Harness) {
    let ids = h
        .insert(vec![
            NewTask::new("x", json!(null)),
            NewTask::new("y", json!(null)),
            NewTask::new("z", json!(null)),
        ])
        .await;
    let mut params = h.claim_params(DEFAULT_QUEUE, 10);
    params.names = Some(vec!["y".to_owned(), "z".to_owned()]);
    let got = ok("task_claim", h.store.task_claim(&params).await);
    assert_eq!(
        ids_of(&got).into_iter().collect::<HashSet<_>>(),
        HashSet::from([ids[1], ids[2]])
    );
    assert_eq!(h.get(ids[0]).await.status, Status::Pending);
    params.names = Some(vec!["nothing-like-this".to_owned()]);
    assert!(ok("task_claim", h.store.task_claim(&params).await).is_empty());
    params.names = None;
    assert_eq!(
        ids_of(&ok("task_claim", h.store.task_claim(&params).await)),
        vec![ids[0]]
    );
}

/// A scheduled task is not claimed before its `run_at` and is claimed once
/// the clock reaches it.
pub async fn claim_waits_for_run_at(h: &Harness) {
    let run_at = h.later(Duration::from_secs(10));
    let ids = h
        .insert(vec![
            NewTask::new("later", json!(1)).options(TaskOptions::new().run_at(run_at)),
            NewTask::new("later", json!(2)).options(TaskOptions::new().run_at(run_at)),
        ])
        .await;
    assert!(h.claim(DEFAULT_QUEUE, 10).await.is_empty());
    h.advance(Duration::from_secs(9));
    assert!(
        h.claim(DEFAULT_QUEUE, 10).await.is_empty(),
        "one second early"
    );
    assert_eq!(h.get(ids[0]).await.status, Status::Scheduled);

    h.advance(Duration::from_secs(1));
    let first = h.claim(DEFAULT_QUEUE, 1).await;
    assert_eq!(ids_of(&first), vec![ids[0]], "due at run_at, in id order");
    assert_eq!(first[0].status, Status::Running);
    assert_eq!(first[0].attempt, 1);
    let second = h.claim(DEFAULT_QUEUE, 1).await;
    assert_eq!(ids_of(&second), vec![ids[1]]);
}

/// A claimed task is `running`, attempt 1, leased to the worker until
/// `now + lease`, and its history has one open attempt.
pub async fn claim_sets_lease_and_opens_attempt(h: &Harness) {
    let id = h.insert_one(NewTask::new("job", json!({"k": 1}))).await;
    h.advance(Duration::from_secs(3));
    let now = h.now();
    let lease = Duration::from_secs(45);
    let params = TaskClaimParams {
        queue: DEFAULT_QUEUE.to_owned(),
        names: None,
        limit: 5,
        worker_id: "worker-7".to_owned(),
        lease,
        now,
    };
    let claimed = ok("task_claim", h.store.task_claim(&params).await);
    assert_eq!(ids_of(&claimed), vec![id]);
    let t = &claimed[0];
    assert_eq!(t.status, Status::Running);
    assert_eq!(t.attempt, 1);
    assert!(t.lease_token.is_some());
    assert_eq!(t.worker_id.as_deref(), Some("worker-7"));
    assert_eq!(t.started_at, Some(now));
    assert_eq!(t.lease_expires_at, Some(now + span(lease)));
    assert_eq!(t.updated_at, now);
    assert_eq!(t.finished_at, None);
    assert_eq!(t.input, json!({"k": 1}));
    assert_eq!(
        &h.get(id).await,
        t,
        "the stored task is what the claim returned"
    );

    let history = h.attempts(id).await;
    assert_eq!(history.len(), 1, "one attempt row: {history:?}");
    let a = &history[0];
    assert_eq!(a.attempt, 1);
    assert_eq!(a.worker_id, "worker-7");
    assert_eq!(a.started_at, now);
    assert_eq!(a.finished_at, None);
    assert_eq!(a.outcome, AttemptOutcome::Running);
    assert_eq!(a.error, None);
}

/// A running task is not claimed again, and every claim gets its own token.
pub async fn claim_never_hands_out_a_task_twice(h: &Harness) {
    h.insert_n("job", DEFAULT_QUEUE, 4).await;
    let first = h.claim(DEFAULT_QUEUE, 2).await;
    let second = h.claim(DEFAULT_QUEUE, 10).await;
    assert_eq!(first.len(), 2);
    assert_eq!(second.len(), 2);
    assert!(h.claim(DEFAULT_QUEUE, 10).await.is_empty());
    let ids: HashSet<_> = first.iter().chain(&second).map(|t| t.id).collect();
    assert_eq!(ids.len(), 4);
    let tokens: HashSet<_> = first
        .iter()
        .chain(&second)
        .map(|t| lease_of(t).lease_token)
        .collect();
    assert_eq!(tokens.len(), 4, "every claim has its own lease token");
    // A finished task is not claimed either.
    h.finish(
        lease_of(&first[0]),
        FinishOutcome::Success { output: json!(1) },
    )
    .await;
    assert!(h.claim(DEFAULT_QUEUE, 10).await.is_empty());
}

/// Eight claimers, half on each handle, drain 2,000 tasks in batches of
/// 10 to 50: no task is handed out twice and together they get them all.
pub async fn claim_concurrent_claimers_share_without_duplicates(h: &Harness) {
    const TOTAL: usize = 2000;
    let mut all = Vec::with_capacity(TOTAL);
    for _ in 0..4 {
        all.extend(h.insert_n("drain", DEFAULT_QUEUE, TOTAL / 4).await);
    }
    let mut claimers = tokio::task::JoinSet::new();
    for i in 0..8u32 {
        let store: Arc<dyn Store> = if i % 2 == 0 {
            h.store.clone()
        } else {
            h.second.clone()
        };
        let clock = h.clock.clone();
        let limit = 10 + (i * 7) % 41;
        claimers.spawn(async move {
            let mut got = Vec::new();
            // Bounded: each round takes at least one task or stops.
            for _ in 0..TOTAL {
                let params = TaskClaimParams {
                    queue: DEFAULT_QUEUE.to_owned(),
                    names: None,
                    limit,
                    worker_id: format!("claimer-{i}"),
                    lease: LEASE,
                    now: clock.now(),
                };
                let batch = ok("concurrent task_claim", store.task_claim(&params).await);
                if batch.is_empty() {
                    break;
                }
                assert!(batch.len() <= limit as usize, "limit {limit} exceeded");
                got.extend(batch.into_iter().map(|t| (t.id, t.lease_token)));
            }
            got
        });
    }
    let mut seen = HashSet::new();
    let mut tokens = HashSet::new();
    while let Some(joined) = claimers.join_next().await {
        let got = match joined {
            Ok(got) => got,
            Err(e) => panic!("a claimer panicked: {e}"),
        };
        for (id, token) in got {
            assert!(seen.insert(id), "task {id} was handed out twice");
            assert!(tokens.insert(token), "lease token reused");
        }
    }
    assert_eq!(seen.len(), TOTAL, "together the claimers got every task");
    assert_eq!(seen, all.into_iter().collect());
    assert!(h.claim(DEFAULT_QUEUE, 10).await.is_empty());
    let running = ok(
        "task_count",
        h.store
            .task_count(&TaskCountParams {
                filter: TaskFilter {
                    statuses: vec![Status::Running],
                    ..TaskFilter::default()
                },
            })
            .await,
    );
    assert_eq!(running.iter().map(|c| c.count).sum::<u64>(), TOTAL as u64);
}

/// Both handles see one set of tasks: what one inserts the other claims,
/// and a lease taken on one is honoured on the other.
pub async fn claim_across_handles(h: &Harness) {
    let id = h.insert_one(NewTask::new("shared", json!(5))).await;
    let params = h.claim_params(DEFAULT_QUEUE, 10);
    let claimed = ok("task_claim on second", h.second.task_claim(&params).await);
    assert_eq!(ids_of(&claimed), vec![id]);
    assert!(
        h.claim(DEFAULT_QUEUE, 10).await.is_empty(),
        "claimed through one handle, not available through the other"
    );
    let lease = lease_of(&claimed[0]);
    let beat = h.heartbeat(&[lease]).await;
    assert!(beat[0].live);
    let done = h
        .finish(lease, FinishOutcome::Success { output: json!(6) })
        .await;
    assert!(done.accepted);
    let seen = ok("task_get on second", h.second.task_get(id).await);
    assert_eq!(seen.map(|t| t.status), Some(Status::Success));
}

/// `task_next_run_at` is the earliest `run_at` among scheduled tasks of the
/// queue (and names), or `None`.
pub async fn next_run_at_is_earliest_scheduled(h: &Harness) {
    let next = |names: Option<Vec<String>>| TaskNextRunAtParams {
        queue: "timed".to_owned(),
        names,
    };
    assert_eq!(
        ok(
            "task_next_run_at",
            h.store.task_next_run_at(&next(None)).await
        ),
        None
    );
    let in_10 = h.later(Duration::from_secs(10));
    let in_30 = h.later(Duration::from_secs(30));
    let opts = |queue: &str, at| TaskOptions::new().queue(queue).run_at(at);
    h.insert(vec![
        NewTask::new("slow", json!(null)).options(opts("timed", in_30)),
        NewTask::new("fast", json!(null)).options(opts("timed", in_10)),
        NewTask::new("fast", json!(null))
            .options(opts("elsewhere", h.later(Duration::from_secs(5)))),
        NewTask::new("now", json!(null)).options(TaskOptions::new().queue("timed")),
    ])
    .await;
    assert_eq!(
        ok(
            "task_next_run_at",
            h.store.task_next_run_at(&next(None)).await
        ),
        Some(in_10)
    );
    assert_eq!(
        ok(
            "task_next_run_at",
            h.store
                .task_next_run_at(&next(Some(vec!["slow".to_owned()])))
                .await
        ),
        Some(in_30)
    );
    h.advance(Duration::from_secs(10));
    let claimed = h.claim("timed", 10).await;
    assert_eq!(claimed.len(), 2, "the ready one and the one now due");
    assert_eq!(
        ok(
            "task_next_run_at",
            h.store.task_next_run_at(&next(None)).await
        ),
        Some(in_30)
    );
}
