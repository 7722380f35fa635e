//! The PostgreSQL target of `offload bench --backend postgres`: one
//! dedicated schema (default [`DEFAULT_SCHEMA`], or the URL's `?schema=`)
//! that the bench drops and lets the store create again before each
//! workload and drops when it ends, as the PostgreSQL peers do with theirs.
//!
//! The bench touches nothing else:
//!
//! - it drops a schema that already exists only if it is an offload schema
//!   (it holds `offload_migrations`) whose tasks all belong to the bench's
//!   queue, and no object outside it depends on anything in it (so
//!   `DROP SCHEMA ... CASCADE` stays inside the schema);
//! - it holds a session-level advisory lock on the schema's name for the
//!   whole run on its own connection, so a second bench run on the same
//!   schema refuses to start instead of dropping the first one's tables.
//!   The lock goes with the session, so a bench run that died leaves
//!   nothing behind that blocks the next one.

use std::str::FromStr as _;

use anyhow::Context as _;
use offload::postgres::check_schema;
pub(super) use offload::postgres::redact;
use offload::postgres::sqlx::postgres::{PgConnectOptions, PgConnection};
use offload::postgres::sqlx::{self, AssertSqlSafe, Connection as _, Row as _};
use tokio::sync::Mutex;

use super::QUEUE;
use crate::failure::{Failure, code};

/// The database the bench measures unless told otherwise (the peer
/// harness's default `DATABASE_URL`).
pub(super) const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The environment variable naming another database.
pub(super) const URL_ENV: &str = "OFFLOAD_BENCH_DATABASE_URL";
/// The schema the bench uses unless the URL names one with `?schema=`.
pub(super) const DEFAULT_SCHEMA: &str = "offload_bench";
/// offload's own URL parameters, which the driver does not understand.
const OFFLOAD_PARAMS: [&str; 3] = ["schema", "pool_size", "acquire_timeout"];
/// The first half of the advisory-lock key that marks a running bench.
const LOCK_NAMESPACE: &str = "offload-bench";

/// A schema the bench owns for the length of one run.
pub(crate) struct PgTarget {
    /// The URL the store opens (with `?schema=`).
    url: String,
    schema: String,
    /// The session holding the bench's advisory lock; also runs the drops.
    admin: Mutex<PgConnection>,
}

impl PgTarget {
    /// Connects, takes the bench lock of the schema (refusing while another
    /// bench run holds it) and drops the schema if the bench may.
    pub(super) async fn prepare(url: &str) -> anyhow::Result<Self> {
        let (url, schema, driver_url) = split_url(url)?;
        let options = PgConnectOptions::from_str(&driver_url)
            .map_err(|e| Failure::usage(format!("invalid PostgreSQL URL {}: {e}", redact(&url))))?
            .application_name(&format!("offload-bench pid {}", std::process::id()));
        let mut admin = PgConnection::connect_with(&options)
            .await
            .with_context(|| format!("cannot connect to {}", redact(&driver_url)))?;
        let locked: bool = sqlx::query(AssertSqlSafe(format!(
            "SELECT pg_try_advisory_lock({})",
            lock_key()
        )))
        .bind(&schema)
        .fetch_one(&mut admin)
        .await
        .context("cannot take the bench lock")?
        .try_get(0)
        .context("cannot read the bench lock")?;
        if !locked {
            let holder = lock_holder(&mut admin, &schema).await;
            return Err(Failure::with_code(
                code::FAILED,
                format!(
                    "another offload bench ({}) is using schema {schema:?} of {}; wait for it \
                     to end or pick another schema with ?schema=NAME",
                    holder.unwrap_or_else(|| "a live session".to_owned()),
                    redact(&driver_url)
                ),
            ));
        }
        let target = Self {
            url,
            schema,
            admin: Mutex::new(admin),
        };
        target.drop_schema().await?;
        Ok(target)
    }

