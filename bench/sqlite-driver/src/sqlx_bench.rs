//! sqlx-sqlite: the idiomatic `SqlitePool` (every transaction
//! `pool.begin()` ... `commit()` on a pooled connection), the same with a
//! pool of one connection, and one connection owned by a tokio task running
//! the same group-commit loop (`BEGIN IMMEDIATE`, savepoints) as the
//! rusqlite writer thread.
//!
//! `pool.begin()` issues a plain (deferred) `BEGIN`; every transaction here
//! writes first, so SQLite takes the write lock at the first statement and
//! waits for it under `busy_timeout`. `begin_with("BEGIN IMMEDIATE")` was
//! measured too and was no faster (slower on workload b).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot};

use crate::common::*;

/// sqlx's default `max_connections`.
pub const POOL_SIZE: u32 = 10;

pub fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
}

/// A pool of `size` connections, all opened before the clock starts.
async fn pool(path: &Path, size: u32) -> Result<SqlitePool> {
    let pool = SqlitePoolOptions::new()
        .max_connections(size)
        .connect_with(options(path))
        .await
        .with_context(|| format!("opening a sqlx pool on {}", path.display()))?;
    let mut held = Vec::new();
    for _ in 0..size {
        held.push(pool.acquire().await?);
    }
    drop(held);
    Ok(pool)
}

pub async fn sqlite_version(path: &Path) -> Result<String> {
    let mut conn = SqliteConnection::connect_with(&options(path)).await?;
    let v: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&mut conn)
        .await?;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await?;
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    if !mode.eq_ignore_ascii_case("wal") || sync != 1 {
        bail!("sqlx connection has journal_mode={mode}, synchronous={sync}");
    }
    Ok(v)
}

async fn insert(conn: &mut SqliteConnection, t: &NewTask) -> Result<()> {
    sqlx::query(INSERT_SQL)
        .bind(&t.id[..])
        .bind(t.name)
        .bind(QUEUE)
        .bind(t.input.as_str())
        .bind(t.priority)
        .bind(t.run_at)
        .bind(NOW)
        .execute(conn)
        .await?;
    Ok(())
}

/// a. 20 transactions of 1000 inserts on a pooled connection.
pub async fn bulk(path: &Path, tasks: Vec<NewTask>) -> Result<f64> {
    let pool = pool(path, POOL_SIZE).await?;
    let start = Instant::now();
    for chunk in tasks.chunks(BULK_TX_ROWS) {
        let mut tx = pool.begin().await?;
        for t in chunk {
            insert(&mut tx, t).await?;
        }
        tx.commit().await?;
    }
    let secs = start.elapsed().as_secs_f64();
    pool.close().await;
    Ok(tasks.len() as f64 / secs)
}

