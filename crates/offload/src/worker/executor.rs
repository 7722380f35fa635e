//! The executor: one attempt as a straight pipeline of small steps —
//! register the lease, `on_before_run` hooks, run the runner in its own
//! task (so a panic is caught) under the attempt's timeout while watching
//! for a decision through the Controller and for stop requests, turn what
//! happened into an outcome (success, retry with back-off, fail, abort,
//! snooze, release), run the after hooks, and hand the outcome to the
//! completer.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use offload_store::{FinishOutcome, LeaseRef, TaskFinish};
use offload_types::{MAX_DURATION, RetryPolicy, Task, TaskError};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::shared::{Counters, Held, RegisteredRunner, Registration, Shared, Slot, request_stop};
use crate::controller::{Decision, DecisionSlot, StopReason};
use crate::{AttemptResult, Controller, Hook};

/// What one attempt came to, before it is turned into a stored outcome.
#[derive(Debug)]
enum Ran {
    Success(serde_json::Value),
    Error(TaskError),
    Aborted(&'static str),
    Snooze(Duration),
    Release,
    LeaseLost,
}

/// Runs one claimed attempt; `claimed_at` is when its claim was sent (its
/// lease counts from then).
pub(crate) async fn execute(shared: Arc<Shared>, task: Task, slot: Slot, claimed_at: Instant) {
    let Some(lease_token) = task.lease_token else {
        tracing::error!(task = %task.id, "claimed task without a lease token");
        return;
    };
    let lease = LeaseRef {
        id: task.id,
        lease_token,
    };
    let (stop_tx, stop_rx) = watch::channel(None);
    let stop_tx = Arc::new(stop_tx);
    // heartbeats renew the lease until the completer has stored the outcome
    let registration = Registration::new(shared.clone(), lease, stop_tx.clone(), claimed_at);
    let held = Held {
        _slot: slot,
        _registration: registration,
    };
    let (attempt_no, now_attempt) = (task.attempt, task.id);
    let span =
        tracing::info_span!("task", id = %now_attempt, name = %task.name, attempt = attempt_no);
    let run = run_attempt(&shared, task, lease, stop_tx, stop_rx).instrument(span);
    let outcome = match AssertUnwindSafe(run).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(payload) => {
            // a hook (or the worker itself) panicked: record a failed attempt
            // rather than leave the task running until its lease lapses
            let error = TaskError::panic(panic_message(payload));
            tracing::error!(task = %lease.id, error = %error.message, "attempt panicked outside the runner");
            Some(FinishOutcome::Fail {
                error: error.record(attempt_no, shared.clock.now()),
            })
        }
    };
    if let Some(outcome) = outcome {
        shared.complete(TaskFinish { lease, outcome }, held);
    }
}

