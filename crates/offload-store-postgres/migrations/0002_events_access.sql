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
