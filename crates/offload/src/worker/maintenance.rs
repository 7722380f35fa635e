//! Maintenance, run only by the elected leader: rescue of expired leases
//! (every maintenance interval), retention (pruning terminal tasks, old
//! events and expired idempotency keys) and, as often as retention, the
//! safety net of dependencies (settling blocked tasks a lost race or a
//! crash left blocked).
//! Every worker takes part in the election each interval; a failed
//! election call is logged and tried again with back-off (never longer
//! than the interval), so a database restart costs at most a few rounds.

use std::sync::Arc;
use std::time::Duration;

use offload_store::{
    LeaderElectParams, LeaderResignParams, PurgeBeforeParams, StoreResult, TaskFilter,
    TaskPurgeParams, TaskRescueParams, TaskResolveParams,
};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::shared::Shared;

/// The name the maintenance leader is elected under (the `name` column of
/// the store's leaders).
pub(crate) const LEADER_NAME: &str = "maintenance";
/// Rows rescued or pruned per call; calls repeat (bounded) while full.
const BATCH: u32 = 1000;
const MAX_ROUNDS: usize = 100;
/// Pruning runs this often on the leader.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let interval = shared.config.maintenance_interval;
    let ttl = shared.config.leader_ttl;
    let mut retry = Backoff::capped(interval);
    let mut leading = false;
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        let elected = shared
            .store
            .leader_attempt_elect(&LeaderElectParams {
                name: LEADER_NAME.to_owned(),
                holder: shared.worker_id.to_string(),
                ttl,
                now: shared.clock.now(),
            })
            .await;
        let wait = match elected {
            Ok(true) => {
                if retry.succeed() > 0 {
                    tracing::info!("leader election works again");
                }
                if !leading {
                    tracing::info!(worker = %shared.worker_id, "elected maintenance leader");
                }
                leading = true;
                rescue(&shared).await;
                if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                    prune(&shared).await;
                    resolve_blocked(&shared).await;
                    last_prune = Some(tokio::time::Instant::now());
                }
                interval
            }
            Ok(false) => {
                if retry.succeed() > 0 {
                    tracing::info!("leader election works again");
                }
                if leading {
                    tracing::info!(worker = %shared.worker_id, "no longer the maintenance leader");
                }
                leading = false;
                interval
            }
            Err(e) => {
                let wait = retry.fail();
                tracing::warn!(error = %e, failures = retry.failures(), retry_in = ?wait, "leader election failed; retrying");
                wait
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if leading {
        let resigned = shared
            .store
            .leader_resign(&LeaderResignParams {
                name: LEADER_NAME.to_owned(),
                holder: shared.worker_id.to_string(),
            })
            .await;
        if let Err(e) = resigned {
            tracing::warn!(error = %e, "could not resign leadership; it expires by itself");
        }
    }
}

async fn rescue(shared: &Shared) {
    for _ in 0..MAX_ROUNDS {
        match shared
            .store
            .task_rescue_expired(&TaskRescueParams {
                now: shared.clock.now(),
                limit: BATCH,
            })
            .await
        {
            Ok(rescued) => {
                for r in &rescued {
                    tracing::warn!(task = %r.id, status = %r.status, "rescued a task whose lease expired");
                }
                if rescued.len() < BATCH as usize {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "rescue failed");
                return;
            }
        }
    }
}

async fn resolve_blocked(shared: &Shared) {
    let params = TaskResolveParams {
        limit: BATCH,
        now: shared.clock.now(),
    };
    for _ in 0..MAX_ROUNDS {
        match shared.store.task_resolve_blocked(&params).await {
            Ok(n) => {
                if n > 0 {
                    tracing::warn!(
                        settled = n,
                        "settled blocked tasks whose dependencies had ended"
                    );
                }
                if n < u64::from(BATCH) {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "settling blocked tasks failed");
                return;
            }
        }
    }
}

async fn prune(shared: &Shared) {
    let now = shared.clock.now();
    let before = |retention: Duration| {
        chrono::Duration::from_std(retention)
            .ok()
            .and_then(|r| now.checked_sub_signed(r))
    };
    if let Some(cutoff) = before(shared.config.retention) {
        let params = TaskPurgeParams {
            filter: TaskFilter::default(),
            finished_before: Some(cutoff),
            limit: Some(u64::from(BATCH)),
        };
        prune_rounds("finished tasks past retention", || {
            shared.store.task_purge(&params)
        })
        .await;
    }
    if let Some(cutoff) = before(shared.config.event_retention) {
        let params = PurgeBeforeParams {
            before: cutoff,
            limit: BATCH,
        };
        prune_rounds("events past retention", || {
            shared.store.event_purge(&params)
        })
        .await;
    }
    let params = PurgeBeforeParams {
        before: now,
        limit: BATCH,
    };
    prune_rounds("expired idempotency keys", || {
        shared.store.idempotency_purge(&params)
    })
    .await;
}

/// Calls `purge` until it deletes less than a batch (bounded rounds).
async fn prune_rounds<'a, F>(what: &str, purge: F)
where
    F: Fn() -> futures::future::BoxFuture<'a, StoreResult<u64>>,
{
    for _ in 0..MAX_ROUNDS {
        match purge().await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(pruned = n, "pruned {what}");
                }
                if n < u64::from(BATCH) {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "pruning {what} failed");
                return;
            }
        }
    }
}
