-- SQLite form of postgres/000003_enrichment.up.sql (times: INTEGER microseconds, JSON: TEXT).
-- Enrichment (issue 14): conversions in state 'awaiting_enrichment' wait for the CRM's API to
-- supply what their stage change lacked (amount, currency, contacts). The enricher claims
-- them with the conversions' own lease columns; this index serves the claim.
CREATE INDEX conversions_enrichment ON conversions (source, next_attempt_at) WHERE state = 'awaiting_enrichment';

-- What the enricher fetched from a CRM, per connection, object kind (deal, contact, ...) and
-- id, so that a second stage change of the same deal, a replay or a restart within the
-- connection's cache TTL does not fetch again. data holds only what closedloop keeps: ids,
-- amounts, currencies, and hashed identifiers (never a raw email or phone). found is false
-- when the CRM answered 404.
CREATE TABLE crm_fetch_cache (
    connection TEXT NOT NULL,
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    found      INTEGER NOT NULL DEFAULT 1,
    data       TEXT NOT NULL DEFAULT '{}',
    fetched_at INTEGER NOT NULL,
    PRIMARY KEY (connection, kind, id)
);

-- One row per CRM connection whose state is not plain "running": paused after a 401/403
-- until paused_until (rows are kept; the enricher probes again then), with the reason.
CREATE TABLE crm_connections (
    name         TEXT PRIMARY KEY,
    paused_until INTEGER,
    reason       TEXT NOT NULL DEFAULT '',
    detail       TEXT NOT NULL DEFAULT '',
    updated_at   INTEGER NOT NULL
);
