//! Helpers shared by the integration tests: a temp dir with its own SQLite
//! file and offload.toml, running the real `offload` binary, worker
//! processes that are killed when the test ends, and polling with a
//! deadline (never a fixed sleep).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_offload");

/// One test's world: a temp dir, its database and configuration file.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub config: PathBuf,
    /// Another database than the dir's SQLite file (e.g. a PostgreSQL schema).
    pub database: Option<String>,
}

impl Env {
    /// A fresh dir with an empty offload.toml.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("offload.db");
        let config = dir.path().join("offload.toml");
        std::fs::write(&config, "").unwrap();
        Self {
            dir,
            db,
            config,
            database: None,
        }
    }

    /// A fresh dir whose offload.toml has `toml`.
    pub fn with_config(toml: &str) -> Self {
        let env = Self::new();
        std::fs::write(&env.config, toml).unwrap();
        env
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn url(&self) -> String {
        match &self.database {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.db.display()),
        }
    }

    /// `offload ARGS --database-url ... --config ...`, run in the temp dir.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.bare(args);
        cmd.arg("--database-url")
            .arg(self.url())
            .arg("--config")
            .arg(&self.config);
        cmd
    }

    /// `offload ARGS` in the temp dir, without --database-url and --config.
    pub fn bare(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("OFFLOAD_DATABASE_URL")
            .env_remove("OFFLOAD_CONFIG")
            .env_remove("OFFLOAD_CONCURRENCY")
            .env_remove("OFFLOAD_QUEUES")
            .env_remove("OFFLOAD_LEASE")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a command to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "offload {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command with `--json` that must succeed; returns its JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let text = self.ok(&all);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// Enqueues one task; returns its id.
    pub fn enqueue(&self, args: &[&str]) -> String {
        let mut all = vec!["enqueue"];
        all.extend_from_slice(args);
        self.ok(&all).trim().to_owned()
    }

    /// One task as JSON.
    pub fn task(&self, id: &str) -> Value {
        self.json(&["get", id])
    }

    /// Every task, newest first (follows the cursor).
    pub fn all_tasks(&self) -> Vec<Value> {
        let mut tasks = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let mut args = vec!["list", "--limit", "1000"];
            if let Some(c) = &cursor {
                args.push("--cursor");
                args.push(c);
            }
            let page = self.json(&args);
            tasks.extend(page["tasks"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return tasks,
            }
        }
        panic!("too many pages");
    }

    /// Counts by status from `monitor --once --json`.
    pub fn counts(&self) -> Value {
        self.json(&["monitor", "--once"])["by_status"].clone()
    }

    /// Starts `offload worker ARGS` with its stderr in a file of the temp dir.
    pub fn worker(&self, args: &[&str]) -> Proc {
        let mut all = vec!["worker"];
        all.extend_from_slice(args);
        let mut proc = self.spawn_logged(&all, "worker");
        // ready once it printed its startup summary; dead early is a failure
        wait_for("the worker to start", Duration::from_secs(30), || {
            if let Some(status) = proc.child.try_wait().unwrap() {
                panic!("worker exited at start ({status}): {}", proc.log_text());
            }
            proc.log_text().contains("offload worker: ").then_some(())
        });
        proc
    }
}

impl Env {
    /// Starts `offload ARGS` with its stderr in `KIND-N.log` of the temp dir.
    fn spawn_logged(&self, args: &[&str], kind: &str) -> Proc {
        let log = self.path(&format!("{kind}-{}.log", unique()));
        let child = self
            .cmd(args)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    /// Starts `offload serve --listen 127.0.0.1:0 ARGS`; returns it with the
    /// base URL it printed (`http://127.0.0.1:PORT`).
    pub fn serve(&self, args: &[&str]) -> (Proc, String) {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut proc = self.spawn_logged(&all, "serve");
        let base = wait_for("the server to listen", Duration::from_secs(30), || {
            if let Some(status) = proc.child.try_wait().unwrap() {
                panic!("server exited at start ({status}): {}", proc.log_text());
            }
            let text = proc.log_text();
            let rest = text.split("listening on ").nth(1)?;
            let url = rest.split_whitespace().next()?;
            Some(url.to_owned())
        });
        (proc, base)
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A process this test started; SIGKILLed and reaped when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {limit:?}; log: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every few ms until it returns `Some`, or panics after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Whether a process is alive (a zombie counts as dead).
pub fn alive(pid: i32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // the state letter follows the ")" closing the command name
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// Reads pids written one per line to `path` (`None` until `n` are there).
pub fn read_pids(path: &Path, n: usize) -> Option<Vec<i32>> {
    let text = std::fs::read_to_string(path).ok()?;
    let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    (pids.len() >= n).then_some(pids)
}

/// Asserts the output is a failure with exactly one `error: ...` line on
/// stderr, the given exit code, and that line containing `needle`.
pub fn assert_one_error(out: &Output, code: i32, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {stderr}");
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        lines[0].contains(needle),
        "expected {needle:?} in: {stderr}"
    );
    lines[0].to_owned()
}

/// A shell runner line for offload.toml: `exec = ["sh", "-c", SCRIPT]`.
pub fn sh_runner(name: &str, script: &str, extra: &str) -> String {
    format!(
        "[runners.{name}]\nexec = [\"sh\", \"-c\", {}]\n{extra}\n",
        toml_string(script)
    )
}

/// A TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
