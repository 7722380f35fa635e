//! [`PgStore`]: opening, notifications, and the [`Store`] implementation,
//! which hands each call to the module of its kind ([`crate::hot`] for the
//! worker's hot path, [`crate::manage`] for operators' calls,
//! [`crate::copy`] for export and import).

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use offload_store::{
    Capabilities, FinishResult, LeaderElectParams, LeaderResignParams, LeaseState, Notification,
    Notifier, NotifyHub, RescuedTask, Store, StoreError, StoreResult, TaskAbortParams,
    TaskClaimParams, TaskCount, TaskCountParams, TaskDeleteParams, TaskExportParams,
    TaskFinishParams, TaskHeartbeatParams, TaskImportParams, TaskImportResult, TaskInsertParams,
    TaskListParams, TaskNextRunAtParams, TaskPage, TaskProgressParams, TaskPurgeParams, TaskRecord,
    TaskRescueParams, TaskRetryParams, TaskUpdateParams,
};
use offload_types::{Attempt, Enqueued, NewTask, Task, TaskId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

use crate::codec::after;
use crate::error::map;
use crate::leader::Leadership;
use crate::notify::{self, Debounce, Payload, PgNotifier, Plan};
use crate::options::{PgOptions, parse_url, redact};

/// The PostgreSQL store. Cheap to clone (an `Arc` inside). Dropping the
/// last clone closes its pool, and its listener stops within a second.
///
/// ```no_run
/// use offload_store::Store;
/// use offload_store_postgres::{PgOptions, PgStore};
///
/// # async fn demo() -> Result<(), offload_store::StoreError> {
/// let store = PgStore::open(
///     "postgres://postgres@127.0.0.1:5432/app",
///     PgOptions::default().schema("jobs"),
/// )
/// .await?;
/// println!("{}", store.describe());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PgStore {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) schema: String,
    /// `"schema"`, ready to put in front of table names.
    pub(crate) q: String,
    pub(crate) channel: String,
    /// This store's id in notification payloads, so its listener skips
    /// what the store already delivered locally.
    pub(crate) instance: String,
    pub(crate) notifier: Arc<PgNotifier>,
    pub(crate) leadership: Leadership,
    /// Spaces out the notifications of hot writes.
    pub(crate) debounce: Arc<Debounce>,
    pub(crate) sql: crate::hot::Statements,
    /// The cached stored limits.
    pub(crate) limits: crate::limits::LimitCache,
    /// Which queues have tasks with a fairness key, cached.
    pub(crate) fair: crate::fairness::FairCache,
    describe: String,
}

