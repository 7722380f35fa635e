//! Stored [`Limit`]s and the params of their store methods.
//!
//! Limits live in the store so that every worker (and every producer, for
//! quotas) applies the same ones. A store applies them in
//! [`task_claim`](crate::Store::task_claim) and in inserts; it may cache the
//! stored set for at most [`LIMIT_CACHE_TTL`], and a change made through a
//! store instance applies to that instance's next call at once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use offload_types::{Limit, LimitScope};
use serde::{Deserialize, Serialize};

/// How long a store may use its cached copy of the stored limits: a limit
/// changed in another process applies within this long.
pub const LIMIT_CACHE_TTL: Duration = Duration::from_secs(1);

/// A limit as stored.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitRecord {
    /// The limit.
    #[serde(flatten)]
    pub limit: Limit,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
}

/// Store a limit, replacing the one with the same scope and target.
#[derive(Debug, Clone)]
pub struct LimitPutParams {
    /// The limit (already validated).
    pub limit: Limit,
    /// Now.
    pub now: DateTime<Utc>,
}

/// Delete the limit of one scope and target.
#[derive(Debug, Clone)]
pub struct LimitDeleteParams {
    /// `name` or `queue`.
    pub scope: LimitScope,
    /// The task name or queue.
    pub target: String,
}
