//! `offload.toml`: the configuration file of SPEC section 4, read with
//! serde (`deny_unknown_fields` everywhere) and checked after parsing.
//!
//! ```toml
//! database_url = "sqlite://offload.db"
//!
//! [server]
//! listen = "127.0.0.1:8750"
//!
//! [worker]
//! concurrency = 100
//! queues = ["default"]
//!
//! [runners.resize_image]          # the key is the task name
//! exec = ["python3", "resize.py"]
//! timeout = "2m"
//! max_attempts = 5
//! queue = "images"                # optional
//!
//! [runners.notify_crm]
//! http = "http://127.0.0.1:9000/tasks/notify"
//!
//! [webhooks]
//! allow_private_targets = false
//!
//! [schedules.nightly-cleanup]     # the key is the schedule's name
//! cron = "0 3 * * *"
//! time_zone = "Europe/Berlin"     # default UTC
//! task = "cleanup"
//! input = { older_than = "30d" }
//! missed = "run_once"             # or skip (default)
//!
//! [limits.name.send_email]        # or [limits.queue.QUEUE]
//! rate = "10/s"
//! concurrency = 20
//! key = "customer_id"             # with key_concurrency: per input value
//! key_concurrency = 1
//! max_queued_per_key = 1000       # waiting tasks per fairness key
//! ```
//!
//! Every key is optional. A problem is reported as one [`ConfigError`]
//! line: the file, the line and column, and what is wrong (an unknown key
//! names the nearest valid one when it looks like a typo). The environment
//! (`OFFLOAD_*`) and command-line flags override the file; that layering
//! lives in [`crate::globals`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use offload::{Limit, LimitScope, MissedTicks, NewTask, Rate, Schedule, TaskOptions};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Where tasks are stored.
    #[serde(default)]
    pub(crate) database_url: Option<String>,
    /// `offload serve` settings.
    #[serde(default)]
    pub(crate) server: ServerConfig,
    /// `offload worker` settings.
    #[serde(default)]
    pub(crate) worker: Option<Spanned<WorkerConfig>>,
    /// Runners by task name.
    #[serde(default)]
    pub(crate) runners: BTreeMap<String, Spanned<RunnerConfig>>,
    /// Webhook settings (`offload serve`, `offload webhooks add`).
    #[serde(default)]
    pub(crate) webhooks: WebhooksConfig,
    /// Cron schedules by name, stored by `offload worker` and `offload serve` at start.
    #[serde(default)]
    pub(crate) schedules: BTreeMap<String, Spanned<ScheduleConfig>>,
    /// Limits by task name and by queue, stored by `offload worker` and `offload serve` at start.
    #[serde(default)]
    pub(crate) limits: LimitsConfig,
}

/// `[limits.name.NAME]` and `[limits.queue.QUEUE]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsConfig {
    /// By task name.
    #[serde(default)]
    pub(crate) name: BTreeMap<String, Spanned<LimitConfig>>,
    /// By queue.
    #[serde(default)]
    pub(crate) queue: BTreeMap<String, Spanned<LimitConfig>>,
}

/// One limit's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitConfig {
    #[serde(default)]
    concurrency: Option<u32>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_concurrency: Option<u32>,
    #[serde(default)]
    rate: Option<String>,
    #[serde(default)]
    max_queued_per_key: Option<u32>,
}

impl LimitConfig {
    fn limit(&self, scope: LimitScope, target: &str) -> Result<Limit, String> {
        let rate = self
            .rate
            .as_deref()
            .map(str::parse::<Rate>)
            .transpose()
            .map_err(|e| e.to_string())?;
        let limit = Limit {
            scope,
            target: target.to_owned(),
            concurrency: self.concurrency,
            key: self.key.clone(),
            key_concurrency: self.key_concurrency,
            rate,
            max_queued_per_key: self.max_queued_per_key,
        };
        limit.validate().map_err(|e| e.to_string())?;
        Ok(limit)
    }
}

/// `[schedules.NAME]`: a cron schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleConfig {
    /// The cron expression (5 fields, optional seconds, or `@daily` …).
    pub(crate) cron: String,
    /// IANA time zone; default UTC.
    #[serde(default)]
    pub(crate) time_zone: Option<String>,
    /// The task name to enqueue.
    pub(crate) task: String,
    /// The task's input.
    #[serde(default)]
    pub(crate) input: Option<serde_json::Value>,
    /// `skip` (default) or `run_once`.
    #[serde(default)]
    pub(crate) missed: Option<String>,
    /// The task's queue.
    #[serde(default)]
    pub(crate) queue: Option<String>,
    /// The task's priority.
    #[serde(default)]
    pub(crate) priority: Option<i32>,
    /// The task's attempts.
    #[serde(default)]
    pub(crate) max_attempts: Option<u32>,
    /// The task's time limit per attempt.
    #[serde(default, deserialize_with = "opt_duration")]
    pub(crate) timeout: Option<Duration>,
}

