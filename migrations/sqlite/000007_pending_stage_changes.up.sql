-- SQLite form of postgres/000007_pending_stage_changes.up.sql (times: INTEGER
-- microseconds, JSON: TEXT). Stage changes that must be fetched before they can be planned
-- (Attio: the webhook carries ids only); see the PostgreSQL file.
CREATE TABLE pending_stage_changes (
    key             TEXT PRIMARY KEY,
    source          TEXT NOT NULL,
    object_type     TEXT NOT NULL,
    object_id       TEXT NOT NULL,
    fetch_ref       TEXT NOT NULL,
    properties      TEXT NOT NULL DEFAULT '{}',
    received_at     INTEGER NOT NULL,
    state           TEXT NOT NULL,
    reason          TEXT NOT NULL DEFAULT '',
    detail          TEXT NOT NULL DEFAULT '',
    conversions     INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT NOT NULL DEFAULT '',
    lease_until     INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX pending_stage_changes_due ON pending_stage_changes (source, next_attempt_at) WHERE state = 'awaiting_enrichment';
