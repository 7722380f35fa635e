-- offload schema, version 3: dependencies between tasks, groups and
-- unique keys.
--
-- Plain tasks leave every new column at its default (NULL or 0), so the
-- claim and finish of a task without dependencies write what they wrote
-- before; a finish looks for dependents only when has_dependents is set.

-- The de-duplication key (NULL: none).
ALTER TABLE tasks ADD COLUMN unique_key TEXT;
-- The task's `depends_on` and `after` as JSON arrays of id strings
-- (NULL when empty), as given at enqueue.
ALTER TABLE tasks ADD COLUMN depends_on TEXT;
ALTER TABLE tasks ADD COLUMN "after" TEXT;
-- The group this task belongs to (the 16-byte id of its callback).
ALTER TABLE tasks ADD COLUMN group_id BLOB;
-- How many of this task's edges are unmet (a blocked task waits for 0).
ALTER TABLE tasks ADD COLUMN deps_waiting INTEGER NOT NULL DEFAULT 0;
-- 1 once an edge to this task was stored: its end settles its dependents.
ALTER TABLE tasks ADD COLUMN has_dependents INTEGER NOT NULL DEFAULT 0;

-- One edge per (dependency, dependent): kind 'success' (depends_on: the
-- dependency must succeed) or 'end' (after: it must end). Edges stay
-- while both tasks exist (a retry recomputes them); deleting either task
-- deletes its edges.
CREATE TABLE task_deps (
    dep_id  BLOB NOT NULL,
    task_id BLOB NOT NULL,
    kind    TEXT NOT NULL,
    PRIMARY KEY (dep_id, task_id)
) WITHOUT ROWID;
CREATE INDEX task_deps_task ON task_deps (task_id);

-- The newest task holding a key (id breaks ties of created_at, so the
-- index gives the order whole).
CREATE INDEX tasks_unique ON tasks (unique_key, created_at, id) WHERE unique_key IS NOT NULL;
-- A group's members and callback.
CREATE INDEX tasks_group ON tasks (group_id) WHERE group_id IS NOT NULL;
-- Blocked tasks, for task_resolve_blocked.
CREATE INDEX tasks_blocked ON tasks (id) WHERE status = 'blocked';

-- What each enqueue under the key did, beside task_ids: a JSON array of
-- outcome names ("created", "existing", ...); NULL: every task created.
ALTER TABLE idempotency_keys ADD COLUMN outcomes TEXT;
