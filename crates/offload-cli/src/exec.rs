//! [`ExecRunner`]: runs a task as a local command, the `exec` runner of
//! `offload.toml` (SPEC section 4).
//!
//! For each attempt the command (an argv array, no shell) is started in its
//! own process group with:
//! - the task input as JSON on stdin (then stdin is closed), and in the
//!   environment as `OFFLOAD_INPUT` (left out when the JSON is larger than
//!   [`MAX_ENV_INPUT`], which the OS would refuse), plus `OFFLOAD_TASK_ID`,
//!   `OFFLOAD_TASK_NAME` and `OFFLOAD_ATTEMPT`;
//! - stdout collected (at most [`MAX_STDOUT`]; more is a fatal
//!   `output_too_large` error);
//! - stderr read line by line: `progress: 40 message text` (a percentage
//!   0–100, the message optional) updates the task's progress; every other
//!   line is kept (the last [`STDERR_TAIL`] bytes) for the error message.
//!
//! The exit code decides:
//! - `0`: success; the output is stdout parsed as JSON, or stdout as a JSON
//!   string when it is not JSON (trailing newline removed), or `null` when
//!   it is empty;
//! - `65` (`EX_DATAERR`: the input is wrong, so retrying cannot help): a
//!   non-retryable error of kind `exit`; the task fails at once;
//! - any other code: a retryable error of kind `exit` naming the code and
//!   ending with the stderr tail; a command killed by a signal is a
//!   retryable error of kind `signal`.
//!
//! A command that cannot be started (not found, not executable) is a fatal
//! error of kind `spawn` naming the command.
//!
//! No orphan processes: when the attempt is asked to stop (abort, timeout,
//! shutdown) the whole process group gets SIGTERM, then SIGKILL after the
//! kill grace period. When the command exits but left processes behind in
//! its group, they get the same treatment. And if the worker drops the
//! attempt's future while the group lives, a drop guard SIGKILLs the group.

use std::collections::HashSet;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use offload::{Context, Controller, Runner, StopReason, Task, TaskError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// Most stdout bytes kept as output (16 MiB).
pub(crate) const MAX_STDOUT: usize = 16 * 1024 * 1024;
/// How much of stderr (its last bytes) goes into an error message.
pub(crate) const STDERR_TAIL: usize = 4 * 1024;
/// Longest input passed in `OFFLOAD_INPUT` (Linux refuses larger single
/// environment strings); larger inputs come on stdin only.
pub(crate) const MAX_ENV_INPUT: usize = 100 * 1024;
/// Time between SIGTERM and SIGKILL of a process group asked to stop.
pub(crate) const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);
/// Exit code meaning "the input is wrong": not retried.
pub(crate) const EXIT_DATAERR: i32 = 65;
/// Longest stderr line considered (longer lines are cut).
const MAX_LINE: usize = 64 * 1024;
/// After SIGKILL, how long to wait for pipes held by processes that left
/// the group before giving up on them.
const PIPE_DRAIN_AFTER_KILL: Duration = Duration::from_secs(2);

/// The process groups of running commands, so a forced exit of the worker
/// can kill them all.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProcessGroups(Arc<Mutex<HashSet<i32>>>);

impl ProcessGroups {
    fn insert(&self, pgid: i32) {
        self.lock().insert(pgid);
    }