    /// The URL the store opens.
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// Drops the bench's schema (the store creates it again when it opens);
    /// refuses a schema the bench may not drop.
    pub(super) async fn drop_schema(&self) -> anyhow::Result<()> {
        let mut admin = self.admin.lock().await;
        let schema = &self.schema;
        let exists: bool =
            sqlx::query("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(schema)
                .fetch_one(&mut *admin)
                .await?
                .try_get(0)?;
        if !exists {
            return Ok(());
        }
        let refuse = |why: String| {
            Failure::with_code(
                code::FAILED,
                format!(
                    "schema {schema:?} {why}; offload bench drops and recreates its schema, so \
                     it only uses one that is absent or holds nothing but a previous bench run \
                     (pick another schema with ?schema=NAME)"
                ),
            )
        };
        let ledger: bool = sqlx::query(
            "SELECT to_regclass(format('%I.offload_migrations', $1::text)) IS NOT NULL",
        )
        .bind(schema)
        .fetch_one(&mut *admin)
        .await?
        .try_get(0)?;
        if !ledger {
            return Err(refuse(
                "exists and is not an offload schema (it has no offload_migrations table)".into(),
            ));
        }
        let has_tasks: bool =
            sqlx::query("SELECT to_regclass(format('%I.tasks', $1::text)) IS NOT NULL")
                .bind(schema)
                .fetch_one(&mut *admin)
                .await?
                .try_get(0)?;
        if has_tasks {
            let others: bool = sqlx::query(AssertSqlSafe(format!(
                "SELECT EXISTS (SELECT 1 FROM \"{schema}\".tasks WHERE queue <> $1)"
            )))
            .bind(QUEUE)
            .fetch_one(&mut *admin)
            .await?
            .try_get(0)?;
            if others {
                return Err(refuse(format!(
                    "holds tasks outside the bench's queue {QUEUE:?}"
                )));
            }
        }
        let outside = outside_dependents(&mut admin, schema).await?;
        if !outside.is_empty() {
            return Err(refuse(format!(
                "has objects that other schemas depend on ({})",
                outside.join(", ")
            )));
        }
        sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
            .execute(&mut *admin)
            .await
            .with_context(|| format!("cannot drop schema {schema:?}"))?;
        Ok(())
    }

    /// Drops the schema and ends the session (which releases the lock).
    pub(super) async fn finish(self) -> anyhow::Result<()> {
        let dropped = self.drop_schema().await;
        let closed = self
            .admin
            .into_inner()
            .close()
            .await
            .context("cannot close the bench's admin connection");
        dropped.and(closed)
    }

    /// The server's durability: `full` when a commit waits for the WAL to
    /// reach disk, `relaxed` with `synchronous_commit = off`, `none` with
    /// `fsync = off`; and the server version.
    pub(super) async fn server(&self) -> (String, String) {
        let mut admin = self.admin.lock().await;
        let row = sqlx::query(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit'), \
             current_setting('server_version')",
        )
        .fetch_one(&mut *admin)
        .await;
        let Ok(row) = row else {
            return ("unknown".into(), "unknown".into());
        };
        let get = |i: usize| row.try_get::<String, _>(i).unwrap_or_default();
        let durability = match (get(0).as_str(), get(1).as_str()) {
            ("off", _) => "none",
            (_, "off") => "relaxed",
            _ => "full",
        };
        let version = get(2)
            .split_whitespace()
            .next()
            .unwrap_or("unknown")
            .to_owned();
        (durability.to_owned(), version)
    }
}

/// The advisory-lock key of the bench on schema `$1` (two 32-bit halves).
fn lock_key() -> String {
    format!("hashtext('{LOCK_NAMESPACE}'), hashtext($1)")
}

/// The session holding the bench lock of `schema`, for the message.
async fn lock_holder(admin: &mut PgConnection, schema: &str) -> Option<String> {
    let row = sqlx::query(
        "SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local') \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND l.classid::int4 = hashtext($1) AND l.objid::int4 = hashtext($2) LIMIT 1",
    )
    .bind(LOCK_NAMESPACE)
    .bind(schema)
    .fetch_optional(admin)
    .await
    .ok()??;
    let pid: i32 = row.try_get(0).ok()?;
    let app: String = row.try_get(1).ok()?;
    let host: String = row.try_get(2).ok()?;
    Some(format!(
        "PostgreSQL session pid {pid}, application {app:?}, from {host}"
    ))
}

/// Objects outside `schema` that depend on objects inside it (they would
/// go with `DROP SCHEMA ... CASCADE`), described, at most 5. A dependent
/// is placed in the schema of the relation, function or type it belongs
/// to (a view's rewrite rule, a trigger, a foreign key or a default belong
/// to their table); one that cannot be placed counts as outside.
async fn outside_dependents(admin: &mut PgConnection, schema: &str) -> anyhow::Result<Vec<String>> {
    let rows = sqlx::query(
        "WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = $1), \
         inside AS (SELECT 'pg_class'::regclass AS classid, c.oid AS objid FROM pg_class c, ns \
                    WHERE c.relnamespace = ns.oid \
                    UNION ALL SELECT 'pg_proc'::regclass, p.oid FROM pg_proc p, ns \
                    WHERE p.pronamespace = ns.oid \
                    UNION ALL SELECT 'pg_type'::regclass, t.oid FROM pg_type t, ns \
                    WHERE t.typnamespace = ns.oid), \
         deps AS (SELECT DISTINCT d.classid, d.objid, d.objsubid FROM pg_depend d \
                  JOIN inside i ON d.refclassid = i.classid AND d.refobjid = i.objid \
                  WHERE d.deptype IN ('n', 'a')), \
         placed AS (SELECT d.*, CASE d.classid \
           WHEN 'pg_class'::regclass THEN \
             (SELECT relnamespace FROM pg_class WHERE oid = d.objid) \
           WHEN 'pg_rewrite'::regclass THEN (SELECT c.relnamespace FROM pg_rewrite r \
             JOIN pg_class c ON c.oid = r.ev_class WHERE r.oid = d.objid) \
           WHEN 'pg_trigger'::regclass THEN (SELECT c.relnamespace FROM pg_trigger t \
             JOIN pg_class c ON c.oid = t.tgrelid WHERE t.oid = d.objid) \
           WHEN 'pg_attrdef'::regclass THEN (SELECT c.relnamespace FROM pg_attrdef a \
             JOIN pg_class c ON c.oid = a.adrelid WHERE a.oid = d.objid) \
           WHEN 'pg_policy'::regclass THEN (SELECT c.relnamespace FROM pg_policy p \
             JOIN pg_class c ON c.oid = p.polrelid WHERE p.oid = d.objid) \
           WHEN 'pg_constraint'::regclass THEN (SELECT coalesce(c.relnamespace, \
             t.typnamespace, k.connamespace) FROM pg_constraint k \
             LEFT JOIN pg_class c ON c.oid = k.conrelid \
             LEFT JOIN pg_type t ON t.oid = k.contypid WHERE k.oid = d.objid) \
           WHEN 'pg_proc'::regclass THEN \
             (SELECT pronamespace FROM pg_proc WHERE oid = d.objid) \
           WHEN 'pg_type'::regclass THEN \
             (SELECT typnamespace FROM pg_type WHERE oid = d.objid) \
           END AS nsp FROM deps d) \
         SELECT DISTINCT o.type || ' ' || o.identity FROM placed p \
         CROSS JOIN LATERAL pg_identify_object(p.classid, p.objid, p.objsubid) o \
         WHERE p.nsp IS DISTINCT FROM (SELECT oid FROM ns) \
         LIMIT 5",
    )
    .bind(schema)
    .fetch_all(admin)
    .await
    .context("cannot check what depends on the bench schema")?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(Into::into))
        .collect()
}

