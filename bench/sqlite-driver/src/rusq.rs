//! rusqlite: one dedicated writer thread owning the write connection, as in
//! offload-store-sqlite. Callers send a command over a channel and await a
//! oneshot; the thread takes every waiting command (up to [`MAX_GROUP`]),
//! runs them in one `BEGIN IMMEDIATE` transaction, each under its own
//! `SAVEPOINT` when there are several, commits once and answers each.

use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use crate::common::*;

enum Op {
    Insert(NewTask),
    InsertMany(Vec<NewTask>),
    Claim(usize),
    Finish(Vec<Vec<u8>>),
}

enum Reply {
    Done,
    Claimed(Vec<Claimed>),
}

struct Cmd {
    op: Op,
    reply: oneshot::Sender<Result<Reply>>,
}

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Cmd>,
}

pub struct WriterThread {
    writer: Option<Writer>,
    handle: Option<JoinHandle<()>>,
}

impl WriterThread {
    pub fn start(path: &Path) -> Result<Self> {
        let conn = open_rusqlite(path)?;
        let (tx, rx) = mpsc::channel::<Cmd>();
        let handle = std::thread::Builder::new()
            .name("rusqlite-writer".into())
            .spawn(move || run(conn, &rx))
            .context("spawning the writer thread")?;
        Ok(Self {
            writer: Some(Writer { tx }),
            handle: Some(handle),
        })
    }

    pub fn writer(&self) -> Result<Writer> {
        self.writer.clone().ok_or_else(|| anyhow!("writer stopped"))
    }

    /// Drops the sender and joins the thread (which then closes the connection).
    pub fn stop(mut self) -> Result<()> {
        self.writer = None;
        if let Some(h) = self.handle.take() {
            h.join()
                .map_err(|_| anyhow!("the writer thread panicked"))?;
        }
        Ok(())
    }
}

impl Writer {
    async fn call(&self, op: Op) -> Result<Reply> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd { op, reply })
            .map_err(|_| anyhow!("writer thread gone"))?;
        rx.await.map_err(|_| anyhow!("writer dropped the reply"))?
    }

    async fn unit(&self, op: Op) -> Result<()> {
        match self.call(op).await? {
            Reply::Done => Ok(()),
            Reply::Claimed(_) => bail!("unexpected reply"),
        }
    }
}

fn run(conn: Connection, rx: &mpsc::Receiver<Cmd>) {
    let mut batch: Vec<Cmd> = Vec::with_capacity(64);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        process(&conn, &mut batch);
    }
    if let Err((_, e)) = conn.close() {
        eprintln!("closing the writer connection: {e}");
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn process(conn: &Connection, batch: &mut Vec<Cmd>) {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        for cmd in batch.drain(..) {
            let _ = cmd.reply.send(Err(anyhow!("BEGIN IMMEDIATE: {e}")));
        }
        return;
    }
    let single = batch.len() == 1;
    let mut results: Vec<Result<Reply>> = Vec::with_capacity(batch.len());
    let mut fatal: Option<String> = None;
    for cmd in batch.iter() {
        if !single && let Err(e) = exec(conn, "SAVEPOINT cmd") {
            fatal = Some(format!("SAVEPOINT: {e}"));
            break;
        }
        let r = run_op(conn, &cmd.op);
        if !single {
            let end = if r.is_ok() {
                exec(conn, "RELEASE cmd")
            } else {
                exec(conn, "ROLLBACK TO cmd").and_then(|()| exec(conn, "RELEASE cmd"))
            };
            if let Err(e) = end {
                fatal = Some(format!("ending the savepoint: {e}"));
                break;
            }
        }
        results.push(r);
    }
    let commit = match fatal {
        Some(why) => Err(why),
        None => exec(conn, "COMMIT").map_err(|e| format!("COMMIT: {e}")),
    };
    if let Err(why) = commit {
        if !conn.is_autocommit() {
            let _ = exec(conn, "ROLLBACK");
        }
        for cmd in batch.drain(..) {
            let _ = cmd.reply.send(Err(anyhow!("group rolled back: {why}")));
        }
        return;
    }
    for (cmd, r) in batch.drain(..).zip(results) {
        let _ = cmd.reply.send(r);
    }
}

