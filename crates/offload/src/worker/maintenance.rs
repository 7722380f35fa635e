//! Maintenance, run only by the elected leader: rescue of expired leases
//! (every maintenance interval) and retention pruning of terminal tasks.
//! Every worker takes part in the election each interval; a failed
//! election call is logged and tried again with back-off (never longer
//! than the interval), so a database restart costs at most a few rounds.

use std::sync::Arc;
use std::time::Duration;

use offload_store::{
    LeaderElectParams, LeaderResignParams, TaskFilter, TaskPurgeParams, TaskRescueParams,
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

async fn prune(shared: &Shared) {
    let Some(cutoff) = chrono::Duration::from_std(shared.config.retention)
        .ok()
        .and_then(|r| shared.clock.now().checked_sub_signed(r))
    else {
        return;
    };
    for _ in 0..MAX_ROUNDS {
        match shared
            .store
            .task_purge(&TaskPurgeParams {
                filter: TaskFilter::default(),
                finished_before: Some(cutoff),
                limit: Some(u64::from(BATCH)),
            })
            .await
        {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(pruned = n, "pruned finished tasks past retention");
                }
                if n < u64::from(BATCH) {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "pruning failed");
                return;
            }
        }
    }
}
