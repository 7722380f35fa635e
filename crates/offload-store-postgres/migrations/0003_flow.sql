-- offload schema, version 3: dependencies between tasks, groups and
-- unique keys.

-- depends_on / after: the task's edges as JSON arrays of ids (NULL when
-- none), as enqueued. group_id: the group (its callback's id).
-- deps_waiting: how many of the task's edges are not met yet (a `blocked`
-- task becomes ready when it reaches 0). has_dependents: some edge points
-- at this task; finish, rescue, abort and delete look for dependents only
-- when it is set, so the hot path of other tasks does no extra work.
ALTER TABLE {schema}.tasks
    ADD COLUMN unique_key     text,
    ADD COLUMN depends_on     jsonb,
    ADD COLUMN after          jsonb,
    ADD COLUMN group_id       uuid,
    ADD COLUMN deps_waiting   integer NOT NULL DEFAULT 0,
    ADD COLUMN has_dependents boolean NOT NULL DEFAULT false;

-- One row per edge: task_id waits for dep_id to succeed ('success', from
-- depends_on) or to end whatever the outcome ('end', from after).
CREATE TABLE {schema}.task_deps (
    dep_id  uuid NOT NULL,
    task_id uuid NOT NULL,
    kind    text NOT NULL CHECK (kind IN ('success', 'end')),
    PRIMARY KEY (dep_id, task_id)
);
-- Deleting or purging a dependent removes its edges.
CREATE INDEX task_deps_task ON {schema}.task_deps (task_id);

-- The newest task holding a unique key.
CREATE INDEX tasks_unique ON {schema}.tasks (unique_key, created_at)
    WHERE unique_key IS NOT NULL;

-- Lists, counts and purges of one group.
CREATE INDEX tasks_group ON {schema}.tasks (group_id)
    WHERE group_id IS NOT NULL;

-- task_resolve_blocked: the blocked tasks, in id order.
CREATE INDEX tasks_blocked ON {schema}.tasks (id)
    WHERE status = 'blocked';

-- What each task of an idempotent insert became (a JSON array of
-- EnqueueOutcome names beside task_ids; NULL in older rows: all created).
ALTER TABLE {schema}.idempotency_keys ADD COLUMN outcomes jsonb;
