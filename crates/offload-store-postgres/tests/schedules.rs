//! Cron schedules where only the PostgreSQL store can be looked at
//! closely: the wake-up a fired tick sends to every process, a tick whose
//! task goes through the dependency path inside the fire's transaction,
//! the partial index of due schedules, and the time a delete stamps on the
//! dependents it aborts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use offload_store::{
    Notification, ScheduleDueParams, ScheduleFireParams, ScheduleFired, SchedulePutParams, Store,
    TaskDeleteParams, TaskInsertParams,
};
use offload_store_postgres::{PgStore, sqlx};
use offload_test_support::PgSchema;
use offload_types::{NewTask, Schedule, Status, TaskOptions};
use serde_json::json;
use sqlx::Row;

async fn open(schema: &PgSchema) -> PgStore {
    PgStore::open_url(&schema.url_with("pool_size=4"))
        .await
        .unwrap()
}

/// Now, in whole microseconds (the precision stored times have).
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Waits up to `secs` for a notification matching `want`.
async fn wait_for(
    rx: &mut tokio::sync::broadcast::Receiver<Notification>,
    secs: u64,
    want: impl Fn(&Notification) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(n)) if want(&n) => return true,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(_)) | Err(_) => return false,
        }
    }
}

/// Stores `s` with next tick `tick`.
async fn put(store: &PgStore, s: &Schedule, tick: DateTime<Utc>) {
    store
        .schedule_put(&SchedulePutParams {
            schedule: s.clone(),
            next_run_at: Some(tick),
            paused: None,
            now: now(),
        })
        .await
        .unwrap();
}

fn fire_params(name: &str, tick: DateTime<Utc>, task: NewTask) -> ScheduleFireParams {
    ScheduleFireParams {
        name: name.to_owned(),
        expected: tick,
        next_run_at: Some(tick + chrono::Duration::seconds(300)),
        task: Some(task),
        now: now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fired_tick_wakes_this_process_and_others_after_commit() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    let other = open(&schema).await;
    let s = Schedule::new("s", "*/5 * * * *", "report").options(TaskOptions::new().queue("cron"));
    let tick = now();
    put(&store, &s, tick).await;
    let mut own = store.notifier().subscribe();
    let mut theirs = other.notifier().subscribe();
    let task = NewTask::new("report", json!(null)).options(TaskOptions::new().queue("cron"));
    let id = task.id;
    let fired = store
        .schedule_fire(&fire_params("s", tick, task))
        .await
        .unwrap();
    assert_eq!(fired, ScheduleFired::Fired { task: Some(id) });
    let available =
        |n: &Notification| matches!(n, Notification::Available { queue: Some(q) } if q == "cron");
    assert!(wait_for(&mut theirs, 5, available).await, "another process");
    assert!(wait_for(&mut own, 5, available).await, "this process");
    let t = store.task_get(id).await.unwrap().unwrap();
    assert_eq!(t.status, Status::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_task_with_a_dependency_is_blocked_in_the_same_commit() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    let q = format!("\"{}\"", schema.name());
    let dep = NewTask::new("dep", json!(null))
        .options(TaskOptions::new().run_at(Utc::now() + chrono::Duration::hours(1)));
    let dep_id = dep.id;
    store
        .task_insert_many(&TaskInsertParams {
            tasks: vec![dep],
            now: now(),
        })
        .await
        .unwrap();
    let s = Schedule::new("s", "*/5 * * * *", "report");
    let tick = now();
    put(&store, &s, tick).await;
    let mut task = NewTask::new("report", json!(null));
    task.options.depends_on = vec![dep_id];
    let id = task.id;
    let fired = store
        .schedule_fire(&fire_params("s", tick, task))
        .await
        .unwrap();
    assert_eq!(fired, ScheduleFired::Fired { task: Some(id) });
    assert_eq!(
        store.task_get(id).await.unwrap().unwrap().status,
        Status::Blocked
    );
    let edges: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {q}.task_deps WHERE dep_id = $1 AND task_id = $2"
    )))
    .bind(dep_id.0)
    .bind(id.0)
    .fetch_one(store.pool())
    .await
    .unwrap()
    .get(0);
    assert_eq!(edges, 1, "the edge committed with the tick");
    let record = store.schedule_get("s").await.unwrap().unwrap();
    assert_eq!(
        (record.last_run_at, record.last_task_id),
        (Some(tick), Some(id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_schedules_are_read_through_the_partial_index() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    let q = format!("\"{}\"", schema.name());
    // Many paused or ended schedules, a few due ones.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {q}.schedules (name, cron, time_zone, definition, paused, next_run_at, \
         created_at, updated_at) \
         SELECT 's' || g, '@hourly', 'UTC', \
         jsonb_build_object('name', 's' || g, 'cron', '@hourly', 'task', 't'), \
         g % 1000 <> 0, CASE WHEN g % 7 = 0 THEN NULL ELSE now() - interval '1 minute' END, \
         now(), now() FROM generate_series(1, 20000) g; ANALYZE {q}.schedules"
    )))
    .execute(store.pool())
    .await
    .unwrap();
    let due = store
        .schedule_due(&ScheduleDueParams {
            now: Utc::now(),
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(
        due.len(),
        18,
        "g % 1000 = 0 and g % 7 <> 0 (not 7000, 14000)"
    );
    assert!(due.iter().all(|r| !r.paused && r.next_run_at.is_some()));
    let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "EXPLAIN SELECT name FROM {q}.schedules WHERE NOT paused AND next_run_at IS NOT NULL \
         AND next_run_at <= now() ORDER BY next_run_at, name COLLATE \"C\" LIMIT 100"
    )))
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect();
    assert!(
        plan.iter().any(|l| l.contains("schedules_due")),
        "{}",
        plan.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_stamps_the_dependents_it_aborts_with_its_now() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    let dep = NewTask::new("dep", json!(null))
        .options(TaskOptions::new().run_at(Utc::now() + chrono::Duration::hours(1)));
    let dep_id = dep.id;
    let mut waiting = NewTask::new("waiting", json!(null));
    waiting.options.depends_on = vec![dep_id];
    let waiting_id = waiting.id;
    store
        .task_insert_many(&TaskInsertParams {
            tasks: vec![dep, waiting],
            now: now(),
        })
        .await
        .unwrap();
    // A delete time far from the wall clock, with nanoseconds.
    let at = Utc.with_ymd_and_hms(2031, 5, 6, 7, 8, 9).single().unwrap()
        + chrono::Duration::nanoseconds(123_456_789);
    store
        .task_delete(&TaskDeleteParams {
            id: dep_id,
            now: at,
        })
        .await
        .unwrap();
    let t = store.task_get(waiting_id).await.unwrap().unwrap();
    assert_eq!(t.status, Status::Aborted);
    let stamped = at.trunc_subsecs(6);
    assert_eq!(t.finished_at, Some(stamped));
    assert_eq!(t.updated_at, stamped);
    assert_eq!(t.error.map(|e| e.at), Some(stamped));
}
