//! `offload store copy` between real SQLite files: every status and its
//! history copied exactly, a second run skips everything and doubles
//! nothing, and the refusals (a worker holding a lease, the same store
//! twice, a missing source) write nothing.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use common::{Env, assert_one_error, sh_runner, wait_for};
use offload::{NewTask, Progress, Store, TaskErrorRecord, TaskOptions};
use offload_store::{
    FinishOutcome, LeaseRef, ProgressUpdate, TaskAbortParams, TaskClaimParams, TaskFinish,
    TaskFinishParams, TaskInsertParams, TaskProgressParams,
};
use serde_json::{Value, json};

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn error(message: &str, attempt: u32) -> TaskErrorRecord {
    TaskErrorRecord {
        kind: "error".to_owned(),
        message: message.to_owned(),
        attempt,
        at: now(),
    }
}

async fn insert(store: &dyn Store, name: &str, options: TaskOptions) {
    let task = NewTask::new(name, json!({ "name": name })).options(options.queue(name));
    store
        .task_insert_many(&TaskInsertParams {
            tasks: vec![task],
            now: now(),
        })
        .await
        .unwrap();
}

/// Claims the task of scenario `name` (its queue is its name) at `at`.
async fn claim(store: &dyn Store, name: &str, at: DateTime<Utc>) -> LeaseRef {
    let claimed = store
        .task_claim(&TaskClaimParams {
            queue: name.to_owned(),
            names: None,
            limit: 1,
            worker_id: format!("worker-{name}"),
            lease: Duration::from_secs(30),
            now: at,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "{name}");
    LeaseRef {
        id: claimed[0].id,
        lease_token: claimed[0].lease_token.unwrap(),
    }
}

async fn finish(store: &dyn Store, lease: LeaseRef, outcome: FinishOutcome) {
    let answers = store
        .task_finish_many(&TaskFinishParams {
            items: vec![TaskFinish { lease, outcome }],
            now: now(),
        })
        .await
        .unwrap();
    assert!(answers[0].accepted);
}

/// Fills the store at `url` with tasks in every status, each with its own
/// name and queue; a running task's lease expired an hour ago (its
/// worker died), so the copy may go ahead.
async fn every_status(url: &str) {
    let store = offload::open(url).await.unwrap();
    let store = store.as_ref();
    let later = now() + chrono::Duration::hours(1);
    insert(
        store,
        "pending",
        TaskOptions::new()
            .priority(3)
            .max_attempts(5)
            .timeout(Duration::from_secs(90))
            .tag("copy")
            .metadata(json!({ "owner": "test" })),
    )
    .await;
    insert(store, "scheduled", TaskOptions::new().run_at(later)).await;

    insert(store, "success", TaskOptions::new()).await;
    let lease = claim(store, "success", now()).await;
    store
        .task_progress_many(&TaskProgressParams {
            updates: vec![ProgressUpdate {
                lease,
                progress: Progress::new(70, Some("nearly".to_owned())),
            }],
            now: now(),
        })
        .await
        .unwrap();
    let output = json!({ "rows": 2 });
    finish(store, lease, FinishOutcome::Success { output }).await;

    insert(store, "failed", TaskOptions::new().max_attempts(2)).await;
    let lease = claim(store, "failed", now()).await;
    let retry = FinishOutcome::Retry {
        error: error("first", 1),
        run_at: now(),
    };
    finish(store, lease, retry).await;
    let lease = claim(store, "failed", now()).await;
    let fail = FinishOutcome::Fail {
        error: error("second", 2),
    };
    finish(store, lease, fail).await;

    insert(store, "aborted", TaskOptions::new()).await;
    let lease = claim(store, "aborted", now()).await;
    let retry = FinishOutcome::Retry {
        error: error("broke", 1),
        run_at: later,
    };
    finish(store, lease, retry).await;
    store
        .task_abort(&TaskAbortParams {
            id: lease.id,
            reason: Some("not needed".to_owned()),
            now: now(),
        })
        .await
        .unwrap();

    insert(store, "snoozed", TaskOptions::new()).await;
    let lease = claim(store, "snoozed", now()).await;
    finish(store, lease, FinishOutcome::Snooze { run_at: later }).await;

    insert(store, "released", TaskOptions::new()).await;
    let lease = claim(store, "released", now()).await;
    finish(store, lease, FinishOutcome::Release).await;

    insert(store, "orphaned", TaskOptions::new()).await;
    claim(store, "orphaned", now() - chrono::Duration::hours(1)).await;
}

/// `offload ARGS --json` against the store at `url`.
fn json_at(env: &Env, url: &str, args: &[&str]) -> Value {
    let out = env
        .bare(args)
        .args(["--json", "--database-url", url, "--config"])
        .arg(&env.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "offload {args:?} on {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every task of the store at `url` as `offload get --json` shows it
/// (with its attempts), in id order.
fn all_tasks_at(env: &Env, url: &str) -> Vec<Value> {
    let page = json_at(env, url, &["list", "--limit", "1000"]);
    assert_eq!(page["next_cursor"], Value::Null);
    let mut ids: Vec<String> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.iter()
        .map(|id| json_at(env, url, &["get", id]))
        .collect()
}

fn copy(env: &Env, from: &str, to: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["store", "copy", "--from", from, "--to", to];
    args.extend_from_slice(extra);
    env.bare(&args).output().unwrap()
}

fn copy_json(env: &Env, from: &str, to: &str, extra: &[&str]) -> Value {
    let mut all = extra.to_vec();
    all.push("--json");
    let out = copy(env, from, to, &all);
    assert!(
        out.status.success(),
        "copy failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn copy_keeps_every_status_and_history_and_reruns_without_doubles() {
    let env = Env::new();
    let from = env.url();
    let to = format!("sqlite://{}", env.path("copy.db").display());
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(every_status(&from));
    // And two through the binary.
    env.enqueue(&["--type", "cli", "--data", r#"{"via": "cli"}"#]);
    let aborted = env.enqueue(&["--type", "cli-aborted", "--delay", "1h"]);
    env.ok(&["abort", &aborted, "--reason", "changed my mind"]);
    let source = all_tasks_at(&env, &from);
    let n = source.len() as u64;
    assert_eq!(n, 10);
    let statuses: std::collections::HashSet<&str> = source
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    for status in [
        "pending",
        "scheduled",
        "running",
        "success",
        "failed",
        "aborted",
    ] {
        assert!(
            statuses.contains(status),
            "no {status} task in {statuses:?}"
        );
    }

    // Small pages, so the copy takes several round-trips.
    let report = copy_json(&env, &from, &to, &["--page-size", "3"]);
    assert_eq!(report["copied"], json!(n), "{report}");
    assert_eq!(report["skipped"], json!(0), "{report}");
    assert_eq!(report["total"], json!(n), "{report}");
    assert_eq!(report["expired_leases"], json!(1), "{report}");
    assert_eq!(report["from"], json!(from));
    assert_eq!(report["to"], json!(to));
    assert_eq!(all_tasks_at(&env, &to), source, "the copy is the source");

    // Again: everything is skipped, nothing doubles or changes.
    let report = copy_json(&env, &from, &to, &[]);
    assert_eq!(report["copied"], json!(0), "{report}");
    assert_eq!(report["skipped"], json!(n), "{report}");
    assert_eq!(report["total"], json!(n), "{report}");
    assert_eq!(all_tasks_at(&env, &to), source);
    assert_eq!(all_tasks_at(&env, &from), source, "the source is unchanged");

    // A new source task is the only one the next copy writes; the summary
    // says so in words.
    let id = env.enqueue(&["--type", "late"]);
    let out = copy(&env, &from, &to, &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("copied 1 task from"), "{text}");
    assert!(
        text.contains(&format!(
            "{n} skipped as already present, {} in the source",
            n + 1
        )),
        "{text}"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("lease had expired"), "{stderr}");
    assert_eq!(
        json_at(&env, &to, &["get", &id]),
        json_at(&env, &from, &["get", &id])
    );
    assert_eq!(all_tasks_at(&env, &to).len() as u64, n + 1);
}

/// The way up: an embedded store copied to PostgreSQL twice is identical
/// and not doubled, and workers on PostgreSQL then finish what waited
/// (including the task whose worker died, rescued by the new leader).
#[test]
fn copy_from_sqlite_to_postgres_then_workers_there_finish_the_rest() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let schema = rt.block_on(offload_test_support::PgSchema::new());
    let runners = ["pending", "released", "orphaned", "cli"]
        .iter()
        .map(|name| sh_runner(name, "echo '{\"done\": true}'", ""))
        .collect::<String>();
    let env = Env::with_config(&format!(
        "[worker]\nqueues = [\"pending\", \"released\", \"orphaned\", \"default\"]\n\n{runners}"
    ));
    let from = env.url();
    let to = schema.url();
    rt.block_on(every_status(&from));
    env.enqueue(&["--type", "cli", "--data", r#"{"via": "cli"}"#]);
    let source = all_tasks_at(&env, &from);
    let n = source.len() as u64;

    let report = copy_json(&env, &from, &to, &["--page-size", "4"]);
    assert_eq!(report["copied"], json!(n), "{report}");
    assert_eq!(all_tasks_at(&env, &to), source, "the copy is the source");
    let report = copy_json(&env, &from, &to, &[]);
    assert_eq!(report["copied"], json!(0), "{report}");
    assert_eq!(report["skipped"], json!(n), "{report}");
    assert_eq!(
        all_tasks_at(&env, &to),
        source,
        "nothing doubled or changed"
    );

    let log = env.path("pg-worker.log");
    let child = env
        .bare(&["worker", "--database-url", &to, "--config"])
        .arg(&env.config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut worker = common::Proc { child, log };
    let waiting: Vec<String> = source
        .iter()
        .filter(|t| {
            ["pending", "released", "orphaned", "cli"].contains(&t["name"].as_str().unwrap())
        })
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(waiting.len(), 4);
    wait_for(
        "the waiting tasks to succeed on PostgreSQL",
        Duration::from_secs(60),
        || {
            waiting
                .iter()
                .all(|id| json_at(&env, &to, &["get", id])["status"] == json!("success"))
                .then_some(())
        },
    );
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        worker.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        worker.log_text()
    );
    let orphaned = source
        .iter()
        .find(|t| t["name"] == json!("orphaned"))
        .unwrap();
    let attempts = json_at(&env, &to, &["get", orphaned["id"].as_str().unwrap()]);
    assert!(
        attempts.to_string().contains("lease_expired"),
        "the orphaned attempt was rescued: {attempts}"
    );
    drop(schema);
}

#[test]
fn copy_is_refused_while_a_worker_holds_a_lease() {
    let env = Env::with_config(&sh_runner("slow", "sleep 30", ""));
    let from = env.url();
    let dest = env.path("copy.db");
    let to = format!("sqlite://{}", dest.display());
    env.enqueue(&["--type", "done-before"]);
    let mut worker = env.worker(&[]);
    let id = env.enqueue(&["--type", "slow"]);
    wait_for("the slow task to run", Duration::from_secs(30), || {
        (env.task(&id)["status"] == json!("running")).then_some(())
    });

    let out = copy(&env, &from, &to, &[]);
    let line = assert_one_error(&out, 1, "running task whose lease has not expired");
    assert!(line.contains(&id), "{line}");
    assert!(line.contains("nothing was copied"), "{line}");
    assert!(out.stdout.is_empty());
    assert!(!dest.exists(), "a refused copy creates nothing");

    let out = copy(&env, &from, &to, &["--json"]);
    assert_one_error(&out, 1, "stop the workers");
    assert!(!dest.exists());

    // Stop the task (its process group goes with it), then the worker.
    env.ok(&["abort", &id]);
    wait_for("the slow task to stop", Duration::from_secs(30), || {
        (env.task(&id)["status"] == json!("aborted")).then_some(())
    });
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(worker.wait_exit(Duration::from_secs(30)).success());

    // With no lease held any more, the copy goes ahead.
    let report = copy_json(&env, &from, &to, &[]);
    assert_eq!(report["copied"], json!(2), "{report}");
    assert_eq!(
        json_at(&env, &to, &["get", &id]),
        json_at(&env, &from, &["get", &id])
    );
}

#[test]
fn copy_refuses_the_same_store_and_a_missing_source() {
    let env = Env::new();
    env.enqueue(&["--type", "x"]);
    let from = env.url();
    let before = env.all_tasks();

    // The same URL, and the same file written another way.
    let out = copy(&env, &from, &from, &[]);
    assert_one_error(&out, 2, "name the same store");
    let dir = env.dir.path().display();
    let other_spelling = format!("sqlite://{dir}/./offload.db?durability=full");
    let out = copy(&env, &from, &other_spelling, &[]);
    assert_one_error(&out, 2, "name the same store");
    // A relative spelling from the working directory (the temp dir).
    let out = copy(&env, "sqlite://offload.db", &from, &[]);
    assert_one_error(&out, 2, "name the same store");
    assert_eq!(env.all_tasks(), before);

    // A source that does not exist is not created, nor is the destination.
    let missing = env.path("missing.db");
    let dest = env.path("copy.db");
    let out = copy(
        &env,
        &format!("sqlite://{}", missing.display()),
        &format!("sqlite://{}", dest.display()),
        &[],
    );
    assert_one_error(&out, 1, "does not exist");
    assert!(!missing.exists());
    assert!(!dest.exists());

    // Flags are required and checked by clap.
    let out = env
        .bare(&["store", "copy", "--from", &from])
        .output()
        .unwrap();
    assert_one_error(&out, 2, "--to");
}
