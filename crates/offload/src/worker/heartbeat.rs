//! The heartbeat: renews every live lease in one call each interval, stops
//! attempts whose lease was lost, and relays abort requests (from the
//! heartbeat answer, or at once from an `AbortRequested` notification).
//!
//! A renewal that fails (the database restarted, a connection was cut) is
//! tried again with back-off, well before the next interval. Attempts keep
//! running meanwhile: only an attempt whose lease has really run out — a
//! whole lease since its claim or its last confirmed renewal was sent — is
//! stopped, since another worker may be running its task by then.

use std::sync::Arc;

use offload_store::{Notification, StoreError, TaskHeartbeatParams};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::shared::Shared;
use crate::controller::StopReason;

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let interval = shared.config.heartbeat_interval;
    let mut notes = shared.store.notifier().subscribe();
    let mut listening = true;
    let mut retry = Backoff::capped(interval);
    let mut next = Instant::now() + interval;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {
                next = Instant::now() + beat_and_schedule(&shared, &mut retry).await;
                listening = true;
            }
            note = notes.recv(), if listening => match note {
                Ok(Notification::AbortRequested { ids }) => {
                    for id in ids {
                        shared.stop_task(id, StopReason::Abort);
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    // an abort request may be among the missed notifications
                    next = Instant::now() + beat_and_schedule(&shared, &mut retry).await;
                }
                Err(RecvError::Closed) => {
                    // subscribe afresh, and listen again after the next beat
                    // (a notifier that stays closed must not spin this loop)
                    notes = shared.store.notifier().subscribe();
                    listening = false;
                }
            },
        }
    }
}

/// Renews the leases; returns how long to wait before the next renewal:
/// the heartbeat interval, or a back-off after a failure.
async fn beat_and_schedule(shared: &Shared, retry: &mut Backoff) -> std::time::Duration {
    match beat(shared).await {
        Ok(()) => {
            let failures = retry.succeed();
            if failures > 0 {
                tracing::info!(failures, "heartbeats work again");
            }
            shared.config.heartbeat_interval
        }
        Err(e) => {
            let wait = retry.fail();
            let stopped = shared.stop_lapsed(Instant::now());
            if stopped > 0 {
                // our leases have lapsed: another worker may be running these
                // tasks now, so stop ours rather than run them twice
                tracing::error!(error = %e, stopped, "no heartbeat for a whole lease period; stopping the attempts whose lease ran out");
            }
            tracing::warn!(error = %e, failures = retry.failures(), retry_in = ?wait, "heartbeat failed; retrying");
            wait
        }
    }
}

/// One renewal of every registered lease.
async fn beat(shared: &Shared) -> Result<(), StoreError> {
    let leases = shared.leases();
    if leases.is_empty() {
        return Ok(());
    }
    let sent_at = Instant::now();
    let states = shared
        .store
        .task_heartbeat_many(&TaskHeartbeatParams {
            leases: leases.clone(),
            lease: shared.config.lease,
            now: shared.clock.now(),
        })
        .await?;
    // answers come in the order of the leases asked about
    for (lease, s) in leases.into_iter().zip(states) {
        if s.id != lease.id {
            tracing::error!(task = %s.id, "heartbeat answers out of order; ignoring them");
            break;
        }
        if !s.live {
            if shared.lease_lost(lease) {
                tracing::warn!(task = %s.id, "lease lost; stopping the attempt");
            }
            continue;
        }
        shared.renewed(lease, sent_at);
        if s.abort_requested {
            shared.stop_lease(lease, StopReason::Abort);
        }
    }
    Ok(())
}
