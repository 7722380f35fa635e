//! The one writer thread and its group commit.
//!
//! Every change goes through [`Writer::call`]: the caller's closure travels
//! over a channel to a dedicated OS thread that owns the write connection.
//! The thread takes every command waiting (up to [`MAX_COMMANDS`] commands
//! or [`MAX_ROWS`] rows), opens one `BEGIN IMMEDIATE` transaction, runs
//! the commands, commits once, and only then answers each caller through
//! its oneshot. A failing command rolls back only itself and gets its own
//! error: when one fails, the transaction is rolled back and the others
//! run again, each under its own `SAVEPOINT` (commands are re-runnable
//! closures); batches where all succeed, nearly all of them, pay for no
//! savepoints. A hundred concurrent enqueues thus cost one commit. After
//! the commit it emits the notifications the successful commands
//! collected, coalesced: locally through the [`NotifyHub`], then to other
//! processes through the wake folder.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use offload_store::{Notification, NotifyHub, StoreError, StoreResult};
use offload_types::TaskId;
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::checkpoint::Checkpointer;
use crate::limits::LimitCache;
use crate::wake::Broadcaster;

/// Most commands one transaction takes.
pub(crate) const MAX_COMMANDS: usize = 512;
/// Most rows (tasks inserted, claimed or finished) one transaction takes;
/// a single larger command still runs whole.
pub(crate) const MAX_ROWS: usize = 20_000;

/// What a command sees: the write connection, inside the batch's
/// transaction and the command's savepoint, and where it records the
/// notifications its change should produce.
pub(crate) struct WriteCtx<'c> {
    /// The write connection.
    pub(crate) conn: &'c Connection,
    /// Notifications to emit after the commit.
    pub(crate) notes: &'c mut Notes,
    /// The store's cache of its stored limits.
    pub(crate) limits: &'c LimitCache,
}

/// Notifications collected during one transaction, coalesced on emit.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    available: Vec<String>,
    changed: Vec<TaskId>,
    changed_all: bool,
    abort: Vec<TaskId>,
}

type Mark = (usize, usize, bool, usize);

impl Notes {
    /// Tasks became ready (or due later) in `queue`.
    pub(crate) fn available(&mut self, queue: &str) {
        if !self.available.iter().any(|q| q == queue) {
            self.available.push(queue.to_owned());
        }
    }

    /// A task changed.
    pub(crate) fn changed(&mut self, id: TaskId) {
        self.changed.push(id);
    }

    /// Any task may have changed.
    pub(crate) fn changed_all(&mut self) {
        self.changed_all = true;
    }

    /// A running task was asked to stop.
    pub(crate) fn abort_requested(&mut self, id: TaskId) {
        self.abort.push(id);
    }

    fn mark(&self) -> Mark {
        (
            self.available.len(),
            self.changed.len(),
            self.changed_all,
            self.abort.len(),
        )
    }

    fn reset_to(&mut self, (a, c, all, x): Mark) {
        self.available.truncate(a);
        self.changed.truncate(c);
        self.changed_all = all;
        self.abort.truncate(x);
    }

    fn is_empty(&self) -> bool {
        self.available.is_empty()
            && self.changed.is_empty()
            && !self.changed_all
            && self.abort.is_empty()
    }

    /// The coalesced notifications: one `Available` per queue, one
    /// `Changed`, one `AbortRequested`.
    fn drain(&mut self) -> Vec<Notification> {
        let mut out = Vec::with_capacity(self.available.len() + 2);
        for queue in self.available.drain(..) {
            out.push(Notification::Available { queue: Some(queue) });
        }
        if self.changed_all {
            out.push(Notification::Changed { ids: None });
        } else if !self.changed.is_empty() {
            let ids: BTreeSet<TaskId> = self.changed.drain(..).collect();
            out.push(Notification::Changed {
                ids: Some(ids.into_iter().collect()),
            });
        }
        if !self.abort.is_empty() {
            let ids: BTreeSet<TaskId> = self.abort.drain(..).collect();
            out.push(Notification::AbortRequested {
                ids: ids.into_iter().collect(),
            });
        }
        self.changed.clear();
        self.changed_all = false;
        out
    }
}

