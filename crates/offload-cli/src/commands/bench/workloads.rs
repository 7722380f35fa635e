//! The driver side of `offload bench`: the four workloads in the harness's
//! order, each timed exactly as `shared/bench/peers/README.md` defines it.
//!
//! - `bulk_enqueue`: `BENCH_N` tasks through [`Client::trigger_many`],
//!   `BENCH_BATCH` per call, calls awaited one after another; timed from
//!   the first call to the last call's return. The tasks stay queued.
//! - `drain`: one worker with concurrency `BENCH_CONCURRENCY` runs those
//!   tasks; the worker side times it (see [`super::worker`]).
//! - `single_enqueue`: `BENCH_SINGLE_N` calls of [`Client::trigger`], each
//!   awaited before the next.
//! - `pickup_latency`: an idle worker, then `BENCH_LATENCY_N` triggers on a
//!   fixed schedule of `BENCH_LATENCY_RATE` per second, each carrying the
//!   wall-clock time taken just before its call; nearest-rank p50 and p99
//!   of what the runner measured.
//!
//! With `BENCH_BACKLOG_DELAYED` / `BENCH_BACKLOG_BLOCKED`, that many
//! tasks delayed by a day, and blocked on one of those, are inserted (not
//! timed) into the bench's queue after each reset: the standing backlog a
//! busy queue carries, which must not slow the ready work.
//!
//! Each workload but `drain` first deletes the bench's data, as the peers
//! do: in the temp folder it starts over with a fresh database file; on
//! PostgreSQL with a fresh schema; in a SQLite database given with
//! `--database-url` it deletes the bench's own tasks ([`clean`]). A workload that fails or times out prints a `NOTE` line and
//! the next one runs.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use offload::{Client, NewTask, Status, TaskFilter, TaskListParams, TaskOptions};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout};

use super::worker::{Mode, Report, WorkerLink};
use super::{Out, QUEUE, Settings, TASK_NAME, Target, UNFINISHED, short};
use crate::failure::{Failure, code};

/// Most rounds of [`clean`] (each aborts up to one page of waiting tasks).
const CLEAN_ROUNDS: usize = 1000;
/// Page size of [`clean`].
const CLEAN_PAGE: u32 = 1000;
/// How long the worker sits idle before `pickup_latency` starts enqueuing.
const IDLE_BEFORE_LATENCY: Duration = Duration::from_secs(1);

/// One bench run: where to print, what to run, and the producer's client.
pub(super) struct Bench<'a> {
    out: &'a Out,
    settings: &'a Settings,
    target: &'a Target,
    url: String,
    embedded: bool,
    /// The producer's client; `None` only while the database is replaced.
    client: Option<Client>,
}

impl<'a> Bench<'a> {
    /// Opens the bench database and checks that it holds no task at all.
    pub(super) async fn open(
        out: &'a Out,
        settings: &'a Settings,
        target: &'a Target,
        embedded: bool,
    ) -> anyhow::Result<Self> {
        let url = target.url();
        let client = connect(&url).await?;
        let total: u64 = client
            .count(TaskFilter::default())
            .await
            .with_context(|| format!("cannot read database {url}"))?
            .iter()
            .map(|c| c.count)
            .sum();
        if total > 0 {
            return Err(Failure::with_code(
                code::FAILED,
                format!(
                    "database {url} already holds {total} task(s); offload bench needs an empty \
                     database (omit --database-url to use a fresh file in the temp dir)"
                ),
            ));
        }
        Ok(Self {
            out,
            settings,
            target,
            url,
            embedded,
            client: Some(client),
        })
    }

    fn client(&self) -> anyhow::Result<&Client> {
        self.client
            .as_ref()
            .context("the bench database is not open (reopening it failed)")
    }

