//! Cases for dependencies between tasks: `options.depends_on` (edges that
//! need the dependency to succeed) and `NewTask.after` (edges that need it
//! to end, whatever the outcome). A dependency must exist (or come earlier
//! in the batch) and must still be able to succeed; a task with an unmet
//! edge is `blocked`, is never claimed, and becomes `pending` (or
//! `scheduled`) in the commit that meets its last edge. A dependency that
//! ends `failed` or `aborted` — by a finish, a rescue, an abort or a
//! cascade — or is deleted while waiting aborts its `blocked` dependents
//! with a `dependency_failed` error, transitively, writing `task.aborted`
//! events; non-terminal finishes change nothing downstream. Also: manual
//! retry and update of tasks with edges, the new task fields and the
//! `ids` and `group` filters, and `task_resolve_blocked` on a healthy
//! store.

use std::collections::HashSet;
use std::time::Duration;

use chrono::SubsecRound;

use offload_store::{
    EventKind, FinishOutcome, StoreError, TaskAbortParams, TaskCountParams, TaskDeleteParams,
    TaskFilter, TaskFinish, TaskFinishParams, TaskInsertParams, TaskListParams, TaskResolveParams,
    TaskRetryParams, TaskUpdateParams, dependency_record,
};
use offload_types::{NewTask, Status, Task, TaskId, TaskOptions};
use serde_json::json;

use crate::events::log;
use crate::harness::ok;
use crate::{Harness, LEASE, lease_of};

/// The queue of every task in these cases (claims pick tasks by name).
const QUEUE: &str = "deps";

/// A task named `name` in [`QUEUE`].
fn task(name: &str) -> NewTask {
    NewTask::new(name, json!({ "name": name })).options(TaskOptions::new().queue(QUEUE))
}

/// A task named `name` that depends on (must see succeed) `deps`.
fn on(name: &str, deps: &[TaskId]) -> NewTask {
    let mut options = TaskOptions::new().queue(QUEUE);
    for dep in deps {
        options = options.depends_on(*dep);
    }
    NewTask::new(name, json!({ "name": name })).options(options)
}

/// A task named `name` that runs after `deps` ended, whatever their outcome.
fn after(name: &str, deps: &[TaskId]) -> NewTask {
    let mut t = task(name);
    t.after = deps.to_vec();
    t
}

/// Inserts `tasks` in one batch; it must succeed. Returns their ids.
async fn insert(h: &Harness, tasks: Vec<NewTask>) -> Vec<TaskId> {
    let given: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
    let ids = h.insert(tasks).await;
    assert_eq!(ids, given, "tasks without unique keys keep their own ids");
    ids
}

/// Inserts `tasks` in one batch, which the store must refuse as
/// `Invalid` naming `field`.
async fn insert_refused(h: &Harness, tasks: Vec<NewTask>, field: &str, what: &str) {
    let params = TaskInsertParams {
        tasks,
        now: h.now(),
    };
    match h.store.task_insert_many(&params).await {
        Err(StoreError::Invalid(e)) => {
            assert_eq!(e.field, field, "{what}: the error names {field}: {e}")
        }
        other => panic!("{what}: the batch must be refused as Invalid, got {other:?}"),
    }
}

async fn status(h: &Harness, id: TaskId) -> Status {
    h.get(id).await.status
}

/// Claims the task named `name`, which must be `id`.
async fn claim(h: &Harness, name: &str, id: TaskId) -> Task {
    let mut params = h.claim_params(QUEUE, 1);
    params.names = Some(vec![name.to_owned()]);
    let mut claimed = ok("task_claim", h.store.task_claim(&params).await);
    assert_eq!(
        claimed.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![id],
        "claim of {name} should hand out {id}"
    );
    claimed.remove(0)
}

/// Every task of [`QUEUE`] a claim hands out now (up to 100).
async fn claim_ready(h: &Harness) -> Vec<Task> {
    h.claim(QUEUE, 100).await
}

fn ids_of(tasks: &[Task]) -> HashSet<TaskId> {
    tasks.iter().map(|t| t.id).collect()
}

/// Finishes a claimed task with `outcome`; the finish must be accepted and
/// leave it in `expect`.
async fn finish(h: &Harness, task: &Task, outcome: FinishOutcome, expect: Status) {
    let answer = h.finish(lease_of(task), outcome).await;
    assert!(answer.accepted, "finish of {} refused", task.name);
    assert_eq!(
        answer.status,
        Some(expect),
        "{} after its finish",
        task.name
    );
}

