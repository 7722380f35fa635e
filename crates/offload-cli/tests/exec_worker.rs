//! `offload worker` with exec runners from offload.toml: output, progress,
//! environment, exit codes, `enqueue --wait`, and no orphan processes after
//! an abort or a timeout.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Env, alive, assert_one_error, read_pids, sh_runner, wait_for};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(30);

fn status(env: &Env, id: &str) -> String {
    env.task(id)["status"].as_str().unwrap().to_owned()
}

fn wait_status(env: &Env, id: &str, wanted: &str) -> Value {
    wait_for(&format!("task {id} to be {wanted}"), LIMIT, || {
        let task = env.task(id);
        (task["status"] == json!(wanted)).then_some(task)
    })
}

#[test]
fn exec_output_progress_and_wait() {
    let mut config = sh_runner(
        "echo",
        "echo 'progress: 50 halfway' >&2; echo 'some log line' >&2; cat",
        "",
    );
    config.push_str(&sh_runner(
        "env",
        r#"printf '{"id":"%s","name":"%s","attempt":%s,"input":%s}' "$OFFLOAD_TASK_ID" "$OFFLOAD_TASK_NAME" "$OFFLOAD_ATTEMPT" "$OFFLOAD_INPUT""#,
        "",
    ));
    config.push_str(&sh_runner("text", "echo hello world", ""));
    config.push_str(&sh_runner("empty", "true", ""));
    config.push_str("[runners.pushed]\nhttp = \"http://127.0.0.1:9/x\"\n");
    let env = Env::with_config(&config);
    let worker = env.worker(&["--concurrency", "4"]);

    // --wait prints the output
    let out = env.ok(&[
        "enqueue",
        "--type",
        "echo",
        "--data",
        r#"{"x": [1, 2]}"#,
        "--wait",
        "30s",
    ]);
    let output: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(output, json!({"x": [1, 2]}));

    let id = env.enqueue(&["--type", "echo", "--data", r#"{"y": 3}"#]);
    let task = wait_status(&env, &id, "success");
    assert_eq!(task["output"], json!({"y": 3}));
    assert_eq!(task["progress"]["percent"], json!(50));
    assert_eq!(task["progress"]["message"], json!("halfway"));
    let attempts = task["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["outcome"], json!("success"));
    let out = env.ok(&["result", &id]);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"y": 3})
    );

    let id = env.enqueue(&["--type", "env", "--data", r#"{"k": "v"}"#]);
    let task = wait_status(&env, &id, "success");
    assert_eq!(
        task["output"],
        json!({"id": id, "name": "env", "attempt": 1, "input": {"k": "v"}})
    );

    let id = env.enqueue(&["--type", "text"]);
    assert_eq!(
        wait_status(&env, &id, "success")["output"],
        json!("hello world")
    );
    let id = env.enqueue(&["--type", "empty"]);
    assert_eq!(wait_status(&env, &id, "success")["output"], Value::Null);

    // --json --wait prints the whole task
    let task = env.json(&["enqueue", "--type", "echo", "--data", "7", "--wait"]);
    assert_eq!(task["status"], json!("success"));
    assert_eq!(task["output"], json!(7));

    let log = worker.log_text();
    assert!(log.contains("offload worker:"), "{log}");
    // the http runner runs beside the exec runners
    assert!(
        log.contains("5 runner(s) [echo, empty, env, pushed, text]"),
        "{log}"
    );
}

#[test]
fn exec_failures() {
    let mut config = sh_runner("fails", "echo 'it broke' >&2; exit 3", "");
    config.push_str(&sh_runner(
        "bad_input",
        "echo 'bad input' >&2; exit 65",
        "max_attempts = 3",
    ));
    config.push_str(
        "[runners.missing]\nexec = [\"offload-test-no-such-command\"]\nmax_attempts = 3\n",
    );
    let env = Env::with_config(&config);
    let _worker = env.worker(&[]);

    let id = env.enqueue(&["--type", "fails", "--max-attempts", "1"]);
    let task = wait_status(&env, &id, "failed");
    assert_eq!(task["error"]["kind"], json!("exit"));
    let message = task["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("code 3") && message.contains("it broke"),
        "{message}"
    );
    let out = env.run(&["result", &id]);
    assert_one_error(&out, 1, "it broke");

    // --wait on a failing task: exit 1 with the error
    let out = env.run(&[
        "enqueue",
        "--type",
        "fails",
        "--max-attempts",
        "1",
        "--wait",
    ]);
    assert_one_error(&out, 1, "failed");

    // exit 65 is not retried
    let id = env.enqueue(&["--type", "bad_input"]);
    let task = wait_status(&env, &id, "failed");
    assert_eq!(task["attempt"], json!(1));
    assert_eq!(task["max_attempts"], json!(3));

    // a command that does not exist fails at once, naming it
    let id = env.enqueue(&["--type", "missing"]);
    let task = wait_status(&env, &id, "failed");
    assert_eq!(task["attempt"], json!(1));
    assert_eq!(task["error"]["kind"], json!("spawn"));
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("offload-test-no-such-command"),
        "{task}"
    );
}

#[test]
fn retry_then_success() {
    // fails on attempt 1, succeeds on attempt 2
    let config = sh_runner(
        "flaky",
        r#"if [ "$OFFLOAD_ATTEMPT" = 1 ]; then echo first >&2; exit 1; fi; echo '"ok"'"#,
        "",
    );
    let env = Env::with_config(&config);
    let _worker = env.worker(&[]);
    let out = env.ok(&["enqueue", "--type", "flaky", "--wait", "60s"]);
    assert_eq!(out.trim(), "\"ok\"");
    let id = env.json(&["list"])["tasks"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let task = env.task(&id);
    assert_eq!(task["attempt"], json!(2));
    let outcomes: Vec<&Value> = task["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["outcome"])
        .collect();
    assert_eq!(outcomes, vec![&json!("error"), &json!("success")]);
}

/// A script that writes its shell's pid and two background sleeps' pids to
/// `pids`, then waits: a process group of three.
fn sleeper(env: &Env, name: &str) -> (String, std::path::PathBuf) {
    let pids = env.path(&format!("{name}.pids"));
    let script = format!(
        "echo $$ >> {p}; sleep 300 & echo $! >> {p}; sleep 300 & echo $! >> {p}; wait",
        p = pids.display()
    );
    (sh_runner(name, &script, ""), pids)
}

fn assert_group_gone(pids: &[i32]) {
    wait_for("the process group to be gone", LIMIT, || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    });
}

/// Kills what the scripts left behind if the test fails half-way.
struct Reap(Vec<i32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in &self.0 {
            if alive(*pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

#[test]
fn abort_kills_the_process_group() {
    let env = Env::new();
    let (config, pids_file) = sleeper(&env, "sleepy");
    std::fs::write(&env.config, config).unwrap();
    let _worker = env.worker(&["--kill-grace", "2s"]);

    let id = env.enqueue(&["--type", "sleepy"]);
    let pids = wait_for("the script to start", LIMIT, || read_pids(&pids_file, 3));
    let _reap = Reap(pids.clone());
    assert!(pids.iter().all(|p| alive(*p)));
    assert_eq!(status(&env, &id), "running");

    let out = env.ok(&["abort", &id, "--reason", "enough"]);
    assert!(out.contains("asked it to stop"), "{out}");
    let task = wait_status(&env, &id, "aborted");
    assert_eq!(task["error"]["kind"], json!("aborted"));
    assert_group_gone(&pids);
}

#[test]
fn timeout_kills_the_process_group() {
    let env = Env::new();
    let (config, pids_file) = sleeper(&env, "slow");
    std::fs::write(&env.config, config).unwrap();
    let _worker = env.worker(&["--kill-grace", "1s"]);

    let id = env.enqueue(&["--type", "slow", "--timeout", "3s", "--max-attempts", "1"]);
    let task = wait_status(&env, &id, "failed");
    assert_eq!(task["error"]["kind"], json!("timeout"));
    // the script got at least as far as starting a background child
    let pids = read_pids(&pids_file, 2).expect("the script did not start its children");
    let _reap = Reap(pids.clone());
    assert_group_gone(&pids);
}

#[test]
fn worker_without_runners_is_an_error() {
    let env = Env::with_config("[worker]\nconcurrency = 2\n");
    let out = env.run(&["worker"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with("error: no runners configured"), "{stderr}");
    assert!(!env.db.exists(), "the store was created before the refusal");
}
