//! The lifecycle property test: random sequences of public operations
//! (claim, finish with every outcome using live or stale tokens, heartbeat,
//! progress, abort, retry, update, rescue after the clock moves), through
//! both handles, never produce an illegal transition. After every step each
//! task's status is unchanged or moved by a legal transition
//! ([`Status::can_become`]; a claim may take a due `scheduled` task through
//! `pending` to `running`), terminal tasks have `finished_at`, exactly the
//! running tasks hold a lease token and one open attempt row, a refused
//! operation changes nothing, and an operation on one task changes no other.
//!
//! Proptest drives the cases (with shrinking). Its runner is synchronous,
//! so the case runs inside `block_in_place` and each generated sequence is
//! played with `Handle::block_on`; every sequence uses its own queue and
//! tasks on the one fixture.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use offload_store::{
    FinishOutcome, LeaseRef, ProgressUpdate, StoreError, TaskAbortParams, TaskClaimParams,
    TaskFinish, TaskFinishParams, TaskHeartbeatParams, TaskInsertParams, TaskProgressParams,
    TaskRescueParams, TaskRetryParams, TaskUpdateParams,
};
use offload_types::{
    AttemptOutcome, LeaseToken, NewTask, Progress, Status, Task, TaskId, TaskOptions,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;

use crate::harness::span;
use crate::{Harness, LEASE, WORKER};

/// Generated sequences per run.
const CASES: u32 = 32;

/// How a generated finish ends.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Success,
    Retry { after_secs: u8 },
    Fail,
    Abort,
    Snooze { after_secs: u8 },
    Release,
}

/// One public operation.
#[derive(Debug, Clone)]
enum Op {
    Claim {
        limit: u32,
        second: bool,
    },
    Finish {
        task: usize,
        kind: Kind,
        stale: bool,
        second: bool,
    },
    Heartbeat {
        task: usize,
        stale: bool,
    },
    Progress {
        task: usize,
        stale: bool,
        percent: u8,
    },
    Abort {
        task: usize,
    },
    Retry {
        task: usize,
    },
    Update {
        task: usize,
        priority: i32,
        run_in_secs: Option<i64>,
    },
    Rescue {
        advance_secs: u64,
    },
}

/// A generated case: the tasks to start with and the operations to play.
#[derive(Debug, Clone)]
struct Plan {
    /// `(max_attempts, priority, delay in seconds)` of each initial task.
    tasks: Vec<(u32, i32, Option<u64>)>,
    ops: Vec<Op>,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Success),
        (0u8..20).prop_map(|after_secs| Kind::Retry { after_secs }),
        Just(Kind::Fail),
        Just(Kind::Abort),
        (0u8..20).prop_map(|after_secs| Kind::Snooze { after_secs }),
        Just(Kind::Release),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u32..4, any::<bool>()).prop_map(|(limit, second)| Op::Claim { limit, second }),
        5 => (0usize..16, kind(), proptest::bool::weighted(0.3), any::<bool>())
            .prop_map(|(task, kind, stale, second)| Op::Finish { task, kind, stale, second }),
        2 => (0usize..16, proptest::bool::weighted(0.3))
            .prop_map(|(task, stale)| Op::Heartbeat { task, stale }),
        1 => (0usize..16, proptest::bool::weighted(0.3), 0u8..=100)
            .prop_map(|(task, stale, percent)| Op::Progress { task, stale, percent }),
        1 => (0usize..16).prop_map(|task| Op::Abort { task }),
        2 => (0usize..16).prop_map(|task| Op::Retry { task }),
        2 => (0usize..16, -3i32..3, proptest::option::of(-5i64..20))
            .prop_map(|(task, priority, run_in_secs)| Op::Update { task, priority, run_in_secs }),
        2 => (0u64..45).prop_map(|advance_secs| Op::Rescue { advance_secs }),
    ]
}

fn plan() -> impl Strategy<Value = Plan> {
    let task = (1u32..4, -2i32..3, proptest::option::weighted(0.3, 1u64..15));
    (
        proptest::collection::vec(task, 1..6),
        proptest::collection::vec(op(), 1..60),
    )
        .prop_map(|(tasks, ops)| Plan { tasks, ops })
}