async fn succeed(h: &Harness, task: &Task) {
    finish(
        h,
        task,
        FinishOutcome::Success { output: json!(1) },
        Status::Success,
    )
    .await;
}

async fn fail(h: &Harness, task: &Task) {
    let error = h.error("error", "it broke", task.attempt);
    finish(h, task, FinishOutcome::Fail { error }, Status::Failed).await;
}

/// Claims `name` (`id`) and lets it succeed.
async fn run_ok(h: &Harness, name: &str, id: TaskId) {
    let t = claim(h, name, id).await;
    succeed(h, &t).await;
}

/// Claims `name` (`id`) and lets it fail for good.
async fn run_fail(h: &Harness, name: &str, id: TaskId) {
    let t = claim(h, name, id).await;
    fail(h, &t).await;
}

async fn abort(h: &Harness, id: TaskId) -> Task {
    let params = TaskAbortParams {
        id,
        reason: Some("stop".to_owned()),
        now: h.now(),
    };
    ok("task_abort", h.store.task_abort(&params).await)
}

async fn retry(h: &Harness, id: TaskId) -> Result<Task, StoreError> {
    h.store
        .task_retry(&TaskRetryParams { id, now: h.now() })
        .await
}

async fn resolve(h: &Harness) -> u64 {
    ok(
        "task_resolve_blocked",
        h.store
            .task_resolve_blocked(&TaskResolveParams {
                limit: 1000,
                now: h.now(),
            })
            .await,
    )
}

async fn list(h: &Harness, filter: TaskFilter) -> Vec<Task> {
    let params = TaskListParams {
        filter,
        cursor: None,
        limit: 1000,
    };
    ok("task_list", h.store.task_list(&params).await).tasks
}

/// How many tasks `filter` counts, all statuses.
async fn count(h: &Harness, filter: TaskFilter) -> u64 {
    let counts = ok(
        "task_count",
        h.store.task_count(&TaskCountParams { filter }).await,
    );
    counts.iter().map(|c| c.count).sum()
}

/// The stored tasks `ids`, in order.
async fn snapshot(h: &Harness, ids: &[TaskId]) -> Vec<Task> {
    let mut all = Vec::new();
    for id in ids {
        all.push(h.get(*id).await);
    }
    all
}

/// Checks that `id` was aborted at `now` because `dep` ended `dep_status`
/// (`None`: was deleted).
#[track_caller]
fn assert_cascaded(task: &Task, dep: TaskId, dep_status: Option<Status>, h: &Harness) {
    assert_eq!(
        task.status,
        Status::Aborted,
        "{} ({}) should be aborted because its dependency {dep} ended {dep_status:?}",
        task.name,
        task.id
    );
    let expected = dependency_record(dep, dep_status, task.attempt, h.now());
    assert_eq!(
        task.error.as_ref(),
        Some(&expected),
        "{} carries the dependency_failed error naming {dep}",
        task.name
    );
    assert_eq!(
        task.finished_at,
        Some(h.now()),
        "{} finished now",
        task.name
    );
    assert_eq!(task.updated_at, h.now(), "{} updated now", task.name);
    assert_eq!(task.lease_token, None);
}

/// A batch naming a dependency that does not exist (in the store or
/// earlier in the batch) is refused as a whole as `Invalid`, for both
/// kinds of edge, and nothing of it is stored; a dependency later in the
/// same batch does not count either.
pub async fn deps_missing_dependency_refuses_batch(h: &Harness) {
    let stored = h.insert_one(task("stored")).await;
    let valid = task("valid");
    let valid_id = valid.id;
    insert_refused(
        h,
        vec![valid.clone(), on("orphan", &[stored, TaskId::new()])],
        "depends_on",
        "depends_on an unknown id",
    )
    .await;
    insert_refused(
        h,
        vec![valid.clone(), after("orphan", &[TaskId::new()])],
        "after",
        "after an unknown id",
    )
    .await;
    let later = task("later");
    insert_refused(
        h,
        vec![valid, on("early", &[later.id]), later],
        "depends_on",
        "depends_on a task later in the batch",
    )
    .await;
    assert_eq!(h.try_get(valid_id).await, None, "all or nothing");
    assert_eq!(h.count_all().await, 1, "only the earlier task exists");
    assert_eq!(status(h, stored).await, Status::Pending);
}

