-- Stage changes that must be fetched before they can be planned (issue 14, Attio): the
-- webhook names a record and the attribute that changed, but carries neither the new stage
-- nor a time, so no mapping rule (and so no conversion key) can be chosen yet. The consumer
-- stores the thin event here (in the same transaction as its Kafka offset); the enricher
-- claims due rows with a lease, fetches the record, plans the mapping and writes the
-- conversions, then marks the row planned (or unmatched / ignored, with a reason).
-- key: one per Kafka message and event, so a redelivery inserts nothing. fetch_ref says
-- what to fetch (kind-specific); properties holds the webhook's ids only (no PII).
CREATE TABLE pending_stage_changes (
    key             text PRIMARY KEY,
    source          text NOT NULL,
    object_type     text NOT NULL,
    object_id       text NOT NULL,
    fetch_ref       text NOT NULL,
    properties      json NOT NULL DEFAULT '{}',
    received_at     timestamptz NOT NULL,
    state           text NOT NULL,
    reason          text NOT NULL DEFAULT '',
    detail          text NOT NULL DEFAULT '',
    conversions     integer NOT NULL DEFAULT 0,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    lease_owner     text NOT NULL DEFAULT '',
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX pending_stage_changes_due ON pending_stage_changes (source, next_attempt_at) WHERE state = 'awaiting_enrichment';
