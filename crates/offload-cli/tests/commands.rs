//! The management commands against a real SQLite file: enqueue (flags and
//! file), list, get, result, abort, retry, delete, purge, monitor --once.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::process::Stdio;

use common::{Env, assert_one_error};
use serde_json::{Value, json};

#[test]
fn enqueue_then_get_and_list_round_trip() {
    let env = Env::new();
    let id = env.enqueue(&[
        "--type",
        "research",
        "--data",
        r#"{"topic": "AI agents"}"#,
        "--queue",
        "slow",
        "--priority",
        "-4",
        "--max-attempts",
        "5",
        "--timeout",
        "2m",
        "--tag",
        "a",
        "--tag",
        "b",
        "--metadata",
        r#"{"user": 7}"#,
    ]);
    assert_eq!(id.len(), 36, "{id}");
    let task = env.task(&id);
    assert_eq!(task["id"], json!(id));
    assert_eq!(task["name"], json!("research"));
    assert_eq!(task["queue"], json!("slow"));
    assert_eq!(task["input"], json!({"topic": "AI agents"}));
    assert_eq!(task["status"], json!("pending"));
    assert_eq!(task["priority"], json!(-4));
    assert_eq!(task["max_attempts"], json!(5));
    assert_eq!(task["attempt"], json!(0));
    assert_eq!(task["tags"], json!(["a", "b"]));
    assert_eq!(task["metadata"], json!({"user": 7}));
    assert_eq!(task["attempts"], json!([]));
    assert!(task["timeout"].as_str().unwrap().contains('2'), "{task}");

    let page = env.json(&["list"]);
    let tasks = page["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    let mut from_get = task.clone();
    from_get.as_object_mut().unwrap().remove("attempts");
    // get explains what a waiting task waits for; list does not
    assert!(
        from_get
            .as_object_mut()
            .unwrap()
            .remove("waiting_for")
            .is_some()
    );
    assert_eq!(tasks[0], from_get);
    assert_eq!(page["next_cursor"], Value::Null);

    // --name is the same as --type; --input the same as --data; default input {}
    let id2 = env.enqueue(&["--name", "other", "--input", "[1, 2]"]);
    assert_eq!(env.task(&id2)["input"], json!([1, 2]));
    let id3 = env.enqueue(&["--type", "other"]);
    assert_eq!(env.task(&id3)["input"], json!({}));

    // the table shows the task
    let table = env.ok(&["list"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains(&id) && table.contains("research") && table.contains("0/5"),
        "{table}"
    );
    let text = env.ok(&["get", &id]);
    assert!(
        text.contains("status") && text.contains("pending"),
        "{text}"
    );
    assert!(text.contains("no attempts yet"), "{text}");
}

#[test]
fn enqueue_json_delay_and_run_at() {
    let env = Env::new();
    let task = env.json(&["enqueue", "--type", "later", "--delay", "1h"]);
    assert_eq!(task["status"], json!("scheduled"));
    let task = env.json(&[
        "enqueue",
        "--type",
        "later",
        "--run-at",
        "2999-01-01T00:00:00Z",
    ]);
    assert_eq!(task["status"], json!("scheduled"));
    assert!(
        task["run_at"].as_str().unwrap().starts_with("2999-01-01"),
        "{task}"
    );
}

#[test]
fn runner_defaults_from_offload_toml() {
    let env = Env::with_config(
        "[runners.resize]\nexec = [\"true\"]\ntimeout = \"2m\"\nmax_attempts = 7\nqueue = \"images\"\n",
    );
    let id = env.enqueue(&["--type", "resize"]);
    let task = env.task(&id);
    assert_eq!(task["max_attempts"], json!(7));
    assert_eq!(task["queue"], json!("images"));
    assert!(!task["timeout"].is_null(), "{task}");
    // flags win over the file
    let id = env.enqueue(&["--type", "resize", "--max-attempts", "2", "--queue", "q"]);
    let task = env.task(&id);
    assert_eq!(task["max_attempts"], json!(2));
    assert_eq!(task["queue"], json!("q"));
}

#[test]
fn database_url_from_config_file_and_env() {
    let env = Env::new();
    let db = env.path("from-config.db");
    std::fs::write(
        &env.config,
        format!("database_url = \"sqlite://{}\"\n", db.display()),
    )
    .unwrap();
    let out = env
        .bare(&["enqueue", "--type", "a", "--config"])
        .arg(&env.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.exists());
    assert!(!env.db.exists());

    // OFFLOAD_DATABASE_URL overrides the file
    let out = env
        .bare(&["enqueue", "--type", "a", "--config"])
        .arg(&env.config)
        .env("OFFLOAD_DATABASE_URL", env.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.db.exists());
}

#[test]
fn enqueue_file_of_5000_lines() {
    let env = Env::new();
    let file = env.path("tasks.jsonl");
    let mut text = String::new();
    for i in 0..5000 {
        if i % 2 == 0 {
            text.push_str(&format!(
                "{{\"name\": \"bulk\", \"input\": {{\"i\": {i}}}}}\n"
            ));
        } else {
            text.push_str(&format!(
                "{{\"type\": \"bulk\", \"data\": {{\"i\": {i}}}, \"priority\": 1, \"queue\": \"q\", \"tags\": [\"t\"]}}\n"
            ));
        }
    }
    std::fs::write(&file, text).unwrap();
    let out = env.ok(&["enqueue", "--file", file.to_str().unwrap()]);
    assert_eq!(out.trim(), "enqueued 5000 tasks");
    let counts = env.counts();
    assert_eq!(counts["pending"], json!(5000), "{counts}");
    let tasks = env.all_tasks();
    assert_eq!(tasks.len(), 5000);
    let mut seen: Vec<i64> = tasks
        .iter()
        .map(|t| t["input"]["i"].as_i64().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..5000).collect::<Vec<i64>>());
    assert_eq!(
        tasks.iter().filter(|t| t["queue"] == json!("q")).count(),
        2500
    );
}

#[test]
fn enqueue_file_from_stdin_with_json_output() {
    let env = Env::new();
    let mut child = env
        .cmd(&["enqueue", "--file", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"name\": \"a\"}\n\n{\"name\": \"b\", \"delay\": \"1h\"}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["count"], json!(2));
    let ids = v["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    let b = env.task(ids[1].as_str().unwrap());
    assert_eq!(b["name"], json!("b"));
    assert_eq!(b["status"], json!("scheduled"));
}

#[test]
fn list_filters_and_pages() {
    let env = Env::new();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(env.enqueue(&["--type", if i % 2 == 0 { "even" } else { "odd" }]));
    }
    env.ok(&["abort", &ids[0]]);
    let page = env.json(&["list", "--name", "even"]);
    assert_eq!(page["tasks"].as_array().unwrap().len(), 3);
    let page = env.json(&["list", "--status", "aborted,pending", "--name", "even"]);
    assert_eq!(page["tasks"].as_array().unwrap().len(), 3);
    let page = env.json(&["list", "--status", "aborted"]);
    assert_eq!(page["tasks"][0]["id"], json!(ids[0]));

    // pages of 2, newest first, until no cursor
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut args = vec!["list", "--limit", "2"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let page = env.json(&args);
        for t in page["tasks"].as_array().unwrap() {
            seen.push(t["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let text = env.ok(&["list", "--limit", "2"]);
    assert!(text.contains("--cursor"), "{text}");
}

#[test]
fn result_exit_codes() {
    let env = Env::new();
    let id = env.enqueue(&["--type", "a"]);
    let out = env.run(&["result", &id]);
    assert_one_error(&out, 3, "has not finished: it is pending");
    let out = env.run(&["result", &id, "--wait", "200ms"]);
    assert_one_error(&out, 4, "did not finish within 200ms");
    env.ok(&["abort", &id, "--reason", "changed my mind"]);
    let out = env.run(&["result", &id]);
    let line = assert_one_error(&out, 1, "aborted");
    assert!(line.contains("changed my mind"), "{line}");
    let out = env.run(&["result", &id, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], json!("aborted"));
    assert_eq!(v["error"]["message"], json!("changed my mind"));
}

#[test]
fn abort_retry_delete() {
    let env = Env::new();
    let id = env.enqueue(&["--type", "a"]);
    let task = env.json(&["abort", &id]);
    assert_eq!(task["status"], json!("aborted"));
    // aborting a finished task is refused and changes nothing
    let out = env.run(&["abort", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim().lines().count(),
        1
    );
    let task = env.json(&["retry", &id]);
    assert_eq!(task["status"], json!("pending"));
    let out = env.run(&["retry", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(env.json(&["delete", &id])["deleted"], json!(id));
    let out = env.run(&["get", &id]);
    assert_one_error(&out, 1, "not found");
}

#[test]
fn purge_refuses_pending_and_needs_a_filter() {
    let env = Env::new();
    let keep = env.enqueue(&["--type", "a"]);
    let gone = env.enqueue(&["--type", "b"]);
    env.ok(&["abort", &gone]);
    let before = env.all_tasks();

    let out = env.run(&["purge", "--status", "pending"]);
    assert_one_error(&out, 2, "`pending` is not finished");
    let out = env.run(&["purge", "--status", "failed,running"]);
    assert_one_error(&out, 2, "`running` is not finished");
    let out = env.run(&["purge"]);
    assert_one_error(&out, 2, "--all");
    assert_eq!(env.all_tasks(), before);

    // a filter that matches nothing terminal
    assert_eq!(
        env.ok(&["purge", "--status", "failed"]).trim(),
        "purged 0 tasks"
    );
    // old enough? not yet
    assert_eq!(
        env.json(&["purge", "--status", "aborted", "--older-than", "7d"])["purged"],
        json!(0)
    );
    assert_eq!(
        env.json(&["purge", "--status", "aborted"])["purged"],
        json!(1)
    );
    let left = env.all_tasks();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], json!(keep));
    assert_eq!(env.json(&["purge", "--all"])["purged"], json!(0));
    assert_eq!(env.all_tasks().len(), 1);
}

#[test]
fn monitor_once_snapshot() {
    let env = Env::new();
    env.enqueue(&["--type", "a"]);
    env.enqueue(&["--type", "a"]);
    let id = env.enqueue(&["--type", "b"]);
    env.ok(&["abort", &id]);
    let text = env.ok(&["monitor", "--once"]);
    assert!(text.contains("STATUS"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("pending") && l.trim_end().ends_with('2')),
        "{text}"
    );
    assert!(text.contains("running: 0"), "{text}");
    let snap = env.json(&["monitor", "--once"]);
    assert_eq!(snap["by_status"]["pending"], json!(2));
    assert_eq!(snap["by_status"]["aborted"], json!(1));
    assert_eq!(snap["by_name"]["a"]["pending"], json!(2));
    // no terminal: the live view refuses with one line
    let out = env.run(&["monitor"]);
    assert_one_error(&out, 2, "--once");
}

#[test]
fn help_documents_exit_codes() {
    let env = Env::new();
    let top = env.ok(&["--help"]);
    assert!(top.contains("Exit codes:"), "{top}");
    let result = env.ok(&["result", "--help"]);
    assert!(result.contains("3  the task has not finished"), "{result}");
}