/// `depends_on` a task that is already `failed` or `aborted` is refused
/// (`Invalid`, nothing stored): it can never succeed. `after` such a task
/// is fine and the task is not blocked.
pub async fn deps_on_failed_or_aborted_dependency_is_refused(h: &Harness) {
    let failed = h.insert_one(task("failed")).await;
    run_fail(h, "failed", failed).await;
    let aborted = h.insert_one(task("aborted")).await;
    abort(h, aborted).await;
    assert_eq!(status(h, aborted).await, Status::Aborted);

    for dep in [failed, aborted] {
        let bystander = task("bystander");
        let bystander_id = bystander.id;
        insert_refused(
            h,
            vec![bystander, on("doomed", &[dep])],
            "depends_on",
            "depends_on an ended task",
        )
        .await;
        assert_eq!(h.try_get(bystander_id).await, None, "all or nothing");
    }
    assert_eq!(h.count_all().await, 2);

    let ids = insert(h, vec![after("cleanup", &[failed, aborted])]).await;
    assert_eq!(
        status(h, ids[0]).await,
        Status::Pending,
        "`after` edges to ended tasks are met at once"
    );
}

/// A dependency that already succeeded is met: the task is not blocked
/// (`pending`, or `scheduled` with a future `run_at`).
pub async fn deps_on_succeeded_dependency_is_not_blocked(h: &Harness) {
    let done = h.insert_one(task("done")).await;
    run_ok(h, "done", done).await;
    let mut later = on("later", &[done]);
    later.options.run_at = Some(h.later(Duration::from_secs(3600)));
    let ids = insert(h, vec![on("now", &[done]), later]).await;
    assert_eq!(status(h, ids[0]).await, Status::Pending);
    assert_eq!(status(h, ids[1]).await, Status::Scheduled);
    let claimed = claim(h, "now", ids[0]).await;
    assert_eq!(claimed.depends_on, vec![done]);
}

/// A task with an unmet dependency is inserted `blocked` (its
/// `task.created` event says so) and a claim never hands it out; the
/// finish that makes its dependency succeed unblocks it in the same call,
/// and the next claim hands it out.
pub async fn deps_blocked_until_dependency_succeeds(h: &Harness) {
    let ids = insert(h, vec![task("first"), task("bystander")]).await;
    let first = ids[0];
    // A separate batch: the dependency is a stored task.
    let second = insert(h, vec![on("second", &[first])]).await[0];
    let blocked = h.get(second).await;
    assert_eq!(blocked.status, Status::Blocked);
    assert_eq!(blocked.run_at, h.now());

    let events = log(h).await.events;
    let created: Vec<_> = events
        .iter()
        .filter(|e| e.task_id == second && e.kind == EventKind::Created)
        .collect();
    assert_eq!(created.len(), 1, "one task.created for {second}");
    assert_eq!(created[0].data, json!({"status": "blocked"}));

    // Everything ready is handed out; the blocked task is not.
    let ready = claim_ready(h).await;
    assert_eq!(ids_of(&ready), HashSet::from([first, ids[1]]));
    h.advance(Duration::from_secs(5));
    assert!(
        claim_ready(h).await.is_empty(),
        "a blocked task is never claimed"
    );
    assert_eq!(status(h, second).await, Status::Blocked);

    let first_task = ready.iter().find(|t| t.id == first).cloned();
    let Some(first_task) = first_task else {
        panic!("first was claimed")
    };
    h.advance(Duration::from_secs(1));
    succeed(h, &first_task).await;
    let unblocked = h.get(second).await;
    assert_eq!(
        unblocked.status,
        Status::Pending,
        "unblocked when the finish returns"
    );
    assert_eq!(unblocked.attempt, 0);
    assert_eq!(unblocked.finished_at, None);
    assert_eq!(unblocked.error, None);
    let claimed = claim_ready(h).await;
    assert_eq!(ids_of(&claimed), HashSet::from([second]));
}

/// A blocked task whose `run_at` is still in the future when its
/// dependency succeeds becomes `scheduled`, and is claimed only once its
/// `run_at` is reached.
pub async fn deps_unblocked_with_future_run_at_is_scheduled(h: &Harness) {
    let dep = h.insert_one(task("dep")).await;
    let run_at = h.later(Duration::from_secs(60));
    let mut waiting = on("waiting", &[dep]);
    waiting.options.run_at = Some(run_at);
    let id = h.insert_one(waiting).await;
    assert_eq!(status(h, id).await, Status::Blocked);
    run_ok(h, "dep", dep).await;
    let t = h.get(id).await;
    assert_eq!(t.status, Status::Scheduled);
    assert_eq!(t.run_at, run_at);
    assert!(claim_ready(h).await.is_empty(), "not due yet");
    h.advance(Duration::from_secs(60));
    assert_eq!(ids_of(&claim_ready(h).await), HashSet::from([id]));
}

