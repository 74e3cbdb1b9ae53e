package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/enrich"
	"github.com/closedloop/closedloop/internal/join"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

// explainEnrichment is what `mappings explain` says about a conversion the pipeline would
// leave awaiting_enrichment: the connection, what it would supply and, with --enrich, what
// the CRM returned (contacts hashed, as the enricher stores them).
type explainEnrichment struct {
	Connection string          `json:"connection"`
	Kind       string          `json:"kind"`
	Supplies   []string        `json:"supplies"`
	Fetched    *explainFetched `json:"fetched,omitempty"`
}

type explainFetched struct {
	Found    bool             `json:"found"`
	Deal     *enrich.Deal     `json:"deal,omitempty"`
	Contacts []enrich.Contact `json:"contacts"`
}

// Reasons of explain's enrichment path.
const (
	reasonEnrichmentPending = "enrichment_pending" // run with --enrich to see what the CRM supplies
)

// enrichmentFor describes the enrichment of a routed row: which fields the CRM supplies.
func enrichmentFor(cfg enrich.Config, sc crm.StageChange, p crm.Planned, row store.Conversion) *explainEnrichment {
	name, conn, _ := cfg.ConnectionFor(sc.Source)
	e := &explainEnrichment{Connection: name, Kind: conn.Kind, Supplies: []string{}}
	if p.ValueReason == crm.ValueReasonFieldMissing {
		e.Supplies = append(e.Supplies, "amount", "currency")
	}
	if !join.Usable(row.Identity, row.Platform) || len(row.Identity.Identifiers) == 0 {
		e.Supplies = append(e.Supplies, "contacts", "email", "phone")
		if conn.Kind == enrich.KindHubSpot {
			e.Supplies = append(e.Supplies, "click_ids")
		}
	}
	return e
}

// enrichedChange fetches sc's deal and contacts through its connection, as the enricher
// would (one attempt, no cache, nothing stored), and returns what was fetched, sc with
// the deal applied, and the contacts as identity captures.
func enrichedChange(ctx context.Context, cfg enrich.Config, sc crm.StageChange, n pii.Normalizer, now time.Time) (*explainFetched, crm.StageChange, []store.IdentityCapture, error) {
	name, conn, ok := cfg.ConnectionFor(sc.Source)
	if !ok {
		return nil, sc, nil, fmt.Errorf("no CRM connection enriches source %q", sc.Source)
	}
	client, err := enrich.NewClient(conn, nil, n)
	if err != nil {
		return nil, sc, nil, err
	}
	got, err := client.FetchDeals(ctx, []string{sc.ObjectID})
	if err != nil {
		return nil, sc, nil, fmt.Errorf("crms.connections.%s: fetching %s %s: %w", name, sc.ObjectType, sc.ObjectID, err)
	}
	d, found := got.Deals[sc.ObjectID]
	out := &explainFetched{Found: found, Contacts: []enrich.Contact{}}
	if !found {
		return out, sc, nil, nil
	}
	out.Deal = &d
	captures, err := fetchedContacts(ctx, client, name, conn.Source, d, got.Contacts, out, now)
	if err != nil {
		return nil, sc, nil, err
	}
	return out, d.Apply(sc), captures, nil
}

// enrichedThin fetches a thin event's record through its connection (one attempt, no
// cache, nothing stored) and returns what was fetched and, when the record was found and
// the attribute is a stage, the stage change it describes with the contacts as captures.
func enrichedThin(ctx context.Context, cfg enrich.Config, tc crm.ThinChange, n pii.Normalizer, now time.Time) (*explainFetched, crm.StageChange, []store.IdentityCapture, bool, error) {
	name, conn, _ := cfg.ConnectionFor(tc.Source)
	client, err := enrich.NewClient(conn, nil, n)
	if err != nil {
		return nil, crm.StageChange{}, nil, false, err
	}
	got, err := client.FetchDeals(ctx, []string{tc.FetchRef})
	if err != nil {
		return nil, crm.StageChange{}, nil, false, fmt.Errorf("crms.connections.%s: fetching %s: %w", name, tc.FetchRef, err)
	}
	d, found := got.Deals[tc.FetchRef]
	out := &explainFetched{Found: found, Contacts: []enrich.Contact{}}
	if !found {
		return out, crm.StageChange{}, nil, false, nil
	}
	out.Deal = &d
	sc, ok := enrich.ThinStageChange(tc.Source, tc.ObjectType, tc.ObjectID, tc.Properties, now, d)
	if !ok {
		return out, crm.StageChange{}, nil, false, nil
	}
	captures, err := fetchedContacts(ctx, client, name, conn.Source, d, got.Contacts, out, now)
	if err != nil {
		return nil, crm.StageChange{}, nil, false, err
	}
	return out, sc, captures, true, nil
}

// fetchedContacts completes contacts (those fetched with the deal) with the deal's other
// contacts, lists them in out and returns them as identity captures.
func fetchedContacts(ctx context.Context, client enrich.Client, name, source string, d enrich.Deal, contacts map[string]enrich.Contact, out *explainFetched, now time.Time) ([]store.IdentityCapture, error) {
	var missing []string
	for _, id := range d.ContactIDs {
		if _, ok := contacts[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		more, err := client.FetchContacts(ctx, missing)
		if err != nil {
			return nil, fmt.Errorf("crms.connections.%s: fetching contacts: %w", name, err)
		}
		if contacts == nil {
			contacts = map[string]enrich.Contact{}
		}
		for id, c := range more {
			contacts[id] = c
		}
	}
	var captures []store.IdentityCapture
	ids := make([]string, 0, len(contacts))
	for id := range contacts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		out.Contacts = append(out.Contacts, contacts[id])
		captures = append(captures, enrich.ContactCapture(source, contacts[id], now))
	}
	return captures, nil
}

// replanned is p's counterpart (same rule, destination and key) in the plan of sc.
func replanned(m *crm.Mapping, sc crm.StageChange, p crm.Planned) crm.Planned {
	planned, _ := m.Plan(sc)
	for _, q := range planned {
		if q.Rule == p.Rule && q.Destination == p.Destination && q.Key == p.Key {
			return q
		}
	}
	return p
}

// bySubjectKey merges captures into identities by subject key.
func bySubjectKey(captures []store.IdentityCapture) map[string]store.Identity {
	out := map[string]store.Identity{}
	for _, id := range join.Merge(captures) {
		out[id.SubjectKey] = id
	}
	return out
}
