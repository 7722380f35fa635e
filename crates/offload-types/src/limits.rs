//! [`Limit`]: flow control for a task name or a queue, enforced by the
//! store for every worker that shares it — how many run at once (in all,
//! and per key taken from the input), how many start per period, and how
//! many may wait per fairness key.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::options::check_name;
use crate::{MAX_NAME_LEN, MAX_QUEUE_LEN, ValidationError, parse_duration};

/// Largest count a limit accepts.
pub const MAX_LIMIT: u32 = 1_000_000;
/// Longest rate period (the store keeps one period of start times).
pub const MAX_RATE_PERIOD: Duration = Duration::from_secs(24 * 3600);
/// Longest `key` (a field name or a JSON pointer).
pub const MAX_LIMIT_KEY_LEN: usize = 200;
/// Longest `fairness_key`.
pub const MAX_FAIRNESS_KEY_LEN: usize = 255;

/// What a limit applies to.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// Tasks with this name, in any queue.
    Name,
    /// Tasks in this queue, of any name.
    Queue,
}

impl LimitScope {
    /// The name used in the API, the CLI and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitScope::Name => "name",
            LimitScope::Queue => "queue",
        }
    }
}

impl FromStr for LimitScope {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "name" => Ok(LimitScope::Name),
            "queue" => Ok(LimitScope::Queue),
            _ => Err(ValidationError::new(
                "scope",
                format!("unknown scope {s:?}: expected name or queue"),
            )),
        }
    }
}

/// At most `limit` starts in any `period`: `50/s`, `10/m`, `1000/h`,
/// `5/10s` (a count, a slash, and a unit or a duration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Starts allowed per period.
    pub limit: u32,
    /// The period.
    pub period: Duration,
}

impl FromStr for Rate {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            ValidationError::new(
                "rate",
                format!(
                    "{s:?} {why}; write a count per period such as 50/s, 10/m, 1000/h or 5/10s"
                ),
            )
        };
        let (n, per) = s.trim().split_once('/').ok_or_else(|| bad("has no '/'"))?;
        let limit: u32 = n
            .trim()
            .parse()
            .map_err(|_| bad("does not start with a count"))?;
        let per = per.trim();
        let period = match per {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86400),
            other => parse_duration(other).map_err(|_| bad("has no period"))?,
        };
        let rate = Rate { limit, period };
        rate.validate()?;
        Ok(rate)
    }
}