/// A diamond A → {B, C} → D enqueued in one batch runs in dependency
/// order: A alone, then B and C, then D.
pub async fn deps_diamond_in_one_batch_runs_in_order(h: &Harness) {
    let a = task("a");
    let b = on("b", &[a.id]);
    let c = on("c", &[a.id]);
    let d = on("d", &[b.id, c.id]);
    let ids = insert(h, vec![a, b, c, d]).await;
    let (a, b, c, d) = (ids[0], ids[1], ids[2], ids[3]);
    for id in [b, c, d] {
        assert_eq!(status(h, id).await, Status::Blocked);
    }
    let mut rounds = Vec::new();
    for _ in 0..4 {
        let claimed = claim_ready(h).await;
        if claimed.is_empty() {
            break;
        }
        h.advance(Duration::from_secs(1));
        let finish: Vec<_> = claimed
            .iter()
            .map(|t| (lease_of(t), FinishOutcome::Success { output: json!(1) }))
            .collect();
        let answers = h.finish_many(finish).await;
        assert!(answers.iter().all(|a| a.accepted));
        rounds.push(ids_of(&claimed));
    }
    assert_eq!(
        rounds,
        vec![
            HashSet::from([a]),
            HashSet::from([b, c]),
            HashSet::from([d])
        ],
        "claims follow the dependencies"
    );
    for id in [a, b, c, d] {
        assert_eq!(status(h, id).await, Status::Success);
    }
}

/// B failing for good aborts D (which depends on B and C) and everything
/// downstream of D, transitively, in the finish's commit: each with a
/// `dependency_failed` error naming the dependency that ended, and a
/// `task.aborted` event. C, a task `after` D (its edge is met), and
/// unrelated tasks are not aborted.
pub async fn deps_failure_cascades_transitively(h: &Harness) {
    let a = task("a");
    let b = on("b", &[a.id]);
    let c = on("c", &[a.id]);
    let d = on("d", &[b.id, c.id]);
    let e = on("e", &[d.id]);
    let f = on("f", &[e.id]);
    let tidy = after("tidy", &[d.id]);
    let other = task("other");
    let ids = insert(h, vec![a, b, c, d, e, f, tidy, other]).await;
    let (a, b, c, d, e, f, tidy, other) = (
        ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[6], ids[7],
    );
    run_ok(h, "a", a).await;
    assert_eq!(status(h, b).await, Status::Pending);
    assert_eq!(status(h, c).await, Status::Pending);
    let c_before = h.get(c).await;
    let other_before = h.get(other).await;

    let b_task = claim(h, "b", b).await;
    h.advance(Duration::from_secs(3));
    fail(h, &b_task).await;

    assert_cascaded(&h.get(d).await, b, Some(Status::Failed), h);
    assert_cascaded(&h.get(e).await, d, Some(Status::Aborted), h);
    assert_cascaded(&h.get(f).await, e, Some(Status::Aborted), h);
    assert_eq!(h.get(c).await, c_before, "the sibling is untouched");
    assert_eq!(h.get(other).await, other_before, "unrelated task untouched");
    assert_eq!(
        status(h, tidy).await,
        Status::Pending,
        "an `after` edge to an aborted task is met"
    );

    // No task was aborted before the failure.
    let aborted: Vec<_> = log(h)
        .await
        .events
        .into_iter()
        .filter(|ev| ev.kind == EventKind::Aborted)
        .collect();
    let got: HashSet<TaskId> = aborted.iter().map(|e| e.task_id).collect();
    assert_eq!(
        got,
        HashSet::from([d, e, f]),
        "one task.aborted per cascaded task: {aborted:#?}"
    );
    assert_eq!(aborted.len(), 3, "one task.aborted per cascaded task");
    for ev in &aborted {
        let t = h.get(ev.task_id).await;
        assert_eq!(ev.at, h.now());
        assert_eq!(ev.attempt, 0);
        assert_eq!(ev.name, t.name);
        assert_eq!(ev.queue, QUEUE);
        assert_eq!(ev.data, json!({"error": json!(t.error)}));
    }
}

