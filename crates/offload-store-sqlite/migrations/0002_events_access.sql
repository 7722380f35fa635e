-- offload schema, version 2: the event log, idempotency keys, API tokens
-- and the audit log.

-- What happened to tasks, appended in the transaction of the change.
-- seq is the rowid: a new event gets the largest seq + 1. Purges never
-- delete the newest event, so a seq is never reused and a reader's cursor
-- never points backwards (AUTOINCREMENT would do the same at the price of
-- a sqlite_sequence update in every statement that appends).
CREATE TABLE events (
    seq     INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    task_id BLOB    NOT NULL,
    name    TEXT    NOT NULL,
    queue   TEXT    NOT NULL,
    attempt INTEGER NOT NULL,
    data    TEXT    NOT NULL
);

-- Enqueues with an Idempotency-Key: the key, what was asked, what it made
-- (task_ids: the 16-byte ids one after another, in the request's order).
CREATE TABLE idempotency_keys (
    key         TEXT    PRIMARY KEY,
    fingerprint TEXT    NOT NULL,
    task_ids    BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

-- API tokens: only the SHA-256 of the secret part is kept.
CREATE TABLE api_tokens (
    id            TEXT    PRIMARY KEY,
    role          TEXT    NOT NULL,
    label         TEXT,
    secret_sha256 BLOB    NOT NULL,
    created_at    INTEGER NOT NULL
);

-- Operator actions.
CREATE TABLE audit_log (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT,
    reason  TEXT,
    details TEXT    NOT NULL
);
CREATE INDEX audit_log_target ON audit_log (target, seq) WHERE target IS NOT NULL;
CREATE INDEX audit_log_action ON audit_log (action, seq);

-- The `webhook` option of a task: where its end is POSTed (NULL: none).
ALTER TABLE tasks ADD COLUMN webhook TEXT;

-- Webhook subscriptions. events, names and queues are JSON arrays of
-- text (event types such as "task.succeeded"; names and queues: empty
-- means any).
CREATE TABLE webhooks (
    id         TEXT    PRIMARY KEY,
    url        TEXT    NOT NULL,
    secret     TEXT    NOT NULL,
    events     TEXT    NOT NULL,
    names      TEXT    NOT NULL DEFAULT '[]',
    queues     TEXT    NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL
);

-- The durable queue of webhook deliveries. webhook_id is NULL for a
-- task's own webhook. next_attempt_at is set while pending (the claim
-- moves it forward by the sender's lease) and NULL once delivered or
-- failed; attempts counts the rows in webhook_delivery_attempts.
CREATE TABLE webhook_deliveries (
    id              TEXT    PRIMARY KEY,
    webhook_id      TEXT,
    url             TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    task_id         BLOB    NOT NULL,
    payload         TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0
);
-- The claim of due deliveries: only pending rows, in due order.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, id)
    WHERE status = 'pending';
-- Lists (newest first, optionally of one subscription or one task) and
-- the purge of old finished deliveries.
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at, id);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, created_at, id)
    WHERE webhook_id IS NOT NULL;
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (task_id, created_at, id);

-- Every attempt of a delivery, numbered from 1.
CREATE TABLE webhook_delivery_attempts (
    delivery_id TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status_code INTEGER,
    latency_ms  INTEGER NOT NULL,
    error       TEXT,
    PRIMARY KEY (delivery_id, attempt)
) WITHOUT ROWID;

-- Settings of the webhook dispatcher: 'cursor' (its place in the event
-- log) and 'task_secret' (the signing secret of tasks' own webhooks).
CREATE TABLE webhook_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