    fn remove(&self, pgid: i32) {
        self.lock().remove(&pgid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// SIGKILLs every live group (used when the worker is forced to exit).
    pub(crate) fn kill_all(&self) {
        for pgid in self.lock().drain() {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }

    /// How many commands are running.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Runs tasks of one name as a command.
#[derive(Debug, Clone)]
pub(crate) struct ExecRunner {
    argv: Vec<String>,
    timeout: Option<Duration>,
    kill_grace: Duration,
    groups: ProcessGroups,
}

impl ExecRunner {
    /// A runner for `argv` (`argv[0]` is the program, found on `PATH`).
    pub(crate) fn new(argv: Vec<String>, groups: ProcessGroups) -> Self {
        Self {
            argv,
            timeout: None,
            kill_grace: DEFAULT_KILL_GRACE,
            groups,
        }
    }

    /// The attempt time limit for tasks that set none.
    pub(crate) fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time between SIGTERM and SIGKILL.
    pub(crate) fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    fn program(&self) -> &str {
        self.argv.first().map(String::as_str).unwrap_or("")
    }
}

#[async_trait]
impl Runner for ExecRunner {
    async fn run(
        &self,
        task: &Task,
        _ctx: &Context,
        ctl: &Controller,
    ) -> Result<serde_json::Value, TaskError> {
        let input = serde_json::to_vec(&task.input)
            .map_err(|e| TaskError::fatal(format!("cannot encode the input: {e}")).kind("serde"))?;
        let mut cmd = tokio::process::Command::new(self.program());
        cmd.args(self.argv.iter().skip(1))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("OFFLOAD_TASK_ID", task.id.to_string())
            .env("OFFLOAD_TASK_NAME", &task.name)
            .env("OFFLOAD_ATTEMPT", task.attempt.to_string())
            .process_group(0)
            .kill_on_drop(false);
        if input.len() <= MAX_ENV_INPUT {
            cmd.env("OFFLOAD_INPUT", String::from_utf8_lossy(&input).as_ref());
        } else {
            cmd.env_remove("OFFLOAD_INPUT");
        }
        let mut child = cmd.spawn().map_err(|e| {
            TaskError::fatal(format!("cannot run command {:?}: {e}", self.program())).kind("spawn")
        })?;
        // The child leads its own group, whose id is its pid.
        let Some(pgid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
            return Err(
                TaskError::new("the command exited before it could be tracked").kind("spawn"),
            );
        };
        let mut guard = GroupGuard::new(pgid, self.groups.clone());
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(TaskError::new("the command's pipes were not set up").kind("io"));
        };

        let (progress_tx, progress_rx) = watch::channel(None);
        let io = async {
            let (_, out, tail, ()) = tokio::join!(
                write_stdin(stdin, &input),
                read_capped(stdout, MAX_STDOUT),
                read_stderr(stderr, progress_tx),
                push_progress(progress_rx, ctl),
            );
            (out, tail)
        };
        tokio::pin!(io);

        let mut io_done: Option<(Captured, String)> = None;
        let mut exit: Option<std::io::Result<ExitStatus>> = None;
        let mut stop: Option<StopReason> = None;
        let mut kill_at: Option<Instant> = None;
        let mut give_up_at: Option<Instant> = None;
        loop {
            if exit.is_some() && io_done.is_some() {
                break;
            }
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                done = &mut io, if io_done.is_none() => {
                    if matches!(done.0, Captured::TooLarge) {
                        guard.signal(Signal::SIGKILL);
                        give_up_at.get_or_insert(Instant::now() + PIPE_DRAIN_AFTER_KILL);
                    }
                    io_done = Some(done);
                }
                status = child.wait(), if exit.is_none() => {
                    exit = Some(status);
                    // Whatever is left in the group (background children) is
                    // stopped too: no orphans. If something outside the group
                    // holds the pipes, stop waiting for them after the grace.
                    if guard.alive() {
                        guard.signal(Signal::SIGTERM);
                    }
                    kill_at.get_or_insert(Instant::now() + self.kill_grace);
                }
                reason = ctl.aborted(), if stop.is_none() => {
                    tracing::debug!(task = %task.id, ?reason, pgid, "stopping the command");
                    stop = Some(reason);
                    guard.signal(Signal::SIGTERM);
                    kill_at.get_or_insert(Instant::now() + self.kill_grace);
                }
                _ = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() && give_up_at.is_none() => {
                    guard.signal(Signal::SIGKILL);
                    give_up_at = Some(Instant::now() + PIPE_DRAIN_AFTER_KILL);
                }
                _ = tokio::time::sleep_until(give_up_at.unwrap_or(far)), if give_up_at.is_some() => {
                    // Something that escaped the group still holds a pipe.
                    tracing::warn!(task = %task.id, "gave up waiting for the command's pipes to close");
                    break;
                }
            }
        }
        // Leftovers that ignored SIGTERM, and waiting for the group to empty.
        guard.finish(self.kill_grace).await;

        let (captured, tail) = io_done.unwrap_or((Captured::Bytes(Vec::new()), String::new()));
        let status = match exit {
            Some(Ok(status)) => status,
            Some(Err(e)) => {
                return Err(TaskError::new(format!("cannot wait for the command: {e}")).kind("io"));
            }
            None => {
                return Err(TaskError::new("the command did not exit after SIGKILL").kind("signal"));
            }
        };
        outcome(status, captured, &tail, stop)
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

/// Turns the exit status and the captured output into the attempt's result.
fn outcome(
    status: ExitStatus,
    captured: Captured,
    tail: &str,
    stop: Option<StopReason>,
) -> Result<serde_json::Value, TaskError> {
    use std::os::unix::process::ExitStatusExt as _;
    let with_tail = |msg: String| {
        if tail.is_empty() {
            msg
        } else {
            format!("{msg}: {tail}")
        }
    };
    if let Some(signal) = status.signal() {
        let name = Signal::try_from(signal)
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|_| signal.to_string());
        let why = match stop {
            Some(reason) => format!(" after it was asked to stop ({reason:?})"),
            None => String::new(),
        };
        return Err(
            TaskError::new(with_tail(format!("command killed by {name}{why}"))).kind("signal"),
        );
    }
    let code = status.code().unwrap_or(-1);
    if code != 0 {
        let message = with_tail(format!("command exited with code {code}"));
        let error = if code == EXIT_DATAERR {
            TaskError::fatal(message)
        } else {
            TaskError::new(message)
        };
        return Err(error.kind("exit"));
    }
    match captured {
        Captured::TooLarge => Err(TaskError::fatal(format!(
            "the command wrote more than {} MiB on stdout",
            MAX_STDOUT / (1024 * 1024)
        ))
        .kind("output_too_large")),
        Captured::Failed(e) => Err(TaskError::new(format!("cannot read stdout: {e}")).kind("io")),
        Captured::Bytes(bytes) => Ok(parse_output(&bytes)),
    }
}

/// stdout as JSON; not JSON → a JSON string; empty → `null`.
pub(crate) fn parse_output(bytes: &[u8]) -> serde_json::Value {
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() {
        return serde_json::Value::Null;
    }
    match serde_json::from_slice(trimmed) {
        Ok(value) => value,
        Err(_) => {
            let text = String::from_utf8_lossy(bytes);
            serde_json::Value::String(text.trim_end_matches(['\n', '\r']).to_owned())
        }
    }
}

/// Reads `progress: 40 message` (also `40%`); `None` for any other line.
pub(crate) fn parse_progress(line: &str) -> Option<(u8, Option<String>)> {
    let rest = line.trim().strip_prefix("progress:")?.trim_start();
    let (number, message) = match rest.split_once(char::is_whitespace) {
        Some((n, m)) => (n, m.trim()),
        None => (rest, ""),
    };
    let number = number.strip_suffix('%').unwrap_or(number);
    // a fraction is allowed and dropped: `42.5` is 42
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    if !fraction.bytes().all(|b| b.is_ascii_digit()) || whole.starts_with('+') {
        return None;
    }
    let percent: u8 = whole.parse().ok().filter(|p| *p <= 100)?;
    let message = (!message.is_empty()).then(|| message.to_owned());
    Some((percent, message))
}

/// What stdout produced.
#[derive(Debug)]
enum Captured {
    Bytes(Vec<u8>),
    TooLarge,
    Failed(std::io::Error),
}

async fn write_stdin(mut stdin: tokio::process::ChildStdin, input: &[u8]) {
    // A command that does not read its input closes the pipe: not an error.
    let _ = stdin.write_all(input).await;
    let _ = stdin.shutdown().await;
    drop(stdin);
}

async fn read_capped(mut pipe: impl AsyncRead + Unpin, cap: usize) -> Captured {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) => return Captured::Bytes(out),
            Ok(n) => {
                if out.len() + n > cap {
                    return Captured::TooLarge;
                }
                out.extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Captured::Failed(e),
        }
    }
}

/// Reads stderr by lines: progress lines go to `progress`, the others are
/// kept (the last [`STDERR_TAIL`] bytes), returned trimmed.
async fn read_stderr(
    mut pipe: impl AsyncRead + Unpin,
    progress: watch::Sender<Option<(u8, Option<String>)>>,
) -> String {
    let mut tail = Tail::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 8 * 1024];
    let handle = |line: &[u8], tail: &mut Tail| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        match parse_progress(text) {
            Some(p) => {
                let _ = progress.send(Some(p));
            }
            None => tail.push(text),
        }
    };
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(chunk.get(..n).unwrap_or_default());
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            handle(line.get(..pos).unwrap_or_default(), &mut tail);
        }
        if pending.len() > MAX_LINE {
            handle(&pending, &mut tail);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        handle(&pending, &mut tail);
    }
    tail.text()
}

