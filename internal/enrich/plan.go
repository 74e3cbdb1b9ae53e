package enrich

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/consumer"
	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/store"
)

// Enrich before plan: a thin event (crm.ThinChange, stored by the consumer as a
// store.PendingChange) names a record and the attribute that changed but neither the new
// stage nor a time, so no mapping rule, and so no conversion key, can be chosen until the
// CRM says what the record holds now. passPending claims such rows, fetches the records
// (a cached fetch counts only when made after the event arrived: the stage itself comes
// from it), builds the stage change (the stage attribute's title, its active_from as the
// time, the deal's value and people), plans the mapping, joins the people's identities
// (stored first, as for any enrichment) and writes the conversions; then records the
// pending row planned. A crash in between plans again on the next claim: the conversion
// keys are the same, the store inserts nothing twice.

// passPending runs one round of pending stage changes for c; it returns how many rows it
// claimed. Only kinds whose webhooks carry no stage have such rows.
func (e *Enricher) passPending(ctx context.Context, c *conn, now time.Time) (int, error) {
	if c.cfg.Kind != KindAttio {
		return 0, nil
	}
	rows, err := e.opts.Store.ClaimPending(ctx, store.EnrichmentClaim{Sources: []string{c.cfg.Source}, Owner: e.owner,
		Limit: e.cfg.Batch, LeaseFor: e.cfg.LeaseFor, Now: now})
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	refs := make([]string, 0, len(rows))
	notBefore := map[string]time.Time{}
	for _, r := range rows {
		if _, ok := notBefore[r.FetchRef]; !ok {
			refs = append(refs, r.FetchRef)
		}
		if r.ReceivedAt.After(notBefore[r.FetchRef]) {
			notBefore[r.FetchRef] = r.ReceivedAt
		}
	}
	deals, err := e.load(ctx, c, refs, notBefore)
	if err != nil {
		var fe *FetchError
		if errors.As(err, &fe) {
			return len(rows), e.failedPending(ctx, c, rows, fe)
		}
		return len(rows), err // the leases run out; claimed again
	}
	return len(rows), e.plan(ctx, c, rows, deals)
}

// plan plans and writes the conversions of fetched pending rows.
func (e *Enricher) plan(ctx context.Context, c *conn, rows []store.PendingChange, deals map[string]*Deal) error {
	mapping := e.opts.Mapping()
	results := make([]store.PendingResult, 0, len(rows))
	var convs []store.Conversion
	type planned struct {
		sc   crm.StageChange
		plan []crm.Planned
		res  int // index in results
	}
	var todo []planned
	keySet := map[string]bool{}
	var keys []string
	for _, r := range rows {
		d := deals[r.FetchRef]
		switch {
		case d == nil:
			results = append(results, store.PendingResult{Key: r.Key, State: store.StateUnmatched, Reason: store.ReasonCRMRecordNotFound,
				Detail: "the CRM has no record " + r.ObjectID, CountAttempt: true})
			e.opts.Metrics.row(c.name, "not_found")
			continue
		}
		sc, ok := ThinStageChange(r.Source, r.ObjectType, r.ObjectID, r.Properties, r.ReceivedAt, *d)
		if !ok {
			results = append(results, store.PendingResult{Key: r.Key, State: store.PendingIgnored, Reason: "not_a_stage_change",
				Detail: "the changed attribute is not a status or select attribute", CountAttempt: true})
			e.opts.Metrics.row(c.name, "ignored")
			continue
		}
		pl, unmatched := mapping.Plan(sc)
		results = append(results, store.PendingResult{Key: r.Key, State: store.PendingPlanned, CountAttempt: true})
		if unmatched || len(pl) == 0 {
			results[len(results)-1].Reason = "no_rule_matched"
			e.opts.Metrics.row(c.name, "no_rule")
			continue
		}
		todo = append(todo, planned{sc: sc, plan: pl, res: len(results) - 1})
		for _, k := range consumerSubjectKeys(sc) {
			if !keySet[k] {
				keySet[k] = true
				keys = append(keys, k)
			}
		}
	}
	if len(todo) > 0 {
		ids, err := e.opts.Store.LookupIdentities(ctx, keys)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, t := range todo {
			n := 0
			for _, pl := range t.plan {
				if seen[pl.Key] {
					continue
				}
				seen[pl.Key] = true
				row := consumer.Row(t.sc, pl, ids, false)
				row.MappingVersion = mapping.Version()
				convs = append(convs, row)
				n++
				if row.State == store.StateReady {
					e.opts.Metrics.row(c.name, "ready")
				} else {
					e.opts.Metrics.row(c.name, "awaiting_identity")
				}
			}
			results[t.res].Conversions = n
		}
		if _, err := e.opts.Store.WriteBatch(ctx, store.Batch{Conversions: convs}); err != nil {
			return fmt.Errorf("write planned conversions: %w", err)
		}
	}
	if _, err := e.opts.Store.CompletePending(ctx, e.owner, results); err != nil {
		return fmt.Errorf("complete pending: %w", err)
	}
	// A capture stored between the lookup and the write found no awaiting row to release.
	var again []store.Conversion
	for _, cv := range convs {
		if cv.State == store.StateAwaitingIdentity {
			again = append(again, store.Conversion{Key: cv.Key, SubjectKeys: cv.SubjectKeys, Identity: cv.Identity})
		}
	}
	return e.recheck(ctx, convs, again)
}