/// Runs `per_task` chunks of `tasks` on 100 tokio tasks, released together;
/// returns inserts/s.
async fn concurrent<F, Fut>(tasks: Vec<NewTask>, one: F) -> Result<f64>
where
    F: Fn(NewTask) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let n = tasks.len();
    let per_task = n.div_ceil(SINGLE_TASKS);
    let work: Vec<Vec<NewTask>> = tasks.chunks(per_task).map(<[_]>::to_vec).collect();
    let gate = Arc::new(tokio::sync::Barrier::new(work.len() + 1));
    let mut joins = Vec::with_capacity(work.len());
    for mine in work {
        let one = one.clone();
        let gate = gate.clone();
        joins.push(tokio::spawn(async move {
            gate.wait().await;
            for t in mine {
                one(t).await?;
            }
            anyhow::Ok(())
        }));
    }
    gate.wait().await;
    let start = Instant::now();
    for j in joins {
        j.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// b. each insert its own transaction on a pool of `size` connections.
pub async fn single_pool(path: &Path, tasks: Vec<NewTask>, size: u32) -> Result<f64> {
    let pool = pool(path, size).await?;
    let p = pool.clone();
    let rate = concurrent(tasks, move |t| {
        let pool = p.clone();
        async move {
            let mut tx = pool.begin().await?;
            insert(&mut tx, &t).await?;
            tx.commit().await?;
            Ok(())
        }
    })
    .await?;
    pool.close().await;
    Ok(rate)
}

struct GroupCmd {
    task: NewTask,
    reply: oneshot::Sender<Result<()>>,
}

/// The group-commit loop of the rusqlite writer, on one sqlx connection in
/// a tokio task: take every waiting command, one `BEGIN IMMEDIATE`, a
/// `SAVEPOINT` per command when there are several, one `COMMIT`.
async fn group_loop(
    mut conn: SqliteConnection,
    mut rx: mpsc::UnboundedReceiver<GroupCmd>,
) -> Result<()> {
    let mut batch: Vec<GroupCmd> = Vec::with_capacity(64);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        let single = batch.len() == 1;
        let outcome: Result<Vec<Result<()>>> = async {
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            let mut results = Vec::with_capacity(batch.len());
            for cmd in &batch {
                if !single {
                    sqlx::query("SAVEPOINT cmd").execute(&mut *tx).await?;
                }
                let r = insert(&mut tx, &cmd.task).await;
                if !single {
                    if r.is_err() {
                        sqlx::query("ROLLBACK TO cmd").execute(&mut *tx).await?;
                    }
                    sqlx::query("RELEASE cmd").execute(&mut *tx).await?;
                }
                results.push(r);
            }
            tx.commit().await?;
            Ok(results)
        }
        .await;
        match outcome {
            Ok(results) => {
                for (cmd, r) in batch.drain(..).zip(results) {
                    let _ = cmd.reply.send(r);
                }
            }
            Err(e) => {
                for cmd in batch.drain(..) {
                    let _ = cmd.reply.send(Err(anyhow!("group rolled back: {e:#}")));
                }
            }
        }
    }
    conn.close().await?;
    Ok(())
}

/// b. single inserts through one connection doing group commit.
pub async fn single_group(path: &Path, tasks: Vec<NewTask>) -> Result<f64> {
    let conn = SqliteConnection::connect_with(&options(path)).await?;
    let (tx, rx) = mpsc::unbounded_channel::<GroupCmd>();
    let writer = tokio::spawn(group_loop(conn, rx));
    let sender = tx.clone();
    let rate = concurrent(tasks, move |task| {
        let sender = sender.clone();
        async move {
            let (reply, rx) = oneshot::channel();
            sender
                .send(GroupCmd { task, reply })
                .map_err(|_| anyhow!("group loop gone"))?;
            rx.await
                .map_err(|_| anyhow!("group loop dropped the reply"))?
        }
    })
    .await?;
    drop(tx);
    writer.await??;
    Ok(rate)
}

/// c. claim 100 / finish 100, one transaction each, until `expect` are done.
pub async fn claim_finish(path: &Path, expect: usize) -> Result<f64> {
    let pool = pool(path, POOL_SIZE).await?;
    let limit = i64::try_from(CLAIM_BATCH)?;
    let start = Instant::now();
    let mut done = 0usize;
    loop {
        let mut tx = pool.begin().await?;
        let rows = sqlx::query(CLAIM_SQL)
            .bind(QUEUE)
            .bind(limit)
            .bind(WORKER_ID)
            .bind(&LEASE_TOKEN[..])
            .bind(NOW + 60_000_000)
            .bind(NOW)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let claimed = rows
            .iter()
            .map(|r| {
                Ok(Claimed {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    input: r.try_get(2)?,
                    attempt: r.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        if claimed.is_empty() {
            break;
        }
        done += claimed.len();
        let mut tx = pool.begin().await?;
        for c in &claimed {
            std::hint::black_box((&c.name, &c.input, c.attempt));
            let changed = sqlx::query(FINISH_SQL)
                .bind(c.id.as_slice())
                .bind(OUTPUT)
                .bind(NOW)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if changed != 1 {
                bail!("finish changed {changed} rows");
            }
        }
        tx.commit().await?;
    }
    let secs = start.elapsed().as_secs_f64();
    pool.close().await;
    if done != expect {
        bail!("claimed {done} tasks, expected {expect}");
    }
    Ok(done as f64 / secs)
}
