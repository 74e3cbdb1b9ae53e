package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// StateAwaitingEnrichment: the stage change lacked what its value rule or the identity
// join needs, and the enricher fetches it from the CRM's API (ClaimEnrichment,
// CompleteEnrichment). The row is durable from the start: the Kafka offset is committed
// as for any other row.
const StateAwaitingEnrichment State = "awaiting_enrichment"

// Reasons the enricher gives.
const (
	// ReasonEnrichmentPending: the row waits for its first fetch.
	ReasonEnrichmentPending = "enrichment_pending"
	// ReasonCRMRecordNotFound: the CRM answered 404 for the deal (terminal, unmatched).
	ReasonCRMRecordNotFound = "crm_record_not_found"
	// ReasonCRMRetry: a fetch failed transiently (429, 5xx, timeout); next_attempt_at says when.
	ReasonCRMRetry = "crm_retry"
	// ReasonCRMPaused: the connection is paused after a 401/403; the row is kept.
	ReasonCRMPaused = "crm_connection_paused"
)

// EnrichmentClaim asks ClaimEnrichment for due rows awaiting enrichment.
type EnrichmentClaim struct {
	Sources  []string // stage-change sources whose rows to claim (one per CRM connection); required
	Owner    string   // lease owner: one enricher instance; required
	Limit    int      // most rows; at least 1
	LeaseFor time.Duration
	Now      time.Time // zero = the store's clock
}

