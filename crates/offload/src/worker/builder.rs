//! [`WorkerBuilder`]: every worker setting, with its default as a named constant.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use offload_store::{Clock, Store, SystemClock};
use offload_types::{
    DEFAULT_EVENT_RETENTION, DEFAULT_LEASE, DEFAULT_QUEUE, DEFAULT_RETENTION, Limit, MAX_DURATION,
    Schedule,
};

use super::Worker;
use super::shared::{RegisteredRunner, Shared, WorkerConfig};
use crate::context::StateMap;
use crate::typed::TypedRunner;
use crate::{Error, Hook, Result, Runner, TaskType};

/// Tasks run at once per queue unless configured.
pub const DEFAULT_CONCURRENCY: usize = 10;
/// How long running attempts may finish after shutdown starts.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How long an attempt asked to stop may take before its future is dropped.
pub const DEFAULT_ABORT_GRACE: Duration = Duration::from_secs(5);
/// Safety poll of an idle producer. Wake-ups normally come by notification
/// (also across processes, on both stores), so this only bounds the delay
/// when one is lost; it keeps an idle worker under one statement a second.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// How often workers hold the leader election and the leader rescues
/// expired leases: a dead worker's tasks run again within their lease plus
/// this long (plus the leader's ttl when the leader itself died on a store
/// without session locks, i.e. SQLite).
pub const DEFAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);
/// Unless set with [`WorkerBuilder::leader_ttl`], leadership lasts this
/// many maintenance intervals without renewal...
const LEADER_TTL_INTERVALS: u32 = 3;
/// ... and at least this long.
const MIN_DEFAULT_LEADER_TTL: Duration = Duration::from_secs(2);
/// Most tasks taken in one claim.
pub const DEFAULT_CLAIM_BATCH: usize = 100;
/// Shortest lease accepted (heartbeats come every third of it).
pub const MIN_LEASE: Duration = Duration::from_millis(100);
/// Longest lease accepted: a dead worker's tasks must come back in reasonable time.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);
/// Most tasks one queue may run at once in one worker.
pub const MAX_CONCURRENCY: usize = 100_000;

/// Configures a [`Worker`].
pub struct WorkerBuilder {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    runners: HashMap<String, RegisteredRunner>,
    maintenance_only: bool,
    hooks: Vec<Arc<dyn Hook>>,
    runner_hooks: Vec<(String, Arc<dyn Hook>)>,
    state: StateMap,
    queues: Vec<(String, usize)>,
    default_concurrency: Option<usize>,
    worker_id: Option<String>,
    lease: Duration,
    shutdown_grace: Duration,
    abort_grace: Duration,
    poll_interval: Duration,
    maintenance_interval: Duration,
    leader_ttl: Option<Duration>,
    retention: Duration,
    event_retention: Duration,
    claim_batch: usize,
    schedules: Vec<Schedule>,
    scheduler: bool,
    limits: Vec<Limit>,
}