impl Rate {
    /// Checks the count and the period.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !(1..=MAX_LIMIT).contains(&self.limit) {
            return Err(ValidationError::new(
                "rate",
                format!("the count must be 1 to {MAX_LIMIT}, got {}", self.limit),
            ));
        }
        if self.period < Duration::from_millis(1) || self.period > MAX_RATE_PERIOD {
            return Err(ValidationError::new(
                "rate",
                format!("the period must be 1ms to 1d, got {:?}", self.period),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.period;
        match p.as_secs() {
            1 if p.subsec_nanos() == 0 => write!(f, "{}/s", self.limit),
            60 if p.subsec_nanos() == 0 => write!(f, "{}/m", self.limit),
            3600 if p.subsec_nanos() == 0 => write!(f, "{}/h", self.limit),
            86400 if p.subsec_nanos() == 0 => write!(f, "{}/d", self.limit),
            _ if p.subsec_nanos() == 0 => write!(f, "{}/{}s", self.limit, p.as_secs()),
            _ => write!(f, "{}/{}ms", self.limit, p.as_millis()),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Flow control for the tasks of one name or one queue, across every
/// worker sharing the store. Tasks over a limit wait (`pending`); they do
/// not fail.
///
/// ```
/// use offload_types::{Limit, LimitScope};
/// // at most 1 running import per customer, 10 in all, 50 starts a second
/// let l = Limit::name("import").concurrency(10).per_key("customer_id", 1).rate("50/s".parse().unwrap());
/// assert!(l.validate().is_ok());
/// assert_eq!(l.scope, LimitScope::Name);
/// ```
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// `name` or `queue`.
    pub scope: LimitScope,
    /// The task name or queue it applies to.
    pub target: String,
    /// At most this many running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// The input field that `key_concurrency` counts by: a top-level field
    /// name (`customer_id`) or a JSON pointer (`/customer/id`). Tasks
    /// whose input lacks it are not limited by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// At most this many running at once per value of `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_concurrency: Option<u32>,
    /// At most this many starts in any period (`50/s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "50/s"))]
    pub rate: Option<Rate>,
    /// At most this many waiting tasks (scheduled, blocked or pending) per
    /// `fairness_key`; an enqueue beyond it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued_per_key: Option<u32>,
}

impl Limit {
    /// An empty limit for task name `name`.
    pub fn name(name: impl Into<String>) -> Self {
        Self::new(LimitScope::Name, name)
    }
    /// An empty limit for queue `queue`.
    pub fn queue(queue: impl Into<String>) -> Self {
        Self::new(LimitScope::Queue, queue)
    }
    fn new(scope: LimitScope, target: impl Into<String>) -> Self {
        Self {
            scope,
            target: target.into(),
            concurrency: None,
            key: None,
            key_concurrency: None,
            rate: None,
            max_queued_per_key: None,
        }
    }
    /// Sets the concurrency limit.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = Some(n);
        self
    }
    /// Limits running tasks per value of the input field `key`.
    pub fn per_key(mut self, key: impl Into<String>, n: u32) -> Self {
        self.key = Some(key.into());
        self.key_concurrency = Some(n);
        self
    }
    /// Sets the rate.
    pub fn rate(mut self, rate: Rate) -> Self {
        self.rate = Some(rate);
        self
    }
    /// Sets the quota of waiting tasks per fairness key.
    pub fn max_queued_per_key(mut self, n: u32) -> Self {
        self.max_queued_per_key = Some(n);
        self
    }

    /// The JSON pointer `key` names (`customer_id` → `/customer_id`).
    pub fn key_pointer(&self) -> Option<String> {
        self.key.as_ref().map(|k| {
            if k.starts_with('/') {
                k.clone()
            } else {
                format!("/{}", k.replace('~', "~0").replace('/', "~1"))
            }
        })
    }

    /// Checks every rule; the error names the first field that breaks one.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self.scope {
            LimitScope::Name => check_name("target", &self.target, MAX_NAME_LEN)?,
            LimitScope::Queue => check_name("target", &self.target, MAX_QUEUE_LEN)?,
        }
        for (field, n) in [
            ("concurrency", self.concurrency),
            ("key_concurrency", self.key_concurrency),
            ("max_queued_per_key", self.max_queued_per_key),
        ] {
            if let Some(n) = n
                && !(1..=MAX_LIMIT).contains(&n)
            {
                return Err(ValidationError::new(
                    field,
                    format!("must be 1 to {MAX_LIMIT}, got {n}"),
                ));
            }
        }
        if let Some(r) = &self.rate {
            r.validate()?;
        }
        match (&self.key, self.key_concurrency) {
            (Some(_), None) => {
                return Err(ValidationError::new(
                    "key_concurrency",
                    "key needs key_concurrency",
                ));
            }
            (None, Some(_)) => {
                return Err(ValidationError::new("key", "key_concurrency needs a key"));
            }
            (Some(k), Some(_)) => {
                if k.is_empty()
                    || k.len() > MAX_LIMIT_KEY_LEN
                    || k == "/"
                    || k.chars().any(char::is_control)
                {
                    return Err(ValidationError::new(
                        "key",
                        format!(
                            "must be a field name or a JSON pointer of 1 to {MAX_LIMIT_KEY_LEN} \
                             characters, got {k:?}"
                        ),
                    ));
                }
            }
            (None, None) => {}
        }
        if self.concurrency.is_none()
            && self.key_concurrency.is_none()
            && self.rate.is_none()
            && self.max_queued_per_key.is_none()
        {
            return Err(ValidationError::new(
                "limit",
                "set at least one of concurrency, key_concurrency, rate, max_queued_per_key",
            ));
        }
        Ok(())
    }
}

/// Checks a fairness key: 1 to [`MAX_FAIRNESS_KEY_LEN`] characters, no
/// control characters.
pub fn check_fairness_key(key: &str) -> Result<(), ValidationError> {
    if key.is_empty() || key.len() > MAX_FAIRNESS_KEY_LEN || key.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "fairness_key",
            format!("must be 1 to {MAX_FAIRNESS_KEY_LEN} characters without control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rates_parse_and_print() {
        let r: Rate = "50/s".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r,
            Rate {
                limit: 50,
                period: Duration::from_secs(1)
            }
        );
        assert_eq!(r.to_string(), "50/s");
        let r: Rate = "5/10s".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.period, Duration::from_secs(10));
        assert_eq!(r.to_string(), "5/10s");
        assert_eq!(
            "1000/h".parse::<Rate>().map(|r| r.to_string()),
            Ok("1000/h".into())
        );
        for bad in ["50", "x/s", "0/s", "5/never", "5/2d", "5/0s", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_are_checked() {
        assert!(Limit::name("import").concurrency(2).validate().is_ok());
        assert!(Limit::name("import").validate().is_err());
        assert!(Limit::queue("bad queue").concurrency(1).validate().is_err());
        let mut l = Limit::name("import");
        l.key = Some("customer_id".into());
        assert_eq!(
            l.validate().map_err(|e| e.field),
            Err("key_concurrency".into())
        );
        assert!(
            Limit::name("i")
                .per_key("/customer/id", 1)
                .validate()
                .is_ok()
        );
        assert!(Limit::name("i").concurrency(0).validate().is_err());
        assert_eq!(
            Limit::name("i").per_key("a/b", 1).key_pointer(),
            Some("/a~1b".into())
        );
        assert_eq!(
            Limit::name("i").per_key("/a/b", 1).key_pointer(),
            Some("/a/b".into())
        );
    }

    proptest! {
        #[test]
        fn any_rate_text_parses_or_is_refused_and_round_trips(text in ".{0,20}") {
            if let Ok(r) = text.parse::<Rate>() {
                prop_assert_eq!(r.to_string().parse::<Rate>(), Ok(r));
            }
        }
    }
}