/// No sequence of public operations reaches an illegal transition or
/// breaks an invariant of the stored tasks.
pub async fn lifecycle_has_no_illegal_transition(h: &Harness) {
    let handle = tokio::runtime::Handle::current();
    let counter = AtomicUsize::new(0);
    let outcome = tokio::task::block_in_place(|| {
        let config = Config {
            cases: CASES,
            failure_persistence: None,
            // Shrinking replays sequences against the store: keep it bounded.
            max_shrink_iters: 512,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        runner.run(&plan(), |plan| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            handle.block_on(play(h, &format!("life-{n}"), &plan))
        })
    });
    if let Err(e) = outcome {
        panic!("lifecycle property failed: {e}");
    }
}

/// Fails the case with a message unless `cond` holds.
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(TestCaseError::fail(format!($($msg)+)));
        }
    };
}

fn store_err(what: &str, e: StoreError) -> TestCaseError {
    TestCaseError::fail(format!("{what} failed: {e}"))
}

/// The tasks of a case, as stored now, with their attempt histories.
type Snapshot = HashMap<TaskId, (Task, Vec<offload_types::Attempt>)>;

async fn snapshot(h: &Harness, ids: &[TaskId]) -> Result<Snapshot, TestCaseError> {
    let mut all = HashMap::new();
    for id in ids {
        let task = match h.store.task_get(*id).await {
            Ok(Some(t)) => t,
            Ok(None) => return Err(TestCaseError::fail(format!("task {id} vanished"))),
            Err(e) => return Err(store_err("task_get", e)),
        };
        let history = h
            .store
            .task_attempts(*id)
            .await
            .map_err(|e| store_err("task_attempts", e))?;
        all.insert(*id, (task, history));
    }
    Ok(all)
}

/// Checks one task against the invariants that hold in every state.
fn check_invariants(
    step: &str,
    t: &Task,
    history: &[offload_types::Attempt],
) -> Result<(), TestCaseError> {
    let id = t.id;
    check!(
        t.status.is_terminal() == t.finished_at.is_some(),
        "{step}: task {id} is {} with finished_at {:?}",
        t.status,
        t.finished_at
    );
    let running = t.status == Status::Running;
    check!(
        running == t.lease_token.is_some(),
        "{step}: task {id} is {} with lease token {:?}",
        t.status,
        t.lease_token
    );
    if running {
        check!(
            t.lease_expires_at.is_some() && t.worker_id.is_some() && t.started_at.is_some(),
            "{step}: running task {id} lacks lease expiry, worker or start"
        );
    }
    let open: Vec<_> = history
        .iter()
        .filter(|a| a.outcome == AttemptOutcome::Running)
        .collect();
    if running {
        check!(
            open.len() == 1
                && history.last().map(|a| a.outcome) == Some(AttemptOutcome::Running)
                && open[0].attempt == t.attempt,
            "{step}: running task {id} (attempt {}) needs exactly one open attempt row, last: {history:?}",
            t.attempt
        );
    } else {
        check!(
            open.is_empty(),
            "{step}: {} task {id} has open attempt rows: {history:?}",
            t.status
        );
    }
    Ok(())
}

/// Whether `before → after` is allowed in one operation.
fn legal(before: Status, after: Status, claimed: bool) -> bool {
    before == after
        || before.can_become(after)
        || (claimed
            && before == Status::Scheduled
            && Status::Scheduled.can_become(Status::Pending)
            && Status::Pending.can_become(after))
}

/// The claim order key: priority (higher first), then run_at, then id.
fn claim_key(t: &Task) -> (i32, chrono::DateTime<chrono::Utc>, TaskId) {
    (-t.priority, t.run_at, t.id)
}

/// Whether a task can be claimed at `now`.
fn ready(t: &Task, now: chrono::DateTime<chrono::Utc>) -> bool {
    t.status == Status::Pending || (t.status == Status::Scheduled && t.run_at <= now)
}

/// The lease a generated operation uses: the task's latest token, or
/// (stale) an older one or a made-up one.
fn pick_lease(id: TaskId, tokens: &HashMap<TaskId, Vec<LeaseToken>>, stale: bool) -> LeaseRef {
    let known = tokens.get(&id).map(Vec::as_slice).unwrap_or(&[]);
    let lease_token = match (stale, known) {
        (false, [.., last]) => *last,
        (true, [first, _, ..]) => *first,
        _ => LeaseToken::new(),
    };
    LeaseRef { id, lease_token }
}

/// Whether a lease is the live one according to the snapshot before the call.
fn is_live(before: &Task, lease: LeaseRef) -> bool {
    before.status == Status::Running && before.lease_token == Some(lease.lease_token)
}

