//! Crash and shutdown of real worker processes: SIGKILL mid-run loses
//! nothing and re-runs at most `concurrency` tasks; SIGTERM leaves no task
//! `running`.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Env, sh_runner, wait_for};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// These tests load both cores; run them one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn count(counts: &Value, status: &str) -> u64 {
    counts[status].as_u64().unwrap_or(0)
}

fn enqueue_many(env: &Env, name: &str, n: usize) {
    let file = env.path("tasks.jsonl");
    let text: String = (0..n)
        .map(|i| format!("{{\"name\": \"{name}\", \"input\": {{\"i\": {i}}}}}\n"))
        .collect();
    std::fs::write(&file, text).unwrap();
    let out = env.ok(&["enqueue", "--file", file.to_str().unwrap()]);
    assert_eq!(out.trim(), format!("enqueued {n} tasks"));
}

/// Runs `tasks` quick tasks, SIGKILLs the first worker after a third,
/// finishes with a second worker; checks nothing is lost and at most
/// `concurrency` tasks ran twice.
fn kill_and_rescue(tasks: u64, lease: Option<&str>) {
    const CONCURRENCY: u64 = 8;
    let env = Env::with_config(&sh_runner("quick", "sleep 0.005; echo '{}'", ""));
    enqueue_many(&env, "quick", usize::try_from(tasks).unwrap());
    let started = Instant::now();
    let mut args = vec!["--concurrency", "8"];
    if let Some(lease) = lease {
        args.extend(["--lease", lease]);
    }

    let mut first = env.worker(&args);
    wait_for(
        "a third of the tasks to finish",
        Duration::from_secs(60),
        || (count(&env.counts(), "success") >= tasks / 3).then_some(()),
    );
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(10));
    let at_kill = env.counts();
    assert!(
        count(&at_kill, "success") < tasks,
        "finished before the kill: {at_kill}"
    );

    let second = env.worker(&args);
    let done = wait_for("every task to succeed", Duration::from_secs(120), || {
        let c = env.counts();
        (count(&c, "success") == tasks).then_some(c)
    });
    drop(second);
    eprintln!(
        "kill test ({tasks} tasks, lease {lease:?}): {:?}; at kill {at_kill}",
        started.elapsed()
    );

    let total: u64 = done
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, tasks, "tasks lost or added: {done}");
    let all = env.all_tasks();
    assert_eq!(u64::try_from(all.len()).unwrap(), tasks);
    assert!(all.iter().all(|t| t["status"] == json!("success")));
    let mut inputs: Vec<u64> = all
        .iter()
        .map(|t| t["input"]["i"].as_u64().unwrap())
        .collect();
    inputs.sort_unstable();
    assert_eq!(inputs, (0..tasks).collect::<Vec<u64>>());
    let ran_twice: Vec<&Value> = all
        .iter()
        .filter(|t| t["attempt"].as_u64().unwrap() > 1)
        .collect();
    assert!(
        u64::try_from(ran_twice.len()).unwrap() <= CONCURRENCY,
        "{} tasks ran more than once (at most {CONCURRENCY} were running at the kill)",
        ran_twice.len()
    );
    for t in &ran_twice {
        let id = t["id"].as_str().unwrap();
        let attempts = env.task(id)["attempts"].clone();
        let outcomes: Vec<&Value> = attempts
            .as_array()
            .unwrap()
            .iter()
            .map(|a| &a["outcome"])
            .collect();
        assert_eq!(outcomes.last(), Some(&&json!("success")), "{attempts}");
        assert!(outcomes.contains(&&json!("lease_expired")), "{attempts}");
    }
}

#[test]
fn sigkill_mid_run_loses_nothing() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    kill_and_rescue(2000, Some("2s"));
}

#[test]
fn sigkill_with_the_default_lease() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    kill_and_rescue(300, None);
}

#[test]
fn sigterm_leaves_nothing_running() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::with_config(&sh_runner("slowish", "sleep 1.5; echo '{}'", ""));
    enqueue_many(&env, "slowish", 12);
    let mut worker = env.worker(&["--concurrency", "4"]);
    wait_for("tasks to run", Duration::from_secs(30), || {
        (count(&env.counts(), "running") >= 4).then_some(())
    });
    worker.signal(Signal::SIGTERM);
    let status = worker.wait_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status:?}; log: {}",
        worker.log_text()
    );
    let counts = env.counts();
    assert_eq!(count(&counts, "running"), 0, "{counts}");
    // the running ones were allowed to finish; the rest wait untouched
    assert!(count(&counts, "success") >= 4, "{counts}");
    assert_eq!(
        count(&counts, "success") + count(&counts, "pending"),
        12,
        "{counts}"
    );
    for t in env.all_tasks() {
        if t["status"] == json!("pending") {
            assert_eq!(t["attempt"], json!(0), "{t}");
        }
    }
}

#[test]
fn sigterm_past_the_grace_releases_running_tasks() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::with_config(&sh_runner("long", "sleep 30; echo '{}'", ""));
    enqueue_many(&env, "long", 3);
    let mut worker = env.worker(&[
        "--concurrency",
        "3",
        "--shutdown-grace",
        "300ms",
        "--kill-grace",
        "1s",
    ]);
    wait_for("tasks to run", Duration::from_secs(30), || {
        (count(&env.counts(), "running") == 3).then_some(())
    });
    worker.signal(Signal::SIGTERM);
    let status = worker.wait_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status:?}; log: {}",
        worker.log_text()
    );
    let counts = env.counts();
    assert_eq!(count(&counts, "running"), 0, "{counts}");
    assert_eq!(count(&counts, "pending"), 3, "{counts}");
    for t in env.all_tasks() {
        // released at shutdown: the attempt is not counted
        assert_eq!(t["attempt"], json!(0), "{t}");
    }
}

#[test]
fn second_signal_forces_exit_and_kills_commands() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    let pids_file = env.path("pids");
    let script = format!(
        "echo $$ >> {p}; sleep 300 & echo $! >> {p}; wait",
        p = pids_file.display()
    );
    std::fs::write(&env.config, sh_runner("stuck", &script, "")).unwrap();
    let mut worker = env.worker(&["--shutdown-grace", "5m"]);
    env.enqueue(&["--type", "stuck"]);
    let pids = wait_for("the command to start", Duration::from_secs(30), || {
        common::read_pids(&pids_file, 2)
    });
    worker.signal(Signal::SIGTERM);
    wait_for(
        "the graceful shutdown to start",
        Duration::from_secs(30),
        || {
            worker
                .log_text()
                .contains("shutting down gracefully")
                .then_some(())
        },
    );
    worker.signal(Signal::SIGINT);
    let status = worker.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "log: {}", worker.log_text());
    wait_for(
        "the command's group to be gone",
        Duration::from_secs(30),
        || pids.iter().all(|p| !common::alive(*p)).then_some(()),
    );
}