/// Finishes that are not terminal (Retry, Snooze, Release) and a rescue
/// with attempts left leave dependents blocked; the final success
/// unblocks them.
pub async fn deps_retry_finish_does_not_cascade(h: &Harness) {
    let mut dep = task("dep");
    dep.options.max_attempts = Some(5);
    let dep_id = dep.id;
    let ids = insert(h, vec![dep, on("child", &[dep_id])]).await;
    let child = ids[1];

    let t = claim(h, "dep", dep_id).await;
    let error = h.error("error", "try again", t.attempt);
    finish(
        h,
        &t,
        FinishOutcome::Retry {
            error,
            run_at: h.now(),
        },
        Status::Pending,
    )
    .await;
    assert_eq!(status(h, child).await, Status::Blocked);

    let t = claim(h, "dep", dep_id).await;
    finish(
        h,
        &t,
        FinishOutcome::Snooze { run_at: h.now() },
        Status::Scheduled,
    )
    .await;
    assert_eq!(status(h, child).await, Status::Blocked);

    let t = claim(h, "dep", dep_id).await;
    finish(h, &t, FinishOutcome::Release, Status::Pending).await;
    assert_eq!(status(h, child).await, Status::Blocked);

    claim(h, "dep", dep_id).await;
    h.advance(LEASE + Duration::from_secs(1));
    let rescued = h.rescue().await;
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].status, Status::Pending);
    assert_eq!(status(h, child).await, Status::Blocked);

    run_ok(h, "dep", dep_id).await;
    assert_eq!(status(h, child).await, Status::Pending);
}

/// Aborting a waiting dependency aborts its dependents at once, and
/// theirs (transitively), with errors naming the aborted dependency.
pub async fn deps_abort_waiting_dependency_cascades(h: &Harness) {
    let a = task("a");
    let b = on("b", &[a.id]);
    let c = on("c", &[b.id]);
    let ids = insert(h, vec![a, b, c]).await;
    h.advance(Duration::from_secs(2));
    let aborted = abort(h, ids[0]).await;
    assert_eq!(aborted.status, Status::Aborted);
    assert_cascaded(&h.get(ids[1]).await, ids[0], Some(Status::Aborted), h);
    assert_cascaded(&h.get(ids[2]).await, ids[1], Some(Status::Aborted), h);
}

/// Aborting a running dependency only requests the stop: dependents stay
/// blocked. The worker's Abort finish then aborts them.
pub async fn deps_abort_running_dependency_cascades_on_abort_finish(h: &Harness) {
    let dep = h.insert_one(task("dep")).await;
    let running = claim(h, "dep", dep).await;
    let child = h.insert_one(on("child", &[dep])).await;
    assert_eq!(status(h, child).await, Status::Blocked);

    let asked = abort(h, dep).await;
    assert_eq!(asked.status, Status::Running);
    assert!(asked.abort_requested_at.is_some());
    assert_eq!(
        status(h, child).await,
        Status::Blocked,
        "a requested abort is not an end"
    );

    h.advance(Duration::from_secs(2));
    let error = h.error("aborted", "stopped", running.attempt);
    finish(h, &running, FinishOutcome::Abort { error }, Status::Aborted).await;
    assert_cascaded(&h.get(child).await, dep, Some(Status::Aborted), h);
}

/// A rescue that fails a task out of attempts aborts its dependents; one
/// that puts a task back to `pending` does not.
pub async fn deps_rescue_to_failed_cascades(h: &Harness) {
    let mut last = task("last");
    last.options.max_attempts = Some(1);
    let mut again = task("again");
    again.options.max_attempts = Some(2);
    let (last_id, again_id) = (last.id, again.id);
    let ids = insert(
        h,
        vec![
            last,
            again,
            on("after_last", &[last_id]),
            on("after_again", &[again_id]),
        ],
    )
    .await;
    claim(h, "last", last_id).await;
    claim(h, "again", again_id).await;
    h.advance(LEASE + Duration::from_secs(1));
    let mut rescued = h.rescue().await;
    rescued.sort_by_key(|r| r.id != last_id);
    assert_eq!(
        rescued.iter().map(|r| (r.id, r.status)).collect::<Vec<_>>(),
        vec![(last_id, Status::Failed), (again_id, Status::Pending)]
    );
    assert_cascaded(&h.get(ids[2]).await, last_id, Some(Status::Failed), h);
    assert_eq!(status(h, ids[3]).await, Status::Blocked);
}

