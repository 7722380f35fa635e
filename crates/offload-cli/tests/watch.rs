//! `offload watch ID`: follows a task live until it ends and exits with a
//! code that tells how: 0 success, 1 failed, 5 aborted, 4 on --timeout.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Env, sh_runner};

fn config() -> String {
    let mut c = sh_runner(
        "steps",
        "echo 'progress: 30 reading' >&2; sleep 0.3; echo 'progress: 80 writing' >&2; sleep 0.3; echo '{\"done\": true}'",
        "",
    );
    c.push_str(&sh_runner("broken", "echo 'no luck' >&2; exit 65", ""));
    c
}

#[test]
fn watch_follows_a_task_and_exits_by_how_it_ended() {
    let env = Env::with_config(&config());
    let _worker = env.worker(&["--concurrency", "2"]);

    let id = env.enqueue(&["--type", "steps", "--data", "{}"]);
    let out = env.run(&["watch", &id, "--timeout", "30s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "running (attempt 1/3",
        "progress 30% reading",
        "progress 80% writing",
        "attempt 1 ended: success",
        "\"done\": true",
    ] {
        assert!(
            stdout.contains(needle),
            "{needle:?} missing from:\n{stdout}"
        );
    }

    let id = env.enqueue(&["--type", "broken", "--data", "{}"]);
    let out = env.run(&["watch", &id]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failed after 1 attempt(s)"), "{stderr}");

    // a task that waits: abort it while it is watched
    let id = env.enqueue(&["--type", "steps", "--data", "{}", "--delay", "1h"]);
    let watcher = env
        .cmd(&["watch", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    env.ok(&["abort", &id, "--reason", "changed my mind"]);
    let done = watcher.wait_with_output().unwrap();
    assert_eq!(
        done.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(String::from_utf8_lossy(&done.stderr).contains("changed my mind"));

    // --timeout on a task that does not end in time
    let id = env.enqueue(&["--type", "steps", "--data", "{}", "--delay", "1h"]);
    let out = env.run(&["watch", &id, "--timeout", "300ms"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scheduled"));
}
