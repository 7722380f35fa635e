//! [`TaskOptions`] and [`NewTask`]: what a producer hands to enqueue, with
//! the validation every interface shares.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    MAX_ATTEMPTS_LIMIT, MAX_DURATION, MAX_NAME_LEN, MAX_QUEUE_LEN, RetryPolicy, TaskId,
    UniquePolicy, ValidationError, check_fairness_key, check_unique_key,
};

/// How a task is to be run. Every field is optional; unset fields take the
/// runner's or offload's defaults.
///
/// ```
/// use std::time::Duration;
/// use offload_types::TaskOptions;
/// let opts = TaskOptions::new()
///     .queue("reports")
///     .priority(10)
///     .delay(Duration::from_secs(30))
///     .max_attempts(5)
///     .timeout(Duration::from_secs(120))
///     .tag("nightly");
/// assert_eq!(opts.queue.as_deref(), Some("reports"));
/// ```
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskOptions {
    /// Queue; default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Higher runs first; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Earliest start. Exclusive with `delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// Start no sooner than this long after enqueue. Exclusive with `run_at`.
    #[serde(
        default,
        with = "crate::duration::serde_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "30s"))]
    pub delay: Option<Duration>,
    /// Attempts allowed; default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Per-attempt time limit.
    #[serde(
        default,
        with = "crate::duration::serde_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "2m"))]
    pub timeout: Option<Duration>,
    /// Back-off between attempts, overriding the runner's policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Free labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// A JSON object for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// An `http://` or `https://` URL that `offload serve` POSTs this
    /// task's end to (`task.succeeded`, `task.failed`, `task.aborted`),
    /// signed like every webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Tasks that must all succeed before this one starts; until then it
    /// is `blocked`. Each must exist when this task is enqueued (or come
    /// earlier in the same batch), so dependencies never form a cycle.
    /// When one fails or is aborted, this task is aborted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub depends_on: Vec<TaskId>,
    /// A de-duplication key: what happens when a task with the same key
    /// exists is set by `unique` (default: the enqueue returns that task
    /// while it waits or runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// How `unique_key` is applied; needs `unique_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<UniquePolicy>,
    /// A key (e.g. a tenant id) that workers share their claims across,
    /// round-robin, so one key's backlog does not starve another's; a
    /// limit's `max_queued_per_key` caps the waiting tasks per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fairness_key: Option<String>,
}

/// Most tasks one task may depend on.
pub const MAX_DEPENDENCIES: usize = 100;

/// Longest webhook URL accepted.
pub const MAX_WEBHOOK_URL_LEN: usize = 2048;

/// Checks the shape of a webhook URL: `http://` or `https://`, a host, at
/// most [`MAX_WEBHOOK_URL_LEN`] characters, no whitespace or control
/// characters. (Where it points is checked when it is delivered to.)
pub fn check_webhook_url(field: &str, url: &str) -> Result<(), ValidationError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    if url.len() > MAX_WEBHOOK_URL_LEN
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
        || host.is_none_or(|h| h.is_empty() || h.starts_with(':') || h.contains('@'))
    {
        return Err(ValidationError::new(
            field,
            format!(
                "must be an http:// or https:// URL with a host and no credentials, at most \
                 {MAX_WEBHOOK_URL_LEN} characters"
            ),
        ));
    }
    Ok(())
}

