-- offload schema, version 5: limits (concurrency, per-key concurrency,
-- rate), fairness across keys, and quotas of waiting tasks per key.

-- The key claims are shared across, round-robin (e.g. a tenant id).
ALTER TABLE {schema}.tasks ADD COLUMN fairness_key text;

-- One row per stored limit. definition: the whole `Limit` as serde JSON.
CREATE TABLE {schema}.limits (
    scope      text        NOT NULL CHECK (scope IN ('name', 'queue')),
    target     text        NOT NULL,
    definition jsonb       NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (scope, target)
);

-- The rate log: one row per start of a task under a limit with a rate,
-- written in the claim's transaction. Claims delete the rows older than
-- the limit's period (a bounded number at a time).
CREATE TABLE {schema}.limit_starts (
    scope  text        NOT NULL,
    target text        NOT NULL,
    at     timestamptz NOT NULL
);
CREATE INDEX limit_starts_at ON {schema}.limit_starts (scope, target, at);

-- Fairness: per queue, when (in the queue's own served counter) each key
-- was last served. key '' stands for the tasks without a fairness key.
CREATE TABLE {schema}.fairness_served (
    queue  text   NOT NULL,
    key    text   NOT NULL,
    served bigint NOT NULL,
    PRIMARY KEY (queue, key)
);

-- A fair claim finds the head of each key of a queue through this index
-- (one probe per key, a skip scan written as a recursive query), never
-- scanning every pending task.
CREATE INDEX tasks_pending_fair ON {schema}.tasks (queue, fairness_key, priority DESC, run_at, id)
    WHERE status = 'pending' AND fairness_key IS NOT NULL;

-- Whether a queue has due scheduled tasks with a fairness key (which
-- makes its claims fair) is found through this index.
CREATE INDEX tasks_scheduled_fair ON {schema}.tasks (queue, run_at)
    WHERE status = 'scheduled' AND fairness_key IS NOT NULL;

-- Quotas count the waiting tasks of one key, by queue or by name.
CREATE INDEX tasks_waiting_key ON {schema}.tasks (fairness_key, queue, name)
    WHERE status IN ('scheduled', 'blocked', 'pending') AND fairness_key IS NOT NULL;

-- Limits count the running tasks of their name or queue through
-- tasks_running (the running set is small). No index of their own: one
-- on the running set would change the plan (and the order of events) of
-- the hot finish statement.
