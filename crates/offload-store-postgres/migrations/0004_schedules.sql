-- offload schema, version 4: cron schedules.

-- One row per schedule. cron and time_zone copy the definition's, so a
-- put can tell whether the expression changed (and only then take the
-- new next tick). definition: the whole `Schedule` as serde JSON.
-- next_run_at: the next tick (NULL: the expression has no more).
-- last_run_at / last_task_id: the last tick that enqueued a task, and
-- that task (not a reference: deleting the task leaves it).
-- A tick is claimed by a compare-and-set on next_run_at, in the same
-- transaction as the insert of its task.
CREATE TABLE {schema}.schedules (
    name         text PRIMARY KEY,
    cron         text NOT NULL,
    time_zone    text NOT NULL,
    definition   jsonb NOT NULL,
    paused       boolean NOT NULL DEFAULT false,
    next_run_at  timestamptz,
    last_run_at  timestamptz,
    last_task_id uuid,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);

-- schedule_due: the active schedules with a next tick, earliest first.
CREATE INDEX schedules_due ON {schema}.schedules (next_run_at)
    WHERE NOT paused AND next_run_at IS NOT NULL;
