package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/crmsandbox"
	"github.com/closedloop/closedloop/store"
)

// The enrichment run: N conversions of thin HubSpot deal webhooks wait in
// awaiting_enrichment (written straight into the store, as the consumer leaves them), and a
// worker enriches them from the CRM emulator (no rate limit) through HubSpot's batch reads.

// EnrichRule is the enrichment run's mapping rule.
const EnrichRule = "hs-won"

// EnrichDeal is deal i's HubSpot id in the enrichment run; EnrichContact its contact's.
func EnrichDeal(i int) string    { return strconv.Itoa(10_000_000 + i) }
func EnrichContact(i int) string { return strconv.Itoa(20_000_000 + i) }

// SeedAwaitingEnrichment writes n conversions awaiting enrichment (HubSpot deals without
// value or identity, destination meta-crm) into the store at dsn (migrated first).
func SeedAwaitingEnrichment(ctx context.Context, dsn string, n int, now time.Time) error {
	st, err := store.Open(ctx, store.Config{Driver: store.DriverPostgres, DSN: dsn, MaxConns: 4, MigrateOnStart: true}, zap.NewNop())
	if err != nil {
		return err
	}
	defer st.Close()
	const chunk = 5000
	for start := 0; start < n; start += chunk {
		rows := make([]store.Conversion, 0, chunk)
		for i := start; i < min(n, start+chunk); i++ {
			id := EnrichDeal(i)
			rows = append(rows, store.Conversion{
				Key: crm.ConversionKey("hubspot", crm.ObjectDeal, id, EnrichRule, DestMeta), Kind: store.KindConversion,
				Destination: DestMeta, Platform: "meta", Rule: EnrichRule, Source: "hubspot", ObjectType: crm.ObjectDeal,
				ObjectID: id, ConversionName: "Purchase", SubjectKeys: []string{crm.SubjectKey("hubspot", crm.ObjectDeal, id)},
				OccurredAt: now.Add(-time.Hour), State: store.StateAwaitingEnrichment, Reason: store.ReasonEnrichmentPending,
				NextAttemptAt: now, CreatedAt: now,
			})
		}
		if _, err := st.WriteBatch(ctx, store.Batch{Conversions: rows}); err != nil {
			return fmt.Errorf("seed awaiting enrichment: %w", err)
		}
	}
	return nil
}

// CRMEmulator is the CRM sandbox on a loopback port.
type CRMEmulator struct {
	*crmsandbox.Server
	URL string
	srv *http.Server
}

// StartCRMEmulator serves a CRM sandbox holding the n HubSpot deals of the enrichment run,
// each with one contact (an email).
func StartCRMEmulator(n int) (*CRMEmulator, error) {
	sb := crmsandbox.New()
	for i := range n {
		sb.AddDeal(crmsandbox.HubSpot, crmsandbox.Deal{ID: EnrichDeal(i), Amount: strconv.Itoa(100 + i%900), Currency: "EUR",
			ContactIDs: []string{EnrichContact(i)}})
		sb.AddContact(crmsandbox.HubSpot, crmsandbox.Contact{ID: EnrichContact(i), Emails: []string{fmt.Sprintf("enrich.%d@example.com", i)}})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &CRMEmulator{Server: sb, URL: "http://" + ln.Addr().String(), srv: &http.Server{Handler: sb, ReadHeaderTimeout: 10 * time.Second}}
	go func() { _ = e.srv.Serve(ln) }()
	return e, nil
}

// Close stops the emulator.
func (e *CRMEmulator) Close() error { return e.srv.Close() }

// EnrichConfig is what the enrichment run's worker config varies.
type EnrichConfig struct {
	Brokers                     []string
	Group, StageTopic, DLQTopic string
	DSN, CRMURL                 string
	Batch                       int // crms.batch: rows per claim
}

// WriteEnrichConfig writes the enrichment run's worker config: an idle consumer, the
// uploader off, one HubSpot connection on the emulator without a rate limit.
func WriteEnrichConfig(path string, c EnrichConfig) error {
	cfg := map[string]any{
		"log":   map[string]any{"level": "warn", "format": "json"},
		"admin": map[string]any{"listen": "127.0.0.1:0", "shutdown_timeout": "20s"},
		"pii":   map[string]any{"default_region": "US"},
		"kafka": map[string]any{"brokers": c.Brokers, "group_id": c.Group, "identity_topic": "", "dead_letter_topic": c.DLQTopic,
			"stage_topics": []map[string]string{{"topic": c.StageTopic, "format": "canonical"}}},
		"store":    map[string]any{"driver": "postgres", "dsn": c.DSN, "migrate_on_start": true},
		"uploader": map[string]any{"enabled": false},
		"crms": map[string]any{"batch": c.Batch, "lease_for": "1m", "poll_interval": "100ms", "connections": map[string]any{
			"hubspot-bench": map[string]any{"kind": "hubspot", "token": crmsandbox.HubSpotToken, "base_url": c.CRMURL,
				"rate_limit": 1e6, "burst": 1000, "timeout": "30s"},
		}},
		"destinations": map[string]any{DestMeta: map[string]any{"platform": "meta", "base_url": "http://127.0.0.1:9",
			"dataset_id": "123456789012345", "access_token": "bench-meta-token"}},
		"mappings": []map[string]any{{
			"name": EnrichRule, "match": map[string]any{"source": "hubspot", "stage": "closedwon"},
			"value":        map[string]any{"field": "amount", "currency_field": "currency", "default_currency": "USD"},
			"destinations": []map[string]string{{"destination": DestMeta, "conversion": "Purchase"}},
		}},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// AwaitingEnrichment counts the rows still awaiting enrichment (through the claim's
// partial index: cheap to poll).
func AwaitingEnrichment(ctx context.Context, st *store.Store) (int, error) {
	list, err := st.AwaitingEnrichmentSummary(ctx)
	n := 0
	for _, a := range list {
		n += a.Conversions + a.Pending
	}
	return n, err
}
