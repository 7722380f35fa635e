//! The CLI's task commands through a running `offload serve` (`--server`,
//! `--token`): the same output and exit codes as on the store itself, the
//! server's refusals as one line, and the audit log naming the token.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Env, sh_runner};
use serde_json::{Value, json};

/// `echo` prints its input; `fail` exits 1; `slow` reports progress and
/// sleeps; `idle` has no runner (its tasks wait).
fn config() -> String {
    format!(
        "{}{}{}",
        sh_runner("echo", "cat", ""),
        sh_runner("fail", "echo broken >&2; exit 1", "max_attempts = 1"),
        sh_runner(
            "slow",
            "echo 'progress: 30 warming up' >&2; sleep 1; cat",
            ""
        ),
    )
}

struct Remote<'a> {
    env: &'a Env,
    base: String,
    token: String,
}

impl Remote<'_> {
    fn args<'b>(&'b self, args: &[&'b str]) -> Vec<&'b str> {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--server", &self.base, "--token", &self.token]);
        all
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.env.run(&self.args(args))
    }

    fn ok(&self, args: &[&str]) -> String {
        self.env.ok(&self.args(args))
    }

    fn json(&self, args: &[&str]) -> Value {
        self.env.json(&self.args(args))
    }
}

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap()
}

#[test]
fn task_commands_work_through_a_server() {
    let env = Env::with_config(&config());
    let admin = env.json(&["tokens", "create", "--role", "admin"]);
    let read = env.json(&["tokens", "create", "--role", "read"]);
    let (_server, base) = env.serve(&["--concurrency", "4"]);
    let remote = Remote {
        env: &env,
        base: base.clone(),
        token: admin["token"].as_str().unwrap().to_owned(),
    };

    // enqueue, wait, result, get, list
    let out = remote.ok(&[
        "enqueue",
        "--type",
        "echo",
        "--data",
        r#"{"n": 1}"#,
        "--wait",
        "30s",
    ]);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"n": 1})
    );
    let id = remote
        .ok(&["enqueue", "--type", "echo", "--data", "2"])
        .trim()
        .to_owned();
    let result = remote.json(&["result", &id, "--wait", "30s"]);
    assert_eq!(result["status"], json!("success"), "{result}");
    assert_eq!(result["output"], json!(2));
    let got = remote.json(&["get", &id]);
    assert_eq!(got["id"], json!(id));
    assert_eq!(got["attempts"][0]["outcome"], json!("success"), "{got}");
    let text = remote.ok(&["get", &id]);
    assert!(text.contains("success"), "{text}");
    let listed = remote.json(&["list", "--name", "echo"]);
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 2, "{listed}");
    let out = remote.run(&["abort", &id]);
    common::assert_one_error(&out, 1, "success");

    // bulk from a file
    let file = env.path("tasks.jsonl");
    let lines: String = (0..450)
        .map(|i| format!("{{\"type\": \"idle\", \"data\": {i}}}\n"))
        .collect();
    std::fs::write(&file, lines).unwrap();
    let out = remote.ok(&["enqueue", "--file", file.to_str().unwrap()]);
    assert!(out.contains("enqueued 450 tasks"), "{out}");
    let idle = remote.json(&["list", "--name", "idle", "--limit", "1000"]);
    assert_eq!(idle["tasks"].as_array().unwrap().len(), 450);

    // watch: success 0 with progress shown, failure 1, abort 5
    let slow = remote
        .ok(&["enqueue", "--type", "slow", "--data", "\"s\""])
        .trim()
        .to_owned();
    let watched = remote.run(&["watch", &slow]);
    let stdout = String::from_utf8_lossy(&watched.stdout);
    assert_eq!(code(&watched), 0, "{stdout}");
    assert!(stdout.contains("progress 30% warming up"), "{stdout}");
    assert!(stdout.contains("\"s\""), "{stdout}");
    let bad = remote.ok(&["enqueue", "--type", "fail"]).trim().to_owned();
    let watched = remote.run(&["watch", &bad]);
    assert_eq!(code(&watched), 1);
    assert!(String::from_utf8_lossy(&watched.stderr).contains("failed"));
    let waiting = remote.ok(&["enqueue", "--type", "idle"]).trim().to_owned();
    let out = remote.ok(&["abort", &waiting, "--reason", "not needed"]);
    assert!(out.contains("aborted"), "{out}");
    assert_eq!(code(&remote.run(&["watch", &waiting])), 5);
    let watched = remote.run(&[
        "watch",
        idle["tasks"][0]["id"].as_str().unwrap(),
        "--timeout",
        "300ms",
    ]);
    assert_eq!(code(&watched), 4);

    // retry, delete, purge — each with a reason
    let out = remote.ok(&["retry", &bad, "--reason", "fixed upstream"]);
    assert!(out.contains("again"), "{out}");
    // it runs (and fails) again before it can be deleted
    assert_eq!(code(&remote.run(&["result", &bad, "--wait", "30s"])), 1);
    let out = remote.ok(&["delete", &bad, "--reason", "cleanup"]);
    assert!(out.contains("deleted"), "{out}");
    let purged = remote.json(&["purge", "--status", "success", "--reason", "space"]);
    assert_eq!(purged["purged"], json!(3), "{purged}");
    let out = remote.run(&["purge"]);
    assert_eq!(code(&out), 2, "an unfiltered purge still needs --all");

    // errors: one line, the right exit code
    let unknown = "0192f1c4-0000-7000-8000-000000000000";
    let out = remote.run(&["get", unknown]);
    common::assert_one_error(&out, 1, "not found");
    let out = remote.run(&["enqueue", "--type", "echo", "--max-attempts", "5000"]);
    assert_eq!(code(&out), 2);
    let out = env.run(&["list", "--server", &base]);
    common::assert_one_error(&out, 1, "--token");
    let reader = read["token"].as_str().unwrap();
    let out = env.run(&[
        "enqueue", "--type", "echo", "--server", &base, "--token", reader,
    ]);
    common::assert_one_error(&out, 1, "role read");
    let out = env.run(&["list", "--server", "http://127.0.0.1:9", "--token", reader]);
    common::assert_one_error(&out, 1, "cannot reach the server");
    let out = env.run(&["list", "--server", "ftp://x"]);
    common::assert_one_error(&out, 2, "http://");
    let out = env.run(&["list", "--token", reader]);
    common::assert_one_error(&out, 2, "--server");
    let out = remote.run(&["monitor", "--once"]);
    common::assert_one_error(&out, 2, "--server");

    // tokens and the audit log through the server (admin only)
    let made = remote.json(&["tokens", "create", "--role", "read", "--label", "remote"]);
    assert!(
        made["token"].as_str().unwrap().starts_with("ofl_"),
        "{made}"
    );
    let listed = remote.json(&["tokens", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    let out = remote.ok(&["tokens", "delete", made["id"].as_str().unwrap()]);
    assert!(out.contains("deleted token"), "{out}");
    let out = remote.run(&["tokens", "delete", made["id"].as_str().unwrap()]);
    common::assert_one_error(&out, 1, "not found");
    let out = env.run(&["audit", "--server", &base, "--token", reader]);
    common::assert_one_error(&out, 1, "role read");
    let remote_audit = remote.json(&["audit", "--action", "token.create,token.delete"]);
    assert_eq!(
        remote_audit["records"].as_array().unwrap().len(),
        4,
        "{remote_audit}"
    );

    // webhooks through the server: its own rules refuse a loopback target
    let out = remote.run(&[
        "webhooks",
        "add",
        "http://127.0.0.1:9/x",
        "--events",
        "task.failed",
    ]);
    common::assert_one_error(&out, 2, "allow_private_targets");
    assert_eq!(remote.json(&["webhooks", "list"]), json!([]));
    assert_eq!(remote.json(&["webhooks", "deliveries"]), json!([]));
    let out = remote.run(&["webhooks", "delete", "wh_0000000000000000"]);
    common::assert_one_error(&out, 1, "not found");
    let out = remote.run(&["webhooks", "secret"]);
    common::assert_one_error(&out, 2, "--server");

    // the audit log names the token for what went through the server
    let audit = env.json(&["audit", "--limit", "100"]);
    let actor = format!("token:{}", admin["id"].as_str().unwrap());
    let actions: Vec<(String, String)> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["actor"] == json!(actor))
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for (action, reason) in [
        ("task.abort", "not needed"),
        ("task.retry", "fixed upstream"),
        ("task.delete", "cleanup"),
        ("task.purge", "space"),
    ] {
        assert!(
            actions.contains(&(action.to_owned(), reason.to_owned())),
            "{action} {reason} missing: {actions:?}"
        );
    }
}
