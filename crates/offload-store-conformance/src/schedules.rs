//! Cases for cron schedules: `schedule_put` (insert, or replace the
//! definition keeping the next tick while `cron` and `time_zone` stay the
//! same, keeping the pause unless told, the last run and `created_at`),
//! `schedule_get` and `schedule_list` (by name), `schedule_pause` (resume
//! sets the next tick), `schedule_delete` (never the tasks), `schedule_due`
//! (active, due, earliest first, limited) and `schedule_fire`: the
//! compare-and-set on the stored next tick that inserts the tick's task in
//! the same commit, so each tick enqueues one task however many callers
//! race, and a refused insert moves nothing.
//!
//! The store never reads the cron expression: every tick the cases use is
//! given explicitly, and time comes from the `now` of each call.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use offload_store::{
    EventKind, ScheduleDueParams, ScheduleFireParams, ScheduleFired, SchedulePauseParams,
    SchedulePutParams, ScheduleRecord, StoreError, TaskListParams,
};
use offload_types::{
    MissedTicks, NewTask, RetryPolicy, Schedule, Status, Task, TaskId, TaskOptions,
};
use serde_json::{Value, json};

use crate::Harness;
use crate::events::log;
use crate::harness::ok;

/// The queue of every scheduled task in these cases.
const QUEUE: &str = "sched";

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
/// The distance between two ticks of [`schedule`]'s expression.
const TICK: Duration = Duration::from_secs(300);

/// A schedule every five minutes in UTC, enqueuing `report` into [`QUEUE`].
fn schedule(name: &str) -> Schedule {
    Schedule::new(name, "*/5 * * * *", "report")
        .input(json!({ "schedule": name }))
        .options(TaskOptions::new().queue(QUEUE))
}

/// A schedule with every field of the definition set to something other
/// than its default.
fn full_schedule(name: &str) -> Schedule {
    Schedule::new(name, "0 3 * * 1-5", "reports/nightly:v2")
        .time_zone("Europe/Berlin")
        .input(json!({
            "text": "héllo \"wörld\" ✓",
            "nested": {"list": [1, -2, 3.5, null, true, "x"], "empty": {}},
            "big": 9_007_199_254_740_993_i64,
        }))
        .options(
            TaskOptions::new()
                .queue("reports.eu-1")
                .priority(-7)
                .max_attempts(9)
                .timeout(Duration::from_secs(95))
                .retry(RetryPolicy {
                    initial: Duration::from_millis(1500),
                    max: Duration::from_secs(90),
                    multiplier: 1.5,
                    jitter: 0.25,
                })
                .tag("nightly")
                .tag("billing")
                .metadata(json!({"tenant": "acme", "deep": {"k": ["v"]}}))
                .webhook("https://hooks.example.com/offload?x=1"),
        )
        .missed(MissedTicks::RunOnce)
}

/// The task of the tick `tick` of `s`, as a scheduler builds it: the
/// schedule's task starting at the tick, the schedule named in metadata.
fn tick_task(s: &Schedule, tick: DateTime<Utc>) -> NewTask {
    let options = s
        .options
        .clone()
        .run_at(tick)
        .metadata(json!({"schedule": {"name": s.name, "tick": tick.to_rfc3339()}}));
    NewTask::new(s.task.clone(), s.input.clone()).options(options)
}

/// Stores `s` through `store` at `now`; returns the stored record, which
/// `schedule_get` must then return too.
async fn put(
    h: &Harness,
    s: &Schedule,
    next_run_at: Option<DateTime<Utc>>,
    paused: Option<bool>,
) -> ScheduleRecord {
    let params = SchedulePutParams {
        schedule: s.clone(),
        next_run_at,
        paused,
        now: h.now(),
    };
    let record = ok("schedule_put", h.store.schedule_put(&params).await);
    assert_eq!(
        get(h, &s.name).await.as_ref(),
        Some(&record),
        "schedule_put returns the record as stored"
    );
    record
}

async fn get(h: &Harness, name: &str) -> Option<ScheduleRecord> {
    ok("schedule_get", h.store.schedule_get(name).await)
}

