//! Cron schedules through the library with real workers, on SQLite and
//! PostgreSQL: two schedulers over one store enqueue exactly one task per
//! tick with no tick missed; restating a schedule keeps its next tick;
//! pause, resume and delete; missed ticks are skipped or run once.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use offload::{
    Client, Context, Controller, MissedTicks, Runner, Schedule, ScheduleFired, Task, TaskError,
    TaskFilter, TaskListParams, Worker, WorkerHandle, async_trait,
};
use offload_store::{ScheduleFireParams, SchedulePutParams};
use serde_json::{Value, json};

struct Noop;

#[async_trait]
impl Runner for Noop {
    async fn run(&self, _: &Task, _: &Context, _: &Controller) -> Result<Value, TaskError> {
        Ok(Value::Null)
    }
}

fn worker(client: &Client, schedule: Option<Schedule>) -> WorkerHandle {
    let mut b = Worker::builder(client.store().clone())
        .poll_interval(Duration::from_millis(200))
        .runner("tick", Noop);
    if let Some(s) = schedule {
        b = b.schedule(s);
    }
    b.build().unwrap().start()
}

/// Every task named `tick`, by the tick its schedule metadata names.
async fn ticks(client: &Client) -> BTreeMap<DateTime<Utc>, usize> {
    let page = client
        .list(TaskListParams {
            filter: TaskFilter {
                names: vec!["tick".into()],
                ..TaskFilter::default()
            },
            cursor: None,
            limit: 1000,
        })
        .await
        .unwrap();
    let mut by_tick = BTreeMap::new();
    for t in page.tasks {
        let tick = t.metadata["schedule"]["tick"].as_str().unwrap();
        let tick: DateTime<Utc> = tick.parse().unwrap();
        assert_eq!(t.metadata["schedule"]["name"], json!("every-second"));
        assert_eq!(t.run_at, tick, "a tick's task starts at its tick");
        *by_tick.entry(tick).or_default() += 1;
    }
    by_tick
}

async fn two_schedulers_enqueue_one_task_per_tick(a: Client, b: Client) {
    let schedule = Schedule::new("every-second", "* * * * * *", "tick").input(json!({"x": 1}));
    let wa = worker(&a, Some(schedule.clone()));
    let wb = worker(&b, Some(schedule));
    tokio::time::sleep(Duration::from_millis(4500)).await;
    wa.shutdown().await.unwrap();
    wb.shutdown().await.unwrap();
    let by_tick = ticks(&a).await;
    assert!(
        by_tick.len() >= 3,
        "only {} ticks in 4.5 s: {by_tick:?}",
        by_tick.len()
    );
    for (tick, n) in &by_tick {
        assert_eq!(*n, 1, "tick {tick} enqueued {n} tasks");
    }
    // no tick skipped between the first and the last
    let ticks: Vec<_> = by_tick.keys().collect();
    for pair in ticks.windows(2) {
        assert_eq!(
            *pair[1] - *pair[0],
            chrono::Duration::seconds(1),
            "{ticks:?}"
        );
    }
    let record = a.schedule("every-second").await.unwrap().unwrap();
    assert_eq!(record.last_run_at, ticks.last().map(|t| **t));
    assert!(record.last_task_id.is_some());
}

