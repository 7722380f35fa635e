//! Bad input gets one clear `error:` line on stderr, a non-zero exit code,
//! and leaves the database unchanged.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Env, assert_one_error};
use serde_json::Value;

/// A database with two tasks in it, and its full state.
fn seeded() -> (Env, Vec<Value>) {
    let env = Env::new();
    env.enqueue(&["--type", "a", "--data", r#"{"n": 1}"#]);
    env.enqueue(&["--type", "b", "--priority", "3", "--tag", "x"]);
    let state = env.all_tasks();
    assert_eq!(state.len(), 2);
    (env, state)
}

#[test]
fn invalid_json_in_data() {
    let (env, before) = seeded();
    let out = env.run(&["enqueue", "--type", "a", "--data", "{not json"]);
    let line = assert_one_error(&out, 2, "--data is not valid JSON:");
    assert!(line.contains("line 1 column 2"), "{line}");
    let out = env.run(&["enqueue", "--type", "a", "--metadata", "[1"]);
    assert_one_error(&out, 2, "--metadata is not valid JSON");
    assert_eq!(env.all_tasks(), before);
}

#[test]
fn invalid_options_name_the_field() {
    let (env, before) = seeded();
    let out = env.run(&["enqueue", "--type", "a b"]);
    assert_one_error(&out, 2, "name");
    let out = env.run(&["enqueue", "--type", "a", "--max-attempts", "0"]);
    assert_one_error(&out, 2, "max_attempts");
    let out = env.run(&["enqueue", "--type", "a", "--delay", "soon"]);
    assert_one_error(&out, 2, "soon");
    let out = env.run(&["enqueue", "--type", "a", "--metadata", "[1]"]);
    assert_one_error(&out, 2, "metadata");
    assert_eq!(env.all_tasks(), before);
}

#[test]
fn malformed_line_in_file_enqueues_nothing() {
    let (env, before) = seeded();
    let file = env.path("tasks.jsonl");
    std::fs::write(
        &file,
        "{\"name\": \"a\", \"input\": {\"i\": 1}}\n\
         {\"type\": \"b\", \"data\": {\"i\": 2}}\n\
         {\"name\": \"c\", \"input\": {\"i\": 3}\n\
         {\"name\": \"d\"}\n",
    )
    .unwrap();
    let out = env.run(&["enqueue", "--file", file.to_str().unwrap()]);
    let line = assert_one_error(&out, 2, "line 3");
    assert!(line.contains("tasks.jsonl line 3:"), "{line}");
    assert_eq!(env.all_tasks(), before);

    // unknown field, with a suggestion
    std::fs::write(
        &file,
        "{\"name\": \"a\"}\n{\"name\": \"a\", \"priorty\": 2}\n",
    )
    .unwrap();
    let out = env.run(&["enqueue", "--file", file.to_str().unwrap()]);
    let line = assert_one_error(&out, 2, "line 2");
    assert!(line.contains("did you mean `priority`?"), "{line}");

    // missing name
    std::fs::write(&file, "{\"input\": {}}\n").unwrap();
    let out = env.run(&["enqueue", "--file", file.to_str().unwrap()]);
    assert_one_error(&out, 2, "line 1: missing \"name\"");
    assert_eq!(env.all_tasks(), before);

    // a file that does not exist
    let out = env.run(&[
        "enqueue",
        "--file",
        env.path("nope.jsonl").to_str().unwrap(),
    ]);
    assert_one_error(&out, 2, "nope.jsonl");
    assert_eq!(env.all_tasks(), before);
}

#[test]
fn unknown_id() {
    let (env, before) = seeded();
    let id = "0190f5a4-7c1e-7b3a-9a53-2f1c3c6f8e21";
    for cmd in ["get", "abort", "retry", "delete", "result"] {
        let out = env.run(&[cmd, id]);
        let line = assert_one_error(&out, 1, &format!("task {id} not found"));
        assert_eq!(line, format!("error: task {id} not found"), "{cmd}");
    }
    assert_eq!(env.all_tasks(), before);
}

#[test]
fn malformed_id() {
    let (env, before) = seeded();
    for cmd in ["get", "abort", "retry", "delete", "result"] {
        let out = env.run(&[cmd, "not-an-id"]);
        assert_one_error(&out, 2, "invalid task id \"not-an-id\"");
    }
    assert_eq!(env.all_tasks(), before);
}

#[test]
fn malformed_config() {
    let (env, before) = seeded();
    std::fs::write(&env.config, "[worker]\nconcurrency = 4\nqueues = [\"a\"\n").unwrap();
    let out = env.run(&["enqueue", "--type", "a"]);
    let line = assert_one_error(&out, 2, "offload.toml: line ");
    assert!(line.contains("line 3"), "{line}");

    std::fs::write(&env.config, "[worker]\nconcurency = 4\n").unwrap();
    let out = env.run(&["list"]);
    let line = assert_one_error(&out, 2, "unknown key `concurency`");
    assert!(line.contains("line 2, column 1"), "{line}");
    assert!(line.contains("did you mean `concurrency`?"), "{line}");

    std::fs::write(
        &env.config,
        "[runners.x]\nexec = [\"true\"]\ntimeout = \"soon\"\n",
    )
    .unwrap();
    let out = env.run(&["enqueue", "--type", "x"]);
    assert_one_error(&out, 2, "soon");

    std::fs::write(&env.config, "").unwrap();
    assert_eq!(env.all_tasks(), before);
}

#[test]
fn missing_explicit_config_is_an_error_but_default_is_not() {
    let (env, _) = seeded();
    let out = env
        .bare(&["list", "--database-url", &env.url(), "--config"])
        .arg(env.path("missing.toml"))
        .output()
        .unwrap();
    assert_one_error(&out, 2, "missing.toml");

    // no --config and no ./offload.toml in the working directory: fine
    let other = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["list", "--database-url", &env.url()])
        .current_dir(other.path())
        .env_remove("OFFLOAD_CONFIG")
        .env_remove("OFFLOAD_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn corrupt_database_file() {
    let env = Env::new();
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| u8::try_from(i.wrapping_mul(7919) % 251).unwrap())
        .collect();
    std::fs::write(&env.db, &garbage).unwrap();
    for args in [
        vec!["list"],
        vec!["enqueue", "--type", "a"],
        vec!["get", "0190f5a4-7c1e-7b3a-9a53-2f1c3c6f8e21"],
    ] {
        let out = env.run(&args);
        let line = assert_one_error(&out, 1, "cannot open database");
        assert!(
            line.contains("not an offload store") || line.contains("not a database"),
            "{line}"
        );
        assert_eq!(
            std::fs::read(&env.db).unwrap(),
            garbage,
            "{args:?} changed the file"
        );
    }
}

#[test]
fn unreachable_database() {
    let env = Env::new();
    let missing = env.dir.path().join("no").join("such").join("dir");
    let url = format!("sqlite://{}", missing.join("offload.db").display());
    let out = env
        .bare(&["list", "--database-url", &url])
        .output()
        .unwrap();
    assert_one_error(&out, 1, "cannot open database");
    assert!(
        !env.dir.path().join("no").exists(),
        "created the missing directory"
    );

    let out = env
        .bare(&[
            "enqueue",
            "--type",
            "a",
            "--database-url",
            "postgres://127.0.0.1:1/nowhere",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn usage_errors_are_one_line() {
    let env = Env::new();
    let out = env.run(&["enqueue"]);
    assert_one_error(&out, 2, "--type");
    let out = env.run(&["list", "--status", "done"]);
    assert_one_error(&out, 2, "unknown status \"done\"");
    let out = env.run(&["enqueue", "--type", "a", "--wait", "--file", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!env.db.exists(), "a usage error created the database");
}

#[test]
fn durations_past_a_hundred_years_are_refused() {
    let (env, before) = seeded();
    let id = before[0]["id"].as_str().unwrap().to_owned();
    let out = env.run(&["result", &id, "--wait", "1e19"]);
    assert_one_error(&out, 2, "100 years");
    let out = env.run(&["enqueue", "--type", "a", "--timeout", "400000000000y"]);
    assert_one_error(&out, 2, "100 years");
    let out = env.run(&["enqueue", "--type", "a", "--delay", "1e19"]);
    assert_one_error(&out, 2, "100 years");
    assert_eq!(env.all_tasks(), before);
}