impl ScheduleConfig {
    /// The schedule `[schedules.NAME]` declares (checked at load).
    pub(crate) fn schedule(&self, name: &str) -> Result<Schedule, String> {
        let mut options = TaskOptions::new();
        options.queue = self.queue.clone();
        options.priority = self.priority;
        options.max_attempts = self.max_attempts;
        options.timeout = self.timeout;
        let missed = match &self.missed {
            Some(m) => m.parse::<MissedTicks>().map_err(|e| e.to_string())?,
            None => MissedTicks::default(),
        };
        let schedule = Schedule::new(name, self.cron.clone(), self.task.clone())
            .time_zone(self.time_zone.clone().unwrap_or_else(|| "UTC".to_owned()))
            .input(self.input.clone().unwrap_or(serde_json::Value::Null))
            .options(options)
            .missed(missed);
        schedule.validate().map_err(|e| e.to_string())?;
        Ok(schedule)
    }
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerConfig {
    /// Address to listen on.
    #[serde(default)]
    pub(crate) listen: Option<Spanned<String>>,
}

/// `[worker]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkerConfig {
    /// Tasks at once in this process.
    #[serde(default)]
    pub(crate) concurrency: Option<usize>,
    /// Queues to take tasks from.
    #[serde(default)]
    pub(crate) queues: Option<Vec<String>>,
}

/// `[runners.NAME]`: how tasks named NAME run.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunnerConfig {
    /// A command (argv, no shell): input on stdin, JSON output on stdout.
    #[serde(default)]
    pub(crate) exec: Option<Vec<String>>,
    /// A URL the task is POSTed to.
    #[serde(default)]
    pub(crate) http: Option<String>,
    /// Per-attempt time limit.
    #[serde(default, deserialize_with = "opt_duration")]
    pub(crate) timeout: Option<Duration>,
    /// Attempts allowed.
    #[serde(default)]
    pub(crate) max_attempts: Option<u32>,
    /// The queue tasks of this name go to.
    #[serde(default)]
    pub(crate) queue: Option<String>,
}

/// `[webhooks]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhooksConfig {
    /// Let webhooks reach loopback and private addresses.
    #[serde(default)]
    pub(crate) allow_private_targets: Option<bool>,
    /// Wait before the second attempt of a delivery (doubles after).
    #[serde(default, deserialize_with = "opt_duration")]
    pub(crate) retry_initial: Option<Duration>,
    /// Attempts per delivery.
    #[serde(default)]
    pub(crate) max_attempts: Option<u32>,
    /// Time limit of one attempt.
    #[serde(default, deserialize_with = "opt_duration")]
    pub(crate) timeout: Option<Duration>,
}

impl WebhooksConfig {
    /// The settings, defaults filled in; bad values are usage errors.
    pub(crate) fn settings(&self) -> anyhow::Result<offload_server::WebhookSettings> {
        let mut s = offload_server::WebhookSettings::default();
        if let Some(allow) = self.allow_private_targets {
            s.allow_private_targets = allow;
        }
        if let Some(d) = self.retry_initial {
            if d.is_zero() || d > Duration::from_secs(3600) {
                return Err(crate::failure::Failure::usage(
                    "[webhooks] retry_initial must be between 1ms and 1h",
                ));
            }
            s.retry_initial = d;
        }
        if let Some(n) = self.max_attempts {
            if !(1..=100).contains(&n) {
                return Err(crate::failure::Failure::usage(
                    "[webhooks] max_attempts must be between 1 and 100",
                ));
            }
            s.max_attempts = n;
        }
        if let Some(d) = self.timeout {
            if d.is_zero() || d > Duration::from_secs(300) {
                return Err(crate::failure::Failure::usage(
                    "[webhooks] timeout must be between 1ms and 5m",
                ));
            }
            s.timeout = d;
        }
        Ok(s)
    }
}

/// How a runner runs its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunnerKind<'a> {
    /// A local command.
    Exec(&'a [String]),
    /// An HTTP push target.
    Http(&'a str),
}

impl RunnerConfig {
    /// Exec or http (checked at load: exactly one is set).
    pub(crate) fn kind(&self) -> Option<RunnerKind<'_>> {
        match (&self.exec, &self.http) {
            (Some(argv), None) => Some(RunnerKind::Exec(argv)),
            (None, Some(url)) => Some(RunnerKind::Http(url)),
            _ => None,
        }
    }
}

impl Config {
    /// The runner declared for task `name`, if any.
    pub(crate) fn runner(&self, name: &str) -> Option<&RunnerConfig> {
        self.runners.get(name).map(|r| r.get_ref())
    }

