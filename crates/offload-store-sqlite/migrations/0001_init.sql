-- offload schema, version 1: tasks, their attempt history, and leadership.
--
-- Timestamps are UTC microseconds since the Unix epoch (INTEGER). JSON
-- values are stored as TEXT. Ids and lease tokens are 16-byte BLOBs.
-- Later migrations add columns (unique_key, depends_on, ...) with
-- ALTER TABLE; nothing here assumes the column list is final.

CREATE TABLE tasks (
    id                 BLOB    NOT NULL PRIMARY KEY,
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
    worker_id          TEXT,
    lease_token        BLOB,
    lease_expires_at   INTEGER,
    created_at         INTEGER NOT NULL,
    started_at         INTEGER,
    finished_at        INTEGER,
    updated_at         INTEGER NOT NULL,
    -- Internal: the task_attempts row of the current (or last) attempt,
    -- so finishing an attempt closes its history row without a search.
    attempt_id         INTEGER
);

-- The claim: ready tasks of one queue in claim order. Partial, so it only
-- ever holds pending rows however many finished rows the table keeps.
CREATE INDEX tasks_pending ON tasks (queue, priority DESC, run_at, id)
    WHERE status = 'pending';

-- Promotion of due scheduled tasks, and next_run_at.
CREATE INDEX tasks_scheduled ON tasks (queue, run_at)
    WHERE status = 'scheduled';

-- Rescue of expired leases.
CREATE INDEX tasks_running ON tasks (lease_expires_at)
    WHERE status = 'running';

-- Purge and retention of terminal tasks (only terminal tasks have finished_at).
CREATE INDEX tasks_finished ON tasks (finished_at)
    WHERE finished_at IS NOT NULL;

CREATE TABLE task_attempts (
    id          INTEGER NOT NULL PRIMARY KEY,
    task_id     BLOB    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    worker_id   TEXT    NOT NULL,
    lease_token BLOB    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT    NOT NULL,
    error       TEXT
);

CREATE INDEX task_attempts_task ON task_attempts (task_id);

CREATE TABLE leaders (
    name       TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