/// Deleting a waiting dependency aborts its `depends_on` dependents
/// ("was deleted", cascading) and meets its `after` edges.
pub async fn deps_delete_waiting_dependency_aborts_dependents(h: &Harness) {
    let a = task("a");
    let b = on("b", &[a.id]);
    let c = on("c", &[b.id]);
    let d = after("d", &[a.id]);
    let ids = insert(h, vec![a, b, c, d]).await;
    h.advance(Duration::from_secs(1));
    ok(
        "task_delete",
        h.store
            .task_delete(&TaskDeleteParams {
                id: ids[0],
                now: h.now(),
            })
            .await,
    );
    assert_eq!(h.try_get(ids[0]).await, None);
    // `task_delete` takes no `now`: the store stamps the aborts with its
    // own time, so only their consistency is checked.
    for (id, dep, dep_status) in [
        (ids[1], ids[0], None),
        (ids[2], ids[1], Some(Status::Aborted)),
    ] {
        let t = h.get(id).await;
        assert_eq!(t.status, Status::Aborted, "{} is cascaded", t.name);
        let Some(error) = t.error.clone() else {
            panic!("{} carries an error", t.name)
        };
        assert_eq!(
            error,
            dependency_record(dep, dep_status, 0, error.at),
            "{} names its dependency",
            t.name
        );
        assert_eq!(
            t.finished_at.map(|at| at.trunc_subsecs(6)),
            Some(error.at.trunc_subsecs(6)),
            "{} finished when it was aborted",
            t.name
        );
        assert!(error.at >= t.created_at);
    }
    let b = h.get(ids[1]).await;
    assert!(
        b.error
            .as_ref()
            .is_some_and(|e| e.message.contains("was deleted")),
        "the error says the dependency was deleted: {:?}",
        b.error
    );
    assert_eq!(status(h, ids[3]).await, Status::Pending);
}

/// A group's callback (`after` every member) waits until every member
/// ended, whatever the outcome — a member that failed, one aborted by the
/// cascade of that failure, one that succeeded — and then becomes
/// `pending`, with no error.
pub async fn deps_after_waits_for_every_member_to_end(h: &Harness) {
    let callback = task("callback");
    let group = callback.id;
    let mut m1 = task("m1");
    let mut m2 = task("m2");
    let mut m3 = on("m3", &[m1.id]);
    for m in [&mut m1, &mut m2, &mut m3] {
        m.group_id = Some(group);
    }
    let mut callback = after("callback", &[m1.id, m2.id, m3.id]);
    callback.id = group;
    callback.group_id = Some(group);
    let ids = insert(h, vec![m1, m2, m3, callback]).await;
    let (m1, m2, m3, callback) = (ids[0], ids[1], ids[2], ids[3]);
    assert_eq!(status(h, callback).await, Status::Blocked);

    run_fail(h, "m1", m1).await;
    assert_eq!(status(h, m3).await, Status::Aborted, "m3 is cascaded");
    assert_eq!(
        status(h, callback).await,
        Status::Blocked,
        "m2 still has to end"
    );
    let ready = claim_ready(h).await;
    assert_eq!(ids_of(&ready), HashSet::from([m2]), "only m2 is ready");

    h.advance(Duration::from_secs(1));
    succeed(h, &ready[0]).await;
    let cb = h.get(callback).await;
    assert_eq!(cb.status, Status::Pending);
    assert_eq!(cb.error, None);
    assert_eq!(cb.after, vec![m1, m2, m3]);
    claim(h, "callback", callback).await;
}

/// A task aborted by a cascade cannot be retried while its dependency is
/// failed (`Conflict`, nothing changes). Once the dependency is retried,
/// retrying it makes it `blocked`, and the dependency's success makes it
/// `pending`.
pub async fn deps_retry_of_cascaded_task_waits_for_dependency(h: &Harness) {
    let dep = h.insert_one(task("dep")).await;
    let child = h.insert_one(on("child", &[dep])).await;
    run_fail(h, "dep", dep).await;
    let aborted = h.get(child).await;
    assert_eq!(aborted.status, Status::Aborted);

    h.advance(Duration::from_secs(1));
    match retry(h, child).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("retry while the dependency is failed must be Conflict, got {other:?}"),
    }
    assert_eq!(
        h.get(child).await,
        aborted,
        "a refused retry changes nothing"
    );

    let dep_again = ok("task_retry", retry(h, dep).await);
    assert_eq!(dep_again.status, Status::Pending);
    let child_again = ok("task_retry", retry(h, child).await);
    assert_eq!(child_again.status, Status::Blocked);
    assert_eq!(status(h, child).await, Status::Blocked);
    let ready = claim_ready(h).await;
    assert_eq!(
        ids_of(&ready),
        HashSet::from([dep]),
        "only the dependency is ready"
    );
    succeed(h, &ready[0]).await;
    assert_eq!(status(h, child).await, Status::Pending);
    claim(h, "child", child).await;
}

