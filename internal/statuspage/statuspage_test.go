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
