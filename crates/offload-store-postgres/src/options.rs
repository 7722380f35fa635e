//! [`PgOptions`] and the `postgres://` URL they are read from.

use std::time::Duration;

use offload_store::{StoreError, StoreResult};
use offload_types::ValidationError;

/// The schema offload uses unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "offload";

/// Longest schema name (the notification channel adds a prefix to it and
/// PostgreSQL identifiers end at 63 bytes).
pub const MAX_SCHEMA_LEN: usize = 48;

/// How a [`PgStore`](crate::PgStore) connects and where its tables live.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgOptions {
    /// The schema holding offload's tables (created if missing). Lower-case
    /// letters, digits and `_`, starting with a letter or `_`.
    pub schema: String,
    /// Most connections the pool opens (the notification listener and the
    /// leader lock use one more each).
    pub pool_size: u32,
    /// How long a call waits for a free connection or a new one before it
    /// fails with `Unavailable`.
    pub acquire_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: 10,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

impl PgOptions {
    /// Options with this schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Options with this pool size.
    pub fn pool_size(mut self, n: u32) -> Self {
        self.pool_size = n;
        self
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_schema(&self.schema)?;
        if !(1..=1000).contains(&self.pool_size) {
            return Err(ValidationError::new(
                "pool_size",
                format!("must be between 1 and 1000, got {}", self.pool_size),
            ));
        }
        Ok(())
    }
}

/// Checks a schema name: 1 to [`MAX_SCHEMA_LEN`] of `a-z`, `0-9`, `_`, not
/// starting with a digit.
pub fn check_schema(schema: &str) -> Result<(), ValidationError> {
    let ok_chars = schema
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let ok_start = schema.bytes().next().is_some_and(|b| !b.is_ascii_digit());
    if schema.is_empty() || schema.len() > MAX_SCHEMA_LEN || !ok_chars || !ok_start {
        return Err(ValidationError::new(
            "schema",
            format!(
                "{schema:?} is not a schema name offload accepts: 1 to {MAX_SCHEMA_LEN} lower-case \
                 letters, digits and '_', not starting with a digit"
            ),
        ));
    }
    Ok(())
}

/// Splits a `postgres://` URL into the part the driver reads and offload's
/// own parameters (`schema`, `pool_size`, `acquire_timeout`), which are
/// removed from it.
pub(crate) fn parse_url(url: &str) -> StoreResult<(String, PgOptions)> {
    let invalid =
        |message: String| StoreError::Invalid(ValidationError::new("database_url", message));
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("postgres" | "postgresql")) {
        return Err(invalid(format!(
            "expected a postgres:// URL, got {:?}",
            redact(url)
        )));
    }
    let mut options = PgOptions::default();
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "schema" => options.schema = value.to_owned(),
            "pool_size" => {
                options.pool_size = value
                    .parse()
                    .map_err(|_| invalid(format!("pool_size must be a number, got {value:?}")))?;
            }
            "acquire_timeout" => {
                options.acquire_timeout = offload_types::parse_duration(value)
                    .map_err(|e| invalid(format!("acquire_timeout: {e}")))?;
            }
            _ => kept.push(pair),
        }
    }
    options.validate().map_err(StoreError::Invalid)?;
    let driver_url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((driver_url, options))
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://{user}@{host}{path}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_parameters_are_taken_out_of_the_url() {
        let (url, o) =
            parse_url("postgres://u@127.0.0.1:5432/db?schema=t1&sslmode=disable&pool_size=4")
                .unwrap();
        assert_eq!(url, "postgres://u@127.0.0.1:5432/db?sslmode=disable");
        assert_eq!(o.schema, "t1");
        assert_eq!(o.pool_size, 4);
        let (url, o) = parse_url("postgresql://h/db").unwrap();
        assert_eq!(url, "postgresql://h/db");
        assert_eq!(o, PgOptions::default());
    }

    #[test]
    fn bad_parameters_are_refused_by_name() {
        for (url, field) in [
            ("postgres://h/db?schema=Bad-Name", "schema"),
            ("postgres://h/db?schema=", "schema"),
            ("postgres://h/db?schema=1abc", "schema"),
            ("postgres://h/db?pool_size=0", "pool_size"),
            ("postgres://h/db?pool_size=x", "database_url"),
            ("mysql://h/db", "database_url"),
        ] {
            match parse_url(url) {
                Err(StoreError::Invalid(v)) => assert_eq!(v.field, field, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