/// Why a whole batch failed.
enum Failure<'a> {
    /// `BEGIN` or `COMMIT` failed.
    Sqlite(&'a rusqlite::Error),
    /// SQLite rolled the transaction back on its own (e.g. disk full).
    RolledBack(&'a str),
}

impl Failure<'_> {
    fn to_error(&self) -> StoreError {
        match self {
            Failure::Sqlite(e) => crate::error::describe(e),
            Failure::RolledBack(why) => StoreError::Unavailable(format!(
                "the transaction was rolled back by SQLite ({why}); nothing was written"
            )),
        }
    }
}

/// One command in the writer's queue.
trait Job: Send {
    /// Rows it touches, for the batch bound.
    fn weight(&self) -> usize;
    /// Runs it inside the transaction; false when it failed. It may run
    /// again after a rollback (the last run's result counts).
    fn run(&mut self, ctx: &mut WriteCtx<'_>) -> bool;
    /// Answers the caller once the batch is settled.
    fn answer(self: Box<Self>, failure: Option<&Failure<'_>>);
}

struct Op<T, F> {
    f: F,
    out: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
    weight: usize,
}

impl<T, F> Job for Op<T, F>
where
    T: Send,
    F: Fn(&mut WriteCtx<'_>) -> StoreResult<T> + Send,
{
    fn weight(&self) -> usize {
        self.weight
    }

    fn run(&mut self, ctx: &mut WriteCtx<'_>) -> bool {
        let f = &self.f;
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(ctx))).unwrap_or_else(|_| {
            Err(StoreError::backend(crate::error::Message(
                "internal error: a store command panicked; it was rolled back".to_owned(),
            )))
        });
        let ok = result.is_ok();
        self.out = Some(result);
        ok
    }

    fn answer(self: Box<Self>, failure: Option<&Failure<'_>>) {
        let result = match (self.out, failure) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), None) => Ok(v),
            (_, Some(f)) => Err(f.to_error()),
            (None, None) => Err(StoreError::Unavailable(
                "the store's writer did not run the command".to_owned(),
            )),
        };
        // The caller may have stopped waiting; that is fine.
        let _ = self.reply.send(result);
    }
}

/// Counters of the writer, for tests and diagnostics.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    commits: AtomicU64,
    commands: AtomicU64,
    busy_ns: AtomicU64,
    /// The thread's `/proc` stat file, where the OS has one.
    cpu_file: OnceLock<PathBuf>,
}

impl Stats {
    fn cpu(&self) -> Option<Duration> {
        let text = std::fs::read_to_string(self.cpu_file.get()?).ok()?;
        let ns = text.split_whitespace().next()?.parse().ok()?;
        Some(Duration::from_nanos(ns))
    }
}

/// A snapshot of the writer's counters.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: u64,
    /// Commands run (each caller's call is one).
    pub commands: u64,
    /// Time the thread spent running batches (not waiting for commands).
    pub busy: Duration,
    /// CPU time the thread used so far (Linux only).
    pub cpu: Option<Duration>,
}

/// The handle callers use; dropping it stops and joins the thread.
pub(crate) struct Writer {
    tx: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("stats", &self.stats())
            .finish()
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("the store's writer thread has stopped".to_owned())
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(crate) fn start(
        conn: Connection,
        hub: NotifyHub,
        broadcaster: Broadcaster,
        checkpointer: Option<Checkpointer>,
        busy_timeout: Duration,
        limits: Arc<LimitCache>,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let stats = Arc::new(Stats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("offload-sqlite-writer".to_owned())
            .spawn(move || {
                crate::conn::set_thread_busy_timeout(busy_timeout);
                if let Ok(me) = std::fs::read_link("/proc/thread-self") {
                    let _ = thread_stats
                        .cpu_file
                        .set(Path::new("/proc").join(me).join("schedstat"));
                }
                let mut looped = WriterLoop {
                    conn,
                    hub,
                    broadcaster,
                    checkpointer,
                    stats: thread_stats,
                    limits,
                };
                looped.run(&rx);
            })
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the store's writer thread: {e}"))
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            stats,
        })
    }

    /// Runs `f` on the writer thread inside a group-commit transaction and
    /// returns its result once the transaction committed. `weight` is the
    /// number of rows it touches (for the batch bound). `f` may run more
    /// than once (after a rollback caused by another command); only its
    /// last run's writes and result count.
    pub(crate) async fn call<T, F>(&self, weight: usize, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut WriteCtx<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(Op {
            f,
            out: None,
            reply,
            weight: weight.max(1),
        });
        let tx = self.tx.as_ref().ok_or_else(closed)?;
        tx.send(job).map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.stats.commits.load(Ordering::Relaxed),
            commands: self.stats.commands.load(Ordering::Relaxed),
            busy: Duration::from_nanos(self.stats.busy_ns.load(Ordering::Relaxed)),
            cpu: self.stats.cpu(),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop after its current batch.
        self.tx.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the store's writer thread panicked");
        }
    }
}