impl PgStore {
    /// Connects, creates the schema if needed and applies pending
    /// migrations (under an advisory lock, so processes starting together
    /// do not race), and starts the notification listener. `url` is a
    /// `postgres://` URL as the driver reads it (offload's own `?schema=`,
    /// `?pool_size=` and `?acquire_timeout=` parameters are also accepted
    /// and override `options`).
    ///
    /// Errors: `Invalid` for a malformed URL or option; `Unavailable` when
    /// the server cannot be reached; `Corrupt` when the schema holds
    /// another application's tables or was written by a newer offload.
    pub async fn open(url: &str, options: PgOptions) -> StoreResult<Self> {
        let (driver_url, from_url) = parse_url(url)?;
        let options = if url.contains('?') {
            merge(options, from_url, url)
        } else {
            options
        };
        options.validate()?;
        let connect = PgConnectOptions::from_str(&driver_url).map_err(|e| {
            StoreError::Invalid(offload_types::ValidationError::new(
                "database_url",
                format!("{}: {e}", redact(url)),
            ))
        })?;
        // Sessions show up as "offload" in pg_stat_activity unless the URL
        // names them (`?application_name=...`).
        let connect = if connect.get_application_name().is_some() {
            connect
        } else {
            connect.application_name("offload")
        };
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size)
            .min_connections(0)
            // no ping before every statement (a round trip each): a
            // connection that died fails its statement, is discarded, and
            // callers retry, as they must for a drop mid-statement anyway
            .test_before_acquire(false)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect.clone());
        {
            let mut conn = pool.acquire().await.map_err(map)?;
            crate::schema::migrate(&mut conn, &options.schema).await?;
        }
        let schema = options.schema.clone();
        let q = format!("\"{schema}\"");
        let inner = Arc::new(Inner {
            pool: pool.clone(),
            channel: notify::channel(&schema),
            instance: uuid::Uuid::new_v4().to_string(),
            notifier: Arc::new(PgNotifier {
                hub: NotifyHub::new(),
            }),
            leadership: Leadership::new(&schema, connect),
            debounce: Arc::new(Debounce::default()),
            sql: crate::hot::Statements::new(&q),
            limits: crate::limits::LimitCache::default(),
            fair: crate::fairness::FairCache::default(),
            describe: format!("postgres:{}#{schema}", redact(&driver_url)),
            schema,
            q,
        });
        notify::spawn_listener(
            pool,
            inner.channel.clone(),
            inner.instance.clone(),
            inner.notifier.hub.clone(),
            &inner,
        )
        .await;
        Ok(Self { inner })
    }

    /// Opens the store a `postgres://` URL names, e.g.
    /// `postgres://user@host:5432/db?schema=offload&pool_size=10`.
    pub async fn open_url(url: &str) -> StoreResult<Self> {
        Self::open(url, PgOptions::default()).await
    }

    /// The schema holding this store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The connection pool (for tests and tools that read the tables).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Inserts tasks through `conn`, typically inside the application's own
    /// transaction (`&mut *tx`): they exist if and only if that transaction
    /// commits, and workers are woken when it does. Validation and
    /// duplicate ids fail as in [`Store::task_insert_many`], and then the
    /// transaction is aborted, as any failed statement aborts it.
    ///
    /// Tasks with dependencies, a group or a unique key are inserted as
    /// in [`Store::task_insert_many`], inside a savepoint of the
    /// application's transaction (a refused batch leaves nothing behind);
    /// the unique key's advisory lock, and the row locks of stored
    /// dependencies (which keep their finish waiting), are held until
    /// that transaction ends. `conn` must be a plain connection or a transaction begun
    /// through `sqlx` (which tracks its depth), not one opened with a raw
    /// `BEGIN`.
    ///
    /// ```no_run
    /// use offload_store_postgres::{PgStore, sqlx};
    /// use offload_types::NewTask;
    ///
    /// # async fn demo(store: PgStore, pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("INSERT INTO users (email) VALUES ($1)").bind("a@example.com").execute(&mut *tx).await?;
    /// store.insert_in(&mut *tx, &[NewTask::new("welcome-email", serde_json::json!({"to": "a@example.com"}))], chrono::Utc::now()).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn insert_in(
        &self,
        conn: &mut PgConnection,
        tasks: &[NewTask],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Enqueued>> {
        crate::hot::insert(self, &mut *conn, tasks, now, false).await
    }

    /// `EXPLAIN` of the hot statements (claim, claim by names, heartbeat,
    /// finish), one line per plan node, for tests that check their indexes.
    #[doc(hidden)]
    pub async fn explain_hot(&self) -> StoreResult<Vec<(&'static str, Vec<String>)>> {
        crate::hot::explain_hot(self).await
    }

    /// Payload text for `pg_notify`: the instance line, then the body.
    pub(crate) fn payload(&self, p: &Payload) -> String {
        format!("{}\n{}", self.inner.instance, p.body())
    }

    /// The `pg_notify` payload argument of a hot write: the text when it
    /// notifies inline, NULL when deferred.
    pub(crate) fn plan_text(&self, plan: &Plan) -> Option<String> {
        match plan {
            Plan::Inline(p) => Some(self.payload(p)),
            Plan::Deferred => None,
        }
    }

    /// After a hot write: a deferred payload gets its trailing
    /// notification; an inline one that was not sent (the write failed, or
    /// changed no row so its statement never reached `pg_notify`) goes back
    /// to the debouncer and out with the trailing one.
    pub(crate) fn after_hot_write<T>(
        &self,
        plan: Plan,
        result: StoreResult<T>,
        sent: impl FnOnce(&T) -> bool,
    ) -> StoreResult<T> {
        match (&result, plan) {
            (_, Plan::Deferred) => self.schedule_trailing(),
            (Ok(v), Plan::Inline(_)) if sent(v) => {}
            (_, Plan::Inline(p)) => {
                self.inner.debounce.restore(p);
                self.schedule_trailing();
            }
        }
        result
    }

    /// Makes sure the debouncer's pending payload goes out.
    pub(crate) fn schedule_trailing(&self) {
        self.inner
            .debounce
            .schedule(&self.inner.pool, &self.inner.channel, &self.inner.instance);
    }

    /// Delivers notifications to this process's subscribers (after commit).
    pub(crate) fn local(&self, notes: impl IntoIterator<Item = Notification>) {
        for n in notes {
            self.inner.notifier.hub.send(n);
        }
    }

    pub(crate) fn q(&self) -> &str {
        &self.inner.q
    }
}

/// Offload's URL parameters win over `options` where the URL sets them.
fn merge(options: PgOptions, from_url: PgOptions, url: &str) -> PgOptions {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let has = |key: &str| query.split('&').any(|p| p.split('=').next() == Some(key));
    PgOptions {
        schema: if has("schema") {
            from_url.schema
        } else {
            options.schema
        },
        pool_size: if has("pool_size") {
            from_url.pool_size
        } else {
            options.pool_size
        },
        acquire_timeout: if has("acquire_timeout") {
            from_url.acquire_timeout
        } else {
            options.acquire_timeout
        },
    }
}