/// The stored record of `name`, which must exist.
async fn stored(h: &Harness, name: &str) -> ScheduleRecord {
    match get(h, name).await {
        Some(record) => record,
        None => panic!("schedule {name:?} should exist"),
    }
}

async fn list(h: &Harness) -> Vec<ScheduleRecord> {
    ok("schedule_list", h.store.schedule_list().await)
}

fn names(records: &[ScheduleRecord]) -> Vec<&str> {
    records.iter().map(|r| r.schedule.name.as_str()).collect()
}

/// Pauses (`paused`) or resumes `name` at `now`.
async fn pause(
    h: &Harness,
    name: &str,
    paused: bool,
    next_run_at: Option<DateTime<Utc>>,
) -> Option<ScheduleRecord> {
    let params = SchedulePauseParams {
        name: name.to_owned(),
        paused,
        next_run_at,
        now: h.now(),
    };
    ok("schedule_pause", h.store.schedule_pause(&params).await)
}

async fn delete(h: &Harness, name: &str) -> bool {
    ok("schedule_delete", h.store.schedule_delete(name).await)
}

/// The due schedules at `now`, at most `limit`.
async fn due(h: &Harness, now: DateTime<Utc>, limit: u32) -> Vec<ScheduleRecord> {
    ok(
        "schedule_due",
        h.store
            .schedule_due(&ScheduleDueParams { now, limit })
            .await,
    )
}

fn fire_params(
    h: &Harness,
    name: &str,
    expected: DateTime<Utc>,
    next_run_at: Option<DateTime<Utc>>,
    task: Option<NewTask>,
) -> ScheduleFireParams {
    ScheduleFireParams {
        name: name.to_owned(),
        expected,
        next_run_at,
        task,
        now: h.now(),
    }
}

/// Fires through `store` at `now`; the call must succeed.
async fn fire(
    h: &Harness,
    name: &str,
    expected: DateTime<Utc>,
    next_run_at: Option<DateTime<Utc>>,
    task: Option<NewTask>,
) -> ScheduleFired {
    let params = fire_params(h, name, expected, next_run_at, task);
    ok("schedule_fire", h.store.schedule_fire(&params).await)
}

/// Fires the tick `tick` of `s` with its task, moving to `next`; the call
/// must win. Returns the task's id (the id the task was given: schedule
/// tasks carry no unique key).
async fn fire_tick(
    h: &Harness,
    s: &Schedule,
    tick: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
) -> TaskId {
    let task = tick_task(s, tick);
    let id = task.id;
    assert_eq!(
        fire(h, &s.name, tick, next, Some(task)).await,
        ScheduleFired::Fired { task: Some(id) },
        "the tick {tick} of {} fires its task",
        s.name
    );
    id
}

/// Every task the store holds (up to 100), newest first.
async fn all_tasks(h: &Harness) -> Vec<Task> {
    let params = TaskListParams {
        limit: 100,
        ..Default::default()
    };
    ok("task_list", h.store.task_list(&params).await).tasks
}

/// A new schedule reads back (through both handles, by `get` and `list`)
/// active, with the given next tick, created and updated at `now`, no last
/// run, and its definition exactly as given.
pub async fn schedule_put_new_stores_definition_and_state(h: &Harness) {
    assert_eq!(get(h, "nightly").await, None, "nothing stored yet");
    assert!(list(h).await.is_empty());

    let s = full_schedule("nightly");
    let next = h.later(Duration::from_secs(3600));
    let record = put(h, &s, Some(next), None).await;
    let expected = ScheduleRecord {
        schedule: s.clone(),
        paused: false,
        next_run_at: Some(next),
        last_run_at: None,
        last_task_id: None,
        created_at: h.now(),
        updated_at: h.now(),
    };
    assert_eq!(record, expected);
    assert_eq!(list(h).await, vec![expected.clone()]);
    let seen = ok(
        "schedule_get on second",
        h.second.schedule_get("nightly").await,
    );
    assert_eq!(seen, Some(expected), "the second handle reads the same");

    // Defaults round-trip too (input null, no options, skip, UTC).
    let plain = Schedule::new("plain", "@hourly", "tick");
    let record = put(h, &plain, None, Some(false)).await;
    assert_eq!(record.schedule, plain);
    assert_eq!(record.next_run_at, None, "a schedule without next tick");
    assert!(!record.paused);
    assert_eq!(
        h.count_all().await,
        0,
        "storing a schedule enqueues nothing"
    );
}