/// One attempt from hooks to outcome; `None` when nothing is to be written.
async fn run_attempt(
    shared: &Arc<Shared>,
    task: Task,
    lease: LeaseRef,
    stop_tx: Arc<watch::Sender<Option<StopReason>>>,
    stop_rx: watch::Receiver<Option<StopReason>>,
) -> Option<FinishOutcome> {
    let Some(registered) = shared.runners.get(&task.name) else {
        // the claim filters by name, so this only happens if the store ignores it
        tracing::error!(task = %task.id, name = %task.name, "no runner for claimed task; releasing it");
        return Some(FinishOutcome::Release);
    };
    let hooks: Vec<Arc<dyn Hook>> = shared
        .hooks
        .iter()
        .chain(registered.hooks.iter())
        .cloned()
        .collect();
    let decision = Arc::new(DecisionSlot::default());
    let ctx = shared.context().for_task(&task);
    let ctl = Controller::new(
        shared.store.clone(),
        shared.clock.clone(),
        lease,
        task.attempt,
        stop_rx.clone(),
        decision.clone(),
    );
    let task = Arc::new(task);

    let ran = attempt(
        shared, &task, registered, &hooks, &ctx, &ctl, &decision, &stop_tx, stop_rx,
    )
    .await;
    let policy = task
        .retry
        .clone()
        .unwrap_or_else(|| registered.runner.retry_policy());
    let (outcome, result) = settle(shared, &task, ran, &policy);

    for hook in hooks.iter().rev() {
        hook.on_after_run(&task, &result, &ctx).await;
        match &result {
            AttemptResult::Success(output) => hook.on_success(&task, output, &ctx).await,
            AttemptResult::Failure { error, .. } => hook.on_failure(&task, error, &ctx).await,
            AttemptResult::Aborted | AttemptResult::Deferred => {}
        }
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    shared: &Shared,
    task: &Arc<Task>,
    registered: &RegisteredRunner,
    hooks: &[Arc<dyn Hook>],
    ctx: &crate::Context,
    ctl: &Controller,
    decision: &DecisionSlot,
    stop_tx: &watch::Sender<Option<StopReason>>,
    mut stop_rx: watch::Receiver<Option<StopReason>>,
) -> Ran {
    for hook in hooks {
        if let Err(e) = hook.on_before_run(task, ctx).await {
            return Ran::Error(e);
        }
    }
    let timeout = task.timeout.or_else(|| registered.runner.timeout());
    let mut join = {
        let (runner, task, ctx, ctl) = (
            registered.runner.clone(),
            task.clone(),
            ctx.clone(),
            ctl.clone(),
        );
        tokio::spawn(async move { runner.run(&task, &ctx, &ctl).await })
    };
    // a deadline past what the clock can count is no deadline
    let timeout_at = timeout.and_then(|t| Instant::now().checked_add(t));
    let far = Instant::now() + MAX_DURATION;
    let mut stopping: Option<(StopReason, Instant)> = None;
    loop {
        let grace_at = stopping.map(|(_, at)| at).unwrap_or(far);
        tokio::select! {
            // a decision made through the controller wins over the return value
            biased;
            d = decision.wait() => {
                join.abort();
                return from_decision(d);
            }
            joined = &mut join => {
                if let Some(d) = decision.get() {
                    return from_decision(d);
                }
                let result = match joined {
                    Ok(r) => r,
                    Err(e) if e.is_panic() => Err(TaskError::panic(panic_message(e.into_panic()))),
                    Err(_) => Err(TaskError::new("the attempt was cancelled").kind("cancelled")),
                };
                // a stop may have been requested in the same instant the runner returned
                let reason = stopping.map(|(r, _)| r).or(*stop_rx.borrow());
                return match reason {
                    None => match result {
                        Ok(v) => Ran::Success(v),
                        Err(e) => Ran::Error(e),
                    },
                    Some(reason) => after_stop(reason, result, timeout),
                };
            }
            _ = tokio::time::sleep_until(timeout_at.unwrap_or(far)), if stopping.is_none() && timeout_at.is_some() => {
                // an earlier stop request (abort, shutdown) keeps its reason
                request_stop(stop_tx, StopReason::Timeout);
                let reason = (*stop_rx.borrow_and_update()).unwrap_or(StopReason::Timeout);
                match begin_stop(reason, shared, far) {
                    Some(s) => stopping = Some(s),
                    None => {
                        join.abort();
                        return Ran::LeaseLost;
                    }
                }
            }
            changed = stop_rx.changed(), if stopping.is_none() => {
                if changed.is_err() {
                    continue;
                }
                let reason = *stop_rx.borrow_and_update();
                if let Some(reason) = reason {
                    match begin_stop(reason, shared, far) {
                        Some(s) => stopping = Some(s),
                        None => {
                            join.abort();
                            return Ran::LeaseLost;
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(grace_at), if stopping.is_some() => {
                join.abort();
                let reason = stopping.map(|(r, _)| r).unwrap_or(StopReason::Shutdown);
                tracing::warn!(task = %task.id, ?reason, "runner did not stop within the grace period; dropped it");
                return after_stop(reason, Err(TaskError::new("stopped")), timeout);
            }
        }
    }
}

/// The stop reason and the end of its grace period; `None` when the lease
/// is lost, which ends the attempt at once.
fn begin_stop(reason: StopReason, shared: &Shared, far: Instant) -> Option<(StopReason, Instant)> {
    if reason == StopReason::LeaseLost {
        return None;
    }
    let grace = Instant::now()
        .checked_add(shared.config.abort_grace)
        .unwrap_or(far);
    Some((reason, grace))
}

fn from_decision(d: Decision) -> Ran {
    match d {
        Decision::Success(v) => Ran::Success(v),
        Decision::Error(e) => Ran::Error(e),
        Decision::Abort => Ran::Aborted("aborted by its runner"),
        Decision::Snooze(d) => Ran::Snooze(d),
    }
}

/// `now + d`, saturating at the far end of what the store can hold.
pub(crate) fn later(
    now: chrono::DateTime<chrono::Utc>,
    d: Duration,
) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(d.min(MAX_DURATION))
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(now)
}

/// What an attempt that was asked to stop comes to.
fn after_stop(
    reason: StopReason,
    result: Result<serde_json::Value, TaskError>,
    timeout: Option<Duration>,
) -> Ran {
    match (reason, result) {
        (StopReason::Timeout, _) => Ran::Error(TaskError::timeout(timeout.unwrap_or_default())),
        // work that completed despite the request is kept
        (StopReason::Abort | StopReason::Shutdown, Ok(v)) => Ran::Success(v),
        (StopReason::Abort, Err(_)) => Ran::Aborted("aborted on request"),
        (StopReason::Shutdown, Err(_)) => Ran::Release,
        (StopReason::LeaseLost, _) => Ran::LeaseLost,
    }
}

/// Turns what ran into the outcome to store and the result hooks see.
fn settle(
    shared: &Shared,
    task: &Task,
    ran: Ran,
    policy: &RetryPolicy,
) -> (Option<FinishOutcome>, AttemptResult) {
    let now = shared.clock.now();
    let stats = &shared.stats;
    match ran {
        Ran::Success(output) => {
            Counters::add(&stats.succeeded, 1);
            (
                Some(FinishOutcome::Success {
                    output: output.clone(),
                }),
                AttemptResult::Success(output),
            )
        }
        Ran::Error(error) => {
            let record = error.record(task.attempt, now);
            let will_retry = error.retryable && task.attempts_left();
            let outcome = if will_retry {
                Counters::add(&stats.retried, 1);
                FinishOutcome::Retry {
                    error: record,
                    run_at: later(now, policy.backoff(task.attempt)),
                }
            } else {
                Counters::add(&stats.failed, 1);
                FinishOutcome::Fail { error: record }
            };
            (Some(outcome), AttemptResult::Failure { error, will_retry })
        }
        Ran::Aborted(message) => {
            Counters::add(&stats.aborted, 1);
            let error = TaskError::fatal(message).kind("aborted");
            (
                Some(FinishOutcome::Abort {
                    error: error.record(task.attempt, now),
                }),
                AttemptResult::Aborted,
            )
        }
        Ran::Snooze(delay) => (
            Some(FinishOutcome::Snooze {
                run_at: later(now, delay),
            }),
            AttemptResult::Deferred,
        ),
        Ran::Release => (Some(FinishOutcome::Release), AttemptResult::Deferred),
        Ran::LeaseLost => (
            None,
            AttemptResult::Failure {
                error: TaskError::new("the lease was lost; the task was rescued")
                    .kind("lease_lost"),
                will_retry: true,
            },
        ),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("runner panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("runner panicked: {s}")
    } else {
        "runner panicked".to_owned()
    }
}