// consumerSubjectKeys are the subjects the consumer's join looks up for sc.
func consumerSubjectKeys(sc crm.StageChange) []string {
	keys := sc.SubjectKeys()
	if h := sc.Identifiers["email"]; h != "" {
		keys = append(keys, "email:"+h)
	}
	return keys
}

// failedPending handles a fetch error for claimed pending rows, as failed does for
// conversions: 401/403 pause the connection, anything else retries with backoff.
func (e *Enricher) failedPending(ctx context.Context, c *conn, rows []store.PendingChange, fe *FetchError) error {
	now := e.now()
	results := make([]store.PendingResult, 0, len(rows))
	if fe.Class == ClassSetup {
		until, err := e.pause(ctx, c, fe)
		if err != nil {
			return err
		}
		for _, r := range rows {
			results = append(results, store.PendingResult{Key: r.Key, State: store.StateAwaitingEnrichment, Reason: store.ReasonCRMPaused,
				Detail: fe.Error(), NextAttemptAt: until})
		}
	} else {
		for _, r := range rows {
			wait := backoff(r.Attempts, e.cfg.MaxBackoff)
			if fe.RetryAfter > wait {
				wait = min(fe.RetryAfter, e.cfg.MaxBackoff)
			}
			results = append(results, store.PendingResult{Key: r.Key, State: store.StateAwaitingEnrichment, Reason: store.ReasonCRMRetry,
				Detail: fe.Error(), NextAttemptAt: now.Add(wait), CountAttempt: true})
		}
		e.log.Warn("CRM fetch failed; stage changes retry later", zap.String("connection", c.name), zap.String("class", fe.Class),
			zap.Int("status", fe.Status), zap.Duration("retry_after", fe.RetryAfter), zap.Int("rows", len(rows)))
	}
	if _, err := e.opts.Store.CompletePending(ctx, e.owner, results); err != nil {
		return fmt.Errorf("record fetch failure: %w", err)
	}
	return nil
}

// pause stores the connection's pause after a 401/403 and returns until when.
func (e *Enricher) pause(ctx context.Context, c *conn, fe *FetchError) (time.Time, error) {
	until := e.now().Add(e.cfg.PauseFor)
	reason := "crm_unauthorized"
	if fe.Status == http.StatusForbidden {
		reason = "crm_forbidden"
	}
	state := store.ConnectionState{Name: c.name, PausedUntil: until, Reason: reason, Detail: fe.Error()}
	if err := e.opts.Store.SetConnectionState(ctx, state); err != nil {
		return time.Time{}, err
	}
	state.UpdatedAt = e.now()
	e.mu.Lock()
	e.statuses[c.name] = state
	e.mu.Unlock()
	e.log.Error("CRM connection paused: the CRM refused the credentials; rows are kept",
		zap.String("connection", c.name), zap.Int("status", fe.Status), zap.Time("until", until))
	e.opts.Metrics.paused(c.name, true)
	return until, nil
}
