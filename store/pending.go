package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// States of a pending stage change (PendingChange). A pending change waits in
// StateAwaitingEnrichment (the conversions' own state name) until the enricher has
// fetched what it describes; it ends PendingPlanned (its conversions, if any rule matched,
// are in the outbox), StateUnmatched (the CRM has no such record, reason
// crm_record_not_found) or PendingIgnored (the fetch showed it was no stage change).
const (
	PendingPlanned State = "planned"
	PendingIgnored State = "ignored"
)

// PendingChange is a stage change that can only be planned once the CRM's API has been
// asked what it is (Attio's webhooks name the record and the changed attribute, nothing
// else): the consumer stores it in WriteBatch (Batch.Pending), in the same transaction as
// its Kafka offset; the enricher claims it (ClaimPending), fetches, plans the mapping,
// writes the conversions and records the outcome (CompletePending).
type PendingChange struct {
	// Key is unique per Kafka message and event: a redelivered message inserts nothing.
	Key        string
	Source     string
	ObjectType string
	ObjectID   string
	// FetchRef says what to fetch, in the connection kind's own form.
	FetchRef string
	// Properties holds the webhook's ids (never contact data).
	Properties map[string]string
	// ReceivedAt is when the event arrived: only a fetch after it can describe it.
	ReceivedAt time.Time

	State         State
	Reason        string
	Detail        string
	Conversions   int // conversions planned from it
	Attempts      int
	NextAttemptAt time.Time
	LeaseOwner    string
	LeaseUntil    time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// insertPending inserts pending changes unless their key exists.
func (s *Store) insertPending(ctx context.Context, q querier, list []PendingChange, now time.Time) error {
	for i, p := range list {
		switch {
		case p.Key == "" || p.Source == "" || p.ObjectID == "" || p.FetchRef == "":
			return invalid(fmt.Sprintf("pending[%d]", i), "key, source, object_id and fetch_ref are required")
		case p.ReceivedAt.IsZero():
			return invalid(fmt.Sprintf("pending[%d].received_at", i), "required")
		}
		props, err := json.Marshal(p.Properties)
		if err != nil {
			return err
		}
		if p.Properties == nil {
			props = []byte("{}")
		}
		next := p.NextAttemptAt
		if next.IsZero() {
			next = now
		}
		if _, err := q.exec(ctx, `INSERT INTO pending_stage_changes (key, source, object_type, object_id, fetch_ref,
				properties, received_at, state, reason, next_attempt_at, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, 'awaiting_enrichment', $8, $9, $10, $10)
			ON CONFLICT (key) DO NOTHING`,
			p.Key, p.Source, p.ObjectType, p.ObjectID, p.FetchRef, string(props), s.ts(utcMicro(p.ReceivedAt)),
			ReasonEnrichmentPending, s.ts(utcMicro(next)), s.ts(now)); err != nil {
			return fmt.Errorf("store: insert pending stage change: %w", err)
		}
	}
	return nil
}

const pendingCols = `key, source, object_type, object_id, fetch_ref, properties, received_at, state, reason, detail,
	conversions, attempts, next_attempt_at, lease_owner, lease_until, created_at, updated_at`

func scanPending(r rows) (PendingChange, error) {
	var p PendingChange
	var props string
	var state string
	err := r.Scan(&p.Key, &p.Source, &p.ObjectType, &p.ObjectID, &p.FetchRef, textScan{&props}, tsScan{&p.ReceivedAt},
		&state, &p.Reason, &p.Detail, intScan{&p.Conversions}, intScan{&p.Attempts}, tsScan{&p.NextAttemptAt},
		&p.LeaseOwner, tsScan{&p.LeaseUntil}, tsScan{&p.CreatedAt}, tsScan{&p.UpdatedAt})
	p.State = State(state)
	if err == nil && props != "" && props != "{}" {
		err = json.Unmarshal([]byte(props), &p.Properties)
	}
	return p, err
}

// ClaimPending leases up to c.Limit pending changes of c.Sources that are due, as
// ClaimEnrichment does for conversions: oldest NextAttemptAt first, to c.Owner until
// Now+LeaseFor; a crashed enricher's rows are claimed again once the lease runs out.
func (s *Store) ClaimPending(ctx context.Context, c EnrichmentClaim) ([]PendingChange, error) {
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
	pick := `SELECT key FROM pending_stage_changes
		WHERE state = 'awaiting_enrichment' AND ` + s.in("source", 1) + ` AND next_attempt_at <= $2
		AND (lease_until IS NULL OR lease_until <= $2)
		ORDER BY next_attempt_at, key LIMIT $5`
	if s.pg {
		pick += ` FOR UPDATE SKIP LOCKED`
	}
	r, err := s.db.query(ctx, `UPDATE pending_stage_changes SET lease_owner = $3, lease_until = $4, updated_at = $2
		WHERE key IN (`+pick+`) RETURNING `+pendingCols,
		s.list(c.Sources), s.ts(utcMicro(now)), c.Owner, s.ts(utcMicro(now.Add(c.LeaseFor))), c.Limit)
	if err != nil {
		return nil, fmt.Errorf("store: claim pending: %w", err)
	}
	out, err := collect(r, scanPending)
	if err != nil {
		return nil, fmt.Errorf("store: claim pending: %w", err)
	}
	return out, nil
}

// PendingResult is the enricher's outcome for one claimed pending change.
type PendingResult struct {
	Key string
	// State: PendingPlanned, PendingIgnored, StateUnmatched (Reason required), or
	// StateAwaitingEnrichment (try again at NextAttemptAt, Reason and Detail say why).
	State         State
	Reason        string
	Detail        string
	Conversions   int
	NextAttemptAt time.Time
	CountAttempt  bool
}

// CompletePending records results in one transaction for the rows still awaiting
// enrichment under owner's lease, and clears the lease. It returns how many changed.
func (s *Store) CompletePending(ctx context.Context, owner string, results []PendingResult) (int, error) {
	if len(results) == 0 {
		return 0, nil
	}
	if owner == "" {
		return 0, invalid("owner", "required")
	}
	for i, r := range results {
		f := func(name string) string { return fmt.Sprintf("results[%d].%s", i, name) }
		switch {
		case r.Key == "":
			return 0, invalid(f("key"), "required")
		case r.State != PendingPlanned && r.State != PendingIgnored && r.State != StateUnmatched && r.State != StateAwaitingEnrichment:
			return 0, invalid(f("state"), "must be planned, ignored, unmatched or awaiting_enrichment, got %q", r.State)
		case r.State == StateUnmatched && r.Reason == "":
			return 0, invalid(f("reason"), "required for state unmatched")
		}
	}
	now := utcMicro(s.now())
	n := 0
	err := s.db.inTx(ctx, func(q querier) error {
		n = 0
		for _, r := range results {
			next := utcMicro(r.NextAttemptAt)
			if next.IsZero() || r.State != StateAwaitingEnrichment {
				next = now
			}
			attempts := 0
			if r.CountAttempt {
				attempts = 1
			}
			m, err := q.exec(ctx, `UPDATE pending_stage_changes SET state = $3, reason = $4, detail = $5,
					conversions = $6, next_attempt_at = $7, attempts = attempts + $8, lease_owner = '', lease_until = NULL,
					updated_at = $9
				WHERE key = $1 AND state = 'awaiting_enrichment' AND lease_owner = $2`,
				r.Key, owner, string(r.State), r.Reason, r.Detail, r.Conversions, s.ts(next), attempts, s.ts(now))
			if err != nil {
				return err
			}
			n += int(m)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: complete pending: %w", err)
	}
	return n, nil
}

// GetPending returns one pending change by key (ErrNotFound when absent).
func (s *Store) GetPending(ctx context.Context, key string) (PendingChange, error) {
	r, err := s.db.query(ctx, `SELECT `+pendingCols+` FROM pending_stage_changes WHERE key = $1`, key)
	if err != nil {
		return PendingChange{}, fmt.Errorf("store: get pending: %w", err)
	}
	list, err := collect(r, scanPending)
	if err != nil {
		return PendingChange{}, fmt.Errorf("store: get pending: %w", err)
	}
	if len(list) == 0 {
		return PendingChange{}, ErrNotFound
	}
	return list[0], nil
}

// AwaitingEnrichment is, per source, how many conversions and pending stage changes wait
// for the enricher and since when the oldest has waited (its creation time).
type AwaitingEnrichment struct {
	Source      string    `json:"source"`
	Conversions int       `json:"conversions"`
	Pending     int       `json:"pending_stage_changes"`
	Oldest      time.Time `json:"oldest"`
	// Reasons counts the rows by their current reason (enrichment_pending, crm_retry,
	// crm_connection_paused).
	Reasons map[string]int `json:"reasons,omitempty"`
}

// AwaitingEnrichmentSummary lists, per source, the rows waiting for the enricher.
func (s *Store) AwaitingEnrichmentSummary(ctx context.Context) ([]AwaitingEnrichment, error) {
	by := map[string]*AwaitingEnrichment{}
	var order []string
	for _, q := range []struct {
		table   string
		pending bool
	}{{"conversions", false}, {"pending_stage_changes", true}} {
		r, err := s.db.query(ctx, `SELECT source, reason, COUNT(*), MIN(created_at) FROM `+q.table+`
			WHERE state = 'awaiting_enrichment' GROUP BY source, reason ORDER BY source, reason`)
		if err != nil {
			return nil, fmt.Errorf("store: awaiting enrichment: %w", err)
		}
		type row struct {
			source, reason string
			n              int
			oldest         time.Time
		}
		list, err := collect(r, func(r rows) (row, error) {
			var x row
			return x, r.Scan(&x.source, &x.reason, intScan{&x.n}, tsScan{&x.oldest})
		})
		if err != nil {
			return nil, fmt.Errorf("store: awaiting enrichment: %w", err)
		}
		for _, x := range list {
			a := by[x.source]
			if a == nil {
				a = &AwaitingEnrichment{Source: x.source, Reasons: map[string]int{}}
				by[x.source] = a
				order = append(order, x.source)
			}
			if q.pending {
				a.Pending += x.n
			} else {
				a.Conversions += x.n
			}
			a.Reasons[x.reason] += x.n
			if a.Oldest.IsZero() || (!x.oldest.IsZero() && x.oldest.Before(a.Oldest)) {
				a.Oldest = x.oldest
			}
		}
	}
	out := make([]AwaitingEnrichment, 0, len(order))
	for _, src := range order {
		out = append(out, *by[src])
	}
	sortBy(out, func(a AwaitingEnrichment) string { return a.Source })
	return out, nil
}

func sortBy[T any](list []T, key func(T) string) {
	for i := 1; i < len(list); i++ {
		for j := i; j > 0 && key(list[j]) < key(list[j-1]); j-- {
			list[j], list[j-1] = list[j-1], list[j]
		}
	}
}
