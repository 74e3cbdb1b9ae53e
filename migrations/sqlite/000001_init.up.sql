-- SQLite form of postgres/000001_init.up.sql: times are INTEGER microseconds since the Unix
-- epoch (UTC), JSON is TEXT, booleans are INTEGER 0/1.
-- Identities: one row per subject, merged across captures (see store.IdentityCapture).
-- identifiers holds SHA-256 hex hashes only (pii.Set); stamps holds, per identifier field and
-- per scalar (@ip, @user_agent, @lead_id), the capture time of the value kept, so captures
-- arriving out of order merge to the same result.
CREATE TABLE identities (
    subject_key                TEXT PRIMARY KEY,
    identifiers                TEXT NOT NULL DEFAULT '{}',
    stamps                     TEXT NOT NULL DEFAULT '{}',
    ip                         TEXT NOT NULL DEFAULT '',
    user_agent                 TEXT NOT NULL DEFAULT '',
    lead_id                    TEXT NOT NULL DEFAULT '',
    consent_ad_user_data       TEXT NOT NULL DEFAULT '',
    consent_ad_personalization TEXT NOT NULL DEFAULT '',
    consent_captured_at        INTEGER,
    updated_at                 INTEGER NOT NULL
);

-- Clicks live in their own table so a merge only ever adds: a click is never lost.
CREATE TABLE clicks (
    subject_key TEXT NOT NULL,
    type        TEXT NOT NULL,
    id          TEXT NOT NULL,
    clicked_at  INTEGER,
    PRIMARY KEY (subject_key, type, id)
);

-- The outbox: one row per conversion and destination. key is the conversion key and the
-- platform dedup key; inserting an existing key does nothing.
CREATE TABLE conversions (
    key             TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    retracts_key    TEXT NOT NULL DEFAULT '',
    destination     TEXT NOT NULL,
    platform        TEXT NOT NULL,
    rule            TEXT NOT NULL,
    mapping_version TEXT NOT NULL DEFAULT '',
    source          TEXT NOT NULL DEFAULT '',
    object_type     TEXT NOT NULL DEFAULT '',
    object_id       TEXT NOT NULL DEFAULT '',
    subject_keys    TEXT NOT NULL DEFAULT '[]',
    conversion_name TEXT NOT NULL DEFAULT '',
    occurred_at     INTEGER NOT NULL,
    value           REAL,
    currency        TEXT NOT NULL DEFAULT '',
    identity        TEXT NOT NULL DEFAULT '{}',
    with_identifier INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL,
    reason          TEXT NOT NULL DEFAULT '',
    detail          TEXT NOT NULL DEFAULT '',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT NOT NULL DEFAULT '',
    lease_until     INTEGER,
    platform_ref    TEXT NOT NULL DEFAULT '',
    replay          INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- Claiming (destination, ready, due), polling (destination, sent) and listing.
CREATE INDEX conversions_destination_state ON conversions (destination, state, next_attempt_at);
-- Lease expiry scans only leased rows.
CREATE INDEX conversions_leased ON conversions (lease_until) WHERE state = 'in_flight';
-- Expiry and the oldest-awaiting gauge scan only waiting rows.
CREATE INDEX conversions_awaiting ON conversions (created_at) WHERE state = 'awaiting_identity';
-- The reconciliation report groups by creation day; the status page by last change.
CREATE INDEX conversions_created_at ON conversions (created_at);
CREATE INDEX conversions_updated_at ON conversions (updated_at);

-- The subjects of conversions awaiting identity, so a new capture finds its waiting rows by
-- index. Rows are added with an awaiting conversion and removed when it stops waiting.
CREATE TABLE conversion_subjects (
    subject_key TEXT NOT NULL,
    key         TEXT NOT NULL,
    PRIMARY KEY (subject_key, key)
);
CREATE INDEX conversion_subjects_key ON conversion_subjects (key);

-- CRM stage changes seen per UTC day, source and matched rule ('' = none matched).
CREATE TABLE stage_counts (
    day    INTEGER NOT NULL,
    source TEXT NOT NULL,
    rule   TEXT NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (day, source, rule)
);