impl WorkerBuilder {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
            runners: HashMap::new(),
            maintenance_only: false,
            hooks: Vec::new(),
            runner_hooks: Vec::new(),
            state: StateMap::default(),
            queues: Vec::new(),
            default_concurrency: None,
            worker_id: None,
            lease: DEFAULT_LEASE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            abort_grace: DEFAULT_ABORT_GRACE,
            poll_interval: DEFAULT_POLL_INTERVAL,
            maintenance_interval: DEFAULT_MAINTENANCE_INTERVAL,
            leader_ttl: None,
            retention: DEFAULT_RETENTION,
            event_retention: DEFAULT_EVENT_RETENTION,
            claim_batch: DEFAULT_CLAIM_BATCH,
            schedules: Vec::new(),
            scheduler: true,
            limits: Vec::new(),
        }
    }

    /// Stores `limit` when the worker starts (replacing the one with the
    /// same scope and target): defined in code next to its runner, applied
    /// by every worker sharing the store.
    pub fn limit(mut self, limit: Limit) -> Self {
        self.limits.push(limit);
        self
    }

    /// Stores `schedule` when the worker starts (keeping its next tick and
    /// an operator's pause if it exists unchanged; see
    /// [`Client::put_schedule`](crate::Client::put_schedule)). Every
    /// worker's scheduler enqueues the ticks of every stored schedule, each
    /// tick once however many workers run.
    ///
    /// ```no_run
    /// # async fn demo(store: std::sync::Arc<dyn offload::Store>) -> offload::Result<()> {
    /// use offload::{Schedule, Worker};
    /// # struct Cleanup;
    /// # #[offload::async_trait]
    /// # impl offload::Runner for Cleanup {
    /// #     async fn run(&self, _: &offload::Task, _: &offload::Context, _: &offload::Controller) -> Result<serde_json::Value, offload::TaskError> { Ok(serde_json::Value::Null) }
    /// # }
    /// let worker = Worker::builder(store)
    ///     .runner("cleanup", Cleanup)
    ///     .schedule(Schedule::new("nightly-cleanup", "0 3 * * *", "cleanup").time_zone("Europe/Berlin"))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    /// Runs no scheduler in this worker (another process enqueues the
    /// ticks of stored schedules).
    pub fn without_scheduler(mut self) -> Self {
        self.scheduler = false;
        self
    }

    /// Registers the runner for task name `name`.
    pub fn runner(self, name: impl Into<String>, runner: impl Runner) -> Self {
        self.runner_arc(name, Arc::new(runner))
    }

    /// Registers a shared runner for task name `name`.
    pub fn runner_arc(mut self, name: impl Into<String>, runner: Arc<dyn Runner>) -> Self {
        self.runners.insert(
            name.into(),
            RegisteredRunner {
                runner,
                hooks: Vec::new(),
            },
        );
        self
    }

    /// Registers a typed task under its `NAME`.
    pub fn task<T: TaskType>(self, task: T) -> Self {
        self.runner(T::NAME, TypedRunner(task))
    }

    /// Adds a hook around every attempt of every runner.
    pub fn hook(mut self, hook: impl Hook) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Adds a hook around the attempts of one runner (runs inside the worker-level hooks).
    pub fn runner_hook(mut self, name: impl Into<String>, hook: impl Hook) -> Self {
        self.runner_hooks.push((name.into(), Arc::new(hook)));
        self
    }

    /// Registers shared state of type `T`, reachable through [`Context::state`](crate::Context::state).
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// Tasks run at once from the `default` queue (when no queue is named,
    /// it is the only queue served).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.default_concurrency = Some(n);
        self
    }

    /// Serves `queue` with `concurrency` tasks at once (replaces an earlier setting).
    pub fn queue(mut self, queue: impl Into<String>, concurrency: usize) -> Self {
        let queue = queue.into();
        self.queues.retain(|(q, _)| *q != queue);
        self.queues.push((queue, concurrency));
        self
    }

    /// This worker's id (default: `worker-<pid>-<random>`).
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// Lease length; heartbeats renew it every third of it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long running attempts may finish after shutdown starts.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// How long an attempt asked to stop may take before it is dropped.
    pub fn abort_grace(mut self, grace: Duration) -> Self {
        self.abort_grace = grace;
        self
    }

    /// Safety poll of an idle producer.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How often maintenance (rescue, pruning) runs on the leader; also how
    /// often every worker takes part in the leader election (default 1 s).
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.maintenance_interval = interval;
        self
    }

    /// How long leadership of maintenance lasts unless its holder renews it
    /// (it renews every maintenance interval). When the leader is cut off
    /// from the store but its process lives, another worker takes over
    /// after this long; a leader whose process died is replaced sooner where
    /// the store can tell (PostgreSQL: within one maintenance interval).
    /// Default: three maintenance intervals, and at least 2 s. Must be
    /// longer than the maintenance interval; several intervals let the
    /// leader survive a missed renewal or two.
    pub fn leader_ttl(mut self, ttl: Duration) -> Self {
        self.leader_ttl = Some(ttl);
        self
    }

    /// Terminal tasks older than this are pruned (default 7 days).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Events older than this leave the event log (default 24 hours). Readers
    /// of `GET /v1/events` and the webhook dispatcher must keep up within it.
    pub fn event_retention(mut self, retention: Duration) -> Self {
        self.event_retention = retention;
        self
    }

    /// Most tasks taken in one claim.
    pub fn claim_batch(mut self, n: usize) -> Self {
        self.claim_batch = n;
        self
    }

    /// Uses another clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Runs no task, only maintenance: rescuing expired leases and
    /// retention, when elected leader. For a process that serves remote
    /// workers (`offload serve`) but has no runner of its own. Runners and
    /// queues given to this builder are refused.
    pub fn maintenance_only(mut self) -> Self {
        self.maintenance_only = true;
        self
    }

    /// Checks the settings and builds the worker.
    pub fn build(mut self) -> Result<Worker> {
        if self.maintenance_only {
            if !self.runners.is_empty() || !self.queues.is_empty() {
                return Err(Error::Config(
                    "a maintenance-only worker takes no runner and no queue".into(),
                ));
            }
        } else if self.runners.is_empty() {
            return Err(Error::Config("no runner registered".into()));
        }
        for (name, hook) in self.runner_hooks {
            match self.runners.get_mut(&name) {
                Some(r) => r.hooks.push(hook),
                None => {
                    return Err(Error::Config(format!(
                        "runner_hook for {name:?}, which has no runner"
                    )));
                }
            }
        }
        if !self.maintenance_only && (self.queues.is_empty() || self.default_concurrency.is_some())
        {
            let n = self.default_concurrency.unwrap_or(DEFAULT_CONCURRENCY);
            if !self.queues.iter().any(|(q, _)| q == DEFAULT_QUEUE) {
                self.queues.insert(0, (DEFAULT_QUEUE.to_owned(), n));
            }
        }
        if let Some((q, n)) = self
            .queues
            .iter()
            .find(|(_, n)| *n == 0 || *n > MAX_CONCURRENCY)
        {
            return Err(Error::Config(format!(
                "queue {q:?} has concurrency {n}; it must be between 1 and {MAX_CONCURRENCY}"
            )));
        }
        if !(MIN_LEASE..=MAX_LEASE).contains(&self.lease) {
            return Err(Error::Config(format!(
                "lease {:?} is out of range ({MIN_LEASE:?} to {MAX_LEASE:?})",
                self.lease
            )));
        }
        for (what, d) in [
            ("shutdown_grace", self.shutdown_grace),
            ("abort_grace", self.abort_grace),
            ("poll_interval", self.poll_interval),
            ("maintenance_interval", self.maintenance_interval),
            ("leader_ttl", self.leader_ttl.unwrap_or_default()),
            ("retention", self.retention),
            ("event_retention", self.event_retention),
        ] {
            if d > MAX_DURATION {
                return Err(Error::Config(format!(
                    "{what} {d:?} is longer than 100 years"
                )));
            }
        }
        if self.poll_interval.is_zero() || self.maintenance_interval.is_zero() {
            return Err(Error::Config(
                "poll_interval and maintenance_interval must be longer than 0".into(),
            ));
        }
        // leadership outlives a few missed renewals, yet fails over in seconds
        let leader_ttl = self.leader_ttl.unwrap_or_else(|| {
            self.maintenance_interval
                .saturating_mul(LEADER_TTL_INTERVALS)
                .max(MIN_DEFAULT_LEADER_TTL)
        });
        if leader_ttl <= self.maintenance_interval {
            return Err(Error::Config(format!(
                "leader_ttl {leader_ttl:?} must be longer than maintenance_interval {:?} \
                 (the leader renews once per interval)",
                self.maintenance_interval
            )));
        }
        if self.claim_batch == 0 {
            return Err(Error::Config("claim_batch must be at least 1".into()));
        }
        for s in &self.schedules {
            s.validate()
                .map_err(|e| Error::Config(format!("schedule {:?}: {e}", s.name)))?;
        }
        for l in &self.limits {
            l.validate().map_err(|e| {
                Error::Config(format!(
                    "limit for {} {:?}: {e}",
                    l.scope.as_str(),
                    l.target
                ))
            })?;
        }
        let worker_id = self.worker_id.unwrap_or_else(|| {
            let random = uuid::Uuid::new_v4().simple().to_string();
            format!("worker-{}-{}", std::process::id(), &random[..6])
        });
        let config = WorkerConfig {
            queues: self.queues,
            heartbeat_interval: self.lease / 3,
            lease: self.lease,
            shutdown_grace: self.shutdown_grace,
            abort_grace: self.abort_grace,
            poll_interval: self.poll_interval,
            maintenance_interval: self.maintenance_interval,
            leader_ttl,
            retention: self.retention,
            event_retention: self.event_retention,
            claim_batch: self.claim_batch,
        };
        Ok(Worker {
            shared: Arc::new(Shared::new(
                self.store,
                self.clock,
                self.runners,
                self.hooks,
                self.state,
                worker_id,
                config,
            )),
            schedules: self.schedules,
            scheduler: self.scheduler,
            limits: self.limits,
        })
    }
}
