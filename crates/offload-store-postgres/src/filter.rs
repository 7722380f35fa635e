//! [`TaskFilter`] as a SQL `WHERE` clause with bound parameters.

use offload_store::TaskFilter;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::codec::uuid;

/// Appends ` WHERE …` for `f` (always a `WHERE`, so callers add `AND …`).
pub(crate) fn push_where(qb: &mut QueryBuilder<Postgres>, f: &TaskFilter) {
    qb.push(" WHERE TRUE");
    if !f.statuses.is_empty() {
        let statuses: Vec<String> = f.statuses.iter().map(|s| s.as_str().to_owned()).collect();
        qb.push(" AND status = ANY(").push_bind(statuses).push(")");
    }
    if !f.names.is_empty() {
        qb.push(" AND name = ANY(")
            .push_bind(f.names.clone())
            .push(")");
    }
    if !f.queues.is_empty() {
        qb.push(" AND queue = ANY(")
            .push_bind(f.queues.clone())
            .push(")");
    }
    if let Some(tag) = &f.tag {
        qb.push(" AND tags ? ").push_bind(tag.clone());
    }
    if let Some(after) = f.created_after {
        qb.push(" AND created_at >= ").push_bind(after);
    }
    if let Some(before) = f.created_before {
        qb.push(" AND created_at < ").push_bind(before);
    }
    if !f.ids.is_empty() {
        let ids: Vec<Uuid> = f.ids.iter().map(|id| uuid(*id)).collect();
        qb.push(" AND id = ANY(").push_bind(ids).push(")");
    }
    if let Some(group) = f.group {
        qb.push(" AND group_id = ").push_bind(uuid(group));
    }
}