/// Stating a schedule again with the same `cron` and `time_zone` replaces
/// the definition but keeps the stored next tick (not the given one) and
/// `created_at`; `updated_at` moves.
pub async fn schedule_put_same_cron_keeps_next_run_at(h: &Harness) {
    let created = h.now();
    let first = schedule("s");
    let next = h.later(TICK);
    put(h, &first, Some(next), None).await;

    h.advance(MINUTE);
    let changed = Schedule::new("s", "*/5 * * * *", "other-task")
        .input(json!({"v": 2}))
        .options(TaskOptions::new().queue("elsewhere").priority(5).tag("t"))
        .missed(MissedTicks::RunOnce);
    let record = put(h, &changed, Some(h.later(2 * TICK)), None).await;
    assert_eq!(
        record,
        ScheduleRecord {
            schedule: changed.clone(),
            paused: false,
            next_run_at: Some(next),
            last_run_at: None,
            last_task_id: None,
            created_at: created,
            updated_at: h.now(),
        },
        "the definition is replaced, the next tick and created_at kept"
    );

    h.advance(MINUTE);
    let record = put(h, &changed, None, None).await;
    assert_eq!(
        record.next_run_at,
        Some(next),
        "the stored tick is kept even when none is given"
    );
    assert_eq!(record.updated_at, h.now());
    assert_eq!(record.created_at, created);
    assert_eq!(list(h).await.len(), 1, "still one schedule");
}

/// A changed `cron` or `time_zone` takes the given next tick (also none).
pub async fn schedule_put_changed_cron_or_zone_replaces_next_run_at(h: &Harness) {
    let created = h.now();
    let s = schedule("s");
    put(h, &s, Some(h.later(TICK)), None).await;

    h.advance(SECOND);
    let hourly = Schedule {
        cron: "0 * * * *".to_owned(),
        ..s.clone()
    };
    let next = h.later(Duration::from_secs(3600));
    let record = put(h, &hourly, Some(next), None).await;
    assert_eq!(record.next_run_at, Some(next), "a new cron: the given tick");
    assert_eq!(record.schedule, hourly);
    assert_eq!(record.created_at, created);
    assert_eq!(record.updated_at, h.now());

    h.advance(SECOND);
    let berlin = hourly.clone().time_zone("Europe/Berlin");
    let next = h.later(Duration::from_secs(1800));
    let record = put(h, &berlin, Some(next), None).await;
    assert_eq!(record.next_run_at, Some(next), "a new zone: the given tick");
    assert_eq!(record.schedule, berlin);

    h.advance(SECOND);
    let ended = Schedule {
        cron: "@yearly".to_owned(),
        ..berlin
    };
    let record = put(h, &ended, None, None).await;
    assert_eq!(
        record.next_run_at, None,
        "a new cron without ticks: no next tick"
    );
    assert_eq!(record.schedule, ended);
    assert_eq!(record.created_at, created);
}

/// `paused: Some(true)` stores a schedule paused; a later put without
/// `paused` keeps the pause (the next tick too); `Some(false)` resumes it.
pub async fn schedule_put_paused_state(h: &Harness) {
    let s = schedule("s");
    let next = h.later(TICK);
    let record = put(h, &s, Some(next), Some(true)).await;
    assert!(record.paused, "stored paused");
    assert_eq!(record.next_run_at, Some(next));

    h.advance(SECOND);
    let changed = s.clone().input(json!("new"));
    let record = put(h, &changed, Some(h.later(2 * TICK)), None).await;
    assert!(record.paused, "a put without paused keeps the pause");
    assert_eq!(record.next_run_at, Some(next));
    assert_eq!(record.schedule, changed);

    h.advance(SECOND);
    let record = put(h, &changed, Some(h.later(2 * TICK)), Some(false)).await;
    assert!(!record.paused, "paused Some(false) resumes");
    assert_eq!(record.next_run_at, Some(next), "same cron: tick kept");

    h.advance(SECOND);
    let record = put(h, &changed, None, None).await;
    assert!(!record.paused, "a put without paused keeps it active");
}

