//! `offload enqueue`: one task from flags, or many from a JSON-lines file.
//!
//! Everything is read and checked before the database is opened, so bad
//! input changes nothing. A runner declared in `offload.toml` for the task's
//! name supplies defaults for `timeout`, `max_attempts` and `queue`.
//!
//! The file form (`--file tasks.jsonl`, `-` for stdin) takes one JSON
//! object per line: `{"name"|"type": ..., "input"|"data": ..., options}`
//! where the options are those of `TaskOptions` (`queue`, `priority`,
//! `delay`, `run_at`, `max_attempts`, `timeout`, `tags`, `metadata`,
//! `retry`). Every line is checked first; one bad line stops the command
//! with its line number and nothing is enqueued. The tasks then go in
//! batches of [`BATCH`], one round-trip each.

use std::io::{BufRead, BufReader, IsTerminal as _, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use offload::{
    EnqueueOutcome, Enqueued, NewTask, RetryPolicy, TaskId, TaskOptions, UniqueMode, UniquePolicy,
};
use serde::Deserialize;

use crate::commands::{duration_arg, json_arg, time_arg};
use crate::config::Config;
use crate::failure::Failure;
use crate::globals::Globals;
use crate::output;
use crate::tasks::Tasks;

/// Shown under `offload enqueue --help`.
pub(crate) const ENQUEUE_HELP: &str = "\
Examples:
  offload enqueue --type research --data '{\"topic\": \"AI agents\"}' --priority 5
  offload enqueue --type report --delay 30s --wait 2m
  offload enqueue --file tasks.jsonl
  offload enqueue --type import --data '{\"customer\": 7}' --unique-key import:7
  offload enqueue --type reindex --unique-key reindex --unique-mode debounce --unique-window 1s --max-wait 5s
  offload enqueue --type assemble --depends-on 01J... --depends-on 01J...

A tasks file has one JSON object per line:
  {\"name\": \"resize\", \"input\": {\"path\": \"a.png\"}, \"priority\": 5, \"delay\": \"30s\"}
(\"type\" and \"data\" are accepted for \"name\" and \"input\"; other keys: queue, run_at,
max_attempts, timeout, tags, metadata, retry, webhook, depends_on, unique_key, unique,
fairness_key). Every line is checked before anything is enqueued.

Exit codes with --wait: 0 succeeded (output printed), 1 failed or aborted, 4 timed out.";

/// Tasks per `trigger_many` call in `--file` mode.
const BATCH: usize = 1000;
/// Tasks per request through `--server` (small bodies, steady progress).
const SERVER_BATCH: usize = 200;

/// Arguments of `offload enqueue`.
#[derive(Debug, clap::Args)]
pub(crate) struct EnqueueArgs {
    /// The task's name (its type), which selects the runner.
    #[arg(
        long = "type",
        visible_alias = "name",
        value_name = "NAME",
        required_unless_present = "file",
        conflicts_with = "file"
    )]
    name: Option<String>,
    /// The task's input as JSON [default: {}]
    #[arg(long, visible_alias = "input", value_name = "JSON")]
    data: Option<String>,
    /// The queue [default: the runner's queue, else default]
    #[arg(long)]
    queue: Option<String>,
    /// Higher runs first [default: 0]
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Start no sooner than this from now, e.g. 30s, 5m.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, conflicts_with = "run_at")]
    delay: Option<Duration>,
    /// Start no sooner than this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = time_arg)]
    run_at: Option<DateTime<Utc>>,
    /// Attempts allowed [default: the runner's, else 3]
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
    /// Per-attempt time limit, e.g. 2m [default: the runner's]
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    timeout: Option<Duration>,
    /// A label (repeat for more).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// A JSON object stored with the task.
    #[arg(long, value_name = "JSON")]
    metadata: Option<String>,
    /// A URL that `offload serve` POSTs the task's end to (signed).
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,
    /// A task that must succeed first (repeat for more); until then this
    /// one is blocked, and if it fails this one is aborted.
    #[arg(long = "depends-on", value_name = "ID")]
    depends_on: Vec<TaskId>,
    /// A de-duplication key: while a task with the same key waits or runs,
    /// enqueue returns that task instead (see --unique-mode).
    #[arg(long, value_name = "KEY")]
    unique_key: Option<String>,
    /// What a matching key does: reject (return the existing task),
    /// replace (its input), debounce or throttle [default: reject]
    #[arg(long, value_name = "MODE", requires = "unique_key")]
    unique_mode: Option<UniqueMode>,
    /// reject: hold the key this long after creation; debounce: the quiet
    /// time; throttle: the time between runs.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, requires = "unique_key")]
    unique_window: Option<Duration>,
    /// A key (e.g. a tenant id) claims are shared across, round-robin.
    #[arg(long, value_name = "KEY")]
    fairness_key: Option<String>,
    /// debounce: run at most this long after the first enqueue.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, requires = "unique_key")]
    max_wait: Option<Duration>,
    /// Wait for the task to finish (at most DURATION) and print its output.
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "30s",
          value_parser = duration_arg, conflicts_with = "file")]
    wait: Option<Duration>,
    /// Enqueue every line of a JSON-lines file (`-` reads stdin).
    #[arg(long, short = 'f', value_name = "PATH",
          conflicts_with_all = ["data", "queue", "priority", "delay", "run_at", "max_attempts", "timeout", "tags", "metadata", "webhook", "depends_on", "unique_key", "fairness_key"])]
    file: Option<PathBuf>,
}

