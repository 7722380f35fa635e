-- offload schema, version 1: tasks, their attempt history, and leadership.
--
-- Timestamps are UTC microseconds since the Unix epoch (INTEGER). JSON
-- values are stored as TEXT. Task ids are 16-byte BLOBs. Later migrations
-- add columns (unique_key, depends_on, ...) with ALTER TABLE; nothing here
-- assumes the column list is final.
--
-- The claim and finish of a task are the store's hot path; what each of
-- them writes is kept to a minimum (see "Where the time goes" in
-- BENCHMARKS.md): a claim rewrites the task row and moves its entry from
-- tasks_pending to tasks_running; a finish rewrites the task row and
-- moves that entry to tasks_finished (terminal outcomes). A task's
-- attempt history costs nothing on that path: the task row itself holds
-- the running attempt and the last ended one (see task_attempts).

CREATE TABLE tasks (
    -- Internal row number, stable for the row's life (an alias of the
    -- rowid, so VACUUM keeps it). Lease tokens carry it, so heartbeats and
    -- finishes find their row without going through the id index.
    rid                INTEGER PRIMARY KEY,
    id                 BLOB    NOT NULL UNIQUE,
    name               TEXT    NOT NULL,
    queue              TEXT    NOT NULL,
    input              TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    output             TEXT,
    error              TEXT,
    progress           TEXT,
    priority           INTEGER NOT NULL DEFAULT 0,
    attempt            INTEGER NOT NULL DEFAULT 0,
    max_attempts       INTEGER NOT NULL,
    run_at             INTEGER NOT NULL,
    timeout_ms         INTEGER,
    retry              TEXT,
    tags               TEXT    NOT NULL DEFAULT '[]',
    metadata           TEXT    NOT NULL DEFAULT '{}',
    abort_requested_at INTEGER,
    -- The worker and start of the current or last attempt (the public
    -- task shows worker_id only while running).
    worker_id          TEXT,
    -- The running attempt's lease (NULL when not running). The public
    -- lease token is rid and lease_token (a random 64-bit value drawn by
    -- each claim) side by side.
    lease_token        INTEGER,
    lease_expires_at   INTEGER,
    created_at         INTEGER NOT NULL,
    started_at         INTEGER,
    finished_at        INTEGER,
    updated_at         INTEGER NOT NULL,
    -- Internal: how many task_attempts rows the task has (the seq of the
    -- next one).
    history            INTEGER NOT NULL DEFAULT 0,
    -- Internal: the last ended attempt while it is not yet a task_attempts
    -- row (NULL: there is none): when it ended and how. See task_attempts.
    ended_at           INTEGER,
    ended_outcome      TEXT
);

-- The claim: ready tasks of one queue in claim order. Partial, so it only
-- ever holds pending rows however many finished rows the table keeps.
-- name (after id, so it does not change the order) lets a claim filter
-- by task name without reading the rows it skips.
CREATE INDEX tasks_pending ON tasks (queue, priority DESC, run_at, id, name)
    WHERE status = 'pending';

-- Promotion of due scheduled tasks, and next_run_at.
CREATE INDEX tasks_scheduled ON tasks (queue, run_at)
    WHERE status = 'scheduled';

-- Rescue of expired leases and lists of running tasks. Keyed on a column
-- heartbeats never change (not lease_expires_at), so renewing a lease
-- rewrites the row only; rescue reads the (small) running set and checks
-- each lease.
CREATE INDEX tasks_running ON tasks (started_at)
    WHERE status = 'running';

-- Purge and retention of terminal tasks (only terminal tasks have finished_at).
CREATE INDEX tasks_finished ON tasks (finished_at)
    WHERE finished_at IS NOT NULL;

-- The history of ended attempts, oldest first (seq 0, 1, ...), except
-- the last two, which live in the task row:
-- - the running attempt is (attempt, worker_id, started_at) of a running
--   task;
-- - the last ended attempt stays in the row (ended_outcome not NULL) until
--   something would overwrite its fields, when it is written here: the
--   next claim (attempt, worker_id, started_at) and the abort of a waiting
--   task (error). Its row is (attempt + 1 if it was given back, else
--   attempt; worker_id; started_at; ended_at; ended_outcome; error unless
--   it was given back).
-- So a task that succeeds at its first attempt never writes a row here.
-- Clustered on (task, seq): a task's history is one B-tree range. `task`
-- is the task's rid; the store deletes a task's history with the task.
CREATE TABLE task_attempts (
    task        INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    worker_id   TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,
    error       TEXT,
    PRIMARY KEY (task, seq)
) WITHOUT ROWID;

CREATE TABLE leaders (
    name       TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