async fn restating_keeps_the_next_tick_and_pause_survives(a: Client, _b: Client) {
    let s = Schedule::new("nightly", "0 3 * * *", "tick").time_zone("Europe/Berlin");
    let first = a.put_schedule(s.clone()).await.unwrap();
    let next = first.next_run_at.unwrap();
    assert!(next > Utc::now());
    assert_eq!(first.upcoming(3).unwrap().len(), 3);
    let paused = a.pause_schedule("nightly").await.unwrap();
    assert!(paused.paused);
    assert!(paused.upcoming(3).unwrap().is_empty());
    // the application restarts and states its schedule again
    let again = a.put_schedule(s.clone()).await.unwrap();
    assert!(again.paused, "an operator's pause survives a restart");
    assert_eq!(again.created_at, first.created_at);
    let resumed = a.resume_schedule("nightly").await.unwrap();
    assert!(!resumed.paused);
    assert_eq!(resumed.next_run_at, Some(next));
    let changed = a
        .put_schedule(s.clone().options(offload::TaskOptions::new().priority(3)))
        .await
        .unwrap();
    assert_eq!(changed.next_run_at, Some(next), "same cron: same next tick");
    assert_eq!(changed.schedule.options.priority, Some(3));
    let hourly = a
        .put_schedule(Schedule::new("nightly", "0 * * * *", "tick"))
        .await
        .unwrap();
    assert!(hourly.next_run_at.unwrap() <= Utc::now() + chrono::Duration::hours(1));
    assert_eq!(a.schedules().await.unwrap().len(), 1);
    assert!(a.delete_schedule("nightly").await.unwrap());
    assert!(!a.delete_schedule("nightly").await.unwrap());
    assert!(a.schedule("nightly").await.unwrap().is_none());
    assert!(a.pause_schedule("nightly").await.is_err());
    let bad = a.put_schedule(Schedule::new("x", "* * *", "tick")).await;
    assert!(bad.is_err());
    assert!(a.schedules().await.unwrap().is_empty());
}

/// A schedule whose next tick is ten minutes old, as after downtime.
async fn overdue(client: &Client, name: &str, missed: MissedTicks) {
    let now = Utc::now();
    client
        .store()
        .schedule_put(&SchedulePutParams {
            schedule: Schedule::new(name, "*/5 * * * *", "tick").missed(missed),
            next_run_at: Some(now - chrono::Duration::minutes(10)),
            paused: None,
            now,
        })
        .await
        .unwrap();
}

async fn missed_ticks_are_skipped_or_run_once(a: Client, _b: Client) {
    overdue(&a, "skipper", MissedTicks::Skip).await;
    overdue(&a, "catcher", MissedTicks::RunOnce).await;
    let w = worker(&a, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let all = a.schedules().await.unwrap();
        if all.iter().all(|s| s.next_run_at.unwrap() > Utc::now()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "ticks not handled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.shutdown().await.unwrap();
    let skipper = a.schedule("skipper").await.unwrap().unwrap();
    let catcher = a.schedule("catcher").await.unwrap().unwrap();
    assert_eq!(skipper.last_task_id, None, "skip enqueues nothing");
    let id = catcher.last_task_id.expect("run_once enqueues one task");
    let t = a.get(id).await.unwrap();
    assert_eq!(t.metadata["schedule"]["name"], json!("catcher"));
    let count = a.count(TaskFilter::default()).await.unwrap();
    assert_eq!(count.iter().map(|c| c.count).sum::<u64>(), 1);
}

async fn a_tick_is_fired_once_by_racing_calls(a: Client, b: Client) {
    let now = Utc::now();
    let due = now - chrono::Duration::seconds(1);
    a.store()
        .schedule_put(&SchedulePutParams {
            schedule: Schedule::new("race", "* * * * * *", "tick"),
            next_run_at: Some(due),
            paused: None,
            now,
        })
        .await
        .unwrap();
    let fire = |c: Client| async move {
        c.store()
            .schedule_fire(&ScheduleFireParams {
                name: "race".into(),
                expected: due,
                next_run_at: Some(now + chrono::Duration::seconds(1)),
                task: Some(offload::NewTask::new("tick", json!(null))),
                now,
            })
            .await
            .unwrap()
    };
    let (x, y) = tokio::join!(tokio::spawn(fire(a.clone())), tokio::spawn(fire(b.clone())));
    let results = [x.unwrap(), y.unwrap()];
    let fired = results
        .iter()
        .filter(|r| matches!(r, ScheduleFired::Fired { task: Some(_) }))
        .count();
    assert_eq!(fired, 1, "{results:?}");
    assert!(results.contains(&ScheduleFired::Lost));
    let count = a.count(TaskFilter::default()).await.unwrap();
    assert_eq!(count.iter().map(|c| c.count).sum::<u64>(), 1);
}

on_both!(
    two_schedulers_enqueue_one_task_per_tick,
    restating_keeps_the_next_tick_and_pause_survives,
    missed_ticks_are_skipped_or_run_once,
    a_tick_is_fired_once_by_racing_calls,
);