/// Records the latest progress; reports coming faster than the store takes
/// them are coalesced. Ends (after the last report) when stderr closes.
async fn push_progress(mut rx: watch::Receiver<Option<(u8, Option<String>)>>, ctl: &Controller) {
    while rx.changed().await.is_ok() {
        let latest = rx.borrow_and_update().clone();
        if let Some((percent, message)) = latest
            && let Err(e) = ctl.progress(percent, message).await
        {
            tracing::debug!(error = %e, "progress not recorded");
        }
    }
}

/// The last bytes of stderr, by whole lines.
#[derive(Debug, Default)]
struct Tail {
    lines: std::collections::VecDeque<String>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, line: &str) {
        let line = if line.len() > STDERR_TAIL {
            let mut cut = line.len() - STDERR_TAIL;
            while !line.is_char_boundary(cut) {
                cut += 1;
            }
            line.get(cut..).unwrap_or_default()
        } else {
            line
        };
        self.bytes += line.len() + 1;
        self.lines.push_back(line.to_owned());
        while self.bytes > STDERR_TAIL {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.len() + 1,
                None => break,
            }
        }
    }

    fn text(&self) -> String {
        let lines: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        lines.join("\n").trim().to_owned()
    }
}

/// Owns a running command's process group: signals it, and SIGKILLs it if
/// dropped while the group may still have members.
#[derive(Debug)]
struct GroupGuard {
    pgid: i32,
    armed: bool,
    groups: ProcessGroups,
}