/// Pausing keeps the next tick; resuming sets the given one; both move
/// `updated_at` and return the record as stored.
pub async fn schedule_pause_and_resume(h: &Harness) {
    let created = h.now();
    let s = schedule("s");
    let next = h.later(TICK);
    put(h, &s, Some(next), None).await;

    h.advance(MINUTE);
    let paused = pause(h, "s", true, Some(h.later(3 * TICK))).await;
    let expected = ScheduleRecord {
        schedule: s.clone(),
        paused: true,
        next_run_at: Some(next),
        last_run_at: None,
        last_task_id: None,
        created_at: created,
        updated_at: h.now(),
    };
    assert_eq!(paused.as_ref(), Some(&expected), "pausing keeps the tick");
    assert_eq!(stored(h, "s").await, expected);

    h.advance(Duration::from_secs(3600));
    let resumed_next = h.later(TICK);
    let resumed = pause(h, "s", false, Some(resumed_next)).await;
    let expected = ScheduleRecord {
        paused: false,
        next_run_at: Some(resumed_next),
        updated_at: h.now(),
        ..expected
    };
    assert_eq!(
        resumed.as_ref(),
        Some(&expected),
        "resuming sets the given tick"
    );
    assert_eq!(stored(h, "s").await, expected);

    h.advance(SECOND);
    let resumed = pause(h, "s", false, None).await;
    assert_eq!(
        resumed.map(|r| (r.paused, r.next_run_at)),
        Some((false, None)),
        "resuming without a tick stores none"
    );
}

/// Pause, resume and delete of a name that is not stored answer `None`
/// and `false` and store nothing.
pub async fn schedule_missing_name_is_none_or_false(h: &Harness) {
    put(h, &schedule("present"), Some(h.later(TICK)), None).await;
    assert_eq!(pause(h, "absent", true, None).await, None);
    assert_eq!(pause(h, "absent", false, Some(h.later(TICK))).await, None);
    assert!(!delete(h, "absent").await);
    assert_eq!(get(h, "absent").await, None);
    assert_eq!(names(&list(h).await), vec!["present"]);
}

/// `schedule_list` answers every schedule ordered by name; delete removes
/// only the schedule, never a task it enqueued, and a deleted schedule no
/// longer fires.
pub async fn schedule_list_by_name_and_delete_keeps_tasks(h: &Harness) {
    for name in ["delta", "alpha", "charlie", "bravo"] {
        put(h, &schedule(name), Some(h.now()), None).await;
        h.advance(SECOND);
    }
    assert_eq!(
        names(&list(h).await),
        vec!["alpha", "bravo", "charlie", "delta"]
    );
    let seen = ok("schedule_list on second", h.second.schedule_list().await);
    assert_eq!(seen, list(h).await, "the second handle reads the same");

    let bravo = stored(h, "bravo").await;
    let tick = bravo.next_run_at.unwrap_or_default();
    let next = h.later(TICK);
    let task = fire_tick(h, &bravo.schedule, tick, Some(next)).await;
    assert_eq!(stored(h, "bravo").await.next_run_at, Some(next));

    assert!(delete(h, "bravo").await);
    assert_eq!(get(h, "bravo").await, None);
    assert_eq!(names(&list(h).await), vec!["alpha", "charlie", "delta"]);
    assert_eq!(h.get(task).await.status, Status::Pending, "its task stays");
    assert_eq!(h.count_all().await, 1);
    assert!(!delete(h, "bravo").await, "deleted once");
    assert_eq!(
        fire(
            h,
            "bravo",
            next,
            None,
            Some(tick_task(&bravo.schedule, next))
        )
        .await,
        ScheduleFired::Lost,
        "a deleted schedule does not fire its stored tick"
    );
    assert_eq!(h.count_all().await, 1);
}

