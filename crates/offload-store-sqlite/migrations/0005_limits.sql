-- offload schema, version 5: limits (concurrency, per-key concurrency,
-- rate), fairness across keys, quotas of waiting tasks per key.

-- The key claims share their turns across (e.g. a tenant id); NULL for
-- most tasks.
ALTER TABLE tasks ADD COLUMN fairness_key TEXT;

-- The heads of each fairness key of a queue, in claim order, without
-- reading the rows of the other pending tasks (name last, as in
-- tasks_pending, so a claim filters by name in the index).
CREATE INDEX tasks_pending_fair ON tasks (queue, fairness_key, priority DESC, run_at, id, name)
    WHERE status = 'pending' AND fairness_key IS NOT NULL;

-- Quotas: the waiting tasks of one name (or queue) with one fairness key.
CREATE INDEX tasks_waiting_fair_name ON tasks (name, fairness_key)
    WHERE fairness_key IS NOT NULL AND status IN ('scheduled', 'blocked', 'pending');
CREATE INDEX tasks_waiting_fair_queue ON tasks (queue, fairness_key)
    WHERE fairness_key IS NOT NULL AND status IN ('scheduled', 'blocked', 'pending');

-- Stored limits, one per scope ('name' or 'queue') and target.
-- `definition` is the whole `Limit` as serde JSON.
CREATE TABLE limits (
    scope      TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    definition TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (scope, target)
) WITHOUT ROWID;

-- The rate log: one row per start of a task under a limit with a rate,
-- written by the claim that started it; claims delete rows older than
-- the limit's period (a bounded number at a time).
CREATE TABLE limit_starts (
    scope  TEXT    NOT NULL,
    target TEXT    NOT NULL,
    at     INTEGER NOT NULL
);
CREATE INDEX limit_starts_at ON limit_starts (scope, target, at);

-- Fairness: per queue and key, the claim sequence number that last took
-- a task of the key ('' stands for the tasks without a key). The claim
-- serves the least recently served key first.
CREATE TABLE fairness_served (
    queue  TEXT    NOT NULL,
    key    TEXT    NOT NULL,
    served INTEGER NOT NULL,
    PRIMARY KEY (queue, key)
) WITHOUT ROWID;