/// Runs `offload enqueue`.
pub(crate) async fn run(args: EnqueueArgs, globals: &Globals) -> anyhow::Result<()> {
    if let Some(path) = &args.file {
        return run_file(path, globals).await;
    }
    let task = task_from_args(&args, &globals.config)?;
    let key = task.options.unique_key.clone();
    let tasks = globals.tasks().await?;
    let Enqueued { id, outcome } = tasks
        .trigger_many(vec![task])
        .await
        .context("cannot enqueue the task")?
        .pop()
        .context("cannot enqueue the task: no id came back")?;
    if let (Some(key), false) = (key, outcome == EnqueueOutcome::Created) {
        output::note(&format!(
            "unique key {key:?}: {} task {id} ({})",
            match outcome {
                EnqueueOutcome::Existing => "nothing enqueued; returning the existing",
                _ => "merged into the waiting",
            },
            outcome.as_str()
        ));
    }
    match args.wait {
        None => {
            if globals.json {
                let task = tasks.get(id).await?;
                output::print_json(&task)
            } else {
                output::print(&id.to_string())
            }
        }
        Some(timeout) => {
            let task = super::result::wait_for(&tasks, id, timeout).await?;
            if globals.json {
                // the whole task on stdout; the exit code still tells the outcome
                output::print_json(&task)?;
                return match super::result::outcome_error(&task) {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
            }
            super::result::report(&task, false)
        }
    }
}

/// Builds the task from the flags (nothing touches the database yet).
fn task_from_args(args: &EnqueueArgs, config: &Config) -> anyhow::Result<NewTask> {
    let name = args
        .name
        .clone()
        .ok_or_else(|| Failure::usage("--type NAME is required (or --file PATH)"))?;
    let input = match &args.data {
        Some(text) => json_arg("--data", text)?,
        None => serde_json::json!({}),
    };
    let metadata = args
        .metadata
        .as_deref()
        .map(|m| json_arg("--metadata", m))
        .transpose()?;
    let options = TaskOptions {
        queue: args.queue.clone(),
        priority: args.priority,
        run_at: args.run_at,
        delay: args.delay,
        max_attempts: args.max_attempts,
        timeout: args.timeout,
        retry: None,
        tags: args.tags.clone(),
        metadata,
        webhook: args.webhook.clone(),
        depends_on: args.depends_on.clone(),
        unique_key: args.unique_key.clone(),
        unique: unique_policy(args.unique_mode, args.unique_window, args.max_wait),
        fairness_key: args.fairness_key.clone(),
    };
    let task = with_runner_defaults(NewTask::new(name, input).options(options), config);
    task.validate().map_err(|e| Failure::usage(e.to_string()))?;
    Ok(task)
}

/// The policy the `--unique-*` flags describe (`None`: none given).
fn unique_policy(
    mode: Option<UniqueMode>,
    window: Option<Duration>,
    max_wait: Option<Duration>,
) -> Option<UniquePolicy> {
    if mode.is_none() && window.is_none() && max_wait.is_none() {
        return None;
    }
    Some(UniquePolicy {
        mode: mode.unwrap_or_default(),
        window,
        max_wait,
    })
}

/// Fills unset options from the runner `offload.toml` declares for the name.
fn with_runner_defaults(mut task: NewTask, config: &Config) -> NewTask {
    if let Some(runner) = config.runner(&task.name) {
        let o = &mut task.options;
        o.timeout = o.timeout.or(runner.timeout);
        o.max_attempts = o.max_attempts.or(runner.max_attempts);
        if o.queue.is_none() {
            o.queue.clone_from(&runner.queue);
        }
    }
    task
}

/// One line of a tasks file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default, alias = "type")]
    name: Option<String>,
    #[serde(default, alias = "data")]
    input: Option<serde_json::Value>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default)]
    delay: Option<serde_json::Value>,
    #[serde(default)]
    run_at: Option<DateTime<Utc>>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    timeout: Option<serde_json::Value>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    retry: Option<RetryPolicy>,
    #[serde(default)]
    webhook: Option<String>,
    #[serde(default)]
    depends_on: Vec<TaskId>,
    #[serde(default)]
    unique_key: Option<String>,
    #[serde(default)]
    unique: Option<UniquePolicy>,
    #[serde(default)]
    fairness_key: Option<String>,
}

