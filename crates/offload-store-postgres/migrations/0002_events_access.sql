-- offload schema, version 2: the event log, idempotency keys, API tokens
-- and the audit log.

-- What happened to tasks, appended in the transaction of the change.
-- Readers follow it in (tx, seq) order and only read rows of transactions
-- older than every transaction still running (pg_snapshot_xmin), so an
-- event committed late is never skipped by a cursor that moved past it.
CREATE TABLE {schema}.events (
    tx      xid8        NOT NULL DEFAULT pg_current_xact_id(),
    seq     bigint      GENERATED ALWAYS AS IDENTITY,
    at      timestamptz NOT NULL,
    kind    text        NOT NULL,
    task_id uuid        NOT NULL,
    name    text        NOT NULL,
    queue   text        NOT NULL,
    attempt integer     NOT NULL,
    data    jsonb       NOT NULL,
    PRIMARY KEY (tx, seq)
);

-- Enqueues with an Idempotency-Key: the key, what was asked, what it made.
CREATE TABLE {schema}.idempotency_keys (
    key         text        PRIMARY KEY,
    fingerprint text        NOT NULL,
    task_ids    uuid[]      NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX idempotency_keys_expires ON {schema}.idempotency_keys (expires_at);

-- API tokens: only the SHA-256 of the secret part is kept.
CREATE TABLE {schema}.api_tokens (
    id            text        PRIMARY KEY,
    role          text        NOT NULL CHECK (role IN ('admin', 'producer', 'worker', 'read')),
    label         text,
    secret_sha256 bytea       NOT NULL,
    created_at    timestamptz NOT NULL
);

-- Operator actions.
CREATE TABLE {schema}.audit_log (
    seq     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL,
    actor   text        NOT NULL,
    action  text        NOT NULL,
    target  text,
    reason  text,
    details jsonb       NOT NULL
);
CREATE INDEX audit_log_target ON {schema}.audit_log (target, seq) WHERE target IS NOT NULL;
CREATE INDEX audit_log_action ON {schema}.audit_log (action, seq);

-- The `webhook` option of a task: where its end is POSTed (NULL: none).
ALTER TABLE {schema}.tasks ADD COLUMN webhook text;

-- Webhook subscriptions: event types ("task.succeeded", ...), and the
-- task names and queues they are limited to (empty: any).
CREATE TABLE {schema}.webhooks (
    id         text        PRIMARY KEY,
    url        text        NOT NULL,
    secret     text        NOT NULL,
    events     text[]      NOT NULL,
    names      text[]      NOT NULL DEFAULT '{}',
    queues     text[]      NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL
);

-- The durable queue of webhook deliveries. webhook_id is NULL for a
-- task's own webhook. next_attempt_at is set while pending (a claim moves
-- it forward by the sender's lease) and NULL once delivered or failed;
-- attempts counts the rows in webhook_delivery_attempts.
CREATE TABLE {schema}.webhook_deliveries (
    id              text        PRIMARY KEY,
    webhook_id      text,
    url             text        NOT NULL,
    event           text        NOT NULL,
    task_id         uuid        NOT NULL,
    payload         text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    created_at      timestamptz NOT NULL,
    next_attempt_at timestamptz,
    attempts        integer     NOT NULL DEFAULT 0
);
-- The claim of due deliveries: only pending rows, in due order.
CREATE INDEX webhook_deliveries_due ON {schema}.webhook_deliveries (next_attempt_at, id)
    WHERE status = 'pending';
-- Lists (newest first, optionally of one subscription or one task) and
-- the purge of old finished deliveries.
CREATE INDEX webhook_deliveries_created ON {schema}.webhook_deliveries (created_at, id);
CREATE INDEX webhook_deliveries_webhook ON {schema}.webhook_deliveries (webhook_id, created_at, id)
    WHERE webhook_id IS NOT NULL;
CREATE INDEX webhook_deliveries_task ON {schema}.webhook_deliveries (task_id, created_at, id);

-- Every attempt of a delivery, numbered from 1; deleted with it.
CREATE TABLE {schema}.webhook_delivery_attempts (
    delivery_id text        NOT NULL
        REFERENCES {schema}.webhook_deliveries (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    at          timestamptz NOT NULL,
    status_code integer,
    latency_ms  bigint      NOT NULL,
    error       text,
    PRIMARY KEY (delivery_id, attempt)
);

-- Settings of the webhook dispatcher: 'cursor' (its place in the event
-- log) and 'task_secret' (the signing secret of tasks' own webhooks).
CREATE TABLE {schema}.webhook_state (
    key   text PRIMARY KEY,
    value text NOT NULL
);
