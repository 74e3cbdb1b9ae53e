package statuspage

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/internal/enrich"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

// src is the page's Source over a real SQLite store.
type src struct{ *store.Store }

func (src) Destinations() []DestinationStatus {
	return []DestinationStatus{{Name: "google-main", Platform: "google"}}
}
func (src) MappingVersion() string { return "v1" }

// TestPageShowsMatchQuality: per destination, the conversions made in the last 24 hours
// and the share carrying each identifier kind.
func TestPageShowsMatchQuality(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := store.DefaultConfig()
	cfg.Path = filepath.Join(t.TempDir(), "c.db")
	st, err := store.Open(ctx, cfg, zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	now := time.Now().UTC()
	var convs []store.Conversion
	for i := range 4 {
		c := store.Conversion{Key: fmt.Sprint("k", i), Destination: "google-main", Platform: "google", Rule: "won",
			OccurredAt: now.Add(-time.Hour), State: store.StateReady, CreatedAt: now.Add(-time.Minute)}
		switch i {
		case 0:
			c.Identity.Clicks = []store.Click{{Type: "gclid", ID: "g"}}
			c.Identity.Identifiers = pii.Set{"email": "e"}
		case 1:
			c.Identity.Identifiers = pii.Set{"email": "e", "phone/e164": "p"}
		case 2:
			c.Identity.LeadID = "123"
		default:
			c.State, c.Reason = store.StateAwaitingIdentity, "no_identifier"
		}
		convs = append(convs, c)
	}
	_, err = st.WriteBatch(ctx, store.Batch{Conversions: convs})
	require.NoError(t, err)

	rec := httptest.NewRecorder()
	Handler(src{st}, time.Now, zaptest.NewLogger(t)).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	require.Equal(t, 200, rec.Code, rec.Body.String())
	require.Contains(t, rec.Body.String(),
		`data-made="4" data-click-id="25" data-email="50" data-phone="25" data-lead-id="25">4 · 25% / 50% / 25% / 25%</td>`)
}

// crmSrc is src plus the CRM enrichment section, as the worker serves it.
type crmSrc struct {
	src
	cfg enrich.Config
}

func (c crmSrc) CRMConnections(ctx context.Context) ([]enrich.ConnectionOverview, error) {
	return enrich.Overview(ctx, c.Store, c.cfg, time.Now())
}

// TestPageShowsRowsAwaitingEnrichmentAndPausedConnections: per connection, how many rows
// wait for the CRM's API and since when, and a paused connection with its reason and time.
func TestPageShowsRowsAwaitingEnrichmentAndPausedConnections(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := store.DefaultConfig()
	cfg.Path = filepath.Join(t.TempDir(), "c.db")
	st, err := store.Open(ctx, cfg, zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	now := time.Now().UTC()
	var convs []store.Conversion
	for i := range 3 {
		convs = append(convs, store.Conversion{Key: fmt.Sprint("k", i), Destination: "google-main", Platform: "google", Rule: "won",
			Source: "hubspot", ObjectType: "deal", ObjectID: fmt.Sprint(i), OccurredAt: now.Add(-time.Hour),
			State: store.StateAwaitingEnrichment, Reason: store.ReasonEnrichmentPending, CreatedAt: now.Add(-2 * time.Hour)})
	}
	_, err = st.WriteBatch(ctx, store.Batch{Conversions: convs, Pending: []store.PendingChange{{Key: "p1", Source: "attio",
		ObjectType: "deal", ObjectID: "r1", FetchRef: "record/o/r1/a", ReceivedAt: now}}})
	require.NoError(t, err)
	require.NoError(t, st.SetConnectionState(ctx, store.ConnectionState{Name: "attio-main", PausedUntil: now.Add(5 * time.Minute),
		Reason: "crm_unauthorized", Detail: "crm setup error: HTTP 401: Unauthorized"}))
	crms := enrich.Config{Connections: map[string]enrich.Connection{
		"hubspot-main": {Kind: enrich.KindHubSpot}, "attio-main": {Kind: enrich.KindAttio},
	}}

	rec := httptest.NewRecorder()
	Handler(crmSrc{src{st}, crms}, time.Now, zaptest.NewLogger(t)).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	require.Equal(t, 200, rec.Code, rec.Body.String())
	body := rec.Body.String()
	require.Regexp(t, `data-connection="hubspot-main" data-source="hubspot">[^$]*?data-health="healthy"[^$]*?data-awaiting-conversions="3"[^$]*?data-oldest-age="2h 0m"`, body)
	require.Regexp(t, `data-connection="attio-main" data-source="attio">[^$]*?data-health="paused">paused</span> crm_unauthorized since [^$]*?data-awaiting-stage-changes="1"`, body)

	// Without the section (no CRM connections), the page has no CRM table.
	rec = httptest.NewRecorder()
	Handler(src{st}, time.Now, zaptest.NewLogger(t)).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	require.NotContains(t, rec.Body.String(), `id="crms"`)
}