/// Updating a blocked task's `run_at` (to the future or the past) stores
/// it but keeps the task blocked; it applies once the task is unblocked.
pub async fn deps_update_run_at_of_blocked_task_keeps_it_blocked(h: &Harness) {
    let dep = h.insert_one(task("dep")).await;
    let child = h.insert_one(on("child", &[dep])).await;
    for run_at in [
        h.earlier(Duration::from_secs(10)),
        h.later(Duration::from_secs(60)),
    ] {
        let updated = ok(
            "task_update",
            h.store
                .task_update(&TaskUpdateParams {
                    id: child,
                    run_at: Some(run_at),
                    now: h.now(),
                    ..TaskUpdateParams::default()
                })
                .await,
        );
        assert_eq!(updated.status, Status::Blocked);
        assert_eq!(updated.run_at, run_at);
        let stored = h.get(child).await;
        assert_eq!(stored.status, Status::Blocked);
        assert_eq!(stored.run_at, run_at);
    }
    let ready = claim_ready(h).await;
    assert_eq!(
        ids_of(&ready),
        HashSet::from([dep]),
        "the child stays blocked"
    );
    succeed(h, &ready[0]).await;
    assert_eq!(status(h, child).await, Status::Scheduled);
}

/// `depends_on`, `after` and `group_id` read back through get, list and
/// claim; `TaskFilter.group` selects a group's members and callback and
/// `TaskFilter.ids` exactly the given tasks, in list and count.
pub async fn deps_fields_read_back_and_filter_by_group_and_ids(h: &Harness) {
    let callback = task("callback");
    let group = callback.id;
    let mut m1 = task("m1");
    let mut m2 = on("m2", &[m1.id]);
    m1.group_id = Some(group);
    m2.group_id = Some(group);
    let mut callback = after("callback", &[m1.id, m2.id]);
    callback.id = group;
    callback.group_id = Some(group);
    let plain = task("plain");
    let ids = insert(h, vec![m1, m2, callback, plain]).await;
    let (m1, m2, cb, plain) = (ids[0], ids[1], ids[2], ids[3]);

    let t = h.get(m2).await;
    assert_eq!(t.depends_on, vec![m1]);
    assert!(t.after.is_empty());
    assert_eq!(t.group_id, Some(group));
    let t = h.get(cb).await;
    assert!(t.depends_on.is_empty());
    assert_eq!(t.after, vec![m1, m2]);
    assert_eq!(t.group_id, Some(group));
    let t = h.get(plain).await;
    assert!(t.depends_on.is_empty() && t.after.is_empty());
    assert_eq!(t.group_id, None);

    let in_group = list(
        h,
        TaskFilter {
            group: Some(group),
            ..TaskFilter::default()
        },
    )
    .await;
    assert_eq!(ids_of(&in_group), HashSet::from([m1, m2, cb]));
    for t in &in_group {
        assert_eq!(*t, h.get(t.id).await, "list returns the stored fields");
    }
    let picked = list(
        h,
        TaskFilter {
            ids: vec![m1, plain],
            ..TaskFilter::default()
        },
    )
    .await;
    assert_eq!(ids_of(&picked), HashSet::from([m1, plain]));
    let both = list(
        h,
        TaskFilter {
            ids: vec![m1, plain],
            group: Some(group),
            ..TaskFilter::default()
        },
    )
    .await;
    assert_eq!(ids_of(&both), HashSet::from([m1]));
    let none = list(
        h,
        TaskFilter {
            group: Some(TaskId::new()),
            ..TaskFilter::default()
        },
    )
    .await;
    assert!(none.is_empty());

    assert_eq!(
        count(
            h,
            TaskFilter {
                group: Some(group),
                ..TaskFilter::default()
            }
        )
        .await,
        3
    );
    assert_eq!(
        count(
            h,
            TaskFilter {
                ids: vec![m2, cb],
                ..TaskFilter::default()
            }
        )
        .await,
        2
    );
    assert_eq!(
        count(
            h,
            TaskFilter {
                group: Some(group),
                statuses: vec![Status::Blocked],
                ..TaskFilter::default()
            }
        )
        .await,
        2
    );

    let claimed = claim(h, "m1", m1).await;
    assert_eq!(claimed.group_id, Some(group));
    succeed(h, &claimed).await;
    let claimed = claim(h, "m2", m2).await;
    assert_eq!(claimed.depends_on, vec![m1]);
    assert_eq!(claimed.group_id, Some(group));
}

