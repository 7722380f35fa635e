-- offload schema, version 1: tasks, their attempt history, and leadership.
-- "{schema}" is replaced by the store's schema name (quoted) when applied.
--
-- The claim and finish of a task are the hot path. Ready tasks are found
-- through partial indexes that only ever hold waiting rows, so a table
-- with millions of finished tasks claims as fast as an empty one.

CREATE TABLE {schema}.tasks (
    id                 uuid        PRIMARY KEY,
    name               text        NOT NULL,
    queue              text        NOT NULL,
    input              jsonb       NOT NULL,
    status             text        NOT NULL CHECK (status IN
                           ('scheduled', 'blocked', 'pending', 'running', 'success', 'failed', 'aborted')),
    output             jsonb,
    error              jsonb,
    progress           jsonb,
    priority           integer     NOT NULL DEFAULT 0,
    attempt            integer     NOT NULL DEFAULT 0,
    max_attempts       integer     NOT NULL,
    run_at             timestamptz NOT NULL,
    timeout_ms         bigint,
    retry              jsonb,
    tags               jsonb       NOT NULL DEFAULT '[]',
    metadata           jsonb       NOT NULL DEFAULT '{}',
    abort_requested_at timestamptz,
    -- The worker of the current or last attempt (shown only while running).
    worker_id          text,
    -- The running attempt's lease (NULL when not running).
    lease_token        uuid,
    lease_expires_at   timestamptz,
    created_at         timestamptz NOT NULL,
    started_at         timestamptz,
    finished_at        timestamptz,
    updated_at         timestamptz NOT NULL,
    -- How many task_attempts rows the task has (the seq of the next one).
    history            integer     NOT NULL DEFAULT 0
) WITH (fillfactor = 85);

-- The claim: ready tasks of one queue in claim order.
CREATE INDEX tasks_pending ON {schema}.tasks (queue, priority DESC, run_at, id)
    WHERE status = 'pending';

-- Scheduled tasks whose time has come are claimed straight away; also
-- next_run_at.
CREATE INDEX tasks_scheduled ON {schema}.tasks (queue, run_at)
    WHERE status = 'scheduled';

-- Rescue of expired leases (the running set is small). Keyed on a column
-- heartbeats never change, so renewing a lease can be a HOT update.
CREATE INDEX tasks_running ON {schema}.tasks (started_at)
    WHERE status = 'running';

-- Purge and retention of terminal tasks (only they have finished_at).
CREATE INDEX tasks_finished ON {schema}.tasks (finished_at)
    WHERE finished_at IS NOT NULL;

-- Every ended attempt, oldest first (seq 0, 1, ...). The running attempt
-- is the task row itself (attempt, worker_id, started_at).
CREATE TABLE {schema}.task_attempts (
    task_id     uuid        NOT NULL,
    seq         integer     NOT NULL,
    attempt     integer     NOT NULL,
    worker_id   text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    outcome     text        NOT NULL,
    error       jsonb,
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE {schema}.leaders (
    name       text        PRIMARY KEY,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);