/// `schedule_due` answers the active schedules whose next tick is at or
/// before `now`, earliest first, at most `limit`; paused schedules, future
/// ticks and schedules without a next tick are left out.
pub async fn schedule_due_only_active_and_past_earliest_first(h: &Harness) {
    let now = h.now();
    // Name order differs from tick order.
    put(h, &schedule("a-late"), Some(now), None).await;
    put(h, &schedule("b-early"), Some(h.earlier(10 * MINUTE)), None).await;
    put(h, &schedule("c-mid"), Some(h.earlier(5 * MINUTE)), None).await;
    put(h, &schedule("d-future"), Some(h.later(SECOND)), None).await;
    put(
        h,
        &schedule("e-paused"),
        Some(h.earlier(20 * MINUTE)),
        Some(true),
    )
    .await;
    put(h, &schedule("f-ended"), None, None).await;
    put(
        h,
        &schedule("g-resumed"),
        Some(h.earlier(20 * MINUTE)),
        Some(true),
    )
    .await;
    assert!(
        pause(h, "g-resumed", false, Some(h.earlier(MINUTE)))
            .await
            .is_some()
    );

    let answer = due(h, now, 100).await;
    assert_eq!(
        names(&answer),
        vec!["b-early", "c-mid", "g-resumed", "a-late"],
        "due, earliest first"
    );
    for record in &answer {
        assert_eq!(
            record,
            &stored(h, &record.schedule.name).await,
            "due answers whole records"
        );
    }
    assert_eq!(
        names(&due(h, now, 2).await),
        vec!["b-early", "c-mid"],
        "the limit keeps the earliest"
    );
    assert_eq!(
        names(&due(h, h.earlier(6 * MINUTE), 100).await),
        vec!["b-early"]
    );
    assert!(due(h, h.earlier(11 * MINUTE), 100).await.is_empty());
    let later = ok(
        "schedule_due on second",
        h.second
            .schedule_due(&ScheduleDueParams {
                now: h.later(SECOND),
                limit: 100,
            })
            .await,
    );
    assert_eq!(
        names(&later),
        vec!["b-early", "c-mid", "g-resumed", "a-late", "d-future"],
        "a tick at exactly now is due"
    );

    assert!(pause(h, "c-mid", true, None).await.is_some());
    assert_eq!(
        names(&due(h, now, 100).await),
        vec!["b-early", "g-resumed", "a-late"],
        "a paused schedule is no longer due"
    );
}

/// A fire that wins answers the task's id, inserts the task as given
/// (writing its `task.created` event), moves the next tick and records the
/// last run; firing the same tick again (through either handle) is lost
/// and inserts nothing.
pub async fn schedule_fire_inserts_task_and_moves_next_tick(h: &Harness) {
    let created = h.now();
    let mut s = schedule("s");
    s.options = TaskOptions::new()
        .queue(QUEUE)
        .priority(4)
        .max_attempts(7)
        .tag("cron");
    let t1 = h.later(TICK);
    put(h, &s, Some(t1), None).await;

    h.clock.set(t1 + chrono::Duration::milliseconds(250));
    let t2 = t1 + chrono::Duration::seconds(300);
    let id = fire_tick(h, &s, t1, Some(t2)).await;

    let t = h.get(id).await;
    assert_eq!(t.name, "report");
    assert_eq!(t.input, json!({"schedule": "s"}));
    assert_eq!(t.queue, QUEUE);
    assert_eq!(t.priority, 4);
    assert_eq!(t.max_attempts, 7);
    assert_eq!(t.tags, vec!["cron".to_owned()]);
    assert_eq!(
        t.metadata,
        json!({"schedule": {"name": "s", "tick": t1.to_rfc3339()}})
    );
    assert_eq!(t.run_at, t1, "the task starts at its tick");
    assert_eq!(t.status, Status::Pending);
    assert_eq!(t.created_at, h.now());
    assert_eq!(h.count_all().await, 1);

    let record = stored(h, "s").await;
    assert_eq!(
        record,
        ScheduleRecord {
            schedule: s.clone(),
            paused: false,
            next_run_at: Some(t2),
            last_run_at: Some(t1),
            last_task_id: Some(id),
            created_at: created,
            updated_at: h.now(),
        }
    );

    h.advance(SECOND);
    let again = tick_task(&s, t1);
    let again_id = again.id;
    assert_eq!(
        fire(h, "s", t1, Some(t2), Some(again)).await,
        ScheduleFired::Lost,
        "the tick was handled"
    );
    let params = fire_params(h, "s", t1, Some(t2), Some(tick_task(&s, t1)));
    assert_eq!(
        ok(
            "schedule_fire on second",
            h.second.schedule_fire(&params).await
        ),
        ScheduleFired::Lost,
        "the tick was handled, for the second handle too"
    );
    assert_eq!(
        h.try_get(again_id).await,
        None,
        "a lost fire inserts nothing"
    );
    assert_eq!(h.count_all().await, 1);
    assert_eq!(stored(h, "s").await, record, "a lost fire changes nothing");

    let created_events: Vec<_> = log(h)
        .await
        .events
        .into_iter()
        .filter(|e| e.kind == EventKind::Created)
        .collect();
    assert_eq!(
        created_events.iter().map(|e| e.task_id).collect::<Vec<_>>(),
        vec![id],
        "one task.created, for the fired task"
    );
    let e = &created_events[0];
    assert_eq!((e.name.as_str(), e.queue.as_str()), ("report", QUEUE));
    assert_eq!(e.data, json!({"status": "pending"}));
    assert_eq!(e.at, t.created_at);

    // The task is an ordinary task: it can be claimed.
    h.claim_one_from(QUEUE, id).await;
}

