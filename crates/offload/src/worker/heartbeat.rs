//! The heartbeat: renews every live lease in one call each interval, stops
//! attempts whose lease was lost, and relays abort requests (from the
//! heartbeat answer, or at once from an `AbortRequested` notification).

use std::sync::Arc;

use offload_store::{Notification, TaskHeartbeatParams};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::shared::Shared;
use crate::controller::StopReason;

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut last_ok = tokio::time::Instant::now();
    let mut notes = shared.store.notifier().subscribe();
    let mut tick = tokio::time::interval(shared.config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => beat(&shared, &mut last_ok).await,
            note = notes.recv() => match note {
                Ok(Notification::AbortRequested { ids }) => {
                    for id in ids {
                        shared.stop_task(id, StopReason::Abort);
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => beat(&shared, &mut last_ok).await,
                Err(RecvError::Closed) => notes = shared.store.notifier().subscribe(),
            },
        }
    }
}

async fn beat(shared: &Shared, last_ok: &mut tokio::time::Instant) {
    let leases = shared.leases();
    if leases.is_empty() {
        *last_ok = tokio::time::Instant::now();
        return;
    }
    let answer = shared
        .store
        .task_heartbeat_many(&TaskHeartbeatParams {
            leases: leases.clone(),
            lease: shared.config.lease,
            now: shared.clock.now(),
        })
        .await;
    match answer {
        Ok(states) => {
            *last_ok = tokio::time::Instant::now();
            // answers come in the order of the leases asked about
            for (lease, s) in leases.into_iter().zip(states) {
                if s.id != lease.id {
                    tracing::error!(task = %s.id, "heartbeat answers out of order; ignoring them");
                    break;
                }
                if !s.live {
                    tracing::warn!(task = %s.id, "lease lost; stopping the attempt");
                    shared.stop_lease(lease, StopReason::LeaseLost);
                } else if s.abort_requested {
                    shared.stop_lease(lease, StopReason::Abort);
                }
            }
        }
        Err(e) if last_ok.elapsed() > shared.config.lease => {
            // our leases have lapsed: another worker may be running these
            // tasks now, so stop ours rather than run them twice
            tracing::error!(error = %e, "no heartbeat for a whole lease period; stopping every attempt");
            shared.stop_all(StopReason::LeaseLost);
        }
        Err(e) => tracing::warn!(error = %e, "heartbeat failed; will retry"),
    }
}