// ClaimEnrichment leases up to c.Limit rows awaiting enrichment of c.Sources whose
// NextAttemptAt is due and whose lease (if any) has expired, oldest NextAttemptAt first, to
// c.Owner until Now+LeaseFor. The rows stay in state awaiting_enrichment while leased, so a
// crashed enricher's rows are claimed again once the lease runs out: nothing is lost. On
// PostgreSQL concurrent claimers skip each other's rows (FOR UPDATE SKIP LOCKED).
func (s *Store) ClaimEnrichment(ctx context.Context, c EnrichmentClaim) ([]Conversion, error) {
	switch {
	case len(c.Sources) == 0:
		return nil, invalid("claim.sources", "required")
	case c.Owner == "":
		return nil, invalid("claim.owner", "required")
	case c.Limit < 1:
		return nil, invalid("claim.limit", "must be at least 1, got %d", c.Limit)
	case c.LeaseFor < time.Millisecond:
		return nil, invalid("claim.lease_for", "must be at least 1ms, got %s", c.LeaseFor)
	}
	now := c.Now
	if now.IsZero() {
		now = s.now()
	}
	pick := `SELECT key FROM conversions
		WHERE state = 'awaiting_enrichment' AND ` + s.in("source", 1) + ` AND next_attempt_at <= $2
		AND (lease_until IS NULL OR lease_until <= $2)
		ORDER BY next_attempt_at, key LIMIT $5`
	prefix := ""
	if s.pg {
		pick += ` FOR UPDATE SKIP LOCKED`
		prefix = "c."
	}
	query := `UPDATE conversions c SET lease_owner = $3, lease_until = $4, updated_at = $2
		WHERE c.key IN (` + pick + `) RETURNING ` + cols(prefix)
	if !s.pg {
		query = `UPDATE conversions SET lease_owner = $3, lease_until = $4, updated_at = $2
		WHERE key IN (` + pick + `) RETURNING ` + cols("")
	}
	out, err := s.listQuery(ctx, "claim enrichment", query, s.list(c.Sources), s.ts(now), c.Owner, s.ts(now.Add(c.LeaseFor)), c.Limit)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Enriched is the enricher's result for one claimed row.
type Enriched struct {
	Key string
	// State: ready, awaiting_identity (joined but still no usable identifier), unmatched
	// (with Reason, e.g. crm_record_not_found), or awaiting_enrichment (try again at
	// NextAttemptAt, with Reason and Detail saying why).
	State  State
	Reason string
	Detail string
	// SetValue replaces Value and Currency (the value rule applied to the fetched deal).
	SetValue bool
	Value    *float64
	Currency string
	// SubjectKeys, when not nil, replaces the row's subjects (the deal's fetched contacts
	// added), and Identity the joined snapshot.
	SubjectKeys   []string
	Identity      Identity
	NextAttemptAt time.Time // for awaiting_enrichment; zero = now
	CountAttempt  bool      // a request was made for this row
}

var enrichedStates = map[State]bool{
	StateReady: true, StateAwaitingIdentity: true, StateUnmatched: true, StateAwaitingEnrichment: true,
}

// CompleteEnrichment applies results in one transaction to the rows they name that are
// still awaiting enrichment under owner's lease (a row whose lease expired and was claimed
// again by another enricher is left alone), and clears the lease. A row moved to
// awaiting_identity gets its subjects indexed, so a later identity capture releases it as
// any other waiting row. It returns how many rows changed.
func (s *Store) CompleteEnrichment(ctx context.Context, owner string, results []Enriched) (int, error) {
	if len(results) == 0 {
		return 0, nil
	}
	if owner == "" {
		return 0, invalid("owner", "required")
	}
	now := utcMicro(s.now())
	for i, r := range results {
		f := func(name string) string { return fmt.Sprintf("results[%d].%s", i, name) }
		switch {
		case r.Key == "":
			return 0, invalid(f("key"), "required")
		case !enrichedStates[r.State]:
			return 0, invalid(f("state"), "must be ready, awaiting_identity, unmatched or awaiting_enrichment, got %q", r.State)
		case r.State == StateUnmatched && r.Reason == "":
			return 0, invalid(f("reason"), "required for state unmatched")
		}
	}
	n := 0
	err := s.db.inTx(ctx, func(q querier) error {
		n = 0
		var subjKeys, convKeys []string
		for _, r := range results {
			next := utcMicro(r.NextAttemptAt)
			if next.IsZero() || r.State != StateAwaitingEnrichment {
				next = now
			}
			attempts := 0
			if r.CountAttempt {
				attempts = 1
			}
			set := `state = $3, reason = $4, detail = $5, next_attempt_at = $6, attempts = attempts + $7,
				lease_owner = '', lease_until = NULL, updated_at = $8`
			args := []any{r.Key, owner, string(r.State), r.Reason, r.Detail, s.ts(next), attempts, s.ts(now)}
			if r.SetValue {
				args = append(args, r.Value, r.Currency)
				set += fmt.Sprintf(", value = $%d, currency = $%d", len(args)-1, len(args))
			}
			if r.SubjectKeys != nil {
				ib, err := appendIdentityJSON(nil, r.Identity)
				if err != nil {
					return err
				}
				args = append(args, string(appendStringsJSON(nil, r.SubjectKeys)), string(ib), hasIdentifier(r.Identity))
				set += fmt.Sprintf(", subject_keys = $%d, identity = $%d, with_identifier = $%d", len(args)-2, len(args)-1, len(args))
			}
			m, err := q.exec(ctx, `UPDATE conversions SET `+set+`
				WHERE key = $1 AND state = 'awaiting_enrichment' AND lease_owner = $2`, args...)
			if err != nil {
				return err
			}
			n += int(m)
			if m > 0 && r.State == StateAwaitingIdentity {
				for _, sk := range r.SubjectKeys {
					subjKeys, convKeys = append(subjKeys, sk), append(convKeys, r.Key)
				}
			}
		}
		return s.insertSubjects(ctx, q, subjKeys, convKeys)
	})
	if err != nil {
		return 0, fmt.Errorf("store: complete enrichment: %w", err)
	}
	return n, nil
}

// FetchCacheEntry is one object the enricher fetched from a CRM. Data holds only what
// closedloop keeps (ids, amounts, currencies, hashed identifiers); Found is false when the
// CRM answered 404.
type FetchCacheEntry struct {
	Connection string
	Kind       string // deal | contact | ...
	ID         string
	Found      bool
	Data       json.RawMessage
	FetchedAt  time.Time
}

// FetchCache returns the entries of connection and kind among ids fetched at or after
// freshAfter, keyed by id.
func (s *Store) FetchCache(ctx context.Context, connection, kind string, ids []string, freshAfter time.Time) (map[string]FetchCacheEntry, error) {
	out := map[string]FetchCacheEntry{}
	if len(ids) == 0 {
		return out, nil
	}
	r, err := s.db.query(ctx, `SELECT id, found, data, fetched_at FROM crm_fetch_cache
		WHERE connection = $1 AND kind = $2 AND `+s.in("id", 3)+` AND fetched_at >= $4`,
		connection, kind, s.list(ids), s.ts(freshAfter))
	if err != nil {
		return nil, fmt.Errorf("store: fetch cache: %w", err)
	}
	got, err := collect(r, func(r rows) (FetchCacheEntry, error) {
		e := FetchCacheEntry{Connection: connection, Kind: kind}
		var data string
		err := r.Scan(&e.ID, boolScan{&e.Found}, textScan{&data}, tsScan{&e.FetchedAt})
		e.Data = json.RawMessage(data)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: fetch cache: %w", err)
	}
	for _, e := range got {
		out[e.ID] = e
	}
	return out, nil
}

// PutFetchCache stores entries, replacing what was stored for the same object, in one
// transaction. A zero FetchedAt is the store's clock.
func (s *Store) PutFetchCache(ctx context.Context, entries []FetchCacheEntry) error {
	if len(entries) == 0 {
		return nil
	}
	now := s.now()
	for i, e := range entries {
		if e.Connection == "" || e.Kind == "" || e.ID == "" {
			return invalid(fmt.Sprintf("entries[%d]", i), "connection, kind and id are required")
		}
		if len(e.Data) > 0 && !json.Valid(e.Data) {
			return invalid(fmt.Sprintf("entries[%d].data", i), "must be JSON")
		}
	}
	// The last entry of an object wins (one statement may not update a row twice).
	type obj struct{ conn, kind, id string }
	last := make(map[obj]int, len(entries))
	for i, e := range entries {
		last[obj{e.Connection, e.Kind, e.ID}] = i
	}
	var conns, kinds, ids, datas []string
	var founds []bool
	var ats []time.Time
	for i, e := range entries {
		if last[obj{e.Connection, e.Kind, e.ID}] != i {
			continue
		}
		at := e.FetchedAt
		if at.IsZero() {
			at = now
		}
		data := string(e.Data)
		if data == "" {
			data = "{}"
		}
		conns, kinds, ids, founds, datas, ats = append(conns, e.Connection), append(kinds, e.Kind), append(ids, e.ID),
			append(founds, e.Found), append(datas, data), append(ats, utcMicro(at))
	}
	err := s.db.inTx(ctx, func(q querier) error {
		if s.pg {
			// One statement for the whole round (a HubSpot round is 100s of entries).
			_, err := q.exec(ctx, `INSERT INTO crm_fetch_cache (connection, kind, id, found, data, fetched_at)
				SELECT c, k, i, f, d::json, t FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::timestamptz[]) AS u(c, k, i, f, d, t)
				ON CONFLICT (connection, kind, id) DO UPDATE SET found = excluded.found, data = excluded.data,
					fetched_at = excluded.fetched_at`, conns, kinds, ids, founds, datas, ats)
			return err
		}
		for i := range conns {
			if _, err := q.exec(ctx, `INSERT INTO crm_fetch_cache (connection, kind, id, found, data, fetched_at)
				VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (connection, kind, id) DO UPDATE SET found = excluded.found, data = excluded.data,
					fetched_at = excluded.fetched_at`,
				conns[i], kinds[i], ids[i], founds[i], datas[i], s.ts(ats[i])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: put fetch cache: %w", err)
	}
	return nil
}

// ConnectionState is the stored state of one CRM connection: paused until PausedUntil
// (zero = running) with the reason (crm_unauthorized, crm_forbidden) and the CRM's message.
type ConnectionState struct {
	Name        string    `json:"name"`
	PausedUntil time.Time `json:"paused_until,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	Detail      string    `json:"detail,omitempty"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Paused reports whether the connection is paused at now.
func (c ConnectionState) Paused(now time.Time) bool {
	return !c.PausedUntil.IsZero() && now.Before(c.PausedUntil)
}

// SetConnectionState stores the state of one connection (a zero PausedUntil resumes it).
func (s *Store) SetConnectionState(ctx context.Context, cs ConnectionState) error {
	if cs.Name == "" {
		return invalid("name", "required")
	}
	_, err := s.db.exec(ctx, `INSERT INTO crm_connections (name, paused_until, reason, detail, updated_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (name) DO UPDATE SET paused_until = excluded.paused_until, reason = excluded.reason,
			detail = excluded.detail, updated_at = excluded.updated_at`,
		cs.Name, s.ts(cs.PausedUntil), cs.Reason, cs.Detail, s.ts(s.now()))
	if err != nil {
		return fmt.Errorf("store: set connection state: %w", err)
	}
	return nil
}

// ConnectionStates lists every stored connection state, by name.
func (s *Store) ConnectionStates(ctx context.Context) ([]ConnectionState, error) {
	r, err := s.db.query(ctx, `SELECT name, paused_until, reason, detail, updated_at FROM crm_connections ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: connection states: %w", err)
	}
	out, err := collect(r, func(r rows) (ConnectionState, error) {
		var c ConnectionState
		return c, r.Scan(&c.Name, tsScan{&c.PausedUntil}, &c.Reason, &c.Detail, tsScan{&c.UpdatedAt})
	})
	if err != nil {
		return nil, fmt.Errorf("store: connection states: %w", err)
	}
	return out, nil
}