/// A fire of a paused schedule, of one whose next tick is not `expected`
/// (or is none), or of a missing one is lost and writes nothing.
pub async fn schedule_fire_paused_stale_or_missing_is_lost(h: &Harness) {
    let s = schedule("s");
    let t1 = h.earlier(SECOND);
    let paused = put(h, &s, Some(t1), Some(true)).await;
    h.advance(SECOND);
    let task = tick_task(&s, t1);
    let task_id = task.id;
    assert_eq!(
        fire(h, "s", t1, Some(h.later(TICK)), Some(task)).await,
        ScheduleFired::Lost,
        "a paused schedule does not fire"
    );
    assert_eq!(
        fire(h, "s", t1, Some(h.later(TICK)), None).await,
        ScheduleFired::Lost,
        "nor skips a tick"
    );
    assert_eq!(h.try_get(task_id).await, None);
    assert_eq!(stored(h, "s").await, paused, "nothing changed");

    let active = schedule("active");
    let stored_tick = h.now();
    let before = put(h, &active, Some(stored_tick), None).await;
    h.advance(SECOND);
    for stale in [
        stored_tick - chrono::Duration::seconds(300),
        stored_tick + chrono::Duration::microseconds(1),
    ] {
        assert_eq!(
            fire(
                h,
                "active",
                stale,
                Some(h.later(TICK)),
                Some(tick_task(&active, stale))
            )
            .await,
            ScheduleFired::Lost,
            "expected {stale} is not the stored tick {stored_tick}"
        );
    }
    assert_eq!(stored(h, "active").await, before);

    let ended = schedule("ended");
    let before = put(h, &ended, None, None).await;
    assert_eq!(
        fire(
            h,
            "ended",
            h.now(),
            Some(h.later(TICK)),
            Some(tick_task(&ended, h.now()))
        )
        .await,
        ScheduleFired::Lost,
        "a schedule without next tick does not fire"
    );
    assert_eq!(stored(h, "ended").await, before);

    assert_eq!(
        fire(
            h,
            "missing",
            h.now(),
            Some(h.later(TICK)),
            Some(tick_task(&s, h.now()))
        )
        .await,
        ScheduleFired::Lost,
        "a missing schedule does not fire"
    );
    assert_eq!(get(h, "missing").await, None, "nor is it created");
    assert_eq!(h.count_all().await, 0);
}