impl TaskOptions {
    /// Options with every field unset.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a task this one depends on.
    pub fn depends_on(mut self, id: TaskId) -> Self {
        self.depends_on.push(id);
        self
    }
    /// Sets the unique key (mode `reject` unless [`unique`](Self::unique) says otherwise).
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }
    /// Sets how the unique key is applied.
    pub fn unique(mut self, policy: UniquePolicy) -> Self {
        self.unique = Some(policy);
        self
    }
    /// Sets the fairness key.
    pub fn fairness_key(mut self, key: impl Into<String>) -> Self {
        self.fairness_key = Some(key.into());
        self
    }
    /// Sets the webhook URL this task's end is POSTed to.
    pub fn webhook(mut self, url: impl Into<String>) -> Self {
        self.webhook = Some(url.into());
        self
    }
    /// Sets the queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
    /// Sets the priority (higher first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }
    /// Sets the earliest start time.
    pub fn run_at(mut self, run_at: DateTime<Utc>) -> Self {
        self.run_at = Some(run_at);
        self
    }
    /// Delays the start.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
    /// Sets the attempts allowed.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }
    /// Sets the per-attempt time limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// Sets the back-off policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }
    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }
    /// Sets the metadata object.
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Fills every unset field of `self` from `defaults`.
    pub fn or(mut self, defaults: &TaskOptions) -> Self {
        self.queue = self.queue.or_else(|| defaults.queue.clone());
        self.priority = self.priority.or(defaults.priority);
        if self.run_at.is_none() && self.delay.is_none() {
            self.run_at = defaults.run_at;
            self.delay = defaults.delay;
        }
        self.max_attempts = self.max_attempts.or(defaults.max_attempts);
        self.timeout = self.timeout.or(defaults.timeout);
        self.retry = self.retry.or_else(|| defaults.retry.clone());
        if self.tags.is_empty() {
            self.tags = defaults.tags.clone();
        }
        self.metadata = self.metadata.or_else(|| defaults.metadata.clone());
        self.webhook = self.webhook.or_else(|| defaults.webhook.clone());
        if self.depends_on.is_empty() {
            self.depends_on = defaults.depends_on.clone();
        }
        if self.unique_key.is_none() {
            self.unique_key = defaults.unique_key.clone();
        }
        self.unique = self.unique.or_else(|| defaults.unique.clone());
        if self.fairness_key.is_none() {
            self.fairness_key = defaults.fairness_key.clone();
        }
        self
    }

    /// Checks every rule; the error names the first field that breaks one.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(q) = &self.queue {
            check_name("queue", q, MAX_QUEUE_LEN)?;
        }
        if self.run_at.is_some() && self.delay.is_some() {
            return Err(ValidationError::new(
                "delay",
                "give either delay or run_at, not both",
            ));
        }
        for (field, value) in [("delay", self.delay), ("timeout", self.timeout)] {
            if let Some(d) = value
                && d > MAX_DURATION
            {
                return Err(ValidationError::new(
                    field,
                    format!("{d:?} is longer than 100 years"),
                ));
            }
        }
        if let Some(url) = &self.webhook {
            check_webhook_url("webhook", url)?;
        }
        if let Some(n) = self.max_attempts
            && !(1..=MAX_ATTEMPTS_LIMIT).contains(&n)
        {
            return Err(ValidationError::new(
                "max_attempts",
                format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {n}"),
            ));
        }
        if let Some(t) = self.timeout
            && t.is_zero()
        {
            return Err(ValidationError::new("timeout", "must be longer than 0s"));
        }
        if let Some(r) = &self.retry {
            if !r.multiplier.is_finite() || r.multiplier < 1.0 {
                return Err(ValidationError::new(
                    "retry.multiplier",
                    format!("must be a number >= 1, got {}", r.multiplier),
                ));
            }
            if r.initial > MAX_DURATION || r.max > MAX_DURATION {
                return Err(ValidationError::new(
                    "retry",
                    "initial and max must not be longer than 100 years",
                ));
            }
            if !(0.0..=1.0).contains(&r.jitter) {
                return Err(ValidationError::new(
                    "retry.jitter",
                    format!("must be between 0 and 1, got {}", r.jitter),
                ));
            }
        }
        for tag in &self.tags {
            if tag.is_empty() || tag.len() > MAX_NAME_LEN {
                return Err(ValidationError::new(
                    "tags",
                    format!("each tag must be 1 to {MAX_NAME_LEN} characters, got {tag:?}"),
                ));
            }
        }
        if let Some(m) = &self.metadata
            && !m.is_object()
        {
            return Err(ValidationError::new(
                "metadata",
                format!("must be a JSON object, got {m}"),
            ));
        }
        check_dependencies("depends_on", &self.depends_on, MAX_DEPENDENCIES)?;
        if let Some(key) = &self.unique_key {
            check_unique_key(key)?;
        }
        if let Some(key) = &self.fairness_key {
            check_fairness_key(key)?;
        }
        if let Some(policy) = &self.unique {
            if self.unique_key.is_none() {
                return Err(ValidationError::new(
                    "unique",
                    "needs a unique_key to apply to",
                ));
            }
            policy.validate()?;
        }
        Ok(())
    }

    /// The effective start time for a task enqueued at `now`.
    pub fn start_time(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match (self.run_at, self.delay) {
            (Some(at), _) => at,
            (None, Some(d)) => chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .unwrap_or(now),
            (None, None) => now,
        }
    }
}