fn insert(conn: &Connection, t: &NewTask) -> rusqlite::Result<()> {
    conn.prepare_cached(INSERT_SQL)?.execute(params![
        &t.id[..],
        t.name,
        QUEUE,
        t.input,
        t.priority,
        t.run_at,
        NOW
    ])?;
    Ok(())
}

fn run_op(conn: &Connection, op: &Op) -> Result<Reply> {
    match op {
        Op::Insert(t) => insert(conn, t)?,
        Op::InsertMany(ts) => {
            for t in ts {
                insert(conn, t)?;
            }
        }
        Op::Claim(n) => {
            let mut stmt = conn.prepare_cached(CLAIM_SQL)?;
            let limit = i64::try_from(*n)?;
            let rows = stmt.query_map(
                params![
                    QUEUE,
                    limit,
                    WORKER_ID,
                    &LEASE_TOKEN[..],
                    NOW + 60_000_000,
                    NOW
                ],
                |r| {
                    Ok(Claimed {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        input: r.get(2)?,
                        attempt: r.get(3)?,
                    })
                },
            )?;
            let claimed = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            return Ok(Reply::Claimed(claimed));
        }
        Op::Finish(ids) => {
            let mut stmt = conn.prepare_cached(FINISH_SQL)?;
            for id in ids {
                let changed = stmt.execute(params![id, OUTPUT, NOW])?;
                if changed != 1 {
                    bail!("finish changed {changed} rows");
                }
            }
        }
    }
    Ok(Reply::Done)
}

/// a. 20 transactions of 1000 inserts, each one command to the writer.
pub async fn bulk(path: &Path, tasks: Vec<NewTask>) -> Result<f64> {
    let wt = WriterThread::start(path)?;
    let w = wt.writer()?;
    let n = tasks.len();
    let chunks: Vec<Vec<NewTask>> = tasks.chunks(BULK_TX_ROWS).map(<[_]>::to_vec).collect();
    let start = Instant::now();
    for chunk in chunks {
        w.unit(Op::InsertMany(chunk)).await?;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(w);
    wt.stop()?;
    Ok(n as f64 / secs)
}

/// b. 2000 single inserts from 100 concurrent tokio tasks, group-committed.
pub async fn single(path: &Path, tasks: Vec<NewTask>) -> Result<f64> {
    let wt = WriterThread::start(path)?;
    let n = tasks.len();
    let per_task = n.div_ceil(SINGLE_TASKS);
    let work: Vec<Vec<NewTask>> = tasks.chunks(per_task).map(<[_]>::to_vec).collect();
    let gate = Arc::new(tokio::sync::Barrier::new(work.len() + 1));
    let mut joins = Vec::with_capacity(work.len());
    for mine in work {
        let w = wt.writer()?;
        let gate = gate.clone();
        joins.push(tokio::spawn(async move {
            gate.wait().await;
            for t in mine {
                w.unit(Op::Insert(t)).await?;
            }
            anyhow::Ok(())
        }));
    }
    gate.wait().await;
    let start = Instant::now();
    for j in joins {
        j.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    wt.stop()?;
    Ok(n as f64 / secs)
}

/// c. claim 100 / finish 100 until `expect` tasks are done.
pub async fn claim_finish(path: &Path, expect: usize) -> Result<f64> {
    let wt = WriterThread::start(path)?;
    let w = wt.writer()?;
    let start = Instant::now();
    let mut done = 0usize;
    loop {
        let claimed = match w.call(Op::Claim(CLAIM_BATCH)).await? {
            Reply::Claimed(c) => c,
            Reply::Done => bail!("unexpected reply"),
        };
        if claimed.is_empty() {
            break;
        }
        done += claimed.len();
        let ids = claimed
            .into_iter()
            .map(|c| {
                // Touch what the worker would decode.
                std::hint::black_box((&c.name, &c.input, c.attempt));
                c.id
            })
            .collect();
        w.unit(Op::Finish(ids)).await?;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(w);
    wt.stop()?;
    if done != expect {
        bail!("claimed {done} tasks, expected {expect}");
    }
    Ok(done as f64 / secs)
}