/// A `"30s"` string or a number of seconds, as in the JSON API.
fn line_duration(
    field: &str,
    value: Option<serde_json::Value>,
) -> Result<Option<Duration>, String> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => offload::parse_duration(&s)
            .map(Some)
            .map_err(|e| format!("{field}: {e}")),
        Some(serde_json::Value::Number(n)) => n
            .as_f64()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .map(Some)
            .ok_or_else(|| format!("{field}: {n} is not a valid number of seconds")),
        Some(other) => Err(format!(
            "{field}: expected a duration such as \"30s\", got {other}"
        )),
    }
}

/// Reads one line into a task, or says what is wrong with it.
pub(crate) fn parse_line(text: &str, config: &Config) -> Result<NewTask, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let msg = full.strip_suffix(&suffix).unwrap_or(&full);
        let msg = crate::suggest::unknown_field(msg, "field");
        format!("{msg} (column {})", e.column())
    })?;
    let name = line
        .name
        .ok_or_else(|| "missing \"name\" (or \"type\"): the task's name".to_owned())?;
    let options = TaskOptions {
        queue: line.queue,
        priority: line.priority,
        run_at: line.run_at,
        delay: line_duration("delay", line.delay)?,
        max_attempts: line.max_attempts,
        timeout: line_duration("timeout", line.timeout)?,
        retry: line.retry,
        tags: line.tags,
        metadata: line.metadata,
        webhook: line.webhook,
        depends_on: line.depends_on,
        unique_key: line.unique_key,
        unique: line.unique,
        fairness_key: line.fairness_key,
    };
    let input = line.input.unwrap_or_else(|| serde_json::json!({}));
    let task = with_runner_defaults(NewTask::new(name, input).options(options), config);
    task.validate().map_err(|e| e.to_string())?;
    Ok(task)
}

/// Reads and checks every line of `reader`; `label` names the source in errors.
fn read_tasks(reader: impl Read, label: &str, config: &Config) -> anyhow::Result<Vec<NewTask>> {
    let mut reader = BufReader::new(reader);
    let mut tasks = Vec::new();
    let mut buf = Vec::new();
    let mut number = 0usize;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("cannot read {label}"))?;
        if n == 0 {
            break;
        }
        number += 1;
        let text = std::str::from_utf8(&buf)
            .map_err(|e| Failure::usage(format!("{label} line {number}: not UTF-8 text: {e}")))?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let task = parse_line(text, config)
            .map_err(|e| Failure::usage(format!("{label} line {number}: {e}")))?;
        tasks.push(task);
    }
    Ok(tasks)
}