/// A fire without a task (a skipped tick) wins, moves the next tick and
/// leaves the last run as it was.
pub async fn schedule_fire_without_task_skips_tick(h: &Harness) {
    let s = schedule("s");
    let t1 = h.now();
    put(h, &s, Some(t1), None).await;
    let t2 = t1 + chrono::Duration::seconds(300);
    let t3 = t2 + chrono::Duration::seconds(300);

    h.advance(SECOND);
    assert_eq!(
        fire(h, "s", t1, Some(t2), None).await,
        ScheduleFired::Fired { task: None },
        "a skip of a never-run schedule"
    );
    let record = stored(h, "s").await;
    assert_eq!(record.next_run_at, Some(t2));
    assert_eq!((record.last_run_at, record.last_task_id), (None, None));
    assert_eq!(record.updated_at, h.now());
    assert_eq!(h.count_all().await, 0);

    h.clock.set(t2);
    let id = fire_tick(h, &s, t2, Some(t3)).await;

    h.clock.set(t3 + chrono::Duration::seconds(3600));
    let t4 = h.later(TICK);
    assert_eq!(
        fire(h, "s", t3, Some(t4), None).await,
        ScheduleFired::Fired { task: None }
    );
    let record = stored(h, "s").await;
    assert_eq!(record.next_run_at, Some(t4), "the next tick moved");
    assert_eq!(
        (record.last_run_at, record.last_task_id),
        (Some(t2), Some(id)),
        "a skipped tick leaves the last run"
    );
    assert_eq!(record.updated_at, h.now());
    assert_eq!(h.count_all().await, 1, "a skip inserts nothing");
    assert_eq!(
        fire(h, "s", t3, Some(t4), None).await,
        ScheduleFired::Lost,
        "the skipped tick was handled"
    );
}

/// A fire whose task the insert refuses returns that error and changes
/// nothing: the tick stays due and a later fire of it wins.
pub async fn schedule_fire_failed_insert_changes_nothing(h: &Harness) {
    let s = schedule("s");
    let t1 = h.now();
    let before = put(h, &s, Some(t1), None).await;

    h.advance(SECOND);
    let t2 = t1 + chrono::Duration::seconds(300);
    let mut orphan = tick_task(&s, t1);
    orphan.options.depends_on = vec![TaskId::new()];
    let orphan_id = orphan.id;
    let params = fire_params(h, "s", t1, Some(t2), Some(orphan));
    match h.store.schedule_fire(&params).await {
        Err(StoreError::Invalid(e)) => assert_eq!(e.field, "depends_on", "{e}"),
        other => panic!("a task depending on an unknown id is refused as Invalid, got {other:?}"),
    }
    assert_eq!(
        stored(h, "s").await,
        before,
        "the refused insert rolls the move back"
    );
    assert_eq!(h.try_get(orphan_id).await, None);
    assert_eq!(h.count_all().await, 0);
    assert_eq!(names(&due(h, h.now(), 10).await), vec!["s"], "still due");

    let id = fire_tick(h, &s, t1, Some(t2)).await;
    let record = stored(h, "s").await;
    assert_eq!(
        (record.next_run_at, record.last_run_at, record.last_task_id),
        (Some(t2), Some(t1), Some(id))
    );
    assert_eq!(h.count_all().await, 1);
}

