//! Cases for leadership (`leader_attempt_elect`, `leader_resign`): one
//! holder at a time per name while its lease is live, renewal by the
//! holder, take-over after the ttl, and resignation. The contender usually
//! asks through the second handle, as another process would.

use std::sync::Arc;
use std::time::Duration;

use offload_store::{LeaderElectParams, LeaderResignParams, Store};

use crate::Harness;
use crate::harness::ok;

const TTL: Duration = Duration::from_secs(15);

async fn elect(h: &Harness, store: &Arc<dyn Store>, name: &str, holder: &str) -> bool {
    let params = LeaderElectParams {
        name: name.to_owned(),
        holder: holder.to_owned(),
        ttl: TTL,
        now: h.now(),
    };
    ok(
        "leader_attempt_elect",
        store.leader_attempt_elect(&params).await,
    )
}

async fn resign(store: &Arc<dyn Store>, name: &str, holder: &str) {
    let params = LeaderResignParams {
        name: name.to_owned(),
        holder: holder.to_owned(),
    };
    ok("leader_resign", store.leader_resign(&params).await);
}

/// The first to ask leads; another is refused while the lease is live,
/// and the leader asking again stays leader.
pub async fn leader_first_elect_wins(h: &Harness) {
    assert!(elect(h, &h.store, "maintenance", "node-a").await);
    assert!(!elect(h, &h.second, "maintenance", "node-b").await);
    assert!(!elect(h, &h.store, "maintenance", "node-b").await);
    h.advance(TTL - Duration::from_secs(1));
    assert!(
        !elect(h, &h.second, "maintenance", "node-b").await,
        "refused until the ttl has passed"
    );
}

/// Once the ttl passes without renewal, another holder wins, and the old
/// one is then refused.
pub async fn leader_expires_after_ttl(h: &Harness) {
    assert!(elect(h, &h.store, "maintenance", "node-a").await);
    h.advance(TTL + Duration::from_secs(1));
    assert!(elect(h, &h.second, "maintenance", "node-b").await);
    assert!(
        !elect(h, &h.store, "maintenance", "node-a").await,
        "the old leader lost it"
    );
}

/// The holder renewing extends its lease from the renewal time.
pub async fn leader_renew_extends(h: &Harness) {
    assert!(elect(h, &h.store, "maintenance", "node-a").await);
    for _ in 0..4 {
        h.advance(TTL / 2 + Duration::from_secs(1));
        assert!(elect(h, &h.store, "maintenance", "node-a").await, "renewal");
        assert!(!elect(h, &h.second, "maintenance", "node-b").await);
    }
    h.advance(TTL - Duration::from_secs(1));
    assert!(
        !elect(h, &h.second, "maintenance", "node-b").await,
        "the last renewal still holds"
    );
    h.advance(Duration::from_secs(2));
    assert!(elect(h, &h.second, "maintenance", "node-b").await);
}

/// Resigning frees the leadership at once; resigning what one does not
/// hold changes nothing.
pub async fn leader_resign_frees(h: &Harness) {
    assert!(elect(h, &h.store, "maintenance", "node-a").await);
    resign(&h.second, "maintenance", "node-b").await;
    assert!(
        !elect(h, &h.second, "maintenance", "node-b").await,
        "someone else's resignation does not free it"
    );
    resign(&h.store, "maintenance", "node-a").await;
    assert!(elect(h, &h.second, "maintenance", "node-b").await);
    assert!(!elect(h, &h.store, "maintenance", "node-a").await);
    // Resigning twice, or without ever leading, is fine.
    resign(&h.store, "maintenance", "node-a").await;
    resign(&h.store, "never-led", "node-a").await;
}

/// Leadership of different names is independent.
pub async fn leader_names_are_independent(h: &Harness) {
    assert!(elect(h, &h.store, "maintenance", "node-a").await);
    assert!(elect(h, &h.second, "cron", "node-b").await);
    assert!(!elect(h, &h.store, "cron", "node-a").await);
    assert!(!elect(h, &h.second, "maintenance", "node-b").await);
    resign(&h.store, "maintenance", "node-a").await;
    assert!(
        !elect(h, &h.store, "cron", "node-a").await,
        "cron still held"
    );
}