/// Plays one generated case on queue `queue`.
async fn play(h: &Harness, queue: &str, plan: &Plan) -> Result<(), TestCaseError> {
    let tasks: Vec<NewTask> = plan
        .tasks
        .iter()
        .enumerate()
        .map(|(i, (max_attempts, priority, delay))| {
            let mut opts = TaskOptions::new()
                .queue(queue)
                .max_attempts(*max_attempts)
                .priority(*priority);
            if let Some(secs) = delay {
                opts = opts.delay(Duration::from_secs(*secs));
            }
            NewTask::new(format!("task_{i}"), json!({ "i": i })).options(opts)
        })
        .collect();
    let params = TaskInsertParams {
        tasks,
        now: h.now(),
    };
    let ids = h
        .store
        .task_insert_many(&params)
        .await
        .map_err(|e| store_err("task_insert_many", e))?
        .into_iter()
        .map(|e| e.id)
        .collect::<Vec<TaskId>>();
    let mut tokens: HashMap<TaskId, Vec<LeaseToken>> = HashMap::new();
    let mut before = snapshot(h, &ids).await?;
    for (id, (t, history)) in &before {
        check_invariants("insert", t, history)?;
        check!(t.status.is_waiting(), "new task {id} is {}", t.status);
    }

    for (step, op) in plan.ops.iter().enumerate() {
        let label = format!("step {step} {op:?}");
        let target = |task: &usize| ids[task % ids.len()];
        // Lease operations aim at running tasks when there are any (stale
        // tokens still come from the `stale` flag).
        let running: Vec<TaskId> = ids
            .iter()
            .filter(|id| before[*id].0.status == Status::Running)
            .copied()
            .collect();
        let leased = |task: &usize| {
            if running.is_empty() {
                target(task)
            } else {
                running[task % running.len()]
            }
        };
        // Tasks the operation may change; `None`: any of them.
        let mut may_change: Option<HashSet<TaskId>> = Some(HashSet::new());
        let mut claimed = HashSet::new();
        let now = h.now();
        match op {
            Op::Claim { limit, second } => {
                let store = if *second { &h.second } else { &h.store };
                let params = TaskClaimParams {
                    queue: queue.to_owned(),
                    names: None,
                    limit: *limit,
                    worker_id: WORKER.to_owned(),
                    lease: LEASE,
                    now,
                };
                let got = store
                    .task_claim(&params)
                    .await
                    .map_err(|e| store_err("task_claim", e))?;
                check!(got.len() <= *limit as usize, "{label}: over the limit");
                let mut ready_before: Vec<&Task> = before
                    .values()
                    .map(|(t, _)| t)
                    .filter(|t| ready(t, now))
                    .collect();
                ready_before.sort_by_key(|t| claim_key(t));
                let expected: Vec<TaskId> = ready_before
                    .iter()
                    .take(*limit as usize)
                    .map(|t| t.id)
                    .collect();
                let got_ids: Vec<TaskId> = got.iter().map(|t| t.id).collect();
                check!(
                    got_ids == expected,
                    "{label}: claimed {got_ids:?}, expected {expected:?} (priority, run_at, id order)"
                );
                for t in &got {
                    let Some(token) = t.lease_token else {
                        return Err(TestCaseError::fail(format!(
                            "{label}: claimed task without token"
                        )));
                    };
                    tokens.entry(t.id).or_default().push(token);
                    claimed.insert(t.id);
                    let (old, _) = &before[&t.id];
                    check!(
                        t.status == Status::Running && t.attempt == old.attempt + 1,
                        "{label}: claimed task {} is {} attempt {} (was attempt {})",
                        t.id,
                        t.status,
                        t.attempt,
                        old.attempt
                    );
                }
                // Due scheduled tasks may be promoted to pending.
                may_change = None;
            }
            Op::Finish {
                task,
                kind,
                stale,
                second,
            } => {
                let id = leased(task);
                let lease = pick_lease(id, &tokens, *stale);
                let (old, _) = &before[&id];
                let error = |kind: &str| offload_types::TaskErrorRecord {
                    kind: kind.to_owned(),
                    message: label.clone(),
                    attempt: old.attempt,
                    at: now,
                };
                let (outcome, status) = match kind {
                    Kind::Success => (
                        FinishOutcome::Success {
                            output: json!(step),
                        },
                        Status::Success,
                    ),
                    Kind::Retry { after_secs } => (
                        FinishOutcome::Retry {
                            error: error("error"),
                            run_at: now + chrono::Duration::seconds(i64::from(*after_secs)),
                        },
                        if *after_secs == 0 {
                            Status::Pending
                        } else {
                            Status::Scheduled
                        },
                    ),
                    Kind::Fail => (
                        FinishOutcome::Fail {
                            error: error("error"),
                        },
                        Status::Failed,
                    ),
                    Kind::Abort => (
                        FinishOutcome::Abort {
                            error: error("aborted"),
                        },
                        Status::Aborted,
                    ),
                    Kind::Snooze { after_secs } => (
                        FinishOutcome::Snooze {
                            run_at: now + chrono::Duration::seconds(i64::from(*after_secs) + 1),
                        },
                        Status::Scheduled,
                    ),
                    Kind::Release => (FinishOutcome::Release, Status::Pending),
                };
                let store = if *second { &h.second } else { &h.store };
                let params = TaskFinishParams {
                    items: vec![TaskFinish { lease, outcome }],
                    now,
                };
                let answers = store
                    .task_finish_many(&params)
                    .await
                    .map_err(|e| store_err("task_finish_many", e))?;
                check!(answers.len() == 1, "{label}: {} answers", answers.len());
                let live = is_live(old, lease);
                check!(
                    answers[0].accepted == live,
                    "{label}: accepted {} but the lease was {}",
                    answers[0].accepted,
                    if live { "live" } else { "not live" }
                );
                if live {
                    check!(
                        answers[0].status == Some(status),
                        "{label}: answered {:?}, expected {status}",
                        answers[0].status
                    );
                    may_change = Some(HashSet::from([id]));
                }
            }
            Op::Heartbeat { task, stale } => {
                let id = leased(task);
                let lease = pick_lease(id, &tokens, *stale);
                let params = TaskHeartbeatParams {
                    leases: vec![lease],
                    lease: LEASE,
                    now,
                };
                let answers = h
                    .store
                    .task_heartbeat_many(&params)
                    .await
                    .map_err(|e| store_err("task_heartbeat_many", e))?;
                let (old, _) = &before[&id];
                let live = is_live(old, lease);
                check!(
                    answers.len() == 1 && answers[0].live == live,
                    "{label}: answered {answers:?}, live should be {live}"
                );
                if live {
                    check!(
                        answers[0].abort_requested == old.abort_requested_at.is_some(),
                        "{label}: abort_requested wrong"
                    );
                    may_change = Some(HashSet::from([id]));
                }
            }
            Op::Progress {
                task,
                stale,
                percent,
            } => {
                let id = leased(task);
                let lease = pick_lease(id, &tokens, *stale);
                let params = TaskProgressParams {
                    updates: vec![ProgressUpdate {
                        lease,
                        progress: Progress::new(*percent, None),
                    }],
                    now,
                };
                let answers = h
                    .store
                    .task_progress_many(&params)
                    .await
                    .map_err(|e| store_err("task_progress_many", e))?;
                let live = is_live(&before[&id].0, lease);
                check!(
                    answers.len() == 1 && answers[0].live == live,
                    "{label}: answered {answers:?}, live should be {live}"
                );
                if live {
                    may_change = Some(HashSet::from([id]));
                }
            }
            Op::Abort { task } => {
                let id = target(task);
                let old = &before[&id].0;
                let params = TaskAbortParams {
                    id,
                    reason: Some(label.clone()),
                    now,
                };
                match h.store.task_abort(&params).await {
                    Ok(t) => {
                        check!(
                            !old.status.is_terminal(),
                            "{label}: aborted a {} task",
                            old.status
                        );
                        let want = if old.status == Status::Running {
                            Status::Running
                        } else {
                            Status::Aborted
                        };
                        check!(t.status == want, "{label}: became {}", t.status);
                        may_change = Some(HashSet::from([id]));
                    }
                    Err(StoreError::InvalidTransition { .. }) => {
                        check!(
                            old.status.is_terminal(),
                            "{label}: refused for a {} task",
                            old.status
                        );
                    }
                    Err(e) => return Err(store_err("task_abort", e)),
                }
            }
            Op::Retry { task } => {
                let id = target(task);
                let old = &before[&id].0;
                let retryable = matches!(old.status, Status::Failed | Status::Aborted);
                match h.store.task_retry(&TaskRetryParams { id, now }).await {
                    Ok(t) => {
                        check!(retryable, "{label}: retried a {} task", old.status);
                        check!(
                            t.status == Status::Pending && t.max_attempts > t.attempt,
                            "{label}: retried into {} attempt {}/{}",
                            t.status,
                            t.attempt,
                            t.max_attempts
                        );
                        may_change = Some(HashSet::from([id]));
                    }
                    Err(StoreError::InvalidTransition { .. }) => {
                        check!(!retryable, "{label}: refused for a {} task", old.status);
                    }
                    Err(e) => return Err(store_err("task_retry", e)),
                }
            }
            Op::Update {
                task,
                priority,
                run_in_secs,
            } => {
                let id = target(task);
                let old = &before[&id].0;
                let run_at = run_in_secs.map(|s| now + chrono::Duration::seconds(s));
                let params = TaskUpdateParams {
                    id,
                    priority: Some(*priority),
                    run_at,
                    now,
                    ..TaskUpdateParams::default()
                };
                match h.store.task_update(&params).await {
                    Ok(t) => {
                        check!(
                            old.status.is_waiting(),
                            "{label}: updated a {} task",
                            old.status
                        );
                        if let Some(at) = run_at {
                            let want = if at > now {
                                Status::Scheduled
                            } else {
                                Status::Pending
                            };
                            check!(
                                t.status == want,
                                "{label}: became {}, expected {want}",
                                t.status
                            );
                        }
                        check!(t.priority == *priority, "{label}: priority not updated");
                        may_change = Some(HashSet::from([id]));
                    }
                    Err(StoreError::InvalidTransition { .. } | StoreError::Conflict(_)) => {
                        check!(
                            !old.status.is_waiting(),
                            "{label}: refused for a {} task",
                            old.status
                        );
                    }
                    Err(e) => return Err(store_err("task_update", e)),
                }
            }
            Op::Rescue { advance_secs } => {
                h.advance(Duration::from_secs(*advance_secs));
                let now = h.now();
                let params = TaskRescueParams { now, limit: 10_000 };
                let rescued = h
                    .store
                    .task_rescue_expired(&params)
                    .await
                    .map_err(|e| store_err("task_rescue_expired", e))?;
                let mine: HashMap<TaskId, Status> = rescued
                    .iter()
                    .filter(|r| before.contains_key(&r.id))
                    .map(|r| (r.id, r.status))
                    .collect();
                let mut expected = HashMap::new();
                for (t, _) in before.values() {
                    if t.status == Status::Running && t.lease_expires_at.is_some_and(|e| e < now) {
                        let status = if t.abort_requested_at.is_some() {
                            Status::Aborted
                        } else if t.attempt < t.max_attempts {
                            Status::Pending
                        } else {
                            Status::Failed
                        };
                        expected.insert(t.id, status);
                    }
                }
                check!(
                    mine == expected,
                    "{label}: rescued {mine:?}, expected {expected:?}"
                );
                may_change = Some(expected.keys().copied().collect());
            }
        }

        let after = snapshot(h, &ids).await?;
        for id in &ids {
            let (old, _) = &before[id];
            let (new, history) = &after[id];
            check_invariants(&label, new, history)?;
            check!(
                legal(old.status, new.status, claimed.contains(id)),
                "{label}: illegal transition of task {id}: {} -> {}",
                old.status,
                new.status
            );
            if !claimed.contains(id) && matches!(op, Op::Claim { .. }) && old != new {
                // A claim may promote a due scheduled task it did not take.
                let promoted = Task {
                    status: Status::Pending,
                    updated_at: new.updated_at,
                    ..old.clone()
                };
                check!(
                    old.status == Status::Scheduled && old.run_at <= now && *new == promoted,
                    "{label}: unclaimed task {id} changed beyond a promotion:\n before {old:?}\n after  {new:?}"
                );
            }
            if let Some(allowed) = &may_change {
                check!(
                    allowed.contains(id) || old == new,
                    "{label}: task {id} changed though the operation did not concern it (or was refused):\n before {old:?}\n after  {new:?}"
                );
            }
            if let Some(token) = new.lease_token {
                check!(
                    tokens
                        .get(id)
                        .is_some_and(|known| known.last() == Some(&token)),
                    "{label}: task {id} holds a lease token no claim handed out"
                );
            }
            if new.status == Status::Running {
                check!(
                    new.lease_expires_at
                        .is_some_and(|e| e >= old.lease_expires_at.unwrap_or(e)),
                    "{label}: lease of {id} moved backwards"
                );
                if old.status == Status::Running && old.lease_token == new.lease_token {
                    check!(
                        new.attempt == old.attempt,
                        "{label}: attempt of running {id} changed"
                    );
                }
            }
        }
        // Claims and heartbeats set the lease from `now`.
        for id in &claimed {
            let t = &after[id].0;
            check!(
                t.lease_expires_at == Some(now + span(LEASE)),
                "{label}: lease of {id} is {:?}",
                t.lease_expires_at
            );
        }
        before = after;
    }
    Ok(())
}
