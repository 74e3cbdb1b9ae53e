-- Identities: one row per subject, merged across captures (see store.IdentityCapture).
-- JSON columns are json, not jsonb: the store only ever reads them whole, and json is cheaper
-- to write.
-- identifiers holds SHA-256 hex hashes only (pii.Set); stamps holds, per identifier field and
-- per scalar (@ip, @user_agent, @lead_id), the capture time of the value kept, so captures
-- arriving out of order merge to the same result.
CREATE TABLE identities (
    subject_key                text PRIMARY KEY,
    identifiers                json NOT NULL DEFAULT '{}',
    stamps                     json NOT NULL DEFAULT '{}',
    ip                         text NOT NULL DEFAULT '',
    user_agent                 text NOT NULL DEFAULT '',
    lead_id                    text NOT NULL DEFAULT '',
    consent_ad_user_data       text NOT NULL DEFAULT '',
    consent_ad_personalization text NOT NULL DEFAULT '',
    consent_captured_at        timestamptz,
    updated_at                 timestamptz NOT NULL
);

-- Clicks live in their own table so a merge only ever adds: a click is never lost.
CREATE TABLE clicks (
    subject_key text NOT NULL,
    type        text NOT NULL,
    id          text NOT NULL,
    clicked_at  timestamptz,
    PRIMARY KEY (subject_key, type, id)
);

-- The outbox: one row per conversion and destination. key is the conversion key and the
-- platform dedup key; inserting an existing key does nothing.
CREATE TABLE conversions (
    key             text PRIMARY KEY,
    kind            text NOT NULL,
    retracts_key    text NOT NULL DEFAULT '',
    destination     text NOT NULL,
    platform        text NOT NULL,
    rule            text NOT NULL,
    mapping_version text NOT NULL DEFAULT '',
    source          text NOT NULL DEFAULT '',
    object_type     text NOT NULL DEFAULT '',
    object_id       text NOT NULL DEFAULT '',
    subject_keys    json NOT NULL DEFAULT '[]',
    conversion_name text NOT NULL DEFAULT '',
    occurred_at     timestamptz NOT NULL,
    value           double precision,
    currency        text NOT NULL DEFAULT '',
    identity        json NOT NULL DEFAULT '{}',
    with_identifier boolean NOT NULL DEFAULT false,
    state           text NOT NULL,
    reason          text NOT NULL DEFAULT '',
    detail          text NOT NULL DEFAULT '',
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    lease_owner     text NOT NULL DEFAULT '',
    lease_until     timestamptz,
    platform_ref    text NOT NULL DEFAULT '',
    replay          boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
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
    subject_key text NOT NULL,
    key         text NOT NULL,
    PRIMARY KEY (subject_key, key)
);
CREATE INDEX conversion_subjects_key ON conversion_subjects (key);

-- CRM stage changes seen per UTC day, source and matched rule ('' = none matched).
CREATE TABLE stage_counts (
    day    timestamptz NOT NULL,
    source text NOT NULL,
    rule   text NOT NULL,
    count  bigint NOT NULL,
    PRIMARY KEY (day, source, rule)
);