    /// Deletes the bench's data, as each peer does before a workload: a
    /// fresh database file in the temp folder or a fresh PostgreSQL schema
    /// (the store is closed and opened again), or the bench's own tasks in
    /// a given database.
    async fn reset(&mut self) -> anyhow::Result<()> {
        if let Target::Given(_) = self.target {
            clean(self.client()?).await?;
        } else {
            // closes the store: its writer thread stops, its wake-up socket goes
            // (PostgreSQL: its pool and listener close)
            self.client = None;
            self.target.fresh().await?;
            self.client = Some(connect(&self.url).await?);
        }
        self.backlog().await
    }

    /// Inserts the standing backlog (untimed): delayed tasks, and blocked
    /// tasks that depend on the first of them.
    async fn backlog(&self) -> anyhow::Result<()> {
        let s = self.settings;
        if s.backlog() == 0 {
            return Ok(());
        }
        let client = self.client()?;
        let later = options().run_at(chrono::Utc::now() + chrono::Duration::days(1));
        let delayed = s.backlog_delayed.max(u64::from(s.backlog_blocked > 0));
        let gate = NewTask::new(TASK_NAME, json!({ "backlog": 0 })).options(later.clone());
        let gate_id = gate.id;
        let mut batch = vec![gate];
        let blocked = options().depends_on(gate_id);
        let all = (1..delayed)
            .map(|i| NewTask::new(TASK_NAME, json!({ "backlog": i })).options(later.clone()))
            .chain((0..s.backlog_blocked).map(|i| {
                NewTask::new(TASK_NAME, json!({ "blocked": i })).options(blocked.clone())
            }));
        for task in all {
            batch.push(task);
            if batch.len() as u64 >= s.batch {
                client.trigger_many(std::mem::take(&mut batch)).await?;
            }
        }
        if !batch.is_empty() {
            client.trigger_many(batch).await?;
        }
        Ok(())
    }

    /// Deletes the bench's tasks from a database that stays.
    pub(super) async fn finish(self) {
        if let (Target::Given(_), Some(client)) = (self.target, &self.client)
            && let Err(e) = clean(client).await
        {
            self.out
                .note(&format!("cleanup error={:?}", short(&format!("{e:#}"))));
        }
    }

    /// Runs the workloads named in `BENCH_WORKLOADS`, in that order.
    pub(super) async fn run_all(&mut self) {
        for workload in &self.settings.workloads {
            let run = match workload.as_str() {
                "bulk_enqueue" => self.bulk_enqueue().await,
                "drain" => self.drain().await,
                "single_enqueue" => self.single_enqueue().await,
                "pickup_latency" => self.pickup_latency().await,
                other => Err(anyhow!("unknown workload {other}")),
            };
            if let Err(err) = run {
                self.out.note(&format!(
                    "workload={workload} error={:?}",
                    short(&format!("{err:#}"))
                ));
            }
        }
    }

    /// Enqueues tasks `*done..BENCH_N` through the bulk API.
    async fn enqueue_all(&self, done: &mut u64) -> anyhow::Result<()> {
        let s = self.settings;
        let client = self.client()?;
        while *done < s.n {
            let end = done.saturating_add(s.batch).min(s.n);
            let tasks = (*done..end)
                .map(|i| NewTask::new(TASK_NAME, json!({ "i": i })).options(options()))
                .collect();
            client.trigger_many(tasks).await?;
            *done = end;
        }
        Ok(())
    }

    async fn bulk_enqueue(&mut self) -> anyhow::Result<()> {
        let s = self.settings;
        self.reset().await?;
        let mut done = 0;
        let start = Instant::now();
        let finished = timeout(s.timeout, self.enqueue_all(&mut done)).await;
        let elapsed = start.elapsed().as_secs_f64();
        match finished {
            Ok(result) => result?,
            Err(_) => self.out.note(&format!(
                "workload=bulk_enqueue timed_out completed={done}/{}",
                s.n
            )),
        }
        let queued = unfinished(self.client()?).await?;
        if queued != s.n + s.backlog() {
            self.out.note(&format!(
                "workload=bulk_enqueue queued={queued} expected={}",
                s.n + s.backlog()
            ));
        }
        self.out
            .result("bulk_enqueue", rate(done, elapsed), "jobs/s");
        Ok(())
    }