    /// The `[worker]` table (empty when absent).
    pub(crate) fn worker(&self) -> WorkerConfig {
        self.worker
            .as_ref()
            .map(|w| WorkerConfig {
                concurrency: w.get_ref().concurrency,
                queues: w.get_ref().queues.clone(),
            })
            .unwrap_or_default()
    }

    /// Parses and checks `text` read from `path`.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let message = crate::suggest::unknown_field(e.message(), "key");
            ConfigError::at(path, text, e.span(), message)
        })?;
        config.check(text, path)?;
        Ok(config)
    }

    /// Reads the file at `path`. A missing file is `Ok(None)` unless
    /// `explicit` (the user named it), when it is an error.
    pub(crate) fn load(path: &Path, explicit: bool) -> Result<Option<Self>, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(None),
            Err(e) => Err(ConfigError {
                path: path.to_owned(),
                position: None,
                message: format!("cannot read the configuration file: {e}"),
            }),
        }
    }

    /// Every `[limits.*.*]`, with where it is written, checked at load.
    fn limit_entries(&self) -> Vec<(String, Range<usize>, Result<Limit, String>)> {
        let mut out = Vec::new();
        for (scope, table) in [
            (LimitScope::Name, &self.limits.name),
            (LimitScope::Queue, &self.limits.queue),
        ] {
            for (target, l) in table {
                out.push((
                    format!("[limits.{}.{target}]", scope.as_str()),
                    l.span(),
                    l.get_ref().limit(scope, target),
                ));
            }
        }
        out
    }

    /// Every limit of `offload.toml`.
    pub(crate) fn limits(&self) -> Vec<Limit> {
        self.limit_entries()
            .into_iter()
            .filter_map(|(_, _, l)| l.ok())
            .collect()
    }

    /// Every `[schedules.NAME]`, checked at load.
    pub(crate) fn schedules(&self) -> Vec<Schedule> {
        self.schedules
            .iter()
            .filter_map(|(name, s)| s.get_ref().schedule(name).ok())
            .collect()
    }

    /// The rules serde cannot express.
    fn check(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        for (table, span, limit) in self.limit_entries() {
            if let Err(m) = limit {
                return Err(ConfigError::at(
                    path,
                    text,
                    Some(span),
                    format!("{table} {m}"),
                ));
            }
        }
        for (name, schedule) in &self.schedules {
            if let Err(m) = schedule.get_ref().schedule(name) {
                return Err(ConfigError::at(
                    path,
                    text,
                    Some(schedule.span()),
                    format!("[schedules.{name}] {m}"),
                ));
            }
        }
        if let Some(listen) = &self.server.listen
            && listen.get_ref().parse::<SocketAddr>().is_err()
        {
            return Err(ConfigError::at(
                path,
                text,
                Some(listen.span()),
                format!(
                    "[server] listen = {:?} is not an address such as 127.0.0.1:8750",
                    listen.get_ref()
                ),
            ));
        }
        if let Some(worker) = &self.worker {
            let w = worker.get_ref();
            let fail = |m: String| ConfigError::at(path, text, Some(worker.span()), m);
            if w.concurrency == Some(0) {
                return Err(fail(
                    "[worker] concurrency must be at least 1, got 0".into(),
                ));
            }
            if let Some(queues) = &w.queues {
                if queues.is_empty() {
                    return Err(fail("[worker] queues must name at least one queue".into()));
                }
                for q in queues {
                    let opts = TaskOptions::new().queue(q.clone());
                    if let Err(e) = NewTask::new("x", serde_json::Value::Null)
                        .options(opts)
                        .validate()
                    {
                        return Err(fail(format!("[worker] queues: {e}")));
                    }
                }
            }
        }
        for (name, runner) in &self.runners {
            let fail = |m: String| {
                ConfigError::at(
                    path,
                    text,
                    Some(runner.span()),
                    format!("[runners.{name}] {m}"),
                )
            };
            let r = runner.get_ref();
            if let Err(e) = NewTask::new(name.clone(), serde_json::Value::Null).validate() {
                return Err(fail(format!("is not a valid task name: {e}")));
            }
            match (&r.exec, &r.http) {
                (None, None) => {
                    return Err(fail(
                        "needs `exec = [\"command\", \"arg\", ...]` or `http = \"http://...\"`"
                            .into(),
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(fail(
                        "has both `exec` and `http`; a runner is one or the other".into(),
                    ));
                }
                (Some(argv), None) => {
                    if argv.first().is_none_or(|c| c.trim().is_empty()) {
                        return Err(fail(
                            "exec must name a command, e.g. exec = [\"python3\", \"task.py\"]"
                                .into(),
                        ));
                    }
                }
                (None, Some(url)) => {
                    if !(url.starts_with("http://") || url.starts_with("https://"))
                        || url.len() <= "https://".len()
                    {
                        return Err(fail(format!(
                            "http = {url:?} is not an http:// or https:// URL"
                        )));
                    }
                }
            }
            let mut opts = TaskOptions::new();
            opts.queue = r.queue.clone();
            opts.max_attempts = r.max_attempts;
            opts.timeout = r.timeout;
            if let Err(e) = NewTask::new(name.clone(), serde_json::Value::Null)
                .options(opts)
                .validate()
            {
                return Err(fail(e.to_string()));
            }
        }
        Ok(())
    }
}

/// A problem with the configuration file, as one line:
/// `offload.toml:3:1: unknown key ...`.
#[derive(Debug)]
pub(crate) struct ConfigError {
    path: PathBuf,
    /// 1-based line and column.
    position: Option<(usize, usize)>,
    message: String,
}

impl ConfigError {
    fn at(path: &Path, text: &str, span: Option<Range<usize>>, message: String) -> Self {
        Self {
            path: path.to_owned(),
            position: span.map(|s| line_col(text, s.start)),
            message: message.replace('\n', " ").trim().to_owned(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(
                f,
                "{}: line {line}, column {col}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// `"2m"` (see `offload::parse_duration`) or a number of seconds.
fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Int(u64),
        Float(f64),
    }
    use serde::de::Error;
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Text(s)) => offload::parse_duration(&s)
            .map(Some)
            .map_err(D::Error::custom),
        Some(Raw::Int(n)) => Ok(Some(Duration::from_secs(n))),
        Some(Raw::Float(n)) => Duration::try_from_secs_f64(n)
            .map(Some)
            .map_err(|_| D::Error::custom(format!("invalid duration {n}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("offload.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_the_spec_example() {
        let c = parse(
            r#"
database_url = "sqlite://offload.db"

[server]
listen = "127.0.0.1:8750"

[worker]
concurrency = 100
queues = ["default"]

[runners.resize_image]
exec = ["python3", "resize.py"]
timeout = "2m"
max_attempts = 5

[runners.notify_crm]
http = "http://127.0.0.1:9000/tasks/notify"

[webhooks]
allow_private_targets = false
"#,
        )
        .unwrap();
        assert_eq!(c.database_url.as_deref(), Some("sqlite://offload.db"));
        assert_eq!(c.worker().concurrency, Some(100));
        let r = c.runner("resize_image").unwrap();
        assert_eq!(r.timeout, Some(Duration::from_secs(120)));
        assert_eq!(r.max_attempts, Some(5));
        assert!(matches!(r.kind(), Some(RunnerKind::Exec(_))));
        assert!(matches!(
            c.runner("notify_crm").unwrap().kind(),
            Some(RunnerKind::Http(_))
        ));
        assert_eq!(c.webhooks.allow_private_targets, Some(false));
    }

    #[test]
    fn empty_file_is_fine() {
        let c = parse("").unwrap();
        assert!(c.runners.is_empty());
        assert!(c.database_url.is_none());
    }

    #[test]
    fn unknown_key_names_line_and_suggestion() {
        let e = parse("[worker]\nconcurency = 4\n").unwrap_err();
        assert!(e.starts_with("offload.toml: line 2, column 1: "), "{e}");
        assert!(e.contains("`concurency`"), "{e}");
        assert!(e.contains("did you mean `concurrency`?"), "{e}");
        let e = parse("[runner.x]\nexec = [\"a\"]\n").unwrap_err();
        assert!(e.contains("did you mean `runners`?"), "{e}");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = parse("database_url = \n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        let e = parse("[runners.a]\ntimeout = \"soon\"\nexec = [\"x\"]\n").unwrap_err();
        assert!(e.contains("soon"), "{e}");
        let e = parse("[runners.a]\ntimeout = \"1s\"\n").unwrap_err();
        assert!(e.contains("[runners.a] needs"), "{e}");
        let e = parse("[runners.a]\nexec = []\n").unwrap_err();
        assert!(e.contains("must name a command"), "{e}");
        let e = parse("[runners.a]\nexec = [\"x\"]\nmax_attempts = 0\n").unwrap_err();
        assert!(e.contains("max_attempts"), "{e}");
        let e = parse("[runners.a]\nhttp = \"ftp://x\"\n").unwrap_err();
        assert!(e.contains("http://"), "{e}");
        let e = parse("[worker]\nconcurrency = 0\n").unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        let e = parse("[server]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = parse("[runners.\"a b\"]\nexec = [\"x\"]\n").unwrap_err();
        assert!(e.contains("task name"), "{e}");
    }

    #[test]
    fn missing_default_file_is_fine_but_explicit_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offload.toml");
        assert!(Config::load(&path, false).unwrap().is_none());
        let e = Config::load(&path, true).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
