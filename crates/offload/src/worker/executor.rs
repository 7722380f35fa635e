//! The executor: one attempt as a straight pipeline of small steps —
//! register the lease, `on_before_run` hooks, run the runner in its own
//! task (so a panic is caught) under the attempt's timeout while watching
//! for a decision through the Controller and for stop requests, turn what
//! happened into an outcome (success, retry with back-off, fail, abort,
//! snooze, release), run the after hooks, and hand the outcome to the
//! completer.

use std::sync::Arc;
use std::time::Duration;

use offload_store::{FinishOutcome, LeaseRef, TaskFinish};
use offload_types::{RetryPolicy, Task, TaskError};
use tokio::sync::watch;
use tokio::time::Instant;

use super::shared::{Counters, RegisteredRunner, Shared, Slot, request_stop};
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

pub(crate) async fn execute(shared: Arc<Shared>, task: Task, slot: Slot) {
    let Some(lease_token) = task.lease_token else {
        tracing::error!(task = %task.id, "claimed task without a lease token");
        return;
    };
    let lease = LeaseRef {
        id: task.id,
        lease_token,
    };
    let Some(registered) = shared.runners.get(&task.name) else {
        // the claim filters by name, so this only happens if the store ignores it
        tracing::error!(task = %task.id, name = %task.name, "no runner for claimed task; releasing it");
        shared.complete(
            TaskFinish {
                lease,
                outcome: FinishOutcome::Release,
            },
            slot,
        );
        return;
    };
    let (stop_tx, stop_rx) = watch::channel(None);
    let stop_tx = Arc::new(stop_tx);
    shared.register(lease, stop_tx.clone());

    let hooks: Vec<Arc<dyn Hook>> = shared
        .hooks
        .iter()
        .chain(registered.hooks.iter())
        .cloned()
        .collect();
    let decision = Arc::new(DecisionSlot::default());
    let ctx = shared.context();
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
        &shared, &task, registered, &hooks, &ctx, &ctl, &decision, &stop_tx, stop_rx,
    )
    .await;
    let policy = task
        .retry
        .clone()
        .unwrap_or_else(|| registered.runner.retry_policy());
    let (outcome, result) = settle(&shared, &task, ran, &policy);

    for hook in hooks.iter().rev() {
        hook.on_after_run(&task, &result, &ctx).await;
        match &result {
            AttemptResult::Success(output) => hook.on_success(&task, output, &ctx).await,
            AttemptResult::Failure { error, .. } => hook.on_failure(&task, error, &ctx).await,
            AttemptResult::Aborted | AttemptResult::Deferred => {}
        }
    }
    shared.unregister(lease);
    // the slot stays taken until the outcome is stored (the completer drops it)
    if let Some(outcome) = outcome {
        shared.complete(TaskFinish { lease, outcome }, slot);
    }
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
    let timeout_at = timeout.map(|t| Instant::now() + t);
    let far = Instant::now() + Duration::from_secs(100 * 365 * 86400);
    let mut stopping: Option<(StopReason, Instant)> = None;
    loop {
        let grace_at = stopping.map(|(_, at)| at).unwrap_or(far);
        tokio::select! {
            joined = &mut join => {
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
            d = decision.wait() => {
                join.abort();
                return match d {
                    Decision::Success(v) => Ran::Success(v),
                    Decision::Error(e) => Ran::Error(e),
                    Decision::Abort => Ran::Aborted("aborted by its runner"),
                    Decision::Snooze(d) => Ran::Snooze(d),
                };
            }
            _ = tokio::time::sleep_until(timeout_at.unwrap_or(far)), if stopping.is_none() && timeout_at.is_some() => {
                request_stop(stop_tx, StopReason::Timeout);
            }
            changed = stop_rx.changed(), if stopping.is_none() => {
                if changed.is_err() {
                    continue;
                }
                let reason = *stop_rx.borrow_and_update();
                match reason {
                    Some(StopReason::LeaseLost) => {
                        join.abort();
                        return Ran::LeaseLost;
                    }
                    Some(reason) => stopping = Some((reason, Instant::now() + shared.config.abort_grace)),
                    None => {}
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
                let wait = chrono::Duration::from_std(policy.backoff(task.attempt))
                    .unwrap_or(chrono::Duration::zero());
                FinishOutcome::Retry {
                    error: record,
                    run_at: now + wait,
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
                run_at: now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero()),
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