impl GroupGuard {
    fn new(pgid: i32, groups: ProcessGroups) -> Self {
        groups.insert(pgid);
        Self {
            pgid,
            armed: true,
            groups,
        }
    }

    fn signal(&self, signal: Signal) {
        if self.armed {
            let _ = killpg(Pid::from_raw(self.pgid), signal);
        }
    }

    /// Whether any process of the group is still alive (or a zombie).
    fn alive(&mut self) -> bool {
        if !self.armed {
            return false;
        }
        match killpg(Pid::from_raw(self.pgid), None) {
            Err(nix::errno::Errno::ESRCH) => {
                self.disarm();
                false
            }
            _ => true,
        }
    }

    fn disarm(&mut self) {
        if self.armed {
            self.armed = false;
            self.groups.remove(self.pgid);
        }
    }

    /// After the leader exited: stops what is left of the group (SIGTERM,
    /// SIGKILL after `grace`) and waits, bounded, until it is empty.
    async fn finish(&mut self, grace: Duration) {
        if !self.alive() {
            return;
        }
        self.signal(Signal::SIGTERM);
        let term_deadline = Instant::now() + grace;
        let kill_deadline = term_deadline + PIPE_DRAIN_AFTER_KILL;
        let mut killed = false;
        let mut interval = Duration::from_millis(5);
        loop {
            if !self.alive() {
                return;
            }
            let now = Instant::now();
            if !killed && now >= term_deadline {
                self.signal(Signal::SIGKILL);
                killed = true;
            }
            if now >= kill_deadline {
                // Only zombies waiting for their new parent to reap them, or
                // processes we may not signal: nothing more to do.
                self.disarm();
                return;
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(Duration::from_millis(100));
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
            self.groups.remove(self.pgid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn progress_lines() {
        assert_eq!(
            parse_progress("progress: 40 halfway there"),
            Some((40, Some("halfway there".into())))
        );
        assert_eq!(parse_progress("progress: 100"), Some((100, None)));
        assert_eq!(
            parse_progress("progress:7%  x "),
            Some((7, Some("x".into())))
        );
        assert_eq!(parse_progress("progress: 101 too much"), None);
        assert_eq!(parse_progress("progress: -1"), None);
        assert_eq!(parse_progress("progress: lots"), None);
        assert_eq!(
            parse_progress("progress: 42.5 x"),
            Some((42, Some("x".into())))
        );
        assert_eq!(parse_progress("warning: progress: 40"), None);
    }

    #[test]
    fn outputs() {
        assert_eq!(parse_output(b""), serde_json::Value::Null);
        assert_eq!(parse_output(b"  \n"), serde_json::Value::Null);
        assert_eq!(parse_output(b"{\"a\": 1}\n"), json!({"a": 1}));
        assert_eq!(parse_output(b"hello\n"), json!("hello"));
        assert_eq!(parse_output(b"42"), json!(42));
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut t = Tail::default();
        for i in 0..2000 {
            t.push(&format!("line {i}"));
        }
        let text = t.text();
        assert!(text.len() <= STDERR_TAIL, "{}", text.len());
        assert!(text.ends_with("line 1999"));
        let mut t = Tail::default();
        t.push(&"é".repeat(STDERR_TAIL));
        assert!(t.text().len() <= STDERR_TAIL);
    }

    #[test]
    fn exit_codes_decide() {
        use std::os::unix::process::ExitStatusExt as _;
        let ok = ExitStatus::from_raw(0);
        assert_eq!(
            outcome(ok, Captured::Bytes(b"{\"x\":1}".to_vec()), "", None).unwrap(),
            json!({"x": 1})
        );
        let e = outcome(
            ExitStatus::from_raw(3 << 8),
            Captured::Bytes(vec![]),
            "boom",
            None,
        )
        .unwrap_err();
        assert_eq!(e.kind, "exit");
        assert!(e.retryable);
        assert!(e.message.contains("code 3: boom"), "{}", e.message);
        let e = outcome(
            ExitStatus::from_raw(65 << 8),
            Captured::Bytes(vec![]),
            "",
            None,
        )
        .unwrap_err();
        assert!(!e.retryable);
        let e = outcome(ExitStatus::from_raw(9), Captured::Bytes(vec![]), "", None).unwrap_err();
        assert_eq!(e.kind, "signal");
        assert!(e.message.contains("SIGKILL"), "{}", e.message);
        let e = outcome(ok, Captured::TooLarge, "", None).unwrap_err();
        assert_eq!(e.kind, "output_too_large");
    }

    #[tokio::test]
    async fn guard_kills_the_group_when_dropped() {
        let groups = ProcessGroups::default();
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "sleep 300 & sleep 300"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = i32::try_from(child.id().unwrap()).unwrap();
        let guard = GroupGuard::new(pgid, groups.clone());
        assert_eq!(groups.len(), 1);
        drop(guard);
        assert_eq!(groups.len(), 0);
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(!status.success());
        // the background sleep is gone too (bounded poll)
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while killpg(Pid::from_raw(pgid), None).is_ok() {
            assert!(std::time::Instant::now() < deadline, "group still alive");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