    async fn drain(&mut self) -> anyhow::Result<()> {
        let s = self.settings;
        // drains what bulk_enqueue left (enqueues it again if it was skipped)
        if unfinished(self.client()?).await? != s.n + s.backlog() {
            self.reset().await?;
            self.enqueue_all(&mut 0).await?;
        }
        let mut worker = self.start_worker(Mode::Drain, s.n)?;
        let report = async {
            worker.next(s).await?; // ready
            worker.next(s).await // done
        }
        .await;
        worker.stop().await;
        let Report::Done {
            finished,
            elapsed,
            completed,
            error,
            ..
        } = report?
        else {
            bail!("unexpected message from the worker")
        };
        if let Some(error) = error {
            self.out.note(&format!(
                "workload=drain error={:?} completed={completed}/{} after={elapsed:.1}s",
                short(&error),
                s.n
            ));
        } else if !finished {
            self.out.note(&format!(
                "workload=drain timed_out completed={completed}/{} after={elapsed:.1}s",
                s.n
            ));
        }
        self.out.result("drain", rate(completed, elapsed), "jobs/s");
        Ok(())
    }

    async fn single_enqueue(&mut self) -> anyhow::Result<()> {
        let s = self.settings;
        self.reset().await?;
        let client = self.client()?;
        let mut done = 0;
        let start = Instant::now();
        let finished = timeout(s.timeout, async {
            while done < s.single_n {
                client
                    .trigger(TASK_NAME, json!({ "i": done }), options())
                    .await?;
                done += 1;
            }
            anyhow::Ok(())
        })
        .await;
        let elapsed = start.elapsed().as_secs_f64();
        match finished {
            Ok(result) => result?,
            Err(_) => self.out.note(&format!(
                "workload=single_enqueue timed_out completed={done}/{}",
                s.single_n
            )),
        }
        self.out
            .result("single_enqueue", rate(done, elapsed), "jobs/s");
        Ok(())
    }

    async fn pickup_latency(&mut self) -> anyhow::Result<()> {
        let s = self.settings;
        self.reset().await?;
        let client = self.client()?;
        let mut worker = self.start_worker(Mode::Latency, s.latency_n)?;
        let report = async {
            worker.next(s).await?; // ready
            sleep(IDLE_BEFORE_LATENCY).await; // let the worker go idle
            let interval = Duration::from_secs_f64(1.0 / s.latency_rate);
            let start = tokio::time::Instant::now();
            let produced = timeout(s.timeout, async {
                for k in 0..s.latency_n {
                    // a fixed schedule: no wait when behind it
                    sleep_until(start + interval.mul_f64(k as f64)).await;
                    let input = json!({ "i": k, "t": wall_clock_ms() });
                    client.trigger(TASK_NAME, input, options()).await?;
                }
                anyhow::Ok(())
            })
            .await;
            match produced {
                Ok(result) => result?,
                Err(_) => self.out.note("workload=pickup_latency enqueue timed_out"),
            }
            worker.next(s).await // done
        }
        .await;
        worker.stop().await;
        let Report::Done {
            finished,
            mut latencies,
            error,
            ..
        } = report?
        else {
            bail!("unexpected message from the worker")
        };
        if let Some(error) = error {
            self.out.note(&format!(
                "workload=pickup_latency error={:?} completed={}/{}",
                short(&error),
                latencies.len(),
                s.latency_n
            ));
        } else if !finished {
            self.out.note(&format!(
                "workload=pickup_latency timed_out completed={}/{}",
                latencies.len(),
                s.latency_n
            ));
        }
        latencies.sort_by(f64::total_cmp);
        for (workload, percent) in [("pickup_latency_p50", 50), ("pickup_latency_p99", 99)] {
            if let Some(value) = nearest_rank(&latencies, percent) {
                self.out.result(workload, value, "ms");
            }
        }
        Ok(())
    }