/// Checks a task or queue name: 1 to `max` characters of letters, digits and
/// `_ - . : /`.
pub(crate) fn check_name(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.is_empty() || value.len() > max {
        return Err(ValidationError::new(
            field,
            format!(
                "must be 1 to {max} characters, got {} characters",
                value.len()
            ),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/')))
    {
        return Err(ValidationError::new(
            field,
            format!("{value:?} contains {bad:?}; use letters, digits and _ - . : /"),
        ));
    }
    Ok(())
}

/// Checks a list of task ids: at most `max`, no id twice.
fn check_dependencies(field: &str, ids: &[TaskId], max: usize) -> Result<(), ValidationError> {
    if ids.len() > max {
        return Err(ValidationError::new(
            field,
            format!("at most {max} tasks, got {}", ids.len()),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    if let Some(dup) = ids.iter().find(|id| !seen.insert(**id)) {
        return Err(ValidationError::new(
            field,
            format!("{dup} is listed twice"),
        ));
    }
    Ok(())
}

/// Most members a group may have (the callback waits for all of them).
pub const MAX_GROUP_SIZE: usize = 10_000;

/// A task to enqueue: name, input and options.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// The id to give it; a fresh UUIDv7 by default.
    pub id: TaskId,
    /// The task type.
    pub name: String,
    /// Its arguments.
    pub input: serde_json::Value,
    /// How to run it.
    pub options: TaskOptions,
    /// The group it belongs to: the id of the group's callback task
    /// (set on the members and on the callback itself).
    pub group_id: Option<TaskId>,
    /// Tasks that must end, whatever their outcome, before this one
    /// starts (a group's callback waits for its members this way). Like
    /// `depends_on`, each must exist or come earlier in the batch.
    pub after: Vec<TaskId>,
}

impl NewTask {
    /// A task with default options.
    pub fn new(name: impl Into<String>, input: serde_json::Value) -> Self {
        Self {
            id: TaskId::new(),
            name: name.into(),
            input,
            options: TaskOptions::default(),
            group_id: None,
            after: Vec::new(),
        }
    }

    /// Replaces the options.
    pub fn options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }

    /// Checks the name and the options.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_name("name", &self.name, MAX_NAME_LEN)?;
        self.options.validate()?;
        check_dependencies("after", &self.after, MAX_GROUP_SIZE)?;
        if let Some(dep) = self
            .options
            .depends_on
            .iter()
            .chain(&self.after)
            .find(|dep| **dep == self.id)
        {
            return Err(ValidationError::new(
                "depends_on",
                format!("task {dep} cannot depend on itself"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_fields() {
        assert_eq!(
            NewTask::new("", serde_json::Value::Null)
                .validate()
                .unwrap_err()
                .field,
            "name"
        );
        assert_eq!(
            NewTask::new("a b", serde_json::Value::Null)
                .validate()
                .unwrap_err()
                .field,
            "name"
        );
        let opts = TaskOptions::new().max_attempts(0);
        assert_eq!(opts.validate().unwrap_err().field, "max_attempts");
        let opts = TaskOptions::new().metadata(serde_json::json!([1]));
        assert_eq!(opts.validate().unwrap_err().field, "metadata");
        let opts = TaskOptions::new()
            .run_at(Utc::now())
            .delay(Duration::from_secs(1));
        assert_eq!(opts.validate().unwrap_err().field, "delay");
    }

    #[test]
    fn unknown_option_fields_are_refused() {
        let err = serde_json::from_str::<TaskOptions>(r#"{"priorty": 3}"#).unwrap_err();
        assert!(err.to_string().contains("priorty"), "{err}");
    }

    proptest! {
        #[test]
        fn name_validation_never_panics(name in ".{0,300}") {
            let _ = NewTask::new(name, serde_json::Value::Null).validate();
        }

        #[test]
        fn options_json_round_trips(priority in any::<i32>(), attempts in 1u32..1000, secs in 0u64..100_000) {
            let opts = TaskOptions::new().priority(priority).max_attempts(attempts).delay(Duration::from_secs(secs));
            let text = serde_json::to_string(&opts).unwrap();
            let back: TaskOptions = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, opts);
        }
    }
}
