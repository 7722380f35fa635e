-- offload schema, version 2: the event log, idempotency keys, API tokens
-- and the audit log.

-- What happened to tasks, appended in the transaction of the change.
-- AUTOINCREMENT: a seq is never reused, even after the newest events were
-- purged, so a reader's cursor never points backwards.
CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    task_id BLOB    NOT NULL,
    name    TEXT    NOT NULL,
    queue   TEXT    NOT NULL,
    attempt INTEGER NOT NULL,
    data    TEXT    NOT NULL
);

-- Enqueues with an Idempotency-Key: the key, what was asked, what it made.
CREATE TABLE idempotency_keys (
    key         TEXT    PRIMARY KEY,
    fingerprint TEXT    NOT NULL,
    task_ids    TEXT    NOT NULL,
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