/// `offload enqueue --file PATH`.
async fn run_file(path: &Path, globals: &Globals) -> anyhow::Result<()> {
    let tasks = if path == Path::new("-") {
        read_tasks(std::io::stdin().lock(), "stdin", &globals.config)?
    } else {
        let label = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                crate::failure::code::USAGE
            } else {
                crate::failure::code::FAILED
            };
            Failure::with_code(code, format!("cannot open {label}: {e}"))
        })?;
        read_tasks(file, &label, &globals.config)?
    };
    let total = tasks.len();
    let target = globals.tasks().await?;
    let batch_size = match target {
        // well inside the server's default body limit
        Tasks::Server(_) => SERVER_BATCH,
        Tasks::Store(_) => BATCH,
    };
    let bar = progress_bar(total, globals.json);
    let mut ids = Vec::with_capacity(total);
    let mut rest = tasks;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(batch_size));
        let batch = std::mem::replace(&mut rest, tail);
        let n = batch.len();
        let new_ids = target.trigger_many(batch).await.with_context(|| {
            format!(
                "cannot enqueue tasks {}..{} ({} enqueued before this batch)",
                ids.len() + 1,
                ids.len() + n,
                ids.len()
            )
        })?;
        ids.extend(new_ids.into_iter().map(|e| e.id));
        bar.inc(u64::try_from(n).unwrap_or(u64::MAX));
    }
    bar.finish_and_clear();
    if globals.json {
        output::print_json(&serde_json::json!({ "count": ids.len(), "ids": ids }))
    } else {
        output::print(&format!("enqueued {} tasks", ids.len()))
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal or with `--json`.
fn progress_bar(total: usize, json: bool) -> indicatif::ProgressBar {
    let len = u64::try_from(total).unwrap_or(u64::MAX);
    if json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} tasks enqueued ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks(text: &str) -> Result<Vec<NewTask>, String> {
        read_tasks(text.as_bytes(), "tasks.jsonl", &Config::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_names_aliases_and_options() {
        let t = tasks(
            "{\"name\":\"a\",\"input\":{\"x\":1}}\n\n{\"type\":\"b\",\"data\":[1],\"priority\":5,\"delay\":\"30s\",\"tags\":[\"t\"]}\n",
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "a");
        assert_eq!(t[1].name, "b");
        assert_eq!(t[1].input, serde_json::json!([1]));
        assert_eq!(t[1].options.priority, Some(5));
        assert_eq!(t[1].options.delay, Some(Duration::from_secs(30)));
    }

    #[test]
    fn bad_lines_name_their_number() {
        let e = tasks("{\"name\":\"a\"}\n{\"name\":\"b\"}\n{\"name\": \n").unwrap_err();
        assert!(e.starts_with("tasks.jsonl line 3: "), "{e}");
        let e = tasks("{\"name\":\"a\",\"priorty\":1}\n").unwrap_err();
        assert!(e.contains("did you mean `priority`?"), "{e}");
        let e = tasks("{\"input\":{}}\n").unwrap_err();
        assert!(e.contains("missing \"name\""), "{e}");
        let e = tasks("{\"name\":\"a\",\"max_attempts\":0}\n").unwrap_err();
        assert!(e.contains("max_attempts"), "{e}");
        let e = tasks("{\"name\":\"a\",\"type\":\"b\"}\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn runner_defaults_apply() {
        let config = Config::parse(
            "[runners.a]\nexec = [\"x\"]\ntimeout = \"2m\"\nmax_attempts = 7\nqueue = \"q\"\n",
            Path::new("offload.toml"),
        )
        .unwrap();
        let t = read_tasks(
            "{\"name\":\"a\"}\n{\"name\":\"a\",\"max_attempts\":2}\n".as_bytes(),
            "x",
            &config,
        )
        .unwrap();
        assert_eq!(t[0].options.timeout, Some(Duration::from_secs(120)));
        assert_eq!(t[0].options.max_attempts, Some(7));
        assert_eq!(t[0].options.queue.as_deref(), Some("q"));
        assert_eq!(t[1].options.max_attempts, Some(2));
    }
}
