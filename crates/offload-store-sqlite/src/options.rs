//! [`SqliteOptions`] and [`Durability`]: how a store is opened, and the
//! `sqlite://` URL form that carries them (`sqlite://offload.db`,
//! `sqlite://dir/x.db?durability=full`, `sqlite:///abs/path.db`).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use offload_types::{ValidationError, parse_duration};

/// How much a commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL`: a commit survives a crash of the process (the
    /// default). A power loss may lose the last commits, never corrupt.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is flushed to disk before it
    /// returns, so it survives a power loss too.
    Full,
}

impl Durability {
    /// The name used in URLs: `normal` or `full`.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Normal => "normal",
            Durability::Full => "full",
        }
    }
}

impl FromStr for Durability {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "normal" => Ok(Durability::Normal),
            "full" => Ok(Durability::Full),
            _ => Err(ValidationError::new(
                "durability",
                format!("expected normal or full, got {s:?}"),
            )),
        }
    }
}

/// Default of [`SqliteOptions::busy_timeout`]: how long a write waits for
/// another process holding the database's write lock.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Default of [`SqliteOptions::readers`].
pub const DEFAULT_READERS: usize = 4;

/// How to open a [`SqliteStore`](crate::SqliteStore).
///
/// ```
/// use offload_store_sqlite::{Durability, SqliteOptions};
/// let options = SqliteOptions {
///     durability: Durability::Full,
///     ..SqliteOptions::default()
/// };
/// assert_eq!(options.readers, 4);
/// assert!(options.create_if_missing);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// What a commit survives; default [`Durability::Normal`].
    pub durability: Durability,
    /// How long a write waits while another process holds the write lock
    /// before it fails with `StoreError::Unavailable`; default 5 s.
    pub busy_timeout: Duration,
    /// Read-only connections used in parallel with the writer; default 4.
    pub readers: usize,
    /// Create the database file when it does not exist; default true.
    pub create_if_missing: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Normal,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            readers: DEFAULT_READERS,
            create_if_missing: true,
        }
    }
}

/// Reads a `sqlite://PATH[?key=value&...]` URL into a path and options.
///
/// `sqlite://offload.db` and `sqlite://dir/x.db` are relative to the
/// working directory, `sqlite:///abs/x.db` is absolute. Query keys:
/// `durability` (`normal`/`full`), `busy_timeout` (`5s`), `readers` (`4`),
/// `create` (`true`/`false`). Unknown keys are refused.
pub(crate) fn parse_url(url: &str) -> Result<(PathBuf, SqliteOptions), ValidationError> {
    let bad = |message: String| ValidationError::new("database_url", message);
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| {
            bad(format!(
                "{url:?} is not a SQLite URL: expected sqlite://PATH, e.g. sqlite://offload.db"
            ))
        })?;
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(bad(format!(
            "{url:?} names no database file: expected sqlite://PATH, e.g. sqlite://offload.db"
        )));
    }
    if path == ":memory:" || path.starts_with("file:") {
        return Err(bad(format!(
            "{url:?}: in-memory and file: URI databases are not supported; name a file path"
        )));
    }
    let mut options = SqliteOptions::default();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "durability" => options.durability = value.parse()?,
            "busy_timeout" => {
                options.busy_timeout = parse_duration(value)
                    .map_err(|e| ValidationError::new("busy_timeout", e.to_string()))?;
            }
            "readers" => {
                options.readers = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| {
                        ValidationError::new(
                            "readers",
                            format!("must be a number from 1 to 64, got {value:?}"),
                        )
                    })?;
            }
            "create" => {
                options.create_if_missing = match value {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => {
                        return Err(ValidationError::new(
                            "create",
                            format!("expected true or false, got {value:?}"),
                        ));
                    }
                }
            }
            _ => {
                return Err(bad(format!(
                    "unknown parameter {key:?} in {url:?}: expected durability, busy_timeout, readers or create"
                )));
            }
        }
    }
    Ok((PathBuf::from(path), options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_absolute_and_params() {
        let (path, opts) = parse_url("sqlite://offload.db").unwrap();
        assert_eq!(path, PathBuf::from("offload.db"));
        assert_eq!(opts, SqliteOptions::default());

        let (path, _) = parse_url("sqlite://relative/dir/x.db").unwrap();
        assert_eq!(path, PathBuf::from("relative/dir/x.db"));

        let (path, opts) = parse_url("sqlite:///abs/path.db?durability=full").unwrap();
        assert_eq!(path, PathBuf::from("/abs/path.db"));
        assert_eq!(opts.durability, Durability::Full);

        let (_, opts) =
            parse_url("sqlite://x.db?durability=normal&busy_timeout=2s&readers=2").unwrap();
        assert_eq!(opts.busy_timeout, Duration::from_secs(2));
        assert_eq!(opts.readers, 2);
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let err = parse_url("sqlite://x.db?durabilty=full").unwrap_err();
        assert!(err.message.contains("durabilty"), "{err}");
        let err = parse_url("sqlite://x.db?durability=fast").unwrap_err();
        assert_eq!(err.field, "durability");
        assert!(parse_url("postgres://x").is_err());
        assert!(parse_url("sqlite://").is_err());
        assert!(parse_url("sqlite://:memory:").is_err());
    }
}