/// Ten concurrent fires of one tick through both handles: exactly one
/// wins and inserts its task; nine are lost and insert nothing.
pub async fn schedule_fire_racing_calls_fire_once(h: &Harness) {
    let s = schedule("race");
    let t1 = h.now();
    put(h, &s, Some(t1), None).await;
    h.advance(SECOND);
    let t2 = t1 + chrono::Duration::seconds(300);

    let mut handles = Vec::new();
    let mut offered = HashSet::new();
    for i in 0..10 {
        let store = if i % 2 == 0 {
            h.store.clone()
        } else {
            h.second.clone()
        };
        let task = tick_task(&s, t1);
        offered.insert(task.id);
        let params = fire_params(h, "race", t1, Some(t2), Some(task));
        handles.push(tokio::spawn(
            async move { store.schedule_fire(&params).await },
        ));
    }
    let mut answers = Vec::new();
    for handle in handles {
        match handle.await {
            Ok(result) => answers.push(ok("schedule_fire (racing)", result)),
            Err(e) => panic!("a racing fire panicked: {e}"),
        }
    }
    let winners: Vec<TaskId> = answers
        .iter()
        .filter_map(|a| match a {
            ScheduleFired::Fired { task: Some(id) } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "exactly one fire wins: {answers:?}");
    assert_eq!(
        answers
            .iter()
            .filter(|a| **a == ScheduleFired::Lost)
            .count(),
        9,
        "every other fire is lost: {answers:?}"
    );
    let winner = winners[0];
    assert!(offered.contains(&winner), "the winner's own task");
    let tasks = all_tasks(h).await;
    assert_eq!(
        tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![winner],
        "one task for the tick"
    );
    let record = stored(h, "race").await;
    assert_eq!(
        (record.next_run_at, record.last_run_at, record.last_task_id),
        (Some(t2), Some(t1), Some(winner))
    );
}

/// Ticks handled one after another, as a scheduler does (read the due
/// schedules, fire the tick it read), enqueue one task per tick, each
/// starting at its tick; a late repeat of an earlier tick is lost.
pub async fn schedule_fire_consecutive_ticks_one_task_each(h: &Harness) {
    let s = schedule("s");
    let other = schedule("other");
    let first = h.later(MINUTE);
    put(h, &s, Some(first), None).await;
    put(
        h,
        &other,
        Some(h.later(Duration::from_secs(365 * 24 * 3600))),
        None,
    )
    .await;

    let ticks: Vec<DateTime<Utc>> = (0..6)
        .map(|k| first + chrono::Duration::seconds(300 * k))
        .collect();
    assert!(due(h, h.now(), 10).await.is_empty(), "nothing due yet");
    let mut ids = Vec::new();
    for (k, pair) in ticks.windows(2).enumerate() {
        let (tick, next) = (pair[0], pair[1]);
        h.clock.set(tick + chrono::Duration::milliseconds(100));
        let answer = due(h, h.now(), 10).await;
        assert_eq!(names(&answer), vec!["s"], "tick {k} is due");
        assert_eq!(answer[0].next_run_at, Some(tick), "tick {k}");
        ids.push(fire_tick(h, &s, tick, Some(next)).await);
        assert!(due(h, h.now(), 10).await.is_empty(), "tick {k} handled");
        if k > 0 {
            assert_eq!(
                fire(
                    h,
                    "s",
                    ticks[k - 1],
                    Some(tick),
                    Some(tick_task(&s, ticks[k - 1]))
                )
                .await,
                ScheduleFired::Lost,
                "a repeat of tick {} is lost",
                k - 1
            );
        }
    }
    let handled = ticks.len() - 1;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), handled);
    assert_eq!(h.count_all().await, handled as u64, "one task per tick");
    for (k, id) in ids.iter().enumerate() {
        let t = h.get(*id).await;
        assert_eq!(t.run_at, ticks[k], "task {k} starts at its tick");
        assert_eq!(
            t.metadata.get("schedule").and_then(|m| m.get("tick")),
            Some(&Value::String(ticks[k].to_rfc3339()))
        );
    }
    let record = stored(h, "s").await;
    assert_eq!(
        (record.next_run_at, record.last_run_at, record.last_task_id),
        (
            ticks.last().copied(),
            Some(ticks[handled - 1]),
            ids.last().copied()
        )
    );
    let other_record = stored(h, "other").await;
    assert_eq!(
        (other_record.last_run_at, other_record.last_task_id),
        (None, None),
        "the other schedule never fired"
    );
}

/// Stating a schedule again after it fired keeps its last run and next
/// tick (same cron), and a changed cron keeps the last run too.
pub async fn schedule_put_after_a_fire_keeps_last_run(h: &Harness) {
    let s = schedule("s");
    let t1 = h.now();
    put(h, &s, Some(t1), None).await;
    h.advance(SECOND);
    let t2 = t1 + chrono::Duration::seconds(300);
    let id = fire_tick(h, &s, t1, Some(t2)).await;

    h.advance(MINUTE);
    let restated = s.clone().input(json!("restated"));
    let record = put(h, &restated, Some(h.later(Duration::from_secs(240))), None).await;
    assert_eq!(
        (record.next_run_at, record.last_run_at, record.last_task_id),
        (Some(t2), Some(t1), Some(id)),
        "same cron: next tick and last run kept"
    );

    h.advance(MINUTE);
    let hourly = Schedule {
        cron: "0 * * * *".to_owned(),
        ..restated
    };
    let next = h.later(Duration::from_secs(3600));
    let record = put(h, &hourly, Some(next), None).await;
    assert_eq!(
        (record.next_run_at, record.last_run_at, record.last_task_id),
        (Some(next), Some(t1), Some(id)),
        "new cron: the given tick, last run kept"
    );
    assert_eq!(h.count_all().await, 1);
}