/// `task_resolve_blocked` on a store where every blocked task waits for
/// good reason changes nothing and returns 0, before and after
/// dependencies are met.
pub async fn deps_resolve_blocked_is_a_no_op_on_a_healthy_store(h: &Harness) {
    let a = task("a");
    let b = on("b", &[a.id]);
    let c = on("c", &[b.id]);
    let d = after("d", &[a.id, c.id]);
    let mut later = task("later");
    later.options.run_at = Some(h.later(Duration::from_secs(600)));
    let ids = insert(h, vec![a, b, c, d, later]).await;
    let before = snapshot(h, &ids).await;
    h.advance(Duration::from_secs(1));
    assert_eq!(resolve(h).await, 0);
    assert_eq!(snapshot(h, &ids).await, before, "nothing changed");

    run_ok(h, "a", ids[0]).await;
    assert_eq!(status(h, ids[1]).await, Status::Pending);
    let before = snapshot(h, &ids).await;
    h.advance(Duration::from_secs(1));
    assert_eq!(resolve(h).await, 0);
    assert_eq!(snapshot(h, &ids).await, before, "nothing changed");
}

/// Fifty tasks depending on one all become `pending` in the commit of
/// that one's successful finish.
pub async fn deps_many_dependents_unblock_in_one_finish(h: &Harness) {
    let dep = h.insert_one(task("dep")).await;
    let fan: Vec<NewTask> = (0..50)
        .map(|i| {
            NewTask::new("fan", json!({ "i": i }))
                .options(TaskOptions::new().queue("fan").depends_on(dep))
        })
        .collect();
    let ids = h.insert(fan).await;
    let by_queue = TaskFilter {
        queues: vec!["fan".to_owned()],
        ..TaskFilter::default()
    };
    let tasks = list(h, by_queue.clone()).await;
    assert_eq!(tasks.len(), 50);
    assert!(tasks.iter().all(|t| t.status == Status::Blocked));
    assert!(h.claim("fan", 100).await.is_empty());

    run_ok(h, "dep", dep).await;
    let tasks = list(h, by_queue).await;
    assert_eq!(ids_of(&tasks), ids.iter().copied().collect());
    assert!(
        tasks.iter().all(|t| t.status == Status::Pending),
        "every dependent is pending: {:?}",
        tasks.iter().map(|t| t.status).collect::<Vec<_>>()
    );
    assert_eq!(h.claim("fan", 100).await.len(), 50);
}

/// A dependent inserted (through the other handle) while its dependency's
/// finish commits never stays `blocked`: racing a success it ends up
/// `pending`; racing a failure it is either refused (`Invalid`, nothing
/// stored) or aborted by the cascade.
pub async fn deps_insert_racing_a_finish_never_stays_blocked(h: &Harness) {
    for round in 0..16 {
        let succeeds = round % 2 == 0;
        let dep = h.insert_one(task("dep")).await;
        let running = claim(h, "dep", dep).await;
        let child = on("child", &[dep]);
        let child_id = child.id;
        let now = h.now();
        let outcome = if succeeds {
            FinishOutcome::Success { output: json!(1) }
        } else {
            FinishOutcome::Fail {
                error: h.error("error", "it broke", running.attempt),
            }
        };
        let finish_params = TaskFinishParams {
            items: vec![TaskFinish {
                lease: lease_of(&running),
                outcome,
            }],
            now,
        };
        let insert_params = TaskInsertParams {
            tasks: vec![child],
            now,
        };
        let (store, second) = (h.store.clone(), h.second.clone());
        let finishing = tokio::spawn(async move { store.task_finish_many(&finish_params).await });
        let inserting = tokio::spawn(async move { second.task_insert_many(&insert_params).await });
        let (finished, inserted) = (finishing.await, inserting.await);
        let finished = match finished {
            Ok(r) => ok("task_finish_many (racing)", r),
            Err(e) => panic!("round {round}: the finish panicked: {e}"),
        };
        assert!(finished[0].accepted, "round {round}: finish accepted");
        let inserted = match inserted {
            Ok(r) => r,
            Err(e) => panic!("round {round}: the insert panicked: {e}"),
        };
        match (succeeds, inserted) {
            (true, Ok(_)) => assert_eq!(
                status(h, child_id).await,
                Status::Pending,
                "round {round}: the dependent of a success is pending"
            ),
            (false, Ok(_)) => {
                let t = h.get(child_id).await;
                assert_eq!(
                    t.status,
                    Status::Aborted,
                    "round {round}: the dependent of a failure is aborted"
                );
                assert_eq!(
                    t.error,
                    Some(dependency_record(dep, Some(Status::Failed), 0, now)),
                    "round {round}"
                );
            }
            (false, Err(StoreError::Invalid(_))) => {
                assert_eq!(h.try_get(child_id).await, None, "round {round}");
            }
            (_, other) => panic!("round {round} (success: {succeeds}): insert answered {other:?}"),
        }
        h.advance(Duration::from_secs(1));
    }
}