    /// Starts the worker: another process, or a task here with `--embedded`.
    fn start_worker(&self, mode: Mode, expect: u64) -> anyhow::Result<WorkerLink> {
        if self.embedded {
            Ok(WorkerLink::embedded(
                self.settings,
                self.client()?.store().clone(),
                expect,
            ))
        } else {
            WorkerLink::spawn(&self.url, mode, expect)
        }
    }
}

/// Opens the bench database.
async fn connect(url: &str) -> anyhow::Result<Client> {
    Client::connect(url)
        .await
        .with_context(|| format!("cannot open database {url}"))
}

/// The options of every bench task: the bench's own queue, defaults otherwise.
fn options() -> TaskOptions {
    TaskOptions::new().queue(QUEUE)
}

/// Bench tasks not finished yet.
pub(super) async fn unfinished(client: &Client) -> anyhow::Result<u64> {
    let counts = client
        .count(TaskFilter {
            queues: vec![QUEUE.to_owned()],
            statuses: UNFINISHED.to_vec(),
            ..TaskFilter::default()
        })
        .await?;
    Ok(counts.iter().map(|c| c.count).sum())
}

/// Bench tasks ready or running (not the standing backlog, which waits).
/// One status per count, so each is read through that status's partial
/// index rather than a scan of every row (the backlog's included).
pub(super) async fn ready_or_running(client: &Client) -> anyhow::Result<u64> {
    let mut total = 0;
    for status in [Status::Pending, Status::Running] {
        let counts = client
            .count(TaskFilter {
                queues: vec![QUEUE.to_owned()],
                statuses: vec![status],
                ..TaskFilter::default()
            })
            .await?;
        total += counts.iter().map(|c| c.count).sum::<u64>();
    }
    Ok(total)
}

/// Deletes the bench's tasks (queue [`QUEUE`]) and nothing else: waiting
/// ones are aborted first, then every terminal one is purged.
pub(super) async fn clean(client: &Client) -> anyhow::Result<()> {
    let waiting = TaskFilter {
        queues: vec![QUEUE.to_owned()],
        statuses: vec![Status::Scheduled, Status::Blocked, Status::Pending],
        ..TaskFilter::default()
    };
    for _ in 0..CLEAN_ROUNDS {
        let page = client
            .list(TaskListParams {
                filter: waiting.clone(),
                cursor: None,
                limit: CLEAN_PAGE,
            })
            .await?;
        if page.tasks.is_empty() {
            break;
        }
        // concurrent calls share the store's group commits
        let mut aborts = JoinSet::new();
        for task in page.tasks {
            let client = client.clone();
            aborts.spawn(async move { client.abort(task.id, None).await });
        }
        while let Some(joined) = aborts.join_next().await {
            joined.context("an abort during cleanup did not finish")??;
        }
    }
    client
        .purge(
            TaskFilter {
                queues: vec![QUEUE.to_owned()],
                ..TaskFilter::default()
            },
            None,
        )
        .await?;
    let left = unfinished(client).await?;
    if left > 0 {
        bail!("{left} bench tasks are still running or waiting and could not be deleted");
    }
    Ok(())
}

/// Jobs per second, 0 when no time passed.
pub(super) fn rate(done: u64, elapsed: f64) -> f64 {
    if elapsed > 0.0 {
        done as f64 / elapsed
    } else {
        0.0
    }
}

/// The nearest-rank `percent` percentile of sorted samples.
pub(super) fn nearest_rank(sorted: &[f64], percent: usize) -> Option<f64> {
    let rank = (percent * sorted.len()).div_ceil(100);
    sorted.get(rank.saturating_sub(1)).copied()
}

/// Wall-clock milliseconds since the Unix epoch, sub-millisecond precise.
pub(super) fn wall_clock_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_matches_the_harness() {
        let samples: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(nearest_rank(&samples, 50), Some(500.0));
        assert_eq!(nearest_rank(&samples, 99), Some(990.0));
        assert_eq!(nearest_rank(&[3.0], 99), Some(3.0));
        assert_eq!(nearest_rank(&[], 50), None);
    }
}