#[async_trait]
impl Store for PgStore {
    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.cross_process_notify = true;
        caps.multi_host = true;
        caps
    }

    fn notifier(&self) -> Arc<dyn Notifier> {
        self.inner.notifier.clone()
    }

    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn leader_attempt_elect(&self, params: &LeaderElectParams) -> StoreResult<bool> {
        self.inner
            .leadership
            .elect(
                &self.inner.pool,
                &params.name,
                &params.holder,
                params.now,
                after(params.now, params.ttl),
            )
            .await
    }

    async fn leader_resign(&self, params: &LeaderResignParams) -> StoreResult<()> {
        self.inner
            .leadership
            .resign(&self.inner.pool, &params.name, &params.holder)
            .await
    }

    async fn task_abort(&self, params: &TaskAbortParams) -> StoreResult<Task> {
        crate::manage::abort(self, params).await
    }

    async fn task_attempts(&self, id: TaskId) -> StoreResult<Vec<Attempt>> {
        crate::manage::attempts(self, id).await
    }

    async fn task_claim(&self, params: &TaskClaimParams) -> StoreResult<Vec<Task>> {
        crate::hot::claim(self, params).await
    }

    async fn task_count(&self, params: &TaskCountParams) -> StoreResult<Vec<TaskCount>> {
        crate::manage::count(self, params).await
    }

    async fn task_delete(&self, params: &TaskDeleteParams) -> StoreResult<()> {
        crate::manage::delete(self, params).await
    }

    async fn task_export(&self, params: &TaskExportParams) -> StoreResult<Vec<TaskRecord>> {
        crate::copy::export(self, params).await
    }

    async fn task_finish_many(&self, params: &TaskFinishParams) -> StoreResult<Vec<FinishResult>> {
        crate::hot::finish(self, params).await
    }

    async fn task_get(&self, id: TaskId) -> StoreResult<Option<Task>> {
        crate::manage::get(self, id).await
    }

    async fn task_heartbeat_many(
        &self,
        params: &TaskHeartbeatParams,
    ) -> StoreResult<Vec<LeaseState>> {
        crate::hot::heartbeat(self, params).await
    }

    async fn task_import(&self, params: &TaskImportParams) -> StoreResult<TaskImportResult> {
        crate::copy::import(self, params).await
    }

    async fn task_insert_many(&self, params: &TaskInsertParams) -> StoreResult<Vec<Enqueued>> {
        let mut conn = self.inner.pool.acquire().await.map_err(map)?;
        crate::hot::insert(self, &mut conn, &params.tasks, params.now, true).await
    }

    async fn task_list(&self, params: &TaskListParams) -> StoreResult<TaskPage> {
        crate::manage::list(self, params).await
    }

    async fn task_next_run_at(
        &self,
        params: &TaskNextRunAtParams,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        crate::manage::next_run_at(self, params).await
    }

    async fn task_progress_many(
        &self,
        params: &TaskProgressParams,
    ) -> StoreResult<Vec<LeaseState>> {
        crate::hot::progress(self, params).await
    }

    async fn task_purge(&self, params: &TaskPurgeParams) -> StoreResult<u64> {
        crate::manage::purge(self, params).await
    }

    async fn task_rescue_expired(
        &self,
        params: &TaskRescueParams,
    ) -> StoreResult<Vec<RescuedTask>> {
        crate::hot::rescue(self, params).await
    }

    async fn task_resolve_blocked(
        &self,
        params: &offload_store::TaskResolveParams,
    ) -> StoreResult<u64> {
        crate::deps::resolve_blocked(self, params.limit, params.now).await
    }

    async fn schedule_put(
        &self,
        params: &offload_store::SchedulePutParams,
    ) -> StoreResult<offload_store::ScheduleRecord> {
        crate::schedules::put(self, params).await
    }

    async fn schedule_get(&self, name: &str) -> StoreResult<Option<offload_store::ScheduleRecord>> {
        crate::schedules::get(self, name).await
    }

    async fn schedule_list(&self) -> StoreResult<Vec<offload_store::ScheduleRecord>> {
        crate::schedules::list(self).await
    }

    async fn schedule_pause(
        &self,
        params: &offload_store::SchedulePauseParams,
    ) -> StoreResult<Option<offload_store::ScheduleRecord>> {
        crate::schedules::pause(self, params).await
    }

    async fn schedule_delete(&self, name: &str) -> StoreResult<bool> {
        crate::schedules::delete(self, name).await
    }

    async fn schedule_due(
        &self,
        params: &offload_store::ScheduleDueParams,
    ) -> StoreResult<Vec<offload_store::ScheduleRecord>> {
        crate::schedules::due(self, params).await
    }

    async fn schedule_fire(
        &self,
        params: &offload_store::ScheduleFireParams,
    ) -> StoreResult<offload_store::ScheduleFired> {
        crate::schedules::fire(self, params).await
    }

    async fn limit_put(
        &self,
        params: &offload_store::LimitPutParams,
    ) -> StoreResult<offload_store::LimitRecord> {
        crate::limits::put(self, params).await
    }

    async fn limit_list(&self) -> StoreResult<Vec<offload_store::LimitRecord>> {
        crate::limits::list(self).await
    }

    async fn limit_delete(&self, params: &offload_store::LimitDeleteParams) -> StoreResult<bool> {
        crate::limits::delete(self, params).await
    }

    async fn task_retry(&self, params: &TaskRetryParams) -> StoreResult<Task> {
        crate::manage::retry(self, params).await
    }

    async fn task_update(&self, params: &TaskUpdateParams) -> StoreResult<Task> {
        crate::manage::update(self, params).await
    }
    async fn task_insert_idempotent(
        &self,
        params: &TaskInsertParams,
        key: &offload_store::IdempotencyKey,
    ) -> StoreResult<offload_store::IdempotentInsert> {
        crate::idempotency::insert(self, params, key).await
    }

    async fn idempotency_purge(
        &self,
        params: &offload_store::PurgeBeforeParams,
    ) -> StoreResult<u64> {
        crate::idempotency::purge(self, params).await
    }

    async fn event_list(
        &self,
        params: &offload_store::EventListParams,
    ) -> StoreResult<offload_store::EventPage> {
        crate::events::list(self, params).await
    }

    async fn event_cursor_latest(&self) -> StoreResult<Option<String>> {
        crate::events::latest(self).await
    }

    async fn event_purge(&self, params: &offload_store::PurgeBeforeParams) -> StoreResult<u64> {
        crate::events::purge(self, params).await
    }

    async fn token_insert(&self, token: &offload_store::TokenRecord) -> StoreResult<()> {
        crate::access::token_insert(self, token).await
    }

    async fn token_get(&self, id: &str) -> StoreResult<Option<offload_store::TokenRecord>> {
        crate::access::token_get(self, id).await
    }

    async fn token_list(&self) -> StoreResult<Vec<offload_store::TokenRecord>> {
        crate::access::token_list(self).await
    }

    async fn token_delete(&self, id: &str) -> StoreResult<bool> {
        crate::access::token_delete(self, id).await
    }

    async fn audit_insert(&self, record: &offload_store::NewAuditRecord) -> StoreResult<i64> {
        crate::access::audit_insert(self, record).await
    }

    async fn audit_list(
        &self,
        params: &offload_store::AuditListParams,
    ) -> StoreResult<offload_store::AuditPage> {
        crate::access::audit_list(self, params).await
    }
    async fn webhook_insert(&self, webhook: &offload_store::WebhookRecord) -> StoreResult<()> {
        crate::webhooks::insert(self, webhook).await
    }

    async fn webhook_list(&self) -> StoreResult<Vec<offload_store::WebhookRecord>> {
        crate::webhooks::list(self).await
    }

    async fn webhook_delete(&self, id: &str) -> StoreResult<bool> {
        crate::webhooks::delete(self, id).await
    }

    async fn webhook_cursor(&self) -> StoreResult<Option<String>> {
        crate::webhooks::cursor(self).await
    }

    async fn webhook_enqueue(
        &self,
        params: &offload_store::WebhookEnqueueParams,
    ) -> StoreResult<bool> {
        crate::webhooks::enqueue(self, params).await
    }

    async fn webhook_delivery_claim(
        &self,
        params: &offload_store::DeliveryClaimParams,
    ) -> StoreResult<Vec<offload_store::Delivery>> {
        crate::webhooks::claim(self, params).await
    }

    async fn webhook_delivery_record(
        &self,
        params: &offload_store::DeliveryRecordParams,
    ) -> StoreResult<()> {
        crate::webhooks::record(self, params).await
    }

    async fn webhook_delivery_list(
        &self,
        params: &offload_store::DeliveryListParams,
    ) -> StoreResult<Vec<offload_store::Delivery>> {
        crate::webhooks::list_deliveries(self, params).await
    }

    async fn webhook_delivery_purge(
        &self,
        params: &offload_store::PurgeBeforeParams,
    ) -> StoreResult<u64> {
        crate::webhooks::purge(self, params).await
    }

    async fn webhook_task_secret(&self, candidate: &str) -> StoreResult<String> {
        crate::webhooks::task_secret(self, candidate).await
    }
}
