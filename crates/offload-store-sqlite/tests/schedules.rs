//! Cron schedules on SQLite beyond the shared suite: a fired task wakes
//! its queue here and in other processes like any enqueue, a task a unique
//! key keeps is recorded as the tick's task, and an older file gains the
//! `schedules` table on open.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chrono::DateTime;
use common::{TempDb, now};
use offload_store::{
    Notification, ScheduleFireParams, ScheduleFired, SchedulePutParams, Store, TaskInsertParams,
};
use offload_types::{NewTask, Schedule, TaskOptions};
use serde_json::json;
use tokio::sync::broadcast::Receiver;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(5);

/// Waits for an `Available` notification of `queue`, skipping others.
async fn wait_available(rx: &mut Receiver<Notification>, queue: &str) {
    let want = Notification::Available {
        queue: Some(queue.to_owned()),
    };
    timeout(DEADLINE, async {
        loop {
            if rx.recv().await.unwrap() == want {
                return;
            }
        }
    })
    .await
    .expect("the queue is woken within the deadline");
}

/// Stores a schedule `name` enqueuing into `queue`, due at `tick`.
async fn put_due(store: &impl Store, name: &str, queue: &str, tick: DateTime<chrono::Utc>) {
    let schedule =
        Schedule::new(name, "*/5 * * * *", "report").options(TaskOptions::new().queue(queue));
    store
        .schedule_put(&SchedulePutParams {
            schedule,
            next_run_at: Some(tick),
            paused: None,
            now: tick,
        })
        .await
        .unwrap();
}

fn fire_params(name: &str, tick: DateTime<chrono::Utc>, task: NewTask) -> ScheduleFireParams {
    ScheduleFireParams {
        name: name.to_owned(),
        expected: tick,
        next_run_at: Some(tick + chrono::Duration::seconds(300)),
        task: Some(task),
        now: tick,
    }
}

#[tokio::test]
async fn a_fired_task_wakes_its_queue_here_and_in_another_process() {
    let db = TempDb::new();
    let a = db.open().await;
    let b = db.open().await;
    assert!(b.listen());
    let mut rx_a = a.notifier().subscribe();
    let mut rx_b = b.notifier().subscribe();
    let tick = now();
    put_due(&a, "s", "cron", tick).await;
    let task = NewTask::new("report", json!(null)).options(TaskOptions::new().queue("cron"));
    let fired = a
        .schedule_fire(&fire_params("s", tick, task.clone()))
        .await
        .unwrap();
    assert_eq!(
        fired,
        ScheduleFired::Fired {
            task: Some(task.id)
        }
    );
    wait_available(&mut rx_a, "cron").await;
    wait_available(&mut rx_b, "cron").await;
}

#[tokio::test]
async fn a_task_a_unique_key_keeps_is_the_ticks_task() {
    let db = TempDb::new();
    let store = db.open().await;
    let tick = now();
    let held = NewTask::new("report", json!(1))
        .options(TaskOptions::new().queue("cron").unique_key("daily"));
    let holder = store
        .task_insert_many(&TaskInsertParams {
            tasks: vec![held],
            now: tick,
        })
        .await
        .unwrap()[0]
        .id;
    put_due(&store, "s", "cron", tick).await;
    let task = NewTask::new("report", json!(2))
        .options(TaskOptions::new().queue("cron").unique_key("daily"));
    let fired = store
        .schedule_fire(&fire_params("s", tick, task.clone()))
        .await
        .unwrap();
    assert_eq!(fired, ScheduleFired::Fired { task: Some(holder) });
    assert_eq!(store.task_get(task.id).await.unwrap(), None);
    let record = store.schedule_get("s").await.unwrap().unwrap();
    assert_eq!(record.last_task_id, Some(holder));
    assert_eq!(record.last_run_at, Some(tick));
}

#[tokio::test]
async fn a_version_3_file_gains_schedules() {
    let db = TempDb::new();
    let store = db.open().await;
    let old = common::insert_n(&store, "default", 1).await[0];
    drop(store);
    {
        // Back to schema version 3, as an older offload left it.
        let conn = rusqlite::Connection::open(db.path()).unwrap();
        conn.execute_batch(
            "DROP INDEX tasks_pending_fair; DROP INDEX tasks_waiting_fair_name; \
             DROP INDEX tasks_waiting_fair_queue; DROP TABLE limits; DROP TABLE limit_starts; \
             DROP TABLE fairness_served; ALTER TABLE tasks DROP COLUMN fairness_key; \
             DROP TABLE schedules; DELETE FROM offload_migrations WHERE version >= 4;",
        )
        .unwrap();
    }
    let store = db.open().await;
    assert!(store.task_get(old).await.unwrap().is_some());
    assert!(store.schedule_list().await.unwrap().is_empty());
    put_due(&store, "s", "cron", now()).await;
    assert_eq!(store.schedule_list().await.unwrap().len(), 1);
}
