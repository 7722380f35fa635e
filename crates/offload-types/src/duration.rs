//! Human-friendly durations (`"30s"`, `"2m"`, `"1h 30m"`, `"250ms"`) for the
//! CLI, the configuration file and JSON.

use std::time::Duration;

use crate::MAX_DURATION;

/// A duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (examples: 30s, 2m, 1h 30m, 250ms)")]
pub struct DurationParseError {
    input: String,
    reason: String,
}

/// Parses `"30s"`, `"2m"`, `"1h 30m"`, `"250ms"`, or a plain number of seconds.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(offload_types::parse_duration("2m").unwrap(), Duration::from_secs(120));
/// assert_eq!(offload_types::parse_duration("1.5").unwrap(), Duration::from_millis(1500));
/// assert!(offload_types::parse_duration("soon").is_err());
/// assert!(offload_types::parse_duration("1e19").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, DurationParseError> {
    let trimmed = input.trim();
    let err = |reason: &str| DurationParseError {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    if trimmed.is_empty() {
        return Err(err("empty"));
    }
    let parsed = match trimmed.parse::<f64>() {
        Ok(secs) => {
            Duration::try_from_secs_f64(secs).map_err(|_| err("out of range or negative"))?
        }
        Err(_) => humantime::parse_duration(trimmed).map_err(|e| err(&e.to_string()))?,
    };
    if parsed > MAX_DURATION {
        return Err(err("longer than 100 years"));
    }
    Ok(parsed)
}

/// Formats a duration the way [`parse_duration`] reads it back.
pub(crate) fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    humantime::format_duration(d).to_string()
}

pub(crate) mod serde_duration {
    //! `Option<Duration>` as a string such as `"30s"` (numbers are seconds).
    use super::{format_duration, parse_duration};
    use serde::{Deserialize, Deserializer, Serializer, de};
    use std::time::Duration;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Secs(f64),
    }

    fn from_raw<E: de::Error>(raw: Raw) -> Result<Duration, E> {
        match raw {
            Raw::Text(s) => parse_duration(&s).map_err(E::custom),
            Raw::Secs(n) => parse_duration(&n.to_string()).map_err(E::custom),
        }
    }

    /// Serializes an optional duration as `"30s"`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    /// Reads `"30s"`, `30` or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<Raw>::deserialize(d)?.map(from_raw).transpose()
    }

    /// The same for a required duration.
    pub mod required {
        use super::*;

        /// Serializes a duration as `"30s"`.
        pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&format_duration(*d))
        }

        /// Reads `"30s"` or `30`.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
            from_raw(Raw::deserialize(d)?)
        }
    }
}
