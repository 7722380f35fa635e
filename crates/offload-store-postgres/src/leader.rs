//! Leadership: a row per led name in `leaders` (holder and expiry, the
//! contract's time-based lease) backed by a session-level advisory lock
//! held on a dedicated connection while this process leads.
//!
//! The row is the truth; the lock makes take-over fast. When a leader's
//! process dies its connection closes and PostgreSQL releases the lock at
//! once, so the next contender that takes the free lock takes the
//! leadership without waiting for the row to expire. A contender that
//! cannot take the lock still wins once the row has expired (the old
//! leader is alive but cut off), and the old leader then learns at its
//! next renewal that it lost.

use sqlx::AssertSqlSafe;
use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use offload_store::StoreResult;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection, PgPool, Row};
use tokio::sync::Mutex;

use crate::error::map;

/// The lock connection and the names this store leads through it.
#[derive(Debug, Default)]
struct Held {
    conn: Option<PgConnection>,
    /// Led name → holder.
    names: HashMap<String, String>,
}

/// One store's side of leadership.
#[derive(Debug)]
pub(crate) struct Leadership {
    schema: String,
    connect: PgConnectOptions,
    held: Mutex<Held>,
    upsert_sql: Arc<str>,
    take_sql: Arc<str>,
    resign_sql: Arc<str>,
}

impl Leadership {
    pub(crate) fn new(schema: &str, connect: PgConnectOptions) -> Self {
        let q = format!("\"{schema}\"");
        Self {
            schema: schema.to_owned(),
            connect,
            held: Mutex::new(Held::default()),
            upsert_sql: format!(
                "INSERT INTO {q}.leaders (name, holder, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at \
                 WHERE leaders.holder = excluded.holder OR leaders.expires_at <= $4"
            )
            .into(),
            take_sql: format!(
                "INSERT INTO {q}.leaders (name, holder, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at"
            )
            .into(),
            resign_sql: format!("DELETE FROM {q}.leaders WHERE name = $1 AND holder = $2").into(),
        }
    }

    fn key(&self) -> String {
        format!("hashtext('offload-leader:{}'), hashtext($1)", self.schema)
    }

    /// Takes the advisory lock of `name` on the lock connection (opening
    /// it if needed). `false` when another session holds it, or when the
    /// lock connection cannot be had (the row alone decides then).
    async fn try_lock(&self, held: &mut Held, name: &str) -> bool {
        if held.conn.is_none() {
            match self.connect.connect().await {
                Ok(c) => held.conn = Some(c),
                Err(e) => {
                    tracing::debug!(error = %e, "no leader-lock connection");
                    return false;
                }
            }
        }
        let Some(conn) = held.conn.as_mut() else {
            return false;
        };
        let sql = format!("SELECT pg_try_advisory_lock({})", self.key());
        match sqlx::query(AssertSqlSafe(sql))
            .bind(name)
            .fetch_one(conn)
            .await
        {
            Ok(row) => row.try_get::<bool, _>(0).unwrap_or(false),
            Err(e) => {
                tracing::warn!(error = %e, "the leader-lock connection failed");
                // Its locks are gone with it.
                held.conn = None;
                held.names.clear();
                false
            }
        }
    }

    async fn unlock(&self, held: &mut Held, name: &str) {
        held.names.remove(name);
        if let Some(conn) = held.conn.as_mut() {
            let sql = format!("SELECT pg_advisory_unlock({})", self.key());
            if sqlx::query(AssertSqlSafe(sql))
                .bind(name)
                .execute(conn)
                .await
                .is_err()
            {
                held.conn = None;
                held.names.clear();
            }
        }
    }

    /// Becomes or stays the leader of `name` until `expires_at`.
    pub(crate) async fn elect(
        &self,
        pool: &PgPool,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut held = self.held.lock().await;
        let upsert = || async {
            sqlx::query(AssertSqlSafe(self.upsert_sql.clone()))
                .bind(name)
                .bind(holder)
                .bind(expires_at)
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() > 0)
                .map_err(map)
        };
        match held.names.get(name).cloned() {
            Some(h) if h == holder => {
                let won = upsert().await?;
                if !won {
                    // Someone took over after our row expired.
                    self.unlock(&mut held, name).await;
                }
                Ok(won)
            }
            Some(_) => {
                // This store's lock belongs to another holder of this
                // process: only the row decides.
                let won = upsert().await?;
                if won {
                    held.names.insert(name.to_owned(), holder.to_owned());
                }
                Ok(won)
            }
            None => {
                if self.try_lock(&mut held, name).await {
                    // No live session leads with the lock: take over.
                    let taken = sqlx::query(AssertSqlSafe(self.take_sql.clone()))
                        .bind(name)
                        .bind(holder)
                        .bind(expires_at)
                        .execute(pool)
                        .await;
                    match taken {
                        Ok(_) => {
                            held.names.insert(name.to_owned(), holder.to_owned());
                            Ok(true)
                        }
                        Err(e) => {
                            self.unlock(&mut held, name).await;
                            Err(map(e))
                        }
                    }
                } else {
                    upsert().await
                }
            }
        }
    }

    /// Gives up `name` if `holder` leads it.
    pub(crate) async fn resign(&self, pool: &PgPool, name: &str, holder: &str) -> StoreResult<()> {
        let mut held = self.held.lock().await;
        sqlx::query(AssertSqlSafe(self.resign_sql.clone()))
            .bind(name)
            .bind(holder)
            .execute(pool)
            .await
            .map_err(map)?;
        if held.names.get(name).is_some_and(|h| h == holder) {
            self.unlock(&mut held, name).await;
        }
        Ok(())
    }
}