/// Splits a `postgres://` URL into (the URL the store opens, with
/// `?schema=`; the schema; the URL the driver reads, without offload's
/// own parameters).
fn split_url(url: &str) -> anyhow::Result<(String, String, String)> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("postgres" | "postgresql")) {
        return Err(Failure::usage(format!(
            "--backend postgres needs a postgres:// URL, got {:?}",
            redact(url)
        )));
    }
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    let key = |pair: &str| pair.split_once('=').map_or(pair, |(k, _)| k).to_owned();
    let schema = pairs
        .iter()
        .rev()
        .find(|p| key(p) == "schema")
        .map(|p| p.split_once('=').map_or("", |(_, v)| v).to_owned())
        .unwrap_or_else(|| DEFAULT_SCHEMA.to_owned());
    check_schema(&schema).map_err(|e| Failure::usage(e.to_string()))?;
    let driver: Vec<&str> = pairs
        .iter()
        .copied()
        .filter(|p| !OFFLOAD_PARAMS.contains(&key(p).as_str()))
        .collect();
    let driver_url = with_query(base, &driver);
    let store_url = if pairs.iter().any(|p| key(p) == "schema") {
        url.to_owned()
    } else {
        let mut all = pairs.clone();
        let param = format!("schema={schema}");
        all.push(&param);
        with_query(base, &all)
    };
    Ok((store_url, schema, driver_url))
}

fn with_query(base: &str, pairs: &[&str]) -> String {
    if pairs.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", pairs.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schema_is_added_and_offload_parameters_kept_from_the_driver() {
        let (store, schema, driver) = split_url("postgres://u@127.0.0.1:5432/test").unwrap();
        assert_eq!(
            store,
            "postgres://u@127.0.0.1:5432/test?schema=offload_bench"
        );
        assert_eq!(schema, "offload_bench");
        assert_eq!(driver, "postgres://u@127.0.0.1:5432/test");

        let (store, schema, driver) =
            split_url("postgresql://h/db?sslmode=disable&schema=b2&pool_size=4").unwrap();
        assert_eq!(
            store,
            "postgresql://h/db?sslmode=disable&schema=b2&pool_size=4"
        );
        assert_eq!(schema, "b2");
        assert_eq!(driver, "postgresql://h/db?sslmode=disable");

        let (store, _, _) = split_url("postgres://h/db?pool_size=20").unwrap();
        assert_eq!(store, "postgres://h/db?pool_size=20&schema=offload_bench");
    }

    #[test]
    fn bad_urls_and_schemas_are_refused() {
        for url in [
            "sqlite://bench.db",
            "postgres://h/db?schema=",
            "postgres://h/db?schema=Bad",
            "postgres://h/db?schema=a\"b",
            "postgres://h/db?schema=1x",
        ] {
            assert!(split_url(url).is_err(), "{url}");
        }
    }
}
