-- offload schema, version 4: cron schedules.
--
-- One row per schedule. `definition` is the whole `Schedule` as serde
-- JSON; `cron` and `time_zone` are copies of its fields, which a put
-- compares to decide whether the stored next tick still holds. Times are
-- microseconds since the Unix epoch, as everywhere in this schema, so a
-- tick read by `schedule_due` compares equal in `schedule_fire`.
CREATE TABLE schedules (
    name         TEXT    NOT NULL PRIMARY KEY,
    cron         TEXT    NOT NULL,
    time_zone    TEXT    NOT NULL,
    definition   TEXT    NOT NULL,
    -- 1: enqueues nothing until resumed.
    paused       INTEGER NOT NULL DEFAULT 0,
    -- The next tick (NULL: the expression has no more).
    next_run_at  INTEGER,
    -- The last tick that enqueued a task, and that task's 16-byte id.
    last_run_at  INTEGER,
    last_task_id BLOB,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

-- The active schedules with a next tick, earliest first (name breaks
-- ties, so the index gives schedule_due its order whole).
CREATE INDEX schedules_due ON schedules (next_run_at, name)
    WHERE paused = 0 AND next_run_at IS NOT NULL;