/// How long the writer keeps polling for the next command before it goes
/// to sleep on the channel. Callers often send the next command within
/// tens of microseconds of an answer (a worker's claim after its finish, a
/// caller awaiting one enqueue after another); a writer still polling
/// takes it at once, where a sleeping one costs the sender a futex wake
/// and itself a scheduler wake-up, each several microseconds on a busy
/// machine. Measured (`offload bench`, two cores): `single_enqueue` about
/// a third faster, `drain` a few percent. Not on a single CPU, where
/// polling would only keep the sender off the CPU.
const SPIN: Duration = Duration::from_micros(50);

fn spin_for() -> Duration {
    static SPIN_FOR: OnceLock<Duration> = OnceLock::new();
    *SPIN_FOR.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        if cpus > 1 { SPIN } else { Duration::ZERO }
    })
}

/// The next command, after at most [`SPIN`] of polling; `None` once every
/// sender is gone (the store was dropped).
fn next_command(rx: &mpsc::Receiver<Box<dyn Job>>) -> Option<Box<dyn Job>> {
    let spin = spin_for();
    if !spin.is_zero() {
        let start = Instant::now();
        loop {
            match rx.try_recv() {
                Ok(job) => return Some(job),
                Err(mpsc::TryRecvError::Disconnected) => return None,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            if start.elapsed() >= spin {
                break;
            }
            std::hint::spin_loop();
        }
    }
    rx.recv().ok()
}

struct WriterLoop {
    conn: Connection,
    hub: NotifyHub,
    broadcaster: Broadcaster,
    checkpointer: Option<Checkpointer>,
    stats: Arc<Stats>,
    limits: Arc<LimitCache>,
}

impl WriterLoop {
    fn run(&mut self, rx: &mpsc::Receiver<Box<dyn Job>>) {
        let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(64);
        // Ends when every sender is gone (the store was dropped).
        while let Some(first) = next_command(rx) {
            let mut rows = first.weight();
            batch.push(first);
            while batch.len() < MAX_COMMANDS && rows < MAX_ROWS {
                match rx.try_recv() {
                    Ok(job) => {
                        rows += job.weight();
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            self.process(&mut batch);
            let spent = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.stats.busy_ns.fetch_add(spent, Ordering::Relaxed);
        }
        tracing::debug!("store writer thread stopping");
    }

    fn exec(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(|_| ())
    }

    /// Runs every command of `batch` but `skip`, each under its own
    /// savepoint, so one that fails rolls back only itself. True when any
    /// succeeded; `Err` when the transaction itself failed.
    fn run_with_savepoints(
        &self,
        batch: &mut [Box<dyn Job>],
        skip: usize,
        notes: &mut Notes,
    ) -> Result<bool, String> {
        let mut any_ok = false;
        for (i, job) in batch.iter_mut().enumerate() {
            if i == skip {
                continue;
            }
            self.exec("SAVEPOINT cmd").map_err(|e| e.to_string())?;
            let mark = notes.mark();
            let ok = {
                let mut ctx = WriteCtx {
                    conn: &self.conn,
                    notes,
                    limits: &self.limits,
                };
                job.run(&mut ctx)
            };
            if ok {
                any_ok = true;
                self.exec("RELEASE cmd").map_err(|e| e.to_string())?;
                continue;
            }
            notes.reset_to(mark);
            if self.conn.is_autocommit() {
                return Err("a command failed with an unrecoverable error".to_owned());
            }
            self.exec("ROLLBACK TO cmd")
                .and_then(|()| self.exec("RELEASE cmd"))
                .map_err(|e| e.to_string())?;
        }
        Ok(any_ok)
    }

    fn process(&mut self, batch: &mut Vec<Box<dyn Job>>) {
        self.stats
            .commands
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Err(e) = self.exec("BEGIN IMMEDIATE") {
            tracing::warn!(error = %e, "cannot begin a write transaction");
            let failure = Failure::Sqlite(&e);
            for job in batch.drain(..) {
                job.answer(Some(&failure));
            }
            return;
        }
        let mut notes = Notes::default();
        let mut any_ok = true;
        let mut rolled_back: Option<String> = None;
        // Fast path: every command straight in the transaction. Savepoints
        // cost a statement each and a copy of every page a command changes,
        // so they are only paid when a command fails (rarely: a conflict,
        // an unknown id, an invalid transition).
        let failed = batch.iter_mut().position(|job| {
            let mut ctx = WriteCtx {
                conn: &self.conn,
                notes: &mut notes,
                limits: &self.limits,
            };
            !job.run(&mut ctx)
        });
        if let Some(k) = failed {
            notes = Notes::default();
            if self.conn.is_autocommit() {
                // SQLite ended the whole transaction (I/O error, disk full):
                // the earlier commands' work is gone too.
                rolled_back = Some("a command failed with an unrecoverable error".to_owned());
            } else if batch.len() == 1 {
                any_ok = false;
            } else {
                // Undo everything, then run the others again, each under
                // its own savepoint (the failed one keeps its error).
                match self
                    .exec("ROLLBACK")
                    .and_then(|()| self.exec("BEGIN IMMEDIATE"))
                {
                    Ok(()) => match self.run_with_savepoints(batch, k, &mut notes) {
                        Ok(ok) => any_ok = ok,
                        Err(why) => rolled_back = Some(why),
                    },
                    Err(e) => rolled_back = Some(e.to_string()),
                }
            }
        }
        if let Some(why) = rolled_back {
            if !self.conn.is_autocommit() {
                let _ = self.exec("ROLLBACK");
            }
            let failure = Failure::RolledBack(&why);
            for job in batch.drain(..) {
                job.answer(Some(&failure));
            }
            return;
        }
        if !any_ok {
            // Nothing to keep: skip the commit (and its sync).
            if let Err(e) = self.exec("ROLLBACK") {
                tracing::warn!(error = %e, "rollback failed");
            }
            for job in batch.drain(..) {
                job.answer(None);
            }
            return;
        }
        if let Err(e) = self.exec("COMMIT") {
            tracing::warn!(error = %e, "commit failed");
            if !self.conn.is_autocommit() {
                let _ = self.exec("ROLLBACK");
            }
            let failure = Failure::Sqlite(&e);
            for job in batch.drain(..) {
                job.answer(Some(&failure));
            }
            return;
        }
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = &mut self.checkpointer {
            c.committed();
        }
        let notifications = if notes.is_empty() {
            Vec::new()
        } else {
            notes.drain()
        };
        if self.hub.has_subscribers() {
            for n in &notifications {
                self.hub.send(n.clone());
            }
        }
        for job in batch.drain(..) {
            job.answer(None);
        }
        if !notifications.is_empty() {
            self.broadcaster.send(&notifications);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_coalesce_and_roll_back_to_a_mark() {
        let mut notes = Notes::default();
        let a = TaskId::new();
        notes.available("q");
        notes.available("q");
        notes.changed(a);
        let mark = notes.mark();
        notes.changed(TaskId::new());
        notes.abort_requested(a);
        notes.changed_all();
        notes.reset_to(mark);
        let out = notes.drain();
        assert_eq!(
            out,
            vec![
                Notification::Available {
                    queue: Some("q".into())
                },
                Notification::Changed { ids: Some(vec![a]) },
            ]
        );
        assert!(notes.is_empty());
    }
}
