//! The scheduler: every worker runs one. Each round it reads the schedules
//! whose next tick has come and handles each tick with
//! [`Store::schedule_fire`](offload_store::Store::schedule_fire), a
//! compare-and-set on the stored next tick that inserts the tick's task in
//! the same commit. So however many schedulers run, each tick enqueues one
//! task, and a scheduler that dies mid-round loses nothing: the tick stays
//! due for the others. No leader election is involved.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use offload_store::{
    ScheduleDueParams, ScheduleFireParams, ScheduleFired, ScheduleRecord, StoreError,
};
use offload_types::{CronSchedule, NewTask, Schedule, TickPlan, plan_tick};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::shared::Shared;

/// How often a scheduler looks for due ticks: a tick is enqueued at most
/// this late (plus the store's round-trip).
pub const SCHEDULER_TICK: Duration = Duration::from_millis(250);
/// Due schedules read per round.
const DUE_BATCH: u32 = 100;

/// Stores the schedules given to the worker's builder, then handles due
/// ticks until `stop`.
pub(crate) async fn run(shared: Arc<Shared>, schedules: Vec<Schedule>, stop: CancellationToken) {
    let client = shared.client.clone();
    for schedule in schedules {
        let name = schedule.name.clone();
        if let Err(e) = client.put_schedule(schedule).await {
            tracing::error!(schedule = %name, error = %e, "could not store the schedule");
        }
    }
    let mut crons: HashMap<(String, String), CronSchedule> = HashMap::new();
    let mut retry = Backoff::capped(Duration::from_secs(5));
    loop {
        let wait = match round(&shared, &mut crons).await {
            Ok(()) => {
                if retry.succeed() > 0 {
                    tracing::info!("the scheduler reaches the store again");
                }
                SCHEDULER_TICK
            }
            Err(e) => {
                let wait = retry.fail();
                tracing::warn!(error = %e, retry_in = ?wait, "the scheduler could not read due schedules");
                wait
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Handles every due tick once.
async fn round(
    shared: &Shared,
    crons: &mut HashMap<(String, String), CronSchedule>,
) -> offload_store::StoreResult<()> {
    let due = shared
        .store
        .schedule_due(&ScheduleDueParams {
            now: shared.clock.now(),
            limit: DUE_BATCH,
        })
        .await?;
    for record in due {
        let key = (
            record.schedule.cron.clone(),
            record.schedule.time_zone.clone(),
        );
        let cron = match crons.get(&key) {
            Some(c) => c.clone(),
            None => match record.schedule.cron_schedule() {
                Ok(c) => {
                    crons.insert(key, c.clone());
                    c
                }
                Err(e) => {
                    // stored by a build that knew this zone or syntax
                    tracing::error!(schedule = %record.schedule.name, error = %e, "cannot read the schedule's cron; it does not run");
                    continue;
                }
            },
        };
        match fire(shared, &cron, &record).await {
            Ok(()) => {}
            // the store refused the tick's task (a full quota, a task that
            // became invalid): retrying every round would not help, so the
            // tick is skipped
            Err(e @ (StoreError::QuotaExceeded(_) | StoreError::Invalid(_))) => {
                tracing::warn!(schedule = %record.schedule.name, error = %e, "the tick's task was refused; skipping the tick");
                if let Err(e) = skip(shared, &cron, &record).await {
                    tracing::warn!(schedule = %record.schedule.name, error = %e, "could not skip the tick; it stays due");
                }
            }
            Err(e) => {
                tracing::warn!(schedule = %record.schedule.name, error = %e, "could not handle a tick; it stays due");
            }
        }
    }
    Ok(())
}

async fn fire(
    shared: &Shared,
    cron: &CronSchedule,
    record: &ScheduleRecord,
) -> offload_store::StoreResult<()> {
    let Some(due) = record.next_run_at else {
        return Ok(());
    };
    let now = shared.clock.now();
    let s = &record.schedule;
    let (task, next, tick) = match plan_tick(cron, due, now, s.missed) {
        TickPlan::Fire { tick, next } => (Some(tick_task(s, tick)), next, Some(tick)),
        TickPlan::Skip { next } => (None, next, None),
    };
    let fired = shared
        .store
        .schedule_fire(&ScheduleFireParams {
            name: s.name.clone(),
            expected: due,
            next_run_at: next,
            task,
            now,
        })
        .await?;
    match (fired, tick) {
        (ScheduleFired::Fired { task: Some(id) }, Some(tick)) => {
            tracing::debug!(schedule = %s.name, %tick, task = %id, "schedule fired")
        }
        (ScheduleFired::Fired { .. }, _) => {
            tracing::info!(schedule = %s.name, missed_since = %due, next = ?next, "skipped missed ticks")
        }
        (ScheduleFired::Lost, _) => {}
    }
    Ok(())
}

/// Moves a schedule past its due tick without a task.
async fn skip(
    shared: &Shared,
    cron: &CronSchedule,
    record: &ScheduleRecord,
) -> offload_store::StoreResult<()> {
    let Some(due) = record.next_run_at else {
        return Ok(());
    };
    let now = shared.clock.now();
    shared
        .store
        .schedule_fire(&ScheduleFireParams {
            name: record.schedule.name.clone(),
            expected: due,
            next_run_at: cron.next_after(now.max(due)),
            task: None,
            now,
        })
        .await
        .map(|_| ())
}

/// The task of one tick: the schedule's task, starting at the tick, with
/// `{"schedule": {"name", "tick"}}` added to its metadata.
fn tick_task(s: &Schedule, tick: chrono::DateTime<chrono::Utc>) -> NewTask {
    let mut options = s.options.clone();
    let mut metadata = match options.metadata.take() {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    metadata.insert(
        "schedule".to_owned(),
        json!({ "name": s.name, "tick": tick.to_rfc3339() }),
    );
    options.metadata = Some(Value::Object(metadata));
    options.run_at = Some(tick);
    NewTask::new(s.task.clone(), s.input.clone()).options(options)
}
